//! Benchmark of browser sessions (`steward.browser.v1.Browser`) on the real `steward` binary and
//! the Chromium it runs.
//!
//! Starts the `steward` of the profile being built (release under `cargo bench`) as a child
//! process on loopback ports with a fresh SQLite store and one local browser, the tenant's
//! own (`[browser] browsers = 1`, `isolation` its default `tenant`; `executable` is its default,
//! `chromium` on `PATH`, unless `STEWARD__BROWSER__EXECUTABLE` says otherwise; sandboxed, CDP on
//! a pipe, an egress proxy per session). Through the admin API it creates tenant
//! `bench` and a token, allows `127.0.0.1` (`browser_allow`) and raises the `sessions` and
//! `session_rate` quotas. A small HTTP server inside the bench serves a fixed ~10 KB HTML page on
//! loopback (`Cache-Control: no-store`, so every navigation fetches it). Clients share the
//! machine with Steward and Chromium. It prints:
//!
//! 0. `first_session`: the first `CreateSession`, which launches Chromium.
//! 1. `memory`: sessions per GiB. With no session open, the resident memory of Chromium's
//!    process group (the processes whose process group is the browser's pid, from
//!    `GET /v1/browsers`): the sum of their `VmRSS`, and of their PSS (`smaps_rollup`); and
//!    Steward's RSS. Then `BENCH_SESSIONS` (default 20) sessions, each with its page on the local
//!    page, 2 s to settle, and the same again: the growth per session and 1024 MiB / that, by
//!    PSS and by the `VmRSS` sum. The `VmRSS` sum counts the pages Chromium's processes share
//!    (its binary, shared memory) once per process, so it overstates what a session costs; PSS
//!    divides each shared page among its processes. Then the sessions are closed and what is
//!    left is shown.
//! 2. `create`: `BENCH_CREATES` (default 50) `CreateSession` → `CloseSession` loops, one at a
//!    time: `CreateSession` p50/p95/max (the close is not counted).
//! 3. `cycle`: `BENCH_CYCLES` (default 30) create + navigate (local page) + screenshot (PNG) +
//!    close, one at a time: p50/p95/max of the whole cycle.
//! 4. `overhead`: navigate + screenshot (PNG) of the local page through Steward (gRPC, one
//!    session, its egress proxy in the path) against plain chromiumoxide doing the same on a
//!    Chromium of its own (the same executable in the same headless mode with a DevTools port
//!    and no proxy, started by the bench: Steward's speaks CDP on a pipe and has no port; its
//!    own browser context and page, the same 1280×720 viewport): `BENCH_ROUNDS` (default 10)
//!    rounds of `BENCH_OPS` (default 10) operations per side, the sides interleaved (which goes
//!    first alternates by round). Median per operation on each side (and of navigate and
//!    screenshot alone), the ratio Steward / plain (target ≤ 1.15 with the egress proxy in the
//!    path, issue 14). The two sides do not do quite the same work: Steward's `Navigate` also
//!    checks the final URL against the URL policy and evaluates the status and the title in the
//!    page (two CDP round trips plain `goto` does not make), and chromiumoxide's `screenshot`
//!    first activates the page's target (one Steward does not make).
//!
//! Then the load average over the run, SIGTERM and the server's exit status and WARN/ERROR lines,
//! a table of the figures, and one JSON line (`{"bench":"browser",…}`). It asserts that the setup
//! worked (server, tenant, token, quotas, the first session, the page loaded with status 200);
//! a failing call in a measurement panics with its status. Without a runnable Chromium it prints
//! why and exits 0.
//!
//! Run with `cargo bench -p steward-server --bench browser`. Without `--bench` among its
//! arguments (`cargo test --benches`) it is a smoke run (3 sessions, 5 creates, 3 cycles, 2
//! rounds of 3) unless the variables say otherwise. `BENCH_LOG=<file>` copies the server's log.
#![allow(missing_docs, clippy::print_stdout, clippy::print_stderr)]

