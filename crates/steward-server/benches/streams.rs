//! Load benchmark of streams (`steward.streams.v1.Streams` over gRPC, `subscribe {stream}` on
//! `GET /v1/ws`) on the real `steward` binary.
//!
//! Starts the `steward` of the profile being built (release under `cargo bench`) as a child
//! process on loopback ports chosen by the OS, creates a tenant and a token through the admin
//! API, drives it with tonic, tokio-tungstenite and redis-rs clients on the same machine, and
//! prints, in this order (every Steward with `[streams] history_size` = `max(2000,
//! BENCH_MISSED)`, so that phase 3 can recover, and the same on every side of phase 4):
//!
//! 1. `publish_memory`: `Publish` throughput on the memory engine, publishes/s.
//!    `BENCH_PUBLISHES` (default 20000) publications by `BENCH_CONCURRENCY` (default 32) tasks,
//!    each on its own HTTP/2 connection with one call in flight, task `i` to stream `i mod
//!    BENCH_STREAMS` (default 8), each publication ~100 bytes of JSON with one of 16 keys (far
//!    below the `stream_keys` quota). One untimed publish per task first (the streams start).
//!    Timed from the first call to the last answer; p50/p99/max of the calls.
//! 2. `fanout`: `BENCH_SUBSCRIBERS` (default 10000) WebSocket subscribers of ONE stream, one
//!    socket each (the socket caps and the tenant's `sockets` quota raised to fit), then
//!    `BENCH_FANOUTS` (default 20) publications one at a time, each once every subscriber has
//!    the previous one. Latency from just before the `Publish` call to a subscriber's receipt of
//!    the `publication` frame: p50/p99/max over all deliveries, and per publication the time
//!    until the last subscriber had it.
//! 3. `recovery`: `BENCH_RECOVERIES` (default 20) rounds: a socket subscribes, notes its
//!    position and closes; `BENCH_MISSED` (default 1000) publications (C at a time); a new
//!    socket subscribes with `since` that position. Time from sending that `subscribe` to
//!    having the whole `subscribed` frame with every missed publication (p50/p99/max; each
//!    round checks `recovered: true` and the count), and the frame's size in bytes.
//! 4. `redis` (when `redis-server` is found and `BENCH_REDIS` is not 0): a throwaway
//!    `redis-server` and a second Steward with `[streams] engine = "redis"` on it.
//!    `BENCH_REDIS_ROUNDS` (default 3) rounds, each on fresh stream names and alternating which
//!    side goes first: the publishes of 1 through Steward, and the same number from a direct
//!    redis-rs client on one multiplexed `ConnectionManager` (as the engine's) invoking the
//!    engine's own publish script (`lua/common.lua` + `lua/publish.lua`, included from the
//!    engine's source) with the engine's KEYS and ARGV, the same limits (history, TTLs,
//!    `stream_keys`), the same concurrency, streams, keys and data, on other stream names.
//!    Both rates, their ratio Steward/direct (target ≥ 0.7) over all rounds and per round, and
//!    the publications Redis holds afterwards on each side (every stream's top).
//!
//! Each phase also reports the CPU the bench, Steward (and redis-server) spent — they share the
//! machine's cores. Then SIGTERM and the servers' exit statuses and WARN/ERROR log lines, and
//! all figures as one JSON line (`{"bench":"streams",…}`). It asserts only that the setup
//! worked (the servers started, the tenant and token were created, every socket opened and was
//! answered `subscribed`); everything else is reported, including failed calls and incomplete
//! recoveries.
//!
//! Run with `cargo bench -p steward-server --bench streams`; a quick run:
//! `BENCH_SUBSCRIBERS=1000 BENCH_PUBLISHES=5000 BENCH_REDIS_ROUNDS=1 cargo bench -p
//! steward-server --bench streams`. Without `--bench` among its arguments (`cargo test
//! --benches`) it is a smoke run (2000 publishes by 8 tasks on 4 streams, 100 subscribers, 3
//! fan-outs, 3 recoveries of 200, one Redis round) unless the variables say otherwise.
#![allow(missing_docs, clippy::print_stdout, clippy::print_stderr)]

mod support;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use futures_util::{SinkExt, StreamExt};
use redis::Script;
use redis::aio::ConnectionManager;
use serde_json::{Value, json};
use steward_proto::streams::v1 as pb;
use steward_proto::streams::v1::streams_client::StreamsClient;
use steward_streams::testing::RedisServer;
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::support::{
    Bearer, Cpu, Server, TENANT, connect, describe_cpu, loadavg, mib, ms, round2, spread,
};

/// The Redis engine's publish script, built as its `scripts.rs` builds it.
static PUBLISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("../../steward-streams/src/engine/redis/lua/common.lua"),
        include_str!("../../steward-streams/src/engine/redis/lua/publish.lua"),
    ))
});

