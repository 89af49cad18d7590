//! Load benchmark of the WebSocket front door (`GET /v1/ws`) on the real `steward` binary.
//!
//! Starts the `steward` of the profile being built (release under `cargo bench`) as a child
//! process on loopback ports chosen by the OS, drives it with tokio-tungstenite clients on the
//! same machine, and prints:
//!
//! 1. `rss_per_socket`: the server's resident memory per idle authenticated socket at N open
//!    sockets (`BENCH_SOCKETS`, default 10000): `(RSS after − RSS before) / N`, RSS read from
//!    `/proc/<pid>/statm` before the first socket and once `/metrics` shows N live sockets. Every
//!    socket has had one `ping`/`pong` exchange. Target ≤ 16 KiB.
//! 2. `fanout`: all N sockets subscribed to one job, then `BENCH_UPDATES` (default 20)
//!    `UpdateJob` calls one at a time, each once every socket has the previous one. Latency from
//!    just before the call to a socket's receipt of the update: p50/p99/max over the N×K
//!    deliveries, and per update the time until the last socket had it. Target p99 ≤ 250 ms.
//! 3. `cycles`: connect + authenticate + subscribe + close cycles per second, `BENCH_CYCLES`
//!    (default 2000) cycles `BENCH_CONCURRENCY` (default 50) at a time; then the live sockets
//!    left (0 expected) and the server's RSS.
//!
//! Then SIGTERM and the server's exit status, and all figures as one JSON line
//! (`{"bench":"sockets",…}`). It asserts only that the setup worked (the server started, every
//! socket opened, every subscription was acknowledged); everything else is reported.
//!
//! Run with `cargo bench -p steward-server --bench sockets`; a quick run:
//! `BENCH_SOCKETS=1000 BENCH_CYCLES=200 cargo bench -p steward-server --bench sockets`.
//! Without `--bench` among its arguments (`cargo test --benches`) it is a smoke run of 100
//! sockets, 3 updates and 50 cycles unless the variables say otherwise.
#![allow(missing_docs, clippy::print_stdout, clippy::print_stderr)]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use steward_proto::jobs::v1::jobs_client::JobsClient;
use steward_proto::jobs::v1::{CreateJobRequest, JobStatus, UpdateJobRequest};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tonic::metadata::MetadataValue;

use crate::support::{Server, mib, spread};

/// Upgrades (connect + ping/pong) in flight while the N idle sockets are opened.
const OPEN_CONCURRENCY: usize = 200;
/// Deadline of anything that should be quick: one upgrade, one reply, one cycle.
const STEP: Duration = Duration::from_secs(30);
/// Deadline of a step over all N sockets (every socket open, subscribed, closed, counted).
const ALL: Duration = Duration::from_secs(120);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The run's parameters.
#[derive(Debug, Clone, Copy)]
struct Params {
    /// Idle sockets held open (N).
    sockets: usize,
    /// Updates fanned out to them (K).
    updates: u32,
    /// Connect+subscribe+close cycles (M).
    cycles: usize,
    /// Cycles in flight (C).
    concurrency: usize,
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
        Self {
            sockets: var("BENCH_SOCKETS", 10_000, 100).max(1),
            updates: u32::try_from(var("BENCH_UPDATES", 20, 3).clamp(1, 100)).unwrap_or(20),
            cycles: var("BENCH_CYCLES", 2000, 50).max(1),
            concurrency: var("BENCH_CONCURRENCY", 50, 50).max(1),
            smoke,
        }
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

// ---- the server -------------------------------------------------------------------------------

/// Starts the server with room for 20000 connections (from one address).
async fn start_server() -> Server {
    let env = [
        ("STEWARD__SOCKET__MAX_CONNECTIONS", "20000".to_owned()),
        ("STEWARD__SOCKET__MAX_PER_IP", "20000".to_owned()),
    ];
    Server::start(&env, None).await
}

impl Server {
    /// `steward_resources_live{kind="socket"}` of `/metrics` (0 when the series is absent).
    async fn live_sockets(&self) -> Option<u64> {
        let r = self.admin_request(reqwest::Method::GET, "/metrics").send().await.ok()?;
        if !r.status().is_success() {
            return None;
        }
        let text = r.text().await.ok()?;
        let series = "steward_resources_live{kind=\"socket\"}";
        Some(
            text.lines()
                .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
                .map_or(0, |v| v as u64),
        )
    }

