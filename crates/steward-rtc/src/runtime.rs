//! The webrtc-rs [`Runtime`] of one peer: every task webrtc-rs starts for the peer's
//! connection (its driver) is a tracked task of the peer actor, on the I/O runtime, counted in
//! [`RtcStats::tasks_live`]. So the peer owns them: they are aborted when it stops, whatever
//! webrtc-rs itself does, and a panic in one stops the peer, not the process. Sockets, timers
//! and name resolution are webrtc-rs's own tokio implementation.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::future::{AbortHandle, Abortable};
use steward_core::tracker::Tracker;
use webrtc::runtime::{
    AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, Runtime,
    TokioRuntime,
};

use crate::stats::RtcStats;

/// Spawns through the owning peer's tracker.
pub(crate) struct PeerRuntime {
    pub(crate) tracker: Tracker,
    pub(crate) io: tokio::runtime::Handle,
    pub(crate) stats: Arc<RtcStats>,
}

impl std::fmt::Debug for PeerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerRuntime").field("owner", &self.tracker.owner()).finish()
    }
}

/// A task's handle: abort through its `Abortable`, finished once its future is dropped.
struct Task {
    abort: AbortHandle,
    finished: Arc<AtomicBool>,
}

impl JoinHandle for Task {
    fn detach(&self) {}

    fn abort(&self) {
        self.abort.abort();
    }

    fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }
}

/// Marks the task finished and uncounts it when its future is dropped (ended or aborted).
struct Done {
    finished: Arc<AtomicBool>,
    stats: Arc<RtcStats>,
}

impl Drop for Done {
    fn drop(&mut self) {
        self.finished.store(true, Ordering::Release);
        self.stats.task_ended();
    }
}

impl Runtime for PeerRuntime {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        let (abort, registration) = AbortHandle::new_pair();
        let finished = Arc::new(AtomicBool::new(false));
        self.stats.task_started();
        let done = Done { finished: finished.clone(), stats: self.stats.clone() };
        let task = Abortable::new(
            async move {
                let _done = done;
                future.await;
            },
            registration,
        );
        // a peer that is stopping starts nothing more: the future (and `done`) is dropped here
        let _ = self.tracker.spawn_on(&self.io, async move {
            let _ = task.await;
        });
        Box::new(Task { abort, finished })
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        TokioRuntime.wrap_udp_socket(socket)
    }

    fn wrap_tcp_listener(
        &self,
        listener: std::net::TcpListener,
    ) -> io::Result<Arc<dyn AsyncTcpListener>> {
        TokioRuntime.wrap_tcp_listener(listener)
    }

    fn connect_tcp<'a>(
        &'a self,
        remote_addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = io::Result<Arc<dyn AsyncTcpStream>>> + Send + 'a>> {
        Box::pin(async move { TokioRuntime.connect_tcp(remote_addr).await })
    }

    fn resolve_host<'a>(
        &'a self,
        host: &'a str,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        Box::pin(async move { TokioRuntime.resolve_host(host).await })
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        TokioRuntime.sleep(duration)
    }

    fn interval(&self, period: Duration) -> Box<dyn AsyncInterval> {
        TokioRuntime.interval(period)
    }

    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        TokioRuntime.block_on(future);
    }

    fn name(&self) -> &'static str {
        "steward-peer"
    }
}
