//! The messaging proxy (`steward.messaging.v1.Messaging`) end to end, on the real binary with a
//! real tonic client, against both broker backends: the embedded one and NATS JetStream (a
//! throwaway `nats-server -js` on a free loopback port with its store in a temp dir, from
//! `steward_messaging::testing`). Each scenario is an `async fn` taking the [`Backend`], run by
//! one test per backend (`…_embedded`, `…_nats`).
//!
//! What is checked is what the issue promises: no message lost when a client goes, at-least-once
//! and no more; producers and consumers leave nothing behind (registry, gauges, RSS, fds); a
//! client that never reads gets its messages returned and costs bounded memory; a NATS outage
//! is answered, not hung on; bad requests get the documented code and disturb nothing; SIGTERM
//! ends streams with `UNAVAILABLE`, returns what they held and exits 0.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use nix::sys::signal::Signal;
use reqwest::{Method, StatusCode};
use serde_json::json;
use steward_messaging::testing::NatsServer;
use steward_proto::messaging::v1 as pb;
use steward_proto::messaging::v1::messaging_client::MessagingClient;
use steward_proto::messaging::v1::receive_messages_response::{Event, Started};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use crate::sockets::{authed, tenant};
use crate::support::{Steward, WITHIN, eventually};

type Client = MessagingClient<Channel>;
type Rx = tonic::Streaming<pb::ReceiveMessagesResponse>;

// ---- the broker under test -------------------------------------------------------------------

/// Which broker a scenario runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Embedded,
    Nats,
}

/// The broker of a scenario: nothing for the embedded one, a throwaway `nats-server -js` for
/// NATS (killed and its store removed on drop).
struct Broker {
    backend: Backend,
    nats: Option<NatsServer>,
}

impl Broker {
    fn new(backend: Backend) -> Self {
        let nats = (backend == Backend::Nats).then(|| {
            NatsServer::start().expect("a throwaway nats-server -js (apt-get install nats-server)")
        });
        Self { backend, nats }
    }

    fn nats(&mut self) -> &mut NatsServer {
        self.nats.as_mut().expect("a NATS scenario")
    }

    /// Starts Steward on this broker with `extra` settings; for NATS, waits until Steward has
    /// connected (sends before that answer `UNAVAILABLE`).
    async fn start(&self, extra: &[(&str, &str)]) -> Steward {
        let url = self.nats.as_ref().map(NatsServer::url);
        let mut env: Vec<(&str, &str)> = extra.to_vec();
        if let Some(url) = &url {
            env.push(("STEWARD__MESSAGING__BACKEND", "nats"));
            env.push(("STEWARD__MESSAGING__URL", url));
        }
        let s = Steward::start(&env).await;
        if self.backend == Backend::Nats {
            let connected = eventually(WITHIN, || async {
                s.find_message("messaging: NATS JetStream connected").is_some()
            })
            .await;
            assert!(connected, "steward did not connect to NATS; log:\n{}", s.dump());
        }
        s
    }
}

// ---- client helpers --------------------------------------------------------------------------

async fn client(s: &Steward) -> Client {
    MessagingClient::connect(s.grpc.clone()).await.expect("grpc connect")
}

/// A message to `topic` with client id `id` and a body of `len` bytes.
fn message(topic: &str, id: &str, len: usize) -> pb::OutgoingMessage {
    pb::OutgoingMessage {
        topic: topic.to_owned(),
        client_message_id: id.to_owned(),
        body: vec![b'x'; len].into(),
        ..Default::default()
    }
}

/// `m-<i>` for `i` in `ids`, to `topic`.
fn numbered(topic: &str, ids: std::ops::Range<usize>, len: usize) -> Vec<pb::OutgoingMessage> {
    ids.map(|i| message(topic, &format!("m-{i}"), len)).collect()
}

/// The number of a `m-<i>` message.
fn number(m: &pb::ReceivedMessage) -> usize {
    m.client_message_id
        .strip_prefix("m-")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected message {:?}", m.client_message_id))
}

async fn send(
    c: &mut Client,
    token: &str,
    producer_id: &str,
    messages: Vec<pb::OutgoingMessage>,
) -> Result<Vec<pb::SendResult>, tonic::Status> {
    let req = pb::SendMessageRequest { producer_id: producer_id.to_owned(), messages };
    c.send_message(authed(token, req)).await.map(|r| r.into_inner().results)
}

/// Sends `messages` and asserts every one was stored.
async fn send_ok(c: &mut Client, token: &str, messages: Vec<pb::OutgoingMessage>) {
    let n = messages.len();
    let results = send(c, token, "", messages).await.expect("SendMessage");
    assert_eq!(results.len(), n);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.code(), pb::ResultCode::Ok, "message {i}: {r:?}");
        assert!(!r.message_id.is_empty(), "message {i}: {r:?}");
    }
}

async fn ack(c: &mut Client, token: &str, receipts: Vec<String>) -> Vec<pb::EntryResult> {
    let n = receipts.len();
    let req = pb::AckMessagesRequest { receipt_handles: receipts };
    let results =
        c.ack_messages(authed(token, req)).await.expect("AckMessages").into_inner().results;
    assert_eq!(results.len(), n);
    results
}

fn stream_request(group: &str, topic: &str) -> pb::ReceiveMessagesRequest {
    pb::ReceiveMessagesRequest {
        group: group.to_owned(),
        topic: topic.to_owned(),
        ..Default::default()
    }
}

fn seconds(s: i64) -> prost_types::Duration {
    prost_types::Duration { seconds: s, nanos: 0 }
}

/// Opens a `ReceiveMessages` stream and reads its `started` message.
async fn open(
    c: &mut Client,
    token: &str,
    req: pb::ReceiveMessagesRequest,
) -> Result<(Rx, Started), tonic::Status> {
    let mut rx = c.receive_messages(authed(token, req)).await?.into_inner();
    let first = tokio::time::timeout(WITHIN, rx.message()).await.expect("`started` in time")?;
    match first.and_then(|m| m.event) {
        Some(Event::Started(started)) => Ok((rx, started)),
        other => panic!("the first message of a stream must be `started`, got {other:?}"),
    }
}

/// Opens a stream or fails the test.
async fn open_ok(c: &mut Client, token: &str, req: pb::ReceiveMessagesRequest) -> Rx {
    open(c, token, req).await.expect("ReceiveMessages").0
}