    /// Polls `/metrics` until `want` sockets are live, at most `within`; the last value seen.
    async fn until_live(&self, want: u64, within: Duration) -> Option<u64> {
        let deadline = Instant::now() + within;
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let mut last = None;
        loop {
            tick.tick().await;
            last = self.live_sockets().await.or(last);
            if last == Some(want) || Instant::now() >= deadline {
                return last;
            }
        }
    }
}

fn bearer<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {token}")).expect("ascii metadata"),
    );
    req
}

// ---- the clients ------------------------------------------------------------------------------

/// Opens a socket with `Authorization: Bearer <token>`, small client buffers and `TCP_NODELAY`.
async fn connect(url: &str, token: &str) -> Result<Ws, WsError> {
    let mut request = url.into_client_request()?;
    let value = HeaderValue::from_str(&format!("Bearer {token}")).expect("ascii header");
    request.headers_mut().insert("authorization", value);
    // tungstenite's 128 KiB default buffers would make 10k clients weigh more than the server
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    let (ws, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true).await?;
    Ok(ws)
}

/// The next text frame as JSON (protocol pings are answered by tungstenite while it reads).
async fn next_json(ws: &mut Ws) -> Result<Value, String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                return serde_json::from_str(&t).map_err(|e| format!("not JSON: {e}: {t}"));
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            other => return Err(format!("expected a text frame, got {other:?}")),
        }
    }
}

/// Sends a JSON request.
async fn send(ws: &mut Ws, v: &Value) -> Result<(), String> {
    ws.send(Message::text(v.to_string())).await.map_err(|e| format!("send: {e}"))
}

/// Opens an authenticated socket and proves it live with one `ping` → `pong`.
async fn open_live(url: &str, token: &str) -> Result<Ws, String> {
    let open = async {
        let mut ws = connect(url, token).await.map_err(|e| format!("upgrade: {e}"))?;
        send(&mut ws, &json!({"type": "ping"})).await?;
        let reply = next_json(&mut ws).await?;
        if reply["type"] != "pong" {
            return Err(format!("expected a pong, got {reply}"));
        }
        Ok(ws)
    };
    tokio::time::timeout(STEP, open).await.map_err(|_| "no pong within 30 s".to_owned())?
}

/// What the main task tells the held sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Stay idle (reading, so that protocol pings are answered).
    Hold,
    /// Subscribe to the job.
    Subscribe,
    /// Send a Close and end after the server's.
    Close,
}

/// State shared by the held sockets' tasks and the main task.
struct Shared {
    /// The subscribe request, as text.
    subscribe: String,
    /// Sockets whose subscription was acknowledged.
    subscribed: AtomicUsize,
    /// Per update (index = progress − 1), the sockets that received it.
    received: Vec<AtomicUsize>,
    /// Notified when an update has reached every socket.
    all_in: Notify,
    /// Held sockets.
    sockets: usize,
    /// Sockets that failed (an error frame, or the connection ended before the Close phase).
    failures: AtomicUsize,
    /// The first failure, for the report.
    first_failure: Mutex<Option<String>>,
}

impl Shared {
    fn fail(&self, why: String) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.first_failure.lock().expect("failure lock").get_or_insert(why);
    }
}

/// One held socket: reads it all along; subscribes and closes when told; returns when each update
/// arrived (its progress, the instant).
async fn hold(
    mut ws: Ws,
    mut phase: watch::Receiver<Phase>,
    shared: Arc<Shared>,
) -> Vec<(u32, Instant)> {
    let mut got = Vec::with_capacity(shared.received.len());
    let mut closing = false;
    loop {
        tokio::select! {
            changed = phase.changed(), if !closing => {
                if changed.is_err() {
                    break;
                }
                let now = *phase.borrow_and_update();
                match now {
                    Phase::Hold => {}
                    Phase::Subscribe => {
                        let sent = ws.send(Message::text(shared.subscribe.clone())).await;
                        if let Err(e) = sent {
                            shared.fail(format!("subscribe: {e}"));
                            break;
                        }
                    }
                    Phase::Close => {
                        closing = true;
                        if ws.close(None).await.is_err() {
                            break;
                        }
                    }
                }
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => on_text(&shared, &t, Instant::now(), &mut got),
                Some(Ok(Message::Close(frame))) if !closing => {
                    shared.fail(format!("the server closed the socket: {frame:?}"));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) if !closing => {
                    shared.fail(format!("read: {e}"));
                    break;
                }
                Some(Err(_)) | None => break,
            }
        }
    }
    got
}