/// Bytes of every publication's JSON data.
const DATA_BYTES: usize = 100;
/// Keys the publications of one stream cycle through.
const KEYS: usize = 16;
/// `[streams] history_ttl`, `key_ttl` and `idempotency_window` of every Steward (the config's
/// defaults, set explicitly so that the direct publisher passes the same), in ms.
const HISTORY_TTL_MS: u64 = 5 * 60 * 1000;
const KEY_TTL_MS: u64 = 60 * 60 * 1000;
const IDEMPOTENCY_WINDOW_MS: u64 = 5 * 60 * 1000;
/// The tenant's `stream_keys` quota (the default, set explicitly for the same reason).
const STREAM_KEYS: u64 = 10_000;
/// The least `[streams] history_size` of the run.
const HISTORY_SIZE: usize = 2000;
/// Upgrades (connect + subscribe) in flight while the subscribers are opened.
const OPEN_CONCURRENCY: usize = 200;
/// Deadline of anything that should be quick: one upgrade, one reply, one fan-out.
const STEP: Duration = Duration::from_secs(30);
/// Deadline of a step over every subscriber or a whole publishing run.
const ALL: Duration = Duration::from_secs(300);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Client = StreamsClient<InterceptedService<Channel, Bearer>>;

/// The run's parameters.
#[derive(Debug, Clone)]
struct Params {
    /// Publishes of phases 1 and 4, per side and round (N).
    publishes: usize,
    /// Publishing tasks, each with its own connection and one call in flight (C).
    concurrency: usize,
    /// Streams the tasks publish to (S).
    streams: usize,
    /// WebSocket subscribers of the fan-out stream.
    subscribers: usize,
    /// Publications fanned out to them (K).
    fanouts: u64,
    /// Publications missed and recovered per recovery round (M).
    missed: usize,
    /// Recovery rounds (R).
    recoveries: usize,
    /// `[streams] history_size` of every Steward and of the direct publisher.
    history_size: usize,
    /// Rounds of phase 4, each Steward and direct.
    redis_rounds: usize,
    /// Why phase 4 does not run (`BENCH_REDIS=0`), if so.
    redis_skipped: Option<String>,
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
        let missed = var("BENCH_MISSED", 1000, 200).clamp(1, 100_000);
        Self {
            publishes: var("BENCH_PUBLISHES", 20_000, 2000).max(1),
            concurrency: var("BENCH_CONCURRENCY", 32, 8).clamp(1, 256),
            streams: var("BENCH_STREAMS", 8, 4).clamp(1, 64),
            subscribers: var("BENCH_SUBSCRIBERS", 10_000, 100).max(1),
            fanouts: var("BENCH_FANOUTS", 20, 3).clamp(1, 1000) as u64,
            missed,
            recoveries: var("BENCH_RECOVERIES", 20, 3).max(1),
            history_size: missed.max(HISTORY_SIZE),
            redis_rounds: var("BENCH_REDIS_ROUNDS", 3, 1).clamp(1, 20),
            redis_skipped: (var("BENCH_REDIS", 1, 1) == 0).then(|| "BENCH_REDIS=0".to_owned()),
            smoke,
        }
    }

    /// Publishes per task for N in all (at least one).
    fn per_task(&self) -> usize {
        self.publishes.div_ceil(self.concurrency).max(1)
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

// ---- servers and clients ----------------------------------------------------------------------

/// Every Steward's `[streams]` settings (and the socket caps of the fan-out).
fn steward_env(p: &Params) -> Vec<(&'static str, String)> {
    let sockets = (p.subscribers + 100).max(20_000).to_string();
    vec![
        ("STEWARD__STREAMS__HISTORY_SIZE", p.history_size.to_string()),
        ("STEWARD__STREAMS__HISTORY_TTL", format!("{HISTORY_TTL_MS}ms")),
        ("STEWARD__STREAMS__KEY_TTL", format!("{KEY_TTL_MS}ms")),
        ("STEWARD__STREAMS__IDEMPOTENCY_WINDOW", format!("{IDEMPOTENCY_WINDOW_MS}ms")),
        ("STEWARD__SOCKET__MAX_CONNECTIONS", sockets.clone()),
        ("STEWARD__SOCKET__MAX_PER_IP", sockets),
    ]
}

/// The bench tenant's quotas: room for every subscriber socket; the rest as the defaults.
fn quotas(p: &Params) -> Value {
    json!({"sockets": (p.subscribers + 100).max(20_000), "stream_keys": STREAM_KEYS, "streams": 100})
}

/// A client on a connection of its own.
async fn client(url: &str, token: &str) -> Client {
    let (channel, bearer) = connect(url, token).await;
    StreamsClient::with_interceptor(channel, bearer)
}

async fn clients(url: &str, token: &str, n: usize) -> Vec<Client> {
    join_all((0..n).map(|_| client(url, token))).await
}

/// ~[`DATA_BYTES`] of JSON naming the task and its publication.
fn data(task: usize, seq: usize) -> String {
    let head = format!(r#"{{"task":{task},"seq":{seq},"pad":""#);
    let pad = DATA_BYTES.saturating_sub(head.len() + 2);
    format!("{head}{}\"}}", "x".repeat(pad))
}

/// The key of a task's publication number `seq`: one of [`KEYS`].
fn key(task: usize, seq: usize) -> String {
    format!("k{}", (task + seq) % KEYS)
}

fn publish_request(stream: &str, task: usize, seq: usize) -> pb::PublishRequest {
    pb::PublishRequest {
        stream: stream.to_owned(),
        key: Some(key(task, seq)),
        payload: Some(pb::publish_request::Payload::Json(data(task, seq))),
        idempotency_key: None,
    }
}

/// Publishes through Steward; the position.
async fn publish(client: &mut Client, request: pb::PublishRequest) -> Result<pb::Position, String> {
    let answer = client.publish(request).await.map_err(|s| format!("Publish: {s}"))?;
    answer.into_inner().position.ok_or_else(|| "Publish answered no position".to_owned())
}

/// What a publishing run did.
struct PublishRun {
    ok: u64,
    failed: u64,
    first_failure: Option<String>,
    elapsed: Duration,
    calls: Vec<Duration>,
    cpu: Value,
}

impl PublishRun {
    fn rate(&self) -> f64 {
        (self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)).round()
    }

    /// `<rate> publishes/s <what> (…)`, and the figures as JSON under `prefix`.
    fn report(&mut self, label: &str, what: &str) -> Value {
        let (c50, c99, cmax) = spread(&mut self.calls);
        println!(
            "streams/{label}: {} publishes/s {what} ({} stored in {:.2} s, {} failed{}; call \
             p50 {c50} ms, p99 {c99} ms, max {cmax} ms; {})",
            self.rate(),
            self.ok,
            self.elapsed.as_secs_f64(),
            self.failed,
            self.first_failure.as_ref().map(|f| format!(", first: {f}")).unwrap_or_default(),
            describe_cpu(&self.cpu),
        );
        json!({
            "per_s": self.rate(),
            "ok": self.ok,
            "failed": self.failed,
            "s": round2(self.elapsed.as_secs_f64()),
            "p50_ms": c50,
            "p99_ms": c99,
            "max_ms": cmax,
            "cpu": self.cpu,
        })
    }
}

/// `tasks` tasks, one call in flight each, make `per_task` calls `call(task, seq)`; timed from
/// the first call to the last answer.
async fn drive<F, Fut>(
    tasks: usize,
    per_task: usize,
    pids: &[(&'static str, u32)],
    call: F,
) -> PublishRun
where
    F: Fn(usize, usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let failures = Arc::new(Mutex::new((0u64, None::<String>)));
    let mut set = JoinSet::new();
    let cpu = Cpu::start(pids);
    let started = Instant::now();
    for task in 0..tasks {
        let (call, failures) = (call.clone(), failures.clone());
        set.spawn(async move {
            let mut calls = Vec::with_capacity(per_task);
            for seq in 0..per_task {
                let t0 = Instant::now();
                let done = call(task, seq).await;
                calls.push(t0.elapsed());
                if let Err(e) = done {
                    let mut f = failures.lock().expect("failure lock");
                    f.0 += 1;
                    f.1.get_or_insert(e);
                }
            }
            calls
        });
    }
    let mut calls = Vec::with_capacity(tasks * per_task);
    let joined = tokio::time::timeout(ALL, async {
        while let Some(done) = set.join_next().await {
            calls.extend(done.expect("publishing task"));
        }
    })
    .await;
    assert!(joined.is_ok(), "publishing did not end within {ALL:?}");
    let elapsed = started.elapsed();
    let (failed, first_failure) = failures.lock().expect("failure lock").clone();
    PublishRun {
        ok: calls.len() as u64 - failed,
        failed,
        first_failure,
        elapsed,
        calls,
        cpu: cpu.stop(),
    }
}

/// Task `i` of `clients` publishes through Steward to `streams[i % len]`, `per_task` times;
/// one untimed publish per task first.
async fn publish_through(
    clients: &[Client],
    streams: &[String],
    per_task: usize,
    pids: &[(&'static str, u32)],
) -> PublishRun {
    let warm = clients.iter().enumerate().map(|(i, c)| {
        let mut c = c.clone();
        let request = publish_request(&streams[i % streams.len()], i, per_task);
        async move { publish(&mut c, request).await }
    });
    for warmed in join_all(warm).await {
        warmed.unwrap_or_else(|e| panic!("warm-up publish: {e}"));
    }
    let clients: Arc<[Client]> = clients.into();
    let streams: Arc<[String]> = streams.into();
    drive(clients.len(), per_task, pids, move |task, seq| {
        let mut client = clients[task].clone();
        let request = publish_request(&streams[task % streams.len()], task, seq);
        async move { publish(&mut client, request).await.map(drop) }
    })
    .await
}

// ---- 1. publish throughput, memory -------------------------------------------------------------

async fn publish_memory(p: &Params, server: &Server, clients: &[Client]) -> Value {
    let streams: Vec<String> = (0..p.streams).map(|i| format!("bench.publish.{i}")).collect();
    let pids = [("steward", server.pid())];
    let mut run = publish_through(clients, &streams, p.per_task(), &pids).await;
    let figures = run.report("publish_memory", "through Steward on the memory engine");
    json!({ "publish_memory": figures })
}

// ---- 2. fan-out --------------------------------------------------------------------------------

/// Opens a socket with `Authorization: Bearer <token>`, small client buffers and `TCP_NODELAY`.
async fn open(url: &str, token: &str) -> Result<Ws, String> {
    let mut request = url.into_client_request().map_err(|e| format!("request: {e}"))?;
    let value = HeaderValue::from_str(&format!("Bearer {token}")).expect("ascii header");
    request.headers_mut().insert("authorization", value);
    // tungstenite's 128 KiB default buffers would make 10k clients weigh more than the server
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    let (ws, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true)
        .await
        .map_err(|e| format!("upgrade: {e}"))?;
    Ok(ws)
}

/// The next text frame, as received (protocol pings are answered by tungstenite as it reads).
async fn next_text(ws: &mut Ws) -> Result<String, String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_owned()),
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            other => return Err(format!("expected a text frame, got {other:?}")),
        }
    }
}

/// Sends `request` and reads the `subscribed` answer.
async fn subscribe(ws: &mut Ws, request: &str) -> Result<Value, String> {
    ws.send(Message::text(request.to_owned())).await.map_err(|e| format!("send: {e}"))?;
    let text = next_text(ws).await?;
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}: {text}"))?;
    if v["type"] != "subscribed" {
        return Err(format!("expected subscribed, got {text}"));
    }
    Ok(v)
}

