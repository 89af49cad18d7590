//! The socket actor over an in-memory [`Wire`], under a real `sockets` supervisor and job hub:
//! every way a socket can end releases its subscriptions, timers, tasks and queue.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use futures_util::future::LocalBoxFuture;
use steward_config::{Config, SocketConfig};
use steward_core::supervisor::{RootSupervisor, Supervisor};
use steward_core::{ExitReason, Registry, ResourceKind, Strategy, SupervisorSpec};
use tokio::sync::mpsc;

use super::*;
use crate::SocketService;
use crate::jobs::{JobPatch, JobSink, JobStatus, Offer};

/// What the test wire saw.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Text(serde_json::Value),
    Ping,
    Pong,
    Close(u16),
}

/// An in-memory wire; with `stall`, every write hangs (a client that stopped reading).
struct TestWire {
    seen: mpsc::UnboundedSender<Seen>,
    stall: bool,
}

impl Wire for TestWire {
    fn send(&mut self, frame: Outgoing) -> LocalBoxFuture<'_, Result<(), WireClosed>> {
        Box::pin(async move {
            if self.stall {
                std::future::pending::<()>().await;
            }
            let seen = match frame {
                Outgoing::Text(t) => Seen::Text(serde_json::from_str(&t).unwrap()),
                Outgoing::Ping => Seen::Ping,
                Outgoing::Pong(_) => Seen::Pong,
            };
            self.seen.send(seen).map_err(|_| WireClosed)
        })
    }

    fn close(self: Box<Self>, code: u16, _reason: &'static str) -> LocalBoxFuture<'static, ()> {
        let _ = self.seen.send(Seen::Close(code));
        Box::pin(std::future::ready(()))
    }
}

struct Harness {
    registry: Registry,
    sockets: SocketService,
    root: RootSupervisor,
}

struct Client {
    tx: InboundTx,
    seen: mpsc::UnboundedReceiver<Seen>,
    id: steward_core::ResourceId,
}

async fn harness(socket: SocketConfig) -> Harness {
    let c = Config::defaults();
    let registry = Registry::with_defaults();
    let jobs = crate::jobs::JobHubHandle::new();
    let sockets = SocketService::new(socket, jobs.clone());
    let spec = SupervisorSpec::from_config("test", Strategy::OneForOne, &c.supervisor)
        .child(jobs.child_spec(c.jobs.clone()))
        .child(sockets.supervisor_spec(&c.supervisor));
    let root = Supervisor::start_root(&registry, spec).await.unwrap();
    Harness { registry, sockets, root }
}

impl Harness {
    async fn open(&self, stall: bool) -> Client {
        let (seen_tx, seen) = mpsc::unbounded_channel();
        let ip: IpAddr = Ipv4Addr::LOCALHOST.into();
        let slot = self.sockets.admit_ip(ip).unwrap();
        let wire = Box::new(TestWire { seen: seen_tx, stall });
        let (id, tx) = self
            .sockets
            .open("acme".into(), ip, wire, crate::port::Protocol::Jobs(None), slot)
            .await
            .unwrap();
        Client { tx, seen, id }
    }

    async fn gone(&self, id: steward_core::ResourceId) {
        assert!(
            self.registry.wait_gone(id, Instant::now() + Duration::from_secs(10)).await,
            "the socket stops"
        );
    }

    /// Everything a socket owned is released. The registry entry goes once the actor's task has
    /// dropped the actor and its context; its writer task, aborted with it, is dropped by its
    /// arbiter right after (the socket may run on another thread than this test), so the
    /// handle counts are awaited.
    async fn assert_clean(&self) {
        assert_eq!(self.registry.count_of(&[ResourceKind::Socket]), 0);
        assert_eq!(self.sockets.jobs().stats().subscriptions, 0, "subscriptions released");
        assert_eq!(self.sockets.tracked_ips(), 0, "per-IP places released");
        // the job hub's sweep interval is the only timer left; nothing is orphaned
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut handles = self.registry.handle_counts();
        while (handles.tasks, handles.timers, handles.orphans) != (0, 1, 0)
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
            handles = self.registry.handle_counts();
        }
        assert_eq!((handles.tasks, handles.timers, handles.orphans), (0, 1, 0), "{handles:?}");
        let stats = self.sockets.stats();
        assert_eq!((stats.queue_depth, stats.queue_bytes), (0, 0), "queues released");
    }

    async fn job(&self) -> crate::jobs::JobId {
        self.sockets.jobs().create("acme".into(), "render".into(), None).await.unwrap().id
    }

    async fn progress(&self, job: &crate::jobs::JobId, p: u32) {
        let patch = JobPatch { status: Some(JobStatus::Running), progress: Some(p), data: None };
        self.sockets.jobs().update("acme".into(), job.clone(), patch).await.unwrap();
    }
}

impl Client {
    async fn request(&mut self, v: serde_json::Value) {
        self.tx.send(Inbound::Text(v.to_string().into())).await.unwrap();
    }

