//! Interop with a real browser: Debian's Chromium, driven over CDP (chromiumoxide), opens the
//! example page `examples/rtc.html` twice in one room of the real binary: page A publishes
//! Chromium's fake camera, page B publishes nothing and decodes A's frames (its `getStats()`),
//! A's data-channel message reaches B, a webrtc-rs client in the same room receives A's RTP, and
//! when the pages and the browser are gone, so are their peers.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chromiumoxide::{Browser, Page};
use futures_util::StreamExt as _;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::browser::group;
use crate::rtc::{rtc_env, rtc_url};
use crate::rtc_client::RtcClient;
use crate::sockets::metric;
use crate::support::{Steward, WITHIN, eventually, exclusive};

/// The example page, served as it is in the repository.
const RTC_HTML: &str = include_str!("../../examples/rtc.html");
/// How long page B has to decode more than 10 of page A's frames.
const FRAMES_WITHIN: Duration = Duration::from_secs(30);
const CHROMIUM: &str = "/usr/bin/chromium";

/// An HTTP/1.1 server on `127.0.0.1:<free port>` serving `/rtc.html` (everything else: 404), one
/// request per connection. Stops on drop.
struct ExampleServer {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl ExampleServer {
    // a test-side server, not resource code: its tasks belong to the test and go with it
    #[allow(clippy::disallowed_methods)]
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the page server");
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let _ = serve_one(stream).await;
                });
            }
        });
        Self { port, task }
    }

    /// `http://localhost:<port>/rtc.html?<query>`: localhost, so that the page is a secure
    /// origin and may call getUserMedia.
    fn page(&self, query: &[(&str, &str)]) -> String {
        let base = format!("http://localhost:{}/rtc.html", self.port);
        reqwest::Url::parse_with_params(&base, query).unwrap().to_string()
    }
}

impl Drop for ExampleServer {
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
    let head = String::from_utf8_lossy(&request);
    let mut words = head.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or("/"));
    let path = target.split('?').next().unwrap_or("/");
    let (status, body) = match (method, path) {
        ("GET", "/rtc.html") => ("200 OK", RTC_HTML),
        _ => ("404 Not Found", ""),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Chromium with a DevTools port and a CDP connection to it, in a process group of its own with
/// a temporary profile: the whole group is killed on drop.
struct Chromium {
    browser: Browser,
    process: tokio::process::Child,
    pgid: Pid,
    stderr: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    profile: tempfile::TempDir,
}

impl Chromium {
    // the test's own browser: its process group is killed and reaped by the test (and on drop),
    // and its CDP and stderr tasks are aborted with it
    #[allow(clippy::disallowed_methods)]
    async fn start() -> Self {
        let profile = tempfile::tempdir().unwrap();
        let mut cmd = tokio::process::Command::new(CHROMIUM);
        cmd.args([
            "--headless=new",
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            "--allow-loopback-in-peer-connection",
            "--no-sandbox", // the tests run as root, where Chromium has no sandbox
            "--remote-debugging-port=0",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-crash-reporter",
            "--disable-breakpad",
            "--autoplay-policy=no-user-gesture-required",
            "--mute-audio",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .env(MARK, profile.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
        let mut process = cmd.spawn().expect("start /usr/bin/chromium (scripts/test installs it)");
        let pgid = Pid::from_raw(process.id().expect("chromium's pid") as i32);
        let mut lines = tokio::io::BufReader::new(process.stderr.take().unwrap()).lines();
        let endpoint = tokio::time::timeout(WITHIN, async {
            loop {
                let line = lines.next_line().await.unwrap().expect("chromium printed its endpoint");
                if let Some(url) = line.trim().strip_prefix("DevTools listening on ") {
                    break url.trim().to_owned();
                }
            }
        })
        .await
        .expect("chromium's DevTools endpoint");
        // keep reading stderr: a full pipe would stall Chromium; the last lines help a failure
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr.clone();
        let drain = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let mut sink = sink.lock().unwrap();
                if sink.len() >= 200 {
                    sink.remove(0);
                }
                sink.push(line);
            }
        });
        let (browser, mut handler) = Browser::connect(endpoint).await.expect("CDP connect");
        let cdp = tokio::spawn(async move { while handler.next().await.is_some() {} });
        Self { browser, process, pgid, stderr, tasks: vec![drain, cdp], profile }
    }

    async fn open(&self, url: &str) -> Page {
        self.browser.new_page(url).await.unwrap_or_else(|e| panic!("open {url}: {e}"))
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Closes the browser (CDP `Browser.close`), then kills what is left of its process group
    /// and reaps Chromium; returns the processes still alive after that, of its group or
    /// marked with its profile (none, or a leak).
    async fn stop(mut self) -> Vec<i32> {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.browser.close()).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.process.wait()).await;
        let _ = killpg(self.pgid, Signal::SIGKILL);
        let _ = tokio::time::timeout(WITHIN, self.process.wait()).await;
        let (pgid, profile) = (self.pgid.as_raw(), self.profile.path().to_owned());
        let left = || {
            let mut left = group(pgid);
            for pid in marked(&profile.display().to_string()) {
                if !left.contains(&pid) {
                    left.push(pid);
                }
            }
            left
        };
        eventually(WITHIN, || std::future::ready(left().is_empty())).await;
        left()
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        let _ = killpg(self.pgid, Signal::SIGKILL);
        for pid in marked(&self.profile.path().display().to_string()) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// The environment variable every process of the test's Chromium inherits (the crashpad
/// handlers too, which leave its process group), with its profile directory as the value.
const MARK: &str = "STEWARD_TEST_CHROMIUM";

/// Live processes whose environment holds `MARK=<mark>`.
fn marked(mark: &str) -> Vec<i32> {
    let entry = format!("{MARK}={mark}");
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            environ.split(|b| *b == 0).any(|v| v == entry.as_bytes())
        })
        .collect()
}

