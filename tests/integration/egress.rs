//! Browser isolation on the real binary and a real Chromium: a tenant's page reaches nothing
//! it should not, whatever the route — a renderer-initiated navigation, a redirect, an iframe,
//! `fetch`, XHR, WebSocket, EventSource, a worker, a name that resolves to loopback — because
//! every connection goes through the session's egress proxy. Targets on this machine count
//! what reaches them: nothing does. A tenant allowed loopback reaches its page, and still none
//! of Steward's own listeners.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tonic::Code;

use crate::browser::{Client, browser_tenant, client, create_ok, evaluate, navigate, series};
use crate::support::{Steward, WITHIN, eventually};

/// A server on `addr` that counts every connection and answers each request with `page(path)`.
struct Site {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Site {
    // a test-side server: its tasks belong to the test and go with it
    #[allow(clippy::disallowed_methods)]
    async fn start(
        bind: &str,
        page: fn(&str, u16) -> (String, String, String),
        target: u16,
    ) -> Self {
        let listener = TcpListener::bind(bind).await.expect("bind a test site");
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let count = hits.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, page, target));
            }
        });
        Self { addr, hits, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut stream: TcpStream,
    page: fn(&str, u16) -> (String, String, String),
    target: u16,
) {
    let mut buf = vec![0u8; 8192];
    let mut n = 0;
    while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf[n..]).await {
            Ok(0) | Err(_) => return,
            Ok(m) => n += m,
        }
        if n == buf.len() {
            return;
        }
    }
    let head = String::from_utf8_lossy(&buf[..n]);
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let (status, content_type, body) = page(&path, target);
    let extra =
        if status.starts_with("302") { format!("Location: {body}\r\n") } else { String::new() };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n{extra}Content-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// A unique local (private, `fc00::/7`) address of this machine, from `/proc/net/if_inet6`.
fn private_address() -> Option<std::net::Ipv6Addr> {
    let table = std::fs::read_to_string("/proc/net/if_inet6").ok()?;
    table.lines().find_map(|line| {
        let hex = line.split_whitespace().next()?;
        let bits = u128::from_str_radix(hex, 16).ok()?;
        let ip = std::net::Ipv6Addr::from(bits);
        (ip.segments()[0] & 0xfe00 == 0xfc00).then_some(ip)
    })
}

/// The target: a plain page (what a tenant allowed to reach it gets).
fn target_page(_path: &str, _: u16) -> (String, String, String) {
    let html = "<!doctype html><title>secret</title><p>the secret</p>";
    ("200 OK".into(), "text/html".into(), html.into())
}

/// The attacker's site (which the tenant may load): each path tries one route to the target on
/// 127.0.0.1:`t`.
fn attack_page(path: &str, t: u16) -> (String, String, String) {
    let html = |script: &str| {
        (
            "200 OK".to_owned(),
            "text/html".to_owned(),
            format!("<!doctype html><title>attack</title><script>{script}</script>"),
        )
    };
    match path {
        "/redirect" => {
            ("302 Found".into(), "text/plain".into(), format!("http://127.0.0.1:{t}/redirected"))
        }
        "/iframe" => (
            "200 OK".into(),
            "text/html".into(),
            format!("<!doctype html><iframe src=\"http://127.0.0.1:{t}/iframe\"></iframe>"),
        ),
        "/fetch" => html(&format!(
            "fetch('http://127.0.0.1:{t}/fetch', {{mode: 'no-cors'}}).catch(() => {{}})"
        )),
        "/xhr" => html(&format!(
            "const x = new XMLHttpRequest(); x.open('GET', 'http://127.0.0.1:{t}/xhr'); x.send()"
        )),
        "/websocket" => html(&format!("new WebSocket('ws://127.0.0.1:{t}/ws')")),
        "/eventsource" => html(&format!("new EventSource('http://127.0.0.1:{t}/es')")),
        "/worker" => html("new Worker('/worker.js')"),
        "/worker.js" => (
            "200 OK".into(),
            "text/javascript".into(),
            format!("fetch('http://127.0.0.1:{t}/worker', {{mode: 'no-cors'}}).catch(() => {{}})"),
        ),
        // the private-address target's port is `t` too (see the test)
        "/private" => html(&format!(
            "fetch('http://private:{t}/private', {{mode: 'no-cors'}}).catch(() => {{}})"
        )),
        // a name whose answer is 127.0.0.1 (the proxy's static resolver, as DNS rebinding would)
        "/rebind" => html(&format!(
            "fetch('http://rebind:{t}/rebind', {{mode: 'no-cors'}}).catch(() => {{}})"
        )),
        _ => ("404 Not Found".into(), "text/plain".into(), String::new()),
    }
}

