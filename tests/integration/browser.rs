//! Browser sessions (`steward.browser.v1.Browser`) end to end: the real binary spawning a real
//! headless Chromium (`/usr/bin/chromium`, Debian's `chromium`), driven by a real tonic client,
//! loading pages from a tiny HTTP server on loopback that each test runs itself.
//!
//! Chromium is observed from outside as well as through Steward: its own target list (asked
//! over Steward's connection, `GET /v1/browsers/{id}/targets`: a local Chromium speaks CDP on a
//! pipe and has no endpoint of its own), its process group and Steward's children in `/proc`, and its profile directories under a `TMPDIR` given
//! to Steward. What is checked is what the issue promises: a session leaves nothing in Chromium
//! when it closes; a crashed Chromium is noticed, reported and replaced, and reaped; a browser
//! stopped by an operator stays stopped; a connect that hangs is bounded and leaves nothing;
//! churn leaves no context, page, process, directory or memory behind; SIGTERM takes every
//! Chromium process with it; a full tenant waits in the queue, then is refused with advice;
//! captures run as jobs that WebSocket clients can follow.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use steward_proto::browser::v1 as pb;
use steward_proto::browser::v1::browser_client::BrowserClient;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tonic::Code;
use tonic::transport::Channel;

use crate::sockets::{authed, connect, next_json};
use crate::support::{Steward, WITHIN, eventually};

pub(crate) type Client = BrowserClient<Channel>;

// ---- a page server on loopback ---------------------------------------------------------------

/// The title of every page the [`PageServer`] serves.
const TITLE: &str = "Steward browser test";

/// An HTTP/1.1 server on `127.0.0.1:<free port>` answering every request with one small HTML
/// page (`/favicon.ico` with 404), one request per connection. Stops on drop.
pub(crate) struct PageServer {
    addr: SocketAddr,
    served: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl PageServer {
    // a test-side server, not resource code: its tasks belong to the test and go with it
    #[allow(clippy::disallowed_methods)]
    pub(crate) async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the page server");
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(AtomicUsize::new(0));
        let count = served.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let count = count.clone();
                tokio::spawn(async move {
                    if serve_one(stream).await.is_ok() {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        Self { addr, served, task }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_one(mut stream: TcpStream) -> std::io::Result<()> {
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || request.len() > 64 * 1024 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        request.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&request);
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let (status, body) = if path == "/favicon.ico" {
        ("404 Not Found", String::new())
    } else {
        (
            "200 OK",
            format!(
                "<!doctype html><html><head><title>{TITLE}</title></head>\
                 <body style=\"background:#fff\"><h1>hello from {path}</h1></body></html>"
            ),
        )
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// A loopback port nothing listens on (bound, then released).
async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

// ---- tenants and the gRPC client -------------------------------------------------------------

/// `PATCH /v1/tenants/{id}` with `body`; asserts 200.
async fn patch_tenant(s: &Steward, tenant: &str, body: Value) {
    let r = s
        .request(Method::PATCH, &format!("/v1/tenants/{tenant}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "PATCH {body}: {}", r.text().await.unwrap());
}

/// Creates tenant `id` with a token and sets its `browser_allow` list; the bearer string.
pub(crate) async fn browser_tenant(s: &Steward, id: &str, allow: &[&str]) -> String {
    let (_, token) = s.tenant_with_token(id, None).await;
    patch_tenant(s, id, json!({ "browser_allow": allow })).await;
    let got: Value =
        s.get(&format!("/v1/tenants/{id}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(got["browser_allow"], json!(allow), "{got}");
    token
}

pub(crate) async fn client(s: &Steward) -> Client {
    BrowserClient::connect(s.grpc.clone()).await.expect("grpc connect")
}

pub(crate) fn viewport(width: u32, height: u32) -> pb::CreateSessionRequest {
    pb::CreateSessionRequest {
        viewport: Some(pb::Viewport { width, height, device_scale_factor: 0.0 }),
        ..Default::default()
    }
}

pub(crate) async fn create(
    c: &mut Client,
    token: &str,
    req: pb::CreateSessionRequest,
) -> Result<pb::Session, tonic::Status> {
    c.create_session(authed(token, req)).await.map(tonic::Response::into_inner)
}

pub(crate) async fn create_ok(c: &mut Client, token: &str, width: u32, height: u32) -> pb::Session {
    create(c, token, viewport(width, height)).await.expect("CreateSession")
}

pub(crate) async fn navigate(
    c: &mut Client,
    token: &str,
    session: &str,
    url: &str,
) -> Result<pb::NavigateResponse, tonic::Status> {
    let req = pb::NavigateRequest {
        session_id: session.to_owned(),
        url: url.to_owned(),
        ..Default::default()
    };
    c.navigate(authed(token, req)).await.map(tonic::Response::into_inner)
}

pub(crate) async fn evaluate(
    c: &mut Client,
    token: &str,
    session: &str,
    expression: &str,
) -> Result<String, tonic::Status> {
    let req = pb::EvaluateRequest {
        session_id: session.to_owned(),
        expression: expression.to_owned(),
        ..Default::default()
    };
    c.evaluate(authed(token, req)).await.map(|r| r.into_inner().json)
}

pub(crate) async fn get_session(
    c: &mut Client,
    token: &str,
    session: &str,
) -> Result<pb::Session, tonic::Status> {
    let req = pb::GetSessionRequest { session_id: session.to_owned() };
    c.get_session(authed(token, req)).await.map(tonic::Response::into_inner)
}

pub(crate) async fn close(c: &mut Client, token: &str, session: &str) -> Result<(), tonic::Status> {
    let req = pb::CloseSessionRequest { session_id: session.to_owned() };
    c.close_session(authed(token, req)).await.map(|_| ())
}

/// Asserts `r` failed with `code` and a message containing `text`.
#[track_caller]
fn assert_status<T: std::fmt::Debug>(r: Result<T, tonic::Status>, code: Code, text: &str) {
    match r {
        Err(s) => assert!(
            s.code() == code && s.message().contains(text),
            "expected {code:?} containing {text:?}, got {:?}: {}",
            s.code(),
            s.message()
        ),
        Ok(v) => panic!("expected {code:?} containing {text:?}, got Ok({v:?})"),
    }
}

/// Width and height from a PNG's IHDR chunk (bytes 16..24, big-endian), after checking the
/// signature and that the first chunk is IHDR (PNG spec §5.2, §11.2.2).
fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(png.len() > 24, "{} bytes are no PNG", png.len());
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&png[12..16], b"IHDR", "the first chunk is IHDR");
    let be = |b: &[u8]| u32::from_be_bytes(b.try_into().unwrap());
    (be(&png[16..20]), be(&png[20..24]))
}

// ---- observing Steward -----------------------------------------------------------------------

/// `GET /v1/browsers` items.
pub(crate) async fn browsers(s: &Steward) -> Vec<Value> {
    let r = s.get("/v1/browsers").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    body["browsers"].as_array().cloned().expect("a `browsers` array")
}

/// Polls `f` every 10 ms until it answers `Some`, at most `within`.
async fn poll<T, F, Fut>(within: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The only browser, once it is `ready`.
pub(crate) async fn ready_browser(s: &Steward) -> Value {
    let found = poll(WITHIN, || async {
        let all = browsers(s).await;
        if all.len() == 1 && all[0]["state"] == "ready" { all.into_iter().next() } else { None }
    })
    .await;
    match found {
        Some(b) => b,
        None => panic!("no single ready browser: {:?}", browsers(s).await),
    }
}

pub(crate) fn pid_of(browser: &Value) -> i32 {
    i32::try_from(browser["pid"].as_u64().expect("a local browser has a pid")).unwrap()
}

/// The value of `series` (exact name and labels) on `/metrics`, if it is there.
async fn maybe_series(s: &Steward, series: &str) -> Option<f64> {
    let text = s.get("/metrics").send().await.unwrap().text().await.unwrap();
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series || name.strip_suffix("{}") == Some(series))
            .then(|| value.parse::<f64>().ok())?
    })
}

/// The value of `series` (exact name and labels) on `/metrics`; panics when it is missing, so
/// that a renamed metric cannot pass an `== 0` check.
pub(crate) async fn series(s: &Steward, series: &str) -> f64 {
    match maybe_series(s, series).await {
        Some(v) => v,
        None => {
            let text = s.get("/metrics").send().await.unwrap().text().await.unwrap();
            let ours: Vec<&str> =
                text.lines().filter(|l| l.starts_with("steward_browser")).collect();
            panic!("no series {series} on /metrics; browser series: {ours:#?}")
        }
    }
}

/// `steward_tracked_handles{type=…}`.
async fn tracked(s: &Steward, kind: &str) -> f64 {
    series(s, &format!("steward_tracked_handles{{type=\"{kind}\"}}")).await
}

// ---- observing processes in /proc ------------------------------------------------------------

/// State, parent and process group of `pid` (`/proc/<pid>/stat`: the fields after the
/// parenthesised command are `state ppid pgrp …`).
fn stat(pid: i32) -> Option<(char, i32, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, ppid, pgrp))
}

fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Live (non-zombie) processes of process group `pgid`.
pub(crate) fn group(pgid: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|p| stat(*p).is_some_and(|(state, _, pgrp)| pgrp == pgid && state != 'Z'))
        .collect()
}

/// Zombie children of `parent`.
fn zombies_of(parent: Pid) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|p| {
            stat(*p).is_some_and(|(state, ppid, _)| state == 'Z' && ppid == parent.as_raw())
        })
        .collect()
}

/// `VmRSS` of `pid`, bytes.
fn vm_rss(pid: Pid) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS");
    kib * 1024
}

