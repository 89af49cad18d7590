//! The outbound side of a WebSocket connection: the socket's [`Wire`] hands encoded frames, one
//! at a time, to the response body ([`Body`]), which actix-http writes to the connection; and
//! the closing handshake on the wire (RFC 6455 §7.1.1–§7.1.2).
//!
//! One frame in flight: [`Wire::send`] resolves once the body has room for the frame, that is
//! once actix-http took the previous one, so a stalled client stalls the socket's writer (whose
//! write deadline then closes it with 4008) instead of filling a buffer here. An idle
//! connection holds one small shared slot and no channel (decision 0011).
//!
//! The body ends neither at the server's Close frame nor when the wire is dropped: ended there,
//! the connection would be shut down before a client answers a server's Close, or (with
//! actix-http's default `client_disconnect_timeout` "linger") kept open until the client drops
//! TCP, which a client waits for the server to do. So the public listener does not linger, and
//! the body is held open until the client's Close has been read (the pump drops its
//! [`PeerClosed`]), or for at most `close_timeout`. Then actix-http shuts the connection down
//! at once: a client's close completes in one round trip, and a client that never answers a
//! server Close is dropped after `close_timeout`.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use actix_http::ws::{Codec, Message};
use actix_web::body::{BodySize, MessageBody};
use actix_web::web::{Bytes, BytesMut};
use futures_util::future::LocalBoxFuture;
use steward_socket::socket::{Outgoing, Wire, WireClosed};
use tokio::sync::oneshot;
use tokio_util::codec::Encoder;

/// Held by the pump while the client may still send its Close frame; dropped (by the pump) once
/// it did, or once the connection ended or failed: the body may end.
pub(super) type PeerClosed = oneshot::Sender<()>;

/// What the wire and the body share.
#[derive(Default)]
struct Slot {
    /// The encoded frame the body has not taken yet.
    frame: Option<Bytes>,
    /// The wire is done (its Close frame handed over, or dropped): the body ends after `frame`.
    last: bool,
    /// The body is gone (the connection ended): nothing more can be written.
    gone: bool,
    /// The body, waiting for a frame or the end.
    body: Option<Waker>,
    /// The wire, waiting for the body to take `frame`.
    wire: Option<Waker>,
    /// The pump, waiting for the body to be dropped ([`BodyWatch`]).
    watch: Option<Waker>,
}

type Shared = Arc<Mutex<Slot>>;

fn lock(shared: &Shared) -> MutexGuard<'_, Slot> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Wakes `waker` (taken) if one was registered.
fn wake(waker: &mut Option<Waker>) {
    if let Some(waker) = waker.take() {
        waker.wake();
    }
}

/// Keeps `waker` as the one to wake, cloning only when it changed.
fn register(slot: &mut Option<Waker>, waker: &Waker) {
    if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
        *slot = Some(waker.clone());
    }
}

/// A wire, the response body it feeds, and a watch on the body's drop; `peer` resolves once the
/// pump drops its [`PeerClosed`].
pub(super) fn pair(
    peer: oneshot::Receiver<()>,
    close_timeout: Duration,
) -> (SlotWire, Body, BodyWatch) {
    let shared = Shared::default();
    (
        SlotWire { shared: shared.clone() },
        Body { shared: shared.clone(), wire_done: false, peer, close_timeout, deadline: None },
        BodyWatch { shared },
    )
}

/// Tells the pump whether actix-http has dropped the response body, which it does when it is
/// done with the connection.
pub(super) struct BodyWatch {
    shared: Shared,
}

impl BodyWatch {
    /// Whether the body was dropped.
    pub(super) fn is_gone(&self) -> bool {
        lock(&self.shared).gone
    }

    /// Resolves once the body is dropped.
    pub(super) fn gone(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| {
            let mut slot = lock(&self.shared);
            if slot.gone {
                return Poll::Ready(());
            }
            register(&mut slot.watch, cx.waker());
            Poll::Pending
        })
    }
}