async fn refused(s: &Steward, reason: &str) -> f64 {
    series(s, &format!("steward_browser_egress_refused_total{{reason=\"{reason}\"}}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_of_a_tenants_page_reaches_loopback_and_each_refusal_is_counted() {
    let target = Site::start("127.0.0.1:0", target_page, 0).await;
    let port = target.addr.port();
    // a private address of this machine, on the same port, named `private` for the proxy
    let private = private_address().expect("this machine has a unique local (fd00::/8) address");
    let private_target = Site::start(&format!("[{private}]:{port}"), target_page, 0).await;
    // the attacker's pages are on another loopback address, the one its tenant may load
    let site = Site::start("127.0.0.2:0", attack_page, port).await;
    let hosts = format!(r#"{{rebind=["127.0.0.1"], private=["{private}"]}}"#);
    let s = Steward::start(&[("STEWARD__BROWSER__EGRESS_HOSTS", hosts.as_str())]).await;
    let evil = browser_tenant(&s, "evil", &["127.0.0.2"]).await;
    let mut c: Client = client(&s).await;
    let session = create_ok(&mut c, &evil, 640, 480).await.id;

    // a redirect to loopback: the navigation's error names the refusal
    let before = refused(&s, "loopback").await;
    let status = navigate(&mut c, &evil, &session, &site.url("/redirect")).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().starts_with("url_not_allowed"), "{status:?}");
    assert!(refused(&s, "loopback").await > before);

    // every sub-resource route, loaded from the allowed page
    for route in ["/iframe", "/fetch", "/xhr", "/websocket", "/eventsource", "/worker", "/rebind"] {
        let before = refused(&s, "loopback").await;
        navigate(&mut c, &evil, &session, &site.url(route))
            .await
            .unwrap_or_else(|e| panic!("{route}: {e:?}"));
        let counted = eventually(WITHIN, || async { refused(&s, "loopback").await > before }).await;
        assert!(counted, "{route}: no refusal counted");
    }

    let before = refused(&s, "private").await;
    navigate(&mut c, &evil, &session, &site.url("/private")).await.expect("/private loads");
    let counted = eventually(WITHIN, || async { refused(&s, "private").await > before }).await;
    assert!(counted, "the private address: no refusal counted");

    // a renderer-initiated navigation, after Navigate returned (the review's exploit: a timer
    // sends the page to the admin listener): reading the page is refused
    let admin = s.admin.trim_start_matches("http://").to_owned();
    let to_admin = format!(
        "data:text/html,<script>setTimeout(() => location = 'http://{admin}/healthz', 300)</script>"
    );
    navigate(&mut c, &evil, &session, &to_admin).await.expect("the data: page loads");
    let moved = eventually(WITHIN, || async {
        let r = evaluate(&mut c.clone(), &evil, &session, "fetch('/metrics').then(r => r.text())")
            .await;
        matches!(r, Err(ref e) if e.code() == Code::PermissionDenied)
    })
    .await;
    assert!(moved, "reading a page that moved to the admin listener must be refused");

    // the same to a target that counts
    let later = format!(
        "data:text/html,<script>setTimeout(() => location = 'http://127.0.0.1:{}/later', 300)</script>",
        target.addr.port()
    );
    navigate(&mut c, &evil, &session, &later).await.expect("the data: page loads");
    let moved = eventually(WITHIN, || async {
        let r = evaluate(&mut c.clone(), &evil, &session, "location.href").await;
        matches!(r, Err(ref e) if e.code() == Code::PermissionDenied)
    })
    .await;
    assert!(moved, "reading a page that moved to loopback must be refused");
    let content = c
        .content(crate::sockets::authed(
            &evil,
            steward_proto::browser::v1::ContentRequest {
                session_id: session.clone(),
                page_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(content.code(), Code::PermissionDenied, "{content:?}");

    assert_eq!(target.hits(), 0, "nothing reached the target");
    assert_eq!(private_target.hits(), 0, "nothing reached the private address");
    let loopback = refused(&s, "loopback").await;
    eprintln!("egress refusals: loopback {loopback}");
    assert!(loopback >= 9.0, "{loopback}");

    // a tenant allowed loopback reaches the target, and only what it asked for
    let good = browser_tenant(&s, "good", &["127.0.0.1"]).await;
    let mine = create_ok(&mut c, &good, 640, 480).await.id;
    let landed = navigate(&mut c, &good, &mine, &target.url("/")).await.expect("allowed");
    assert_eq!((landed.status, landed.title.as_str()), (200, "secret"));
    assert!(target.hits() >= 1, "the page (and Chromium's favicon request) reached it");
    let other = navigate(&mut c, &good, &mine, &site.url("/fetch")).await.unwrap_err();
    assert_eq!(other.code(), Code::PermissionDenied, "127.0.0.2 is not on its list: {other:?}");

    // ...but never Steward itself: its admin, public and gRPC listeners are on 127.0.0.1 too
    let before = refused(&s, "steward").await;
    for listener in [format!("{}/metrics", s.admin), format!("{}/", s.public), s.grpc.clone()] {
        let status = navigate(&mut c, &good, &mine, &listener).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{listener}: {status:?}");
        assert!(status.message().contains("Steward's own listeners"), "{status:?}");
    }
    // each counted (Chromium may try a connection twice)
    assert!(refused(&s, "steward").await - before >= 3.0);
}