/// Opens a socket and subscribes it; the socket and the offset it subscribed at.
async fn open_subscribed(url: &str, token: &str, request: &str) -> Result<(Ws, u64), String> {
    let run = async {
        let mut ws = open(url, token).await?;
        let sub = subscribe(&mut ws, request).await?;
        let offset = sub["position"]["offset"].as_u64().ok_or(format!("no position: {sub}"))?;
        Ok((ws, offset))
    };
    tokio::time::timeout(STEP, run).await.map_err(|_| "not subscribed within 30 s".to_owned())?
}

/// Sends a Close and waits for the server's.
async fn close(mut ws: Ws) -> Result<(), String> {
    ws.close(None).await.map_err(|e| format!("close: {e}"))?;
    let run = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) | None => return Ok(()),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("waiting for the server's Close: {e}")),
            }
        }
    };
    tokio::time::timeout(STEP, run).await.map_err(|_| "no Close within 30 s".to_owned())?
}

/// State shared by the subscribers' tasks and the main task.
struct Shared {
    /// Per publication (index = offset − the subscribed offset − 1), the sockets that have it.
    received: Vec<AtomicUsize>,
    /// Notified when a publication has reached every socket.
    all_in: Notify,
    /// Subscribed sockets.
    sockets: usize,
    /// Sockets that failed (an unexpected frame, or the connection ended before the close).
    failures: AtomicUsize,
    /// The first failure, for the report.
    first_failure: Mutex<Option<String>>,
}