/// The `steward-chromium-*` directories under `dir` (Steward's `TMPDIR` in these tests).
pub(crate) fn profile_dirs(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("steward-chromium-"))
        .collect()
}

// ---- Chromium's own view, through the admin API -----------------------------------------------

/// What a local Chromium itself lists, through `GET /v1/browsers/{id}/targets` (Steward's own
/// CDP connection: a local Chromium speaks CDP on a pipe and has no endpoint anyone else could
/// reach).
struct Cdp {
    get: Box<dyn Fn() -> reqwest::RequestBuilder + Send + Sync>,
}

impl Cdp {
    fn of(s: &Steward, browser: &Value) -> Self {
        let path = format!("/v1/browsers/{}/targets", browser["id"].as_str().unwrap());
        let (http, url) = (s.http.clone(), format!("{}{path}", s.admin));
        Self { get: Box::new(move || http.get(&url).bearer_auth(crate::support::TOKEN)) }
    }

    async fn view(&mut self) -> Value {
        let r = (self.get)().send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
        r.json().await.unwrap()
    }

    /// The non-default contexts (each session's).
    async fn contexts(&mut self) -> BTreeSet<String> {
        let v = self.view().await;
        v["contexts"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_owned()).collect()
    }

    /// `(targetId, type, browserContextId)` of every target.
    async fn targets(&mut self) -> Vec<(String, String, String)> {
        let v = self.view().await;
        v["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let s = |k: &str| t[k].as_str().unwrap_or_default().to_owned();
                (s("id"), s("type"), s("context"))
            })
            .collect()
    }

    /// Page targets.
    async fn pages(&mut self) -> Vec<(String, String, String)> {
        self.targets().await.into_iter().filter(|t| t.1 == "page").collect()
    }
}

// ---- the admin API's view -------------------------------------------------------------------

