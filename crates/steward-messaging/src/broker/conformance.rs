//! The conformance suite every backend passes: one check per point of the contract in
//! [`super`], each on a fresh broker built with [`settings`].
//!
//! Run it for a backend with one line in that backend's tests:
//!
//! ```ignore
//! crate::broker::conformance::conformance_suite!(conformance, |settings, stats| async move {
//!     EmbeddedBroker::new(settings, stats) as Arc<dyn Broker>
//! });
//! ```
//!
//! The closure gets the suite's [`BrokerSettings`] and the [`MessagingStats`] the broker must
//! bump, and answers the broker; whatever must outlive the broker (a test server) must be owned
//! by it. An optional third argument replaces the test attribute, for example
//! `#[actix_rt::test]` (the default is a two-worker multi-thread tokio runtime). The generated
//! module does `use super::*`, so what the closure names (`Arc`, `Broker`, the broker type)
//! must be in scope where the macro is invoked.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use super::{
    Broker, BrokerError, BrokerSettings, Delivery, GroupKey, OutMessage, Pull, QuotaRefusal,
    SendOutcome, TagFilter, TenantLimits, TopicKey,
};
use crate::stats::MessagingStats;

/// Expands to one test per check of the suite, in a module `$name`; `$make` builds a fresh
/// broker from `(BrokerSettings, Arc<MessagingStats>)` (a closure returning a future of
/// `Arc<dyn Broker>`).
macro_rules! conformance_suite {
    ($name:ident, $make:expr) => {
        $crate::broker::conformance::conformance_suite!(
            $name,
            $make,
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        );
    };
    ($name:ident, $make:expr, #[$test:meta]) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            use $crate::broker::conformance as c;

            async fn ctx() -> c::Ctx {
                c::Ctx::new($make).await
            }

            $crate::broker::conformance::conformance_suite!(@tests #[$test]
                round_trip_keeps_every_field,
                first_deliveries_come_in_publish_order,
                every_group_gets_every_message,
                a_group_sees_only_what_was_published_after_it_opened,
                tag_filters_select_and_conflict,
                a_nack_redelivers_with_the_next_attempt,
                an_expired_lease_redelivers_with_the_next_attempt,
                set_visibility_extends_and_the_lease_stays_ackable,
                a_lease_is_not_found_after_its_message_was_delivered_again,
                a_repeated_client_id_is_stored_once,
                dead_letters_after_max_attempts,
                dead_letters_wait_for_the_first_group_of_their_topic,
                a_dying_member_loses_nothing,
                release_is_prompt,
                a_full_topic_answers_retry_later,
                competing_members_split_without_duplicates,
                fetch_waits_then_returns_empty_or_promptly,
                fetch_respects_max_bytes_but_leases_at_least_one,
                deliver_at_delays_the_first_delivery,
                remove_tenant_deletes_its_topics_only,
                a_closed_broker_is_unavailable,
                tenant_topics_and_groups_are_capped,
                tenant_stored_messages_are_capped_until_acked,
                tenant_stored_bytes_are_capped,
                idle_topics_without_groups_are_swept,
            );
        }
    };
    (@tests #[$test:meta] $($check:ident),* $(,)?) => {
        $(
            #[$test]
            async fn $check() {
                c::$check(ctx().await).await;
            }
        )*
    };
}
pub(crate) use conformance_suite;

/// The settings every check's broker is built with.
pub(crate) fn settings() -> BrokerSettings {
    BrokerSettings {
        send_timeout: Duration::from_secs(5),
        max_delivery_attempts: 3,
        dedup_window: Duration::from_secs(60),
        group_grace: Duration::from_secs(3600),
        topic_max_messages: 10_000,
        topic_max_bytes: 256 * 1024,
    }
}

/// What a check gets: a fresh broker, the stats it bumps and a tenant no other check uses.
pub(crate) struct Ctx {
    /// The broker under test.
    pub(crate) broker: Arc<dyn Broker>,
    /// The stats the broker was built with.
    pub(crate) stats: Arc<MessagingStats>,
    /// A tenant id of this check.
    pub(crate) tenant: String,
}

