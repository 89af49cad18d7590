//! Load benchmark of the messaging front door (`steward.messaging.v1.Messaging`) on the real
//! `steward` binary.
//!
//! Starts the `steward` of the profile being built (release under `cargo bench`) as a child
//! process on loopback ports chosen by the OS, creates a tenant and a token through the admin
//! API, drives it with tonic clients on the same machine, and prints, for 256-byte messages:
//!
//! 1. `send`: `SendMessage` throughput into the embedded broker, msg/s. `BENCH_CONCURRENCY`
//!    (default 8) tasks, each on its own HTTP/2 connection and its own topic, send
//!    `BENCH_MESSAGES` (default 500000) messages in batches of 100, one call in flight per task.
//!    Each topic has a group (opened, then left), so every message is stored. Target ≥ 100000.
//!    The server's `[messaging] topic_max_messages` is its default (100000) unless a phase needs
//!    more in one topic (`BENCH_RECEIVE` above it); the first line says what it is.
//!    `backlog`: the server's RSS growth per waiting message, for those batches of 100 and for
//!    `BENCH_BACKLOG` (default 20000) messages sent one per call (C tasks) into a topic whose
//!    group nobody reads.
//! 2. `receive`: receive + ack throughput, msg/s. `BENCH_RECEIVE` (default 200000) messages
//!    preloaded into one topic whose group was opened first (a group sees what is published
//!    after it first opened), then `BENCH_STREAMS` (default 4) competing streams of that group
//!    receive them and ack each `Deliveries` frame's receipts in one `AckMessages` call (at most
//!    1000), one ack call in flight per stream. Timed from opening the streams to the last ack.
//!    Target ≥ 50000.
//! 3. `latency`: end-to-end latency at `BENCH_RATE` (default 1000) msg/s for
//!    `BENCH_LATENCY_SECONDS` (default 10): single-message `SendMessage` calls paced by a timer
//!    (each its own task, so a slow call delays no other), each carrying its send instant in the
//!    property `sent_ns`; one open stream computes the latency on arrival and acks.
//!    p50/p99/max. Target p99 ≤ 5 ms.
//! 4. `nats` (when `nats-server` is found, `$NATS_SERVER` or on `PATH`, and `BENCH_NATS` is not
//!    0): a throwaway `nats-server -js` on a loopback port and a second Steward with
//!    `[messaging] backend = "nats"`. `BENCH_NATS_ROUNDS` (default 3) rounds, each on fresh
//!    topics and streams and alternating which side goes first: `BENCH_NATS_MESSAGES` (default
//!    100000) sent through Steward as in 1, and the same batches published straight to
//!    JetStream with async-nats — the same concurrency, one client shared by the tasks as
//!    Steward shares one, streams and durable pull consumers configured as Steward configures
//!    them (interest retention, discard new, file storage, the same limits and duplicate window,
//!    `Nats-Msg-Id` on every message), publish acks pipelined (publish 100, then await the 100
//!    acks). Both throughputs over all rounds, their ratio (target ≥ 0.8, issue 18) and each round's, and
//!    the messages JetStream holds afterwards on each side. Nobody reads the groups, so the
//!    bench's tenant gets `stored_messages` (twice what the rounds send, at most the 1000000
//!    maximum) and `stored_bytes` (the 1 TiB maximum) quotas that hold every round's messages.
//!
//! Every phase also reports the CPU seconds the server, the bench client (and nats-server) spent
//! in it — client, server and broker share the machine's cores. Then SIGTERM and the servers'
//! exit statuses and WARN/ERROR log lines, and all figures as one JSON line
//! (`{"bench":"messaging",…}`). It asserts only that the setup worked (the servers started, the
//! tenant, token and groups were created); everything else is reported, including refused
//! messages. `BENCH_EMBEDDED=0` skips phases 1–3, `BENCH_NATS=0` phase 4; `BENCH_LOG=<file>`
//! copies the embedded server's log there (and the NATS one's to `<file>.nats`).
//!
//! Run with `cargo bench -p steward-server --bench messaging`; a quick run:
//! `BENCH_MESSAGES=50000 BENCH_RECEIVE=20000 BENCH_LATENCY_SECONDS=3 BENCH_NATS_MESSAGES=20000
//! cargo bench -p steward-server --bench messaging`. Without `--bench` among its arguments
//! (`cargo test --benches`) it is a smoke run (4 tasks, 2000 messages per phase, 1000 of
//! backlog, 1 s of latency, one NATS round) unless the variables say otherwise.
#![allow(missing_docs, clippy::print_stdout, clippy::print_stderr)]

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::stream::{DiscardPolicy, RetentionPolicy, StorageType};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::join_all;
use nix::unistd::{SysconfVar, sysconf};
use serde_json::{Value, json};
use steward_proto::messaging::v1 as pb;
use steward_proto::messaging::v1::messaging_client::MessagingClient;
use steward_proto::messaging::v1::receive_messages_response::Event;
use steward_tenancy::model;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::support::{Bearer, Server, connect, loadavg, mib, ms, round2, rss, spread};

/// The consumer group of every topic.
const GROUP: &str = "bench";
/// Body bytes of every message.
const BODY: usize = 256;
/// Messages per `SendMessage` call.
const BATCH: usize = 100;
/// Most receipt handles per `AckMessages` call (`[messaging] max_batch`).
const ACK_BATCH: usize = 1000;
/// Messages a topic may hold: `[messaging] topic_max_messages` (its default) unless a run
/// needs more.
const TOPIC_MAX_MESSAGES: usize = 100_000;
/// `[messaging] topic_max_bytes`, as the config's default (for the direct JetStream streams).
const TOPIC_MAX_BYTES: i64 = 256 * 1024 * 1024;
/// `[messaging] dedup_window`, as the config's default (for the direct JetStream streams).
const DEDUP_WINDOW: Duration = Duration::from_secs(120);
/// Deadline of anything that should be quick: start-up, one call, opening a group.
const STEP: Duration = Duration::from_secs(30);
/// Deadline of a whole phase.
const ALL: Duration = Duration::from_secs(300);