#[tokio::test]
async fn browsers_are_listed_for_the_admin_only_and_documented() {
    let s = Steward::start(&[]).await;
    let anonymous = s.http.get(format!("{}/v1/browsers", s.admin)).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let wrong = s.http.get(format!("{}/v1/browsers", s.admin)).bearer_auth("nope").send().await;
    assert_eq!(wrong.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert!(browsers(&s).await.is_empty(), "no browser before the first session");
    // the public listener does not serve it
    let public = s.http.get(format!("{}/v1/browsers", s.public)).send().await.unwrap();
    assert_ne!(public.status(), StatusCode::OK);

    let doc: Value =
        s.http.get(format!("{}/openapi.json", s.admin)).send().await.unwrap().json().await.unwrap();
    let op = &doc["paths"]["/v1/browsers"]["get"];
    assert!(op.is_object(), "GET /v1/browsers documented");
    assert!(op["security"].to_string().contains("admin_token"), "{op}");
    let schema = &doc["components"]["schemas"]["BrowserJson"]["properties"];
    for field in [
        "id",
        "origin",
        "tenant",
        "state",
        "pid",
        "endpoint",
        "contexts",
        "pages",
        "contexts_created",
        "processes",
        "rss_bytes",
        "started_at",
    ] {
        assert!(schema[field].is_object(), "BrowserJson.{field} documented: {schema}");
    }
    assert_eq!(series(&s, "steward_browser_sessions").await, 0.0);
    assert_eq!(series(&s, "steward_browser_launched_total").await, 0.0);
}

// ---- a. one session's whole life -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_navigates_captures_evaluates_and_closes_without_a_trace_in_chromium() {
    let pages = PageServer::start().await;
    let s = Steward::start(&[]).await;
    let token = browser_tenant(&s, "acme", &["127.0.0.1"]).await;
    let other = browser_tenant(&s, "globex", &["127.0.0.1"]).await;
    let mut c = client(&s).await;
    assert!(browsers(&s).await.is_empty(), "browsers start on demand");

    let session = create_ok(&mut c, &token, 800, 600).await;
    assert_eq!(session.pages.len(), 1, "{session:?}");
    let browser = ready_browser(&s).await;
    assert_eq!(browser["origin"], "local");
    assert_eq!(browser["tenant"], "acme", "a Chromium serves one tenant: {browser}");
    assert_eq!(browser["contexts"], 1, "{browser}");
    // the session's page is counted (the listing may trail the page's opening by a moment);
    // asserted at the end, so that a miscount does not hide the checks that follow
    let pages_counted =
        eventually(Duration::from_secs(3), || async { browsers(&s).await[0]["pages"] == 1 }).await;
    let listed_pages = browsers(&s).await[0]["pages"].clone();
    assert_eq!(browser["contexts_created"], 1, "{browser}");
    assert!(browser["processes"].as_u64().unwrap() >= 1, "{browser}");
    assert!(browser["rss_bytes"].as_u64().unwrap() > 0, "{browser}");
    assert!(browser["started_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{browser}");
    // Chromium's own process group: the leader is the pid Steward reports
    assert!(group(pid_of(&browser)).contains(&pid_of(&browser)), "{browser}");
    let id = browser["id"].as_str().unwrap();
    let resource: Value =
        s.get(&format!("/v1/resources/{id}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(resource["kind"], "browser", "{resource}");
    assert_eq!(resource["processes"], 1, "the tracked Chromium leader: {resource}");
    let labelled = |name: &str| format!("{name}{{browser=\"{id}\"}}");
    assert_eq!(series(&s, &labelled("steward_browser_contexts")).await, 1.0);
    let metric_pages = series(&s, &labelled("steward_browser_pages")).await;
    assert!(series(&s, &labelled("steward_browser_chromium_processes")).await >= 1.0);
    assert!(series(&s, &labelled("steward_browser_chromium_resident_memory_bytes")).await > 0.0);
    let ready = "steward_browser_browsers{state=\"ready\",origin=\"local\"}";
    assert_eq!(series(&s, ready).await, 1.0);
    assert_eq!(browser["endpoint"], "pipe", "a local Chromium has no DevTools endpoint");
    let mut cdp = Cdp::of(&s, &browser);
    let contexts = cdp.contexts().await;
    assert_eq!(contexts.len(), 1, "one session, one context: {contexts:?}");
    let context = contexts.first().unwrap().clone();
    let in_context: Vec<_> =
        cdp.pages().await.into_iter().filter(|p| p.2 == context).map(|p| p.0).collect();
    assert_eq!(in_context, session.pages, "the session's page is the context's only page");

    let url = pages.url("/hello");
    let nav = navigate(&mut c, &token, &session.id, &url).await.expect("Navigate");
    assert_eq!((nav.status, nav.title.as_str(), nav.url.as_str()), (200, TITLE, url.as_str()));
    assert!(pages.served.load(Ordering::Relaxed) >= 1);

    let shot = pb::ScreenshotRequest { session_id: session.id.clone(), ..Default::default() };
    let shot = c.screenshot(authed(&token, shot)).await.expect("Screenshot").into_inner();
    assert_eq!(shot.content_type, "image/png");
    assert!(shot.job_id.is_empty());
    assert_eq!(png_size(&shot.data), (800, 600), "the viewport asked for, at scale 1");

    let expr =
        "({ title: document.title, sum: 1 + 2, list: [1, 'two', null], nested: { ok: true } })";
    let got = evaluate(&mut c, &token, &session.id, expr).await.expect("Evaluate");
    let got: Value = serde_json::from_str(&got).unwrap_or_else(|e| panic!("{got:?}: {e}"));
    assert_eq!(
        got,
        json!({ "title": TITLE, "sum": 3, "list": [1, "two", null], "nested": { "ok": true } })
    );
    assert_eq!(evaluate(&mut c, &token, &session.id, "undefined").await.unwrap(), "null");

    // another tenant sees nothing of it, as if it did not exist
    assert_status(get_session(&mut c, &other, &session.id).await, Code::NotFound, "not_found");
    assert_status(evaluate(&mut c, &other, &session.id, "1").await, Code::NotFound, "not_found");
    assert_status(close(&mut c, &other, &session.id).await, Code::NotFound, "not_found");
    assert!(get_session(&mut c, &token, &session.id).await.is_ok(), "still there for its owner");

    close(&mut c, &token, &session.id).await.expect("CloseSession");
    // CloseSession returns once the context is disposed and verified gone
    let left = cdp.contexts().await;
    assert!(!left.contains(&context), "context {context} still listed: {left:?}");
    let stale: Vec<_> = cdp.targets().await.into_iter().filter(|t| t.2 == context).collect();
    assert!(stale.is_empty(), "targets of the closed context: {stale:?}");
    assert_status(get_session(&mut c, &token, &session.id).await, Code::NotFound, "not_found");
    assert!(s.resources("?kind=session").await.is_empty());
    let browser = ready_browser(&s).await;
    assert_eq!((browser["contexts"].as_u64(), browser["pages"].as_u64()), (Some(0), Some(0)));
    assert_eq!(series(&s, "steward_browser_sessions").await, 0.0);
    assert_eq!(series(&s, "steward_browser_sessions_closed_total{reason=\"client\"}").await, 1.0);
    assert_eq!(series(&s, "steward_browser_sessions_created_total").await, 1.0);
    assert!(pages_counted, "GET /v1/browsers counted {listed_pages} pages of a one-page session");
    assert_eq!(metric_pages, 1.0, "steward_browser_pages of a one-page session");
}

// ---- a. refusals -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_urls_bad_options_and_unreachable_pages_get_the_documented_codes() {
    let pages = PageServer::start().await;
    let s = Steward::start(&[]).await;
    let allowed = browser_tenant(&s, "acme", &["127.0.0.1"]).await;
    let (_, plain) = s.tenant_with_token("globex", None).await;
    let mut c = client(&s).await;

    // options are checked before anything starts
    for (req, field) in [
        (viewport(100_000, 600), "viewport.width"),
        (viewport(800, 100_000), "viewport.height"),
        (
            pb::CreateSessionRequest {
                viewport: Some(pb::Viewport { width: 800, height: 600, device_scale_factor: 9.0 }),
                ..Default::default()
            },
            "viewport.device_scale_factor",
        ),
        (
            pb::CreateSessionRequest {
                viewport: Some(pb::Viewport {
                    width: 800,
                    height: 600,
                    device_scale_factor: f64::NAN,
                }),
                ..Default::default()
            },
            "viewport.device_scale_factor",
        ),
    ] {
        assert_status(create(&mut c, &allowed, req).await, Code::InvalidArgument, field);
    }
    assert!(browsers(&s).await.is_empty(), "a refused request starts no browser");
    assert!(s.resources("?kind=session").await.is_empty());

    // loopback without the allow-list
    let mine = create_ok(&mut c, &plain, 640, 480).await;
    assert_status(
        navigate(&mut c, &plain, &mine.id, &pages.url("/")).await,
        Code::PermissionDenied,
        "url_not_allowed",
    );
    for url in ["http://localhost/", "http://[::1]/", "http://169.254.169.254/latest/meta-data/"] {
        assert_status(navigate(&mut c, &plain, &mine.id, url).await, Code::PermissionDenied, "");
    }
    // schemes other than http(s), data: and about:blank, whatever the allow-list
    let theirs = create_ok(&mut c, &allowed, 640, 480).await;
    for url in ["file:///etc/passwd", "chrome://version", "view-source:http://127.0.0.1/"] {
        for (token, id) in [(&plain, &mine.id), (&allowed, &theirs.id)] {
            assert_status(
                navigate(&mut c, token, id, url).await,
                Code::PermissionDenied,
                "url_not_allowed",
            );
        }
    }
    // nothing was loaded: the page is still blank
    let here = evaluate(&mut c, &allowed, &theirs.id, "location.href").await.unwrap();
    assert_eq!(here, "\"about:blank\"");
    assert_eq!(pages.served.load(Ordering::Relaxed), 0, "no refused URL reached the server");
    assert!(series(&s, "steward_browser_urls_refused_total").await >= 10.0);

    // allowed, but nothing listens there: Chromium's own error text
    let port = closed_port().await;
    assert_status(
        navigate(&mut c, &allowed, &theirs.id, &format!("http://127.0.0.1:{port}/")).await,
        Code::Unavailable,
        "net::ERR_CONNECTION_REFUSED",
    );
    // and the session still works afterwards
    let nav = navigate(&mut c, &allowed, &theirs.id, &pages.url("/after")).await.expect("Navigate");
    assert_eq!(nav.status, 200);

    // unknown ids
    assert_status(get_session(&mut c, &allowed, "0123456789abcdef").await, Code::NotFound, "");
    assert_status(get_session(&mut c, &allowed, "not-an-id").await, Code::NotFound, "");
    assert_status(get_session(&mut c, &allowed, "").await, Code::InvalidArgument, "session_id");

    for (token, id) in [(&plain, &mine.id), (&allowed, &theirs.id)] {
        close(&mut c, token, id).await.expect("CloseSession");
    }
    assert!(s.resources("?kind=session").await.is_empty());
}

// ---- b. Chromium killed from outside ---------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_chromium_fails_its_sessions_is_relaunched_and_reaped() {
    let pages = PageServer::start().await;
    let s = Steward::start(&[]).await;
    let token = browser_tenant(&s, "acme", &["127.0.0.1"]).await;
    let mut c = client(&s).await;
    let session = create_ok(&mut c, &token, 640, 480).await;
    navigate(&mut c, &token, &session.id, &pages.url("/")).await.expect("Navigate");
    let before = ready_browser(&s).await;
    let (old_pid, id) = (pid_of(&before), before["id"].as_str().unwrap().to_owned());
    assert!(!group(old_pid).is_empty());

    kill(Pid::from_raw(old_pid), Signal::SIGKILL).expect("kill -9 chromium");

    // the session's next call fails, and says why
    let failure = poll(WITHIN, || {
        let mut c = c.clone();
        let (token, id) = (&token, &session.id);
        async move { evaluate(&mut c, token, id, "1 + 1").await.err() }
    })
    .await
    .expect("the session kept answering after its Chromium was killed");
    let next = evaluate(&mut c, &token, &session.id, "1 + 1").await.expect_err("still failing");
    eprintln!(
        "after kill -9: first failed call {:?}: {}; the call after it {:?}: {}",
        failure.code(),
        failure.message(),
        next.code(),
        next.message()
    );

    // a new Chromium comes up by itself (same resource, relaunched by its supervisor)
    let relaunched = poll(WITHIN, || async {
        browsers(&s)
            .await
            .into_iter()
            .find(|b| b["state"] == "ready" && b["pid"].as_u64() != Some(old_pid as u64))
    })
    .await;
    let Some(relaunched) = relaunched else { panic!("no new browser: {:?}", browsers(&s).await) };
    assert_eq!(relaunched["id"], id.as_str(), "the same resource, restarted: {relaunched}");
    assert_eq!(series(&s, "steward_browser_disconnects_total").await, 1.0);
    assert_eq!(series(&s, "steward_browser_relaunched_total").await, 1.0);
    assert!(
        series(&s, "steward_browser_sessions_closed_total{reason=\"browser_unavailable\"}").await
            >= 1.0
    );
    assert!(s.resources("?kind=session").await.is_empty(), "the lost session is gone");

    // new sessions work
    let fresh = create_ok(&mut c, &token, 640, 480).await;
    let nav = navigate(&mut c, &token, &fresh.id, &pages.url("/again")).await.expect("Navigate");
    assert_eq!(nav.status, 200);
    close(&mut c, &token, &fresh.id).await.unwrap();

    // the killed Chromium's whole group is gone, and Steward reaped what was its child
    assert!(
        eventually(WITHIN, || async { group(old_pid).is_empty() }).await,
        "processes of the killed group left: {:?}",
        group(old_pid)
    );
    assert!(
        eventually(WITHIN, || async { zombies_of(s.pid()).is_empty() }).await,
        "zombie children of steward: {:?}",
        zombies_of(s.pid())
    );
    // checked last so that a wrong code does not hide the checks above: the session's next call
    // says its browser went away, and so does the one after it
    assert_status::<()>(Err(failure), Code::Unavailable, "browser_unavailable");
    assert_status::<()>(Err(next), Code::Unavailable, "browser_unavailable");
}

// ---- c. an operator stops a browser ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_stopped_through_the_admin_api_is_not_relaunched() {
    let tmp = tempfile::tempdir().unwrap();
    let tmpdir = tmp.path().display().to_string();
    let s = Steward::start(&[("TMPDIR", &tmpdir)]).await;
    let token = browser_tenant(&s, "acme", &["127.0.0.1"]).await;
    let mut c = client(&s).await;
    let session = create_ok(&mut c, &token, 640, 480).await;
    let browser = ready_browser(&s).await;
    let (pid, id) = (pid_of(&browser), browser["id"].as_str().unwrap().to_owned());
    assert_eq!(profile_dirs(tmp.path()).len(), 1);
    let listed = s.resources("?kind=browser").await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], id.as_str());

    let r = s.request(Method::DELETE, &format!("/v1/resources/{id}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{}", r.text().await.unwrap());

    let gone = eventually(WITHIN, || async {
        browsers(&s).await.is_empty() && s.resources("?kind=browser").await.is_empty()
    })
    .await;
    assert!(gone, "still listed: {:?}", browsers(&s).await);
    // …and stays gone: nothing relaunches it (the window is the supervisor's first backoffs)
    let window = Instant::now() + Duration::from_secs(3);
    while Instant::now() < window {
        assert!(browsers(&s).await.is_empty(), "relaunched: {:?}", browsers(&s).await);
        assert!(s.resources("?kind=browser").await.is_empty());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(group(pid).is_empty(), "chromium processes left: {:?}", group(pid));
    assert!(stat(pid).is_none(), "chromium {pid} still exists: {:?}", stat(pid));
    assert!(profile_dirs(tmp.path()).is_empty(), "{:?}", profile_dirs(tmp.path()));
    assert_eq!(series(&s, "steward_browser_relaunched_total").await, 0.0);
    // its session went with it
    assert!(get_session(&mut c, &token, &session.id).await.is_err());
    assert!(s.resources("?kind=session").await.is_empty());

    // the pool is not stuck: the next session starts a new browser on demand
    let next = create_ok(&mut c, &token, 640, 480).await;
    let fresh = ready_browser(&s).await;
    assert_ne!(fresh["id"], id.as_str(), "a new resource, not a relaunch");
    close(&mut c, &token, &next.id).await.unwrap();
}

// ---- d. a remote endpoint that never answers -------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_to_an_endpoint_that_never_answers_fails_in_time_and_leaves_nothing() {
    // accepts and never writes a byte: the WebSocket handshake hangs
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();

    let s = Steward::start(&[("STEWARD__BROWSER__CONNECT_TIMEOUT", "1s")]).await;
    let endpoint = format!("ws://127.0.0.1:{port}/devtools/browser/x");
    let r = s.create_tenant(json!({ "id": "remote", "browser_endpoint": endpoint })).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap());
    let r = s
        .request(Method::POST, "/v1/tenants/remote/tokens")
        .json(&json!({ "name": "ci" }))
        .send()
        .await
        .unwrap();
    let token = r.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
    let mut c = client(&s).await;
    // the baseline, once the services' own tasks and timers have settled
    let (tasks, timers) = (tracked(&s, "task").await, tracked(&s, "timer").await);

    let call = async {
        let started = Instant::now();
        let r = create(&mut c, &token, viewport(640, 480)).await;
        (r, started.elapsed())
    };
    // the endpoint takes Steward's connection and keeps it, saying nothing
    let ((r, took), accepted) = tokio::join!(call, tokio::time::timeout(WITHIN, silent.accept()));
    let status = r.expect_err("a connect to a silent endpoint cannot succeed");
    eprintln!(
        "CreateSession to a silent endpoint: {:?} after {took:?}: {}",
        status.code(),
        status.message()
    );
    let named = status.code() == Code::DeadlineExceeded && status.message().contains("connect");
    assert!(
        named || status.code() == Code::Unavailable,
        "{:?}: {}",
        status.code(),
        status.message()
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "failed after {took:?}; connect_timeout is 1s"
    );
    // Steward did try, and hung up when its deadline passed
    let (mut held, _) = accepted.expect("steward connected to the endpoint").unwrap();
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(WITHIN, async {
        loop {
            match held.read(&mut byte).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // its handshake request
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "steward kept the connection to the silent endpoint open");

    let clean = eventually(WITHIN, || async {
        s.resources("?kind=browser").await.is_empty()
            && browsers(&s).await.is_empty()
            && s.resources("?kind=session").await.is_empty()
            && tracked(&s, "task").await <= tasks
            && tracked(&s, "timer").await <= timers
    })
    .await;
    assert!(
        clean,
        "left behind: browsers {:?}, sessions {:?}, tasks {} timers {} (baseline {tasks} {timers})",
        s.resources("?kind=browser").await,
        s.resources("?kind=session").await,
        tracked(&s, "task").await,
        tracked(&s, "timer").await,
    );
    assert_eq!(series(&s, "steward_orphaned_handles").await, 0.0);
    assert_eq!(series(&s, "steward_browser_launch_failures_total").await, 1.0);
    assert_eq!(series(&s, "steward_browser_cdp_timeouts_total{op=\"connect\"}").await, 1.0);
    assert_eq!(
        series(&s, "steward_tenant_quota_reserved{tenant=\"remote\",quota=\"sessions\"}").await,
        0.0,
        "the session's quota slot is released"
    );
}

// ---- e. churn --------------------------------------------------------------------------------

/// One session's whole life: create, navigate, close.
async fn cycle(c: &Client, token: &str, url: &str) {
    let mut c = c.clone();
    let session = create_ok(&mut c, token, 400, 300).await;
    let nav = navigate(&mut c, token, &session.id, url).await.expect("Navigate");
    assert_eq!(nav.status, 200);
    close(&mut c, token, &session.id).await.expect("CloseSession");
}

async fn cycles(c: &Client, token: &str, url: &str, n: usize, concurrency: usize) {
    futures_util::stream::iter(0..n)
        .for_each_concurrent(concurrency, |_| cycle(c, token, url))
        .await;
}

/// What is left in Chromium, in Steward and on disk, for the churn's comparisons.
#[derive(Debug)]
struct Leftovers {
    contexts: usize,
    pages: usize,
    processes: usize,
    dirs: BTreeSet<String>,
    rss: u64,
    tasks: f64,
    timers: f64,
}

async fn leftovers(s: &Steward, cdp: &mut Cdp, pgid: i32, tmp: &Path) -> Leftovers {
    Leftovers {
        contexts: cdp.contexts().await.len(),
        pages: cdp.pages().await.len(),
        processes: group(pgid).len(),
        dirs: profile_dirs(tmp),
        rss: vm_rss(s.pid()),
        tasks: tracked(s, "task").await,
        timers: tracked(s, "timer").await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_of_1000_sessions_leaves_nothing_behind() {
    let _cpu = crate::support::exclusive().await;
    const WARM: usize = 20;
    const CYCLES: usize = 1000;
    const PARALLEL: usize = 4;
    let pages = PageServer::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let tmpdir = tmp.path().display().to_string();
    // one browser and no recycling, so that before and after compare the same Chromium
    let s = Steward::start(&[
        ("TMPDIR", &tmpdir),
        ("STEWARD__BROWSER__BROWSERS", "1"),
        ("STEWARD__BROWSER__RECYCLE_AFTER_CONTEXTS", "0"),
    ])
    .await;
    let token = browser_tenant(&s, "acme", &["127.0.0.1"]).await;
    patch_tenant(&s, "acme", json!({ "quotas": { "sessions": 10, "session_rate": 100_000 } }))
        .await;
    let c = client(&s).await;
    let url = pages.url("/churn");

    // warm up: Chromium's helper processes, Steward's allocator pools, the store's connections
    cycles(&c, &token, &url, WARM, PARALLEL).await;
    let browser = ready_browser(&s).await;
    let pid = pid_of(&browser);
    let cdp = tokio::sync::Mutex::new(Cdp::of(&s, &browser));
    assert!(eventually(WITHIN, || async { s.resources("?kind=session").await.is_empty() }).await);
    let base = leftovers(&s, &mut *cdp.lock().await, pid, tmp.path()).await;
    assert_eq!(base.contexts, 0, "no session, no context: {base:?}");
    assert_eq!(base.dirs.len(), 1, "the live browser's directory only: {base:?}");

    let started = Instant::now();
    cycles(&c, &token, &url, CYCLES, PARALLEL).await;
    let took = started.elapsed();

    assert!(s.resources("?kind=session").await.is_empty(), "the registry holds no session");
    assert_eq!(series(&s, "steward_browser_sessions").await, 0.0);
    let total = (WARM + CYCLES) as f64;
    assert_eq!(series(&s, "steward_browser_sessions_created_total").await, total);
    assert_eq!(series(&s, "steward_browser_sessions_closed_total{reason=\"client\"}").await, total);
    let same = ready_browser(&s).await;
    assert_eq!(pid_of(&same), pid, "the same Chromium throughout");
    assert_eq!((same["contexts"].as_u64(), same["pages"].as_u64()), (Some(0), Some(0)));
    assert_eq!(series(&s, "steward_browser_disconnects_total").await, 0.0);
    assert_eq!(series(&s, "steward_browser_launched_total").await, 1.0);

    // Chromium's renderer processes of closed contexts exit asynchronously after their last page
    // closed, and it keeps a spare renderer warm and starts utility processes (network, storage,
    // audio) as it sees fit; so allow it a couple of helpers beyond the warm baseline. A leak of
    // one renderer per session would be hundreds.
    const HELPER_SLACK: usize = 2;
    let settled = eventually(WITHIN, || async {
        let now = leftovers(&s, &mut *cdp.lock().await, pid, tmp.path()).await;
        now.contexts <= base.contexts
            && now.pages <= base.pages
            && now.processes <= base.processes + HELPER_SLACK
            && now.dirs == base.dirs
            && now.tasks <= base.tasks
            && now.timers <= base.timers
    })
    .await;
    let after = leftovers(&s, &mut *cdp.lock().await, pid, tmp.path()).await;
    let reconciled = series(&s, "steward_browser_reconciled_total").await;
    let grown = after.rss.saturating_sub(base.rss);
    eprintln!(
        "{CYCLES} browser sessions in {took:?} ({:.1}/s): contexts {} -> {}, \
         page targets {} -> {}, chromium processes {} -> {}, profile dirs {} -> {}, \
         tracked tasks {} -> {}, timers {} -> {}, steward VmRSS {} KiB -> {} KiB (grew {} KiB), \
         chromium RSS {} KiB, reconciled {reconciled}",
        CYCLES as f64 / took.as_secs_f64(),
        base.contexts,
        after.contexts,
        base.pages,
        after.pages,
        base.processes,
        after.processes,
        base.dirs.len(),
        after.dirs.len(),
        base.tasks,
        after.tasks,
        base.timers,
        after.timers,
        base.rss / 1024,
        after.rss / 1024,
        grown / 1024,
        browsers(&s).await[0]["rss_bytes"].as_u64().unwrap_or(0) / 1024,
    );
    assert!(settled, "not back to the warm baseline: {base:?} then {after:?}");
    assert!(grown < 10 * 1024 * 1024, "steward's RSS grew by {grown} bytes over {CYCLES} sessions");
}

// ---- f. SIGTERM ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_live_sessions_closes_them_takes_chromium_down_and_exits_0() {
    let pages = PageServer::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let tmpdir = tmp.path().display().to_string();
    let mut s = Steward::start(&[("TMPDIR", &tmpdir)]).await;
    let token = browser_tenant(&s, "acme", &["127.0.0.1"]).await;
    let mut c = client(&s).await;
    for i in 0..3 {
        let session = create_ok(&mut c, &token, 640, 480).await;
        let nav = navigate(&mut c, &token, &session.id, &pages.url(&format!("/{i}"))).await;
        assert_eq!(nav.expect("Navigate").status, 200);
    }
    assert_eq!(s.resources("?kind=session").await.len(), 3);
    let pids: Vec<i32> = browsers(&s).await.iter().map(pid_of).collect();
    assert!(!pids.is_empty());
    let processes: Vec<i32> = pids.iter().flat_map(|p| group(*p)).collect();
    assert!(processes.len() > pids.len(), "chromium runs helpers: {processes:?}");
    assert_eq!(profile_dirs(tmp.path()).len(), pids.len());

    s.signal(Signal::SIGTERM);
    let exit = s.wait_exit(Duration::from_secs(40)).await.expect("exited within the grace");
    assert!(exit.success(), "exit status {exit:?}; log:\n{}", s.dump());

    let report = s.find_message("shutdown complete").expect("a shutdown report");
    assert_eq!(report["forced"], 0, "every resource closed in time: {report}");
    // the sessions closed in their phase, then the browsers in theirs
    let phases: Vec<Value> = s
        .dump()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            v["message"] == "shutdown phase done" || v["message"] == "shutdown phase forced"
        })
        .collect();
    let closed_in = |phase: &str| {
        phases
            .iter()
            .find(|v| v["phase"] == phase)
            .map(|v| (v["closed"].clone(), v["message"].clone()))
    };
    assert_eq!(closed_in("sessions"), Some((json!(3), json!("shutdown phase done"))), "{phases:?}");
    assert_eq!(
        closed_in("browsers"),
        Some((json!(pids.len()), json!("shutdown phase done"))),
        "{phases:?}"
    );
    for pid in &processes {
        assert!(
            stat(*pid).is_none_or(|(state, _, _)| state == 'Z'),
            "chromium process {pid} outlived steward: {:?}",
            stat(*pid)
        );
    }
    for pgid in &pids {
        assert!(group(*pgid).is_empty(), "group {pgid} left: {:?}", group(*pgid));
    }
    assert!(profile_dirs(tmp.path()).is_empty(), "{:?}", profile_dirs(tmp.path()));
}

