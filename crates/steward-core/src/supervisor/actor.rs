//! The supervisor's lifecycle and restart logic: what happens when a child exits, restart
//! intensity and escalation, one-for-all rounds, and stopping its children in order.

use std::time::{Duration, Instant};

use actix::prelude::*;

use super::{After, Drain, RestartType, Strategy, Supervisor};
use crate::{ExitReason, LifecycleState, Resource, ResourceCtx};

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // The mailbox cap of a supervisor only bounds commands; notices use its inbox.
        ctx.set_mailbox_capacity(1024);
        self.rcx.registry().attach_port(self.rcx.id(), self.port.clone());
        if let Some(rx) = self.inbox.take() {
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|m| (m, rx))
            });
            ctx.add_stream(stream);
        }
        let children = self.spec.children.clone();
        for spec in children {
            let name = spec.name.to_string();
            if let Err(e) = self.add_child(spec) {
                tracing::error!(supervisor = %self.rcx.id(), child = %name, error = %e, "static child failed to start");
                if let Some(ready) = self.ready.take() {
                    let _ = ready.send(Err(e.clone()));
                }
                self.begin_stop(ExitReason::error(e), None, ctx);
                return;
            }
        }
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(Ok(()));
        }
    }
}

impl Resource for Supervisor {
    fn resource_ctx(&self) -> &ResourceCtx {
        &self.rcx
    }

    fn resource_ctx_mut(&mut self) -> &mut ResourceCtx {
        &mut self.rcx
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        // Normal exits leave no slots. Anything left means the supervisor itself died (panic,
        // kill): its children die with it, as linked processes do in OTP. They leave the
        // registry now: a child's lifeline may already have reported to this supervisor's inbox,
        // which nobody will read (a later report fails and removes nothing twice).
        for slot in self.slots.values() {
            if let Some(running) = &slot.running {
                slot.shared.mark_killed();
                running.abort.abort();
                self.rcx.registry().remove(slot.id, &ExitReason::Killed);
            } else {
                self.rcx.registry().remove(slot.id, &ExitReason::Shutdown);
            }
            if slot.pending.is_some() {
                self.rcx.registry().restart_pending(slot.spec.kind, false);
            }
        }
    }
}

impl Supervisor {
    /// Slot `seq`'s running incarnation is gone (its lifeline reported, or it was given up on)
    /// with `reason`: release it, then terminate, drain, restart now or apply the policy.
    pub(super) fn child_gone(&mut self, seq: u64, reason: &ExitReason, ctx: &mut Context<Self>) {
        let Some(slot) = self.slots.get_mut(&seq) else { return };
        let Some(running) = slot.running.take() else { return };
        let id = slot.id;
        if let Some(at) = running.kill_at {
            self.kills.remove(&(at, seq));
            self.arm_kill_timer(ctx);
        }
        let uptime = running.since.elapsed();
        self.rcx.registry().detach(id);
        if let Some(drain) = &mut self.drain {
            drain.current.remove(&id);
        }
        let slot = &self.slots[&seq];
        if slot.terminating {
            // an operator's terminate wins over any restart, a one-for-all round's included
            self.forget(seq, reason);
            self.drain_step(ctx);
            return;
        }
        if let Some(drain) = &self.drain {
            match drain.after {
                // it comes back with the round, unless it is temporary (OTP: a temporary child
                // is never restarted, even when a sibling's exit stopped it)
                After::RestartAll(_) if slot.spec.restart != RestartType::Temporary => {
                    self.rcx.registry().set_state(id, LifecycleState::Restarting);
                }
                _ => self.forget(seq, reason),
            }
            self.drain_step(ctx);
            return;
        }
        if slot.restart_now {
            self.slots.get_mut(&seq).expect("slot exists").restart_now = false;
            self.rcx.registry().record_restart(id, reason, 0, Duration::ZERO);
            self.restart_slot(seq, ctx);
            return;
        }
        self.handle_exit(seq, reason, uptime, ctx);
    }

