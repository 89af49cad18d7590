//! The conformance suite: one set of cases, each run against the memory engine and against the
//! Redis engine (a throwaway `redis-server` per test, never the system one), so both answer the
//! same. Cases that only make sense for a shared engine (restarts, outages, two nodes, the live
//! feed) are in `conformance/redis_only.rs`.
//!
//! Expiry is awaited by polling with a deadline; each round calls [`StreamStore::expire`] (what
//! the stream actor does for the memory engine; Redis expires on its own).

mod redis_only;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::memory::MemoryEngine;
use super::redis::RedisEngine;
use super::{Budget, Engine, StreamLimits, StreamStore};
use crate::Error;
use crate::model::{HistoryQuery, NewPublication, Position, Publication, StreamRef, now_ms};
use crate::testing::RedisServer;

/// Bound of every Redis operation in the suite.
const TIMEOUT: Duration = Duration::from_secs(2);
/// How long a condition may take to come true.
const PATIENCE: Duration = Duration::from_secs(10);

/// An engine under test, with its server when it has one.
struct Harness {
    engine: Arc<dyn Engine>,
    /// Kept for the test's length (dropped last: the server goes with the test).
    server: Option<RedisServer>,
}

impl Harness {
    fn memory() -> Self {
        Self { engine: Arc::new(MemoryEngine), server: None }
    }

    /// A Redis engine on a fresh server, its dispatcher running on the test's runtime.
    fn redis() -> Self {
        let server = RedisServer::start().expect("start redis-server");
        let engine = RedisEngine::new(&server.url(), TIMEOUT).expect("redis engine");
        spawn_dispatcher(&engine);
        Self { engine: Arc::new(engine), server: Some(server) }
    }

    fn is_redis(&self) -> bool {
        self.server.is_some()
    }

    /// The store of a stream no other test uses.
    fn open(&self, limits: StreamLimits) -> Box<dyn StreamStore> {
        self.engine.open(&unique_stream(), limits)
    }
}

/// Runs `engine`'s dispatcher on the current (test) runtime; it goes with the runtime.
fn spawn_dispatcher(engine: &RedisEngine) {
    let run = engine.run().expect("the redis engine has a dispatcher");
    #[allow(clippy::disallowed_methods)] // tests: the runtime owns the task and ends it
    drop(actix_rt::spawn(run));
}

/// A stream name unique in this test process.
fn unique_stream() -> StreamRef {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    StreamRef {
        tenant: Arc::from("acme"),
        name: Arc::from(format!("s{n}-{:x}", fastrand::u32(..))),
    }
}

/// Roomy limits; cases narrow the one they test.
fn limits() -> StreamLimits {
    StreamLimits {
        history_size: 200,
        history_ttl: Duration::from_secs(60),
        key_ttl: None,
        idempotency_window: Duration::from_secs(60),
        max_keys: 1000,
        max_latest: 100,
        budget: Arc::new(Budget::new(u64::MAX)),
    }
}

/// A key-less JSON publication.
fn json(text: &str) -> NewPublication {
    NewPublication {
        key: None,
        data: Bytes::from(text.to_owned()),
        json: true,
        idempotency_key: None,
    }
}

/// A publication of `key`.
fn keyed(key: &str, text: &str) -> NewPublication {
    NewPublication { key: Some(Arc::from(key)), ..json(text) }
}

/// A page of everything the history holds, oldest first.
fn everything() -> HistoryQuery {
    HistoryQuery { since: None, limit: 10_000, reverse: false }
}

fn offsets(publications: &[Publication]) -> Vec<u64> {
    publications.iter().map(|p| p.offset).collect()
}

/// A deadline for a condition to come true.
struct Patience {
    what: &'static str,
    until: Instant,
}

impl Patience {
    fn new(what: &'static str) -> Self {
        Self { what, until: Instant::now() + PATIENCE }
    }