// ---- g. the wait queue -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_tenant_waits_in_the_queue_and_gets_the_slot_when_it_frees() {
    let s = Steward::start(&[]).await;
    let token = browser_tenant(&s, "acme", &["127.0.0.1"]).await;
    patch_tenant(&s, "acme", json!({ "quotas": { "sessions": 1 } })).await;
    let mut c = client(&s).await;
    let first = create_ok(&mut c, &token, 640, 480).await;

    let mut waiter = c.clone();
    let waiting = create(&mut waiter, &token, viewport(640, 480));
    // while it waits, the first session closes
    let release = async {
        let queued = eventually(WITHIN, || async {
            maybe_series(&s, "steward_browser_queue_waiting{tenant=\"acme\"}").await == Some(1.0)
        })
        .await;
        assert!(queued, "the second CreateSession is not waiting");
        assert_eq!(s.resources("?kind=session").await.len(), 1, "it waits without a session");
        close(&mut c, &token, &first.id).await.unwrap();
    };
    let (second, ()) = tokio::time::timeout(WITHIN, async { tokio::join!(waiting, release) })
        .await
        .expect("the waiting call got the freed slot in time");
    let second = second.expect("CreateSession after waiting");
    assert_ne!(second.id, first.id);
    assert!(get_session(&mut c, &token, &second.id).await.is_ok());
    // nobody waits any more: the tenant's series is gone
    let waiting = maybe_series(&s, "steward_browser_queue_waiting{tenant=\"acme\"}").await;
    assert_eq!(waiting, None);
    assert_eq!(series(&s, "steward_browser_queue_wait_seconds_count").await, 1.0);
    close(&mut c, &token, &second.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_past_queue_timeout_is_resource_exhausted_with_retry_after() {
    let s = Steward::start(&[("STEWARD__BROWSER__QUEUE_TIMEOUT", "1s")]).await;
    let token = browser_tenant(&s, "acme", &["127.0.0.1"]).await;
    patch_tenant(&s, "acme", json!({ "quotas": { "sessions": 1 } })).await;
    let mut c = client(&s).await;
    let first = create_ok(&mut c, &token, 640, 480).await;

    let started = Instant::now();
    let refused = create(&mut c, &token, viewport(640, 480)).await.expect_err("over quota");
    let took = started.elapsed();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{}", refused.message());
    assert!(refused.message().contains("queue_timeout"), "{}", refused.message());
    let retry: u64 = refused
        .metadata()
        .get("retry-after")
        .expect("a retry-after entry")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1, "retry-after {retry}");
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_secs(5),
        "refused after {took:?}; queue_timeout is 1s"
    );
    assert_eq!(
        series(&s, "steward_browser_queue_refused_total{reason=\"queue_timeout\"}").await,
        1.0
    );
    // the first session is untouched, and nothing was started for the refused one
    assert!(get_session(&mut c, &token, &first.id).await.is_ok());
    assert_eq!(s.resources("?kind=session").await.len(), 1);
    close(&mut c, &token, &first.id).await.unwrap();
    assert!(s.resources("?kind=session").await.is_empty());
}