    async fn next(&mut self) -> Seen {
        loop {
            let seen = tokio::time::timeout(Duration::from_secs(10), self.seen.recv())
                .await
                .expect("a frame")
                .expect("the wire is open");
            if seen != Seen::Ping {
                return seen;
            }
        }
    }

    async fn close_code(&mut self) -> u16 {
        loop {
            if let Seen::Close(code) = self.next().await {
                return code;
            }
        }
    }
}

fn socket_config() -> SocketConfig {
    Config::defaults().socket
}

#[actix_rt::test]
async fn subscribe_then_updates_arrive_and_every_close_releases_everything() {
    let h = harness(socket_config()).await;
    let job = h.job().await;
    let mut c = h.open(false).await;
    c.request(serde_json::json!({"type": "subscribe", "job": job.as_str(), "id": "s1"})).await;
    let Seen::Text(subscribed) = c.next().await else { panic!("a text frame") };
    assert_eq!(
        (subscribed["type"].as_str(), subscribed["id"].as_str()),
        (Some("subscribed"), Some("s1"))
    );
    assert_eq!(subscribed["snapshot"]["status"], "queued");
    h.progress(&job, 30).await;
    let Seen::Text(update) = c.next().await else { panic!("a text frame") };
    assert_eq!((update["type"].as_str(), update["progress"].as_i64()), (Some("job"), Some(30)));
    assert_eq!(h.sockets.jobs().stats().subscriptions, 1);

    // the client's Close: echoed with 1000, everything released
    c.tx.send(Inbound::Close(Some(1000))).await.unwrap();
    assert_eq!(c.close_code().await, 1000);
    h.gone(c.id).await;
    h.assert_clean().await;

    // the connection vanishes (the inbound stream ends)
    let mut c = h.open(false).await;
    c.request(serde_json::json!({"type": "subscribe", "job": job.as_str()})).await;
    let id = c.id;
    drop(c);
    h.gone(id).await;
    h.assert_clean().await;

    // the server stops it (operator, tenant deleted)
    let mut c = h.open(false).await;
    c.request(serde_json::json!({"type": "subscribe", "job": job.as_str()})).await;
    let _ = c.next().await;
    steward_core::Control::new(h.registry.clone()).stop(c.id, ExitReason::Shutdown).unwrap();
    assert_eq!(c.close_code().await, 1000);
    h.gone(c.id).await;
    h.assert_clean().await;

    // idle: a notice, then 4000
    let mut c = h.open(false).await;
    steward_core::Control::new(h.registry.clone()).stop(c.id, ExitReason::Idle).unwrap();
    let Seen::Text(notice) = c.next().await else { panic!("the notice") };
    assert_eq!(notice["code"], "idle_timeout");
    assert_eq!(c.close_code().await, 4000);
    h.gone(c.id).await;
    h.assert_clean().await;

    // too big, protocol error
    for (frame, code) in [(Inbound::TooBig, 1009), (Inbound::Protocol("bad".into()), 1002)] {
        let mut c = h.open(false).await;
        c.request(serde_json::json!({"type": "subscribe", "job": job.as_str()})).await;
        let _ = c.next().await;
        c.tx.send(frame).await.unwrap();
        assert_eq!(c.close_code().await, code);
        h.gone(c.id).await;
        h.assert_clean().await;
    }
    h.root.handle.stop(ExitReason::Shutdown).await.unwrap();
}

#[actix_rt::test]
async fn a_stalled_client_is_closed_4008_and_the_hub_never_waits() {
    let h = harness(SocketConfig { write_timeout: Duration::from_millis(200), ..socket_config() })
        .await;
    let job = h.job().await;
    let mut c = h.open(true).await;
    c.request(serde_json::json!({"type": "subscribe", "job": job.as_str()})).await;
    // the hub keeps answering while the socket's writer hangs
    let t0 = Instant::now();
    for p in 0..100 {
        h.progress(&job, p).await;
    }
    assert!(t0.elapsed() < Duration::from_secs(5), "updates never wait on a slow socket");
    h.gone(c.id).await;
    let closes = h.sockets.stats().closes;
    assert!(
        closes.iter().any(|(code, n)| *code == CloseCode::SlowConsumer && *n == 1),
        "{closes:?}"
    );
    h.assert_clean().await;
    h.root.handle.stop(ExitReason::Shutdown).await.unwrap();
}

#[actix_rt::test]
async fn an_overflowing_queue_closes_4008_without_flushing_the_backlog() {
    let config = SocketConfig { queue_messages: 4, ..socket_config() };
    let h = harness(config).await;
    let job = h.job().await;
    let mut c = h.open(true).await;
    c.request(serde_json::json!({"type": "subscribe", "job": job.as_str()})).await;
    for p in 0..20 {
        h.progress(&job, p).await;
    }
    h.gone(c.id).await;
    // a stalled wire never wrote anything: not a single update of the backlog went out
    let mut texts = 0;
    while let Ok(seen) = c.seen.try_recv() {
        if matches!(seen, Seen::Text(_)) {
            texts += 1;
        }
    }
    assert_eq!(texts, 0);
    h.assert_clean().await;
    h.root.handle.stop(ExitReason::Shutdown).await.unwrap();
}