/// The run's parameters.
#[derive(Debug, Clone)]
struct Params {
    /// Messages of the send phase (M).
    messages: usize,
    /// Sending tasks, each with its own connection and topic (C).
    concurrency: usize,
    /// Messages preloaded for the receive phase (N).
    receive: usize,
    /// Messages of the backlog phase, one per call (B).
    backlog: usize,
    /// Competing receive streams (S).
    streams: usize,
    /// Messages per second of the latency phase.
    rate: u32,
    /// Seconds of the latency phase.
    latency_seconds: u32,
    /// Phases 1 to 3 run (`BENCH_EMBEDDED` is not 0).
    embedded: bool,
    /// Messages of the NATS phase, through Steward and direct each, per round.
    nats_messages: usize,
    /// Rounds of the NATS phase, each Steward then direct on fresh topics and streams.
    nats_rounds: usize,
    /// The nats-server binary, when the NATS phase runs.
    nats_server: Option<String>,
    /// Why the NATS phase does not run.
    nats_skipped: Option<String>,
    /// `BENCH_LOG`: a file to copy the server's log lines to (the NATS phase's server: that name
    /// with `.nats` appended).
    log: Option<String>,
    /// `--bench` was not passed: smaller defaults.
    smoke: bool,
}

impl Params {
    fn from_env() -> Self {
        let smoke = !std::env::args().any(|a| a == "--bench");
        let var = |name: &str, bench: usize, smoke_default: usize| -> usize {
            match std::env::var(name) {
                Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("{name}={v} is not a number")),
                Err(_) if smoke => smoke_default,
                Err(_) => bench,
            }
        };
        let (nats_server, nats_skipped) = if var("BENCH_NATS", 1, 1) == 0 {
            (None, Some("BENCH_NATS=0".to_owned()))
        } else {
            let bin = std::env::var("NATS_SERVER").unwrap_or_else(|_| "nats-server".to_owned());
            #[allow(clippy::disallowed_methods)] // asks the bench machine's nats-server its version
            match Command::new(&bin).arg("--version").output() {
                Ok(out) if out.status.success() => (Some(bin), None),
                _ => (None, Some(format!("no runnable `{bin}` (set NATS_SERVER)"))),
            }
        };
        Self {
            messages: var("BENCH_MESSAGES", 500_000, 2000).max(1),
            concurrency: var("BENCH_CONCURRENCY", 8, 4).clamp(1, 64),
            receive: var("BENCH_RECEIVE", 200_000, 2000).max(1),
            streams: var("BENCH_STREAMS", 4, 2).clamp(1, 64),
            backlog: var("BENCH_BACKLOG", 20_000, 1000).max(1),
            rate: u32::try_from(var("BENCH_RATE", 1000, 1000).clamp(1, 100_000)).unwrap_or(1000),
            latency_seconds: u32::try_from(var("BENCH_LATENCY_SECONDS", 10, 1).clamp(1, 3600))
                .unwrap_or(10),
            embedded: var("BENCH_EMBEDDED", 1, 1) != 0,
            nats_messages: var("BENCH_NATS_MESSAGES", 100_000, 2000).max(1),
            nats_rounds: var("BENCH_NATS_ROUNDS", 3, 1).clamp(1, 20),
            nats_server,
            nats_skipped,
            log: std::env::var("BENCH_LOG").ok(),
            smoke,
        }
    }

    /// Batches each sending task sends for `messages` in all (at least one).
    fn batches_per_task(&self, messages: usize) -> usize {
        messages.div_ceil(BATCH * self.concurrency).max(1)
    }

    /// `[messaging] topic_max_messages` for the run: the default, or what the largest topic
    /// needs.
    fn topic_max_messages(&self) -> usize {
        let send = (self.batches_per_task(self.messages) + 1) * BATCH;
        let nats = (self.batches_per_task(self.nats_messages) + 1) * BATCH;
        let receive = self.receive.div_ceil(BATCH) * BATCH;
        TOPIC_MAX_MESSAGES.max(send).max(nats).max(receive).max(self.backlog)
    }
}

fn main() {
    // `cargo bench` passes `--bench` (and a filter, when given); other arguments are ignored
    let params = Params::from_env();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime builds");
    rt.block_on(run(params));
}

// ---- processes --------------------------------------------------------------------------------

impl Server {
    /// The `steward_messaging_*` samples of `/metrics` that tell of trouble or of the load:
    /// sent by result, deliveries, redeliveries, acks, returned, channel-full events.
    async fn messaging_metrics(&self) -> Value {
        let Ok(r) = self.admin_request(reqwest::Method::GET, "/metrics").send().await else {
            return Value::Null;
        };
        let text = r.text().await.unwrap_or_default();
        let mut out = serde_json::Map::new();
        for line in text.lines().filter(|l| l.starts_with("steward_messaging_")) {
            if let Some((name, value)) = line.rsplit_once(' ')
                && let Ok(v) = value.parse::<f64>()
                && v != 0.0
            {
                out.insert(name.to_owned(), json!(v));
            }
        }
        Value::Object(out)
    }
}