/// A text frame a held socket received at `at`: an update is recorded and counted, a
/// `subscribed` counted, anything else is a failure.
fn on_text(shared: &Shared, text: &str, at: Instant, got: &mut Vec<(u32, Instant)>) {
    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    match v["type"].as_str() {
        Some("job") => {
            let progress = v["progress"].as_u64().and_then(|p| u32::try_from(p).ok());
            let slot = progress.and_then(|p| p.checked_sub(1)).map(|i| i as usize);
            if let (Some(p), Some(i)) = (progress, slot)
                && let Some(count) = shared.received.get(i)
            {
                got.push((p, at));
                if count.fetch_add(1, Ordering::AcqRel) + 1 == shared.sockets {
                    shared.all_in.notify_one();
                }
            }
        }
        Some("subscribed") => {
            shared.subscribed.fetch_add(1, Ordering::AcqRel);
        }
        _ => shared.fail(format!("unexpected frame: {text}")),
    }
}

/// One cycle: upgrade (authenticated), subscribe, wait for `subscribed`, Close, wait for the
/// server's Close. Its duration.
async fn cycle(url: &str, token: &str, subscribe: &str) -> Result<Duration, String> {
    let start = Instant::now();
    let run = async {
        let mut ws = connect(url, token).await.map_err(|e| format!("upgrade: {e}"))?;
        ws.send(Message::text(subscribe.to_owned())).await.map_err(|e| format!("send: {e}"))?;
        let reply = next_json(&mut ws).await?;
        if reply["type"] != "subscribed" {
            return Err(format!("expected subscribed, got {reply}"));
        }
        ws.close(None).await.map_err(|e| format!("close: {e}"))?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) | None => return Ok(start.elapsed()),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("waiting for the server's Close: {e}")),
            }
        }
    };
    tokio::time::timeout(STEP, run).await.map_err(|_| "cycle over 30 s".to_owned())?
}

// ---- the run ----------------------------------------------------------------------------------