/// The socket's [`Wire`]: encodes each frame (server frames are not masked) and hands it to the
/// [`Body`].
pub(super) struct SlotWire {
    shared: Shared,
}

impl SlotWire {
    /// Hands `frame` to the body once it has taken the previous one.
    fn put(&self, frame: Bytes) -> impl Future<Output = Result<(), WireClosed>> + 'static {
        let shared = self.shared.clone();
        let mut frame = Some(frame);
        std::future::poll_fn(move |cx| {
            let mut slot = lock(&shared);
            if slot.gone {
                return Poll::Ready(Err(WireClosed));
            }
            if slot.frame.is_some() {
                register(&mut slot.wire, cx.waker());
                return Poll::Pending;
            }
            slot.frame = frame.take();
            wake(&mut slot.body);
            Poll::Ready(Ok(()))
        })
    }
}

/// `message` as one frame on the wire.
fn encode(message: Message, payload: usize) -> Bytes {
    // a frame header is at most 10 bytes from a server (RFC 6455 §5.2)
    let mut buf = BytesMut::with_capacity(payload + 10);
    // encoding fails only for a control frame payload over 125 bytes, which the socket never
    // sends (a Pong echoes at most a Ping's 125, a Close reason is a short constant)
    if let Err(e) = Codec::new().encode(message, &mut buf) {
        tracing::warn!(error = %e, "a WebSocket frame could not be encoded");
    }
    buf.freeze()
}

impl Wire for SlotWire {
    fn send(&mut self, frame: Outgoing) -> LocalBoxFuture<'_, Result<(), WireClosed>> {
        let bytes = match frame {
            Outgoing::Text(text) => {
                let len = text.len();
                encode(Message::Text(text), len)
            }
            Outgoing::Ping => encode(Message::Ping(Bytes::new()), 0),
            Outgoing::Pong(payload) => {
                let len = payload.len();
                encode(Message::Pong(Bytes::from(payload)), len)
            }
        };
        Box::pin(self.put(bytes))
    }

    fn close(self: Box<Self>, code: u16, reason: &'static str) -> LocalBoxFuture<'static, ()> {
        let len = 2 + reason.len();
        let reason =
            actix_http::ws::CloseReason { code: code.into(), description: Some(reason.to_owned()) };
        let bytes = encode(Message::Close(Some(reason)), len);
        let put = self.put(bytes);
        Box::pin(async move {
            let _ = put.await;
            // dropping the wire marks it done: the body ends after the Close frame
            drop(self);
        })
    }
}

impl Drop for SlotWire {
    fn drop(&mut self) {
        let mut slot = lock(&self.shared);
        slot.last = true;
        wake(&mut slot.body);
    }
}