impl Shared {
    fn fail(&self, why: String) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.first_failure.lock().expect("failure lock").get_or_insert(why);
    }

    fn failure(&self) -> String {
        let first = self.first_failure.lock().expect("failure lock");
        first.as_ref().map(|f| format!(" (first: {f})")).unwrap_or_default()
    }
}

/// One subscribed socket: reads it until told to close; returns when each publication arrived
/// (its number from 1, the instant).
async fn hold(
    mut ws: Ws,
    from: u64,
    mut closing: watch::Receiver<bool>,
    shared: Arc<Shared>,
) -> Vec<(u64, Instant)> {
    let mut got = Vec::with_capacity(shared.received.len());
    let mut closed = false;
    loop {
        tokio::select! {
            changed = closing.changed(), if !closed => {
                if changed.is_err() || *closing.borrow_and_update() {
                    closed = true;
                    if ws.close(None).await.is_err() {
                        break;
                    }
                }
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    let at = Instant::now();
                    let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                    let n = v["offset"].as_u64().and_then(|o| o.checked_sub(from));
                    let index = n.and_then(|n| usize::try_from(n).ok()?.checked_sub(1));
                    let slot = index.and_then(|i| shared.received.get(i));
                    match (v["type"].as_str(), n, slot) {
                        (Some("publication"), Some(n), Some(count)) => {
                            got.push((n, at));
                            if count.fetch_add(1, Ordering::AcqRel) + 1 == shared.sockets {
                                shared.all_in.notify_one();
                            }
                        }
                        _ => shared.fail(format!("unexpected frame: {t}")),
                    }
                }
                Some(Ok(Message::Close(frame))) if !closed => {
                    shared.fail(format!("the server closed the socket: {frame:?}"));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) if !closed => {
                    shared.fail(format!("read: {e}"));
                    break;
                }
                Some(Err(_)) | None => break,
            }
        }
    }
    got
}

