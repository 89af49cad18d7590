//! Message handlers of the supervisor: its mailbox (commands with answers) and its inbox
//! ([`Notice`]s, without).

use std::time::Instant;

use actix::prelude::*;

use super::Supervisor;
use super::messages::{
    ChildInfo, RestartChild, StartChild, StartedChild, StopWithin, TerminateChild, Unclaimed,
    WhichChildren,
};
use crate::messages::Notice;
use crate::{Result, StopResource};

impl StreamHandler<Notice> for Supervisor {
    fn handle(&mut self, notice: Notice, ctx: &mut Context<Self>) {
        match notice {
            Notice::Exited { id, incarnation, reason } => {
                if let Some(seq) = self.running_slot(id, Some(incarnation)) {
                    self.child_gone(seq, &reason, ctx);
                }
            }
            Notice::Stopping { id, incarnation } => {
                if let Some(seq) = self.running_slot(id, Some(incarnation)) {
                    let at = Instant::now() + self.deadline_of(seq);
                    self.arm_kill(seq, at, ctx);
                }
            }
            Notice::Stop { id, reason, terminate: true, .. } => {
                // for good: whichever incarnation runs, or none (a restart pending)
                let _ = self.terminate(id, reason, ctx);
            }
            Notice::Stop { id, incarnation, reason, terminate: false } => {
                if let Some(seq) = self.running_slot(id, incarnation) {
                    self.stop_child(seq, reason, None, ctx);
                }
            }
            Notice::Restart { id, reply } => {
                let _ = reply.send(self.restart(id, ctx));
            }
        }
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {
        // the supervisor holds a sender itself, so the stream cannot end while it lives
    }
}

impl Handler<StartChild> for Supervisor {
    type Result = Result<StartedChild>;

    fn handle(&mut self, msg: StartChild, _ctx: &mut Context<Self>) -> Self::Result {
        let (id, shared, addr) = self.add_child(msg.0)?;
        Ok(StartedChild {
            id,
            addr: Some(addr),
            claim: Unclaimed { claimed: false, id, shared, port: self.port.clone() },
        })
    }
}

impl Handler<TerminateChild> for Supervisor {
    type Result = Result<()>;

    fn handle(&mut self, msg: TerminateChild, ctx: &mut Context<Self>) -> Self::Result {
        self.terminate(msg.id, msg.reason, ctx)
    }
}

impl Handler<RestartChild> for Supervisor {
    type Result = Result<()>;

    fn handle(&mut self, msg: RestartChild, ctx: &mut Context<Self>) -> Self::Result {
        self.restart(msg.id, ctx)
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
        self.begin_stop(msg.reason, None, ctx);
    }
}

impl Handler<StopWithin> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: StopWithin, ctx: &mut Context<Self>) {
        self.begin_stop(msg.reason, Some(Instant::now() + msg.within), ctx);
    }
}
