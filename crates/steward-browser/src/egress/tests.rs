//! The egress proxy against real sockets on loopback: what it refuses (and counts), what it
//! forwards, and that it connects to exactly the address it checked.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix::prelude::*;
use steward_core::{
    ExitReason, Registry, Resource, ResourceCtx, ResourceKind, StopResource, start_unsupervised,
    stop_resource,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use super::{Egress, Gate, Hosts, Walls};
use crate::policy::UrlPolicy;
use crate::stats::{BrowserStats, EgressRefusal};

/// Owns proxies, as a session does.
struct Owner {
    rcx: ResourceCtx,
}

impl Actor for Owner {
    type Context = Context<Self>;
}

impl Resource for Owner {
    fn resource_ctx(&self) -> &ResourceCtx {
        &self.rcx
    }

    fn resource_ctx_mut(&mut self) -> &mut ResourceCtx {
        &mut self.rcx
    }
}

impl Handler<StopResource> for Owner {
    type Result = ();

    fn handle(&mut self, msg: StopResource, ctx: &mut Context<Self>) {
        stop_resource(self, ctx, msg.reason);
    }
}

/// Starts a proxy owned by the owner.
#[derive(Message)]
#[rtype(result = "crate::Result<Egress>")]
struct Start(Arc<Gate>, Arc<Walls>);

impl Handler<Start> for Owner {
    type Result = crate::Result<Egress>;

    fn handle(&mut self, msg: Start, _ctx: &mut Context<Self>) -> Self::Result {
        Egress::start(self.rcx.tracker(), None, msg.0, &msg.1)
    }
}

/// A loopback HTTP server answering every request `200 ok` and counting them; what it last
/// read. Like many servers it keeps its connections alive and ignores `Connection: close`
/// (the bench's page server does), so nothing here relies on the upstream closing.
struct Target {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    seen: Arc<std::sync::Mutex<String>>,
}

impl Target {
    // the test's own server: its tasks belong to the test runtime and end with it
    #[allow(clippy::disallowed_methods)]
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(std::sync::Mutex::new(String::new()));
        let (h, s) = (hits.clone(), seen.clone());
        actix_rt::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (h, s) = (h.clone(), s.clone());
                actix_rt::spawn(async move {
                    // one read is one request: the tests' requests are small and sequential
                    let mut buf = vec![0u8; 4096];
                    loop {
                        let n = stream.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        h.fetch_add(1, Ordering::SeqCst);
                        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                        let echo = text.starts_with("ping");
                        *s.lock().unwrap() = text;
                        let answer: &[u8] = if echo {
                            b"pong"
                        } else {
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                        };
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { addr, hits, seen }
    }
}

struct Fixture {
    owner: Addr<Owner>,
    walls: Arc<Walls>,
    stats: Arc<BrowserStats>,
    hosts: Arc<Hosts>,
}

impl Fixture {
    fn new(registry: &Registry) -> Self {
        let (_, owner) =
            start_unsupervised(registry, ResourceKind::Session, "owner", |rcx| Owner { rcx });
        let mut hosts = Hosts::new();
        hosts.insert("rebind".into(), vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
        Self { owner, walls: Arc::default(), stats: Arc::default(), hosts: Arc::new(hosts) }
    }

    async fn proxy(&self, allow: &[&str]) -> Egress {
        let allow: Vec<String> = allow.iter().map(|s| (*s).to_owned()).collect();
        let policy = Arc::new(UrlPolicy::new(&allow).unwrap());
        self.start(Some(policy)).await
    }

    async fn start(&self, policy: Option<Arc<UrlPolicy>>) -> Egress {
        let gate = Gate::new(policy, self.hosts.clone(), self.walls.clone(), self.stats.clone());
        self.owner.send(Start(Arc::new(gate), self.walls.clone())).await.unwrap().unwrap()
    }

    fn refused(&self, reason: EgressRefusal) -> u64 {
        BrowserStats::get(&self.stats.egress_refused[reason as usize])
    }
}

/// Reads one answer (head and a `Content-Length` body) from a kept-alive connection.
async fn read_answer(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    while !out.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        out.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&out).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse::<usize>().unwrap());
    let mut body = vec![0u8; length];
    s.read_exact(&mut body).await.unwrap();
    out.extend_from_slice(&body);
    String::from_utf8_lossy(&out).into_owned()
}

/// Polls `cond` every 5 ms for at most 5 s.
async fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    cond()
}

/// Sends `request` to the proxy at `url` and reads until it closes.
async fn exchange(proxy: &Egress, request: &str) -> String {
    let addr = proxy.url().trim_start_matches("http://").to_owned();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[actix_rt::test]
async fn loopback_private_and_metadata_are_refused_by_every_route_and_counted() {
    let registry = Registry::with_defaults();
    let f = Fixture::new(&registry);
    let target = Target::start().await;
    let proxy = f.proxy(&[]).await;
    let port = target.addr.port();
    for request in [
        format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"),
        format!("GET http://127.0.0.1:{port}/healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"),
        format!("GET http://2130706433:{port}/ HTTP/1.1\r\nHost: x\r\n\r\n"),
        format!("CONNECT [::ffff:127.0.0.1]:{port} HTTP/1.1\r\n\r\n"),
        format!("GET http://localhost:{port}/ HTTP/1.1\r\nHost: localhost\r\n\r\n"),
        // a name whose answer is loopback (DNS rebinding, through the static resolver)
        format!("CONNECT rebind:{port} HTTP/1.1\r\n\r\n"),
    ] {
        let answer = exchange(&proxy, &request).await;
        assert!(answer.starts_with("HTTP/1.1 403"), "{request:?}: {answer}");
        assert!(answer.contains("X-Steward-Egress: refused; reason=loopback"), "{answer}");
    }
    assert_eq!(f.refused(EgressRefusal::Loopback), 6);
    let answer = exchange(&proxy, "CONNECT 169.254.169.254:80 HTTP/1.1\r\n\r\n").await;
    assert!(answer.contains("reason=link_local") && answer.contains("metadata"), "{answer}");
    let answer = exchange(&proxy, "GET http://10.1.2.3/ HTTP/1.1\r\nHost: 10.1.2.3\r\n\r\n").await;
    assert!(answer.contains("reason=private"), "{answer}");
    assert_eq!(target.hits.load(Ordering::SeqCst), 0, "nothing reached the target");
    // what it refused is remembered for the session's navigation error
    assert!(
        proxy
            .refusals()
            .of("rebind", std::time::Instant::now() - std::time::Duration::from_secs(60))
            .is_some()
    );
}

#[actix_rt::test]
async fn an_allow_listed_address_is_reached_exactly_and_each_request_is_decided_alone() {
    let registry = Registry::with_defaults();
    let f = Fixture::new(&registry);
    let target = Target::start().await;
    let proxy = f.proxy(&["127.0.0.1"]).await;
    let port = target.addr.port();
    let addr = proxy.url().trim_start_matches("http://").to_owned();
    // Chromium keeps its proxy connections alive: requests one after another on one connection,
    // each sent in origin form to the address decided for it
    let mut s = TcpStream::connect(&addr).await.unwrap();
    for path in ["/page?x=1", "/again"] {
        let request = format!(
            "GET http://127.0.0.1:{port}{path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
             Proxy-Connection: keep-alive\r\nProxy-Authorization: secret\r\n\r\n"
        );
        s.write_all(request.as_bytes()).await.unwrap();
        let answer = read_answer(&mut s).await;
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok"), "{answer}");
        let seen = target.seen.lock().unwrap().to_ascii_lowercase();
        assert!(seen.starts_with(&format!("get {path} http/1.1\r\n")), "origin form: {seen}");
        assert!(seen.contains("connection: close\r\n"), "{seen}");
        assert!(!seen.contains("proxy-"), "hop-by-hop headers stay: {seen}");
    }
    // the next request on the same connection, to an address the tenant may not reach
    let request = format!("GET http://127.0.0.2:{port}/ HTTP/1.1\r\nHost: 127.0.0.2\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    let answer = read_answer(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 403") && answer.contains("reason=loopback"), "{answer}");
    assert_eq!(f.refused(EgressRefusal::Loopback), 1);
    // a tunnel to it works too
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n").as_bytes()).await.unwrap();
    let answer = read_answer(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    s.write_all(b"ping").await.unwrap();
    let mut pong = [0u8; 4];
    s.read_exact(&mut pong).await.unwrap();
    assert_eq!(&pong, b"pong");
    assert_eq!(target.hits.load(Ordering::SeqCst), 3, "two requests and the tunnel's ping");
    assert_eq!(BrowserStats::get(&f.stats.egress_connections), 3);
}

#[actix_rt::test]
async fn no_proxy_reaches_another_proxy_and_a_browsers_own_proxy_refuses_everything() {
    let registry = Registry::with_defaults();
    let f = Fixture::new(&registry);
    // a tenant allowed loopback still cannot reach another tenant's proxy (and its policy)
    let other = f.proxy(&["10.0.0.0/8"]).await;
    let mine = f.proxy(&["127.0.0.1"]).await;
    let other_port = other.url().rsplit(':').next().unwrap().to_owned();
    let answer = exchange(&mine, &format!("CONNECT 127.0.0.1:{other_port} HTTP/1.1\r\n\r\n")).await;
    assert!(answer.contains("reason=steward"), "{answer}");
    assert_eq!(f.refused(EgressRefusal::Steward), 1);

    let own = f.start(None).await;
    let answer = exchange(&own, "CONNECT example.com:443 HTTP/1.1\r\n\r\n").await;
    assert!(answer.contains("reason=no_session"), "{answer}");
    // hyper answers what is not HTTP/1.1 itself; it is counted all the same
    let answer = exchange(&own, "garbage\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(eventually(|| f.refused(EgressRefusal::BadRequest) == 1).await);
    let answer = exchange(&own, "GET /relative HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(answer.contains("reason=bad_request"), "{answer}");
}

#[actix_rt::test]
async fn the_proxy_and_its_connections_end_with_their_owner() {
    let registry = Registry::with_defaults();
    let f = Fixture::new(&registry);
    let proxy = f.proxy(&[]).await;
    let addr = proxy.url().trim_start_matches("http://").to_owned();
    // a connection that never sends its head, held open
    let _held = TcpStream::connect(&addr).await.unwrap();
    let tasks = || registry.handle_counts().tasks;
    assert!(eventually(|| tasks() == 2).await, "accept loop + one connection");
    f.owner.send(StopResource { reason: ExitReason::Normal }).await.unwrap();
    assert!(eventually(|| tasks() == 0).await);
    assert!(TcpStream::connect(&addr).await.is_err(), "nothing listens any more");
    drop(proxy);
    assert!(!f.walls.contains(addr.rsplit(':').next().unwrap().parse().unwrap()));
}

#[actix_rt::test]
async fn stewards_own_listeners_are_refused_whatever_the_tenant_may_reach() {
    let registry = Registry::with_defaults();
    let f = Fixture::new(&registry);
    // stands in for the admin listener; the tenant is allowed all of loopback
    let admin = Target::start().await;
    f.walls.listener("admin", &[admin.addr]);
    let mine = f.proxy(&["127.0.0.0/8"]).await;
    let port = admin.addr.port();
    for request in [
        format!("GET http://127.0.0.1:{port}/metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"),
        format!("GET http://127.0.0.2:{port}/metrics HTTP/1.1\r\nHost: 127.0.0.2\r\n\r\n"),
        format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n"),
    ] {
        let answer = exchange(&mine, &request).await;
        assert!(answer.contains("reason=steward"), "{request}: {answer}");
    }
    assert_eq!(admin.hits.load(Ordering::SeqCst), 0, "nothing reached the listener");
    assert_eq!(f.refused(EgressRefusal::Steward), 3);

    // a listener on the unspecified address is behind the wall on every address of the machine
    let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 9);
    f.walls.listener("public", &[any]);
    assert!(f.walls.guarded(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)), 9).is_some());
    assert!(f.walls.guarded(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 123)), 9).is_none(), "not ours");
    assert!(f.walls.guarded(IpAddr::V4(Ipv4Addr::LOCALHOST), 10).is_none(), "another port");
    // a listener that binds again is walled where it is now, and only there
    f.walls.listener("admin", &[SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 11)]);
    assert!(f.walls.guarded(IpAddr::V4(Ipv4Addr::LOCALHOST), port).is_none());
    assert!(f.walls.guarded(IpAddr::V4(Ipv4Addr::LOCALHOST), 11).is_some());
    let answer = exchange(&mine, &format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n")).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