#[allow(clippy::too_many_lines)] // one linear script: open, publish, close, report
async fn fanout(p: &Params, server: &Server, token: &str, client: &Client) -> Value {
    let n = p.subscribers;
    let stream = "bench.fanout";
    let url = format!("ws://{}/v1/ws", server.public);
    let request = json!({"type": "subscribe", "stream": stream}).to_string();
    let rss_before = server.rss();
    let (close_tx, close_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        received: (0..p.fanouts).map(|_| AtomicUsize::new(0)).collect(),
        all_in: Notify::new(),
        sockets: n,
        failures: AtomicUsize::new(0),
        first_failure: Mutex::new(None),
    });
    let mut held = JoinSet::new();
    let mut positions = (u64::MAX, 0);
    let started = Instant::now();
    {
        let mut opening = futures_util::stream::iter(0..n)
            .map(|_| open_subscribed(&url, token, &request))
            .buffer_unordered(OPEN_CONCURRENCY);
        while let Some(opened) = opening.next().await {
            let (ws, from) = opened.unwrap_or_else(|e| {
                panic!("subscriber {} of {n} did not subscribe: {e}", held.len() + 1)
            });
            positions = (positions.0.min(from), positions.1.max(from));
            held.spawn(hold(ws, from, close_rx.clone(), shared.clone()));
        }
    }
    let open_time = started.elapsed();
    assert_eq!(positions.0, positions.1, "the subscribers subscribed at different offsets");
    let rss_held = server.rss();
    println!(
        "streams/fanout_open: {n} sockets opened and subscribed to one stream in {:.2} s \
         ({:.0}/s); server RSS {} MiB before, {} MiB with them",
        open_time.as_secs_f64(),
        n as f64 / open_time.as_secs_f64(),
        mib(rss_before),
        mib(rss_held),
    );

    let mut client = client.clone();
    let mut sent_at = Vec::with_capacity(p.fanouts as usize);
    let mut calls = Vec::with_capacity(p.fanouts as usize);
    let (mut incomplete, mut publish_failed) = (0, 0);
    let cpu = Cpu::start(&[("steward", server.pid())]);
    for i in 0..p.fanouts {
        let i = i as usize;
        let request = publish_request(stream, 0, i);
        let t0 = Instant::now();
        let published = publish(&mut client, request).await;
        calls.push(t0.elapsed());
        sent_at.push(t0);
        if let Err(e) = published {
            publish_failed += 1;
            shared.fail(e);
            continue;
        }
        let count = &shared.received[i];
        let deadline = t0 + STEP;
        while count.load(Ordering::Acquire) < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, shared.all_in.notified()).await.is_err() {
                incomplete += 1;
                break;
            }
        }
    }
    let cpu = cpu.stop();

    // close the sockets: each sends a Close and ends with the server's
    close_tx.send_replace(true);
    let collected = crate::support::collect_deliveries(&mut held, &sent_at, ALL).await;
    let (mut deliveries, mut last) =
        collected.unwrap_or_else(|left| panic!("{left} subscribers did not end within {ALL:?}"));
    let expected = n * p.fanouts as usize;
    let (d50, d99, dmax) = spread(&mut deliveries);
    let (l50, l99, lmax) = spread(&mut last);
    let (c50, c99, cmax) = spread(&mut calls);
    let failures = shared.failures.load(Ordering::Acquire);
    println!(
        "streams/fanout_latency: p50 {d50} ms, p99 {d99} ms, max {dmax} ms from Publish to a \
         subscriber's receipt, over {} of {expected} deliveries ({n} subscribers × {} \
         publications)",
        deliveries.len(),
        p.fanouts,
    );
    println!(
        "streams/fanout_last_subscriber: p50 {l50} ms, p99 {l99} ms, max {lmax} ms per \
         publication until the last of {n} subscribers had it; per publication [{}] ms \
         ({incomplete} incomplete after 30 s, {publish_failed} Publish calls failed; Publish \
         call p50 {c50} ms, p99 {c99} ms, max {cmax} ms; {failures} socket failures{}; {})",
        last.iter().map(|d| ms(*d).to_string()).collect::<Vec<_>>().join(", "),
        shared.failure(),
        describe_cpu(&cpu),
    );
    json!({
        "fanout_subscribers": n,
        "fanout_publications": p.fanouts,
        "fanout_open_s": round2(open_time.as_secs_f64()),
        "fanout_rss_held_mib": mib(rss_held),
        "fanout_p50_ms": d50,
        "fanout_p99_ms": d99,
        "fanout_max_ms": dmax,
        "fanout_deliveries": deliveries.len(),
        "fanout_expected": expected,
        "fanout_last_p50_ms": l50,
        "fanout_last_p99_ms": l99,
        "fanout_last_max_ms": lmax,
        "fanout_last_ms": last.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
        "fanout_incomplete": incomplete,
        "fanout_socket_failures": failures,
        "fanout_cpu": cpu,
    })
}

// ---- 3. recovery -------------------------------------------------------------------------------

/// What one recovery round saw.
struct Recovery {
    took: Duration,
    bytes: usize,
    recovered: bool,
    count: usize,
    publish_failed: usize,
}

