//! The socket resource: one actor per WebSocket connection (kind `socket`), started by the
//! `sockets` dynamic supervisor once the edge has admitted the upgrade.
//!
//! The actor owns everything the connection needs: its inbound side (frames arrive in its own
//! mailbox through the edge's [`InboundTx`]; the edge's pump ends when the actor is gone), its outbound queue and the writer task that
//! drains it into the [`Wire`], the ping interval and pong deadline timers, its token bucket and
//! its job [`Subscription`]s. They all go when the actor goes, whatever the reason: the actor's
//! drop is the one place they are released.

mod actor;
mod close;
mod handlers;
mod outbound;
mod protocol;
#[cfg(test)]
mod tests;

pub use close::CloseCode;
pub use outbound::{Outgoing, Wire, WireClosed};

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use bytestring::ByteString;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use steward_config::SocketConfig;
use steward_core::ResourceCtx;
use tokio::sync::oneshot;

use crate::jobs::{JobHubHandle, JobId, Subscription};
use crate::port::{Protocol, RtcPort, StreamGuard, StreamPort};
use crate::stats::SocketStats;
use close::CloseFrame;
use outbound::{CloseCmd, ExitReport, Outbound, QueueRx};

/// A frame received from the client, as the edge's pump hands it over (through [`InboundTx`],
/// into the socket actor's own mailbox).
#[derive(Debug, Clone, PartialEq, Eq, actix::Message)]
#[rtype(result = "()")]
pub enum Inbound {
    /// A text message (continuations aggregated).
    Text(ByteString),
    /// A binary message of this many bytes (not part of the protocol: answered `bad_request`).
    Binary(usize),
    /// A protocol Ping with its payload (answered with a Pong).
    Ping(Vec<u8>),
    /// A protocol Pong.
    Pong,
    /// The client's Close frame, with its code if it sent one.
    Close(Option<u16>),
    /// A frame over `max_frame` or a message over `max_message` (closes with 1009).
    TooBig,
    /// A malformed frame (closes with 1002).
    Protocol(String),
    /// The connection ended without a Close frame (recorded 1006); sent when the edge's
    /// [`InboundTx`] is dropped after no terminal frame.
    Lost,
}

impl Inbound {
    /// Whether nothing can follow it on the connection.
    #[must_use]
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Close(_) | Self::TooBig | Self::Protocol(_) | Self::Lost)
    }
}

/// The socket has stopped: it takes no more frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the socket has stopped")]
pub struct SocketGone;

/// How the edge hands a socket its inbound frames: into the actor's own mailbox (bounded:
/// [`InboundTx::send`] waits while it is full, so a client that sends faster than its socket
/// handles is not read further), with [`InboundTx::closed`] to learn that the socket has
/// stopped. Dropping it without having sent a terminal frame tells the socket that the
/// connection is gone ([`Inbound::Lost`]). No channel of its own: an idle socket holds none.
pub struct InboundTx {
    to: actix::Recipient<Inbound>,
    /// Resolves (its sender dropped) when the socket actor is gone.
    alive: Option<oneshot::Receiver<()>>,
    /// A terminal frame was delivered.
    ended: bool,
}

impl InboundTx {
    pub(crate) fn new(to: actix::Recipient<Inbound>, alive: oneshot::Receiver<()>) -> Self {
        Self { to, alive: Some(alive), ended: false }
    }

    /// Hands `frame` to the socket once its mailbox has room, and waits until it is handled.
    ///
    /// # Errors
    /// [`SocketGone`] once the socket has stopped (the frame is dropped).
    pub async fn send(&mut self, frame: Inbound) -> Result<(), SocketGone> {
        let terminal = frame.is_terminal();
        self.to.send(frame).await.map_err(|_| SocketGone)?;
        self.ended |= terminal;
        Ok(())
    }

    /// Resolves once the socket actor is gone (at once if it already is).
    pub async fn closed(&mut self) {
        if let Some(alive) = self.alive.as_mut() {
            let _ = alive.await;
        }
        self.alive = None;
    }
}

impl Drop for InboundTx {
    fn drop(&mut self) {
        if !self.ended && self.alive.is_some() {
            #[allow(clippy::disallowed_methods)]
            // one message, once, as the connection ends: it cannot pile up, and it must not be
            // lost to a full mailbox (the socket would only notice at its next write)
            self.to.do_send(Inbound::Lost);
        }
    }
}

impl std::fmt::Debug for InboundTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundTx").field("ended", &self.ended).finish_non_exhaustive()
    }
}