impl Ctx {
    /// Builds the broker with [`settings`].
    pub(crate) async fn new<F, Fut>(make: F) -> Self
    where
        F: FnOnce(BrokerSettings, Arc<MessagingStats>) -> Fut,
        Fut: Future<Output = Arc<dyn Broker>>,
    {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let stats = Arc::new(MessagingStats::default());
        let broker = make(settings(), stats.clone()).await;
        let tenant =
            format!("conf-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        Self { broker, stats, tenant }
    }

    fn topic(&self, name: &str) -> TopicKey {
        TopicKey::new(self.tenant.as_str(), name)
    }

    async fn open(
        &self,
        topic: &TopicKey,
        group: &str,
        filter: TagFilter,
        invisible: Duration,
    ) -> Box<dyn Pull> {
        let key = GroupKey { topic: topic.clone(), group: group.into(), filter };
        match self.broker.open(&key, invisible).await {
            Ok(pull) => pull,
            Err(err) => panic!("opening {group} on {topic}: {err}"),
        }
    }

    /// Sends `messages` and asserts each was stored (not as a duplicate); answers the ids.
    async fn send_ok(&self, topic: &TopicKey, messages: Vec<OutMessage>) -> Vec<String> {
        let n = messages.len();
        let outcomes = self.broker.send(topic, messages).await;
        assert_eq!(outcomes.len(), n, "one outcome per message");
        outcomes
            .into_iter()
            .map(|o| match o {
                SendOutcome::Stored { message_id, duplicate: false } => message_id,
                other => panic!("expected a fresh store, got {other:?}"),
            })
            .collect()
    }

    async fn ack_ok(&self, deliveries: &[Delivery]) {
        let results = self.broker.ack(deliveries.iter().map(|d| d.lease.clone()).collect()).await;
        assert_eq!(results.len(), deliveries.len());
        for r in results {
            r.expect("ack");
        }
    }
}

const INVISIBLE: Duration = Duration::from_secs(30);
const SHORT: Duration = Duration::from_secs(1);
/// How long a check waits for what must come.
const PATIENCE: Duration = Duration::from_secs(15);
/// The wait of one fetch while a check waits for deliveries. Not a divisor of the 1 s leases:
/// a pull request of nats-server before 2.10.14 that expires just as a redelivery comes due
/// loses that delivery (it still counts as an attempt; see `nats/mod.rs`), and a real consumer's
/// timing does not line up like a test's.
const POLL: Duration = Duration::from_millis(300);

fn msg(client_id: &str, body: &str) -> OutMessage {
    OutMessage {
        client_id: client_id.to_owned(),
        body: Bytes::copy_from_slice(body.as_bytes()),
        tag: None,
        keys: Vec::new(),
        properties: BTreeMap::new(),
        deliver_at: None,
    }
}

fn tagged(client_id: &str, tag: &str) -> OutMessage {
    OutMessage { tag: Some(tag.to_owned()), ..msg(client_id, tag) }
}

fn body(d: &Delivery) -> String {
    String::from_utf8_lossy(&d.message.body).into_owned()
}

fn ids(ds: &[Delivery]) -> Vec<String> {
    ds.iter().map(|d| d.message.message_id.clone()).collect()
}

/// Fetches until `n` deliveries came (failing after [`PATIENCE`]).
async fn fetch_n(pull: &mut Box<dyn Pull>, n: usize) -> Vec<Delivery> {
    let deadline = Instant::now() + PATIENCE;
    let mut got = Vec::new();
    while got.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} deliveries within {PATIENCE:?}",
            got.len()
        );
        let more = pull.fetch(n - got.len(), usize::MAX, POLL).await.expect("fetch");
        got.extend(more);
    }
    assert_eq!(got.len(), n, "no more than asked for");
    got
}

/// Asserts that nothing is delivered within `wait`.
async fn assert_nothing(pull: &mut Box<dyn Pull>, wait: Duration) {
    let got = pull.fetch(100, usize::MAX, wait).await.expect("fetch");
    let bodies: Vec<String> = got.iter().map(body).collect();
    assert!(got.is_empty(), "expected nothing, got {bodies:?}");
}

// ---- the checks ------------------------------------------------------------------------------

