//! Message handlers of the supervisor.

use actix::prelude::*;

use super::Supervisor;
use super::actor::send_stop;
use super::messages::{
    ChildInfo, RestartChild, StartChild, StartedChild, TerminateChild, WhichChildren,
};
use crate::context::ChildExited;
use crate::{Error, ExitReason, LifecycleState, Result, StopResource};

impl StreamHandler<ChildExited> for Supervisor {
    fn handle(&mut self, msg: ChildExited, ctx: &mut Context<Self>) {
        self.on_child_exited(msg, ctx);
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {
        // the supervisor holds a sender itself, so the stream cannot end while it lives
    }
}

impl Handler<StartChild> for Supervisor {
    type Result = Result<StartedChild>;

    fn handle(&mut self, msg: StartChild, _ctx: &mut Context<Self>) -> Self::Result {
        self.add_child(msg.0).map(|(id, addr)| StartedChild { id, addr })
    }
}

impl Handler<TerminateChild> for Supervisor {
    type Result = Result<()>;

    fn handle(&mut self, msg: TerminateChild, ctx: &mut Context<Self>) -> Self::Result {
        let seq = *self.by_id.get(&msg.id).ok_or(Error::NotFound(msg.id))?;
        let slot = self.slots.get_mut(&seq).ok_or(Error::NotFound(msg.id))?;
        slot.terminating = true;
        match &slot.running {
            Some(running) => {
                slot.shared.set_state(LifecycleState::Stopping);
                let stop = running.stop.clone();
                send_stop(&stop, msg.reason, ctx);
            }
            None => {
                if let Some(handle) = slot.pending.take() {
                    ctx.cancel_future(handle);
                    self.rcx.registry().restart_pending(slot.spec.kind, false);
                }
                self.forget(seq, &msg.reason);
            }
        }
        Ok(())
    }
}

impl Handler<RestartChild> for Supervisor {
    type Result = Result<()>;

    fn handle(&mut self, msg: RestartChild, ctx: &mut Context<Self>) -> Self::Result {
        if self.rcx.is_stopping() || self.drain.is_some() || self.rcx.registry().is_shutting_down()
        {
            return Err(Error::ShuttingDown);
        }
        let seq = *self.by_id.get(&msg.id).ok_or(Error::NotFound(msg.id))?;
        let slot = self.slots.get_mut(&seq).ok_or(Error::NotFound(msg.id))?;
        match &slot.running {
            Some(running) => {
                slot.restart_now = true;
                slot.shared.set_state(LifecycleState::Stopping);
                let stop = running.stop.clone();
                send_stop(&stop, ExitReason::Shutdown, ctx);
            }
            None => {
                if let Some(handle) = slot.pending.take() {
                    ctx.cancel_future(handle);
                    self.rcx.registry().restart_pending(slot.spec.kind, false);
                }
                self.restart_slot(seq, ctx);
            }
        }
        Ok(())
    }
}

impl Handler<WhichChildren> for Supervisor {
    type Result = Vec<ChildInfo>;

    fn handle(&mut self, _msg: WhichChildren, _ctx: &mut Context<Self>) -> Self::Result {
        self.slots
            .values()
            .map(|s| ChildInfo {
                id: s.id,
                name: s.spec.name.clone(),
                kind: s.spec.kind,
                state: s.shared.state(),
                consecutive_restarts: s.consecutive,
                restart_pending: s.pending.is_some(),
            })
            .collect()
    }
}

impl Handler<StopResource> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: StopResource, ctx: &mut Context<Self>) {
        if self.rcx.is_stopping() {
            return;
        }
        self.begin_stop(msg.reason, ctx);
    }
}