#[allow(clippy::too_many_lines)] // one linear script: setup, three measurements, shutdown
async fn run(p: Params) {
    let n = p.sockets;
    println!(
        "sockets: N={n} sockets, K={} updates, M={} cycles, C={} concurrent cycles, \
         {OPEN_CONCURRENCY} concurrent upgrades, {} cores, clients on the same machine{}",
        p.updates,
        p.cycles,
        p.concurrency,
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        if p.smoke { " (smoke run: no --bench argument)" } else { "" },
    );
    let mut server = start_server().await;
    // a `sockets` quota for the whole run
    let token = server.tenant_token(json!({"sockets": n.max(20_000)})).await;
    let ws_url = format!("ws://{}/v1/ws", server.public);
    let mut jobs = JobsClient::connect(server.grpc.clone()).await.expect("gRPC connect");
    let job = jobs
        .create_job(bearer(CreateJobRequest { kind: "bench".into(), data: None }, &token))
        .await
        .expect("CreateJob")
        .into_inner();
    let subscribe = json!({"type": "subscribe", "job": job.id}).to_string();

    // 1. RSS per idle authenticated socket
    let rss_before = server.rss();
    let (phase_tx, phase_rx) = watch::channel(Phase::Hold);
    let shared = Arc::new(Shared {
        subscribe: subscribe.clone(),
        subscribed: AtomicUsize::new(0),
        received: (0..p.updates).map(|_| AtomicUsize::new(0)).collect(),
        all_in: Notify::new(),
        sockets: n,
        failures: AtomicUsize::new(0),
        first_failure: Mutex::new(None),
    });
    let mut held = JoinSet::new();
    let started = Instant::now();
    {
        let url = ws_url.as_str();
        let token = token.as_str();
        let mut opening = futures_util::stream::iter(0..n)
            .map(|_| open_live(url, token))
            .buffer_unordered(OPEN_CONCURRENCY);
        while let Some(opened) = opening.next().await {
            let ws = opened
                .unwrap_or_else(|e| panic!("socket {} of {n} did not open: {e}", held.len() + 1));
            held.spawn(hold(ws, phase_rx.clone(), shared.clone()));
        }
    }
    let open_time = started.elapsed();
    let rss_opened = server.rss();
    let live = server.until_live(n as u64, ALL).await;
    assert_eq!(live, Some(n as u64), "/metrics does not show {n} live sockets");
    let rss_held = server.rss();
    let per_socket_kib = rss_held.saturating_sub(rss_before) as f64 / n as f64 / 1024.0;
    let per_socket_kib = (per_socket_kib * 100.0).round() / 100.0;
    println!(
        "sockets/open: {n} authenticated sockets in {:.2} s ({:.0}/s)",
        open_time.as_secs_f64(),
        n as f64 / open_time.as_secs_f64()
    );
    println!(
        "sockets/rss_per_socket: {per_socket_kib} KiB per idle socket (RSS {} MiB before, \
         {} MiB when opened, {} MiB at {n} live; target <= 16 KiB)",
        mib(rss_before),
        mib(rss_opened),
        mib(rss_held),
    );

    // 2. fan-out latency
    let started = Instant::now();
    phase_tx.send(Phase::Subscribe).expect("held sockets listen");
    let deadline = Instant::now() + ALL;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while shared.subscribed.load(Ordering::Acquire) < n
        && shared.failures.load(Ordering::Acquire) == 0
        && Instant::now() < deadline
    {
        tick.tick().await;
    }
    let subscribed = shared.subscribed.load(Ordering::Acquire);
    assert_eq!(
        subscribed,
        n,
        "not every socket is subscribed; first failure: {:?}",
        shared.first_failure.lock().expect("failure lock")
    );
    let subscribe_time = started.elapsed();
    let mut sent_at = Vec::with_capacity(p.updates as usize);
    let mut calls = Vec::with_capacity(p.updates as usize);
    let mut incomplete = 0;
    for i in 1..=p.updates {
        let update = UpdateJobRequest {
            id: job.id.clone(),
            status: Some(JobStatus::Running as i32),
            progress: Some(i),
            data: None,
        };
        let request = bearer(update, &token);
        let t0 = Instant::now();
        jobs.update_job(request).await.expect("UpdateJob");
        calls.push(t0.elapsed());
        sent_at.push(t0);
        let count = &shared.received[i as usize - 1];
        let deadline = t0 + STEP;
        while count.load(Ordering::Acquire) < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, shared.all_in.notified()).await.is_err() {
                incomplete += 1;
                break;
            }
        }
    }

    // close the held sockets: each sends a Close and ends with the server's
    let started = Instant::now();
    phase_tx.send(Phase::Close).expect("held sockets listen");
    let mut deliveries = Vec::with_capacity(n * p.updates as usize);
    let mut last = vec![Duration::ZERO; p.updates as usize];
    let closing = tokio::time::timeout(ALL, async {
        while let Some(got) = held.join_next().await {
            for (progress, at) in got.expect("held socket task") {
                let i = progress as usize - 1;
                let d = at.saturating_duration_since(sent_at[i]);
                deliveries.push(d);
                last[i] = last[i].max(d);
            }
        }
    })
    .await;
    assert!(closing.is_ok(), "{} held sockets did not end within {ALL:?}", held.len());
    let close_time = started.elapsed();
    let after_close = server.until_live(0, ALL).await;
    let rss_closed = server.rss();
    let expected = n * p.updates as usize;
    let (d50, d99, dmax) = spread(&mut deliveries);
    let (l50, l99, lmax) = spread(&mut last);
    let (c50, c99, cmax) = spread(&mut calls);
    println!(
        "sockets/subscribe: {n} subscriptions acknowledged in {:.2} s",
        subscribe_time.as_secs_f64()
    );
    println!(
        "sockets/fanout_latency: p50 {d50} ms, p99 {d99} ms, max {dmax} ms over {} of {expected} \
         deliveries (target p99 <= 250 ms)",
        deliveries.len()
    );
    println!(
        "sockets/fanout_last_socket: p50 {l50} ms, p99 {l99} ms, max {lmax} ms per update until \
         the last of {n} sockets had it ({incomplete} of {} updates incomplete after 30 s)",
        p.updates
    );
    println!("sockets/update_job_call: p50 {c50} ms, p99 {c99} ms, max {cmax} ms");
    println!(
        "sockets/held_close: {n} sockets closed in {:.2} s; live afterwards {after_close:?}; \
         RSS {} MiB; failures {}{}",
        close_time.as_secs_f64(),
        mib(rss_closed),
        shared.failures.load(Ordering::Acquire),
        shared
            .first_failure
            .lock()
            .expect("failure lock")
            .as_ref()
            .map(|f| format!(" (first: {f})"))
            .unwrap_or_default(),
    );

    // 3. connect + auth + subscribe + close cycles
    let started = Instant::now();
    let mut cycle_times = Vec::with_capacity(p.cycles);
    let mut cycle_failures = 0usize;
    let mut first_cycle_failure = None;
    {
        let url = ws_url.as_str();
        let token = token.as_str();
        let subscribe = subscribe.as_str();
        let mut cycles = futures_util::stream::iter(0..p.cycles)
            .map(|_| cycle(url, token, subscribe))
            .buffer_unordered(p.concurrency);
        while let Some(done) = cycles.next().await {
            match done {
                Ok(d) => cycle_times.push(d),
                Err(e) => {
                    cycle_failures += 1;
                    first_cycle_failure.get_or_insert(e);
                }
            }
        }
    }
    let cycles_time = started.elapsed();
    let cycles_per_s = (cycle_times.len() as f64 / cycles_time.as_secs_f64()).round();
    let (y50, y99, ymax) = spread(&mut cycle_times);
    let live_after = server.until_live(0, ALL).await;
    let rss_end = server.rss();
    println!(
        "sockets/cycles: {cycles_per_s} connect+auth+subscribe+close cycles/s ({} done, \
         {cycle_failures} failed{} in {:.2} s; cycle p50 {y50} ms, p99 {y99} ms, max {ymax} ms)",
        cycle_times.len(),
        first_cycle_failure.as_ref().map(|f| format!(", first: {f}")).unwrap_or_default(),
        cycles_time.as_secs_f64(),
    );
    println!(
        "sockets/after_cycles: steward_resources_live{{kind=\"socket\"}} {}; RSS {} MiB",
        live_after.map_or_else(|| "unreadable".to_owned(), |v| v.to_string()),
        mib(rss_end)
    );

    // shutdown
    let warnings = server.warning_count();
    let started = Instant::now();
    let status = server.terminate().await;
    let exit = status.map_or_else(|| "still running after 60 s".to_owned(), |s| s.to_string());
    println!(
        "sockets/shutdown: SIGTERM -> {exit} in {:.2} s ({warnings} WARN/ERROR log lines during \
         the run)",
        started.elapsed().as_secs_f64()
    );

    let summary = json!({
        "bench": "sockets",
        "sockets": n,
        "updates": p.updates,
        "cycles": p.cycles,
        "concurrency": p.concurrency,
        "open_s": (open_time.as_secs_f64() * 100.0).round() / 100.0,
        "rss_before_mib": mib(rss_before),
        "rss_held_mib": mib(rss_held),
        "rss_per_socket_kib": per_socket_kib,
        "fanout_p50_ms": d50,
        "fanout_p99_ms": d99,
        "fanout_max_ms": dmax,
        "fanout_deliveries": deliveries.len(),
        "fanout_expected": expected,
        "fanout_last_p50_ms": l50,
        "fanout_last_p99_ms": l99,
        "fanout_last_max_ms": lmax,
        "held_failures": shared.failures.load(Ordering::Acquire),
        "rss_after_close_mib": mib(rss_closed),
        "cycles_per_s": cycles_per_s,
        "cycles_failed": cycle_failures,
        "cycle_p99_ms": y99,
        "live_after_cycles": live_after,
        "rss_end_mib": mib(rss_end),
        "exit": status.and_then(|s| s.code()),
        "smoke": p.smoke,
    });
    println!("{summary}");
}
