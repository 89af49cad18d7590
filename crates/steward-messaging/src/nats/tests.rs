//! NATS-only behaviour against a throwaway nats-server ([`crate::testing::NatsServer`]); the
//! shared contract is the conformance suite, run below.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use steward_config::BrokerBackend;

use super::publisher::{Outgoing, Published, Publisher, parse_ack};
use super::{NatsBroker, Spawner, naming};
use crate::broker::conformance::{self, conformance_suite};
use crate::broker::{
    Broker, BrokerError, BrokerSettings, GroupKey, Lease, OutMessage, Pull, SendOutcome, TagFilter,
    TopicKey,
};
use crate::stats::MessagingStats;
use crate::testing::NatsServer;

fn spawner() -> Spawner {
    Arc::new(|task| {
        #[allow(clippy::disallowed_methods)]
        // test-only: no tracker here; the task ends with the broker
        tokio::spawn(task);
    })
}

/// A NATS broker that owns its server, so the server lives exactly as long as the broker.
struct WithServer {
    broker: Arc<NatsBroker>,
    _server: NatsServer,
}

async fn nats_broker(settings: BrokerSettings, stats: Arc<MessagingStats>) -> Arc<dyn Broker> {
    let server = NatsServer::start().expect("start nats-server");
    let broker =
        NatsBroker::connect(&server.url(), settings, stats, spawner()).await.expect("connect");
    Arc::new(WithServer { broker, _server: server })
}

impl Broker for WithServer {
    fn backend(&self) -> BrokerBackend {
        self.broker.backend()
    }
    fn send<'a>(
        &'a self,
        topic: &'a TopicKey,
        messages: Vec<OutMessage>,
    ) -> BoxFuture<'a, Vec<SendOutcome>> {
        self.broker.send(topic, messages)
    }
    fn open<'a>(
        &'a self,
        group: &'a GroupKey,
        invisible: Duration,
    ) -> BoxFuture<'a, Result<Box<dyn Pull>, BrokerError>> {
        self.broker.open(group, invisible)
    }
    fn ack(&self, leases: Vec<Lease>) -> BoxFuture<'_, Vec<Result<(), BrokerError>>> {
        self.broker.ack(leases)
    }
    fn set_visibility(
        &self,
        leases: Vec<(Lease, Duration)>,
    ) -> BoxFuture<'_, Vec<Result<(), BrokerError>>> {
        self.broker.set_visibility(leases)
    }
    fn release(&self, leases: Vec<Lease>) {
        self.broker.release(leases);
    }
    fn set_limits(&self, tenant: &Arc<str>, limits: crate::TenantLimits) {
        self.broker.set_limits(tenant, limits);
    }
    fn usage(&self) -> Vec<(Arc<str>, crate::TenantUsage)> {
        self.broker.usage()
    }
    fn sweep_idle(&self, ttl: Duration) -> BoxFuture<'_, u64> {
        self.broker.sweep_idle(ttl)
    }
    fn remove_tenant<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, Result<u64, BrokerError>> {
        self.broker.remove_tenant(tenant)
    }
    fn unacked(&self) -> Option<u64> {
        self.broker.unacked()
    }
    fn close(&self) -> BoxFuture<'_, ()> {
        self.broker.close()
    }
}

conformance_suite!(nats_conformance, nats_broker);

fn settings(send_timeout: Duration) -> BrokerSettings {
    BrokerSettings { send_timeout, ..conformance::settings() }
}

fn msg(id: &str) -> OutMessage {
    OutMessage {
        client_id: id.to_owned(),
        body: Bytes::copy_from_slice(id.as_bytes()),
        tag: None,
        keys: Vec::new(),
        properties: Default::default(),
        deliver_at: None,
    }
}

fn group(topic: &TopicKey) -> GroupKey {
    GroupKey { topic: topic.clone(), group: "g".into(), filter: TagFilter::All }
}

