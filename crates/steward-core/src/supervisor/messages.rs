//! Commands a supervisor receives.

use std::any::Any;

use actix::Message;

use super::ChildSpec;
use crate::{ExitReason, LifecycleState, ResourceId, ResourceKind, Result};

/// Starts a child at run time (the dynamic supervisor's admission). Refused with
/// [`crate::Error::MaxChildren`] at the cap and [`crate::Error::ShuttingDown`] while stopping.
#[derive(Message)]
#[rtype(result = "Result<StartedChild>")]
pub struct StartChild(pub ChildSpec);

/// A started child: its id and its address, to be wrapped in the resource's typed handle.
pub struct StartedChild {
    /// The child's id.
    pub id: ResourceId,
    pub(crate) addr: Box<dyn Any + Send>,
}

impl StartedChild {
    /// The child's `Addr<A>`, when `A` is its actor type.
    #[must_use]
    pub fn addr<A: actix::Actor>(self) -> Option<actix::Addr<A>> {
        self.addr.downcast::<actix::Addr<A>>().ok().map(|b| *b)
    }
}

impl std::fmt::Debug for StartedChild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartedChild").field("id", &self.id).finish_non_exhaustive()
    }
}

/// Stops a child gracefully and forgets it: it is not restarted whatever its restart type
/// (OTP's `terminate_child` followed by `delete_child`).
#[derive(Debug, Message)]
#[rtype(result = "Result<()>")]
pub struct TerminateChild {
    /// The child.
    pub id: ResourceId,
    /// Its recorded exit reason.
    pub reason: ExitReason,
}

/// Restarts a child now with a fresh actor: graceful stop, then an immediate start without
/// backoff. Operator restarts do not count toward the restart intensity.
#[derive(Debug, Message)]
#[rtype(result = "Result<()>")]
pub struct RestartChild {
    /// The child.
    pub id: ResourceId,
}

/// Lists the children, in start order (OTP's `which_children`).
#[derive(Debug, Message)]
#[rtype(result = "Vec<ChildInfo>")]
pub struct WhichChildren;

/// One child as its supervisor sees it.
#[derive(Debug, Clone)]
pub struct ChildInfo {
    /// Its id.
    pub id: ResourceId,
    /// Its spec's name.
    pub name: std::sync::Arc<str>,
    /// Its kind.
    pub kind: ResourceKind,
    /// Its state.
    pub state: LifecycleState,
    /// Consecutive restarts (reset after a healthy uptime).
    pub consecutive_restarts: u32,
    /// Whether a restart is waiting out its backoff.
    pub restart_pending: bool,
}
