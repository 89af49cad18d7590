//! The pool under a real supervisor, with a real Chromium (Debian's `chromium`): sessions open,
//! work and close, and nothing is left behind.

use std::sync::Arc;
use std::time::Duration;

use steward_config::Config;
use steward_core::supervisor::{RootSupervisor, Supervisor};
use steward_core::{Registry, ResourceKind, Strategy, SupervisorSpec};

use super::*;
use crate::policy::UrlPolicy;
use crate::{CloseReason, WaitUntil};

struct Harness {
    registry: Registry,
    browsers: Browsers,
    _root: RootSupervisor,
}

async fn harness(tweak: impl FnOnce(&mut BrowserConfig)) -> Harness {
    let c = Config::defaults();
    let mut config = c.browser.clone();
    config.browsers = 1;
    tweak(&mut config);
    let registry = Registry::with_defaults();
    let browsers = Browsers::new(config, registry.clone());
    let spec = SupervisorSpec::from_config("test", Strategy::OneForOne, &c.supervisor)
        .children(browsers.child_specs(&c.supervisor));
    let root = Supervisor::start_root(&registry, spec).await.unwrap();
    Harness { registry, browsers, _root: root }
}

fn scope(tenant: &str) -> TenantScope {
    TenantScope {
        tenant: tenant.into(),
        endpoint: None,
        pages_per_session: 5,
        policy: Arc::new(UrlPolicy::default()),
    }
}

fn admit_all() -> Result<AdmitGuard> {
    Ok(Box::new(()))
}

const PAGE: &str = "data:text/html,<title>hello</title><body style='height:3000px'>hi</body>";