// ---- h. a screenshot as a job ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_screenshot_as_a_job_is_followed_over_websocket_and_taken_once() {
    let pages = PageServer::start().await;
    let s = Steward::start(&[]).await;
    let token = browser_tenant(&s, "acme", &["127.0.0.1"]).await;
    let mut c = client(&s).await;
    let session = create_ok(&mut c, &token, 640, 480).await;
    navigate(&mut c, &token, &session.id, &pages.url("/job")).await.expect("Navigate");
    let mut ws = connect(&s, &token).await;

    let req = pb::ScreenshotRequest {
        session_id: session.id.clone(),
        as_job: true,
        ..Default::default()
    };
    let submitted = c.screenshot(authed(&token, req)).await.expect("Screenshot").into_inner();
    assert!(!submitted.job_id.is_empty(), "{submitted:?}");
    assert!(submitted.data.is_empty(), "the bytes wait for TakeJobResult");

    // the job may have finished before the subscription: its snapshot then is the last word
    crate::sockets::send(&mut ws, json!({ "type": "subscribe", "job": submitted.job_id })).await;
    let subscribed = next_json(&mut ws).await;
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    assert_eq!(subscribed["snapshot"]["kind"], "browser.screenshot", "{subscribed}");
    let mut last = subscribed["snapshot"].clone();
    while !["completed", "failed", "cancelled"].contains(&last["status"].as_str().unwrap()) {
        let update = next_json(&mut ws).await;
        assert_eq!(
            (update["type"].as_str(), update["job"].as_str()),
            (Some("job"), Some(&*submitted.job_id))
        );
        last = update;
    }
    assert_eq!(last["status"], "completed", "{last}");
    let data: Value = match &last["data"] {
        Value::String(text) => serde_json::from_str(text).unwrap(),
        other => other.clone(),
    };
    assert_eq!(data["content_type"], "image/png", "{last}");
    assert_eq!(data["session_id"], session.id.as_str(), "{last}");

    let take = pb::TakeJobResultRequest {
        session_id: session.id.clone(),
        job_id: submitted.job_id.clone(),
    };
    let result = c.take_job_result(authed(&token, take.clone())).await.expect("TakeJobResult");
    let result = result.into_inner();
    assert_eq!(
        (result.content_type.as_str(), result.job_id.as_str()),
        ("image/png", &*submitted.job_id)
    );
    assert_eq!(png_size(&result.data), (640, 480));
    assert_eq!(data["bytes"].as_u64(), Some(result.data.len() as u64), "{last}");
    // once
    assert_status(c.take_job_result(authed(&token, take)).await, Code::NotFound, "not_found");
    close(&mut c, &token, &session.id).await.unwrap();
}

