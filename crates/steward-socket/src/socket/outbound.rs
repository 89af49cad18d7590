//! The outbound path of one socket: the bounded queue (messages and bytes), the [`Wire`] it is
//! written to, and the writer task that owns both the queue's receiving end and the wire.
//!
//! Producers (the job hub, the socket's own replies, the ping timer) only ever `try_send` into
//! the queue: a full queue, a byte budget overrun or a write that misses its deadline closes the
//! socket with 4008 "slow consumer" and drops the backlog unsent (Centrifugo's client queue
//! behaves the same way). Nothing ever waits on a slow client except the writer task itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytestring::ByteString;
use futures_util::future::LocalBoxFuture;
use serde_json::Value;
use tokio::sync::{Notify, mpsc, oneshot, watch};

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

/// Where a socket's frames go: the transport under the actor (actix-ws in steward-http; an
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
    Closed,
    /// The queue overflowed or a write missed its deadline: it sent 4008 and dropped the backlog.
    SlowConsumer,
    /// The connection is gone.
    WireGone,
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
/// socket actor and the job hub's subscriber index.
pub(crate) struct Outbound {
    tx: mpsc::Sender<Outgoing>,
    shared: Arc<QueueShared>,
    max_bytes: usize,
    stats: Arc<SocketStats>,
}

/// State shared by both ends of the queue.
struct QueueShared {
    bytes: AtomicUsize,
    overflow: AtomicBool,
    wake: Notify,
}

/// The receiving end, owned by the writer. Dropping it (writer ended, or aborted with its
/// owner) closes the queue and releases what is left in it, with the gauges: the one place the
/// queue is released.
pub(crate) struct QueueRx {
    rx: mpsc::Receiver<Outgoing>,
    shared: Arc<QueueShared>,
    stats: Arc<SocketStats>,
}

/// Builds a queue bounded by `max_messages` and `max_bytes`.
pub(crate) fn queue(
    max_messages: usize,
    max_bytes: usize,
    stats: Arc<SocketStats>,
) -> (Arc<Outbound>, QueueRx) {
    let (tx, rx) = mpsc::channel(max_messages.max(1));
    let shared = Arc::new(QueueShared {
        bytes: AtomicUsize::new(0),
        overflow: AtomicBool::new(false),
        wake: Notify::new(),
    });
    (
        Arc::new(Outbound { tx, shared: shared.clone(), max_bytes, stats: stats.clone() }),
        QueueRx { rx, shared, stats },
    )
}

impl Outbound {
    /// Queues `frame` without waiting. A full queue or byte budget marks the socket a slow
    /// consumer (the writer closes it with 4008) and answers [`Offer::Overflow`].
    pub(crate) fn push(&self, frame: Outgoing) -> Offer {
        if self.shared.overflow.load(Ordering::Relaxed) {
            return Offer::Overflow;
        }
        let weight = frame.weight();
        let bytes = self.shared.bytes.fetch_add(weight, Ordering::Relaxed) + weight;
        if bytes > self.max_bytes {
            self.shared.bytes.fetch_sub(weight, Ordering::Relaxed);
            return self.overflow();
        }
        match self.tx.try_send(frame) {
            Ok(()) => {
                self.stats.queued(weight);
                Offer::Queued
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.shared.bytes.fetch_sub(weight, Ordering::Relaxed);
                self.overflow()
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.shared.bytes.fetch_sub(weight, Ordering::Relaxed);
                Offer::Closed
            }
        }
    }

    fn overflow(&self) -> Offer {
        if !self.shared.overflow.swap(true, Ordering::Relaxed) {
            self.shared.wake.notify_one();
        }
        Offer::Overflow
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
        self.tx.is_closed()
    }
}

impl crate::port::FrameSink for Outbound {
    fn offer_frame(&self, frame: ByteString) -> Offer {
        self.push(Outgoing::Text(frame))
    }

    fn is_sink_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

impl QueueRx {
    fn take(&mut self, frame: &Outgoing) {
        let weight = frame.weight();
        self.shared.bytes.fetch_sub(weight, Ordering::Relaxed);
        self.stats.dequeued(weight);
    }
}

impl Drop for QueueRx {
    fn drop(&mut self) {
        self.rx.close();
        while let Ok(frame) = self.rx.try_recv() {
            self.take(&frame);
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
/// the wire is gone, and reports why in `done`. Runs as a task tracked by the socket, so it is
/// aborted at the latest when the socket stops.
pub(crate) async fn write_loop(
    mut rx: QueueRx,
    mut wire: Box<dyn Wire>,
    mut close: oneshot::Receiver<CloseCmd>,
    timeouts: WriterTimeouts,
    done: watch::Sender<Option<WriterExit>>,
) {
    let shared = rx.shared.clone();
    let stats = rx.stats.clone();
    let exit = loop {
        if shared.overflow.load(Ordering::Relaxed) {
            break slow_consumer(wire, timeouts, &stats).await;
        }
        let step = tokio::select! {
            biased;
            cmd = &mut close => Step::Close(cmd.ok()),
            () = shared.wake.notified() => Step::Wake,
            frame = rx.rx.recv() => Step::Frame(frame),
        };
        let frame = match step {
            Step::Close(Some(cmd)) => break close_wire(rx, wire, cmd, timeouts, &stats).await,
            // the socket is gone without asking: nothing more to write
            Step::Close(None) | Step::Frame(None) => break WriterExit::Closed,
            Step::Wake => continue,
            Step::Frame(Some(frame)) => frame,
        };
        rx.take(&frame);
        let len = frame.weight();
        match tokio::time::timeout(timeouts.write, wire.send(frame)).await {
            Ok(Ok(())) => stats.sent(len),
            Ok(Err(WireClosed)) => break WriterExit::WireGone,
            Err(_) => break slow_consumer(wire, timeouts, &stats).await,
        }
    };
    let _ = done.send(Some(exit));
}

/// What woke the writer.
enum Step {
    Close(Option<CloseCmd>),
    Wake,
    Frame(Option<Outgoing>),
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
            rx.rx.close();
            while let Some(frame) = rx.rx.recv().await {
                rx.take(&frame);
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