/// Every field of a message comes back as sent.
pub(crate) async fn round_trip_keeps_every_field(c: Ctx) {
    let topic = c.topic("orders.eu");
    let mut pull = c.open(&topic, "g", TagFilter::All, INVISIBLE).await;
    let past = SystemTime::now() - Duration::new(10, 123_456_789);
    let full = OutMessage {
        client_id: "rt-1:x/y".into(),
        body: Bytes::from((0..=255u8).collect::<Vec<_>>()),
        tag: Some("eu_1-x".into()),
        keys: vec!["k1".into(), "k-2:x".into()],
        properties: [
            ("a", ""),
            ("b.c", "  spaced  "),
            ("d", "ünïcødé ✓"),
            ("e", "x%41y: z"),
            ("trace.id", "abc"),
            ("Case", "upper"),
            ("case", "lower"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        deliver_at: Some(past),
    };
    let bare = msg("rt-2", "");
    let before = SystemTime::now() - Duration::from_secs(60);
    let sent = c.send_ok(&topic, vec![full.clone(), bare.clone()]).await;
    let got = fetch_n(&mut pull, 2).await;
    for ((d, out), id) in got.iter().zip([&full, &bare]).zip(&sent) {
        let m = &d.message;
        assert_eq!(&m.message_id, id);
        assert_eq!(m.client_id, out.client_id);
        assert_eq!(&*m.topic, "orders.eu");
        assert_eq!(m.body, out.body);
        assert_eq!(m.tag, out.tag);
        assert_eq!(m.keys, out.keys);
        assert_eq!(m.properties, out.properties);
        assert_eq!(m.deliver_at, out.deliver_at);
        assert!(
            m.published_at > before && m.published_at < SystemTime::now() + Duration::from_secs(60)
        );
        assert_eq!(d.attempt, 1);
        assert_eq!(m.weight(), out.weight());
    }
    c.ack_ok(&got).await;
}

/// One member sees first deliveries in publish order.
pub(crate) async fn first_deliveries_come_in_publish_order(c: Ctx) {
    let topic = c.topic("ordered");
    let mut pull = c.open(&topic, "g", TagFilter::All, INVISIBLE).await;
    let mut sent = Vec::new();
    for batch in 0..5 {
        let messages = (0..10)
            .map(|i| {
                let n = batch * 10 + i;
                OutMessage {
                    keys: vec![format!("key-{}", n % 3)],
                    ..msg(&format!("o-{n}"), &n.to_string())
                }
            })
            .collect();
        sent.extend(c.send_ok(&topic, messages).await);
    }
    let mut got = Vec::new();
    while got.len() < 50 {
        let more = fetch_n(&mut pull, 7.min(50 - got.len())).await;
        c.ack_ok(&more).await;
        got.extend(more);
    }
    assert_eq!(ids(&got), sent);
    let bodies: Vec<String> = got.iter().map(body).collect();
    assert_eq!(bodies, (0..50).map(|n| n.to_string()).collect::<Vec<_>>());
}

/// Two groups of one topic each get every message.
pub(crate) async fn every_group_gets_every_message(c: Ctx) {
    let topic = c.topic("fanout");
    let mut a = c.open(&topic, "a", TagFilter::All, INVISIBLE).await;
    let mut b = c.open(&topic, "b", TagFilter::All, INVISIBLE).await;
    let sent = c.send_ok(&topic, (0..20).map(|i| msg(&format!("f-{i}"), "x")).collect()).await;
    let from_a = fetch_n(&mut a, 20).await;
    c.ack_ok(&from_a).await;
    let from_b = fetch_n(&mut b, 20).await;
    assert_eq!(ids(&from_a), sent);
    assert_eq!(ids(&from_b), sent);
    c.ack_ok(&from_b).await;
    assert_nothing(&mut a, Duration::from_millis(300)).await;
}

/// A group sees the messages published after it was first opened, not before.
pub(crate) async fn a_group_sees_only_what_was_published_after_it_opened(c: Ctx) {
    let topic = c.topic("late");
    c.broker.send(&topic, vec![msg("before", "before")]).await;
    let mut first = c.open(&topic, "first", TagFilter::All, INVISIBLE).await;
    c.send_ok(&topic, vec![msg("middle", "middle")]).await;
    let mut second = c.open(&topic, "second", TagFilter::All, INVISIBLE).await;
    c.send_ok(&topic, vec![msg("after", "after")]).await;

    let got = fetch_n(&mut first, 2).await;
    assert_eq!(got.iter().map(body).collect::<Vec<_>>(), ["middle", "after"]);
    c.ack_ok(&got).await;
    let got = fetch_n(&mut second, 1).await;
    assert_eq!(body(&got[0]), "after");
    c.ack_ok(&got).await;
    assert_nothing(&mut first, Duration::from_millis(300)).await;
    assert_nothing(&mut second, Duration::from_millis(300)).await;
}

/// A tag filter selects; reopening a group with another filter conflicts.
pub(crate) async fn tag_filters_select_and_conflict(c: Ctx) {
    let topic = c.topic("tags");
    let mut eu = c.open(&topic, "eu-only", TagFilter::Tag("eu".into()), INVISIBLE).await;
    let mut all = c.open(&topic, "all", TagFilter::All, INVISIBLE).await;
    c.send_ok(
        &topic,
        vec![tagged("1", "eu"), tagged("2", "us"), msg("3", "none"), tagged("4", "eu")],
    )
    .await;
    let got = fetch_n(&mut eu, 2).await;
    assert_eq!(got.iter().map(|d| d.message.client_id.as_str()).collect::<Vec<_>>(), ["1", "4"]);
    assert!(got.iter().all(|d| d.message.tag.as_deref() == Some("eu")));
    c.ack_ok(&got).await;
    assert_nothing(&mut eu, Duration::from_millis(300)).await;
    let got = fetch_n(&mut all, 4).await;
    assert_eq!(
        got.iter().map(|d| d.message.tag.clone()).collect::<Vec<_>>(),
        [Some("eu".to_owned()), Some("us".to_owned()), None, Some("eu".to_owned())]
    );
    c.ack_ok(&got).await;

    for other in [TagFilter::Tag("us".into()), TagFilter::All] {
        let key = GroupKey { topic: topic.clone(), group: "eu-only".into(), filter: other };
        match c.broker.open(&key, INVISIBLE).await {
            Err(BrokerError::Conflict(_)) => {}
            Err(other) => panic!("expected a conflict, got {other:?}"),
            Ok(_) => panic!("expected a conflict, the group opened"),
        }
    }
}

/// `set_visibility(lease, 0)` (a nack) redelivers at once with attempt 2.
pub(crate) async fn a_nack_redelivers_with_the_next_attempt(c: Ctx) {
    let topic = c.topic("nack");
    let mut pull = c.open(&topic, "g", TagFilter::All, INVISIBLE).await;
    let sent = c.send_ok(&topic, vec![msg("n", "n")]).await;
    let first = fetch_n(&mut pull, 1).await;
    assert_eq!(first[0].attempt, 1);
    let started = Instant::now();
    let results = c.broker.set_visibility(vec![(first[0].lease.clone(), Duration::ZERO)]).await;
    results.into_iter().for_each(|r| r.expect("nack"));
    let again = fetch_n(&mut pull, 1).await;
    assert!(started.elapsed() < Duration::from_secs(10), "a nack redelivers at once");
    assert_eq!(ids(&again), sent);
    assert_eq!(again[0].attempt, 2);
    c.ack_ok(&again).await;
    assert_nothing(&mut pull, Duration::from_millis(300)).await;
}

/// A lease not acked within its invisible duration is redelivered with attempt 2.
pub(crate) async fn an_expired_lease_redelivers_with_the_next_attempt(c: Ctx) {
    let topic = c.topic("expiry");
    let mut pull = c.open(&topic, "g", TagFilter::All, SHORT).await;
    let sent = c.send_ok(&topic, vec![msg("e", "e")]).await;
    let first = fetch_n(&mut pull, 1).await;
    let leased_at = Instant::now();
    let again = fetch_n(&mut pull, 1).await;
    assert!(
        leased_at.elapsed() >= SHORT - Duration::from_millis(100),
        "not before the lease expired"
    );
    assert_eq!(ids(&again), sent);
    assert_eq!((first[0].attempt, again[0].attempt), (1, 2));
    c.ack_ok(&again).await;
}

/// Extending a lease delays redelivery, and the lease can still be acked.
pub(crate) async fn set_visibility_extends_and_the_lease_stays_ackable(c: Ctx) {
    let topic = c.topic("extend");
    let mut pull = c.open(&topic, "g", TagFilter::All, SHORT).await;
    c.send_ok(&topic, vec![msg("x", "x")]).await;
    let got = fetch_n(&mut pull, 1).await;
    let results =
        c.broker.set_visibility(vec![(got[0].lease.clone(), Duration::from_secs(3))]).await;
    results.into_iter().for_each(|r| r.expect("extend"));
    assert_nothing(&mut pull, Duration::from_millis(1500)).await;
    c.ack_ok(&got).await;
    assert_nothing(&mut pull, Duration::from_millis(2500)).await;
}

/// Once its message was delivered again, an old lease is unknown.
pub(crate) async fn a_lease_is_not_found_after_its_message_was_delivered_again(c: Ctx) {
    let topic = c.topic("stale");
    let mut pull = c.open(&topic, "g", TagFilter::All, SHORT).await;
    c.send_ok(&topic, vec![msg("s", "s")]).await;
    let old = fetch_n(&mut pull, 1).await;
    let new = fetch_n(&mut pull, 1).await;
    assert_eq!(new[0].attempt, 2);
    let results = c.broker.ack(vec![old[0].lease.clone()]).await;
    assert!(matches!(results[0], Err(BrokerError::LeaseNotFound(_))), "{results:?}");
    c.ack_ok(&new).await;
    assert_nothing(&mut pull, Duration::from_millis(1500)).await;
}

/// A client id repeated within the dedup window is stored once.
pub(crate) async fn a_repeated_client_id_is_stored_once(c: Ctx) {
    let topic = c.topic("dedup");
    let mut pull = c.open(&topic, "g", TagFilter::All, INVISIBLE).await;
    let first = c.send_ok(&topic, vec![msg("x", "1"), msg("y", "2")]).await;
    let outcomes =
        c.broker.send(&topic, vec![msg("x", "1 again"), msg("z", "3"), msg("z", "3 again")]).await;
    assert_eq!(outcomes[0], SendOutcome::Stored { message_id: first[0].clone(), duplicate: true });
    let SendOutcome::Stored { message_id: z, duplicate: false } = &outcomes[1] else {
        panic!("{outcomes:?}")
    };
    assert_eq!(outcomes[2], SendOutcome::Stored { message_id: z.clone(), duplicate: true });
    let got = fetch_n(&mut pull, 3).await;
    assert_eq!(got.iter().map(body).collect::<Vec<_>>(), ["1", "2", "3"]);
    c.ack_ok(&got).await;
    assert_nothing(&mut pull, Duration::from_millis(300)).await;
}

/// After `max_delivery_attempts` a message moves to `<topic>.dlq` and never comes back.
pub(crate) async fn dead_letters_after_max_attempts(c: Ctx) {
    let topic = c.topic("work");
    let max = settings().max_delivery_attempts;
    let mut pull = c.open(&topic, "g", TagFilter::All, INVISIBLE).await;
    let mut dlq = c.open(&topic.dead_letter(), "dead", TagFilter::All, INVISIBLE).await;
    let sent = OutMessage {
        keys: vec!["k".into()],
        properties: [("p".to_owned(), "v".to_owned())].into_iter().collect(),
        ..tagged("poison", "eu")
    };
    c.send_ok(&topic, vec![sent.clone(), msg("fine", "fine")]).await;
    let first = fetch_n(&mut pull, 2).await;
    let (poison, fine): (Vec<Delivery>, Vec<Delivery>) =
        first.into_iter().partition(|d| d.message.client_id == "poison");
    c.ack_ok(&fine).await;
    assert_eq!(poison[0].attempt, 1);
    let results = c.broker.set_visibility(vec![(poison[0].lease.clone(), Duration::ZERO)]).await;
    results.into_iter().for_each(|r| r.expect("nack"));
    let mut attempt = 2;
    loop {
        let got = pull.fetch(1, usize::MAX, Duration::from_millis(500)).await.expect("fetch");
        if got.is_empty() {
            break;
        }
        assert_eq!(got[0].message.client_id, "poison");
        assert!(attempt <= max, "attempt {attempt} is past the maximum {max}");
        assert_eq!(got[0].attempt, attempt);
        let results = c.broker.set_visibility(vec![(got[0].lease.clone(), Duration::ZERO)]).await;
        results.into_iter().for_each(|r| r.expect("nack"));
        attempt += 1;
    }
    assert!(attempt > max, "delivered {} times, not {max}", attempt - 1);
    let dead = fetch_n(&mut dlq, 1).await;
    let m = &dead[0].message;
    assert_eq!(&*m.topic, &*topic.dead_letter().topic);
    assert_eq!(
        (&m.body, &m.tag, &m.keys, &m.properties),
        (&sent.body, &sent.tag, &sent.keys, &sent.properties)
    );
    assert_eq!(dead[0].attempt, 1);
    assert_eq!(c.stats.snapshot().dead_lettered, 1);
    c.ack_ok(&dead).await;
    assert_nothing(&mut pull, Duration::from_millis(500)).await;
    assert_nothing(&mut dlq, Duration::from_millis(300)).await;
}

/// Nacks every delivery of `pull` until none comes within 500 ms (the message moved on);
/// answers how many deliveries came. Fails past [`PATIENCE`] or 100 deliveries.
async fn nack_until_gone(c: &Ctx, pull: &mut Box<dyn Pull>) -> u32 {
    let deadline = Instant::now() + PATIENCE;
    let mut deliveries = 0;
    loop {
        let got = pull.fetch(10, usize::MAX, Duration::from_millis(500)).await.expect("fetch");
        if got.is_empty() {
            return deliveries;
        }
        deliveries += u32::try_from(got.len()).unwrap_or(u32::MAX);
        assert!(
            deliveries <= 100 && Instant::now() < deadline,
            "still delivered after {deliveries} nacks: never dead-lettered"
        );
        let nacks = got.iter().map(|d| (d.lease.clone(), Duration::ZERO)).collect();
        c.broker.set_visibility(nacks).await.into_iter().for_each(|r| r.expect("nack"));
    }
}

/// A dead-letter topic without groups keeps its messages for the first group that opens.
pub(crate) async fn dead_letters_wait_for_the_first_group_of_their_topic(c: Ctx) {
    let topic = c.topic("unclaimed");
    let mut pull = c.open(&topic, "g", TagFilter::All, INVISIBLE).await;
    c.send_ok(&topic, vec![tagged("poison", "eu")]).await;
    assert_eq!(nack_until_gone(&c, &mut pull).await, settings().max_delivery_attempts);
    assert_eq!(c.stats.snapshot().dead_lettered, 1);
    let mut first = c.open(&topic.dead_letter(), "first", TagFilter::All, INVISIBLE).await;
    let dead = fetch_n(&mut first, 1).await;
    assert_eq!(dead[0].message.tag.as_deref(), Some("eu"));
    assert_eq!(dead[0].message.body, Bytes::from_static(b"eu"));
    c.ack_ok(&dead).await;
    let mut second = c.open(&topic.dead_letter(), "second", TagFilter::All, INVISIBLE).await;
    assert_nothing(&mut second, Duration::from_millis(300)).await;
    assert_nothing(&mut first, Duration::from_millis(300)).await;
}

/// A member that leaves with deliveries in flight: the acked ones are gone, the released ones
/// come to the next member, nothing else.
pub(crate) async fn a_dying_member_loses_nothing(c: Ctx) {
    let topic = c.topic("crash");
    let mut a = c.open(&topic, "g", TagFilter::All, INVISIBLE).await;
    let sent = c.send_ok(&topic, (0..100).map(|i| msg(&format!("c-{i}"), "x")).collect()).await;
    let got = fetch_n(&mut a, 100).await;
    assert_eq!(ids(&got), sent);
    let (acked, in_flight) = got.split_at(40);
    c.ack_ok(acked).await;
    c.broker.release(in_flight.iter().map(|d| d.lease.clone()).collect());
    drop(a);
    let mut b = c.open(&topic, "g", TagFilter::All, INVISIBLE).await;
    let again = fetch_n(&mut b, 60).await;
    let want: HashSet<String> = ids(in_flight).into_iter().collect();
    let have: HashSet<String> = ids(&again).into_iter().collect();
    assert_eq!(have, want, "exactly the released ones");
    assert!(again.iter().all(|d| d.attempt == 2), "a released delivery counts as an attempt");
    c.ack_ok(&again).await;
    assert_nothing(&mut b, Duration::from_millis(500)).await;
}

/// Released deliveries are available again at once, not after their lease.
pub(crate) async fn release_is_prompt(c: Ctx) {
    let topic = c.topic("release");
    let mut a = c.open(&topic, "g", TagFilter::All, Duration::from_secs(60)).await;
    let mut b = c.open(&topic, "g", TagFilter::All, Duration::from_secs(60)).await;
    c.send_ok(&topic, vec![msg("r", "r")]).await;
    let got = fetch_n(&mut a, 1).await;
    let started = Instant::now();
    c.broker.release(vec![got[0].lease.clone()]);
    let again = fetch_n(&mut b, 1).await;
    assert!(started.elapsed() < Duration::from_secs(10), "released, not expired");
    assert_eq!(ids(&again), ids(&got));
    c.ack_ok(&again).await;
}

/// A full topic refuses with `RetryLater`, drops nothing, and takes messages again once
/// drained.
pub(crate) async fn a_full_topic_answers_retry_later(c: Ctx) {
    let topic = c.topic("full");
    let mut pull = c.open(&topic, "g", TagFilter::All, INVISIBLE).await;
    let chunk = "x".repeat(4096);
    let n = 2 * usize::try_from(settings().topic_max_bytes).unwrap_or(usize::MAX) / chunk.len();
    let outcomes =
        c.broker.send(&topic, (0..n).map(|i| msg(&format!("full-{i}"), &chunk)).collect()).await;
    let stored: Vec<String> = outcomes
        .iter()
        .map_while(|o| match o {
            SendOutcome::Stored { message_id, duplicate: false } => Some(message_id.clone()),
            _ => None,
        })
        .collect();
    assert!(!stored.is_empty(), "something fits: {:?}", outcomes.first());
    assert!(
        outcomes[stored.len()..].iter().all(|o| matches!(o, SendOutcome::RetryLater(_))),
        "once full, the rest is refused: {:?}",
        &outcomes[stored.len()..].iter().find(|o| !matches!(o, SendOutcome::RetryLater(_)))
    );
    assert!(
        stored.len() < n,
        "a topic of {} bytes took {n} messages of {} bytes",
        settings().topic_max_bytes,
        chunk.len()
    );
    let got = fetch_n(&mut pull, stored.len()).await;
    assert_eq!(ids(&got), stored, "nothing stored was dropped");
    assert_nothing(&mut pull, Duration::from_millis(300)).await;
    c.ack_ok(&got).await;
    c.send_ok(&topic, vec![msg("after-drain", &chunk)]).await;
    let got = fetch_n(&mut pull, 1).await;
    c.ack_ok(&got).await;
}

/// Members of one group split its messages, none twice (while they ack in time).
pub(crate) async fn competing_members_split_without_duplicates(c: Ctx) {
    let topic = c.topic("split");
    let mut a = c.open(&topic, "g", TagFilter::All, INVISIBLE).await;
    let mut b = c.open(&topic, "g", TagFilter::All, INVISIBLE).await;
    let sent = c.send_ok(&topic, (0..200).map(|i| msg(&format!("s-{i}"), "x")).collect()).await;
    let seen = std::sync::Mutex::new(Vec::new());
    let deadline = Instant::now() + PATIENCE;
    tokio::join!(
        drain_member(&c, &mut a, &seen, deadline),
        drain_member(&c, &mut b, &seen, deadline)
    );
    let seen = seen.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    let distinct: HashSet<&String> = seen.iter().collect();
    assert_eq!(distinct.len(), seen.len(), "a message was delivered twice");
    assert_eq!(distinct, sent.iter().collect::<HashSet<_>>(), "every message once");
}

/// Fetches and acks until `seen` holds 200 ids or `deadline` passes.
async fn drain_member(
    c: &Ctx,
    pull: &mut Box<dyn Pull>,
    seen: &std::sync::Mutex<Vec<String>>,
    deadline: Instant,
) {
    while seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len() < 200
        && Instant::now() < deadline
    {
        let got = pull.fetch(10, usize::MAX, Duration::from_millis(200)).await.expect("fetch");
        c.ack_ok(&got).await;
        seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend(ids(&got));
    }
}

/// An empty fetch returns after `wait`; a message arriving meanwhile ends it at once.
pub(crate) async fn fetch_waits_then_returns_empty_or_promptly(c: Ctx) {
    let topic = c.topic("wait");
    let mut pull = c.open(&topic, "g", TagFilter::All, INVISIBLE).await;
    let started = Instant::now();
    assert_nothing(&mut pull, Duration::from_millis(400)).await;
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(350), "returned after {took:?}, before its wait");
    assert!(took < Duration::from_secs(4), "returned after {took:?}, long after its wait");

    let started = Instant::now();
    let (got, ()) = tokio::join!(pull.fetch(10, usize::MAX, Duration::from_secs(20)), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.send_ok(&topic, vec![msg("w", "w")]).await;
    });
    let got = got.expect("fetch");
    assert_eq!(got.len(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?} for a waiting message",
        started.elapsed()
    );
    c.ack_ok(&got).await;
}