    /// Applies the restart policy to slot `seq`, whose incarnation exited with `reason`.
    fn handle_exit(
        &mut self,
        seq: u64,
        reason: &ExitReason,
        uptime: Duration,
        ctx: &mut Context<Self>,
    ) {
        let Some(slot) = self.slots.get(&seq) else { return };
        let restart = slot.spec.restart.should_restart(reason)
            && !self.rcx.registry().is_shutting_down()
            && self.drain.is_none()
            && !self.stopping;
        if !restart {
            self.forget(seq, reason);
            return;
        }
        if self.spec.intensity.record(&mut self.restart_log, Instant::now()) {
            self.forget(seq, reason);
            self.escalate(ctx);
            return;
        }
        let slot = self.slots.get_mut(&seq).expect("slot exists");
        if uptime >= self.spec.backoff.reset_after {
            slot.consecutive = 0;
        }
        slot.consecutive += 1;
        let attempt = slot.consecutive;
        let delay = self.spec.backoff.delay(attempt);
        let (id, name) = (slot.id, slot.spec.name.clone());
        tracing::warn!(child = %id, name = %name, exit_reason = %reason, attempt, delay_ms = delay.as_millis() as u64, "child exited, restarting");
        self.rcx.registry().record_restart(id, reason, attempt, delay);
        match self.spec.strategy {
            Strategy::OneForOne | Strategy::Dynamic => self.schedule_restart(seq, delay, ctx),
            Strategy::OneForAll => self.begin_drain(After::RestartAll(delay), None, ctx),
        }
    }

    /// A restart of slot `seq` after `delay`, as a timer this supervisor owns.
    fn schedule_restart(&mut self, seq: u64, delay: Duration, ctx: &mut Context<Self>) {
        let handle = self.rcx.run_later(ctx, delay, move |act: &mut Self, ctx| {
            if let Some(slot) = act.slots.get_mut(&seq) {
                slot.pending = None;
                act.rcx.registry().restart_pending(slot.spec.kind, false);
                act.restart_slot(seq, ctx);
            }
        });
        if let Some(slot) = self.slots.get_mut(&seq) {
            slot.pending = Some(handle);
            self.rcx.registry().restart_pending(slot.spec.kind, true);
        }
    }

    /// Starts a fresh incarnation of slot `seq`; a failed start counts as an abnormal exit.
    pub(super) fn restart_slot(&mut self, seq: u64, ctx: &mut Context<Self>) {
        if self.rcx.registry().is_shutting_down() || self.stopping {
            self.forget(seq, &ExitReason::Shutdown);
            return;
        }
        if let Err(e) = self.start_slot(seq) {
            let reason = ExitReason::error(format!("start failed: {e}"));
            self.handle_exit(seq, &reason, Duration::ZERO, ctx);
        }
    }

    /// A one-for-all round's backoff is over: start every stopped slot again, in start order.
    /// A failed start is an exit like any other: the policy applies (which stops the children
    /// this round started and begins another round, or escalates) and this round ends.
    fn restart_round(&mut self, ctx: &mut Context<Self>) {
        let seqs: Vec<u64> = self
            .slots
            .iter()
            .filter(|(_, s)| s.running.is_none() && !s.terminating && s.pending.is_none())
            .map(|(seq, _)| *seq)
            .collect();
        for seq in seqs {
            if self.stopping || self.drain.is_some() || self.rcx.registry().is_shutting_down() {
                return;
            }
            if !self.slots.contains_key(&seq) {
                continue;
            }
            self.restart_slot(seq, ctx);
        }
    }

    /// Restart intensity exceeded: stop everything in reverse order, then exit abnormally so the
    /// parent applies its own policy (OTP's escalation).
    fn escalate(&mut self, ctx: &mut Context<Self>) {
        let reason = ExitReason::error(format!(
            "restart intensity exceeded: more than {} restarts in {:?}",
            self.spec.intensity.max_restarts, self.spec.intensity.period
        ));
        tracing::error!(supervisor = %self.rcx.id(), name = %self.spec.name, exit_reason = %reason, "escalating to parent");
        self.rcx.registry().record_escalation(self.rcx.id(), &reason);
        self.stopping = true;
        self.cancel_pending(ctx);
        match &mut self.drain {
            Some(drain) => drain.after = After::Escalate(reason),
            None => self.begin_drain(After::Escalate(reason), None, ctx),
        }
    }