// ---- tenant deletion ---------------------------------------------------------------------------

#[tokio::test]
async fn deleting_a_tenant_closes_all_its_sessions_and_their_contexts() {
    let s = Steward::start(&[]).await;
    let token = browser_tenant(&s, "acme", &["127.0.0.1"]).await;
    let other = browser_tenant(&s, "umbrella", &[]).await;
    let mut c = client(&s).await;
    for _ in 0..3 {
        create_ok(&mut c, &token, 640, 480).await;
    }
    let kept = create_ok(&mut c, &other, 640, 480).await;
    let listed = browsers(&s).await;
    let of = |tenant: &str| listed.iter().find(|b| b["tenant"] == tenant).cloned().unwrap();
    let (acme, umbrella) = (of("acme"), of("umbrella"));
    let mut acme_cdp = Cdp::of(&s, &acme);
    let mut umbrella_cdp = Cdp::of(&s, &umbrella);
    assert_eq!(acme_cdp.contexts().await.len(), 3);
    assert_eq!(umbrella_cdp.contexts().await.len(), 1);

    let r = s.request(Method::DELETE, "/v1/tenants/acme").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());

    // its three sessions are gone, and so is its Chromium (the tenant's own); the other
    // tenant's session and Chromium are untouched
    let closed =
        eventually(WITHIN, || async { s.resources("?kind=session").await.len() == 1 }).await;
    assert!(closed, "{:?}", s.resources("?kind=session").await);
    let gone = eventually(WITHIN, || async {
        browsers(&s).await.iter().all(|b| b["tenant"] != "acme") && group(pid_of(&acme)).is_empty()
    })
    .await;
    assert!(gone, "acme's Chromium outlived acme: {:?}", browsers(&s).await);
    assert_eq!(umbrella_cdp.contexts().await.len(), 1);
    assert_eq!(get_session(&mut c, &other, &kept.id).await.unwrap().id, kept.id);
    close(&mut c, &other, &kept.id).await.unwrap();
    assert!(umbrella_cdp.contexts().await.is_empty());
}

