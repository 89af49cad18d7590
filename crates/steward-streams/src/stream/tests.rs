//! The stream resource under a real supervisor, on the memory engine: order, recovery, quotas,
//! slow subscribers, and proof that nothing a stream scheduled runs after it stops.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use steward_config::{Config, StreamsConfig};
use steward_core::supervisor::Supervisor;
use steward_core::{
    Control, ExitReason, Registry, ResourceFilter, ResourceKind, Strategy, SupervisorSpec,
};

use super::{Delivery, Offer, Subscriber};
use crate::model::{NewPublication, Position, Snapshot, StreamQuotas, SubscribeOptions};
use crate::{Error, Streams};

struct Harness {
    registry: Registry,
    streams: Streams,
    _root: steward_core::supervisor::RootSupervisor,
}

async fn harness(tweak: impl FnOnce(&mut StreamsConfig)) -> Harness {
    let c = Config::defaults();
    let mut config = c.streams.clone();
    tweak(&mut config);
    node(config).await
}

/// One node: its registry, its streams and their supervisors.
async fn node(config: StreamsConfig) -> Harness {
    let c = Config::defaults();
    let registry = Registry::with_defaults();
    let streams = Streams::new(config, registry.clone()).unwrap();
    let spec = SupervisorSpec::from_config("test", Strategy::OneForOne, &c.supervisor)
        .children(streams.child_specs(&c.supervisor));
    let root = Supervisor::start_root(&registry, spec).await.unwrap();
    Harness { registry, streams, _root: root }
}

const QUOTAS: StreamQuotas = StreamQuotas { stream_keys: 10_000, stream_bytes: 16 << 20 };

fn admit_all() -> crate::Result<crate::AdmitGuard> {
    Ok(Box::new(()))
}

fn latest(since: Option<Position>) -> SubscribeOptions {
    SubscribeOptions { since, latest: true }
}

fn since(p: Position) -> SubscribeOptions {
    SubscribeOptions { since: Some(p), latest: false }
}

fn plain() -> SubscribeOptions {
    SubscribeOptions::default()
}

fn json(key: Option<&str>, value: u64) -> NewPublication {
    NewPublication {
        key: key.map(Arc::from),
        data: Bytes::from(format!("{{\"v\":{value}}}")),
        json: true,
        idempotency_key: None,
    }
}

/// What a test subscriber received.
#[derive(Debug, Clone, PartialEq)]
enum Got {
    Subscribed(Snapshot),
    Publication(u64),
    Ended(&'static str),
}

/// A subscriber with a queue of `cap` entries.
struct TestSub {
    got: Mutex<Vec<Got>>,
    cap: usize,
}

impl TestSub {
    fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self { got: Mutex::default(), cap })
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    fn offsets(&self) -> Vec<u64> {
        self.got()
            .iter()
            .filter_map(|g| if let Got::Publication(o) = g { Some(*o) } else { None })
            .collect()
    }

    fn push(&self, g: Got) -> Offer {
        let mut got = self.got.lock().unwrap();
        if got.len() >= self.cap {
            return Offer::Overflow;
        }
        got.push(g);
        Offer::Queued
    }
}

impl Subscriber for TestSub {
    fn subscribed(&self, _stream: &Arc<str>, snapshot: &Snapshot) -> Offer {
        self.push(Got::Subscribed(snapshot.clone()))
    }

    fn publication(&self, delivery: &Arc<Delivery>) -> Offer {
        self.push(Got::Publication(delivery.publication.offset))
    }

    fn ended(&self, _stream: &Arc<str>, code: &'static str, _message: &str) {
        self.got.lock().unwrap().push(Got::Ended(code));
    }

    fn is_closed(&self) -> bool {
        false
    }
}

async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}

fn live_streams(registry: &Registry) -> usize {
    let filter = ResourceFilter { kind: Some(ResourceKind::Stream), ..Default::default() };
    registry.list(&filter, None, usize::MAX).0.len()
}