    /// Stops every child (each within its deadline, all within `until` when given) and then
    /// this supervisor with `reason`. A stop during a one-for-all round takes the round over:
    /// every child running at each step is stopped, whenever it started.
    pub(super) fn begin_stop(
        &mut self,
        reason: ExitReason,
        until: Option<Instant>,
        ctx: &mut Context<Self>,
    ) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        self.rcx.registry().set_state(self.rcx.id(), LifecycleState::Stopping);
        self.cancel_pending(ctx);
        match &mut self.drain {
            Some(drain) => {
                drain.after = After::Exit(reason);
                drain.until = until;
            }
            None => self.begin_drain(After::Exit(reason), until, ctx),
        }
    }

    /// Cancels every pending restart (backoffs and a one-for-all round); the slots that are not
    /// running leave the registry.
    fn cancel_pending(&mut self, ctx: &mut Context<Self>) {
        if let Some(round) = self.round.take() {
            ctx.cancel_future(round);
        }
        let idle: Vec<u64> =
            self.slots.iter().filter(|(_, s)| s.running.is_none()).map(|(k, _)| *k).collect();
        for seq in idle {
            if let Some(handle) = self.slots.get_mut(&seq).and_then(|s| s.pending.take()) {
                ctx.cancel_future(handle);
                if let Some(slot) = self.slots.get(&seq) {
                    self.rcx.registry().restart_pending(slot.spec.kind, false);
                }
            }
            self.forget(seq, &ExitReason::Shutdown);
        }
    }

    fn begin_drain(&mut self, after: After, until: Option<Instant>, ctx: &mut Context<Self>) {
        self.drain = Some(Drain { current: Default::default(), until, after });
        self.drain_step(ctx);
    }

    /// Advances the drain: once the current batch is gone, stop the next one among the children
    /// running now (the latest started; all of them for a dynamic supervisor); once none runs,
    /// carry out what comes after.
    pub(super) fn drain_step(&mut self, ctx: &mut Context<Self>) {
        let Some(drain) = &self.drain else { return };
        if !drain.current.is_empty() {
            return;
        }
        let running: Vec<u64> =
            self.slots.iter().filter(|(_, s)| s.running.is_some()).map(|(k, _)| *k).collect();
        let batch: Vec<u64> = if self.spec.strategy == Strategy::Dynamic {
            running.clone()
        } else {
            running.last().copied().into_iter().collect()
        };
        if batch.is_empty() {
            let drain = self.drain.take().expect("drain exists");
            self.finish_drain(drain.after, ctx);
            return;
        }
        let batches_left = if self.spec.strategy == Strategy::Dynamic { 1 } else { running.len() };
        let within = drain.until.map(|until| share(until, batches_left));
        for seq in batch {
            let id = self.slots[&seq].id;
            if let Some(drain) = &mut self.drain {
                drain.current.insert(id);
            }
            self.stop_child(seq, ExitReason::Shutdown, within, ctx);
        }
    }

    fn finish_drain(&mut self, after: After, ctx: &mut Context<Self>) {
        match after {
            After::RestartAll(delay) => {
                let round = self.rcx.run_later(ctx, delay, |act: &mut Self, ctx| {
                    act.round = None;
                    act.restart_round(ctx);
                });
                self.round = Some(round);
            }
            After::Escalate(reason) | After::Exit(reason) => {
                debug_assert!(self.slots.values().all(|s| s.running.is_none()));
                let rest: Vec<u64> = self.slots.keys().copied().collect();
                for seq in rest {
                    self.forget(seq, &ExitReason::Shutdown);
                }
                self.rcx.set_exit_reason(reason);
                ctx.stop();
            }
        }
    }
}

/// Most of a stop with a deadline spread over batches: the time this batch may take out of
/// what is left until `until`, with `batches_left` batches (this one included) still to stop.
/// Each later batch keeps a slice ([`SLICE`], or less when time is short), so one slow child
/// cannot leave the ones after it to be killed together; the rest is this batch's.
fn share(until: Instant, batches_left: usize) -> Duration {
    let left = until.saturating_duration_since(Instant::now());
    let n = u32::try_from(batches_left.max(1)).unwrap_or(u32::MAX);
    let slice = SLICE.min(left / (2 * n));
    left.saturating_sub(slice * (n - 1))
}

/// What a stop with a deadline keeps for each child still to stop after the current one.
const SLICE: Duration = Duration::from_millis(25);
