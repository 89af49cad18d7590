//! The outbound path of one socket: the bounded queue (messages and bytes), the [`Wire`] it is
//! written to, and the writer task that owns both the queue's receiving end and the wire.
//!
//! Producers (the job hub, the socket's own replies, the ping timer) only ever `try_send` into
//! the queue: a full queue, a byte budget overrun or a write that misses its deadline closes the
//! socket with 4008 "slow consumer" and drops the backlog unsent (Centrifugo's client queue
//! behaves the same way). Nothing ever waits on a slow client except the writer task itself.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use bytestring::ByteString;
use futures_util::future::LocalBoxFuture;
use futures_util::task::AtomicWaker;
use serde_json::Value;
use tokio::sync::oneshot;

use super::close::{CloseCode, CloseFrame};
use super::protocol;
use crate::jobs::{JobSink, JobUpdate, Offer};
use crate::stats::SocketStats;

/// How long a slow consumer's Close frame may wait for room on a stalled wire before the
/// connection is dropped without it.
const SLOW_CONSUMER_CLOSE: Duration = Duration::from_millis(100);

/// A frame Steward sends.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// A JSON text frame.
    Text(ByteString),
    /// A protocol Ping (empty payload).
    Ping,
    /// A protocol Pong echoing a client's Ping payload (at most 125 bytes, RFC 6455 §5.5).
    Pong(Vec<u8>),
}

impl Outgoing {
    /// Bytes it counts against the queue's byte budget.
    fn weight(&self) -> usize {
        match self {
            Self::Text(t) => t.len(),
            Self::Ping => 0,
            Self::Pong(p) => p.len(),
        }
    }
}

/// The wire is closed (the connection is gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireClosed;

/// Where a socket's frames go: the transport under the actor (the response body in steward-http; an
/// in-memory pair in tests). Created on the connection's thread and moved to the actor, so it
/// is `Send`; its futures run on the actor's arbiter.
pub trait Wire: Send + 'static {
    /// Writes one frame; resolves once the transport accepted it.
    fn send(&mut self, frame: Outgoing) -> LocalBoxFuture<'_, Result<(), WireClosed>>;

    /// Sends a Close frame with `code` and `reason` (RFC 6455 §5.5.1) and ends the wire.
    fn close(self: Box<Self>, code: u16, reason: &'static str) -> LocalBoxFuture<'static, ()>;
}

/// Why the writer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriterExit {
    /// It sent the Close frame the socket asked for.
    Closed = 1,
    /// The queue overflowed or a write missed its deadline: it sent 4008 and dropped the backlog.
    SlowConsumer = 2,
    /// The connection is gone.
    WireGone = 3,
}

/// [`QueueShared::exit`] while the writer runs.
const RUNNING: u8 = 0;
/// [`QueueShared::exit`] of a writer dropped before it ended (aborted with its socket).
const DROPPED: u8 = 4;

/// Tells the socket that its writer ended, and why, when dropped: owned by the writer's future,
/// so it reports even when that future is aborted (without a reason, then). It replaces a
/// `watch` channel (344 bytes per socket) with a byte and a waker in the queue's shared state.
pub(crate) struct ExitReport {
    shared: Arc<QueueShared>,
    exit: Option<WriterExit>,
    /// The socket, told by a message (no future of its own waits for it while it runs).
    to: Option<actix::Recipient<WriterEnded>>,
}

/// The writer ended by itself (slow consumer, connection gone), or was dropped (`None`).
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub(crate) struct WriterEnded(pub(crate) Option<WriterExit>);

impl ExitReport {
    /// Also tell `to` when the writer ends.
    pub(crate) fn notify(&mut self, to: actix::Recipient<WriterEnded>) {
        self.to = Some(to);
    }
}

impl Drop for ExitReport {
    fn drop(&mut self) {
        let code = self.exit.map_or(DROPPED, |e| e as u8);
        self.shared.exit.store(code, Ordering::Release);
        self.shared.exit_waker.wake();
        if let Some(to) = self.to.take() {
            #[allow(clippy::disallowed_methods)]
            // one message, once, as the writer ends: it cannot pile up, and it must not be lost
            // to a full mailbox (the socket would keep a dead connection until its pong deadline)
            to.do_send(WriterEnded(self.exit));
        }
    }
}