#[actix_rt::test]
async fn live_publications_follow_the_snapshot_and_recovery_is_all_or_nothing() {
    let h = harness(|c| c.history_size = 200).await;
    let t: Arc<str> = "acme".into();
    let s = &h.streams;
    for i in 0..3 {
        s.publish(&t, "prices", json(Some("eur"), i), QUOTAS, &admit_all).await.unwrap();
    }
    let first = TestSub::new(1000);
    let sub =
        s.subscribe(&t, "prices", latest(None), first.clone(), QUOTAS, &admit_all).await.unwrap();
    let Got::Subscribed(snap) = &first.got()[0] else { panic!("{:?}", first.got()) };
    assert_eq!(snap.position.offset, 3);
    assert_eq!(snap.latest.len(), 1, "one key, its latest value");
    assert_eq!(snap.latest[0].offset, 3);
    for i in 3..5 {
        s.publish(&t, "prices", json(None, i), QUOTAS, &admit_all).await.unwrap();
    }
    assert_eq!(first.offsets(), [4, 5]);
    let last = Position { offset: 5, epoch: snap.position.epoch.clone() };
    drop(sub);

    // 100 publications while disconnected: all of them, in order, on return
    for i in 0..100 {
        s.publish(&t, "prices", json(None, i), QUOTAS, &admit_all).await.unwrap();
    }
    let back = TestSub::new(1000);
    let _sub = s
        .subscribe(&t, "prices", since(last.clone()), back.clone(), QUOTAS, &admit_all)
        .await
        .unwrap();
    let Got::Subscribed(snap) = &back.got()[0] else { panic!() };
    assert!(snap.recovered && snap.was_recovering);
    assert_eq!(
        snap.publications.iter().map(|p| p.offset).collect::<Vec<_>>(),
        (6..=105).collect::<Vec<_>>()
    );
    assert_eq!(s.stats().read().recovered, 1);

    // another epoch: not recoverable
    let stale = TestSub::new(10);
    let wrong = Position { offset: 5, epoch: "not-the-epoch".into() };
    let _s2 =
        s.subscribe(&t, "prices", since(wrong), stale.clone(), QUOTAS, &admit_all).await.unwrap();
    let Got::Subscribed(snap) = &stale.got()[0] else { panic!() };
    assert!(!snap.recovered && snap.was_recovering && snap.publications.is_empty());
    assert_eq!(s.stats().read().recovery_failed, 1);
}

#[actix_rt::test]
async fn a_history_shorter_than_the_gap_answers_recovered_false() {
    let h = harness(|c| c.history_size = 10).await;
    let t: Arc<str> = "acme".into();
    let s = &h.streams;
    let p = s.publish(&t, "ticks", json(None, 0), QUOTAS, &admit_all).await.unwrap();
    for i in 0..100 {
        s.publish(&t, "ticks", json(None, i), QUOTAS, &admit_all).await.unwrap();
    }
    let sub = TestSub::new(10);
    let _g =
        s.subscribe(&t, "ticks", since(p.position), sub.clone(), QUOTAS, &admit_all).await.unwrap();
    let Got::Subscribed(snap) = &sub.got()[0] else { panic!() };
    assert!(!snap.recovered);
    assert_eq!(snap.position.offset, 101);
}

#[actix_rt::test]
async fn quotas_refuse_new_keys_and_bytes_and_store_nothing() {
    let h = harness(|_| {}).await;
    let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
    let s = &h.streams;
    let q = StreamQuotas { stream_keys: 2, stream_bytes: 1000 };
    s.publish(&a, "s", json(Some("k1"), 1), q, &admit_all).await.unwrap();
    s.publish(&a, "s", json(Some("k2"), 1), q, &admit_all).await.unwrap();
    let refused = s.publish(&a, "s", json(Some("k3"), 1), q, &admit_all).await.unwrap_err();
    assert_eq!(refused, Error::QuotaExceeded { quota: "stream_keys", limit: 2 });
    // an existing key is still accepted
    s.publish(&a, "s", json(Some("k1"), 2), q, &admit_all).await.unwrap();
    let big =
        NewPublication { data: Bytes::from(vec![b'x'; 900]), json: false, ..json(Some("k1"), 0) };
    let refused = s.publish(&a, "s", big, q, &admit_all).await.unwrap_err();
    assert!(matches!(refused, Error::QuotaExceeded { quota: "stream_bytes", .. }), "{refused:?}");
    let info = s.info(&a, "s", q, &admit_all).await.unwrap();
    assert_eq!(
        (info.store.position.offset, info.store.keys),
        (3, 2),
        "the refusals stored nothing"
    );
    // another tenant is not affected
    s.publish(&b, "s", json(Some("k3"), 1), QUOTAS, &admit_all).await.unwrap();
    assert_eq!(s.stats().read().refused, 2);
    // bad input: typed errors
    let bad = s.publish(&a, "bad name", json(None, 1), q, &admit_all).await.unwrap_err();
    assert!(matches!(bad, Error::Invalid { field: "stream", .. }), "{bad:?}");
    let not_json = NewPublication { data: Bytes::from_static(b"{"), ..json(None, 0) };
    let bad = s.publish(&a, "s", not_json, q, &admit_all).await.unwrap_err();
    assert!(matches!(bad, Error::Invalid { field: "json", .. }), "{bad:?}");
    let missing = s.latest(&a, "nope", None, q, &admit_all).await.unwrap_err();
    assert!(matches!(missing, Error::NotFound(_)), "{missing:?}");
    let other = s.latest(&b, "s", Some("k1"), q, &admit_all).await.unwrap_err();
    assert!(matches!(other, Error::NotFound(_)), "another tenant's key: {other:?}");
}

