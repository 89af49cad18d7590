//! The supervisor's lifecycle and restart logic.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::{After, Drain, Strategy, Supervisor};
use crate::context::ChildExited;
use crate::{ExitReason, LifecycleState, Resource, ResourceCtx, ResourceId};

/// After a child was killed for missing its deadline, how long to wait for its actor to be
/// dropped before the supervisor gives up on it (logged as an error; it cannot stop a thread).
const KILL_GRACE: Duration = Duration::from_secs(2);

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // The mailbox cap of a supervisor only bounds commands; lifelines use their own channel.
        ctx.set_mailbox_capacity(1024);
        if let Some(rx) = self.exit_rx.take() {
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
                self.begin_stop(ExitReason::error(e), ctx);
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
        // kill): its children die with it, as linked processes do in OTP.
        for slot in self.slots.values() {
            if let Some(running) = &slot.running {
                slot.shared.forced.store(true, std::sync::atomic::Ordering::Relaxed);
                running.abort.abort();
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
    /// A lifeline reported that a child's actor is gone.
    pub(super) fn on_child_exited(&mut self, msg: ChildExited, ctx: &mut Context<Self>) {
        let ChildExited { id, incarnation, reason } = msg;
        let Some(&seq) = self.by_id.get(&id) else { return };
        let Some(slot) = self.slots.get_mut(&seq) else { return };
        if slot.incarnation != incarnation || slot.running.is_none() {
            return;
        }
        let uptime = slot.running.take().map_or(Duration::ZERO, |r| r.since.elapsed());
        self.rcx.registry().detach(id);

        if let Some(drain) = &mut self.drain
            && drain.members.remove(&id)
        {
            {
                drain.current.remove(&id);
                if matches!(drain.after, After::RestartAll(_)) {
                    self.rcx.registry().set_state(id, LifecycleState::Restarting);
                } else {
                    self.forget(seq, &reason);
                }
                self.drain_step(ctx);
                return;
            }
        }
        let slot = &mut self.slots.get_mut(&seq).expect("slot exists");
        if slot.terminating {
            self.forget(seq, &reason);
            return;
        }
        if slot.restart_now {
            slot.restart_now = false;
            self.rcx.registry().record_restart(id, &reason, 0, Duration::ZERO);
            self.restart_slot(seq, ctx);
            return;
        }
        self.handle_exit(seq, &reason, uptime, ctx);
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
            && !self.rcx.is_stopping();
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
            Strategy::OneForAll => {
                let others = self.running_in_reverse();
                self.begin_drain(others, After::RestartAll(delay), ctx);
            }
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
        if self.rcx.registry().is_shutting_down() || self.rcx.is_stopping() {
            self.forget(seq, &ExitReason::Shutdown);
            return;
        }
        if let Err(e) = self.start_slot(seq) {
            let reason = ExitReason::error(format!("start failed: {e}"));
            self.handle_exit(seq, &reason, Duration::ZERO, ctx);
        }
    }

    /// Ids of running children, latest started first.
    fn running_in_reverse(&self) -> Vec<ResourceId> {
        self.slots.values().rev().filter(|s| s.running.is_some()).map(|s| s.id).collect()
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
        self.cancel_pending(ctx);
        let all = self.running_in_reverse();
        self.begin_drain(all, After::Escalate(reason), ctx);
    }

    /// Stops every child and then this supervisor with `reason`.
    pub(super) fn begin_stop(&mut self, reason: ExitReason, ctx: &mut Context<Self>) {
        self.rcx.set_exit_reason(reason.clone());
        self.rcx.registry().set_state(self.rcx.id(), LifecycleState::Stopping);
        self.cancel_pending(ctx);
        match &mut self.drain {
            Some(drain) => {
                if matches!(drain.after, After::RestartAll(_)) {
                    drain.after = After::Exit(reason);
                }
            }
            None => {
                let all = self.running_in_reverse();
                self.begin_drain(all, After::Exit(reason), ctx);
            }
        }
    }

    /// Cancels every pending restart; those slots leave the registry.
    fn cancel_pending(&mut self, ctx: &mut Context<Self>) {
        let pending: Vec<u64> = self
            .slots
            .iter()
            .filter(|(_, s)| s.pending.is_some() || s.running.is_none())
            .map(|(k, _)| *k)
            .collect();
        for seq in pending {
            if let Some(handle) = self.slots.get_mut(&seq).and_then(|s| s.pending.take()) {
                ctx.cancel_future(handle);
                if let Some(slot) = self.slots.get(&seq) {
                    self.rcx.registry().restart_pending(slot.spec.kind, false);
                }
            }
            self.forget(seq, &ExitReason::Shutdown);
        }
    }

    fn begin_drain(&mut self, ids: Vec<ResourceId>, after: After, ctx: &mut Context<Self>) {
        let batches = if self.spec.strategy == Strategy::Dynamic {
            vec![ids.clone()]
        } else {
            ids.iter().map(|id| vec![*id]).collect()
        };
        self.drain = Some(Drain {
            batches: batches.into_iter().rev().collect(), // popped from the back
            current: HashSet::new(),
            members: ids.into_iter().collect(),
            timer: None,
            after,
        });
        self.drain_step(ctx);
    }

    /// Advances the drain: when the current batch is done, stop the next; when all are done,
    /// carry out what comes after.
    fn drain_step(&mut self, ctx: &mut Context<Self>) {
        loop {
            let Some(drain) = &mut self.drain else { return };
            if !drain.current.is_empty() {
                return;
            }
            if let Some(timer) = drain.timer.take() {
                ctx.cancel_future(timer);
            }
            let Some(batch) = drain.batches.pop() else {
                let drain = self.drain.take().expect("drain exists");
                self.finish_drain(drain.after, ctx);
                return;
            };
            let batch: Vec<ResourceId> =
                batch.into_iter().filter(|id| drain.members.contains(id)).collect();
            if batch.is_empty() {
                continue;
            }
            let mut deadline = Duration::ZERO;
            let mut requests = Vec::with_capacity(batch.len());
            for id in &batch {
                let Some(slot) = self.by_id.get(id).and_then(|seq| self.slots.get(seq)) else {
                    continue;
                };
                let Some(running) = &slot.running else { continue };
                deadline = deadline.max(slot.spec.shutdown.unwrap_or(self.spec.child_shutdown));
                slot.shared.set_state(LifecycleState::Stopping);
                requests.push(running.stop.clone());
            }
            let drain = self.drain.as_mut().expect("drain exists");
            drain.current = batch.into_iter().collect();
            for stop in requests {
                send_stop(&stop, ExitReason::Shutdown, ctx);
            }
            let timer =
                self.rcx.run_later(ctx, deadline, |act: &mut Self, ctx| act.drain_deadline(ctx));
            if let Some(drain) = &mut self.drain {
                drain.timer = Some(timer);
            }
            return;
        }
    }

    /// Children of the current batch missed their deadline: kill them.
    fn drain_deadline(&mut self, ctx: &mut Context<Self>) {
        let Some(drain) = &mut self.drain else { return };
        drain.timer = None;
        let late: Vec<ResourceId> = drain.current.iter().copied().collect();
        for id in &late {
            tracing::warn!(child = %id, "child missed its shutdown deadline, killing");
            self.rcx.registry().kill(*id);
        }
        let timer = self.rcx.run_later(ctx, KILL_GRACE, move |act: &mut Self, ctx| {
            let Some(drain) = &mut act.drain else { return };
            drain.timer = None;
            let stuck: Vec<ResourceId> = drain.current.drain().collect();
            for id in &stuck {
                drain.members.remove(id);
            }
            for id in stuck {
                tracing::error!(child = %id, "killed child was not dropped in time; giving up on it");
                if let Some(seq) = act.by_id.get(&id).copied() {
                    if let Some(slot) = act.slots.get_mut(&seq) {
                        slot.running = None;
                    }
                    act.forget(seq, &ExitReason::Killed);
                }
            }
            act.drain_step(ctx);
        });
        if let Some(drain) = &mut self.drain {
            drain.timer = Some(timer);
        }
    }

    fn finish_drain(&mut self, after: After, ctx: &mut Context<Self>) {
        match after {
            After::RestartAll(delay) => {
                let seqs: Vec<u64> = self.slots.keys().copied().collect();
                self.rcx.run_later(ctx, delay, move |act: &mut Self, ctx| {
                    for seq in seqs {
                        if act.slots.get(&seq).is_some_and(|s| s.running.is_none()) {
                            act.restart_slot(seq, ctx);
                        }
                    }
                });
            }
            After::Escalate(reason) | After::Exit(reason) => {
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

/// Queues a [`crate::StopResource`] for a child; a full mailbox is waited on in a future the
/// supervisor owns (dropped with it), never grown without bound.
pub(super) fn send_stop(
    stop: &Recipient<crate::StopResource>,
    reason: ExitReason,
    ctx: &mut Context<Supervisor>,
) {
    if let Err(SendError::Full(msg)) = stop.try_send(crate::StopResource { reason }) {
        let stop = stop.clone();
        ctx.spawn(actix::fut::wrap_future(async move {
            let _ = stop.send(msg).await;
        }));
    }
}