/// `max_bytes` bounds a fetch, but a heavier message still comes alone.
pub(crate) async fn fetch_respects_max_bytes_but_leases_at_least_one(c: Ctx) {
    let topic = c.topic("bytes");
    let mut pull = c.open(&topic, "g", TagFilter::All, INVISIBLE).await;
    let kib = "k".repeat(1000);
    let sent = c.send_ok(&topic, (0..3).map(|i| msg(&format!("b-{i}"), &kib)).collect()).await;
    let first = pull.fetch(10, 1500, Duration::from_secs(5)).await.expect("fetch");
    assert_eq!(ids(&first), sent[..1]);
    let rest = pull.fetch(10, 2500, Duration::from_secs(5)).await.expect("fetch");
    assert_eq!(ids(&rest), sent[1..]);
    assert!(first.iter().chain(&rest).all(|d| d.attempt == 1));
    c.ack_ok(&first).await;
    c.ack_ok(&rest).await;

    let heavy = c.send_ok(&topic, vec![msg("heavy", &"h".repeat(5000))]).await;
    let got = pull.fetch(10, 100, Duration::from_secs(5)).await.expect("fetch");
    assert_eq!(ids(&got), heavy);
    c.ack_ok(&got).await;
}

/// A message with a future `deliver_at` is not delivered before it, then comes as attempt 1.
pub(crate) async fn deliver_at_delays_the_first_delivery(c: Ctx) {
    let topic = c.topic("later");
    let mut pull = c.open(&topic, "g", TagFilter::All, INVISIBLE).await;
    let at = SystemTime::now() + Duration::from_millis(1500);
    let delayed = OutMessage { deliver_at: Some(at), ..msg("delayed", "delayed") };
    c.send_ok(&topic, vec![delayed, msg("now", "now")]).await;
    let got = pull.fetch(10, usize::MAX, Duration::from_millis(500)).await.expect("fetch");
    assert_eq!(got.iter().map(body).collect::<Vec<_>>(), ["now"]);
    c.ack_ok(&got).await;
    let got = fetch_n(&mut pull, 1).await;
    assert!(SystemTime::now() >= at, "delivered before its time");
    assert_eq!(body(&got[0]), "delayed");
    assert_eq!(got[0].attempt, 1, "waiting for its time is not an attempt");
    assert_eq!(got[0].message.deliver_at, Some(at));
    c.ack_ok(&got).await;
}