/// A close the socket asks the writer for.
#[derive(Debug)]
pub(crate) struct CloseCmd {
    pub(crate) frame: CloseFrame,
    /// Write what is queued first (bounded by the close timeout), e.g. the `idle_timeout`
    /// notice before Close 4000; otherwise the backlog is dropped.
    pub(crate) flush: bool,
}

/// The sending side of a socket's queue; also the socket's [`JobSink`]. Shared (`Arc`) by the
/// socket actor and the job hub's subscriber index; when the last holder drops it, the writer
/// sees the queue end.
pub(crate) struct Outbound {
    shared: Arc<QueueShared>,
    max_messages: usize,
    max_bytes: usize,
    stats: Arc<SocketStats>,
}

/// State shared by both ends of the queue. The frames are a `VecDeque` that allocates on the
/// first frame and is released again once drained, so an idle socket holds no queue
/// storage (a tokio channel allocates a 32-slot block up front, about 1.3 KiB per socket).
struct QueueShared {
    frames: Mutex<VecDeque<Outgoing>>,
    bytes: AtomicUsize,
    overflow: AtomicBool,
    /// The receiving end is gone: producers are told [`Offer::Closed`].
    rx_closed: AtomicBool,
    /// Every sender is gone: the writer ends once the queue is drained.
    tx_closed: AtomicBool,
    /// The writer, waiting for a frame, an overflow or the end.
    writer: AtomicWaker,
    /// How the writer ended ([`RUNNING`] until then; see [`ExitReport`]).
    exit: AtomicU8,
    /// The socket's cleanup, waiting for the writer's end ([`Outbound::writer_exit`]); while
    /// the socket runs it is told by a message ([`WriterEnded`]).
    exit_waker: AtomicWaker,
}

/// The receiving end, owned by the writer. Dropping it (writer ended, or aborted with its
/// owner) closes the queue and releases what is left in it, with the gauges: the one place the
/// queue is released.
pub(crate) struct QueueRx {
    shared: Arc<QueueShared>,
    stats: Arc<SocketStats>,
}

/// What the writer's wait for the queue gave.
enum Next {
    Frame(Outgoing),
    /// Marked a slow consumer.
    Overflow,
    /// Every sender is gone and nothing is left.
    End,
}

/// Builds a queue bounded by `max_messages` and `max_bytes`.
pub(crate) fn queue(
    max_messages: usize,
    max_bytes: usize,
    stats: Arc<SocketStats>,
) -> (Arc<Outbound>, QueueRx) {
    let shared = Arc::new(QueueShared {
        frames: Mutex::new(VecDeque::new()),
        bytes: AtomicUsize::new(0),
        overflow: AtomicBool::new(false),
        rx_closed: AtomicBool::new(false),
        tx_closed: AtomicBool::new(false),
        writer: AtomicWaker::new(),
        exit: AtomicU8::new(RUNNING),
        exit_waker: AtomicWaker::new(),
    });
    (
        Arc::new(Outbound {
            shared: shared.clone(),
            max_messages: max_messages.max(1),
            max_bytes,
            stats: stats.clone(),
        }),
        QueueRx { shared, stats },
    )
}