/// One round: subscribe and note the position, close, `p.missed` publications, subscribe again
/// with `since`; the time from that `subscribe` to the whole `subscribed` frame.
async fn recover_once(
    p: &Params,
    url: &str,
    token: &str,
    clients: &[Client],
    stream: &str,
) -> Result<Recovery, String> {
    let request = json!({"type": "subscribe", "stream": stream}).to_string();
    let mut ws = open(url, token).await?;
    let sub = subscribe(&mut ws, &request).await?;
    let since = sub["position"].clone();
    close(ws).await?;

    let publishes = futures_util::stream::iter(0..p.missed)
        .map(|seq| {
            let mut client = clients[seq % clients.len()].clone();
            let request = publish_request(stream, 0, seq);
            async move { publish(&mut client, request).await }
        })
        .buffer_unordered(p.concurrency);
    let publish_failed = publishes.filter(|r| std::future::ready(r.is_err())).count().await;

    let mut ws = open(url, token).await?;
    let request = json!({"type": "subscribe", "stream": stream, "since": since}).to_string();
    let t0 = Instant::now();
    ws.send(Message::text(request)).await.map_err(|e| format!("send: {e}"))?;
    let text = next_text(&mut ws).await?;
    let took = t0.elapsed();
    close(ws).await?;
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))?;
    if v["type"] != "subscribed" {
        return Err(format!(
            "expected subscribed, got {}",
            text.chars().take(300).collect::<String>()
        ));
    }
    let publications = v["publications"].as_array().map_or(&[][..], Vec::as_slice);
    let first = since["offset"].as_u64().unwrap_or(0);
    let in_order = publications
        .iter()
        .enumerate()
        .all(|(i, x)| x["offset"].as_u64() == Some(first + i as u64 + 1));
    Ok(Recovery {
        took,
        bytes: text.len(),
        recovered: v["recovered"] == true && in_order,
        count: publications.len(),
        publish_failed,
    })
}

async fn recovery(p: &Params, server: &Server, token: &str, clients: &[Client]) -> Value {
    let url = format!("ws://{}/v1/ws", server.public);
    let stream = "bench.recovery";
    let mut rounds = Vec::with_capacity(p.recoveries);
    let cpu = Cpu::start(&[("steward", server.pid())]);
    for round in 0..p.recoveries {
        let done = recover_once(p, &url, token, clients, stream).await;
        rounds.push(done.unwrap_or_else(|e| panic!("recovery round {round}: {e}")));
    }
    let cpu = cpu.stop();
    let mut times: Vec<Duration> = rounds.iter().map(|r| r.took).collect();
    let (r50, r99, rmax) = spread(&mut times);
    let complete = rounds.iter().filter(|r| r.recovered && r.count == p.missed).count();
    let publish_failed: usize = rounds.iter().map(|r| r.publish_failed).sum();
    let bytes = (
        rounds.iter().map(|r| r.bytes).min().unwrap_or(0),
        rounds.iter().map(|r| r.bytes).max().unwrap_or(0),
    );
    println!(
        "streams/recovery: p50 {r50} ms, p99 {r99} ms, max {rmax} ms from `subscribe` with \
         `since` to the whole `subscribed` frame with {} missed publications, over {} rounds \
         ({complete} recovered completely and in order; counts [{}]; {publish_failed} publishes \
         failed); the frame is {} bytes ({} KiB){}; {}",
        p.missed,
        rounds.len(),
        rounds.iter().map(|r| r.count.to_string()).collect::<Vec<_>>().join(", "),
        bytes.1,
        (bytes.1 as f64 / 1024.0).round(),
        if bytes.0 == bytes.1 { String::new() } else { format!(" (smallest {})", bytes.0) },
        describe_cpu(&cpu),
    );
    json!({
        "recovery_missed": p.missed,
        "recovery_rounds": rounds.len(),
        "recovery_complete": complete,
        "recovery_p50_ms": r50,
        "recovery_p99_ms": r99,
        "recovery_max_ms": rmax,
        "recovery_frame_bytes": bytes.1,
        "recovery_publish_failed": publish_failed,
    })
}

// ---- 4. Redis: Steward vs a direct redis-rs client -----------------------------------------------

/// The Redis keys of one stream, as the engine names them (`engine/redis/mod.rs`, `Keys`).
struct DirectKeys {
    keys: [String; 5],
    channel: String,
}

impl DirectKeys {
    fn new(stream: &str) -> Self {
        let prefix = format!("steward:{{{TENANT}/{stream}}}:");
        Self {
            keys: ["meta", "history", "latest", "order", "expiry"].map(|k| format!("{prefix}{k}")),
            channel: format!("{prefix}live"),
        }
    }
}