mod support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chromiumoxide::Page;
use chromiumoxide::cdp::browser_protocol::browser::BrowserContextId;
use chromiumoxide::cdp::browser_protocol::emulation::SetDeviceMetricsOverrideParams;
use chromiumoxide::cdp::browser_protocol::page::{CaptureScreenshotFormat, NavigateParams};
use chromiumoxide::cdp::browser_protocol::target::{
    CreateBrowserContextParams, CreateTargetParams,
};
use chromiumoxide::handler::HandlerConfig;
use chromiumoxide::page::ScreenshotParams;
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use steward_proto::browser::v1 as pb;
use steward_proto::browser::v1::browser_client::BrowserClient;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::support::{Bearer, Server, connect, loadavg, mib, ms, percentile, round2};

/// The viewport of every page, Steward's and plain chromiumoxide's.
const WIDTH: u32 = 1280;
/// See [`WIDTH`].
const HEIGHT: u32 = 720;
/// The title of the local page.
const TITLE: &str = "Steward bench page";
/// Deadline of one call or one setup step.
const STEP: Duration = Duration::from_secs(60);
/// Time left for Chromium's processes to start or exit before memory is read.
const SETTLE: Duration = Duration::from_secs(2);
/// The PNG signature.
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n";

/// The run's parameters.
#[derive(Debug, Clone, Copy)]
struct Params {
    /// Sessions held open for the memory figure.
    sessions: usize,
    /// CreateSession → CloseSession loops.
    creates: usize,
    /// create + navigate + screenshot + close cycles.
    cycles: usize,
    /// Interleaved rounds of the overhead comparison.
    rounds: usize,
    /// navigate + screenshot operations per side and round.
    ops: usize,
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
            sessions: var("BENCH_SESSIONS", 20, 3).clamp(1, 100),
            creates: var("BENCH_CREATES", 50, 5).max(1),
            cycles: var("BENCH_CYCLES", 30, 3).max(1),
            rounds: var("BENCH_ROUNDS", 10, 2).max(1),
            ops: var("BENCH_OPS", 10, 3).max(1),
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

// ---- the local page ---------------------------------------------------------------------------

/// A fixed HTML page of about 10 KB: a title, a style sheet, a heading and paragraphs.
fn page_html() -> String {
    let mut html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{TITLE}</title>\n\
         <style>body{{font:16px/1.5 sans-serif;margin:2em;color:#222}}h1{{color:#0b5394}}\
         p:nth-child(odd){{background:#f3f6fa}}</style></head><body>\n<h1>{TITLE}</h1>\n"
    );
    let mut i = 0;
    while html.len() < 10_000 {
        i += 1;
        html.push_str(&format!(
            "<p id=\"p{i}\">Paragraph {i}. Steward hosts headless browsers, message consumers \
             and WebSockets for many tenants, and releases every one of them.</p>\n"
        ));
    }
    html.push_str("</body></html>\n");
    html
}

/// Serves `page` at `/page.html` (404 elsewhere) on a loopback port: its URL, a count of the
/// page's requests, and the server's task (it stops when that is dropped).
async fn page_server(page: String) -> (String, Arc<AtomicU64>, JoinSet<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the page server");
    let addr = listener.local_addr().expect("page server address");
    let hits = Arc::new(AtomicU64::new(0));
    let counter = hits.clone();
    let page: Arc<[u8]> = page.into_bytes().into();
    let mut task = JoinSet::new();
    task.spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            while connections.try_join_next().is_some() {}
            connections.spawn(serve_connection(stream, page.clone(), counter.clone()));
        }
    });
    (format!("http://{addr}/page.html"), hits, task)
}

/// Answers the GET requests of one keep-alive connection until the client closes it.
async fn serve_connection(mut stream: TcpStream, page: Arc<[u8]>, hits: Arc<AtomicU64>) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        // one request: its head ends with an empty line (GETs have no body)
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let path = head.split_whitespace().nth(1).unwrap_or("");
        let found = path == "/page.html";
        let (status, body): (&str, &[u8]) =
            if found { ("200 OK", &page) } else { ("404 Not Found", b"") };
        if found {
            hits.fetch_add(1, Ordering::Relaxed);
        }
        let header = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\n\r\n",
            body.len()
        );
        if stream.write_all(header.as_bytes()).await.is_err()
            || stream.write_all(body).await.is_err()
        {
            return;
        }
    }
}