impl QueueShared {
    fn frames(&self) -> std::sync::MutexGuard<'_, VecDeque<Outgoing>> {
        self.frames.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Outbound {
    /// Queues `frame` without waiting. A full queue or byte budget marks the socket a slow
    /// consumer (the writer closes it with 4008) and answers [`Offer::Overflow`].
    pub(crate) fn push(&self, frame: Outgoing) -> Offer {
        let shared = &self.shared;
        if shared.overflow.load(Ordering::Relaxed) {
            return Offer::Overflow;
        }
        let weight = frame.weight();
        let bytes = shared.bytes.fetch_add(weight, Ordering::Relaxed) + weight;
        if bytes > self.max_bytes {
            shared.bytes.fetch_sub(weight, Ordering::Relaxed);
            return self.overflow();
        }
        {
            let mut frames = shared.frames();
            // checked under the lock the receiver's drop takes: nothing is queued after it
            if shared.rx_closed.load(Ordering::Acquire) {
                drop(frames);
                shared.bytes.fetch_sub(weight, Ordering::Relaxed);
                return Offer::Closed;
            }
            if frames.len() >= self.max_messages {
                drop(frames);
                shared.bytes.fetch_sub(weight, Ordering::Relaxed);
                return self.overflow();
            }
            frames.push_back(frame);
        }
        self.stats.queued(weight);
        shared.writer.wake();
        Offer::Queued
    }

    fn overflow(&self) -> Offer {
        if !self.shared.overflow.swap(true, Ordering::Relaxed) {
            self.shared.writer.wake();
        }
        Offer::Overflow
    }

    fn is_closed(&self) -> bool {
        self.shared.rx_closed.load(Ordering::Acquire)
    }

    /// The writer's [`ExitReport`]: hand it to [`write_loop`].
    pub(crate) fn exit_report(&self) -> ExitReport {
        ExitReport { shared: self.shared.clone(), exit: None, to: None }
    }

    /// Resolves once the writer has ended: why, or `None` if it was dropped before it ended.
    pub(crate) fn writer_exit(&self) -> impl Future<Output = Option<WriterExit>> + 'static {
        let shared = self.shared.clone();
        std::future::poll_fn(move |cx| {
            for attempt in 0..2 {
                match shared.exit.load(Ordering::Acquire) {
                    RUNNING => {}
                    1 => return Poll::Ready(Some(WriterExit::Closed)),
                    2 => return Poll::Ready(Some(WriterExit::SlowConsumer)),
                    3 => return Poll::Ready(Some(WriterExit::WireGone)),
                    _ => return Poll::Ready(None),
                }
                if attempt == 0 {
                    // registered, then checked again: an end in between is not missed
                    shared.exit_waker.register(cx.waker());
                }
            }
            Poll::Pending
        })
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        self.shared.tx_closed.store(true, Ordering::Release);
        self.shared.writer.wake();
    }
}

impl JobSink for Outbound {
    fn subscribed(&self, snapshot: &Arc<JobUpdate>, request: Option<&Value>) -> Offer {
        self.push(Outgoing::Text(protocol::subscribed(&snapshot.job, request)))
    }

    fn offer(&self, update: &Arc<JobUpdate>) -> Offer {
        self.push(Outgoing::Text(update.frame().clone()))
    }

    fn is_closed(&self) -> bool {
        Outbound::is_closed(self)
    }
}

impl crate::port::FrameSink for Outbound {
    fn offer_frame(&self, frame: ByteString) -> Offer {
        self.push(Outgoing::Text(frame))
    }

    fn is_sink_closed(&self) -> bool {
        Outbound::is_closed(self)
    }
}

impl QueueRx {
    fn take(&mut self, frame: &Outgoing) {
        let weight = frame.weight();
        self.shared.bytes.fetch_sub(weight, Ordering::Relaxed);
        self.stats.dequeued(weight);
    }

    /// Frames the queue has storage for now (0 when idle).
    #[cfg(test)]
    pub(super) fn storage(&self) -> usize {
        self.shared.frames().capacity()
    }

    /// The next frame, the overflow mark or the end, as the writer sees them.
    #[cfg(test)]
    pub(super) async fn next_for_test(&mut self) -> Option<Result<Outgoing, &'static str>> {
        match self.next().await {
            Next::Frame(frame) => Some(Ok(frame)),
            Next::Overflow => Some(Err("overflow")),
            Next::End => None,
        }
    }

    /// Refuses further frames ([`Offer::Closed`]); those queued stay to be drained.
    fn close(&mut self) {
        let _frames = self.shared.frames();
        self.shared.rx_closed.store(true, Ordering::Release);
    }

    /// The next frame, without waiting; `None` when the queue is empty.
    fn pop(&mut self) -> Option<Outgoing> {
        let frame = {
            let mut frames = self.shared.frames();
            let frame = frames.pop_front();
            // an idle socket keeps no storage (a few frames' worth was 160 bytes per socket);
            // the next frame allocates again
            if frames.is_empty() && frames.capacity() > 0 {
                *frames = VecDeque::new();
            }
            frame
        }?;
        self.take(&frame);
        Some(frame)
    }

    /// Waits for the next frame, the overflow mark, or the end (every sender gone, nothing left).
    fn next(&mut self) -> impl Future<Output = Next> + '_ {
        std::future::poll_fn(move |cx| {
            for attempt in 0..2 {
                if self.shared.overflow.load(Ordering::Relaxed) {
                    return Poll::Ready(Next::Overflow);
                }
                if let Some(frame) = self.pop() {
                    return Poll::Ready(Next::Frame(frame));
                }
                if self.shared.tx_closed.load(Ordering::Acquire) {
                    return Poll::Ready(Next::End);
                }
                if attempt == 0 {
                    // registered, then checked again: a push in between is not missed
                    self.shared.writer.register(cx.waker());
                }
            }
            Poll::Pending
        })
    }
}