/// Fetches until one delivery of `client_id` comes, tolerating `Unavailable` while NATS comes
/// back; fails after `patience`.
async fn fetch_id(
    pull: &mut Box<dyn Pull>,
    client_id: &str,
    patience: Duration,
) -> crate::Delivery {
    let deadline = Instant::now() + patience;
    loop {
        assert!(Instant::now() < deadline, "{client_id} did not come within {patience:?}");
        match pull.fetch(10, usize::MAX, Duration::from_millis(300)).await {
            Ok(got) => {
                if let Some(d) = got.into_iter().find(|d| d.message.client_id == client_id) {
                    return d;
                }
            }
            Err(BrokerError::Unavailable(_)) => {}
            Err(err) => panic!("fetch: {err}"),
        }
    }
}

/// Sends until stored, tolerating `Unavailable` while NATS comes back.
async fn send_until_stored(
    broker: &NatsBroker,
    topic: &TopicKey,
    m: OutMessage,
    patience: Duration,
) {
    let deadline = Instant::now() + patience;
    loop {
        match broker.send(topic, vec![m.clone()]).await.remove(0) {
            SendOutcome::Stored { .. } => return,
            SendOutcome::Unavailable(_) if Instant::now() < deadline => {}
            other => panic!("send: {other:?}"),
        }
    }
}