#[actix_rt::test]
async fn a_slow_subscriber_is_dropped_and_the_others_keep_their_order() {
    let h = harness(|_| {}).await;
    let t: Arc<str> = "acme".into();
    let s = &h.streams;
    let slow = TestSub::new(3);
    let fast = TestSub::new(1000);
    let g1 = s.subscribe(&t, "s", plain(), slow.clone(), QUOTAS, &admit_all).await.unwrap();
    let _g2 = s.subscribe(&t, "s", plain(), fast.clone(), QUOTAS, &admit_all).await.unwrap();
    for i in 0..20 {
        s.publish(&t, "s", json(None, i), QUOTAS, &admit_all).await.unwrap();
    }
    assert_eq!(slow.offsets(), [1, 2]);
    assert!(!g1.is_active());
    assert_eq!(fast.offsets(), (1..=20).collect::<Vec<_>>());
    let counts = s.stats().read();
    assert_eq!((counts.overflows, counts.subscribers), (1, 1));
}

#[actix_rt::test]
async fn nothing_a_stream_scheduled_runs_after_it_stops() {
    let h = harness(|c| {
        c.key_ttl = Duration::from_millis(150);
        c.history_ttl = Duration::from_millis(150);
    })
    .await;
    let t: Arc<str> = "acme".into();
    let s = &h.streams;
    let before = h.registry.handle_counts();
    let mut subs = Vec::new();
    for i in 0..200 {
        let name = format!("s{i}");
        s.publish(&t, &name, json(Some("k"), i), QUOTAS, &admit_all).await.unwrap();
        subs.push(
            s.subscribe(&t, &name, plain(), TestSub::new(10), QUOTAS, &admit_all).await.unwrap(),
        );
    }
    assert_eq!(live_streams(&h.registry), 200);
    assert_eq!(h.registry.handle_counts().timers, before.timers + 200, "one timer per stream");
    assert_eq!(s.stats().read().keys, 200);
    // stop them all with their expirations pending
    let control = Control::new(h.registry.clone());
    let filter = ResourceFilter { kind: Some(ResourceKind::Stream), ..Default::default() };
    for info in h.registry.list(&filter, None, usize::MAX).0 {
        control.stop(info.id, ExitReason::Shutdown).unwrap();
    }
    assert!(eventually(Duration::from_secs(5), || live_streams(&h.registry) == 0).await);
    let at_stop = s.stats().read();
    assert_eq!(at_stop.timer_fires, 0, "no deadline was due before the stop");
    // well past every deadline: nothing ran
    tokio::time::sleep(Duration::from_millis(400)).await;
    let after = s.stats().read();
    assert_eq!((after.timer_fires, after.expired_keys, after.expired_publications), (0, 0, 0));
    assert_eq!((after.keys, after.subscribers), (0, 0));
    assert!(subs.iter().all(|g| !g.is_active()));
    let counts = h.registry.handle_counts();
    assert_eq!((counts.timers, counts.tasks, counts.orphans), (before.timers, before.tasks, 0));
    assert_eq!((s.live(), s.bytes()), (0, 0));
}

