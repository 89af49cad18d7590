//! The closing handshake on the wire (RFC 6455 §7.1.1–§7.1.2), under actix-ws.
//!
//! actix-ws ends the response body right after the first Close frame it writes. Ended there, the
//! connection would be shut down before a client answers a server's Close, or (with actix-http's
//! default `client_disconnect_timeout` "linger") kept open until the client drops TCP, which a
//! client waits for the server to do: every clean close then cost the client that linger (1 s).
//! So the public listener does not linger, and the body is held open past the Close frame by
//! [`HoldOpen`] until the client's Close has been read (the pump drops its [`PeerClosed`]), or
//! for at most `close_timeout`. Then actix-http shuts the connection down at once: a client's
//! close completes in one round trip, and a client that never answers a server Close is dropped
//! after `close_timeout`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::web::Bytes;
use tokio::sync::oneshot;

/// Held by the pump while the client may still send its Close frame; dropped (by the pump) once
/// it did, or once the connection ended or failed: the body may end.
pub(super) type PeerClosed = oneshot::Sender<()>;

/// A response body that ends only after its inner body (actix-ws's) has ended *and* the peer's
/// Close was read or `close_timeout` passed since the inner body ended.
pub(super) struct HoldOpen {
    inner: BoxBody,
    inner_done: bool,
    peer: oneshot::Receiver<()>,
    close_timeout: Duration,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl HoldOpen {
    /// Wraps `inner`; `peer` resolves when the pump drops its [`PeerClosed`].
    pub(super) fn new(
        inner: BoxBody,
        peer: oneshot::Receiver<()>,
        close_timeout: Duration,
    ) -> Self {
        Self { inner, inner_done: false, peer, close_timeout, deadline: None }
    }
}

impl MessageBody for HoldOpen {
    type Error = <BoxBody as MessageBody>::Error;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        if !this.inner_done {
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(None) => this.inner_done = true,
                other => return other,
            }
        }
        // our Close frame is out: wait for the peer's (its sender dropped) or the deadline
        if Pin::new(&mut this.peer).poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        let timeout = this.close_timeout;
        let deadline = this.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}