impl Drop for QueueRx {
    fn drop(&mut self) {
        let left = {
            let mut frames = self.shared.frames();
            self.shared.rx_closed.store(true, Ordering::Release);
            std::mem::take(&mut *frames)
        };
        for frame in &left {
            self.take(frame);
        }
    }
}

/// Timeouts of the writer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WriterTimeouts {
    pub(crate) write: Duration,
    pub(crate) close: Duration,
}

/// The writer: owns the queue's receiving end and the wire; writes frames one at a time, each
/// within the write deadline; ends on a close request, on overflow, on a missed deadline or when
/// the wire is gone, and reports why through `report`. Runs as a task tracked by the socket, so
/// it is aborted at the latest when the socket stops.
pub(crate) async fn write_loop(
    mut rx: QueueRx,
    mut wire: Box<dyn Wire>,
    mut close: oneshot::Receiver<CloseCmd>,
    timeouts: WriterTimeouts,
    mut report: ExitReport,
) {
    let shared = rx.shared.clone();
    let stats = rx.stats.clone();
    let exit = loop {
        if shared.overflow.load(Ordering::Relaxed) {
            break Box::pin(slow_consumer(wire, timeouts, &stats)).await;
        }
        let step = tokio::select! {
            biased;
            cmd = &mut close => Step::Close(cmd.ok()),
            next = rx.next() => Step::Next(next),
        };
        let frame = match step {
            Step::Close(Some(cmd)) => {
                break Box::pin(close_wire(rx, wire, cmd, timeouts, &stats)).await;
            }
            // the socket is gone without asking: nothing more to write
            Step::Close(None) | Step::Next(Next::End) => break WriterExit::Closed,
            Step::Next(Next::Overflow) => continue,
            Step::Next(Next::Frame(frame)) => frame,
        };
        let len = frame.weight();
        // boxed, like the closing paths above: the writer waits idle far longer than it writes, and
        // its idle state is then a few words (an inline deadline would be kept by every socket)
        match Box::pin(tokio::time::timeout(timeouts.write, wire.send(frame))).await {
            Ok(Ok(())) => stats.sent(len),
            Ok(Err(WireClosed)) => break WriterExit::WireGone,
            Err(_) => break Box::pin(slow_consumer(wire, timeouts, &stats)).await,
        }
    };
    report.exit = Some(exit);
}

/// What woke the writer.
enum Step {
    Close(Option<CloseCmd>),
    Next(Next),
}

async fn slow_consumer(
    wire: Box<dyn Wire>,
    timeouts: WriterTimeouts,
    stats: &SocketStats,
) -> WriterExit {
    let frame = CloseFrame::new(CloseCode::SlowConsumer);
    // the wire is stalled: the Close frame gets a short chance, then the connection is dropped
    let bound = timeouts.close.min(SLOW_CONSUMER_CLOSE);
    let _ = tokio::time::timeout(bound, wire.close(frame.code.as_u16(), frame.reason)).await;
    stats.closed(frame.code);
    WriterExit::SlowConsumer
}

async fn close_wire(
    mut rx: QueueRx,
    mut wire: Box<dyn Wire>,
    cmd: CloseCmd,
    timeouts: WriterTimeouts,
    stats: &SocketStats,
) -> WriterExit {
    if cmd.flush {
        let flush = async {
            // what is queued now; the socket is closing, so nothing it sends later goes out
            rx.close();
            while let Some(frame) = rx.pop() {
                let len = frame.weight();
                if wire.send(frame).await.is_err() {
                    return false;
                }
                stats.sent(len);
            }
            true
        };
        match tokio::time::timeout(timeouts.close, flush).await {
            Ok(true) => {}
            Ok(false) => return WriterExit::WireGone,
            Err(_) => {}
        }
    }
    drop(rx);
    let frame = cmd.frame;
    let _ =
        tokio::time::timeout(timeouts.close, wire.close(frame.code.as_u16(), frame.reason)).await;
    stats.closed(frame.code);
    WriterExit::Closed
}