// ---- the gRPC client --------------------------------------------------------------------------

type Client = BrowserClient<InterceptedService<Channel, Bearer>>;

async fn client(url: &str, token: &str) -> Client {
    let (channel, bearer) = connect(url, token).await;
    BrowserClient::with_interceptor(channel, bearer).max_decoding_message_size(16 * 1024 * 1024)
}

/// A `CreateSession` with the bench's viewport; the session id and the call's time.
async fn create(client: &mut Client) -> (String, Duration) {
    let request = pb::CreateSessionRequest {
        viewport: Some(pb::Viewport { width: WIDTH, height: HEIGHT, device_scale_factor: 1.0 }),
        ..Default::default()
    };
    let started = Instant::now();
    let session = call("CreateSession", client.create_session(request)).await;
    (session.id, started.elapsed())
}

async fn close(client: &mut Client, id: &str) {
    let request = pb::CloseSessionRequest { session_id: id.to_owned() };
    call("CloseSession", client.close_session(request)).await;
}

async fn navigate(client: &mut Client, id: &str, url: &str) -> pb::NavigateResponse {
    let request = pb::NavigateRequest {
        session_id: id.to_owned(),
        url: url.to_owned(),
        ..Default::default()
    };
    call("Navigate", client.navigate(request)).await
}

async fn screenshot(client: &mut Client, id: &str) -> usize {
    let request = pb::ScreenshotRequest {
        session_id: id.to_owned(),
        format: pb::ImageFormat::Png.into(),
        ..Default::default()
    };
    let shot = call("Screenshot", client.screenshot(request)).await;
    assert!(shot.data.starts_with(PNG), "Screenshot did not answer a PNG");
    shot.data.len()
}

/// The answer of a call, within [`STEP`]; panics naming the call otherwise.
async fn call<T>(
    what: &str,
    fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> T {
    match tokio::time::timeout(STEP, fut).await {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(status)) => panic!("{what}: {:?} {}", status.code(), status.message()),
        Err(_) => panic!("{what}: no answer within {STEP:?}"),
    }
}

// ---- Chromium ---------------------------------------------------------------------------------

/// The local browser of `GET /v1/browsers` once it is ready: its pid (also its process group)
/// and its endpoint (`pipe`).
async fn local_browser(server: &Server) -> (u32, String) {
    let deadline = Instant::now() + STEP;
    loop {
        let r = server.admin_request(reqwest::Method::GET, "/v1/browsers").send().await;
        let body: Value = match r {
            Ok(r) if r.status().is_success() => r.json().await.unwrap_or(Value::Null),
            _ => Value::Null,
        };
        // an array, or an object holding one
        let list = body
            .as_array()
            .or_else(|| body["browsers"].as_array())
            .or_else(|| body["items"].as_array())
            .cloned()
            .unwrap_or_default();
        let ready = list.iter().find(|b| {
            b["state"].as_str().is_none_or(|s| s == "ready")
                && b["origin"].as_str().is_none_or(|o| o == "local")
        });
        if let Some(b) = ready
            && let (Some(pid), Some(endpoint)) = (b["pid"].as_u64(), b["endpoint"].as_str())
        {
            return (u32::try_from(pid).expect("pid fits u32"), endpoint.to_owned());
        }
        assert!(
            Instant::now() < deadline,
            "GET /v1/browsers lists no ready local browser with a pid and an endpoint: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The processes of a process group and their memory.
#[derive(Debug, Clone, Copy, Default)]
struct GroupMemory {
    processes: usize,
    /// Sum of `VmRSS`, bytes.
    rss: u64,
    /// Sum of `Pss` (`smaps_rollup`), bytes.
    pss: u64,
}

/// The processes whose process group is `pgid` (`/proc/<pid>/stat`) and their memory
/// (`/proc/<pid>/status` `VmRSS`, `/proc/<pid>/smaps_rollup` `Pss`).
fn group_memory(pgid: u32) -> GroupMemory {
    let kib = |text: &str, key: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |k| k * 1024)
    };
    let mut out = GroupMemory::default();
    let Ok(dir) = std::fs::read_dir("/proc") else { return out };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // the fields after the parenthesised command: state ppid pgrp …
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { continue };
        if rest.split_whitespace().nth(2).and_then(|g| g.parse::<u32>().ok()) != Some(pgid) {
            continue;
        }
        out.processes += 1;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        out.rss += kib(&status, "VmRSS:");
        let rollup =
            std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        out.pss += kib(&rollup, "Pss:");
    }
    out
}