/// One publish as the engine invokes it: its five keys, and ARGV epoch candidate, latest
/// field, data, json flag, history_size, history_ttl, key_ttl, idempotency window, max_keys,
/// meta TTL (the longest of the three TTLs), channel.
async fn direct_publish(
    mut conn: ConnectionManager,
    keys: &DirectKeys,
    history_size: usize,
    (task, seq): (usize, usize),
) -> Result<(), String> {
    let mut invocation = PUBLISH.prepare_invoke();
    for k in &keys.keys {
        invocation.key(k);
    }
    let candidate = format!("{:016x}", ((task as u64) << 32) | seq as u64);
    invocation
        .arg(candidate)
        .arg(key(task, seq))
        .arg(data(task, seq).as_bytes())
        .arg(1u8)
        .arg(history_size)
        .arg(HISTORY_TTL_MS)
        .arg(KEY_TTL_MS)
        .arg(IDEMPOTENCY_WINDOW_MS)
        .arg(STREAM_KEYS)
        .arg(HISTORY_TTL_MS.max(KEY_TTL_MS).max(IDEMPOTENCY_WINDOW_MS))
        .arg(&keys.channel);
    let answer: Vec<String> =
        invocation.invoke_async(&mut conn).await.map_err(|e| format!("publish script: {e}"))?;
    match answer.first().map(String::as_str) {
        Some("ok") => Ok(()),
        _ => Err(format!("publish script answered {answer:?}")),
    }
}