/// Everything one socket actor needs, handed from the edge to the supervisor's factory.
pub(crate) struct Connection {
    pub(crate) tenant: Arc<str>,
    pub(crate) ip: IpAddr,
    /// Dropped with the actor: the edge's [`InboundTx::closed`] resolves.
    pub(crate) alive: oneshot::Sender<()>,
    pub(crate) wire: Box<dyn Wire>,
    /// What it serves.
    pub(crate) protocol: Protocol,
}

/// The socket actor. Other crates reach sockets only through the registry and
/// [`crate::SocketService`].
pub struct Socket {
    /// Owning tenant.
    tenant: Arc<str>,
    /// Client IP (after trusted-proxy resolution).
    ip: IpAddr,
    /// Limits and timers.
    config: Arc<SocketConfig>,
    /// Where subscriptions go.
    jobs: JobHubHandle,
    /// Shared counters.
    stats: Arc<SocketStats>,
    /// The sending side of the outbound queue (also this socket's job sink).
    out: Arc<Outbound>,
    /// Moved into the writer task and the inbound stream when the actor starts.
    parts: Option<Parts>,
    /// Tells the writer to close; taken by the one close.
    close_tx: Option<oneshot::Sender<CloseCmd>>,
    /// Active subscriptions by job; dropping one ends it.
    subs: HashMap<JobId, Subscription>,
    /// Subscriptions asked of the hub and not answered yet.
    pending: HashSet<JobId>,
    /// Streams of this connection's tenant.
    streams: Option<Arc<dyn StreamPort>>,
    /// The WebRTC peer whose signaling this socket carries (`GET /v1/rtc`); dropped with the
    /// actor, which tells the peer.
    rtc: Option<Arc<dyn RtcPort>>,
    /// Active stream subscriptions by stream name; dropping one ends it.
    stream_subs: HashMap<String, Box<dyn StreamGuard>>,
    /// Stream subscriptions asked for and not answered yet.
    stream_pending: HashSet<String>,
    /// Token bucket of client events (`rate_limit`/s, `rate_burst`).
    bucket: DefaultDirectRateLimiter,
    /// Rate-limited events in the current abuse window, and when the window began.
    abuse: (Instant, u32),
    /// When the last frame of any kind was received (the pong deadline counts from it).
    last_received: Instant,
    /// The close decided by the socket itself (sent by [`steward_core::Resource::cleanup`]).
    close: Option<CloseFrame>,
    /// Tells the edge's pump, by its drop, that the socket is gone.
    _alive: oneshot::Sender<()>,
    /// Identity, tracker (the writer task), lifeline. Last, so it drops last: the socket leaves
    /// the registry only after its subscriptions and queue are released (the actor may run on
    /// another thread than whoever watches the registry).
    rcx: ResourceCtx,
}

/// What the actor moves out of itself when it starts.
struct Parts {
    wire: Box<dyn Wire>,
    rx: QueueRx,
    close_rx: oneshot::Receiver<CloseCmd>,
    report: ExitReport,
}

impl Socket {
    pub(crate) fn new(
        rcx: ResourceCtx,
        conn: Connection,
        config: Arc<SocketConfig>,
        jobs: JobHubHandle,
        stats: Arc<SocketStats>,
    ) -> Self {
        let max_bytes = usize::try_from(config.queue_bytes.as_u64()).unwrap_or(usize::MAX);
        let (out, rx) = outbound::queue(config.queue_messages as usize, max_bytes, stats.clone());
        let report = out.exit_report();
        let (close_tx, close_rx) = oneshot::channel();
        let bucket = RateLimiter::direct(rate_quota(&config));
        Self {
            rcx,
            tenant: conn.tenant,
            ip: conn.ip,
            jobs,
            stats,
            out,
            parts: Some(Parts { wire: conn.wire, rx, close_rx, report }),
            close_tx: Some(close_tx),
            subs: HashMap::new(),
            pending: HashSet::new(),
            streams: match &conn.protocol {
                Protocol::Jobs(streams) => streams.clone(),
                Protocol::Rtc(_) => None,
            },
            rtc: match conn.protocol {
                Protocol::Rtc(port) => Some(port),
                Protocol::Jobs(_) => None,
            },
            stream_subs: HashMap::new(),
            stream_pending: HashSet::new(),
            bucket,
            abuse: (Instant::now(), 0),
            last_received: Instant::now(),
            close: None,
            _alive: conn.alive,
            config,
        }
    }
}

/// The token bucket's quota: `rate_limit` per second, bursts of `rate_burst`.
fn rate_quota(config: &SocketConfig) -> Quota {
    let per_second =
        std::num::NonZeroU32::new(config.rate_limit).unwrap_or(std::num::NonZeroU32::MIN);
    let burst = std::num::NonZeroU32::new(config.rate_burst).unwrap_or(per_second);
    Quota::per_second(per_second).allow_burst(burst)
}