/// Chromium's executable as Steward will run it, when it answers `--version`; else why not.
fn chromium() -> Result<String, String> {
    let exe = std::env::var("STEWARD__BROWSER__EXECUTABLE").unwrap_or_else(|_| "chromium".into());
    #[allow(clippy::disallowed_methods)] // asks the bench machine's Chromium its version
    match Command::new(&exe).arg("--version").output() {
        Ok(out) if out.status.success() => {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        }
        Ok(out) => Err(format!("`{exe} --version` failed: {}", out.status)),
        Err(e) => Err(format!("no runnable `{exe}` ({e}); apt-get install chromium")),
    }
}

// ---- the phases -------------------------------------------------------------------------------

/// p50/p95/max of `values` in milliseconds, sorting them.
fn p50_p95(values: &mut [Duration]) -> (f64, f64, f64) {
    values.sort_unstable();
    let max = values.last().copied().unwrap_or_default();
    (ms(percentile(values, 0.5)), ms(percentile(values, 0.95)), ms(max))
}

fn median(values: &mut [Duration]) -> f64 {
    values.sort_unstable();
    ms(percentile(values, 0.5))
}

/// Memory: the growth per session with `p.sessions` sessions open, each on the local page.
async fn memory_phase(p: Params, server: &Server, client: &Client, url: &str, pgid: u32) -> Value {
    tokio::time::sleep(SETTLE).await;
    let (before, steward_before) = (group_memory(pgid), server.rss());
    let mut ids = Vec::with_capacity(p.sessions);
    for _ in 0..p.sessions {
        let mut c = client.clone();
        let (id, _) = create(&mut c).await;
        navigate(&mut c, &id, url).await;
        ids.push(id);
    }
    tokio::time::sleep(SETTLE).await;
    let (open, steward_open) = (group_memory(pgid), server.rss());
    for id in &ids {
        close(&mut client.clone(), id).await;
    }
    tokio::time::sleep(SETTLE).await;
    let (closed, steward_closed) = (group_memory(pgid), server.rss());

    let n = p.sessions as f64;
    let per = |after: u64, before: u64| after.saturating_sub(before) as f64 / n;
    let chromium_rss = per(open.rss, before.rss);
    let chromium_pss = per(open.pss, before.pss);
    let steward = per(steward_open, steward_before);
    let total = chromium_rss + steward;
    let per_gib =
        |bytes: f64| if bytes > 0.0 { (1024.0 * 1024.0 * 1024.0 / bytes).floor() } else { 0.0 };
    let mib_f = |bytes: f64| round2(bytes / (1024.0 * 1024.0));
    println!(
        "browser/memory: {} sessions on the local page: Chromium {} processes, RSS {} -> {} MiB \
         (PSS {} -> {} MiB), Steward RSS {} -> {} MiB; per session {} MiB of Chromium RSS \
         ({} MiB PSS) + {} MiB of Steward = {} MiB -> {} sessions per GiB ({} by PSS); after \
         closing them: {} processes, RSS {} MiB, PSS {} MiB, Steward {} MiB",
        p.sessions,
        format_args!("{} -> {}", before.processes, open.processes),
        mib(before.rss),
        mib(open.rss),
        mib(before.pss),
        mib(open.pss),
        mib(steward_before),
        mib(steward_open),
        mib_f(chromium_rss),
        mib_f(chromium_pss),
        mib_f(steward),
        mib_f(total),
        per_gib(total),
        per_gib(chromium_pss + steward),
        closed.processes,
        mib(closed.rss),
        mib(closed.pss),
        mib(steward_closed),
    );
    json!({
        "memory_sessions": p.sessions,
        "chromium_processes_before": before.processes,
        "chromium_processes_open": open.processes,
        "chromium_processes_closed": closed.processes,
        "chromium_rss_before_mib": mib(before.rss),
        "chromium_rss_open_mib": mib(open.rss),
        "chromium_rss_closed_mib": mib(closed.rss),
        "chromium_pss_before_mib": mib(before.pss),
        "chromium_pss_open_mib": mib(open.pss),
        "steward_rss_before_mib": mib(steward_before),
        "steward_rss_open_mib": mib(steward_open),
        "steward_rss_closed_mib": mib(steward_closed),
        "per_session_chromium_rss_mib": mib_f(chromium_rss),
        "per_session_chromium_pss_mib": mib_f(chromium_pss),
        "per_session_steward_mib": mib_f(steward),
        "per_session_mib": mib_f(total),
        "per_session_pss_mib": mib_f(chromium_pss + steward),
        "sessions_per_gib": per_gib(total),
        "sessions_per_gib_pss": per_gib(chromium_pss + steward),
    })
}