/// `remove_tenant` deletes the tenant's topics and nothing of other tenants.
pub(crate) async fn remove_tenant_deletes_its_topics_only(c: Ctx) {
    let (a, b) = (c.topic("a"), c.topic("b.c"));
    let other = TopicKey::new(format!("{}-other", c.tenant), "a");
    let _pa = c.open(&a, "g", TagFilter::All, INVISIBLE).await;
    let _pb = c.open(&b, "g", TagFilter::All, INVISIBLE).await;
    let mut po = c.open(&other, "g", TagFilter::All, INVISIBLE).await;
    c.send_ok(&a, vec![msg("1", "1")]).await;
    c.send_ok(&b, vec![msg("2", "2")]).await;
    c.send_ok(&other, vec![msg("3", "3")]).await;
    let removed = c.broker.remove_tenant(&c.tenant).await.expect("remove_tenant");
    assert_eq!(removed, 2);
    let mut fresh = c.open(&a, "g", TagFilter::All, INVISIBLE).await;
    assert_nothing(&mut fresh, Duration::from_millis(300)).await;
    let got = fetch_n(&mut po, 1).await;
    assert_eq!(body(&got[0]), "3");
    c.ack_ok(&got).await;
}

/// After `close`, everything answers unavailable.
pub(crate) async fn a_closed_broker_is_unavailable(c: Ctx) {
    let topic = c.topic("closing");
    let mut pull = c.open(&topic, "g", TagFilter::All, INVISIBLE).await;
    c.broker.close().await;
    let outcomes = c.broker.send(&topic, vec![msg("late", "late")]).await;
    assert!(matches!(outcomes[0], SendOutcome::Unavailable(_)), "{outcomes:?}");
    let key = GroupKey { topic: topic.clone(), group: "g2".into(), filter: TagFilter::All };
    assert!(matches!(c.broker.open(&key, INVISIBLE).await, Err(BrokerError::Unavailable(_))));
    assert!(matches!(
        pull.fetch(1, usize::MAX, Duration::from_secs(1)).await,
        Err(BrokerError::Unavailable(_))
    ));
}