    /// Waits a little before the next check; fails the test past the deadline.
    async fn next(&self) {
        assert!(Instant::now() < self.until, "{} did not happen within {PATIENCE:?}", self.what);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Publishes `n` numbered key-less publications; answers their positions.
async fn publish_n(store: &mut Box<dyn StreamStore>, n: u64) -> Vec<Position> {
    let mut positions = Vec::new();
    for i in 0..n {
        let published = store.publish(json(&i.to_string())).await.expect("publish");
        positions.push(published.position);
    }
    positions
}

async fn offsets_start_at_one_and_grow_by_one(h: Harness) {
    let mut store = h.open(limits());
    let start = store.snapshot(None, false).await.expect("snapshot");
    assert_eq!(start.position.offset, 0);
    assert!(!start.position.epoch.is_empty());
    let before = now_ms();
    for n in 1..=5 {
        let published = store.publish(json(&format!("{{\"n\":{n}}}"))).await.expect("publish");
        assert_eq!(published.position, Position { offset: n, epoch: start.position.epoch.clone() });
        assert!(!published.duplicate);
        let publication = published.publication.expect("stored");
        assert_eq!(publication.offset, n);
        assert_eq!(publication.data, format!("{{\"n\":{n}}}"));
        assert!(publication.time_ms + 5_000 >= before && publication.time_ms <= now_ms() + 5_000);
    }
    let info = store.info().await.expect("info");
    assert_eq!(info.position, Position { offset: 5, epoch: start.position.epoch });
    assert_eq!((info.history, info.keys), (5, 1));
    assert_eq!(info.bytes == 0, h.is_redis(), "only the memory engine holds bytes here");
}

async fn publications_keep_their_key_data_and_kind(h: Harness) {
    let mut store = h.open(limits());
    let binary = NewPublication {
        key: Some(Arc::from("k,1: \u{e9}")),
        data: Bytes::from_static(b"\x00\xff,1,2,\n"),
        json: false,
        idempotency_key: None,
    };
    let mut stored = Vec::new();
    for p in [binary, json("{\"a\":[1,2]}"), keyed("k2", "")] {
        stored.push(store.publish(p.clone()).await.expect("publish").publication.expect("stored"));
        let last = stored.last().expect("one");
        assert_eq!((&last.key, &last.data, last.json), (&p.key, &p.data, p.json));
    }
    let page = store.history(everything()).await.expect("history");
    assert_eq!(page.publications, stored, "the history answers what was published");
    let (_, latest) = store.latest(None).await.expect("latest");
    stored.reverse();
    assert_eq!(latest, stored, "latest values, most recent first");
}

async fn operations_take_effect_in_call_order(h: Harness) {
    let mut store = h.open(limits());
    let first = store.publish(json("1"));
    let second = store.publish(json("2"));
    let snapshot = store.snapshot(None, true);
    // awaited in the opposite order
    let (snapshot, second, first) = futures_util::future::join3(snapshot, second, first).await;
    assert_eq!(first.expect("first").position.offset, 1);
    assert_eq!(second.expect("second").position.offset, 2);
    let snapshot = snapshot.expect("snapshot");
    assert_eq!(snapshot.position.offset, 2);
    assert_eq!(offsets(&snapshot.latest), vec![2]);
}

async fn the_history_keeps_at_most_history_size(h: Harness) {
    let mut store = h.open(StreamLimits { history_size: 10, ..limits() });
    let positions = publish_n(&mut store, 25).await;
    let page = store.history(everything()).await.expect("history");
    assert_eq!(offsets(&page.publications), (16..=25).collect::<Vec<_>>());
    assert_eq!(page.position, positions[24]);
    assert_eq!(store.info().await.expect("info").history, 10);
    let from_15 = store.snapshot(Some(positions[14].clone()), false).await.expect("snapshot");
    assert!(from_15.recovered, "the history reaches back to offset 16");
    assert_eq!(offsets(&from_15.publications), (16..=25).collect::<Vec<_>>());
}

async fn the_history_expires_after_history_ttl(h: Harness) {
    let ttl = Duration::from_millis(300);
    let mut store = h.open(StreamLimits { history_ttl: ttl, ..limits() });
    let start = store.snapshot(None, false).await.expect("snapshot").position;
    let positions = publish_n(&mut store, 3).await;
    let published = Instant::now();
    let patience = Patience::new("the history to expire");
    loop {
        store.expire(Instant::now());
        let page = store.history(everything()).await.expect("history");
        if page.publications.is_empty() {
            break;
        }
        let left = offsets(&page.publications);
        assert!([1, 2, 3].ends_with(&left), "the oldest go first: {left:?}");
        patience.next().await;
    }
    assert!(published.elapsed() >= ttl.saturating_sub(Duration::from_millis(50)));
    let info = store.info().await.expect("info");
    assert_eq!(info.position, positions[2], "the top and epoch stay");
    assert_eq!(info.history, 0);
    let missed = store.snapshot(Some(start), false).await.expect("snapshot");
    assert!(!missed.recovered, "the missed publications expired");
    let at_top = store.snapshot(Some(positions[2].clone()), false).await.expect("snapshot");
    assert!(at_top.recovered && at_top.publications.is_empty(), "nothing was missed at the top");
}

async fn latest_values_come_most_recent_first(h: Harness) {
    let mut store = h.open(StreamLimits { max_latest: 3, ..limits() });
    for p in [keyed("a", "1"), keyed("b", "2"), json("3"), keyed("c", "4"), keyed("a", "5")] {
        store.publish(p).await.expect("publish");
    }
    let (position, values) = store.latest(None).await.expect("latest");
    assert_eq!(position.offset, 5);
    assert_eq!(offsets(&values), vec![5, 4, 3], "most recent first, at most max_latest");
    let keys: Vec<Option<&str>> = values.iter().map(|p| p.key.as_deref()).collect();
    assert_eq!(keys, vec![Some("a"), Some("c"), None]);
    let (_, b) = store.latest(Some(Arc::from("b"))).await.expect("latest of b");
    assert_eq!((b.len(), b[0].offset, &b[0].data[..]), (1, 2, &b"2"[..]));
    let missing = store.latest(Some(Arc::from("nope"))).await;
    assert!(matches!(missing, Err(Error::NotFound(_))), "{missing:?}");
    let with = store.snapshot(None, true).await.expect("snapshot");
    assert_eq!(with.latest, values, "a snapshot answers the same latest values");
    assert!(store.snapshot(None, false).await.expect("snapshot").latest.is_empty());
    assert_eq!(store.info().await.expect("info").keys, 4, "a, b, c and the key-less value");
}

async fn key_values_expire_after_key_ttl(h: Harness) {
    let ttl = Duration::from_millis(300);
    let mut store = h.open(StreamLimits { key_ttl: Some(ttl), ..limits() });
    store.publish(keyed("a", "1")).await.expect("publish");
    store.publish(json("2")).await.expect("publish");
    let (_, a) = store.latest(Some(Arc::from("a"))).await.expect("a is live");
    assert_eq!(offsets(&a), vec![1]);
    let patience = Patience::new("the key values to expire");
    loop {
        store.expire(Instant::now());
        let (_, values) = store.latest(None).await.expect("latest");
        if values.is_empty() {
            break;
        }
        patience.next().await;
    }
    let expired = store.latest(Some(Arc::from("a"))).await;
    assert!(matches!(expired, Err(Error::NotFound(_))), "{expired:?}");
    assert_eq!(store.info().await.expect("info").keys, 0);
    let page = store.history(everything()).await.expect("history");
    assert_eq!(offsets(&page.publications), vec![1, 2], "the history keeps its publications");
    store.publish(keyed("a", "3")).await.expect("publish again");
    let (_, a) = store.latest(Some(Arc::from("a"))).await.expect("a is live again");
    assert_eq!(offsets(&a), vec![3]);
}

async fn recovery_answers_every_missed_publication(h: Harness) {
    let mut store = h.open(limits());
    let seen = store.publish(json("seen")).await.expect("publish").position;
    let positions = publish_n(&mut store, 100).await;
    let snapshot = store.snapshot(Some(seen), true).await.expect("snapshot");
    assert!(snapshot.was_recovering && snapshot.recovered);
    assert_eq!(snapshot.position, positions[99]);
    assert_eq!(offsets(&snapshot.publications), (2..=101).collect::<Vec<_>>());
    let data: Vec<String> =
        snapshot.publications.iter().map(|p| String::from_utf8_lossy(&p.data).into()).collect();
    assert_eq!(data, (0..100).map(|i| i.to_string()).collect::<Vec<_>>());
    assert_eq!(offsets(&snapshot.latest), vec![101]);
}

async fn recovery_fails_when_the_history_cannot_answer(h: Harness) {
    let mut store = h.open(StreamLimits { history_size: 10, ..limits() });
    let start = store.snapshot(None, false).await.expect("snapshot").position;
    let positions = publish_n(&mut store, 50).await;
    let top = positions[49].clone();
    let cases = [
        ("the history no longer reaches back", start.clone()),
        ("another epoch", Position { offset: 45, epoch: "another".to_owned() }),
        ("past the top", Position { offset: 51, epoch: top.epoch.clone() }),
    ];
    for (why, since) in cases {
        let snapshot = store.snapshot(Some(since), false).await.expect("snapshot");
        assert!(snapshot.was_recovering, "{why}");
        assert!(!snapshot.recovered, "{why}");
        assert!(snapshot.publications.is_empty(), "{why}");
        assert_eq!(snapshot.position, top, "{why}");
    }
    let fresh = store.snapshot(None, false).await.expect("snapshot");
    assert!(!fresh.was_recovering && !fresh.recovered);
}

async fn an_idempotent_publish_answers_the_first_position(h: Harness) {
    let mut store = h.open(limits());
    let once =
        |data: &str| NewPublication { idempotency_key: Some(Arc::from("req-1")), ..json(data) };
    let first = store.publish(once("\"first\"")).await.expect("publish");
    assert!(!first.duplicate);
    let again = store.publish(once("\"again\"")).await.expect("publish again");
    assert!(again.duplicate);
    assert_eq!(again.position, first.position);
    assert_eq!(again.publication, None);
    let page = store.history(everything()).await.expect("history");
    assert_eq!(page.position, first.position, "nothing was stored");
    assert_eq!(page.publications.len(), 1);
    assert_eq!(page.publications[0].data, "\"first\"");
    let other = NewPublication { idempotency_key: Some(Arc::from("req-2")), ..json("2") };
    assert_eq!(store.publish(other).await.expect("publish").position.offset, 2);
}

async fn the_stream_keys_quota_refuses_new_keys_only(h: Harness) {
    let mut store = h.open(StreamLimits { max_keys: 2, ..limits() });
    store.publish(keyed("a", "1")).await.expect("a");
    store.publish(keyed("b", "2")).await.expect("b");
    let refused = [keyed("c", "3"), json("key-less counts as a key")];
    for p in refused {
        let answer = store.publish(p).await;
        assert_eq!(answer, Err(Error::QuotaExceeded { quota: "stream_keys", limit: 2 }));
    }
    assert_eq!(store.publish(keyed("a", "4")).await.expect("a again").position.offset, 3);
    assert!(store.remove_key(Arc::from("a")).await.expect("remove a"));
    assert!(!store.remove_key(Arc::from("a")).await.expect("remove a again"));
    assert!(!store.remove_key(Arc::from("never")).await.expect("remove a missing key"));
    assert_eq!(store.publish(keyed("c", "5")).await.expect("c fits now").position.offset, 4);
    store.set_max_keys(3);
    store.publish(keyed("d", "6")).await.expect("d fits the new quota");
    let info = store.info().await.expect("info");
    assert_eq!((info.position.offset, info.keys, info.history), (5, 3, 5));
    let gone = store.latest(Some(Arc::from("a"))).await;
    assert!(matches!(gone, Err(Error::NotFound(_))), "a was removed: {gone:?}");
}

async fn history_pages_follow_since_limit_and_reverse(h: Harness) {
    let mut store = h.open(limits());
    let positions = publish_n(&mut store, 20).await;
    let top = positions[19].clone();
    let page = |since: Option<usize>, limit, reverse| HistoryQuery {
        since: since.map(|i: usize| positions[i - 1].clone()),
        limit,
        reverse,
    };
    let cases: [(HistoryQuery, Vec<u64>); 7] = [
        (page(None, 5, false), vec![1, 2, 3, 4, 5]),
        (page(Some(5), 5, false), vec![6, 7, 8, 9, 10]),
        (page(Some(18), 5, false), vec![19, 20]),
        (page(None, 3, true), vec![20, 19, 18]),
        (page(Some(15), 10, true), vec![20, 19, 18, 17, 16]),
        (page(Some(20), 5, false), vec![]),
        (page(None, 0, false), vec![]),
    ];
    for (query, expected) in cases {
        let answer = store.history(query.clone()).await.expect("history");
        assert_eq!(offsets(&answer.publications), expected, "{query:?}");
        assert_eq!(answer.position, top);
    }
    for since in [
        Position { offset: 3, epoch: "another".to_owned() },
        Position { offset: 21, epoch: top.epoch.clone() },
    ] {
        let query = HistoryQuery { since: Some(since), limit: 5, reverse: false };
        let answer = store.history(query).await;
        assert!(matches!(answer, Err(Error::Unrecoverable(_))), "{answer:?}");
    }
}

/// Runs each case against both engines: `memory_engine::<case>` and `redis_engine::<case>`.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod memory_engine {
            $(
                #[actix_rt::test]
                async fn $case() {
                    super::$case(super::Harness::memory()).await;
                }
            )*
        }
        mod redis_engine {
            $(
                #[actix_rt::test]
                async fn $case() {
                    super::$case(super::Harness::redis()).await;
                }
            )*
        }
    };
}

conformance!(
    offsets_start_at_one_and_grow_by_one,
    publications_keep_their_key_data_and_kind,
    operations_take_effect_in_call_order,
    the_history_keeps_at_most_history_size,
    the_history_expires_after_history_ttl,
    latest_values_come_most_recent_first,
    key_values_expire_after_key_ttl,
    recovery_answers_every_missed_publication,
    recovery_fails_when_the_history_cannot_answer,
    an_idempotent_publish_answers_the_first_position,
    the_stream_keys_quota_refuses_new_keys_only,
    history_pages_follow_since_limit_and_reverse,
);