/// `CreateSession` → `CloseSession`, `p.creates` times; the creations' times.
async fn create_phase(p: Params, client: &Client) -> Vec<Duration> {
    let mut c = client.clone();
    let mut times = Vec::with_capacity(p.creates);
    for _ in 0..p.creates {
        let (id, took) = create(&mut c).await;
        times.push(took);
        close(&mut c, &id).await;
    }
    times
}

/// create + navigate + screenshot + close, `p.cycles` times; the cycles' times.
async fn cycle_phase(p: Params, client: &Client, url: &str) -> Vec<Duration> {
    let mut c = client.clone();
    let mut times = Vec::with_capacity(p.cycles);
    for _ in 0..p.cycles {
        let started = Instant::now();
        let (id, _) = create(&mut c).await;
        navigate(&mut c, &id, url).await;
        screenshot(&mut c, &id).await;
        close(&mut c, &id).await;
        times.push(started.elapsed());
    }
    times
}

/// The times of one side's operations: navigate, screenshot, both.
#[derive(Default)]
struct Ops {
    navigate: Vec<Duration>,
    screenshot: Vec<Duration>,
    total: Vec<Duration>,
    png_bytes: usize,
}

impl Ops {
    fn push(&mut self, navigate: Duration, screenshot: Duration, png: usize) {
        self.navigate.push(navigate);
        self.screenshot.push(screenshot);
        self.total.push(navigate + screenshot);
        self.png_bytes = png;
    }
}

/// A Chromium for plain chromiumoxide: the executable Steward runs, headless, with a DevTools
/// port (its sandbox off as root, where Chromium has none); killed with the bench.
struct PlainChromium {
    endpoint: String,
    _process: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl PlainChromium {
    async fn start() -> Self {
        use tokio::io::AsyncBufReadExt as _;
        let exe =
            std::env::var("STEWARD__BROWSER__EXECUTABLE").unwrap_or_else(|_| "chromium".into());
        let dir = tempfile::tempdir().expect("a profile directory");
        let mut cmd = tokio::process::Command::new(&exe);
        cmd.args([
            "--headless=new",
            "--remote-debugging-port=0",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
        ])
        .arg(format!("--user-data-dir={}", dir.path().display()))
        .arg("about:blank")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
        if nix::unistd::geteuid().is_root() {
            cmd.arg("--no-sandbox");
        }
        #[allow(clippy::disallowed_methods)] // the bench's own Chromium, killed on drop
        let mut process = cmd.spawn().expect("spawn chromium for the plain side");
        let mut lines = tokio::io::BufReader::new(process.stderr.take().expect("stderr")).lines();
        let endpoint = tokio::time::timeout(STEP, async {
            loop {
                let line = lines.next_line().await.ok().flatten().expect("chromium's endpoint");
                if let Some(url) = line.trim().strip_prefix("DevTools listening on ") {
                    return url.trim().to_owned();
                }
            }
        })
        .await
        .expect("chromium's endpoint within a minute");
        Self { endpoint, _process: process, _dir: dir }
    }
}

/// Plain chromiumoxide on a Chromium of its own: its connection, context and page.
struct Plain {
    browser: chromiumoxide::Browser,
    context: BrowserContextId,
    page: Page,
    /// Polls chromiumoxide's handler.
    handler: JoinSet<()>,
    _chromium: PlainChromium,
}

impl Plain {
    async fn open() -> Self {
        let chromium = PlainChromium::start().await;
        let endpoint = chromium.endpoint.as_str();
        // no viewport in the handler's config: with its default (800×600) chromiumoxide would
        // also apply that emulation to every page it attaches to, Steward's sessions included
        let config = HandlerConfig { viewport: None, ..HandlerConfig::default() };
        let (browser, mut handler) = tokio::time::timeout(
            STEP,
            chromiumoxide::Browser::connect_with_config(endpoint, config),
        )
        .await
        .expect("chromiumoxide connect within a minute")
        .expect("chromiumoxide connects to its Chromium");
        let mut task = JoinSet::new();
        task.spawn(async move {
            while let Some(event) = handler.next().await {
                if let Err(e) = event {
                    eprintln!("browser: the plain chromiumoxide handler failed: {e}");
                    break;
                }
            }
        });
        let context = browser
            .create_browser_context(CreateBrowserContextParams::default())
            .await
            .expect("Target.createBrowserContext");
        let target = CreateTargetParams::builder()
            .url("about:blank")
            .browser_context_id(context.clone())
            .build()
            .expect("CreateTargetParams");
        let page = browser.new_page(target).await.expect("a plain page");
        let metrics =
            SetDeviceMetricsOverrideParams::new(i64::from(WIDTH), i64::from(HEIGHT), 1.0, false);
        page.execute(metrics).await.expect("Emulation.setDeviceMetricsOverride");
        Self { browser, context, page, handler: task, _chromium: chromium }
    }

