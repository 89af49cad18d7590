//! The socket's lifecycle: start (writer, inbound stream, timers), the one close path, cleanup.

use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::future::LocalBoxFuture;
use steward_core::{ExitReason, Resource, ResourceCtx, StopResource, stop_resource};

use super::close::{CloseCode, CloseFrame};
use super::outbound::{CloseCmd, Outgoing, WriterEnded, WriterExit, WriterTimeouts, write_loop};
use super::{Socket, protocol};

impl Actor for Socket {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some(mut parts) = self.parts.take() else { return };
        // learn when the writer ends on its own (slow consumer, connection gone)
        parts.report.notify(ctx.address().recipient());
        self.rcx.touch();
        let timeouts =
            WriterTimeouts { write: self.config.write_timeout, close: self.config.close_timeout };
        let writer = write_loop(parts.rx, parts.wire, parts.close_rx, timeouts, parts.report);
        if self.rcx.tracker().spawn(writer).is_err() {
            // only possible when the owner is already stopping
            ctx.stop();
            return;
        }
        if let Some(rtc) = &self.rtc {
            rtc.attach(self.out.clone(), ctx.address().recipient());
        }
        let every = self.config.ping_interval;
        self.rcx.run_interval(ctx, every, |act: &mut Self, ctx| act.ping(ctx));
        self.arm_pong_deadline(ctx);
    }
}

impl Resource for Socket {
    fn resource_ctx(&self) -> &ResourceCtx {
        &self.rcx
    }

    fn resource_ctx_mut(&mut self) -> &mut ResourceCtx {
        &mut self.rcx
    }

    /// Sends the Close frame this stop calls for, after what is already queued (bounded by the
    /// close timeout), and waits (bounded) for the writer to end. The subscriptions, timers and
    /// the queue are released when the actor drops right after.
    fn cleanup(&mut self, reason: &ExitReason) -> LocalBoxFuture<'static, ()> {
        let (frame, flush) = match (self.close.take(), reason) {
            // replies already queued (the `rate_limited` errors before a 1008, say) go out
            // first, bounded by the close timeout; only a slow consumer's backlog is dropped
            (Some(frame), _) => (frame, frame.code != CloseCode::SlowConsumer),
            (None, ExitReason::Idle) => {
                let notice = protocol::notice(
                    "idle_timeout",
                    "no application message within the idle timeout; closing",
                );
                let _ = self.out.push(Outgoing::Text(notice));
                (CloseFrame::new(CloseCode::IdleTimeout), true)
            }
            (None, ExitReason::Shutdown) if self.rcx.registry().is_shutting_down() => {
                (CloseFrame::new(CloseCode::GoingAway), true)
            }
            (None, ExitReason::Shutdown | ExitReason::Normal) => {
                (CloseFrame { code: CloseCode::Normal, reason: "closed by the server" }, true)
            }
            (None, _) => (CloseFrame::new(CloseCode::Internal), false),
        };
        let sent =
            self.close_tx.take().is_some_and(|tx| tx.send(CloseCmd { frame, flush }).is_ok());
        let exit = self.out.writer_exit();
        let bound = self.config.close_timeout * 2 + self.config.write_timeout;
        Box::pin(async move {
            if sent {
                let _ = tokio::time::timeout(bound, exit).await;
            }
        })
    }
}

impl Handler<WriterEnded> for Socket {
    type Result = ();

    fn handle(&mut self, msg: WriterEnded, ctx: &mut Context<Self>) {
        self.writer_ended(msg.0, ctx);
    }
}

impl Handler<StopResource> for Socket {
    type Result = ();

    fn handle(&mut self, msg: StopResource, ctx: &mut Context<Self>) {
        stop_resource(self, ctx, msg.reason);
    }
}

impl Socket {
    /// The one way the socket decides to close itself: records the frame, then the common stop
    /// path (cleanup sends the frame; the actor's drop releases everything else).
    pub(super) fn close_with(&mut self, frame: CloseFrame, ctx: &mut Context<Self>) {
        if self.rcx.is_stopping() {
            return;
        }
        tracing::debug!(close_code = frame.code.as_u16(), reason = frame.reason, ip = %self.ip, "closing socket");
        self.close = Some(frame);
        let reason = match frame.code {
            CloseCode::Normal | CloseCode::Abnormal => ExitReason::Normal,
            code => ExitReason::error(format!("close {} {}", code.as_u16(), frame.reason)),
        };
        stop_resource(self, ctx, reason);
    }

    /// The writer ended by itself: the client is too slow or gone.
    fn writer_ended(&mut self, exit: Option<WriterExit>, ctx: &mut Context<Self>) {
        if self.rcx.is_stopping() {
            return;
        }
        match exit {
            Some(WriterExit::SlowConsumer) => {
                // the writer already sent 4008 and counted it; stop without another frame
                self.close_tx = None;
                self.close = None;
                stop_resource(self, ctx, ExitReason::error("close 4008 slow consumer"));
            }
            Some(WriterExit::WireGone | WriterExit::Closed) | None => self.connection_lost(ctx),
        }
    }

    /// The connection went away without a Close frame (1006, recorded, never sent): nothing is
    /// left to write to, so the stop sends no frame.
    pub(super) fn connection_lost(&mut self, ctx: &mut Context<Self>) {
        if self.rcx.is_stopping() {
            return;
        }
        self.close_tx = None;
        self.stats.closed(CloseCode::Abnormal);
        stop_resource(self, ctx, ExitReason::Normal);
    }

    /// The ping timer: a protocol Ping through the queue (a full queue makes this a slow
    /// consumer, closed by the writer).
    fn ping(&mut self, _ctx: &mut Context<Self>) {
        if !self.rcx.is_stopping() {
            let _ = self.out.push(Outgoing::Ping);
        }
    }

    /// Arms the pong deadline at last receive + `ping_interval` + `pong_timeout`; when it fires
    /// with nothing received since, closes with 4012 "no pong", else re-arms.
    pub(super) fn arm_pong_deadline(&mut self, ctx: &mut Context<Self>) {
        let window = self.config.ping_interval + self.config.pong_timeout;
        let deadline = self.last_received + window;
        let delay =
            deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        self.rcx.run_later(ctx, delay, move |act: &mut Self, ctx| {
            if act.last_received.elapsed() >= window {
                act.close_with(CloseFrame::new(CloseCode::NoPong), ctx);
            } else {
                act.arm_pong_deadline(ctx);
            }
        });
    }
}
