//! The peer's lifecycle: its deadlines, the one close path and its cleanup.

use std::time::Duration;

use actix::prelude::*;
use futures_util::future::LocalBoxFuture;
use steward_core::{ExitReason, Resource, ResourceCtx, StopResource, stop_resource};

use super::{Attach, Close, PeerActor, Signal};
use crate::CloseReason;
use crate::room::Leave;
use crate::signal;

/// Messages a peer's mailbox holds before `PeerLink::signal` refuses (`rate_limited`); the
/// socket's own token bucket keeps a client far below it.
const MAILBOX: usize = 64;

impl Actor for PeerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX);
        let join = self.env.config.join_timeout;
        self.arm_deadline(ctx, join, CloseReason::JoinTimeout);
        let lifetime = self.env.config.max_lifetime;
        if !lifetime.is_zero() {
            self.rcx.run_later(ctx, lifetime, |act: &mut Self, ctx| {
                tracing::info!(peer = %act.peer_id, "the peer reached [rtc] max_lifetime");
                act.close(CloseReason::Error, ctx);
            });
        }
    }
}

impl Resource for PeerActor {
    fn resource_ctx(&self) -> &ResourceCtx {
        &self.rcx
    }

    fn resource_ctx_mut(&mut self) -> &mut ResourceCtx {
        &mut self.rcx
    }

    /// Tells the client why (`closing`), leaves the room, takes every track off the
    /// connection and closes it (bounded by `shutdown_timeout`; at shutdown
    /// `shutdown_concurrency` at a time), then closes the socket.
    fn cleanup(&mut self, exit: &ExitReason) -> LocalBoxFuture<'static, ()> {
        let shutting_down = self.rcx.registry().is_shutting_down();
        let reason = match (self.reason.take(), exit) {
            (_, _) if shutting_down => CloseReason::Shutdown,
            (Some(reason), _) => reason,
            (None, ExitReason::Normal | ExitReason::Shutdown) => CloseReason::Kicked,
            (None, _) => CloseReason::Error,
        };
        self.env.stats.closed(reason);
        tracing::debug!(peer = %self.peer_id, reason = reason.as_str(), "peer closing");
        self.send(signal::closing(reason));
        self.leave_room(reason);
        self.data.set(None);
        let subscriptions: Vec<_> = self.subscriptions.drain().map(|(_, s)| s).collect();
        for s in &subscriptions {
            s.task.abort();
        }
        self.published.clear();
        self.waiting.clear();
        let pc = self.pc.take();
        let signaling = self.signaling.clone();
        let timeout = self.env.config.shutdown_timeout;
        let (closing, stats) = (self.env.closing.clone(), self.env.stats.clone());
        Box::pin(async move {
            if let Some(pc) = pc {
                // at shutdown every peer closes at once: `shutdown_concurrency` at a time
                let _permit = if shutting_down { closing.acquire_owned().await.ok() } else { None };
                let closed =
                    tokio::time::timeout(timeout, super::media::release(pc, subscriptions));
                if closed.await.is_err() {
                    stats.forced_close();
                    tracing::warn!("a peer connection did not close within [rtc] shutdown_timeout");
                }
            }
            if let Some(signaling) = signaling {
                signaling.close();
            }
        })
    }
}

impl Drop for PeerActor {
    fn drop(&mut self) {
        // a kill skips the cleanup: the room must still learn it (idempotent)
        self.leave_room(self.reason.unwrap_or(CloseReason::Error));
    }
}

impl PeerActor {
    /// The one way the peer decides to close: records why, then the common stop path.
    pub(super) fn close(&mut self, reason: CloseReason, ctx: &mut Context<Self>) {
        if self.rcx.is_stopping() {
            return;
        }
        self.reason = Some(reason);
        let exit = if reason == CloseReason::Shutdown {
            ExitReason::Shutdown
        } else if reason.is_failure() {
            ExitReason::error(reason.as_str())
        } else {
            ExitReason::Normal
        };
        stop_resource(self, ctx, exit);
    }

    fn leave_room(&mut self, reason: CloseReason) {
        if let Some(room) = self.room.take() {
            #[allow(clippy::disallowed_methods)]
            // once, as the peer ends: the room must learn it even with a full mailbox
            room.addr.do_send(Leave { peer_id: self.peer_id.clone(), reason });
        }
    }

    /// Arms the current stage's deadline (replacing the previous one).
    pub(super) fn arm_deadline(
        &mut self,
        ctx: &mut Context<Self>,
        after: Duration,
        reason: CloseReason,
    ) {
        self.disarm_deadline(ctx);
        self.deadline = Some(self.rcx.run_later(ctx, after, move |act: &mut Self, ctx| {
            act.deadline = None;
            tracing::debug!(peer = %act.peer_id, reason = reason.as_str(), "peer deadline passed");
            act.close(reason, ctx);
        }));
    }

    pub(super) fn disarm_deadline(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.deadline.take() {
            ctx.cancel_future(handle);
        }
    }
}

impl Handler<Attach> for PeerActor {
    type Result = ();

    fn handle(&mut self, msg: Attach, _ctx: &mut Context<Self>) {
        self.signaling = Some(msg.0);
    }
}

impl Handler<Signal> for PeerActor {
    type Result = ();

    fn handle(&mut self, msg: Signal, ctx: &mut Context<Self>) {
        if self.rcx.is_stopping() {
            return;
        }
        self.rcx.touch();
        match signal::parse(&msg.0) {
            Ok(message) => self.on_message(message, ctx),
            Err(refusal) => self.send(refusal.frame()),
        }
    }
}

impl Handler<Close> for PeerActor {
    type Result = ();

    fn handle(&mut self, msg: Close, ctx: &mut Context<Self>) {
        self.close(msg.0, ctx);
    }
}

impl Handler<StopResource> for PeerActor {
    type Result = ();

    fn handle(&mut self, msg: StopResource, ctx: &mut Context<Self>) {
        stop_resource(self, ctx, msg.reason);
    }
}