/// The next deliveries of `rx` (heartbeats skipped): `Ok(None)` when none came within `within`,
/// `Err` when the stream ended with that status.
async fn next_deliveries(
    rx: &mut Rx,
    within: Duration,
) -> Result<Option<Vec<pb::ReceivedMessage>>, tonic::Status> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, rx.message()).await {
            Err(_) => return Ok(None),
            Ok(Err(status)) => return Err(status),
            Ok(Ok(None)) => panic!("the stream ended with OK, which the protocol never does"),
            Ok(Ok(Some(m))) => match m.event {
                Some(Event::Deliveries(d)) => {
                    assert!(!d.messages.is_empty(), "a `deliveries` message holds at least one");
                    return Ok(Some(d.messages));
                }
                Some(Event::Heartbeat(_)) => {}
                other => panic!("unexpected stream message {other:?}"),
            },
        }
    }
}

/// Receives until `n` distinct messages (by client id) came, at most `within`; answers every
/// delivery in arrival order (duplicates included).
async fn receive_n(rx: &mut Rx, n: usize, within: Duration) -> Vec<pb::ReceivedMessage> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut distinct = BTreeSet::new();
    while distinct.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match next_deliveries(rx, left).await {
            Ok(Some(batch)) => {
                distinct.extend(batch.iter().map(|m| m.client_message_id.clone()));
                got.extend(batch);
            }
            Ok(None) => panic!("{} of {n} messages within {within:?}", distinct.len()),
            Err(status) => panic!("the stream ended after {} of {n}: {status:?}", distinct.len()),
        }
    }
    got
}

/// Waits for the end of `rx` (deliveries skipped) and answers its status.
async fn end_of(rx: &mut Rx, within: Duration) -> tonic::Status {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match next_deliveries(rx, left).await {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the stream did not end within {within:?}"),
            Err(status) => return status,
        }
    }
}

// ---- observing the server --------------------------------------------------------------------

/// The value of `series` (exact name, no labels or the given ones) on `/metrics`; panics when
/// the series is missing, so that a renamed metric cannot pass an `== 0` check.
async fn series(s: &Steward, series: &str) -> f64 {
    let text = s.get("/metrics").send().await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series || name.strip_suffix("{}") == Some(series))
                .then(|| value.parse::<f64>().ok())?
        })
        .unwrap_or_else(|| {
            let ours: Vec<&str> =
                text.lines().filter(|l| l.starts_with("steward_messaging")).collect();
            panic!("no series {series} on /metrics; messaging series: {ours:#?}")
        })
}

/// The messaging gauges and counters that matter for leaks, for assertion messages.
async fn gauges(s: &Steward) -> String {
    let text = s.get("/metrics").send().await.unwrap().text().await.unwrap();
    text.lines().filter(|l| l.starts_with("steward_messaging")).collect::<Vec<_>>().join("\n")
}

/// Resident memory of the server process, bytes.
fn server_rss(s: &Steward) -> u64 {
    let statm = std::fs::read_to_string(format!("/proc/{}/statm", s.pid())).unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Open descriptors of the server process, without the SQLite store's (a bounded pool opened
/// lazily under concurrent token lookups, not a per-request cost).
fn server_fds(s: &Steward) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", s.pid()))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|p| !p.display().to_string().contains("steward.db"))
        .count()
}