    /// `goto` + `screenshot` (PNG): the two times and the PNG's size.
    async fn op(&self, url: &str) -> (Duration, Duration, usize) {
        let t0 = Instant::now();
        tokio::time::timeout(STEP, self.page.goto(NavigateParams::new(url)))
            .await
            .expect("plain goto within a minute")
            .expect("plain goto");
        let t1 = Instant::now();
        let params = ScreenshotParams::builder().format(CaptureScreenshotFormat::Png).build();
        let png = tokio::time::timeout(STEP, self.page.screenshot(params))
            .await
            .expect("plain screenshot within a minute")
            .expect("plain screenshot");
        let t2 = Instant::now();
        assert!(png.starts_with(PNG), "the plain screenshot is not a PNG");
        (t1 - t0, t2 - t1, png.len())
    }

    async fn close(self) {
        let _ = self.page.close().await;
        let _ = self.browser.dispose_browser_context(self.context).await;
        drop(self.browser);
        drop(self.handler);
    }
}

/// Steward's navigate + screenshot on one session against plain chromiumoxide's on its own
/// page, interleaved by rounds.
async fn overhead_phase(p: Params, client: &Client, url: &str) -> (Ops, Ops) {
    let mut c = client.clone();
    let (id, _) = create(&mut c).await;
    let plain = Plain::open().await;
    let steward_op = |mut c: Client, id: String| async move {
        let t0 = Instant::now();
        navigate(&mut c, &id, url).await;
        let t1 = Instant::now();
        let png = screenshot(&mut c, &id).await;
        (t1 - t0, t1.elapsed(), png)
    };
    // warm-up, not counted: 2 operations each
    for _ in 0..2 {
        steward_op(c.clone(), id.clone()).await;
        plain.op(url).await;
    }
    let (mut steward, mut direct) = (Ops::default(), Ops::default());
    for round in 0..p.rounds {
        for side in [round % 2, 1 - round % 2] {
            for _ in 0..p.ops {
                if side == 0 {
                    let (n, s, png) = steward_op(c.clone(), id.clone()).await;
                    steward.push(n, s, png);
                } else {
                    let (n, s, png) = plain.op(url).await;
                    direct.push(n, s, png);
                }
            }
        }
    }
    plain.close().await;
    close(&mut c, &id).await;
    (steward, direct)
}

// ---- the run ----------------------------------------------------------------------------------

#[allow(clippy::too_many_lines)] // one linear script: setup, four measurements, shutdown, table
async fn run(p: Params) {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let version = match chromium() {
        Ok(v) => v,
        Err(why) => {
            println!("browser: skipped: {why}");
            return;
        }
    };
    let mut load = vec![("start", loadavg())];
    println!(
        "browser: {version}; {} sessions held, {} creates, {} cycles, {} rounds of {} operations \
         per side; viewport {WIDTH}x{HEIGHT}; {cores} cores, load average {}; clients, Steward \
         and Chromium on the same machine{}",
        p.sessions,
        p.creates,
        p.cycles,
        p.rounds,
        p.ops,
        load[0].1,
        if p.smoke { " (smoke run: no --bench argument)" } else { "" },
    );

    // setup: the page, the server with one local browser, the tenant
    let page = page_html();
    let page_bytes = page.len();
    let (url, hits, _page_server) = page_server(page).await;
    let env = [("STEWARD__BROWSER__BROWSERS", "1".to_owned())];
    let mut server = Server::start(&env, std::env::var("BENCH_LOG").ok()).await;
    let quotas = json!({"sessions": 100, "session_rate": 100_000});
    let token = server.tenant_token(quotas.clone()).await;
    let tenant =
        server.patch_tenant(&json!({"browser_allow": ["127.0.0.1"], "quotas": quotas})).await;
    assert_eq!(tenant["browser_allow"], json!(["127.0.0.1"]), "browser_allow not set: {tenant}");
    let client = client(&server.grpc, &token).await;

    // 0. the first session launches Chromium; the page loads with its title and status
    let mut c = client.clone();
    let (first_id, first) = create(&mut c).await;
    let loaded = navigate(&mut c, &first_id, &url).await;
    assert_eq!(
        (loaded.status, loaded.title.as_str()),
        (200, TITLE),
        "the local page did not load: {loaded:?}"
    );
    let png = screenshot(&mut c, &first_id).await;
    close(&mut c, &first_id).await;
    let (pgid, endpoint) = local_browser(&server).await;
    println!(
        "browser/first_session: CreateSession {} ms (launches Chromium, pid {pgid}, {endpoint}); \
         page {url} ({page_bytes} bytes) loaded: status {}, title {:?}; screenshot {png} bytes",
        ms(first),
        loaded.status,
        loaded.title,
    );

    // 1. memory
    load.push(("memory", loadavg()));
    let memory = memory_phase(p, &server, &client, &url, pgid).await;

    // 2. session create
    load.push(("create", loadavg()));
    let mut creates = create_phase(p, &client).await;
    let (c50, c95, cmax) = p50_p95(&mut creates);
    println!(
        "browser/create: CreateSession p50 {c50} ms, p95 {c95} ms, max {cmax} ms over {} \
         CreateSession -> CloseSession loops (the close not counted)",
        creates.len()
    );

    // 3. create + navigate + screenshot + close
    load.push(("cycle", loadavg()));
    let mut cycles = cycle_phase(p, &client, &url).await;
    let (y50, y95, ymax) = p50_p95(&mut cycles);
    println!(
        "browser/cycle: create + navigate + screenshot (PNG) + close p50 {y50} ms, p95 {y95} ms, \
         max {ymax} ms over {} cycles",
        cycles.len()
    );

    // 4. overhead against plain chromiumoxide on a Chromium of its own
    load.push(("overhead", loadavg()));
    let (mut steward, mut direct) = overhead_phase(p, &client, &url).await;
    let (s_total, d_total) = (median(&mut steward.total), median(&mut direct.total));
    let (s_nav, d_nav) = (median(&mut steward.navigate), median(&mut direct.navigate));
    let (s_shot, d_shot) = (median(&mut steward.screenshot), median(&mut direct.screenshot));
    let ratio = round2(s_total / d_total.max(1e-9));
    let (s_p95, d_p95) =
        (ms(percentile(&steward.total, 0.95)), ms(percentile(&direct.total, 0.95)));
    println!(
        "browser/overhead: navigate + screenshot median {s_total} ms through Steward (gRPC) vs \
         {d_total} ms plain chromiumoxide = {ratio}x (target <= 1.15); navigate {s_nav} vs \
         {d_nav} ms, screenshot {s_shot} vs {d_shot} ms; p95 {s_p95} vs {d_p95} ms; {} \
         operations per side in {} interleaved rounds; PNG {} vs {} bytes",
        steward.total.len(),
        p.rounds,
        steward.png_bytes,
        direct.png_bytes,
    );
    load.push(("end", loadavg()));

    // shutdown
    let warnings = server.warnings();
    let started = Instant::now();
    let status = server.terminate().await;
    let exit = status.map_or_else(|| "still running after 60 s".to_owned(), |s| s.to_string());
    println!(
        "browser/shutdown: SIGTERM -> {exit} in {:.2} s ({warnings}); the page was served {} \
         times",
        started.elapsed().as_secs_f64(),
        hits.load(Ordering::Relaxed),
    );
    let loads: Vec<String> = load.iter().map(|(at, l)| format!("{at} {l}")).collect();
    println!("browser/load: load average (1 5 15 min) at {}", loads.join("; "));

    // the table
    let row = |what: &str, a: String, b: String, n: String| {
        println!("  {what:<68} {a:>12} {b:>12} {n:>6}");
    };
    println!();
    println!("browser sessions, {version}, {cores} cores");
    row("", "p50 / median".into(), "p95".into(), "n".into());
    row(
        "first CreateSession (launches Chromium)",
        format!("{} ms", ms(first)),
        "".into(),
        "1".into(),
    );
    row("CreateSession", format!("{c50} ms"), format!("{c95} ms"), creates.len().to_string());
    row(
        "create + navigate + screenshot + close",
        format!("{y50} ms"),
        format!("{y95} ms"),
        cycles.len().to_string(),
    );
    row(
        "navigate + screenshot, Steward over gRPC",
        format!("{s_total} ms"),
        format!("{s_p95} ms"),
        steward.total.len().to_string(),
    );
    row(
        "navigate + screenshot, plain chromiumoxide",
        format!("{d_total} ms"),
        format!("{d_p95} ms"),
        direct.total.len().to_string(),
    );
    row("  ratio Steward / plain (target <= 1.15)", format!("{ratio}x"), "".into(), "".into());
    row(
        "memory per session: Chromium PSS + Steward RSS",
        format!("{} MiB", memory["per_session_pss_mib"]),
        "".into(),
        p.sessions.to_string(),
    );
    row(
        "  sessions per GiB (by PSS)",
        memory["sessions_per_gib_pss"].to_string(),
        "".into(),
        "".into(),
    );
    row(
        "memory per session: Chromium VmRSS sum + Steward RSS",
        format!("{} MiB", memory["per_session_mib"]),
        "".into(),
        p.sessions.to_string(),
    );
    row(
        "  sessions per GiB (by VmRSS sum: shared pages counted per process)",
        memory["sessions_per_gib"].to_string(),
        "".into(),
        "".into(),
    );
    println!("  load average during the run: {}", loads.join("; "));
    println!();

    let mut summary = json!({
        "bench": "browser",
        "chromium": version,
        "cores": cores,
        "load": load.iter().map(|(at, l)| json!({"at": at, "loadavg": l})).collect::<Vec<_>>(),
        "first_create_ms": ms(first),
        "create_p50_ms": c50,
        "create_p95_ms": c95,
        "create_max_ms": cmax,
        "creates": creates.len(),
        "cycle_p50_ms": y50,
        "cycle_p95_ms": y95,
        "cycle_max_ms": ymax,
        "cycles": cycles.len(),
        "steward_op_median_ms": s_total,
        "plain_op_median_ms": d_total,
        "steward_navigate_median_ms": s_nav,
        "plain_navigate_median_ms": d_nav,
        "steward_screenshot_median_ms": s_shot,
        "plain_screenshot_median_ms": d_shot,
        "overhead_ratio": ratio,
        "overhead_ops_per_side": steward.total.len(),
        "exit": status.and_then(|s| s.code()),
        "smoke": p.smoke,
    });
    if let (Some(summary), Some(memory)) = (summary.as_object_mut(), memory.as_object()) {
        summary.extend(memory.clone());
    }
    println!("{summary}");
}
