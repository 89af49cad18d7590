//! The ports of a socket: how it reaches what other crates serve without knowing them.
//!
//! The streams port: how a socket reaches streams (`subscribe {stream}`) without knowing the
//! streams crate. The edge (steward-http) implements [`StreamPort`] over `steward-streams` for
//! each admitted connection (it knows the caller's quotas) and hands it to the socket; the
//! socket offers its outbound queue as a [`FrameSink`] and keeps the [`StreamGuard`] it gets
//! back, whose drop ends the subscription.

use std::sync::Arc;

use bytestring::ByteString;
use futures_util::future::BoxFuture;
use serde_json::Value;

use crate::jobs::Offer;

/// A `subscribe {stream}` request, validated for shape (the port validates the names).
#[derive(Debug, Clone, PartialEq)]
pub struct StreamRequest {
    /// The stream's name.
    pub stream: String,
    /// The recovery point `(offset, epoch)`, if the client gave one.
    pub since: Option<(u64, String)>,
    /// Whether the client asked for the latest values.
    pub latest: bool,
    /// The client's request id, echoed in the `subscribed` frame.
    pub id: Option<Value>,
}

/// Where a subscription's frames go: the socket's bounded outbound queue. Offers never wait.
pub trait FrameSink: Send + Sync {
    /// Offers one text frame (already rendered).
    fn offer_frame(&self, frame: ByteString) -> Offer;

    /// Whether the socket is gone.
    fn is_sink_closed(&self) -> bool;
}

/// A live stream subscription of a socket; dropping it ends the subscription.
pub trait StreamGuard: Send + Sync {
    /// Whether the stream still delivers to it (false once the stream ended it).
    fn is_active(&self) -> bool;
}

/// A refused subscription: a WebSocket error `code` (`bad_request`, `quota_exceeded`,
/// `unavailable`, …) and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortError {
    /// The error code of the WebSocket protocol.
    pub code: &'static str,
    /// What went wrong.
    pub message: String,
}

/// Streams as one connection sees them.
pub trait StreamPort: Send + Sync {
    /// Subscribes `sink` to a stream: the `subscribed` frame (with the recovered publications
    /// and latest values) is offered first, then `publication` frames in offset order.
    ///
    /// # Errors
    /// A [`PortError`] naming why; nothing was subscribed.
    fn subscribe(
        &self,
        request: StreamRequest,
        sink: Arc<dyn FrameSink>,
    ) -> BoxFuture<'static, Result<Box<dyn StreamGuard>, PortError>>;
}

/// What a socket serves: the jobs and streams protocol of `GET /v1/ws`, or the signaling of a
/// WebRTC peer (`GET /v1/rtc`).
#[derive(Clone)]
pub enum Protocol {
    /// `docs/protocol/websocket.md`; streams through the port when given (`None`: `subscribe
    /// {stream}` is answered `unavailable`).
    Jobs(Option<Arc<dyn StreamPort>>),
    /// `docs/protocol/rtc.md`: every text message goes to the peer behind the port.
    Rtc(Arc<dyn RtcPort>),
}

/// Closes a signaling socket when its peer ends: 1000 "call ended", or 1001 while the server
/// shuts down. Handled by the socket actor.
#[derive(Debug, Clone, Copy, actix::Message)]
#[rtype(result = "()")]
pub struct CloseSocket;

/// A WebRTC peer as its signaling socket sees it. The edge implements it over `steward-rtc`;
/// dropping it (with the socket) tells the peer its signaling is lost.
pub trait RtcPort: Send + Sync {
    /// Called once as the socket starts: where the peer's frames go (the socket's bounded
    /// queue) and how it closes the socket.
    fn attach(&self, sink: Arc<dyn FrameSink>, close: actix::Recipient<CloseSocket>);

    /// One text message of the client (after the socket's rate limit), handed over without
    /// waiting.
    ///
    /// # Errors
    /// A [`PortError`] (`rate_limited` when the peer is busy) to answer with; the socket stays
    /// open.
    fn signal(&self, text: ByteString) -> Result<(), PortError>;
}