// ---- tenant quotas ---------------------------------------------------------------------------

impl Ctx {
    fn limit(&self, limits: TenantLimits) {
        self.broker.set_limits(&Arc::from(self.tenant.as_str()), limits);
    }

    fn usage(&self) -> super::TenantUsage {
        self.broker
            .usage()
            .into_iter()
            .find(|(t, _)| **t == *self.tenant)
            .map(|(_, u)| u)
            .unwrap_or_default()
    }
}

fn refused(outcome: &SendOutcome) -> Option<&'static str> {
    match outcome {
        SendOutcome::QuotaExceeded(QuotaRefusal { quota, .. }) => Some(quota),
        _ => None,
    }
}

/// A new topic past `topics` and a new group past `groups` are refused, naming the quota;
/// existing ones keep working.
pub(crate) async fn tenant_topics_and_groups_are_capped(c: Ctx) {
    c.limit(TenantLimits { topics: 1, groups: 1, ..TenantLimits::UNLIMITED });
    let a = c.topic("a");
    let mut pull = c.open(&a, "g", TagFilter::All, INVISIBLE).await;
    let outcomes = c.broker.send(&c.topic("b"), vec![msg("b1", "b")]).await;
    assert_eq!(refused(&outcomes[0]), Some("topics"), "{outcomes:?}");
    let key = GroupKey { topic: c.topic("c"), group: "g".into(), filter: TagFilter::All };
    match c.broker.open(&key, INVISIBLE).await {
        Err(BrokerError::QuotaExceeded(r)) => assert_eq!((r.quota, r.limit), ("topics", 1)),
        Err(other) => panic!("expected the topics quota, got {other}"),
        Ok(_) => panic!("a second topic was opened past its quota"),
    }
    let key = GroupKey { topic: a.clone(), group: "h".into(), filter: TagFilter::All };
    match c.broker.open(&key, INVISIBLE).await {
        Err(BrokerError::QuotaExceeded(r)) => assert_eq!((r.quota, r.limit), ("groups", 1)),
        Err(other) => panic!("expected the groups quota, got {other}"),
        Ok(_) => panic!("a second group was opened past its quota"),
    }
    // what exists keeps working, and a second member of the same group is no new group
    let _second = c.open(&a, "g", TagFilter::All, INVISIBLE).await;
    c.send_ok(&a, vec![msg("a1", "a")]).await;
    let got = fetch_n(&mut pull, 1).await;
    c.ack_ok(&got).await;
    let usage = c.usage();
    assert_eq!((usage.topics, usage.groups), (1, 1), "{usage:?}");
    // another tenant is not affected
    let other = TopicKey::new(format!("{}-other", c.tenant), "b");
    let _po = c.open(&other, "g", TagFilter::All, INVISIBLE).await;
}