/// `window.stats()` of the example page.
async fn stats(page: &Page) -> Value {
    match page.evaluate_expression("window.stats()").await {
        Ok(r) => r.into_value().unwrap_or(Value::Null),
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    }
}

/// Polls `page`'s stats every 200 ms until `cond` holds (returns them) or `within` passes.
async fn wait_stats(page: &Page, within: Duration, cond: impl Fn(&Value) -> bool) -> (bool, Value) {
    let deadline = Instant::now() + within;
    loop {
        let st = stats(page).await;
        if cond(&st) {
            return (true, st);
        }
        if Instant::now() >= deadline {
            return (false, st);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What a failed step shows: both pages' stats and logs, Steward's RTC and warning lines, and
/// Chromium's last stderr lines.
async fn report(s: &Steward, chromium: &Chromium, pages: &[(&str, &Page)]) -> String {
    let mut out = String::new();
    for (name, page) in pages {
        let mut st = stats(page).await;
        let log = st.get_mut("log").map(Value::take).unwrap_or_default();
        // the log shows every message already
        st.as_object_mut().map(|o| o.remove("messages"));
        let lines: Vec<&str> =
            log.as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        out += &format!("--- page {name}: {st}\n{}\n", lines.join("\n"));
    }
    let steward: Vec<String> = s
        .dump()
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("rtc"))
        .map(|l| l.chars().take(600).collect())
        .collect();
    out += &format!(
        "--- steward\n{}\n--- chromium stderr\n{}\n",
        steward.join("\n"),
        chromium.stderr()
    );
    out
}

fn frames(st: &Value) -> u64 {
    st["framesDecoded"].as_u64().unwrap_or(0)
}

/// The sum of `field` over a page's RTP streams of `kind` (`inbound-rtp`, `outbound-rtp`).
fn rtp_sum(st: &Value, kind: &str, field: &str) -> u64 {
    let streams = st["rtp"].as_array().into_iter().flatten();
    streams.filter(|r| r["type"] == kind).filter_map(|r| r[field].as_u64()).sum()
}

fn received(st: &Value, text: &str) -> bool {
    st["dataReceived"].as_array().is_some_and(|d| d.iter().any(|m| m == text))
}

#[tokio::test]
async fn chromium_publishes_its_fake_camera_and_another_page_decodes_the_frames() {
    let _cpu = exclusive().await;
    let s = Steward::start(&rtc_env("41400-41419")).await;
    let token = s.tenant_with_token("acme", None).await.1;
    let signaling = rtc_url(&s, &token);
    let server = ExampleServer::start().await;
    let chromium = Chromium::start().await;

    // B first, publishing nothing: A's track reaches it through a server re-offer
    let b = chromium
        .open(&server.page(&[
            ("ws", &signaling),
            ("room", "lobby"),
            ("name", "b"),
            ("publish", "none"),
        ]))
        .await;
    let (ok, st) = wait_stats(&b, WITHIN, |st| st["dataChannelState"] == "open").await;
    assert!(ok, "page B never connected: {st}\n{}", report(&s, &chromium, &[("b", &b)]).await);

    let a = chromium
        .open(&server.page(&[
            ("ws", &signaling),
            ("room", "lobby"),
            ("name", "a"),
            ("publish", "video"),
        ]))
        .await;
    let (ok, st) = wait_stats(&a, WITHIN, |st| st["dataChannelState"] == "open").await;
    let connected = Instant::now();
    let pages = [("a", &a), ("b", &b)];
    assert!(ok, "page A never connected: {st}\n{}", report(&s, &chromium, &pages).await);

    // B decodes A's fake camera
    let (ok, st) = wait_stats(&b, FRAMES_WITHIN, |st| frames(st) > 10).await;
    if !ok {
        // a decoder starts at a key frame: B asks for them (its PLIs), A makes one per PLI it gets
        let a_st = stats(&a).await;
        panic!(
            "page B decoded {} frames in {FRAMES_WITHIN:?}: B sent {} PLIs, A got {} and encoded \
             {} key frames\n{}",
            frames(&st),
            rtp_sum(&st, "inbound-rtp", "pliCount"),
            rtp_sum(&a_st, "outbound-rtp", "pliCount"),
            rtp_sum(&a_st, "outbound-rtp", "keyFramesEncoded"),
            report(&s, &chromium, &pages).await
        );
    }
    eprintln!(
        "page B decoded {} frames ({} packets, {} bytes) {:?} after A connected",
        frames(&st),
        st["packetsReceived"],
        st["bytesReceived"],
        connected.elapsed()
    );

    // a webrtc-rs client in the same room gets A's video as RTP
    let rust = RtcClient::connect(&signaling).await.expect("upgrade");
    rust.join("lobby", "rust").await.expect("joined");
    rust.start(false).await.expect("offer/answer");
    if let Err(e) = rust.wait_connected(WITHIN).await {
        panic!("rust client: {e}\n{}", report(&s, &chromium, &pages).await);
    }
    let rtp = rust.wait_rtp(50, WITHIN).await.unwrap_or(0);
    assert!(
        rtp >= 50,
        "rust client got {rtp} RTP packets\n{}",
        report(&s, &chromium, &pages).await
    );
    assert!(
        rust.remote_tracks().iter().any(|t| t.2.to_lowercase().contains("video")),
        "{:?}",
        rust.remote_tracks()
    );

    // A's data-channel message reaches B and the Rust client
    let sent = a.evaluate_expression("window.sendData('hello from a')").await.unwrap();
    assert_eq!(sent.into_value::<bool>().ok(), Some(true));
    // sent as text, so received as text (the page marks binary messages "(binary) …")
    let (ok, st) = wait_stats(&b, WITHIN, |st| received(st, "hello from a")).await;
    assert!(ok, "B got no data: {}\n{}", st["dataReceived"], report(&s, &chromium, &pages).await);
    let data = rust.wait_data(1, WITHIN).await.expect("the rust client got A's message");
    assert_eq!(data[0].as_ref(), b"hello from a");

    assert_eq!(metric(&s, "steward_rtc_peer_connections_live").await, 3.0);

    // everything goes away: the Rust client, the pages, the browser; then their peers
    rust.close().await.unwrap();
    a.close().await.unwrap();
    b.close().await.unwrap();
    let left = chromium.stop().await;
    assert!(left.is_empty(), "chromium processes left: {left:?}");
    assert!(
        eventually(WITHIN, || async {
            metric(&s, "steward_rtc_peer_connections_live").await == 0.0
        })
        .await,
        "peers live: {}\n{}",
        metric(&s, "steward_rtc_peer_connections_live").await,
        s.dump()
    );
}