/// Task `i` publishes straight to Redis on `streams[i % len]`, `per_task` times, all tasks on
/// one multiplexed connection; one untimed publish per task first (the script is loaded).
async fn publish_direct(
    p: &Params,
    conn: &ConnectionManager,
    streams: &[String],
    pids: &[(&'static str, u32)],
) -> PublishRun {
    let keys: Arc<[DirectKeys]> = streams.iter().map(|s| DirectKeys::new(s)).collect();
    let (history_size, per_task) = (p.history_size, p.per_task());
    let warm = (0..p.concurrency).map(|task| {
        let (conn, keys) = (conn.clone(), keys.clone());
        async move {
            direct_publish(conn, &keys[task % keys.len()], history_size, (task, per_task)).await
        }
    });
    for warmed in join_all(warm).await {
        warmed.unwrap_or_else(|e| panic!("direct warm-up publish: {e}"));
    }
    let conn = conn.clone();
    drive(p.concurrency, per_task, pids, move |task, seq| {
        let (conn, keys) = (conn.clone(), keys.clone());
        async move { direct_publish(conn, &keys[task % keys.len()], history_size, (task, seq)).await }
    })
    .await
}

/// The sum of the tops (last offsets) of `streams` in Redis: every publication stored.
async fn tops(conn: &ConnectionManager, streams: &[String]) -> u64 {
    let mut conn = conn.clone();
    let mut sum = 0;
    for s in streams {
        let top: Option<u64> = redis::cmd("HGET")
            .arg(&DirectKeys::new(s).keys[0])
            .arg("top")
            .query_async(&mut conn)
            .await
            .expect("HGET top");
        sum += top.unwrap_or(0);
    }
    sum
}

#[allow(clippy::too_many_lines)] // one linear script: start, rounds, check, shutdown
async fn redis_phase(p: &Params) -> Value {
    // blocks this runtime thread while redis-server starts (setup, nothing is measured)
    let redis = match RedisServer::start() {
        Ok(redis) => redis,
        Err(e) => {
            println!("streams/redis: skipped (no redis-server: {e})");
            return json!({"redis_skipped": e.to_string()});
        }
    };
    let mut env = steward_env(p);
    env.push(("STEWARD__STREAMS__ENGINE", "redis".to_owned()));
    env.push(("STEWARD__STREAMS__URL", redis.url()));
    let mut server = Server::start(&env, None).await;
    let token = server.tenant_token(quotas(p)).await;
    let senders = clients(&server.grpc, &token, p.concurrency).await;
    let client = redis::Client::open(redis.url()).expect("redis URL");
    let conn = ConnectionManager::new(client).await.expect("connect to redis-server");
    let info: String =
        redis::cmd("INFO").arg("server").query_async(&mut conn.clone()).await.expect("INFO");
    let redis_pid = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("process_id:")?.parse::<u32>().ok())
        .expect("process_id in INFO server");
    let pids = [("steward", server.pid()), ("redis", redis_pid)];

    let mut rounds = Vec::new();
    let (mut steward_all, mut direct_all) = ((0, Duration::ZERO), (0, Duration::ZERO));
    let (mut steward_streams, mut direct_streams) = (Vec::new(), Vec::new());
    for round in 0..p.redis_rounds {
        let mut steward = None;
        let mut direct = None;
        for side in [round % 2, 1 - round % 2] {
            if side == 0 {
                let streams: Vec<String> =
                    (0..p.streams).map(|i| format!("bench.redis.r{round}.{i}")).collect();
                let mut run = publish_through(&senders, &streams, p.per_task(), &pids).await;
                let figures = run.report(
                    &format!("redis_steward[{round}]"),
                    "through Steward on the Redis engine",
                );
                steward_all = (steward_all.0 + run.ok, steward_all.1 + run.elapsed);
                steward_streams.extend(streams);
                steward = Some((run.rate(), figures));
            } else {
                let streams: Vec<String> =
                    (0..p.streams).map(|i| format!("direct.r{round}.{i}")).collect();
                let mut run = publish_direct(p, &conn, &streams, &pids).await;
                let figures = run.report(
                    &format!("redis_direct[{round}]"),
                    "redis-rs straight to Redis, the engine's script",
                );
                direct_all = (direct_all.0 + run.ok, direct_all.1 + run.elapsed);
                direct_streams.extend(streams);
                direct = Some((run.rate(), figures));
            }
        }
        let ((s_rate, s), (d_rate, d)) =
            (steward.expect("steward side"), direct.expect("direct side"));
        let first = if round % 2 == 0 { "steward" } else { "direct" };
        rounds.push(json!({
            "first": first,
            "steward": s,
            "direct": d,
            "ratio": round2(s_rate / d_rate.max(1.0)),
        }));
    }
    let rate = |(n, t): (u64, Duration)| (n as f64 / t.as_secs_f64().max(1e-9)).round();
    let (steward_rate, direct_rate) = (rate(steward_all), rate(direct_all));
    let ratio = round2(steward_rate / direct_rate.max(1.0));
    let stored = (tops(&conn, &steward_streams).await, tops(&conn, &direct_streams).await);
    let sent = p.redis_rounds * p.concurrency * (p.per_task() + 1);
    println!(
        "streams/redis_ratio: {ratio} of the direct client's throughput over {} rounds (target \
         >= 0.7): Steward {steward_rate} publishes/s, direct {direct_rate} publishes/s; per round \
         [{}]; Redis holds {} publications in Steward's streams and {} in the direct ones ({sent} \
         sent each, warm-up included)",
        p.redis_rounds,
        rounds.iter().map(|r| r["ratio"].to_string()).collect::<Vec<_>>().join(", "),
        stored.0,
        stored.1,
    );
    let warnings = server.warnings();
    let status = server.terminate().await;
    println!(
        "streams/redis_shutdown: SIGTERM -> {} ({warnings})",
        status.map_or_else(|| "still running after 60 s".to_owned(), |s| s.to_string()),
    );
    drop(conn);
    let mut redis = redis;
    redis.stop();
    json!({
        "redis_rounds": rounds,
        "redis_steward_per_s": steward_rate,
        "redis_direct_per_s": direct_rate,
        "redis_ratio": ratio,
        "redis_stored_steward": stored.0,
        "redis_stored_direct": stored.1,
        "redis_sent_per_side": sent,
        "redis_exit": status.and_then(|s| s.code()),
    })
}

// ---- the run ----------------------------------------------------------------------------------

async fn run(p: Params) {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let load_before = loadavg();
    println!(
        "streams: N={} publishes ({}-byte JSON, {KEYS} keys per stream) by C={} tasks (one \
         connection each) on S={} streams; {} WebSocket subscribers × K={} publications; R={} \
         recoveries of M={}; {} Redis rounds{}; history_size {}; {cores} cores, load average \
         {load_before}, clients on the same machine{}",
        p.per_task() * p.concurrency,
        DATA_BYTES,
        p.concurrency,
        p.streams,
        p.subscribers,
        p.fanouts,
        p.recoveries,
        p.missed,
        p.redis_rounds,
        p.redis_skipped.as_ref().map(|s| format!(" (skipped: {s})")).unwrap_or_default(),
        p.history_size,
        if p.smoke { " (smoke run: no --bench argument)" } else { "" },
    );
    let mut server = Server::start(&steward_env(&p), None).await;
    let token = server.tenant_token(quotas(&p)).await;
    let senders = clients(&server.grpc, &token, p.concurrency).await;

    // 1. publish throughput, memory
    let memory = publish_memory(&p, &server, &senders).await;
    // 2. fan-out to the subscribers of one stream
    let fanout = fanout(&p, &server, &token, &senders[0]).await;
    // 3. recovery of missed publications
    let recovery = recovery(&p, &server, &token, &senders).await;
    drop(senders);
    let rss_end = server.rss();
    let warnings = server.warnings();
    let started = Instant::now();
    let status = server.terminate().await;
    println!(
        "streams/memory_shutdown: SIGTERM -> {} in {:.2} s ({warnings}); RSS {} MiB before it",
        status.map_or_else(|| "still running after 60 s".to_owned(), |s| s.to_string()),
        started.elapsed().as_secs_f64(),
        mib(rss_end),
    );

    // 4. Redis: Steward vs a direct client
    let redis = match &p.redis_skipped {
        None => redis_phase(&p).await,
        Some(why) => {
            println!("streams/redis: skipped ({why})");
            json!({"redis_skipped": why})
        }
    };

    let mut summary = json!({
        "bench": "streams",
        "publishes": p.per_task() * p.concurrency,
        "concurrency": p.concurrency,
        "streams": p.streams,
        "data_bytes": DATA_BYTES,
        "history_size": p.history_size,
        "cores": cores,
        "load_before": load_before,
        "load_after": loadavg(),
        "exit": status.and_then(|s| s.code()),
        "smoke": p.smoke,
    });
    for part in [memory, fanout, recovery, redis] {
        if let (Some(summary), Some(part)) = (summary.as_object_mut(), part.as_object()) {
            summary.extend(part.clone());
        }
    }
    println!("{summary}");
}