/// Sets quotas of `tenant` (`PATCH /v1/tenants/{id}`).
pub(crate) async fn set_quotas(s: &Steward, tenant: &str, quotas: serde_json::Value) {
    let r = s
        .request(Method::PATCH, &format!("/v1/tenants/{tenant}"))
        .json(&json!({ "quotas": quotas }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
}

/// Waits until no consumer is live and no lease is held.
async fn assert_no_consumers(s: &Steward) {
    let gone = eventually(WITHIN, || async {
        series(s, "steward_messaging_consumers").await == 0.0
            && series(s, "steward_messaging_leases_in_flight").await == 0.0
            && s.resources("?kind=consumer").await.is_empty()
    })
    .await;
    assert!(
        gone,
        "consumers or leases left:\n{}\n{:?}",
        gauges(s).await,
        s.resources("?kind=consumer").await
    );
}

// ---- 1. a client goes with unacked messages: the group's next consumer gets them -------------

async fn unacked_messages_of_a_dropped_client_go_to_the_next_consumer(backend: Backend) {
    let broker = Broker::new(backend);
    let s = broker.start(&[]).await;
    let token = tenant(&s, "acme").await;
    let mut producer = client(&s).await;

    let mut first = client(&s).await;
    let req = pb::ReceiveMessagesRequest {
        // far longer than the wait below: only a return, not an expiry, brings them back in time
        invisible_duration: Some(seconds(60)),
        ..stream_request("g", "t")
    };
    let mut rx = open_ok(&mut first, &token, req).await;
    send_ok(&mut producer, &token, numbered("t", 0..100, 64)).await;
    let got = receive_n(&mut rx, 100, WITHIN).await;
    assert_eq!(got.len(), 100, "each message once to the only consumer");
    assert!(got.iter().all(|m| m.delivery_attempt == 1 && m.topic == "t"));
    let (acked, kept): (Vec<_>, Vec<_>) = got.iter().partition(|m| number(m) < 40);
    let results =
        ack(&mut first, &token, acked.iter().map(|m| m.receipt_handle.clone()).collect()).await;
    assert!(results.iter().all(|r| r.code() == pb::ResultCode::Ok), "{results:?}");
    let kept: BTreeSet<usize> = kept.iter().map(|m| number(m)).collect();
    assert_eq!(kept.len(), 60);
    // the connection goes, not just the stream
    drop(rx);
    drop(first);

    let mut second = client(&s).await;
    let mut rx = open_ok(&mut second, &token, stream_request("g", "t")).await;
    let again = receive_n(&mut rx, 60, WITHIN).await;
    let numbers: BTreeSet<usize> = again.iter().map(number).collect();
    assert_eq!(numbers, kept, "exactly the 60 unacked ones, none of the 40 acked");
    let attempts: BTreeMap<u32, usize> = again.iter().fold(BTreeMap::new(), |mut m, d| {
        *m.entry(d.delivery_attempt).or_default() += 1;
        m
    });
    eprintln!("{backend:?}: {} redeliveries of the 60 unacked; attempts {attempts:?}", again.len());
    assert!(
        again.iter().all(|m| m.delivery_attempt >= 2),
        "each was delivered once before: attempts {attempts:?}"
    );
    let results =
        ack(&mut second, &token, again.iter().map(|m| m.receipt_handle.clone()).collect()).await;
    let acked: BTreeSet<usize> = again
        .iter()
        .zip(&results)
        .filter(|(_, r)| r.code() == pb::ResultCode::Ok)
        .map(|(m, _)| number(m))
        .collect();
    assert_eq!(acked, kept, "{results:?}");
    // nothing else comes: the 40 acked ones are done for the group
    let more = next_deliveries(&mut rx, Duration::from_millis(1500)).await.expect("stream open");
    assert!(more.is_none(), "unexpected deliveries after all were acked: {more:?}");
    drop(rx);
    drop(second);
    assert_no_consumers(&s).await;
}

#[tokio::test]
async fn unacked_messages_of_a_dropped_client_go_to_the_next_consumer_embedded() {
    unacked_messages_of_a_dropped_client_go_to_the_next_consumer(Backend::Embedded).await;
}

#[tokio::test]
async fn unacked_messages_of_a_dropped_client_go_to_the_next_consumer_nats() {
    unacked_messages_of_a_dropped_client_go_to_the_next_consumer(Backend::Nats).await;
}

// ---- 2. producer churn -----------------------------------------------------------------------

/// `n` producers of round `round`, at most 32 in flight: each sends one message; the even ones
/// are then stopped with `CleanupProducer`, the odd ones left to the idle sweep. Answers how
/// many `CleanupProducer` calls found theirs live.
async fn producer_round(c: &Client, token: &str, round: &str, n: usize) -> usize {
    let existed = AtomicUsize::new(0);
    futures_util::stream::iter(0..n)
        .for_each_concurrent(32, |i| {
            let (mut c, existed) = (c.clone(), &existed);
            async move {
                let producer_id = format!("p-{round}-{i}");
                let msg = message("churn", &format!("{round}-{i}"), 16);
                let results = send(&mut c, token, &producer_id, vec![msg]).await.expect("send");
                assert_eq!(results[0].code(), pb::ResultCode::Ok, "{results:?}");
                if i % 2 == 0 {
                    let req = pb::CleanupProducerRequest { producer_id };
                    let r = c.cleanup_producer(authed(token, req)).await.expect("cleanup");
                    if r.into_inner().existed {
                        existed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
        .await;
    existed.into_inner()
}

async fn assert_no_producers(s: &Steward) {
    let gone = eventually(WITHIN, || async {
        series(s, "steward_messaging_producers").await == 0.0
            && s.resources("?kind=producer").await.is_empty()
    })
    .await;
    assert!(gone, "producers left:\n{}", gauges(s).await);
}

async fn churn_of_10k_producers_leaves_nothing_behind(backend: Backend) {
    let broker = Broker::new(backend);
    // the embedded variant sets the key, the NATS one seed 001's alias of it
    let timeout = match backend {
        Backend::Embedded => ("STEWARD__MESSAGING__PRODUCER_CLEANUP_TIMEOUT", "1s"),
        Backend::Nats => ("PRODUCER_CLEANUP_TIMEOUT", "1s"),
    };
    let s = broker
        .start(&[
            timeout,
            ("STEWARD__MESSAGING__PRODUCER_SWEEP_INTERVAL", "500ms"),
            // the embedded broker keeps the ids of the dedup window: keep that out of the figure
            ("STEWARD__MESSAGING__DEDUP_WINDOW", "1s"),
        ])
        .await;
    let token = tenant(&s, "acme").await;
    set_quotas(&s, "acme", json!({"producers": 20000})).await;
    let c = client(&s).await;

    // warm up: worker threads, allocator pools, the store's connections
    let started = Instant::now();
    producer_round(&c, &token, "warm", 2000).await;
    assert_no_producers(&s).await;
    let warm = started.elapsed();
    let base_leaks = series(&s, "steward_messaging_producer_leak_detections_total").await;
    let (base_rss, base_fds) = (server_rss(&s), server_fds(&s));

    let started = Instant::now();
    let existed = producer_round(&c, &token, "main", 10_000).await;
    let churned = started.elapsed();
    assert_no_producers(&s).await;
    let leaks = series(&s, "steward_messaging_producer_leak_detections_total").await - base_leaks;
    assert!(
        leaks >= 5000.0,
        "{leaks} producers stopped by the sweep; {existed} cleaned up explicitly"
    );
    assert!(
        eventually(WITHIN, || async { server_fds(&s) <= base_fds }).await,
        "fds {} > baseline {base_fds}",
        server_fds(&s)
    );
    let rss = server_rss(&s);
    let grown = rss.saturating_sub(base_rss);
    eprintln!(
        "{backend:?}: 10k producer churn in {churned:?} (warm-up of 2000: {warm:?}); {existed} \
         of 5000 CleanupProducer found theirs live, {leaks} swept; RSS {base_rss} -> {rss} \
         (grew {grown} bytes), fds {base_fds} -> {}",
        server_fds(&s)
    );
    assert!(grown < 5 * 1024 * 1024, "RSS grew by {grown} bytes over 10k producers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_of_10k_producers_leaves_nothing_behind_embedded() {
    churn_of_10k_producers_leaves_nothing_behind(Backend::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_of_10k_producers_leaves_nothing_behind_nats() {
    churn_of_10k_producers_leaves_nothing_behind(Backend::Nats).await;
}

// ---- 3. a client that never reads ------------------------------------------------------------

async fn a_stream_that_is_never_read_returns_its_messages_and_memory_stays_bounded(
    backend: Backend,
) {
    const N: usize = 2000;
    let broker = Broker::new(backend);
    let s = broker
        .start(&[
            ("STEWARD__MESSAGING__WRITE_STALL_TIMEOUT", "1s"),
            // messages bounce between the stalled stream and the broker: no dead-lettering here
            ("STEWARD__MESSAGING__MAX_DELIVERY_ATTEMPTS", "1000"),
        ])
        .await;
    let token = tenant(&s, "acme").await;
    let mut producer = client(&s).await;

    // a connection with small HTTP/2 windows, so that unread data backs up into the server soon
    let stalled = Endpoint::from_shared(s.grpc.clone())
        .unwrap()
        .initial_stream_window_size(Some(64 * 1024))
        .initial_connection_window_size(Some(64 * 1024))
        .connect()
        .await
        .unwrap();
    let mut stalled = MessagingClient::new(stalled);
    let req = pb::ReceiveMessagesRequest {
        max_outstanding_messages: 100,
        // leases held by the unread stream expire soon, so more keeps coming its way
        invisible_duration: Some(seconds(1)),
        ..stream_request("g", "t")
    };
    // from here on this stream is never read
    let unread = open_ok(&mut stalled, &token, req).await;
    let base_rss = server_rss(&s);

    for batch in 0..N / 50 {
        send_ok(&mut producer, &token, numbered("t", batch * 50..(batch + 1) * 50, 4096)).await;
    }
    let stalled_seen = eventually(Duration::from_secs(30), || async {
        series(&s, "steward_messaging_channel_full_events_total").await > 0.0
            && series(&s, "steward_messaging_returned_total").await > 0.0
    })
    .await;
    assert!(stalled_seen, "no stall detected:\n{}", gauges(&s).await);
    let rss = server_rss(&s);
    let grown = rss.saturating_sub(base_rss);
    let stalls = series(&s, "steward_messaging_channel_full_events_total").await;
    let returned = series(&s, "steward_messaging_returned_total").await;
    eprintln!(
        "{backend:?}: unread stream: {stalls} stalls, {returned} returned; RSS {base_rss} -> \
         {rss} (grew {grown} bytes) with {N} x 4 KiB sent"
    );
    assert!(grown < 64 * 1024 * 1024, "RSS grew by {grown} bytes");

    // a reading consumer of the group gets everything, the unread stream still open
    let mut reader = client(&s).await;
    let mut rx = open_ok(&mut reader, &token, stream_request("g", "t")).await;
    let mut done = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    while done.len() < N {
        let left = deadline.saturating_duration_since(Instant::now());
        let batch = match next_deliveries(&mut rx, left).await {
            Ok(Some(batch)) => batch,
            Ok(None) => panic!("{} of {N} acked in time:\n{}", done.len(), gauges(&s).await),
            Err(status) => panic!("the reader's stream ended: {status:?}"),
        };
        let results =
            ack(&mut reader, &token, batch.iter().map(|m| m.receipt_handle.clone()).collect())
                .await;
        for (m, r) in batch.iter().zip(results) {
            if r.code() == pb::ResultCode::Ok {
                done.insert(number(m));
            }
        }
    }
    assert_eq!(done, (0..N).collect::<BTreeSet<_>>(), "nothing lost");
    assert_eq!(series(&s, "steward_messaging_dead_lettered_total").await, 0.0);
    drop((unread, stalled, rx, reader));
    assert_no_consumers(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_is_never_read_returns_its_messages_and_memory_stays_bounded_embedded() {
    a_stream_that_is_never_read_returns_its_messages_and_memory_stays_bounded(Backend::Embedded)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_is_never_read_returns_its_messages_and_memory_stays_bounded_nats() {
    a_stream_that_is_never_read_returns_its_messages_and_memory_stays_bounded(Backend::Nats).await;
}

// ---- 4. NATS goes away and comes back --------------------------------------------------------

#[tokio::test]
async fn sends_answer_unavailable_while_nats_is_down_and_work_again_after_it_returns_nats() {
    let mut broker = Broker::new(Backend::Nats);
    let s = broker.start(&[("STEWARD__MESSAGING__SEND_TIMEOUT", "2s")]).await;
    let token = tenant(&s, "acme").await;
    let mut producer = client(&s).await;
    let mut consumer = client(&s).await;
    let mut rx = open_ok(&mut consumer, &token, stream_request("g", "t")).await;
    send_ok(&mut producer, &token, numbered("t", 0..10, 64)).await;
    let before = receive_n(&mut rx, 10, WITHIN).await;
    let results =
        ack(&mut consumer, &token, before.iter().map(|m| m.receipt_handle.clone()).collect()).await;
    assert!(results.iter().all(|r| r.code() == pb::ResultCode::Ok), "{results:?}");

    broker.nats().stop();
    // while NATS is down: an answer within a few seconds, never OK
    for attempt in 0..3 {
        let t0 = Instant::now();
        let ids = 10 + attempt * 10..20 + attempt * 10;
        let answer = tokio::time::timeout(
            Duration::from_secs(15),
            send(&mut producer, &token, "", numbered("t", ids, 64)),
        )
        .await
        .expect("SendMessage answers while NATS is down");
        let took = t0.elapsed();
        match &answer {
            Ok(results) => {
                for r in results {
                    assert!(
                        matches!(
                            r.code(),
                            pb::ResultCode::RetryLater | pb::ResultCode::Unavailable
                        ),
                        "a message stored while NATS is down? {r:?}"
                    );
                }
            }
            Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        }
        eprintln!(
            "NATS down, send {attempt}: {took:?}: {:?}",
            answer.as_ref().map(|r| (r[0].code(), r[0].detail.clone()))
        );
        assert!(took < Duration::from_secs(8), "answered after {took:?} (send_timeout 2s)");
    }

    broker.nats().start_again().expect("nats-server again on the same port and store");
    let t0 = Instant::now();
    let back = eventually(Duration::from_secs(30), || {
        let mut producer = producer.clone();
        let token = token.clone();
        async move {
            // the same client ids each time: a repeat is de-duplicated
            send(&mut producer, &token, "", numbered("t", 100..110, 64))
                .await
                .is_ok_and(|r| r.iter().all(|r| r.code() == pb::ResultCode::Ok))
        }
    })
    .await;
    assert!(back, "sending did not work again after NATS returned; log:\n{}", s.dump());
    eprintln!("NATS back: sends work again after {:?}", t0.elapsed());

    // the consumer gets what was stored: all of the last batch, and of the batches sent while
    // NATS was down only what may have been stored (UNAVAILABLE says "may")
    let mut got = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(100..110).all(|i| got.contains(&i)) {
        let left = deadline.saturating_duration_since(Instant::now());
        let batch = match next_deliveries(&mut rx, left).await {
            Ok(Some(batch)) => batch,
            Ok(None) => {
                panic!("after NATS returned the consumer got only {got:?}; log:\n{}", s.dump())
            }
            Err(status) => {
                // the stream may end when the broker goes; the group does not
                eprintln!("the stream ended over the NATS restart ({status:?}); receiving again");
                rx = open_ok(&mut consumer, &token, stream_request("g", "t")).await;
                continue;
            }
        };
        let results =
            ack(&mut consumer, &token, batch.iter().map(|m| m.receipt_handle.clone()).collect())
                .await;
        assert!(results.iter().all(|r| r.code() == pb::ResultCode::Ok), "{results:?}");
        got.extend(batch.iter().map(number));
    }
    assert!(got.iter().all(|i| (10..40).contains(i) || (100..110).contains(i)), "{got:?}");
}

// ---- 5. bad requests -------------------------------------------------------------------------

async fn bad_requests_get_the_documented_code_and_disturb_nothing(backend: Backend) {
    let broker = Broker::new(backend);
    let s = broker
        .start(&[
            ("STEWARD__MESSAGING__MAX_REQUEST", "1MiB"),
            ("STEWARD__MESSAGING__MAX_BODY", "64KiB"),
            ("STEWARD__MESSAGING__MAX_MESSAGE", "128KiB"),
        ])
        .await;
    let token = tenant(&s, "acme").await;
    let mut c = client(&s).await;
    let mut reader = client(&s).await;
    let mut rx = open_ok(&mut reader, &token, stream_request("g", "t")).await;

    // empty topic: that message alone is refused
    let results = send(&mut c, &token, "", vec![message("t", "m-0", 8), message("", "m-x", 8)])
        .await
        .expect("a batch with a bad message is answered OK");
    assert_eq!(results[0].code(), pb::ResultCode::Ok, "{results:?}");
    assert_eq!(results[1].code(), pb::ResultCode::InvalidArgument, "{results:?}");
    assert!(results[1].detail.contains("messages[1].topic"), "{results:?}");
    assert!(results[1].message_id.is_empty());

    // a body over max_body: that message alone is refused
    let results = send(
        &mut c,
        &token,
        "",
        vec![message("t", "m-big", 64 * 1024 + 1), message("t", "m-1", 8)],
    )
    .await
    .expect("a batch with a bad message is answered OK");
    assert_eq!(results[0].code(), pb::ResultCode::InvalidArgument, "{results:?}");
    assert!(results[0].detail.contains("messages[0].body"), "{results:?}");
    assert_eq!(results[1].code(), pb::ResultCode::Ok, "{results:?}");

    // a request over max_request: tonic refuses it before Steward reads it
    let huge = (0..20).map(|i| message("t", &format!("m-huge-{i}"), 60 * 1024)).collect();
    let status = send(&mut c, &token, "", huge).await.expect_err("over max_request");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");

    // an empty batch is a bad request
    let status = send(&mut c, &token, "", vec![]).await.expect_err("an empty batch");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().starts_with("bad_request: invalid `messages`"), "{status:?}");

    // receipts: malformed, unknown, real
    let got = receive_n(&mut rx, 2, WITHIN).await;
    let numbers: BTreeSet<usize> = got.iter().map(number).collect();
    assert_eq!(numbers, BTreeSet::from([0, 1]), "the good messages, nothing else");
    let real = got[0].receipt_handle.clone();
    let (consumer, _) = real.split_once('.').expect("a receipt handle");
    let results = ack(
        &mut c,
        &token,
        vec![
            "not a receipt".into(),
            "00000000000000ff.1".into(),
            format!("{consumer}.ffffff"),
            real.clone(),
        ],
    )
    .await;
    let codes: Vec<_> = results.iter().map(pb::EntryResult::code).collect();
    assert_eq!(
        codes,
        [
            pb::ResultCode::InvalidArgument,
            pb::ResultCode::NotFound,
            pb::ResultCode::NotFound,
            pb::ResultCode::Ok
        ],
        "{results:?}"
    );
    assert!(results[0].detail.contains("receipt_handles[0]"), "{results:?}");
    // spent now
    let results = ack(&mut c, &token, vec![real]).await;
    assert_eq!(results[0].code(), pb::ResultCode::NotFound, "{results:?}");
    let status = c
        .ack_messages(authed(&token, pb::AckMessagesRequest { receipt_handles: vec![] }))
        .await
        .expect_err("an empty ack");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // a bad group name
    let status =
        open(&mut c, &token, stream_request("bad group!", "t")).await.expect_err("bad group");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("`group`"), "{status:?}");

    // no token, a wrong token
    let req =
        pb::SendMessageRequest { producer_id: String::new(), messages: numbered("t", 9..10, 8) };
    let status = c.send_message(tonic::Request::new(req.clone())).await.expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let status =
        c.send_message(authed("stw_0000000000000000_00", req)).await.expect_err("a wrong token");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let status = c
        .receive_messages(authed("stw_0000000000000000_00", stream_request("g", "t")))
        .await
        .expect_err("a wrong token");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    // the open stream of the tenant kept going all along, and got only the good messages
    send_ok(&mut c, &token, numbered("t", 2..3, 8)).await;
    let got = receive_n(&mut rx, 1, WITHIN).await;
    assert_eq!(got.iter().map(number).collect::<Vec<_>>(), [2]);
    let results =
        ack(&mut reader, &token, got.iter().map(|m| m.receipt_handle.clone()).collect()).await;
    assert!(results.iter().all(|r| r.code() == pb::ResultCode::Ok), "{results:?}");
    let more = next_deliveries(&mut rx, Duration::from_millis(1000)).await.expect("stream open");
    assert!(more.is_none(), "{more:?}");
    assert_eq!(series(&s, "steward_messaging_sent_total{result=\"invalid_argument\"}").await, 2.0);
}

#[tokio::test]
async fn bad_requests_get_the_documented_code_and_disturb_nothing_embedded() {
    bad_requests_get_the_documented_code_and_disturb_nothing(Backend::Embedded).await;
}

#[tokio::test]
async fn bad_requests_get_the_documented_code_and_disturb_nothing_nats() {
    bad_requests_get_the_documented_code_and_disturb_nothing(Backend::Nats).await;
}

async fn another_tenants_receipt_handle_is_not_found(backend: Backend) {
    let broker = Broker::new(backend);
    let s = broker.start(&[]).await;
    let acme = tenant(&s, "acme").await;
    let globex = tenant(&s, "globex").await;
    let mut c = client(&s).await;
    let mut rx = open_ok(&mut c, &acme, stream_request("g", "t")).await;
    // globex's topic of the same name is another topic
    let mut theirs = open_ok(&mut c, &globex, stream_request("g", "t")).await;
    send_ok(&mut c, &acme, numbered("t", 0..1, 8)).await;
    let got = receive_n(&mut rx, 1, WITHIN).await;
    let receipt = got[0].receipt_handle.clone();

    let results = ack(&mut c, &globex, vec![receipt.clone()]).await;
    assert_eq!(results[0].code(), pb::ResultCode::NotFound, "{results:?}");
    let req = pb::NackMessagesRequest {
        entries: vec![pb::NackEntry { receipt_handle: receipt.clone(), delay: None }],
    };
    let results = c.nack_messages(authed(&globex, req)).await.unwrap().into_inner().results;
    assert_eq!(results[0].code(), pb::ResultCode::NotFound, "{results:?}");
    let req = pb::ChangeInvisibleDurationRequest {
        entries: vec![pb::ChangeInvisibleDurationEntry {
            receipt_handle: receipt.clone(),
            invisible_duration: Some(seconds(60)),
        }],
    };
    let results =
        c.change_invisible_duration(authed(&globex, req)).await.unwrap().into_inner().results;
    assert_eq!(results[0].code(), pb::ResultCode::NotFound, "{results:?}");
    let more = next_deliveries(&mut theirs, Duration::from_millis(500)).await.expect("open");
    assert!(more.is_none(), "another tenant's message reached globex: {more:?}");

    // the owner's receipt is untouched
    let results = ack(&mut c, &acme, vec![receipt]).await;
    assert_eq!(results[0].code(), pb::ResultCode::Ok, "{results:?}");
}

#[tokio::test]
async fn another_tenants_receipt_handle_is_not_found_embedded() {
    another_tenants_receipt_handle_is_not_found(Backend::Embedded).await;
}

#[tokio::test]
async fn another_tenants_receipt_handle_is_not_found_nats() {
    another_tenants_receipt_handle_is_not_found(Backend::Nats).await;
}

async fn a_stream_over_the_consumers_quota_is_resource_exhausted(backend: Backend) {
    let broker = Broker::new(backend);
    let s = broker.start(&[]).await;
    let token = tenant(&s, "acme").await;
    set_quotas(&s, "acme", json!({"consumers": 1})).await;
    let mut c = client(&s).await;
    let first = open_ok(&mut c, &token, stream_request("g", "t")).await;
    let status = open(&mut c, &token, stream_request("h", "t")).await.expect_err("over quota");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().starts_with("resource_exhausted:"), "{status:?}");
    assert!(status.metadata().get("retry-after").is_some(), "{status:?}");
    // the slot comes back when the first stream goes
    drop(first);
    let admitted = eventually(WITHIN, || {
        let (mut c, token) = (c.clone(), token.clone());
        async move { open(&mut c, &token, stream_request("h", "t")).await.is_ok() }
    })
    .await;
    assert!(admitted, "the quota slot was not released");
}

#[tokio::test]
async fn a_stream_over_the_consumers_quota_is_resource_exhausted_embedded() {
    a_stream_over_the_consumers_quota_is_resource_exhausted(Backend::Embedded).await;
}

#[tokio::test]
async fn a_stream_over_the_consumers_quota_is_resource_exhausted_nats() {
    a_stream_over_the_consumers_quota_is_resource_exhausted(Backend::Nats).await;
}

// ---- 6. SIGTERM with open streams ------------------------------------------------------------

async fn sigterm_ends_open_streams_unavailable_returns_their_messages_and_exits_0(
    backend: Backend,
) {
    const GROUPS: usize = 3;
    const PER_GROUP: usize = 10;
    let broker = Broker::new(backend);
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().display().to_string();
    let env = [
        ("STEWARD__STORE__DATA_DIR", data_dir.as_str()),
        ("STEWARD__SHUTDOWN__DEADLINES__READINESS_OFF", "100ms"),
    ];
    let mut s = broker.start(&env).await;
    let token = tenant(&s, "acme").await;
    let mut c = client(&s).await;
    let mut streams = Vec::new();
    for g in 0..GROUPS {
        let req = pb::ReceiveMessagesRequest {
            // far longer than this test: only a return makes them deliverable again
            invisible_duration: Some(seconds(120)),
            ..stream_request(&format!("g{g}"), "t")
        };
        streams.push(open_ok(&mut c, &token, req).await);
    }
    send_ok(&mut c, &token, numbered("t", 0..PER_GROUP, 64)).await;
    for rx in &mut streams {
        let got = receive_n(rx, PER_GROUP, WITHIN).await;
        assert_eq!(got.len(), PER_GROUP);
    }
    assert_eq!(series(&s, "steward_messaging_leases_in_flight").await, (GROUPS * PER_GROUP) as f64);

    let t0 = Instant::now();
    s.signal(Signal::SIGTERM);
    for rx in &mut streams {
        let status = end_of(rx, WITHIN).await;
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        // docs/protocol/messaging.md: either message, as the stream or its consumer ends first
        assert!(
            status.message().starts_with("shutting_down: server shutting down")
                || status.message().starts_with("unavailable: the server is shutting down"),
            "{status:?}"
        );
    }
    let exit = s.wait_exit(Duration::from_secs(30)).await.expect("exited within the grace");
    assert!(exit.success(), "exit status {exit:?}; log:\n{}", s.dump());
    let report =
        s.find_message("shutdown complete").unwrap_or_else(|| panic!("no report:\n{}", s.dump()));
    assert_eq!(report["forced"], 0, "{report}");
    eprintln!("{backend:?}: SIGTERM with {GROUPS} open streams: exit 0 after {:?}", t0.elapsed());

    match backend {
        Backend::Embedded => {
            // returned to the embedded broker, which says it loses them with the process
            let line = s
                .find_message("messaging: the embedded broker stops with")
                .unwrap_or_else(|| panic!("no report of the unacked messages:\n{}", s.dump()));
            assert_eq!(line["unacked"], (GROUPS * PER_GROUP) as u64, "{line}");
        }
        Backend::Nats => {
            // returned to NATS: another Steward on it delivers them long before they expire
            drop(s);
            let t0 = Instant::now();
            let s = broker.start(&env).await;
            let mut c = client(&s).await;
            for g in 0..GROUPS {
                let mut rx = open_ok(&mut c, &token, stream_request(&format!("g{g}"), "t")).await;
                let got = receive_n(&mut rx, PER_GROUP, Duration::from_secs(30)).await;
                assert!(got.iter().all(|m| m.delivery_attempt >= 2), "{got:?}");
                let results =
                    ack(&mut c, &token, got.iter().map(|m| m.receipt_handle.clone()).collect())
                        .await;
                assert!(results.iter().all(|r| r.code() == pb::ResultCode::Ok), "{results:?}");
            }
            let took = t0.elapsed();
            eprintln!("NATS: the in-flight messages came again {took:?} after the restart");
            assert!(took < Duration::from_secs(60), "they expired rather than came back");
        }
    }
}

#[tokio::test]
async fn sigterm_ends_open_streams_unavailable_returns_their_messages_and_exits_0_embedded() {
    sigterm_ends_open_streams_unavailable_returns_their_messages_and_exits_0(Backend::Embedded)
        .await;
}

#[tokio::test]
async fn sigterm_ends_open_streams_unavailable_returns_their_messages_and_exits_0_nats() {
    sigterm_ends_open_streams_unavailable_returns_their_messages_and_exits_0(Backend::Nats).await;
}

// ---- 7. consumer churn -----------------------------------------------------------------------

async fn churn_of_200_consumers_leaves_nothing_behind(backend: Backend) {
    const GROUPS: usize = 10;
    const PER_GROUP: usize = 20;
    let broker = Broker::new(backend);
    // the leak check runs with the sweep: often, so that a leak would be seen
    let s = broker.start(&[("STEWARD__MESSAGING__PRODUCER_SWEEP_INTERVAL", "500ms")]).await;
    let token = tenant(&s, "acme").await;
    set_quotas(&s, "acme", json!({"consumers": 1000})).await;
    let mut producer = client(&s).await;
    send_ok(&mut producer, &token, numbered("warm", 0..1, 8)).await;
    let base_fds = server_fds(&s);

    // one connection per group, its streams each holding at most one message
    let mut groups = Vec::new();
    for g in 0..GROUPS {
        let mut c = client(&s).await;
        let mut streams = Vec::new();
        for i in 0..PER_GROUP {
            let req = pb::ReceiveMessagesRequest {
                consumer_id: format!("c-{g}-{i}"),
                max_outstanding_messages: 1,
                ..stream_request(&format!("g{g}"), "t")
            };
            streams.push(open_ok(&mut c, &token, req).await);
        }
        groups.push((c, streams));
    }
    assert!(
        eventually(WITHIN, || async {
            series(&s, "steward_messaging_consumers").await == (GROUPS * PER_GROUP) as f64
        })
        .await
    );
    // every group sees each message: one each for its 20 streams
    send_ok(&mut producer, &token, numbered("t", 0..PER_GROUP, 8)).await;
    for (g, (_, streams)) in groups.iter_mut().enumerate() {
        let mut seen = BTreeSet::new();
        for rx in streams.iter_mut() {
            let got = next_deliveries(rx, WITHIN).await.expect("open").expect("one message");
            assert_eq!(got.len(), 1, "one at a time (max_outstanding_messages 1)");
            seen.insert(number(&got[0]));
        }
        assert_eq!(seen.len(), PER_GROUP, "group g{g}: each stream got another message");
    }
    assert_eq!(series(&s, "steward_messaging_leases_in_flight").await, (GROUPS * PER_GROUP) as f64);

    // half closed by the client, half by CleanupConsumer
    let mut cleaned = groups.split_off(GROUPS / 2);
    for (c, streams) in groups {
        drop(streams);
        drop(c);
    }
    for (g, (c, streams)) in cleaned.iter_mut().enumerate() {
        let group = format!("g{}", g + GROUPS / 2);
        let req = pb::CleanupConsumerRequest { group, consumer_id: String::new() };
        let report = c.cleanup_consumer(authed(&token, req)).await.expect("cleanup").into_inner();
        assert_eq!(report.streams_ended, PER_GROUP as u64, "{report:?}");
        assert_eq!(report.messages_returned, PER_GROUP as u64, "{report:?}");
        for rx in streams.iter_mut() {
            let status = end_of(rx, WITHIN).await;
            assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        }
    }
    drop(cleaned);

    assert_no_consumers(&s).await;
    assert!(series(&s, "steward_messaging_returned_total").await >= (GROUPS * PER_GROUP) as f64);
    assert!(
        eventually(WITHIN, || async { server_fds(&s) <= base_fds }).await,
        "fds {} > baseline {base_fds}",
        server_fds(&s)
    );
    // the leak check ran every 500 ms all along: no consumer ever outlived its stream
    assert_eq!(series(&s, "steward_messaging_consumer_leak_detections_total").await, 0.0);
    eprintln!("{backend:?}: 200 consumers churned; fds {} (baseline {base_fds})", server_fds(&s));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_of_200_consumers_leaves_nothing_behind_embedded() {
    churn_of_200_consumers_leaves_nothing_behind(Backend::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_of_200_consumers_leaves_nothing_behind_nats() {
    churn_of_200_consumers_leaves_nothing_behind(Backend::Nats).await;
}

// ---- tenant quotas: topics, groups, stored messages and bytes ---------------------------------

/// The code and detail of every result of a `SendMessage` that must have been refused by
/// `quota`.
fn assert_refused_by(results: &[pb::SendResult], quota: &str) {
    for r in results {
        assert_eq!(r.code(), pb::ResultCode::ResourceExhausted, "{r:?}");
        assert!(r.detail.contains(&format!("`{quota}`")), "{r:?}");
    }
}

/// Each quota the broker counts is refused at its limit and admitted again once what held it
/// is gone: `topics` (idle topics are removed), `groups` (idle groups are removed),
/// `stored_messages` (acked messages free their place).
async fn each_messaging_quota_refuses_at_its_limit_and_admits_after_release(backend: Backend) {
    let broker = Broker::new(backend);
    let s = broker
        .start(&[
            ("STEWARD__MESSAGING__TOPIC_IDLE_TTL", "1s"),
            ("STEWARD__MESSAGING__PRODUCER_SWEEP_INTERVAL", "500ms"),
            ("STEWARD__MESSAGING__CONSUMER_CLEANUP_TIMEOUT", "1s"),
        ])
        .await;
    let mut c = client(&s).await;

    // topics: two, the third refused; another tenant sends and receives all along
    let tq = tenant(&s, "tq").await;
    set_quotas(&s, "tq", json!({ "topics": 2 })).await;
    let other = tenant(&s, "other").await;
    let mut other_rx = open_ok(&mut c, &other, stream_request("g", "c")).await;
    send_ok(&mut c, &tq, vec![message("a", "a1", 10)]).await;
    send_ok(&mut c, &tq, vec![message("b", "b1", 10)]).await;
    let results = send(&mut c, &tq, "p", vec![message("c", "c1", 10)]).await.unwrap();
    assert_refused_by(&results, "topics");
    send_ok(&mut c, &other, vec![message("c", "o1", 10)]).await;
    receive_n(&mut other_rx, 1, WITHIN).await;
    // the two topics hold nothing and nobody uses them: they go, and the third fits
    let admitted = eventually(Duration::from_secs(30), || async {
        let r = send(&mut client(&s).await, &tq, "p", vec![message("c", "c2", 10)]).await;
        r.is_ok_and(|r| r[0].code() == pb::ResultCode::Ok)
    })
    .await;
    assert!(admitted, "idle topics never gave their places back");
    assert!(
        series(&s, "steward_tenant_admissions_refused_total{tenant=\"tq\",quota=\"topics\"}").await
            >= 1.0
    );

    // groups: one, a second refused with retry advice, then admitted once the first is gone
    let gq = tenant(&s, "gq").await;
    set_quotas(&s, "gq", json!({ "groups": 1 })).await;
    let first = open_ok(&mut c, &gq, stream_request("g", "t")).await;
    let err = open(&mut c, &gq, stream_request("h", "t")).await.map(|_| ()).unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("`groups`"), "{err:?}");
    assert!(err.metadata().get("retry-after").is_some());
    drop(first);
    let admitted = eventually(Duration::from_secs(30), || async {
        open(&mut client(&s).await, &gq, stream_request("h", "t")).await.is_ok()
    })
    .await;
    assert!(admitted, "an idle group never gave its place back");

    // stored messages: three, the fourth refused, acked ones make room
    let sq = tenant(&s, "sq").await;
    set_quotas(&s, "sq", json!({ "stored_messages": 3 })).await;
    let mut rx = open_ok(&mut c, &sq, stream_request("g", "t")).await;
    send_ok(&mut c, &sq, numbered("t", 0..3, 10)).await;
    let results = send(&mut c, &sq, "", numbered("t", 3..4, 10)).await.unwrap();
    assert_refused_by(&results, "stored_messages");
    let used = "steward_tenant_quota_used{tenant=\"sq\",quota=\"stored_messages\"}";
    assert_eq!(series(&s, used).await, 3.0);
    let limit = "steward_tenant_quota_limit{tenant=\"sq\",quota=\"stored_messages\"}";
    assert_eq!(series(&s, limit).await, 3.0);
    let got = receive_n(&mut rx, 3, WITHIN).await;
    ack(&mut c, &sq, got.iter().map(|m| m.receipt_handle.clone()).collect()).await;
    let admitted = eventually(Duration::from_secs(30), || async {
        let r = send(&mut client(&s).await, &sq, "", numbered("t", 3..4, 10)).await;
        r.is_ok_and(|r| r[0].code() == pb::ResultCode::Ok)
    })
    .await;
    assert!(admitted, "acked messages never gave their places back");
    drop((rx, other_rx));
    assert_no_consumers(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_messaging_quota_refuses_at_its_limit_and_admits_after_release_embedded() {
    each_messaging_quota_refuses_at_its_limit_and_admits_after_release(Backend::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_messaging_quota_refuses_at_its_limit_and_admits_after_release_nats() {
    each_messaging_quota_refuses_at_its_limit_and_admits_after_release(Backend::Nats).await;
}

/// The review's first finding, tried again: one tenant sends to 30 000 topics. Past its
/// `topics` quota every send is refused, memory stays bounded, and another tenant's send and
/// receive are not affected. (Embedded, default quota 1000; the NATS backend's topics are
/// streams, created one by one, so it runs with 50.)
async fn thirty_thousand_topics_are_refused_past_the_quota(backend: Backend, quota: u64) {
    const ATTEMPTS: usize = 30_000;
    const BATCH: usize = 1000;
    let broker = Broker::new(backend);
    let s = broker.start(&[]).await;
    let hostile = tenant(&s, "hostile").await;
    if backend == Backend::Nats {
        set_quotas(&s, "hostile", json!({ "topics": quota })).await;
    }
    let other = tenant(&s, "other").await;
    let mut c = client(&s).await;
    let mut other_rx = open_ok(&mut c, &other, stream_request("g", "t")).await;
    let base_rss = server_rss(&s);
    let mut stored = 0;
    let mut refused = 0;
    for batch in 0..ATTEMPTS / BATCH {
        let messages = (batch * BATCH..(batch + 1) * BATCH)
            .map(|i| message(&format!("t{i}"), &format!("m{i}"), 16))
            .collect();
        for r in send(&mut c, &hostile, "one-producer", messages).await.expect("SendMessage") {
            match r.code() {
                pb::ResultCode::Ok => stored += 1,
                pb::ResultCode::ResourceExhausted => {
                    assert!(r.detail.contains("`topics`"), "{r:?}");
                    refused += 1;
                }
                other => panic!("unexpected result {other:?}: {r:?}"),
            }
        }
    }
    let grown = server_rss(&s).saturating_sub(base_rss);
    eprintln!(
        "{backend:?}: {ATTEMPTS} topic attempts: {stored} stored, {refused} refused; RSS grew \
         {grown} bytes"
    );
    assert_eq!(stored, quota as usize);
    assert_eq!(refused, ATTEMPTS - quota as usize);
    assert!(grown < 32 * 1024 * 1024, "RSS grew by {grown} bytes");
    send_ok(&mut c, &other, vec![message("t", "o1", 10)]).await;
    let got = receive_n(&mut other_rx, 1, WITHIN).await;
    ack(&mut c, &other, got.iter().map(|m| m.receipt_handle.clone()).collect()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_thousand_topics_are_refused_past_the_quota_embedded() {
    thirty_thousand_topics_are_refused_past_the_quota(Backend::Embedded, 1000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_thousand_topics_are_refused_past_the_quota_nats() {
    thirty_thousand_topics_are_refused_past_the_quota(Backend::Nats, 50).await;
}

/// The review's second finding, tried again: a group opened once on each of 40 topics, the
/// streams cancelled, then 3 MiB messages sent to every topic. The tenant's `stored_bytes`
/// (64 MiB by default) refuses what passes it; memory grows by about that much, not by all
/// that was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filling_groups_on_many_topics_is_refused_at_the_stored_bytes_quota() {
    const TOPICS: usize = 40;
    const BODY: usize = 3 * 1024 * 1024;
    let broker = Broker::new(Backend::Embedded);
    let s = broker.start(&[]).await;
    let token = tenant(&s, "acme").await;
    let mut c = client(&s).await;
    for t in 0..TOPICS {
        let rx = open_ok(&mut c, &token, stream_request("g", &format!("t{t}"))).await;
        drop(rx);
    }
    assert_no_consumers(&s).await;
    let base_rss = server_rss(&s);
    let (mut stored, mut refused) = (0usize, 0usize);
    for round in 0..2 {
        for t in 0..TOPICS {
            let m = message(&format!("t{t}"), &format!("m{round}-{t}"), BODY);
            let r = send(&mut c, &token, "p", vec![m]).await.expect("SendMessage");
            match r[0].code() {
                pb::ResultCode::Ok => stored += 1,
                pb::ResultCode::ResourceExhausted => {
                    assert!(r[0].detail.contains("`stored_bytes`"), "{:?}", r[0]);
                    refused += 1;
                }
                other => panic!("unexpected result {other:?}"),
            }
        }
    }
    let grown = server_rss(&s).saturating_sub(base_rss);
    eprintln!("{stored} x 3 MiB stored, {refused} refused; RSS grew {grown} bytes");
    assert_eq!(stored, 64 / 3, "64 MiB holds 21 messages of 3 MiB");
    assert_eq!(refused, 2 * TOPICS - stored);
    assert!(grown < 64 * 1024 * 1024 + 48 * 1024 * 1024, "RSS grew by {grown} bytes");
    let used = "steward_tenant_quota_used{tenant=\"acme\",quota=\"stored_bytes\"}";
    assert!(series(&s, used).await <= 64.0 * 1024.0 * 1024.0);
}