/// Messages stored and not yet acked are capped at `stored_messages` over all the tenant's
/// topics; acking makes room again (NATS: at the next tally, `sweep_idle`).
pub(crate) async fn tenant_stored_messages_are_capped_until_acked(c: Ctx) {
    c.limit(TenantLimits { stored_messages: 3, ..TenantLimits::UNLIMITED });
    let (a, b) = (c.topic("a"), c.topic("b"));
    let mut pa = c.open(&a, "g", TagFilter::All, INVISIBLE).await;
    let _pb = c.open(&b, "g", TagFilter::All, INVISIBLE).await;
    c.send_ok(&a, vec![msg("1", "1"), msg("2", "2")]).await;
    c.send_ok(&b, vec![msg("3", "3")]).await;
    let outcomes = c.broker.send(&a, vec![msg("4", "4")]).await;
    assert_eq!(refused(&outcomes[0]), Some("stored_messages"), "{outcomes:?}");
    assert_eq!(c.usage().stored_messages, 3);
    let got = fetch_n(&mut pa, 2).await;
    c.ack_ok(&got).await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        c.broker.sweep_idle(Duration::from_secs(3600)).await;
        if c.usage().stored_messages == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "acked messages still counted: {:?}", c.usage());
        tokio::time::sleep(POLL).await;
    }
    c.send_ok(&a, vec![msg("4", "4")]).await;
}