#[actix_rt::test]
async fn subscriptions_are_capped_per_socket() {
    let h = harness(SocketConfig { max_subscriptions: 2, ..socket_config() }).await;
    let mut c = h.open(false).await;
    let mut jobs = Vec::new();
    for _ in 0..3 {
        jobs.push(h.job().await);
    }
    for job in &jobs[..2] {
        c.request(serde_json::json!({"type": "subscribe", "job": job.as_str()})).await;
        let Seen::Text(v) = c.next().await else { panic!() };
        assert_eq!(v["type"], "subscribed");
    }
    c.request(serde_json::json!({"type": "subscribe", "job": jobs[2].as_str(), "id": 9})).await;
    let Seen::Text(v) = c.next().await else { panic!() };
    assert_eq!((v["code"].as_str(), v["id"].as_i64()), (Some("too_many_subscriptions"), Some(9)));
    c.request(serde_json::json!({"type": "unsubscribe", "job": jobs[0].as_str()})).await;
    let Seen::Text(v) = c.next().await else { panic!() };
    assert_eq!(v["type"], "unsubscribed");
    assert_eq!(h.sockets.jobs().stats().subscriptions, 1);
    c.request(serde_json::json!({"type": "subscribe", "job": jobs[2].as_str()})).await;
    let Seen::Text(v) = c.next().await else { panic!() };
    assert_eq!(v["type"], "subscribed");
    drop(c);
    h.root.handle.stop(ExitReason::Shutdown).await.unwrap();
}

#[tokio::test]
async fn the_outbound_queue_holds_no_storage_when_idle_keeps_order_and_is_bounded() {
    let stats = Arc::new(crate::stats::SocketStats::default());
    let text = |n: u32| Outgoing::Text(n.to_string().into());
    let (out, mut rx) = outbound::queue(256, 1 << 20, stats.clone());
    assert_eq!(rx.storage(), 0, "a new queue allocates nothing");
    for n in 0..100 {
        assert_eq!(out.push(text(n)), Offer::Queued);
    }
    for n in 0..100 {
        let Some(Ok(Outgoing::Text(t))) = rx.next_for_test().await else { panic!("frame {n}") };
        assert_eq!(t, n.to_string().as_str(), "in order");
    }
    assert_eq!(rx.storage(), 0, "a drained burst gives its storage back");
    // and so does a single frame (a reply to a ping)
    assert_eq!(out.push(text(0)), Offer::Queued);
    assert!(rx.storage() > 0);
    let _ = rx.next_for_test().await;
    assert_eq!(rx.storage(), 0, "a drained frame gives its storage back");
    assert_eq!(stats.snapshot().queue_depth, 0);

    // bounded in messages: the one past the bound marks a slow consumer
    let (out, mut rx) = outbound::queue(4, 1 << 20, stats.clone());
    for n in 0..4 {
        assert_eq!(out.push(text(n)), Offer::Queued);
    }
    assert_eq!(out.push(text(4)), Offer::Overflow);
    assert_eq!(out.push(text(5)), Offer::Overflow, "and stays one");
    assert!(matches!(rx.next_for_test().await, Some(Err("overflow"))));
    drop(rx);
    assert_eq!(stats.snapshot().queue_depth, 0, "the receiver's drop releases the backlog");
    assert!(JobSink::is_closed(&*out));

    // bounded in bytes; a closed receiver refuses; the senders' end ends the writer's wait
    let (out, mut rx) = outbound::queue(256, 8, stats.clone());
    assert_eq!(out.push(Outgoing::Text("0123456789".into())), Offer::Overflow);
    drop(out);
    assert!(matches!(rx.next_for_test().await, Some(Err("overflow"))));
    let (out, mut rx) = outbound::queue(256, 1 << 20, stats.clone());
    assert_eq!(out.push(text(1)), Offer::Queued);
    drop(out);
    assert!(matches!(rx.next_for_test().await, Some(Ok(_))), "what was queued still goes out");
    assert!(rx.next_for_test().await.is_none(), "then the queue ends");
    assert_eq!(stats.snapshot().queue_bytes, 0);
}

#[test]
fn the_writers_idle_state_stays_small() {
    // every socket's writer waits most of its life: its future is what an idle socket keeps
    // (752 bytes while its closing paths and write deadline were inline, 312 boxed)
    let stats = std::sync::Arc::new(crate::stats::SocketStats::default());
    let (out, rx) = outbound::queue(8, 1024, stats);
    let (seen, _seen) = mpsc::unbounded_channel();
    let (_close, close) = tokio::sync::oneshot::channel();
    let timeouts =
        outbound::WriterTimeouts { write: Duration::from_secs(1), close: Duration::from_secs(1) };
    let writer = outbound::write_loop(
        rx,
        Box::new(TestWire { seen, stall: false }),
        close,
        timeouts,
        out.exit_report(),
    );
    let size = std::mem::size_of_val(&writer);
    assert!(size <= 400, "the writer's future takes {size} bytes");
}