#[actix_rt::test]
async fn a_thousand_streams_expire_and_stop_and_leave_nothing_behind() {
    let h = harness(|c| {
        c.key_ttl = Duration::from_millis(100);
        c.history_ttl = Duration::from_millis(100);
        c.idempotency_window = Duration::from_millis(100);
        c.idle_timeout = Duration::from_millis(100);
    })
    .await;
    let t: Arc<str> = "acme".into();
    let s = &h.streams;
    let before = h.registry.handle_counts();
    for round in 0..2 {
        for i in 0..500 {
            let p = NewPublication {
                idempotency_key: Some(format!("id{i}").into()),
                ..json(Some("k"), i)
            };
            s.publish(&t, &format!("r{round}s{i}"), p, QUOTAS, &admit_all).await.unwrap();
        }
    }
    assert!(s.bytes() > 0);
    assert!(eventually(Duration::from_secs(10), || live_streams(&h.registry) == 0).await);
    let counts = s.stats().read();
    assert_eq!((counts.expired_keys, counts.expired_publications), (1000, 1000));
    assert_eq!((counts.keys, s.live(), s.bytes()), (0, 0, 0));
    let after = h.registry.handle_counts();
    assert_eq!((after.timers, after.tasks, after.orphans), (before.timers, before.tasks, 0));
}

/// Two nodes on one Redis: what a publisher sends through node A reaches a subscriber of node
/// B in order, a subscriber recovers on A after reconnecting, and an outage ends the
/// subscriptions (`unavailable`), refuses publishes, and heals without a restart.
#[actix_rt::test]
async fn two_nodes_share_a_stream_through_redis_and_survive_an_outage() {
    let mut redis = crate::testing::RedisServer::start().unwrap();
    let config = |url: String| StreamsConfig {
        engine: steward_config::StreamEngineKind::Redis,
        url,
        timeout: Duration::from_millis(500),
        ..Config::defaults().streams
    };
    let a = node(config(redis.url())).await;
    let b = node(config(redis.url())).await;
    let t: Arc<str> = "acme".into();
    let on_b = TestSub::new(1000);
    let sub_b =
        b.streams.subscribe(&t, "fx", plain(), on_b.clone(), QUOTAS, &admit_all).await.unwrap();
    let mut last = None;
    for i in 0..50 {
        last = Some(a.streams.publish(&t, "fx", json(None, i), QUOTAS, &admit_all).await.unwrap());
    }
    assert!(eventually(Duration::from_secs(5), || on_b.offsets().len() == 50).await);
    assert_eq!(on_b.offsets(), (1..=50).collect::<Vec<_>>(), "in order, each once");
    let last = last.unwrap().position;
    drop(sub_b);

    // B's client reconnects to A after 20 more publications and recovers them
    for i in 0..20 {
        b.streams.publish(&t, "fx", json(None, i), QUOTAS, &admit_all).await.unwrap();
    }
    let back = TestSub::new(1000);
    let _sub = a
        .streams
        .subscribe(&t, "fx", since(last.clone()), back.clone(), QUOTAS, &admit_all)
        .await
        .unwrap();
    let Got::Subscribed(snap) = &back.got()[0] else { panic!("{:?}", back.got()) };
    assert!(snap.recovered);
    assert_eq!(
        snap.publications.iter().map(|p| p.offset).collect::<Vec<_>>(),
        (51..=70).collect::<Vec<_>>()
    );

    // Redis goes away: the subscription is ended, publishes are refused
    redis.stop();
    assert!(
        eventually(Duration::from_secs(10), || back.got().contains(&Got::Ended("unavailable")))
            .await,
        "{:?}",
        back.got()
    );
    let refused = a.streams.publish(&t, "fx", json(None, 0), QUOTAS, &admit_all).await.unwrap_err();
    assert!(matches!(refused, Error::Unavailable(_)), "{refused:?}");
    // it returns without its data: a new epoch, and a recovery from the old one fails
    redis.start_again().unwrap();
    let mut published = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while published.is_none() && Instant::now() < deadline {
        published = a.streams.publish(&t, "fx", json(None, 1), QUOTAS, &admit_all).await.ok();
    }
    let published = published.expect("publishes work again once redis is back");
    assert_ne!(published.position.epoch, last.epoch);
    assert_eq!(published.position.offset, 1);
    // node B's connection broke with the outage: its first command fails and reconnects,
    // as a client's retry would find
    let again = TestSub::new(10);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut sub = None;
    while sub.is_none() && Instant::now() < deadline {
        let opts = since(last.clone());
        sub = b.streams.subscribe(&t, "fx", opts, again.clone(), QUOTAS, &admit_all).await.ok();
    }
    assert!(sub.is_some(), "subscriptions work again once redis is back");
    let Got::Subscribed(snap) = &again.got()[0] else { panic!() };
    assert!(!snap.recovered && snap.was_recovering);
    assert_eq!(a.streams.stats().read().live_lost + b.streams.stats().read().live_lost, 1);
}