/// The WebSocket response body: the frames the wire hands over, then held open for the
/// client's Close (see the module docs).
pub(super) struct Body {
    shared: Shared,
    /// The wire is done and its last frame taken.
    wire_done: bool,
    peer: oneshot::Receiver<()>,
    close_timeout: Duration,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl MessageBody for Body {
    type Error = std::convert::Infallible;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        if !this.wire_done {
            let mut slot = lock(&this.shared);
            if let Some(frame) = slot.frame.take() {
                wake(&mut slot.wire);
                return Poll::Ready(Some(Ok(frame)));
            }
            if !slot.last {
                register(&mut slot.body, cx.waker());
                return Poll::Pending;
            }
            this.wire_done = true;
        }
        // the wire is done (our Close frame is out): wait for the peer's or the deadline
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

impl Drop for Body {
    fn drop(&mut self) {
        let mut slot = lock(&self.shared);
        slot.gone = true;
        slot.frame = None;
        wake(&mut slot.wire);
        wake(&mut slot.watch);
    }
}

#[cfg(test)]
mod tests {
    use actix_http::ws::Frame;
    use futures_util::FutureExt;
    use tokio_util::codec::Decoder;

    use super::*;

    async fn next(body: &mut Body) -> Option<Bytes> {
        std::future::poll_fn(|cx| Pin::new(&mut *body).poll_next(cx))
            .await
            .map(|r| r.unwrap_or_else(|e| match e {}))
    }

    /// The frame as a client reads it.
    fn frame(bytes: Bytes) -> Frame {
        let mut buf = BytesMut::from(bytes);
        Codec::new().client_mode().decode(&mut buf).unwrap().unwrap()
    }

    #[actix_web::test]
    async fn one_frame_is_in_flight_and_the_body_writes_them_in_order() {
        let (_peer_closed, peer) = oneshot::channel();
        let (mut wire, mut body, _watch) = pair(peer, Duration::from_secs(5));
        assert_eq!(wire.send(Outgoing::Text("one".into())).await, Ok(()));
        // the body has not taken the first frame: the second waits
        let mut second = wire.send(Outgoing::Text("two".into()));
        assert!((&mut second).now_or_never().is_none());
        assert_eq!(frame(next(&mut body).await.unwrap()), Frame::Text(Bytes::from_static(b"one")));
        assert_eq!(second.await, Ok(()));
        assert_eq!(frame(next(&mut body).await.unwrap()), Frame::Text(Bytes::from_static(b"two")));
        wire.send(Outgoing::Pong(b"p".to_vec())).await.unwrap();
        assert_eq!(frame(next(&mut body).await.unwrap()), Frame::Pong(Bytes::from_static(b"p")));
        // nothing queued: the body waits
        assert!(next(&mut body).now_or_never().is_none());
    }

    #[actix_web::test]
    async fn a_gone_body_fails_the_waiting_send_and_every_later_one() {
        let (_peer_closed, peer) = oneshot::channel();
        let (mut wire, body, watch) = pair(peer, Duration::from_secs(5));
        wire.send(Outgoing::Ping).await.unwrap();
        let waiting = {
            let mut send = wire.send(Outgoing::Ping);
            assert!((&mut send).now_or_never().is_none());
            drop(body);
            send.await
        };
        assert_eq!(waiting, Err(WireClosed));
        assert!(watch.is_gone());
        watch.gone().await;
        assert_eq!(wire.send(Outgoing::Text("late".into())).await, Err(WireClosed));
    }

    #[actix_web::test]
    async fn after_the_close_frame_the_body_ends_once_the_peer_answered() {
        let (peer_closed, peer) = oneshot::channel();
        let (wire, mut body, _watch) = pair(peer, Duration::from_secs(60));
        let close = Box::new(wire).close(4000, "idle");
        let reader = async {
            let bytes = next(&mut body).await.unwrap();
            // held open: the client has not answered yet
            assert!(next(&mut body).now_or_never().is_none());
            drop(peer_closed);
            (bytes, next(&mut body).await)
        };
        let ((bytes, end), ()) = tokio::join!(reader, close);
        match frame(bytes) {
            Frame::Close(Some(reason)) => {
                assert_eq!(u16::from(reason.code), 4000);
                assert_eq!(reason.description.as_deref(), Some("idle"));
            }
            other => panic!("not a Close frame: {other:?}"),
        }
        assert_eq!(end, None);
    }

    #[actix_web::test]
    async fn a_dropped_wire_ends_the_body_after_close_timeout_without_an_answer() {
        let (_peer_closed, peer) = oneshot::channel();
        let (mut wire, mut body, _watch) = pair(peer, Duration::from_millis(100));
        wire.send(Outgoing::Text("bye".into())).await.unwrap();
        drop(wire);
        // what was handed over still goes out
        assert_eq!(frame(next(&mut body).await.unwrap()), Frame::Text(Bytes::from_static(b"bye")));
        let started = std::time::Instant::now();
        assert_eq!(next(&mut body).await, None);
        assert!(started.elapsed() >= Duration::from_millis(100), "{:?}", started.elapsed());
    }
}