// ---- Steward killed ------------------------------------------------------------------------------

#[tokio::test]
async fn chromium_dies_with_a_killed_steward() {
    let mut s = Steward::start(&[]).await;
    let token = browser_tenant(&s, "acme", &[]).await;
    let mut c = client(&s).await;
    create_ok(&mut c, &token, 640, 480).await;
    let pid = pid_of(&ready_browser(&s).await);
    assert!(!group(pid).is_empty());
    // no graceful path at all: the parent-death signal is what takes Chromium down
    s.signal(Signal::SIGKILL);
    s.wait_exit(WITHIN).await.expect("steward exited");
    let gone = eventually(WITHIN, || async { group(pid).is_empty() }).await;
    assert!(gone, "chromium processes outlived steward: {:?}", group(pid));
}

#[tokio::test]
async fn the_next_steward_removes_the_profile_a_killed_one_left() {
    let tmp = tempfile::tempdir().unwrap();
    let tmpdir = tmp.path().display().to_string();
    let mut s = Steward::start(&[("TMPDIR", &tmpdir)]).await;
    let token = browser_tenant(&s, "acme", &[]).await;
    let mut c = client(&s).await;
    create_ok(&mut c, &token, 640, 480).await;
    let pid = pid_of(&ready_browser(&s).await);
    assert_eq!(profile_dirs(tmp.path()).len(), 1);
    s.signal(Signal::SIGKILL);
    s.wait_exit(WITHIN).await.expect("steward exited");
    assert!(eventually(WITHIN, || async { group(pid).is_empty() }).await);
    // nothing could clean up after a SIGKILL…
    assert_eq!(profile_dirs(tmp.path()).len(), 1);
    // …so the next Steward does, at start
    let _next = Steward::start(&[("TMPDIR", &tmpdir)]).await;
    assert!(profile_dirs(tmp.path()).is_empty(), "{:?}", profile_dirs(tmp.path()));
}