/// A throwaway `nats-server -js` on a loopback port, storing in a temporary directory.
struct NatsServer {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl NatsServer {
    async fn start(bin: &str) -> Self {
        let dir = tempfile::tempdir().expect("temporary JetStream directory");
        // a port the OS chose, released for nats-server (which cannot report one it chose)
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        #[allow(clippy::disallowed_methods)]
        // the bench's throwaway nats-server; `NatsServer`'s drop kills and reaps it
        let child = Command::new(bin)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
        let server = Self { child, url: format!("nats://127.0.0.1:{port}"), _dir: dir };
        let deadline = Instant::now() + STEP;
        loop {
            // JetStream is up before nats-server accepts clients; a stream lookup (`NOT_FOUND`)
            // shows it answers. (Not `query_account`: async-nats 0.50 cannot parse 2.9's answer,
            // "data did not match any variant of untagged enum Response".)
            let error = match async_nats::connect(&server.url).await {
                Ok(client) => match jetstream::new(client).get_stream("none").await {
                    Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(_)) => {
                        return server;
                    }
                    Ok(_) => return server,
                    Err(e) => e.to_string(),
                },
                Err(e) => e.to_string(),
            };
            assert!(
                Instant::now() < deadline,
                "nats-server did not start at {}: {error}",
                server.url
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds (user + system) process `pid` has spent: `/proc/<pid>/stat` fields 14 and 15.
fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // the fields after the command name, which is in parentheses and may hold spaces
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
    let hz = sysconf(SysconfVar::CLK_TCK).ok().flatten().filter(|&h| h > 0).unwrap_or(100);
    ticks as f64 / hz as f64
}

/// The CPU clocks of the processes of a phase: the bench itself, Steward, and nats-server.
struct Cpu {
    pids: Vec<(&'static str, String)>,
    start: Vec<f64>,
    at: Instant,
}

impl Cpu {
    fn start(pids: &[(&'static str, u32)]) -> Self {
        let mut all = vec![("bench", "self".to_owned())];
        all.extend(pids.iter().map(|(name, pid)| (*name, pid.to_string())));
        let start = all.iter().map(|(_, p)| cpu_seconds(p)).collect();
        Self { pids: all, start, at: Instant::now() }
    }

    /// CPU seconds each spent since [`Cpu::start`], and as cores over the wall time.
    fn stop(&self) -> Value {
        let wall = self.at.elapsed().as_secs_f64();
        let mut out = serde_json::Map::new();
        for ((name, pid), start) in self.pids.iter().zip(&self.start) {
            let used = cpu_seconds(pid) - start;
            out.insert(format!("{name}_cpu_s"), json!(round2(used)));
            out.insert(format!("{name}_cores"), json!(round2(used / wall)));
        }
        Value::Object(out)
    }
}

fn describe_cpu(cpu: &Value) -> String {
    let Some(map) = cpu.as_object() else {
        return String::new();
    };
    map.iter()
        .filter_map(|(k, v)| {
            let name = k.strip_suffix("_cores")?;
            Some(format!("{name} {v} cores"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

// ---- clients ----------------------------------------------------------------------------------

type Client = MessagingClient<InterceptedService<Channel, Bearer>>;

/// A client on a connection of its own.
async fn client(url: &str, token: &str) -> Client {
    let (channel, bearer) = connect(url, token).await;
    MessagingClient::with_interceptor(channel, bearer)
}

async fn clients(url: &str, token: &str, n: usize) -> Vec<Client> {
    join_all((0..n).map(|_| client(url, token))).await
}

fn receive_request(topic: &str) -> pb::ReceiveMessagesRequest {
    pb::ReceiveMessagesRequest {
        group: GROUP.to_owned(),
        topic: topic.to_owned(),
        ..pb::ReceiveMessagesRequest::default()
    }
}

/// Opens a stream of the group of `topic` and reads its `started`. `UNAVAILABLE` (the broker
/// not connected yet) is retried for [`STEP`].
async fn open_stream(
    client: &mut Client,
    topic: &str,
) -> tonic::Streaming<pb::ReceiveMessagesResponse> {
    let deadline = Instant::now() + STEP;
    loop {
        let opened = match client.receive_messages(receive_request(topic)).await {
            Ok(r) => {
                let mut stream = r.into_inner();
                match stream.message().await {
                    Ok(Some(pb::ReceiveMessagesResponse { event: Some(Event::Started(_)) })) => {
                        Ok(stream)
                    }
                    Ok(other) => {
                        panic!("the first message of a stream is not `started`: {other:?}")
                    }
                    Err(status) => Err(status),
                }
            }
            Err(status) => Err(status),
        };
        match opened {
            Ok(stream) => return stream,
            Err(s) if s.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) => panic!("ReceiveMessages on {topic}: {s}"),
        }
    }
}

/// Creates the group of each of `topics` (opens a stream and leaves it: the group outlives it
/// by `[messaging] consumer_cleanup_timeout`, 1 h), then waits until the server has ended those
/// streams (`steward_messaging_consumers` back to 0), so that no consumer of a client that is
/// gone leases what is sent next. How long that took.
async fn open_groups(server: &Server, client: &Client, topics: &[String]) -> Duration {
    for topic in topics {
        let stream = open_stream(&mut client.clone(), topic).await;
        drop(stream);
    }
    let left = Instant::now();
    let deadline = left + STEP;
    loop {
        let live = server.messaging_metrics().await["steward_messaging_consumers"].as_f64();
        // zero-valued samples are left out of messaging_metrics
        if live.is_none() {
            return left.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "{live:?} consumers still live after their streams ended"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What the sending tasks of a phase saw.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    retry_later: AtomicU64,
    failed: AtomicU64,
    first_failure: Mutex<Option<String>>,
}

impl Tally {
    fn fail(&self, n: u64, why: String) {
        self.failed.fetch_add(n, Ordering::Relaxed);
        self.first_failure.lock().expect("failure lock").get_or_insert(why);
    }

    fn count(&self, results: &[pb::SendResult]) {
        for r in results {
            match pb::ResultCode::try_from(r.code) {
                Ok(pb::ResultCode::Ok) => {
                    self.ok.fetch_add(1, Ordering::Relaxed);
                }
                Ok(pb::ResultCode::RetryLater) => {
                    self.retry_later.fetch_add(1, Ordering::Relaxed);
                }
                _ => self.fail(1, format!("code {}: {}", r.code, r.detail)),
            }
        }
    }

    fn failure(&self) -> Option<String> {
        self.first_failure.lock().expect("failure lock").clone()
    }
}

/// One `SendMessage` request of `n` messages to `topic`, client ids `<prefix>-<first + i>`.
fn batch(
    topic: &str,
    prefix: &str,
    first: usize,
    n: usize,
    body: &Bytes,
) -> pb::SendMessageRequest {
    pb::SendMessageRequest {
        producer_id: String::new(),
        messages: (first..first + n)
            .map(|i| pb::OutgoingMessage {
                topic: topic.to_owned(),
                client_message_id: format!("{prefix}-{i}"),
                body: body.clone(),
                ..pb::OutgoingMessage::default()
            })
            .collect(),
    }
}

/// A send phase's figures.
struct SendRun {
    messages: u64,
    retry_later: u64,
    failed: u64,
    first_failure: Option<String>,
    elapsed: Duration,
    calls: Vec<Duration>,
    cpu: Value,
}

impl SendRun {
    fn rate(&self) -> f64 {
        (self.messages as f64 / self.elapsed.as_secs_f64()).round()
    }
}

/// Task `i` of `clients` sends `batches` batches of `per_call` messages to `topics[i %
/// topics.len()]`, one call in flight per task; timed from the first call to the last answer.
async fn send_all(
    clients: &[Client],
    topics: &[String],
    (batches, per_call): (usize, usize),
    prefix: &str,
    pids: &[(&'static str, u32)],
) -> SendRun {
    let body = Bytes::from(vec![b'x'; BODY]);
    let tally = Arc::new(Tally::default());
    let mut tasks = JoinSet::new();
    let cpu = Cpu::start(pids);
    let started = Instant::now();
    for (i, client) in clients.iter().enumerate() {
        let mut client = client.clone();
        let topic = topics[i % topics.len()].clone();
        let prefix = format!("{prefix}-{i}");
        let (tally, body) = (tally.clone(), body.clone());
        tasks.spawn(async move {
            let mut calls = Vec::with_capacity(batches);
            for b in 0..batches {
                let request = batch(&topic, &prefix, b * per_call, per_call, &body);
                let t0 = Instant::now();
                match client.send_message(request).await {
                    Ok(r) => tally.count(&r.into_inner().results),
                    Err(s) => tally.fail(per_call as u64, format!("SendMessage: {s}")),
                }
                calls.push(t0.elapsed());
            }
            calls
        });
    }
    let mut calls = Vec::new();
    let joined = tokio::time::timeout(ALL, async {
        while let Some(done) = tasks.join_next().await {
            calls.extend(done.expect("sending task"));
        }
    })
    .await;
    assert!(joined.is_ok(), "sending did not end within {ALL:?}");
    let elapsed = started.elapsed();
    SendRun {
        messages: tally.ok.load(Ordering::Relaxed),
        retry_later: tally.retry_later.load(Ordering::Relaxed),
        failed: tally.failed.load(Ordering::Relaxed),
        first_failure: tally.failure(),
        elapsed,
        calls,
        cpu: cpu.stop(),
    }
}

/// Sends one batch per client to its topic, untimed: producers started, connections warm.
async fn warm_up(clients: &[Client], topics: &[String], prefix: &str) {
    let body = Bytes::from(vec![b'x'; BODY]);
    let sends = clients.iter().enumerate().map(|(i, client)| {
        let mut client = client.clone();
        let request = batch(&topics[i % topics.len()], &format!("{prefix}-{i}"), 0, BATCH, &body);
        async move { client.send_message(request).await }
    });
    for sent in join_all(sends).await {
        let results = sent.expect("warm-up SendMessage").into_inner().results;
        let ok = results.iter().filter(|r| r.code == pb::ResultCode::Ok as i32).count();
        assert_eq!(ok, BATCH, "warm-up batch not stored: {:?}", results.first());
    }
}

fn print_send(label: &str, run: &mut SendRun, what: &str) {
    let (c50, c99, cmax) = spread(&mut run.calls);
    println!(
        "messaging/{label}: {} msg/s {what} ({} stored in {:.2} s, {} retry_later, {} failed{}; \
         SendMessage of {BATCH} p50 {c50} ms, p99 {c99} ms, max {cmax} ms; {})",
        run.rate(),
        run.messages,
        run.elapsed.as_secs_f64(),
        run.retry_later,
        run.failed,
        run.first_failure.as_ref().map(|f| format!(", first: {f}")).unwrap_or_default(),
        describe_cpu(&run.cpu),
    );
}

/// Progress of the receiving streams of a phase.
#[derive(Default)]
struct Received {
    deliveries: AtomicU64,
    redeliveries: AtomicU64,
    acked: AtomicU64,
    ack_failed: AtomicU64,
    ack_calls: AtomicU64,
    first_failure: Mutex<Option<String>>,
}

impl Received {
    fn fail(&self, why: String) {
        self.first_failure.lock().expect("failure lock").get_or_insert(why);
    }
}

/// Acks the receipt handles `rx` yields, at most [`ACK_BATCH`] per call, one call in flight;
/// signals `done` once `expected` are acked in all.
async fn acker(
    mut client: Client,
    mut rx: mpsc::UnboundedReceiver<Vec<String>>,
    received: Arc<Received>,
    expected: u64,
    done: watch::Sender<bool>,
) {
    let mut pending: Vec<String> = Vec::new();
    loop {
        if pending.is_empty() {
            match rx.recv().await {
                Some(handles) => pending = handles,
                None => return,
            }
        }
        while pending.len() < ACK_BATCH {
            match rx.try_recv() {
                Ok(more) => pending.extend(more),
                Err(_) => break,
            }
        }
        let rest = pending.split_off(pending.len().min(ACK_BATCH));
        let handles = std::mem::replace(&mut pending, rest);
        let n = handles.len() as u64;
        received.ack_calls.fetch_add(1, Ordering::Relaxed);
        let request = pb::AckMessagesRequest { receipt_handles: handles };
        match client.ack_messages(request).await {
            Ok(r) => {
                let results = r.into_inner().results;
                let ok = results.iter().filter(|r| r.code == pb::ResultCode::Ok as i32).count();
                if let Some(bad) = results.iter().find(|r| r.code != pb::ResultCode::Ok as i32) {
                    received.fail(format!("ack code {}: {}", bad.code, bad.detail));
                }
                received.ack_failed.fetch_add(n - ok as u64, Ordering::Relaxed);
                let total = received.acked.fetch_add(ok as u64, Ordering::AcqRel) + ok as u64;
                if total >= expected {
                    done.send_replace(true);
                }
            }
            Err(s) => {
                received.ack_failed.fetch_add(n, Ordering::Relaxed);
                received.fail(format!("AckMessages: {s}"));
            }
        }
    }
}

/// One receiving stream: hands each `Deliveries` frame's receipts to its acker and `on_message`
/// each delivery, until `done` or the stream ends.
async fn receive_loop(
    mut stream: tonic::Streaming<pb::ReceiveMessagesResponse>,
    acks: mpsc::UnboundedSender<Vec<String>>,
    received: Arc<Received>,
    mut done: watch::Receiver<bool>,
    mut on_message: impl FnMut(&pb::ReceivedMessage),
) {
    loop {
        let next = tokio::select! {
            _ = done.wait_for(|d| *d) => return,
            next = stream.message() => next,
        };
        match next {
            Ok(Some(pb::ReceiveMessagesResponse { event: Some(Event::Deliveries(d)) })) => {
                let n = d.messages.len() as u64;
                received.deliveries.fetch_add(n, Ordering::Relaxed);
                let again = d.messages.iter().filter(|m| m.delivery_attempt > 1).count();
                received.redeliveries.fetch_add(again as u64, Ordering::Relaxed);
                d.messages.iter().for_each(&mut on_message);
                let handles = d.messages.into_iter().map(|m| m.receipt_handle).collect();
                if acks.send(handles).is_err() {
                    return;
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => {
                received.fail("the stream ended".to_owned());
                return;
            }
            Err(s) => {
                received.fail(format!("stream: {s}"));
                return;
            }
        }
    }
}

// ---- the phases -------------------------------------------------------------------------------

/// Backlog phase: `p.backlog` messages sent one per `SendMessage` into a topic whose group nobody
/// reads, and the server's RSS growth per waiting message, next to `per_batched`, that of the
/// send phase's batches of 100.
async fn backlog_phase(p: &Params, server: &Server, token: &str, per_batched: f64) -> Value {
    let topic = "bench.backlog".to_owned();
    let senders = clients(&server.grpc, token, p.concurrency).await;
    open_groups(server, &senders[0], std::slice::from_ref(&topic)).await;
    let before = rss(server.pid());
    let calls = p.backlog.div_ceil(p.concurrency).max(1);
    let run = send_all(&senders, std::slice::from_ref(&topic), (calls, 1), "b", &[]).await;
    let after = rss(server.pid());
    let per_single = after.saturating_sub(before) as f64 / run.messages.max(1) as f64;
    println!(
        "messaging/backlog: {per_single:.0} bytes of server RSS per waiting {BODY}-byte message \
         sent one per SendMessage ({} waiting, {} retry_later, {} failed; RSS {} -> {} MiB; {} \
         msg/s); {per_batched:.0} bytes per message sent in batches of {BATCH} (the send phase)",
        run.messages,
        run.retry_later,
        run.failed,
        mib(before),
        mib(after),
        run.rate(),
    );
    json!({
        "backlog_messages": run.messages,
        "backlog_rss_per_message_b": per_single.round(),
        "send_rss_per_message_b": per_batched.round(),
        "single_send_msg_per_s": run.rate(),
    })
}

/// Receive phase: preloads `p.receive` messages into one topic, then `p.streams` streams of its
/// group receive and ack them all.
async fn receive_phase(p: &Params, server: &Server, token: &str) -> Value {
    let topic = "bench.receive".to_owned();
    let senders = clients(&server.grpc, token, p.concurrency).await;
    let gone = open_groups(server, &senders[0], std::slice::from_ref(&topic)).await;
    let preload_batches = p.receive.div_ceil(BATCH).div_ceil(p.concurrency).max(1);
    let preload =
        send_all(&senders, std::slice::from_ref(&topic), (preload_batches, BATCH), "r", &[]).await;
    assert!(preload.messages > 0, "nothing preloaded: {:?}", preload.first_failure);
    drop(senders);
    let expected = preload.messages;

    let receivers = clients(&server.grpc, token, p.streams).await;
    let received = Arc::new(Received::default());
    let (done_tx, done_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let cpu = Cpu::start(&[("steward", server.pid())]);
    let started = Instant::now();
    for c in &receivers {
        let mut c = c.clone();
        let stream = open_stream(&mut c, &topic).await;
        let (acks_tx, acks_rx) = mpsc::unbounded_channel();
        tasks.spawn(acker(c.clone(), acks_rx, received.clone(), expected, done_tx.clone()));
        tasks.spawn(receive_loop(stream, acks_tx, received.clone(), done_rx.clone(), |_| {}));
    }
    let mut done = done_rx.clone();
    let finished = tokio::time::timeout(ALL, done.wait_for(|d| *d)).await.is_ok();
    let elapsed = started.elapsed();
    let cpu = cpu.stop();
    done_tx.send_replace(true);
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    let acked = received.acked.load(Ordering::Acquire);
    let rate = (acked as f64 / elapsed.as_secs_f64()).round();
    let calls = received.ack_calls.load(Ordering::Relaxed);
    let failure = received.first_failure.lock().expect("failure lock").clone();
    println!(
        "messaging/receive: {rate} msg/s received+acked (target >= 50000): {acked} of {expected} \
         preloaded acked in {:.2} s{} by {} streams of one group; {} deliveries, {} \
         redeliveries, {calls} AckMessages calls ({:.0} receipts per call), {} acks failed{}; \
         preload {} msg/s (its group's opening stream ended on the server {} ms after the \
         client left); {}",
        elapsed.as_secs_f64(),
        if finished { "" } else { " (DEADLINE: not all acked)" },
        p.streams,
        received.deliveries.load(Ordering::Relaxed),
        received.redeliveries.load(Ordering::Relaxed),
        acked as f64 / calls.max(1) as f64,
        received.ack_failed.load(Ordering::Relaxed),
        failure.as_ref().map(|f| format!(" (first: {f})")).unwrap_or_default(),
        preload.rate(),
        ms(gone),
        describe_cpu(&cpu),
    );
    json!({
        "receive_msg_per_s": rate,
        "receive_expected": expected,
        "receive_acked": acked,
        "receive_s": round2(elapsed.as_secs_f64()),
        "receive_streams": p.streams,
        "receive_redeliveries": received.redeliveries.load(Ordering::Relaxed),
        "receive_ack_failed": received.ack_failed.load(Ordering::Relaxed),
        "receive_cpu": cpu,
    })
}

/// Latency phase: single-message sends at `p.rate` per second for `p.latency_seconds`, one
/// stream receiving; latency from just before each call to its arrival.
async fn latency_phase(p: &Params, server: &Server, token: &str) -> Value {
    let topic = "bench.latency".to_owned();
    let mut receiver = client(&server.grpc, token).await;
    let sender = client(&server.grpc, token).await;
    let stream = open_stream(&mut receiver, &topic).await;
    let epoch = Instant::now();
    let total = u64::from(p.rate) * u64::from(p.latency_seconds);
    let warm = 20;
    let received = Arc::new(Received::default());
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let (done_tx, done_rx) = watch::channel(false);
    let (acks_tx, acks_rx) = mpsc::unbounded_channel();
    let mut tasks = JoinSet::new();
    tasks.spawn(acker(receiver.clone(), acks_rx, received.clone(), warm + total, done_tx.clone()));
    {
        let latencies = latencies.clone();
        tasks.spawn(receive_loop(stream, acks_tx, received.clone(), done_rx.clone(), move |m| {
            let now = epoch.elapsed();
            let sent = m.properties.get("sent_ns").and_then(|s| s.parse::<u64>().ok());
            if let Some(sent) = sent
                && !m.properties.contains_key("warm")
            {
                let latency = now.saturating_sub(Duration::from_nanos(sent));
                latencies.lock().expect("latency lock").push(latency);
            }
        }));
    }
    let body = Bytes::from(vec![b'x'; BODY]);
    let send_one = |i: u64, warm: bool| {
        let mut sender = sender.clone();
        let mut request = batch(&topic, "l", i as usize, 1, &body);
        let message = &mut request.messages[0];
        if warm {
            message.properties.insert("warm".to_owned(), "1".to_owned());
        }
        async move {
            let sent_ns = epoch.elapsed().as_nanos().to_string();
            request.messages[0].properties.insert("sent_ns".to_owned(), sent_ns);
            let t0 = Instant::now();
            let r = sender.send_message(request).await;
            (r.map(|r| r.into_inner().results), t0.elapsed())
        }
    };
    // warm-up: a few messages, received before the measurement starts
    for i in 0..warm {
        let (r, _) = send_one(i, true).await;
        r.expect("warm-up SendMessage");
    }
    let deadline = Instant::now() + STEP;
    while received.deliveries.load(Ordering::Acquire) < warm && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(received.deliveries.load(Ordering::Acquire) >= warm, "warm-up messages not received");

    let tally = Arc::new(Tally::default());
    let calls = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let mut sends = JoinSet::new();
    let cpu = Cpu::start(&[("steward", server.pid())]);
    let period = Duration::from_secs_f64(1.0 / f64::from(p.rate));
    let mut tick = tokio::time::interval(period);
    let started = Instant::now();
    for i in 0..total {
        tick.tick().await;
        let send = send_one(warm + i, false);
        let (tally, calls) = (tally.clone(), calls.clone());
        sends.spawn(async move {
            let (r, took) = send.await;
            calls.lock().expect("calls lock").push(took);
            match r {
                Ok(results) => tally.count(&results),
                Err(s) => tally.fail(1, format!("SendMessage: {s}")),
            }
        });
    }
    let send_time = started.elapsed();
    while sends.join_next().await.is_some() {}
    let mut done = done_rx.clone();
    let _ = tokio::time::timeout(Duration::from_secs(10), done.wait_for(|d| *d)).await;
    let cpu = cpu.stop();
    done_tx.send_replace(true);
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    let mut latencies = std::mem::take(&mut *latencies.lock().expect("latency lock"));
    let mut calls = std::mem::take(&mut *calls.lock().expect("calls lock"));
    let (l50, l99, lmax) = spread(&mut latencies);
    let (c50, c99, cmax) = spread(&mut calls);
    let rate = (total as f64 / send_time.as_secs_f64()).round();
    println!(
        "messaging/latency: p50 {l50} ms, p99 {l99} ms, max {lmax} ms end to end (target p99 <= \
         5 ms) over {} of {total} messages sent at {rate} msg/s ({} stored, {} failed{}); \
         SendMessage of 1 p50 {c50} ms, p99 {c99} ms, max {cmax} ms; {}",
        latencies.len(),
        tally.ok.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
        tally.failure().map(|f| format!(", first: {f}")).unwrap_or_default(),
        describe_cpu(&cpu),
    );
    json!({
        "latency_rate": rate,
        "latency_messages": total,
        "latency_received": latencies.len(),
        "latency_p50_ms": l50,
        "latency_p99_ms": l99,
        "latency_max_ms": lmax,
        "latency_send_p99_ms": c99,
        "latency_cpu": cpu,
    })
}

/// NATS phase: Steward with the NATS backend vs async-nats straight to JetStream, the same
/// batches at the same concurrency.
async fn nats_phase(p: &Params, bin: &str) -> Value {
    let nats = NatsServer::start(bin).await;
    let max_messages = p.topic_max_messages();
    let env = [
        ("STEWARD__MESSAGING__BACKEND", "nats".to_owned()),
        ("STEWARD__MESSAGING__URL", nats.url.clone()),
        ("STEWARD__MESSAGING__TOPIC_MAX_MESSAGES", max_messages.to_string()),
    ];
    let mut server = Server::start(&env, p.log.as_ref().map(|l| format!("{l}.nats"))).await;
    let batches = p.batches_per_task(p.nats_messages);
    // nobody reads the groups, so JetStream keeps every message of every round: the tenant's
    // stored quotas (defaults 100000 messages, 64 MiB) must hold them all, or Steward refuses
    // the bench's own sends from the second round on
    let kept = p.nats_rounds * (batches + 2) * BATCH * p.concurrency;
    let token = server
        .tenant_token(json!({
            "producers": 1000,
            "consumers": 1000,
            "stored_messages": (2 * kept as u64).min(model::MAX_QUOTA),
            "stored_bytes": model::MAX_STORED_BYTES,
        }))
        .await;
    let pids = [("steward", server.pid()), ("nats", nats.pid())];

    // rounds on fresh topics and streams, alternating which side goes first
    let mut rounds = Vec::new();
    let (mut steward_all, mut direct_all) = ((0, Duration::ZERO), (0, Duration::ZERO));
    for round in 0..p.nats_rounds {
        let mut steward = None;
        let mut direct = None;
        for side in [round % 2, 1 - round % 2] {
            if side == 0 {
                let topics: Vec<String> =
                    (0..p.concurrency).map(|i| format!("bench.nats.r{round}.{i}")).collect();
                let senders = clients(&server.grpc, &token, p.concurrency).await;
                open_groups(&server, &senders[0], &topics).await;
                warm_up(&senders, &topics, "w").await;
                let mut run = send_all(&senders, &topics, (batches, BATCH), "s", &pids).await;
                print_send(
                    &format!("nats_steward[{round}]"),
                    &mut run,
                    "through Steward into NATS JetStream",
                );
                steward = Some(run);
            } else {
                let mut run =
                    direct_publish(p, &nats.url, round, (batches, max_messages), &pids).await;
                print_send(
                    &format!("nats_direct[{round}]"),
                    &mut run,
                    "async-nats straight to JetStream",
                );
                direct = Some(run);
            }
        }
        let (steward, direct) = (steward.expect("steward side"), direct.expect("direct side"));
        steward_all = (steward_all.0 + steward.messages, steward_all.1 + steward.elapsed);
        direct_all = (direct_all.0 + direct.messages, direct_all.1 + direct.elapsed);
        rounds.push(json!({
            "steward_msg_per_s": steward.rate(),
            "steward_failed": steward.failed + steward.retry_later,
            "steward_cpu": steward.cpu,
            "direct_msg_per_s": direct.rate(),
            "direct_failed": direct.failed + direct.retry_later,
            "direct_cpu": direct.cpu,
            "ratio": round2(steward.rate() / direct.rate().max(1.0)),
        }));
    }

    // what the streams hold: every message stored, nothing lost
    let stored = stream_messages(&nats.url).await;
    let rate = |(n, t): (u64, Duration)| (n as f64 / t.as_secs_f64().max(1e-9)).round();
    let (steward_rate, direct_rate) = (rate(steward_all), rate(direct_all));
    let ratio = round2(steward_rate / direct_rate.max(1.0));
    let warm = p.nats_rounds * p.concurrency * BATCH;
    println!(
        "messaging/nats_ratio: {ratio} of the direct publisher's throughput over {} rounds \
         (target >= 0.8): Steward {steward_rate} msg/s, direct {direct_rate} msg/s; per round {}; \
         JetStream holds {} messages in Steward's streams (sent {} + warm-up {warm}), {} in the \
         direct ones (sent {} + warm-up {warm})",
        p.nats_rounds,
        rounds.iter().map(|r| r["ratio"].to_string()).collect::<Vec<_>>().join(", "),
        stored.0,
        steward_all.0,
        stored.1,
        direct_all.0,
    );
    let metrics = server.messaging_metrics().await;
    let warnings = server.warnings();
    let status = server.terminate().await;
    println!(
        "messaging/nats_shutdown: SIGTERM -> {} ({warnings}); metrics {metrics}",
        status.map_or_else(|| "still running after 60 s".to_owned(), |s| s.to_string()),
    );
    json!({
        "nats_messages_per_round": batches * BATCH * p.concurrency,
        "nats_rounds": rounds,
        "nats_steward_msg_per_s": steward_rate,
        "nats_direct_msg_per_s": direct_rate,
        "nats_ratio": ratio,
        "nats_stored_steward": stored.0,
        "nats_stored_direct": stored.1,
        "nats_exit": status.and_then(|s| s.code()),
    })
}

/// Publishes `batches` batches of [`BATCH`] per task straight to JetStream, `p.concurrency`
/// tasks sharing one client (as Steward's one connection per node), each to its own stream
/// configured as Steward configures a topic's, with a durable pull consumer as a group.
async fn direct_publish(
    p: &Params,
    url: &str,
    round: usize,
    (batches, max_messages): (usize, usize),
    pids: &[(&'static str, u32)],
) -> SendRun {
    let client = async_nats::connect(url).await.expect("connect to nats-server");
    let js = jetstream::new(client);
    for i in 0..p.concurrency {
        // as `NatsBroker::stream_config` and its group consumer
        let stream = js
            .create_stream(jetstream::stream::Config {
                name: format!("direct_r{round}_{i}"),
                subjects: vec![format!("direct.r{round}.{i}.*")],
                retention: RetentionPolicy::Interest,
                discard: DiscardPolicy::New,
                max_bytes: TOPIC_MAX_BYTES,
                max_messages: i64::try_from(max_messages).unwrap_or(i64::MAX),
                duplicate_window: DEDUP_WINDOW,
                storage: StorageType::File,
                num_replicas: 1,
                ..Default::default()
            })
            .await
            .expect("create the direct stream");
        stream
            .create_consumer(pull::Config {
                durable_name: Some(GROUP.to_owned()),
                deliver_policy: DeliverPolicy::New,
                ack_policy: AckPolicy::Explicit,
                filter_subject: format!("direct.r{round}.{i}.*"),
                max_deliver: -1,
                max_ack_pending: -1,
                ..Default::default()
            })
            .await
            .expect("create the direct consumer");
    }
    let body = Bytes::from(vec![b'x'; BODY]);
    let publish = move |js: jetstream::Context, i: usize, b: usize, body: Bytes| async move {
        let subject = format!("direct.r{round}.{i}.~");
        let mut acks = Vec::with_capacity(BATCH);
        let mut failed = Vec::new();
        for m in b * BATCH..(b + 1) * BATCH {
            let message = jetstream::message::PublishMessage::build()
                .payload(body.clone())
                .message_id(format!("d-{i}-{m}"));
            match js.send_publish(subject.clone(), message).await {
                Ok(ack) => acks.push(ack.into_future()),
                Err(e) => failed.push(e.to_string()),
            }
        }
        let mut ok = 0u64;
        for ack in join_all(acks).await {
            match ack {
                Ok(_) => ok += 1,
                Err(e) => failed.push(e.to_string()),
            }
        }
        (ok, failed)
    };
    // warm-up: one batch per stream, as Steward's run had
    for i in 0..p.concurrency {
        let (ok, failed) = publish(js.clone(), i, batches + 1, body.clone()).await;
        assert_eq!(ok, BATCH as u64, "direct warm-up batch: {failed:?}");
    }
    let tally = Arc::new(Tally::default());
    let mut tasks = JoinSet::new();
    let cpu = Cpu::start(pids);
    let started = Instant::now();
    for i in 0..p.concurrency {
        let (js, tally, body) = (js.clone(), tally.clone(), body.clone());
        tasks.spawn(async move {
            let mut calls = Vec::with_capacity(batches);
            for b in 0..batches {
                let t0 = Instant::now();
                let (ok, failed) = publish(js.clone(), i, b, body.clone()).await;
                calls.push(t0.elapsed());
                tally.ok.fetch_add(ok, Ordering::Relaxed);
                if let Some(first) = failed.first() {
                    tally.fail(failed.len() as u64, first.clone());
                }
            }
            calls
        });
    }
    let mut calls = Vec::new();
    while let Some(done) = tasks.join_next().await {
        calls.extend(done.expect("publishing task"));
    }
    let elapsed = started.elapsed();
    SendRun {
        messages: tally.ok.load(Ordering::Relaxed),
        retry_later: 0,
        failed: tally.failed.load(Ordering::Relaxed),
        first_failure: tally.failure(),
        elapsed,
        calls,
        cpu: cpu.stop(),
    }
}

/// Messages JetStream holds in Steward's streams (`steward_…`) and in the direct ones.
async fn stream_messages(url: &str) -> (u64, u64) {
    let client = async_nats::connect(url).await.expect("connect to nats-server");
    let js = jetstream::new(client);
    let mut names = js.stream_names();
    let mut all = Vec::new();
    while let Some(name) = names.next().await {
        all.push(name.expect("stream name"));
    }
    let (mut steward, mut direct) = (0, 0);
    for name in all {
        let mut stream = js.get_stream(&name).await.expect("stream");
        let messages = stream.info().await.expect("stream info").state.messages;
        if name.starts_with("steward_") {
            steward += messages;
        } else {
            direct += messages;
        }
    }
    (steward, direct)
}

// ---- the run ----------------------------------------------------------------------------------

async fn run(p: Params) {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let load_before = loadavg();
    println!(
        "messaging: {BODY}-byte messages in batches of {BATCH}; M={} messages sent by C={} \
         tasks (one connection and one topic each), N={} received by S={} streams, {} msg/s for \
         {} s of latency{}, {} through NATS{} per side and round, {} NATS rounds; \
         topic_max_messages {}; {cores} cores, load average {load_before}, clients on the same \
         machine{}",
        p.messages,
        p.concurrency,
        p.receive,
        p.streams,
        p.rate,
        p.latency_seconds,
        if p.embedded { "" } else { " (skipped: BENCH_EMBEDDED=0)" },
        p.nats_messages,
        p.nats_skipped.as_ref().map(|s| format!(" (skipped: {s})")).unwrap_or_default(),
        p.nats_rounds,
        p.topic_max_messages(),
        if p.smoke { " (smoke run: no --bench argument)" } else { "" },
    );
    let embedded = if p.embedded { embedded_phases(&p).await } else { json!({}) };
    // 4. NATS: Steward vs a direct JetStream publisher
    let nats = match &p.nats_server {
        Some(bin) => nats_phase(&p, bin).await,
        None => {
            println!("messaging/nats: skipped ({})", p.nats_skipped.as_deref().unwrap_or("?"));
            json!({"nats_skipped": p.nats_skipped})
        }
    };
    let mut summary = json!({
        "bench": "messaging",
        "body_bytes": BODY,
        "batch": BATCH,
        "concurrency": p.concurrency,
        "cores": cores,
        "load_before": load_before,
        "load_after": loadavg(),
        "topic_max_messages": p.topic_max_messages(),
        "smoke": p.smoke,
    });
    for part in [embedded, nats] {
        if let (Some(summary), Some(part)) = (summary.as_object_mut(), part.as_object()) {
            summary.extend(part.clone());
        }
    }
    println!("{summary}");
}

/// Phases 1 to 3 on a Steward with the embedded broker, then its shutdown.
async fn embedded_phases(p: &Params) -> Value {
    let env = [("STEWARD__MESSAGING__TOPIC_MAX_MESSAGES", p.topic_max_messages().to_string())];
    let mut server = Server::start(&env, p.log.clone()).await;
    let token = server.tenant_token(json!({"producers": 1000, "consumers": 1000})).await;
    let pids = [("steward", server.pid())];
    let rss_start = rss(server.pid());

    // 1. send throughput into the embedded broker
    let topics: Vec<String> = (0..p.concurrency).map(|i| format!("bench.send.{i}")).collect();
    let senders = clients(&server.grpc, &token, p.concurrency).await;
    open_groups(&server, &senders[0], &topics).await;
    warm_up(&senders, &topics, "w").await;
    let mut send =
        send_all(&senders, &topics, (p.batches_per_task(p.messages), BATCH), "s", &pids).await;
    drop(senders);
    print_send("send", &mut send, "into the embedded broker (target >= 100000)");
    let rss_sent = rss(server.pid());
    let per_batched = rss_sent.saturating_sub(rss_start) as f64 / send.messages.max(1) as f64;

    // 1b. memory of a backlog of single-message sends
    let backlog = backlog_phase(p, &server, &token, per_batched).await;

    // 2. receive + ack throughput
    let receive = receive_phase(p, &server, &token).await;

    // 3. end-to-end latency
    let latency = latency_phase(p, &server, &token).await;

    let metrics = server.messaging_metrics().await;
    let rss_end = rss(server.pid());
    let warnings = server.warnings();
    let started = Instant::now();
    let status = server.terminate().await;
    let exit = status.map_or_else(|| "still running after 60 s".to_owned(), |s| s.to_string());
    println!(
        "messaging/embedded_shutdown: SIGTERM -> {exit} in {:.2} s ({warnings}); RSS {} MiB at \
         start, {} MiB after the send phase, {} MiB at the end; metrics {metrics}",
        started.elapsed().as_secs_f64(),
        mib(rss_start),
        mib(rss_sent),
        mib(rss_end),
    );

    let (s50, s99, _) = spread(&mut send.calls);
    let mut out = json!({
        "send_msg_per_s": send.rate(),
        "send_messages": send.messages,
        "send_retry_later": send.retry_later,
        "send_failed": send.failed,
        "send_call_p50_ms": s50,
        "send_call_p99_ms": s99,
        "send_cpu": send.cpu,
        "rss_after_send_mib": mib(rss_sent),
        "exit": status.and_then(|s| s.code()),
    });
    for part in [backlog, receive, latency] {
        if let (Some(out), Some(part)) = (out.as_object_mut(), part.as_object()) {
            out.extend(part.clone());
        }
    }
    out
}