#[actix_rt::test]
async fn a_session_opens_works_and_closes_leaving_nothing() {
    let h = harness(|_| {}).await;
    let s = scope("acme");
    let info = h
        .browsers
        .create_session(
            &s,
            SessionOptions { width: 640, height: 480, ..SessionOptions::default() },
            &admit_all,
        )
        .await
        .unwrap();
    assert_eq!(info.pages.len(), 1);
    let nav = h
        .browsers
        .navigate(&s, &info.id, NavigateRequest { url: PAGE.into(), ..NavigateRequest::default() })
        .await
        .unwrap();
    assert_eq!(nav.title, "hello");
    let png = h.browsers.screenshot(&s, &info.id, ScreenshotRequest::default()).await.unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let json = h
        .browsers
        .evaluate(
            &s,
            &info.id,
            EvaluateRequest {
                expression: "({a: 1 + 1, w: innerWidth})".into(),
                ..EvaluateRequest::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(json, r#"{"a":2,"w":640}"#);
    assert!(matches!(h.browsers.session("other", &info.id).await, Err(Error::NotFound(_))));
    h.browsers.close_session("acme", &info.id).await.unwrap();
    assert_eq!(h.browsers.live_sessions(), 0);
    let b = h.browsers.browsers();
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].contexts, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    assert!(h.registry.wait_none_of(&[ResourceKind::Session], deadline).await);
}

/// Contexts the pool's (only) local Chromium itself lists: no one else can connect to it.
async fn chromium_contexts(h: &Harness) -> usize {
    let id = h.browsers.browsers()[0].id.clone();
    h.browsers.chromium_view(&id).await.unwrap().contexts.len()
}

/// Page targets of contexts the pool's (only) local Chromium itself lists.
async fn chromium_pages(h: &Harness) -> usize {
    let id = h.browsers.browsers()[0].id.clone();
    let view = h.browsers.chromium_view(&id).await.unwrap();
    view.targets.iter().filter(|t| t.kind == "page" && t.context.is_some()).count()
}

/// A Chromium with a DevTools port, standing for a tenant's own browser (a remote endpoint);
/// killed with the test.
struct TenantChromium {
    endpoint: String,
    _process: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl TenantChromium {
    async fn start() -> Self {
        use tokio::io::AsyncBufReadExt as _;
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = tokio::process::Command::new("chromium");
        cmd.args([
            "--headless=new",
            "--remote-debugging-port=0",
            "--disable-gpu",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", dir.path().display()))
        .arg("about:blank")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
        if nix::unistd::geteuid().is_root() {
            cmd.arg("--no-sandbox"); // as root Chromium has no sandbox; this one is the test's
        }
        #[allow(clippy::disallowed_methods)] // the test's stand-in for a tenant's own Chromium
        let mut process = cmd.spawn().unwrap();
        let mut lines = tokio::io::BufReader::new(process.stderr.take().unwrap()).lines();
        let endpoint = loop {
            let line = lines.next_line().await.unwrap().expect("chromium printed its endpoint");
            if let Some(url) = line.trim().strip_prefix("DevTools listening on ") {
                break url.trim().to_owned();
            }
        };
        Self { endpoint, _process: process, _dir: dir }
    }
}

/// Contexts a Chromium lists, asked over a second CDP connection to its DevTools endpoint.
async fn contexts_at(endpoint: &str) -> usize {
    use chromiumoxide::cdp::browser_protocol::target::GetBrowserContextsParams;
    use futures_util::StreamExt as _;
    let (cdp, mut handler) = chromiumoxide::Browser::connect(endpoint.to_owned()).await.unwrap();
    #[allow(clippy::disallowed_methods)] // a test's own CDP client, aborted below
    let poll = tokio::spawn(async move { while handler.next().await.is_some() {} });
    let n =
        cdp.execute(GetBrowserContextsParams {}).await.unwrap().result.browser_context_ids.len();
    poll.abort();
    n
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    until_async(what, Duration::from_secs(15), || std::future::ready(f())).await;
}

/// Polls `f` every 20 ms until it holds; fails the test after `within`.
async fn until_async<F: Future<Output = bool>>(
    what: &str,
    within: Duration,
    mut f: impl FnMut() -> F,
) {
    let deadline = std::time::Instant::now() + within;
    while !f().await {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether `tenant` has `n` `CreateSession` calls waiting in the queue.
fn waiting(h: &Harness, tenant: &str, n: u32) -> bool {
    h.browsers.queued().iter().any(|(t, w)| &**t == tenant && *w == n)
}

fn closed(h: &Harness, reason: CloseReason) -> u64 {
    BrowserStats::get(&h.browsers.stats().sessions_closed[reason as usize])
}

#[actix_rt::test]
async fn a_browser_killed_from_outside_fails_its_sessions_and_is_relaunched() {
    let h = harness(|_| {}).await;
    let s = scope("acme");
    let info = h.browsers.create_session(&s, SessionOptions::default(), &admit_all).await.unwrap();
    let before = h.browsers.browsers()[0].clone();
    let pid = before.pid.unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    until("the session to fail", || h.browsers.live_sessions() == 0).await;
    assert_eq!(closed(&h, CloseReason::BrowserUnavailable), 1);
    // calls on it say why it went, for a while
    assert!(matches!(
        h.browsers.session("acme", &info.id).await,
        Err(Error::BrowserUnavailable(_))
    ));
    assert!(matches!(h.browsers.session("other", &info.id).await, Err(Error::NotFound(_))));
    h.browsers.close_session("acme", &info.id).await.unwrap();
    until("a relaunched browser", || {
        h.browsers.browsers().iter().any(|b| b.state == BrowserState::Ready && b.pid != Some(pid))
    })
    .await;
    assert_eq!(BrowserStats::get(&h.browsers.stats().relaunched), 1);
    let again = h.browsers.create_session(&s, SessionOptions::default(), &admit_all).await.unwrap();
    h.browsers.close_session("acme", &again.id).await.unwrap();
    // the killed Chromium was reaped: no zombie child of ours is left (other tests' browsers,
    // also our children, may be between exit and reaping for a moment)
    let me = std::process::id().to_string();
    let zombies = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
            .filter(|stat| {
                let rest = &stat[stat.rfind(')').unwrap() + 2..];
                let mut f = rest.split_whitespace();
                f.next() == Some("Z") && f.next() == Some(me.as_str())
            })
            .count()
    };
    until("no zombie child", || zombies() == 0).await;
}

#[actix_rt::test]
async fn an_operator_stop_is_not_relaunched_and_removes_the_profile() {
    let h = harness(|_| {}).await;
    let s = scope("acme");
    let info = h.browsers.create_session(&s, SessionOptions::default(), &admit_all).await.unwrap();
    let b = h.browsers.browsers()[0].clone();
    let id: steward_core::ResourceId = b.id.parse().unwrap();
    steward_core::Control::new(h.registry.clone())
        .stop(id, steward_core::ExitReason::Shutdown)
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    assert!(h.registry.wait_gone(id, deadline).await);
    assert!(h.browsers.browsers().is_empty());
    assert_eq!(h.browsers.live_sessions(), 0);
    assert!(matches!(
        h.browsers.session("acme", &info.id).await,
        Err(Error::BrowserUnavailable(_))
    ));
    let (pids, _) = crate::launch::group_usage(b.pid.unwrap());
    assert!(pids.is_empty(), "chromium processes left: {pids:?}");
    // not relaunched: nothing comes back by itself
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(h.browsers.browsers().is_empty());
    assert_eq!(h.registry.count_of(&[ResourceKind::Browser]), 0);
    assert_eq!(BrowserStats::get(&h.browsers.stats().relaunched), 0);
}

#[actix_rt::test]
async fn a_connect_that_never_answers_fails_within_its_deadline_and_leaves_nothing() {
    let h = harness(|c| c.connect_timeout = Duration::from_millis(500)).await;
    // accepts, never answers the WebSocket handshake
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    #[allow(clippy::disallowed_methods)] // the silent endpoint; joined below
    let held = std::thread::spawn(move || listener.accept().map(|(s, _)| s));
    let handles = h.registry.handle_counts();
    let mut s = scope("acme");
    s.endpoint = Some(format!("ws://127.0.0.1:{port}/devtools/browser/x"));
    let started = std::time::Instant::now();
    let err =
        h.browsers.create_session(&s, SessionOptions::default(), &admit_all).await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, Error::DeadlineExceeded { stage: "connect", .. }), "{err:?}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    assert!(h.registry.wait_none_of(&[ResourceKind::Browser], deadline).await);
    assert_eq!(h.registry.handle_counts(), handles);
    drop(held);
}

#[actix_rt::test]
async fn sessions_expire_idle_and_at_max_lifetime() {
    let h = harness(|_| {}).await;
    let s = scope("acme");
    let life = SessionOptions {
        idle_ttl: Some(Duration::from_secs(60)),
        max_lifetime: Some(Duration::from_millis(1500)),
        ..SessionOptions::default()
    };
    let b = h.browsers.create_session(&s, life, &admit_all).await.unwrap();
    let idle =
        SessionOptions { idle_ttl: Some(Duration::from_secs(1)), ..SessionOptions::default() };
    let a = h.browsers.create_session(&s, idle, &admit_all).await.unwrap();
    // keep-alives hold the idle one open past its TTL, not the other past its lifetime
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        h.browsers.keep_alive("acme", &a.id).await.unwrap();
    }
    until("max lifetime", || h.browsers.live_sessions() == 1).await;
    assert!(h.browsers.session("acme", &b.id).await.is_err());
    until("idle ttl", || h.browsers.live_sessions() == 0).await;
    assert_eq!(closed(&h, CloseReason::Idle), 1);
    assert_eq!(closed(&h, CloseReason::MaxLifetime), 1);
}

#[actix_rt::test]
async fn the_reconciler_disposes_a_context_whose_session_was_killed() {
    let h = harness(|c| c.reconcile_interval = Duration::from_millis(200)).await;
    let s = scope("acme");
    let info = h.browsers.create_session(&s, SessionOptions::default(), &admit_all).await.unwrap();
    assert_eq!(chromium_contexts(&h).await, 1);
    // killed: no cleanup ran, the context stays in Chromium
    assert!(steward_core::Control::new(h.registry.clone()).kill(info.id.parse().unwrap()));
    until("the session to go", || h.browsers.live_sessions() == 0).await;
    until_async("the orphaned context to be disposed", Duration::from_secs(10), || async {
        chromium_contexts(&h).await == 0
    })
    .await;
    assert!(BrowserStats::get(&h.browsers.stats().reconciled) >= 1);
}

#[actix_rt::test]
async fn a_full_tenant_queues_then_times_out_with_retry_advice() {
    let h = harness(|c| {
        c.queue_length = 1;
        c.queue_timeout = Duration::from_millis(500);
    })
    .await;
    let s = scope("acme");
    let slots = Arc::new(std::sync::atomic::AtomicU32::new(1));
    let admit = {
        let slots = slots.clone();
        move || -> Result<AdmitGuard> {
            let taken =
                slots.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
            if taken.is_err() {
                return Err(Error::ResourceExhausted { quota: "sessions", retry_after: None });
            }
            struct Give(Arc<std::sync::atomic::AtomicU32>);
            impl Drop for Give {
                fn drop(&mut self) {
                    self.0.fetch_add(1, Ordering::AcqRel);
                }
            }
            Ok(Box::new(Give(slots.clone())))
        }
    };
    let first = h.browsers.create_session(&s, SessionOptions::default(), &admit).await.unwrap();
    // the second waits, and gets the slot when the first closes
    let (second, ()) =
        tokio::join!(h.browsers.create_session(&s, SessionOptions::default(), &admit), async {
            until("the second to queue", || waiting(&h, "acme", 1)).await;
            h.browsers.close_session("acme", &first.id).await.unwrap();
        });
    let second = second.unwrap();
    // the third times out; a fourth finds the queue full
    let (third, fourth) =
        tokio::join!(h.browsers.create_session(&s, SessionOptions::default(), &admit), async {
            until("the third to queue", || waiting(&h, "acme", 1)).await;
            h.browsers.create_session(&s, SessionOptions::default(), &admit).await
        });
    assert!(
        matches!(
            third,
            Err(Error::ResourceExhausted { quota: "queue_timeout", retry_after: Some(_) })
        ),
        "{third:?}"
    );
    assert!(
        matches!(
            fourth,
            Err(Error::ResourceExhausted { quota: "queue_full", retry_after: Some(_) })
        ),
        "{fourth:?}"
    );
    assert!(h.browsers.queued().is_empty());
    h.browsers.close_session("acme", &second.id).await.unwrap();
}

#[actix_rt::test]
async fn a_crashed_page_closes_its_session_with_page_crashed() {
    let h = harness(|_| {}).await;
    let s = scope("acme");
    let info = h.browsers.create_session(&s, SessionOptions::default(), &admit_all).await.unwrap();
    h.browsers
        .navigate(&s, &info.id, NavigateRequest { url: PAGE.into(), ..NavigateRequest::default() })
        .await
        .unwrap();
    let pid = h.browsers.browsers()[0].pid.unwrap();
    let renderers: Vec<u32> = crate::launch::group_usage(pid)
        .0
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("--type=renderer"))
        })
        .collect();
    assert!(!renderers.is_empty(), "no renderer process found");
    for r in renderers {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(r as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    until("the session to close", || h.browsers.live_sessions() == 0).await;
    assert_eq!(closed(&h, CloseReason::PageCrashed), 1);
    // the browser itself survives and takes new sessions
    let again = h.browsers.create_session(&s, SessionOptions::default(), &admit_all).await.unwrap();
    h.browsers.close_session("acme", &again.id).await.unwrap();
}

#[actix_rt::test]
async fn a_browser_that_stops_answering_misses_its_heartbeat_and_is_relaunched() {
    // short enough to notice the freeze soon, long enough that a live Chromium on a loaded
    // machine never misses one (200 ms did, once, in a full suite run)
    let h = harness(|c| {
        c.heartbeat_interval = Duration::from_millis(300);
        c.heartbeat_timeout = Duration::from_secs(2);
    })
    .await;
    let s = scope("acme");
    h.browsers.create_session(&s, SessionOptions::default(), &admit_all).await.unwrap();
    let browsers = h.browsers.browsers();
    let pid = browsers.first().and_then(|b| b.pid).expect("the session's browser is in the pool");
    // frozen, not dead: the WebSocket stays open, only the heartbeat can tell
    let group = nix::unistd::Pid::from_raw(pid as i32);
    nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGSTOP).unwrap();
    until("the session to fail", || h.browsers.live_sessions() == 0).await;
    assert_eq!(closed(&h, CloseReason::BrowserUnavailable), 1);
    assert!(BrowserStats::get(&h.browsers.stats().disconnects) >= 1);
    until("a relaunched browser", || {
        h.browsers.browsers().iter().any(|b| b.state == BrowserState::Ready && b.pid != Some(pid))
    })
    .await;
    // the frozen group was killed on the way out
    assert!(crate::launch::group_usage(pid).0.is_empty());
}

#[actix_rt::test]
async fn a_browser_is_recycled_after_its_contexts_and_replaced_on_demand() {
    let h = harness(|c| c.recycle_after_contexts = 2).await;
    let s = scope("acme");
    let a = h.browsers.create_session(&s, SessionOptions::default(), &admit_all).await.unwrap();
    let first = h.browsers.browsers()[0].clone();
    let b = h.browsers.create_session(&s, SessionOptions::default(), &admit_all).await.unwrap();
    // two contexts: draining, takes no more; a third session goes to a new browser
    until("draining", || h.browsers.browsers().iter().any(|x| x.state == BrowserState::Draining))
        .await;
    let c = h.browsers.create_session(&s, SessionOptions::default(), &admit_all).await.unwrap();
    assert_ne!(c.browser, first.id);
    // the old one goes once its sessions are gone, and is not relaunched
    h.browsers.close_session("acme", &a.id).await.unwrap();
    h.browsers.close_session("acme", &b.id).await.unwrap();
    until("the drained browser to go", || h.browsers.browsers().iter().all(|x| x.id != first.id))
        .await;
    assert_eq!(BrowserStats::get(&h.browsers.stats().recycled), 1);
    assert!(crate::launch::group_usage(first.pid.unwrap()).0.is_empty());
    h.browsers.close_session("acme", &c.id).await.unwrap();
}

#[actix_rt::test]
async fn the_reconciler_closes_a_popup_no_session_opened() {
    let h = harness(|c| c.reconcile_interval = Duration::from_millis(200)).await;
    let s = scope("acme");
    let info = h.browsers.create_session(&s, SessionOptions::default(), &admit_all).await.unwrap();
    let baseline = chromium_pages(&h).await;
    let opened = h
        .browsers
        .evaluate(
            &s,
            &info.id,
            EvaluateRequest {
                expression: "window.open('about:blank') !== null".into(),
                ..EvaluateRequest::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(opened, "true");
    until_async("the popup to be closed", Duration::from_secs(10), || async {
        chromium_pages(&h).await == baseline
    })
    .await;
    // the session's own page is untouched
    assert_eq!(h.browsers.session("acme", &info.id).await.unwrap().pages, info.pages);
    h.browsers.close_session("acme", &info.id).await.unwrap();
}

#[actix_rt::test]
async fn wait_conditions_evaluation_errors_and_content() {
    let h = harness(|_| {}).await;
    let s = scope("acme");
    let info = h.browsers.create_session(&s, SessionOptions::default(), &admit_all).await.unwrap();
    for wait_until in [WaitUntil::Load, WaitUntil::DomContentLoaded, WaitUntil::NetworkIdle] {
        let nav = h
            .browsers
            .navigate(
                &s,
                &info.id,
                NavigateRequest { url: PAGE.into(), wait_until, ..NavigateRequest::default() },
            )
            .await
            .unwrap();
        // Chromium gives a data: document the status 200
        assert_eq!((nav.status, nav.title.as_str()), (200, "hello"), "{wait_until:?}");
    }
    let thrown = h
        .browsers
        .evaluate(
            &s,
            &info.id,
            EvaluateRequest { expression: "nope.x".into(), ..EvaluateRequest::default() },
        )
        .await
        .unwrap_err();
    assert!(matches!(&thrown, Error::EvaluationFailed(t) if t.contains("nope")), "{thrown:?}");
    let awaited = h
        .browsers
        .evaluate(
            &s,
            &info.id,
            EvaluateRequest {
                expression: "new Promise(r => setTimeout(() => r([1, 'two']), 10))".into(),
                await_promise: true,
                ..EvaluateRequest::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(awaited, r#"[1,"two"]"#);
    let slow = h
        .browsers
        .evaluate(
            &s,
            &info.id,
            EvaluateRequest {
                expression: "new Promise(() => {})".into(),
                await_promise: true,
                timeout: Some(Duration::from_millis(200)),
                ..EvaluateRequest::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(slow, Error::DeadlineExceeded { stage: "evaluate", .. }), "{slow:?}");
    let html = h.browsers.content(&s, &info.id, None).await.unwrap();
    assert!(html.contains("<title>hello</title>"), "{html}");
    h.browsers.close_session("acme", &info.id).await.unwrap();
}

#[actix_rt::test]
async fn a_tenant_with_a_remote_endpoint_gets_its_sessions_there() {
    let h = harness(|_| {}).await;
    // the tenant's own Chromium, with a DevTools port (the pool's local ones have none)
    let tenant = TenantChromium::start().await;
    let endpoint = tenant.endpoint.clone();
    let local = h
        .browsers
        .create_session(&scope("host"), SessionOptions::default(), &admit_all)
        .await
        .unwrap();
    let mut s = scope("acme");
    s.endpoint = Some(endpoint.clone());
    let a = h.browsers.create_session(&s, SessionOptions::default(), &admit_all).await.unwrap();
    let b = h.browsers.create_session(&s, SessionOptions::default(), &admit_all).await.unwrap();
    let remote: Vec<_> =
        h.browsers.browsers().into_iter().filter(|x| x.origin == "remote").collect();
    assert_eq!(remote.len(), 1, "one connection per tenant and endpoint");
    assert_eq!(remote[0].tenant.as_deref(), Some("acme"));
    assert_eq!(
        (a.browser.as_str(), b.browser.as_str()),
        (remote[0].id.as_str(), remote[0].id.as_str())
    );
    let nav = h
        .browsers
        .navigate(&s, &a.id, NavigateRequest { url: PAGE.into(), ..NavigateRequest::default() })
        .await
        .unwrap();
    assert_eq!(nav.title, "hello");
    h.browsers.close_session("acme", &a.id).await.unwrap();
    h.browsers.close_session("acme", &b.id).await.unwrap();
    assert_eq!(contexts_at(&endpoint).await, 0, "its sessions' contexts are gone from it");
    // stopping the remote browser never closes the tenant's Chromium
    let id: steward_core::ResourceId = remote[0].id.parse().unwrap();
    steward_core::Control::new(h.registry.clone())
        .stop(id, steward_core::ExitReason::Shutdown)
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    assert!(h.registry.wait_gone(id, deadline).await);
    assert_eq!(contexts_at(&endpoint).await, 0, "the tenant's Chromium still answers");
    h.browsers.session("host", &local.id).await.unwrap();
    h.browsers.close_session("host", &local.id).await.unwrap();
}