/// The bytes of stored messages are capped at `stored_bytes`: a message that would pass it is
/// refused, a smaller one still fits. (Sizes leave room for NATS's per-message overhead: a
/// stream's `max_bytes` is at most the quota too, and it counts subjects and headers.)
pub(crate) async fn tenant_stored_bytes_are_capped(c: Ctx) {
    c.limit(TenantLimits { stored_bytes: 2000, ..TenantLimits::UNLIMITED });
    let a = c.topic("a");
    let _pa = c.open(&a, "g", TagFilter::All, INVISIBLE).await;
    let (big, small) = ("x".repeat(1200), "y".repeat(300));
    c.send_ok(&a, vec![msg("1", &big)]).await;
    let outcomes = c.broker.send(&a, vec![msg("2", &big)]).await;
    assert_eq!(refused(&outcomes[0]), Some("stored_bytes"), "{outcomes:?}");
    c.send_ok(&a, vec![msg("3", &small)]).await;
    assert_eq!(c.usage().stored_bytes, 1500);
}

/// A topic that nobody receives from, holding nothing, goes at `sweep_idle`, and its place in
/// the `topics` count with it.
pub(crate) async fn idle_topics_without_groups_are_swept(c: Ctx) {
    c.limit(TenantLimits { topics: 1, ..TenantLimits::UNLIMITED });
    let a = c.topic("a");
    // a topic without groups: the message is not kept (no group takes it)
    let outcomes = c.broker.send(&a, vec![msg("1", "1")]).await;
    assert!(matches!(outcomes[0], SendOutcome::Stored { .. }), "{outcomes:?}");
    let outcomes = c.broker.send(&c.topic("b"), vec![msg("2", "2")]).await;
    assert_eq!(refused(&outcomes[0]), Some("topics"), "{outcomes:?}");
    // not idle long enough: it stays
    c.broker.sweep_idle(Duration::from_secs(3600)).await;
    assert_eq!(c.usage().topics, 1);
    // idle for a moment, with ttl zero: it goes
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let removed = c.broker.sweep_idle(Duration::ZERO).await;
    assert!(removed >= 1, "nothing was swept");
    assert_eq!(c.usage().topics, 0);
    let outcomes = c.broker.send(&c.topic("b"), vec![msg("2", "2")]).await;
    assert!(matches!(outcomes[0], SendOutcome::Stored { .. }), "{outcomes:?}");
}
