//! Every single stop a supervisor asks for is bounded: the stop request, the kill deadline
//! queue (one timer, armed at the earliest deadline) and what happens at a deadline.
//!
//! Whatever asks a child to stop — [`super::TerminateChild`], [`super::RestartChild`],
//! [`super::Control`], a drain, a panicking tracked task, or the child itself through
//! `stop_resource` — the child gets a deadline (its `shutdown`). At the deadline its task is
//! aborted (OTP's `brutal_kill` after `shutdown` ms), counted as killed and recorded as
//! [`ExitReason::Killed`]; its slot is then released like any other, holds included. A killed
//! actor that is still not dropped `KILL_GRACE` later (its thread is blocked) is given up on.

use std::time::{Duration, Instant};

use actix::prelude::*;

use super::Supervisor;
use crate::{Error, ExitReason, LifecycleState, Result, StopResource};

/// After a child was killed, how long to wait for its actor to be dropped before the supervisor
/// gives up on it (logged as an error: an actor blocking its thread cannot be stopped).
const KILL_GRACE: Duration = Duration::from_secs(2);

impl Supervisor {
    /// Asks slot `seq`'s running child to stop with `reason` and arms its kill deadline: its
    /// `shutdown`, or `within` when that is shorter.
    pub(super) fn stop_child(
        &mut self,
        seq: u64,
        reason: ExitReason,
        within: Option<Duration>,
        ctx: &mut Context<Self>,
    ) {
        let deadline = within.map_or(self.deadline_of(seq), |w| w.min(self.deadline_of(seq)));
        let Some(slot) = self.slots.get(&seq) else { return };
        let Some(running) = &slot.running else { return };
        slot.shared.set_state(LifecycleState::Stopping);
        // before the stop is sent: the child need not tell us that its stop began
        slot.shared.mark_kill_armed();
        send_stop(&running.stop, reason, ctx);
        self.arm_kill(seq, Instant::now() + deadline, ctx);
    }

    /// Terminates child `id` for good: stops it (bounded) and forgets it when it exits, or
    /// forgets it now when it is waiting out a restart.
    pub(super) fn terminate(
        &mut self,
        id: crate::ResourceId,
        reason: ExitReason,
        ctx: &mut Context<Self>,
    ) -> Result<()> {
        let seq = *self.by_id.get(&id).ok_or(Error::NotFound(id))?;
        let slot = self.slots.get_mut(&seq).ok_or(Error::NotFound(id))?;
        slot.terminating = true;
        if slot.running.is_some() {
            self.stop_child(seq, reason, None, ctx);
        } else {
            if let Some(handle) = slot.pending.take() {
                ctx.cancel_future(handle);
                self.rcx.registry().restart_pending(slot.spec.kind, false);
            }
            self.forget(seq, &reason);
        }
        Ok(())
    }

    /// An operator's restart of child `id`: a bounded stop, then a fresh actor at once.
    pub(super) fn restart(&mut self, id: crate::ResourceId, ctx: &mut Context<Self>) -> Result<()> {
        if self.stopping || self.drain.is_some() || self.rcx.registry().is_shutting_down() {
            return Err(Error::ShuttingDown);
        }
        let seq = *self.by_id.get(&id).ok_or(Error::NotFound(id))?;
        let slot = self.slots.get_mut(&seq).ok_or(Error::NotFound(id))?;
        if slot.terminating {
            return Err(Error::NotFound(id));
        }
        if slot.running.is_some() {
            slot.restart_now = true;
            self.stop_child(seq, ExitReason::Shutdown, None, ctx);
        } else {
            if let Some(handle) = slot.pending.take() {
                ctx.cancel_future(handle);
                self.rcx.registry().restart_pending(slot.spec.kind, false);
            }
            self.restart_slot(seq, ctx);
        }
        Ok(())
    }

    /// Makes slot `seq`'s running child be killed at `at`, unless it is due earlier already.
    pub(super) fn arm_kill(&mut self, seq: u64, at: Instant, ctx: &mut Context<Self>) {
        let Some(running) = self.slots.get_mut(&seq).and_then(|s| s.running.as_mut()) else {
            return;
        };
        if running.kill_at.is_some_and(|t| t <= at) {
            return;
        }
        if let Some(old) = running.kill_at.replace(at) {
            self.kills.remove(&(old, seq));
        }
        self.kills.insert((at, seq));
        self.arm_kill_timer(ctx);
    }

    /// Keeps the one kill timer armed at the earliest deadline (none when there is none).
    pub(super) fn arm_kill_timer(&mut self, ctx: &mut Context<Self>) {
        let next = self.kills.first().map(|(at, _)| *at);
        match (next, &self.kill_timer) {
            (Some(next), Some((armed, _))) if *armed <= next => return,
            (None, None) => return,
            _ => {}
        }
        if let Some((_, handle)) = self.kill_timer.take() {
            ctx.cancel_future(handle);
        }
        let Some(next) = next else { return };
        let delay = next.saturating_duration_since(Instant::now());
        let handle = self.rcx.run_later(ctx, delay, |act: &mut Self, ctx| {
            act.kill_timer = None;
            act.on_kill_deadlines(ctx);
        });
        self.kill_timer = Some((next, handle));
    }

    /// Kills every child past its deadline; gives up on killed ones that are still not gone.
    fn on_kill_deadlines(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let mut given_up = Vec::new();
        while let Some(&(at, seq)) = self.kills.first() {
            if at > now {
                break;
            }
            self.kills.pop_first();
            let registry = self.rcx.registry().clone();
            let Some(slot) = self.slots.get_mut(&seq) else { continue };
            let Some(running) = slot.running.as_mut() else { continue };
            if running.kill_at != Some(at) {
                continue;
            }
            if running.killed {
                given_up.push(seq);
                continue;
            }
            tracing::warn!(child = %slot.id, name = %slot.spec.name, "child missed its shutdown deadline, killing");
            running.killed = true;
            slot.shared.mark_killed();
            registry.count_kill(slot.spec.kind);
            running.abort.abort();
            running.kill_at = Some(now + KILL_GRACE);
            self.kills.insert((now + KILL_GRACE, seq));
        }
        for seq in given_up {
            if let Some(slot) = self.slots.get(&seq) {
                tracing::error!(child = %slot.id, name = %slot.spec.name, "killed child was not dropped in time (its thread is blocked?); giving up on it");
                self.child_gone(seq, &ExitReason::Killed, ctx);
            }
        }
        self.arm_kill_timer(ctx);
    }
}

/// Queues a [`StopResource`] for a child; a full mailbox is waited on in a future the
/// supervisor owns (dropped with it), never grown without bound. The kill deadline is armed by
/// the caller either way.
fn send_stop(stop: &Recipient<StopResource>, reason: ExitReason, ctx: &mut Context<Supervisor>) {
    if let Err(SendError::Full(msg)) = stop.try_send(StopResource { reason }) {
        let stop = stop.clone();
        ctx.spawn(actix::fut::wrap_future(async move {
            let _ = stop.send(msg).await;
        }));
    }
}