#[test]
fn names_are_valid_and_collision_free() {
    let keys = [
        ("a", "b.c"),
        ("a", "b_c"),
        ("a-b", "c"),
        ("a", "b-c"),
        ("a", "B.c"),
        ("ab", "c"),
        ("a", "bc"),
    ];
    let mut streams = HashSet::new();
    let mut subjects = HashSet::new();
    for (tenant, topic) in keys {
        let key = TopicKey::new(tenant, topic);
        let stream = naming::stream_name(&key);
        assert!(!stream.contains(['.', '*', '>', ' ', '/', '\\']), "{stream}");
        assert!(streams.insert(stream.clone()), "two topics share stream {stream}");
        let subject = naming::subject(&key, None);
        assert_eq!(subject.split('.').count(), 4, "{subject}");
        assert!(subjects.insert(subject.clone()), "two topics share subject {subject}");
        assert!(stream.starts_with(&naming::tenant_stream_prefix(tenant)));
    }
    let key = TopicKey::new("t", "orders.eu");
    assert_eq!(naming::stream_name(&key), "steward_t_orders~eu");
    assert_eq!(naming::subject(&key, Some("x")), "steward.t.orders~eu.x");
    assert_eq!(naming::tag_of_subject(&naming::subject(&key, Some("x"))).as_deref(), Some("x"));
    assert_eq!(naming::tag_of_subject(&naming::subject(&key, None)), None);
    assert_eq!(naming::filter_subject(&key, &TagFilter::All), "steward.t.orders~eu.*");
    assert_eq!(naming::consumer_name("billing.eu"), "billing~eu");
    assert!(!naming::tenant_stream_prefix("a").starts_with(&naming::tenant_stream_prefix("a-b")));
    assert!(
        !naming::stream_name(&TopicKey::new("a-b", "c"))
            .starts_with(&naming::tenant_stream_prefix("a"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_while_nats_is_down_and_serves_once_it_is_up() {
    let mut server = NatsServer::start().expect("start nats-server");
    server.stop();
    let send_timeout = Duration::from_secs(2);
    let started = Instant::now();
    let broker = NatsBroker::connect(
        &server.url(),
        settings(send_timeout),
        Arc::new(MessagingStats::default()),
        spawner(),
    )
    .await
    .expect("connect returns while NATS is down");
    assert!(started.elapsed() < send_timeout, "connect waited for NATS");
    assert!(!broker.is_connected());

    let topic = TopicKey::new("t", "down");
    let started = Instant::now();
    let outcomes = broker.send(&topic, vec![msg("1")]).await;
    assert!(matches!(outcomes[0], SendOutcome::Unavailable(_)), "{outcomes:?}");
    assert!(
        started.elapsed() < send_timeout + Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    assert!(matches!(
        broker.open(&group(&topic), Duration::from_secs(30)).await,
        Err(BrokerError::Unavailable(_))
    ));

    server.start_again().expect("start nats-server again");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut pull = loop {
        match broker.open(&group(&topic), Duration::from_secs(30)).await {
            Ok(pull) => break pull,
            Err(BrokerError::Unavailable(_)) if Instant::now() < deadline => {}
            Err(err) => panic!("open: {err}"),
        }
    };
    assert!(broker.is_connected());
    assert_eq!(broker.max_payload(), Some(1024 * 1024), "nats-server's default max_payload");
    send_until_stored(&broker, &topic, msg("2"), Duration::from_secs(5)).await;
    let got = fetch_id(&mut pull, "2", Duration::from_secs(5)).await;
    broker.ack(vec![got.lease]).await.remove(0).expect("ack");
    broker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_server_restart_and_keeps_what_was_stored() {
    let mut server = NatsServer::start().expect("start nats-server");
    let send_timeout = Duration::from_secs(2);
    let broker = NatsBroker::connect(
        &server.url(),
        settings(send_timeout),
        Arc::new(MessagingStats::default()),
        spawner(),
    )
    .await
    .expect("connect");
    let topic = TopicKey::new("t", "restart");
    let mut pull = broker.open(&group(&topic), Duration::from_secs(30)).await.expect("open");
    send_until_stored(&broker, &topic, msg("a"), Duration::from_secs(5)).await;
    let a = fetch_id(&mut pull, "a", Duration::from_secs(5)).await;
    broker.ack(vec![a.lease]).await.remove(0).expect("ack");
    send_until_stored(&broker, &topic, msg("b"), Duration::from_secs(5)).await;

    server.stop();
    let started = Instant::now();
    let outcomes = broker.send(&topic, vec![msg("lost")]).await;
    assert!(matches!(outcomes[0], SendOutcome::Unavailable(_)), "{outcomes:?}");
    assert!(
        started.elapsed() < send_timeout + Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    let fetched = pull.fetch(10, usize::MAX, Duration::from_secs(1)).await;
    assert!(matches!(fetched, Err(BrokerError::Unavailable(_))), "{fetched:?}");

    server.start_again().expect("start nats-server again");
    let b = fetch_id(&mut pull, "b", Duration::from_secs(20)).await;
    assert_eq!(b.attempt, 1);
    broker.ack(vec![b.lease]).await.remove(0).expect("ack");
    send_until_stored(&broker, &topic, msg("c"), Duration::from_secs(10)).await;
    let c = fetch_id(&mut pull, "c", Duration::from_secs(10)).await;
    broker.ack(vec![c.lease]).await.remove(0).expect("ack");
    broker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_creates_a_consumer_or_stream_deleted_behind_its_back() {
    let server = NatsServer::start().expect("start nats-server");
    let broker = NatsBroker::connect(
        &server.url(),
        settings(Duration::from_secs(5)),
        Arc::new(MessagingStats::default()),
        spawner(),
    )
    .await
    .expect("connect");
    let topic = TopicKey::new("t", "gone");
    let mut pull = broker.open(&group(&topic), Duration::from_secs(30)).await.expect("open");
    let admin = async_nats::connect(server.url()).await.expect("admin client");
    let js = async_nats::jetstream::new(admin);
    let stream = naming::stream_name(&topic);

    js.delete_consumer_from_stream("g", &stream).await.expect("delete consumer");
    assert!(
        pull.fetch(10, usize::MAX, Duration::from_millis(200)).await.expect("fetch").is_empty()
    );
    send_until_stored(&broker, &topic, msg("1"), Duration::from_secs(5)).await;
    let one = fetch_id(&mut pull, "1", Duration::from_secs(5)).await;
    broker.ack(vec![one.lease]).await.remove(0).expect("ack");

    js.delete_stream(&stream).await.expect("delete stream");
    send_until_stored(&broker, &topic, msg("2"), Duration::from_secs(5)).await;
    // the stream came back without the group: the member re-creates it, later messages flow
    assert!(
        pull.fetch(10, usize::MAX, Duration::from_millis(200)).await.expect("fetch").is_empty()
    );
    send_until_stored(&broker, &topic, msg("3"), Duration::from_secs(5)).await;
    let three = fetch_id(&mut pull, "3", Duration::from_secs(5)).await;
    broker.ack(vec![three.lease]).await.remove(0).expect("ack");
    broker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_with_another_invisible_duration_gets_its_own() {
    let server = NatsServer::start().expect("start nats-server");
    let broker = NatsBroker::connect(
        &server.url(),
        settings(Duration::from_secs(5)),
        Arc::new(MessagingStats::default()),
        spawner(),
    )
    .await
    .expect("connect");
    let topic = TopicKey::new("t", "mixed");
    let _long = broker.open(&group(&topic), Duration::from_secs(60)).await.expect("open");
    let mut short = broker.open(&group(&topic), Duration::from_secs(1)).await.expect("open");
    send_until_stored(&broker, &topic, msg("m"), Duration::from_secs(5)).await;
    let first = fetch_id(&mut short, "m", Duration::from_secs(5)).await;
    let leased = Instant::now();
    let again = fetch_id(&mut short, "m", Duration::from_secs(10)).await;
    assert!(leased.elapsed() < Duration::from_secs(10), "the group's 60 s applied");
    assert_eq!((first.attempt, again.attempt), (1, 2));
    broker.ack(vec![again.lease]).await.remove(0).expect("ack");
    broker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_servers_max_payload_is_refused() {
    let server = NatsServer::start().expect("start nats-server");
    let broker = NatsBroker::connect(
        &server.url(),
        settings(Duration::from_secs(5)),
        Arc::new(MessagingStats::default()),
        spawner(),
    )
    .await
    .expect("connect");
    let topic = TopicKey::new("t", "big");
    let _pull = broker.open(&group(&topic), Duration::from_secs(30)).await.expect("open");
    let big = OutMessage { body: Bytes::from(vec![0u8; 2 * 1024 * 1024]), ..msg("big") };
    let outcomes = broker.send(&topic, vec![big, msg("small")]).await;
    assert!(
        matches!(&outcomes[0], SendOutcome::Unavailable(why) if why.contains("larger")),
        "{outcomes:?}"
    );
    assert!(matches!(&outcomes[1], SendOutcome::Stored { .. }), "{outcomes:?}");
    broker.close().await;
}

/// Whether `group`'s consumer exists on `topic`'s stream, asked with a client of its own.
async fn consumer_exists(
    js: &async_nats::jetstream::Context,
    topic: &TopicKey,
    group: &str,
) -> bool {
    let stream = naming::stream_name(topic);
    js.get_consumer_from_stream::<async_nats::jetstream::consumer::pull::Config, _, _>(
        naming::consumer_name(group),
        stream,
    )
    .await
    .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_outlives_its_last_member_by_the_grace_only() {
    let server = NatsServer::start().expect("start nats-server");
    let grace = Duration::from_secs(1);
    let broker = NatsBroker::connect(
        &server.url(),
        BrokerSettings { group_grace: grace, ..settings(Duration::from_secs(5)) },
        Arc::new(MessagingStats::default()),
        spawner(),
    )
    .await
    .expect("connect");
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.expect("admin"));
    let topic = TopicKey::new("t", "grace");
    let mut pull = broker.open(&group(&topic), Duration::from_secs(30)).await.expect("open");

    // a member that keeps fetching keeps the group, past several graces
    let started = Instant::now();
    while started.elapsed() < 3 * grace {
        assert!(
            pull.fetch(10, usize::MAX, Duration::from_millis(300)).await.expect("fetch").is_empty()
        );
    }
    assert!(consumer_exists(&js, &topic, "g").await, "deleted while a member fetched");

    send_until_stored(&broker, &topic, msg("kept-for-nobody"), Duration::from_secs(5)).await;
    drop(pull);
    let deadline = Instant::now() + 10 * grace;
    while consumer_exists(&js, &topic, "g").await {
        assert!(Instant::now() < deadline, "the group outlived its grace");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut pull = broker.open(&group(&topic), Duration::from_secs(30)).await.expect("open");
    send_until_stored(&broker, &topic, msg("new"), Duration::from_secs(5)).await;
    let got = pull.fetch(10, usize::MAX, Duration::from_secs(5)).await.expect("fetch");
    let ids: Vec<&str> = got.iter().map(|d| d.message.client_id.as_str()).collect();
    assert_eq!(ids, ["new"], "the old state went with the group");
    broker.ack(got.into_iter().map(|d| d.lease).collect()).await.remove(0).expect("ack");
    assert!(
        pull.fetch(10, usize::MAX, Duration::from_millis(300)).await.expect("fetch").is_empty()
    );
    broker.close().await;
}

/// A publisher of its own (window `window`) on `broker`'s client, its task on this runtime,
/// and a plain client of `server` that subscribes to `quiet.>` and never answers: what is
/// published there gets no ack (and no "no responders" either).
async fn quiet_publisher(
    broker: &NatsBroker,
    server: &NatsServer,
    window: usize,
    share: usize,
) -> (Publisher, async_nats::Subscriber) {
    // the broker connects in the background; the broker's sends wait for it
    // (`wait_connected`), a bare publisher does not: a publish before the first connection fails
    let patience = Instant::now() + Duration::from_secs(10);
    while !broker.is_connected() {
        assert!(Instant::now() < patience, "the broker did not connect");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (publisher, task) =
        Publisher::new(broker.inner.client.clone(), broker.inner.connected.clone(), window, share);
    spawner()(Box::pin(task));
    let listener = async_nats::connect(server.url()).await.expect("listener client");
    let mut quiet = listener.subscribe("quiet.>").await.expect("subscribe");
    listener.flush().await.expect("flush");
    // `flush` only writes the SUB out; until the server has it, a publish to `quiet.*` is
    // answered "no responders" at once (its send then ends, not waits). A probe from the
    // broker's own client that reaches the listener shows the interest is in place.
    let client = &broker.inner.client;
    loop {
        assert!(Instant::now() < patience, "the listener's subscription never became active");
        client.publish("quiet.probe", Bytes::from_static(b"probe")).await.expect("probe");
        client.flush().await.expect("flush the probe");
        if tokio::time::timeout(Duration::from_millis(100), quiet.next()).await.is_ok() {
            break;
        }
    }
    // a probe that arrived late must not pass for a test's publish
    tokio::time::sleep(Duration::from_millis(50)).await;
    while quiet.next().now_or_never().flatten().is_some() {}
    (publisher, quiet)
}

fn tenant(name: &str) -> Arc<str> {
    name.into()
}

fn quiet(n: usize) -> Vec<Outgoing> {
    (0..n)
        .map(|i| {
            (
                async_nats::Subject::from(format!("quiet.{i}")),
                Bytes::from_static(b"x"),
                async_nats::HeaderMap::new(),
            )
        })
        .collect()
}

/// Polls `publisher` until nothing waits for an ack, at most `patience`.
async fn until_nothing_waits(publisher: &Publisher, patience: Duration) {
    let deadline = Instant::now() + patience;
    while publisher.waiting() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} publishes still wait after {patience:?}",
            publisher.waiting()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn is_unavailable(p: &Published) -> bool {
    matches!(p, Published::Done(SendOutcome::Unavailable(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_without_an_ack_time_out_and_leave_nothing_waiting() {
    let server = NatsServer::start().expect("start nats-server");
    let broker = NatsBroker::connect(
        &server.url(),
        settings(Duration::from_secs(5)),
        Arc::new(MessagingStats::default()),
        spawner(),
    )
    .await
    .expect("connect");
    let (publisher, mut quiet_sub) = quiet_publisher(&broker, &server, 64, 64).await;

    // no ack ever comes: every message times out at the deadline, and its entry goes
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
    let out = publisher.publish(tenant("acme"), quiet(10), deadline).await;
    assert_eq!(out.len(), 10);
    assert!(out.iter().all(is_unavailable), "{out:?}");
    assert!(started.elapsed() >= Duration::from_millis(300), "answered before the deadline");
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    assert_eq!(publisher.waiting(), 0);
    let got = tokio::time::timeout(Duration::from_secs(10), quiet_sub.next()).await;
    assert!(matches!(got, Ok(Some(_))), "the messages were published");

    // a cancelled send (its future dropped) withdraws its entries at once, long before its
    // deadline
    let far = tokio::time::Instant::now() + Duration::from_secs(60);
    let cancelled = tokio::time::timeout(
        Duration::from_millis(100),
        publisher.publish(tenant("acme"), quiet(20), far),
    );
    assert!(cancelled.await.is_err(), "no ack comes");
    until_nothing_waits(&publisher, Duration::from_secs(5)).await;

    // many cancelled sends at once
    let sends: Vec<_> = (0..3).map(|_| publisher.publish(tenant("acme"), quiet(5), far)).collect();
    let all = futures_util::future::join_all(sends);
    assert!(tokio::time::timeout(Duration::from_millis(100), all).await.is_err());
    until_nothing_waits(&publisher, Duration::from_secs(5)).await;

    publisher.close(Duration::from_secs(5)).await;
    broker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_window_refuses_at_once_and_frees_with_the_answers() {
    let server = NatsServer::start().expect("start nats-server");
    let broker = NatsBroker::connect(
        &server.url(),
        settings(Duration::from_secs(5)),
        Arc::new(MessagingStats::default()),
        spawner(),
    )
    .await
    .expect("connect");
    let (publisher, _quiet_sub) = quiet_publisher(&broker, &server, 8, 8).await;
    let publisher = Arc::new(publisher);

    // sends that wait (no ack comes) until they are aborted
    let far = tokio::time::Instant::now() + Duration::from_secs(60);
    let waiting_send = |n: usize| {
        let publisher = publisher.clone();
        #[allow(clippy::disallowed_methods)] // test-only: a send that waits meanwhile
        tokio::spawn(async move { publisher.publish(tenant("acme"), quiet(n), far).await })
    };
    let until_waiting = async |n: usize| {
        let patience = Instant::now() + Duration::from_secs(10);
        while publisher.waiting() < n {
            assert!(Instant::now() < patience, "the send was not handed over");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let first = waiting_send(6);
    until_waiting(6).await;
    // 2 of 5 fit and wait for their acks (until the deadline), the tail is refused at once
    let soon = tokio::time::Instant::now() + Duration::from_millis(300);
    let out = publisher.publish(tenant("acme"), quiet(5), soon).await;
    assert!(out[..2].iter().all(is_unavailable), "{out:?}");
    assert!(
        out[2..].iter().all(|p| matches!(p, Published::Done(SendOutcome::RetryLater(_)))),
        "{out:?}"
    );
    assert_eq!(publisher.waiting(), 6, "the 2 that timed out were freed");
    // a full window refuses the whole send at once
    let second = waiting_send(2);
    until_waiting(8).await;
    let started = Instant::now();
    let out = publisher.publish(tenant("acme"), quiet(3), far).await;
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    assert!(
        out.iter().all(|p| matches!(p, Published::Done(SendOutcome::RetryLater(_)))),
        "{out:?}"
    );
    // cancelled, the waiting sends free the window
    first.abort();
    second.abort();
    until_nothing_waits(&publisher, Duration::from_secs(5)).await;
    let soon = tokio::time::Instant::now() + Duration::from_millis(100);
    let out = publisher.publish(tenant("acme"), quiet(8), soon).await;
    assert!(out.iter().all(is_unavailable), "the whole window is free again: {out:?}");
    assert_eq!(publisher.waiting(), 0);
    publisher.close(Duration::from_secs(5)).await;
    broker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_connection_answers_what_waits_for_an_ack() {
    let mut server = NatsServer::start().expect("start nats-server");
    let broker = NatsBroker::connect(
        &server.url(),
        settings(Duration::from_secs(5)),
        Arc::new(MessagingStats::default()),
        spawner(),
    )
    .await
    .expect("connect");
    let (publisher, mut quiet_sub) = quiet_publisher(&broker, &server, 64, 64).await;
    let publisher = Arc::new(publisher);
    let far = tokio::time::Instant::now() + Duration::from_secs(60);
    let waiting = {
        let publisher = publisher.clone();
        #[allow(clippy::disallowed_methods)] // test-only: a send that waits meanwhile
        tokio::spawn(async move { publisher.publish(tenant("acme"), quiet(4), far).await })
    };
    let got = tokio::time::timeout(Duration::from_secs(10), quiet_sub.next()).await;
    assert!(matches!(got, Ok(Some(_))), "published");
    server.stop();
    let out = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("answered at the disconnect, not at the deadline")
        .expect("send");
    assert!(out.iter().all(is_unavailable), "{out:?}");
    assert_eq!(publisher.waiting(), 0);
    publisher.close(Duration::from_secs(5)).await;
    broker.close().await;
}

#[test]
fn publish_acks_are_parsed_like_async_nats_does() {
    let stored = parse_ack(None, br#"{"stream":"s","seq":42}"#);
    assert!(
        matches!(&stored, Published::Done(SendOutcome::Stored { message_id, duplicate: false })
            if message_id == "42"),
        "{stored:?}"
    );
    let dup = parse_ack(None, br#"{"stream":"s","domain":"","seq":7,"duplicate":true}"#);
    assert!(
        matches!(&dup, Published::Done(SendOutcome::Stored { message_id, duplicate: true })
            if message_id == "7"),
        "{dup:?}"
    );
    let full = parse_ack(
        None,
        br#"{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}}"#,
    );
    assert!(matches!(full, Published::Done(SendOutcome::RetryLater(_))), "{full:?}");
    let gone = parse_ack(
        None,
        br#"{"error":{"code":404,"err_code":10059,"description":"stream not found"}}"#,
    );
    assert!(matches!(gone, Published::StreamNotFound), "{gone:?}");
    let nobody = parse_ack(Some(async_nats::StatusCode::NO_RESPONDERS), b"");
    assert!(matches!(nobody, Published::StreamNotFound), "{nobody:?}");
    let other = parse_ack(
        None,
        br#"{"error":{"code":400,"err_code":10999,"description":"something else"}}"#,
    );
    assert!(
        matches!(&other, Published::Done(SendOutcome::Unavailable(why)) if why.contains("something else")),
        "{other:?}"
    );
    assert!(is_unavailable(&parse_ack(None, b"not json")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenant_cannot_take_more_than_its_share_of_the_window() {
    let server = NatsServer::start().expect("start nats-server");
    let broker = NatsBroker::connect(
        &server.url(),
        settings(Duration::from_secs(5)),
        Arc::new(MessagingStats::default()),
        spawner(),
    )
    .await
    .expect("connect");
    // a window of 8, at most 4 of one tenant's (no ack ever comes for these subjects)
    let (publisher, _quiet_sub) = quiet_publisher(&broker, &server, 8, 4).await;
    let publisher = Arc::new(publisher);
    let far = tokio::time::Instant::now() + Duration::from_secs(60);
    // the hostile tenant sends 6: 4 fit its share and wait, the tail is refused at once
    let hog = {
        let publisher = publisher.clone();
        #[allow(clippy::disallowed_methods)] // test-only: a send that waits meanwhile
        tokio::spawn(async move { publisher.publish(tenant("hog"), quiet(6), far).await })
    };
    let patience = Instant::now() + Duration::from_secs(10);
    while publisher.waiting_of("hog") < 4 {
        assert!(Instant::now() < patience, "the send was not handed over");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // more from it is refused at once, whatever room the window has
    let started = Instant::now();
    let out = publisher.publish(tenant("hog"), quiet(1), far).await;
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    assert!(matches!(&out[..], [Published::Done(SendOutcome::RetryLater(_))]), "{out:?}");
    // another tenant still finds room: its messages are published and wait for their acks
    let soon = tokio::time::Instant::now() + Duration::from_millis(300);
    let out = publisher.publish(tenant("acme"), quiet(4), soon).await;
    assert!(out.iter().all(is_unavailable), "published, no ack in time: {out:?}");
    assert_eq!(publisher.waiting_of("acme"), 0, "its room was given back at the deadline");
    assert_eq!(publisher.waiting(), 4);
    hog.abort();
    until_nothing_waits(&publisher, Duration::from_secs(5)).await;
    assert_eq!(publisher.waiting_of("hog"), 0);
    publisher.close(Duration::from_secs(5)).await;
    broker.close().await;
}
