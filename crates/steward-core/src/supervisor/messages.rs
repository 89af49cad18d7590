//! Commands a supervisor receives, and what it answers.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use actix::Message;

use super::ChildSpec;
use crate::messages::{Notice, NoticeSender};
use crate::registry::{EntryShared, TERMINATE};
use crate::{ExitReason, LifecycleState, ResourceId, ResourceKind, Result};

/// Starts a child at run time (the dynamic supervisor's admission). Refused with
/// [`crate::Error::MaxChildren`] at the cap and [`crate::Error::ShuttingDown`] while stopping.
#[derive(Message)]
#[rtype(result = "Result<StartedChild>")]
pub struct StartChild(pub ChildSpec);

/// A started child: its id and its address, to be wrapped in the resource's typed handle.
///
/// Until its address is taken with [`StartedChild::addr`], it holds the child: dropped
/// unclaimed (the caller of [`super::SupervisorHandle::start_child`] gave up, or the actor type
/// was not the one asked for), it has the child terminated. This is what makes `start_child`
/// cancel-safe.
pub struct StartedChild {
    /// The child's id.
    pub id: ResourceId,
    pub(crate) addr: Option<Box<dyn Any + Send>>,
    pub(crate) claim: Unclaimed,
}

impl StartedChild {
    /// The child's `Addr<A>`, when `A` is its actor type; the child is then the caller's. With
    /// another type it stays unclaimed, and is terminated when this is dropped.
    #[must_use]
    pub fn addr<A: actix::Actor>(mut self) -> Option<actix::Addr<A>> {
        let addr = self.addr.take()?.downcast::<actix::Addr<A>>().ok().map(|b| *b)?;
        self.claim.claimed = true;
        Some(addr)
    }
}

/// The child of a [`StartedChild`]: terminated when this drops, unless claimed.
pub(crate) struct Unclaimed {
    pub(crate) claimed: bool,
    pub(crate) id: ResourceId,
    pub(crate) shared: Arc<EntryShared>,
    pub(crate) port: NoticeSender,
}

impl Drop for Unclaimed {
    fn drop(&mut self) {
        if !self.claimed && self.shared.request_stop(TERMINATE) {
            tracing::debug!(child = %self.id, "started child never claimed; terminating it");
            let _ = self.port.send(Notice::Stop {
                id: self.id,
                incarnation: None,
                reason: ExitReason::Shutdown,
                terminate: true,
            });
        }
    }
}

impl std::fmt::Debug for StartedChild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartedChild").field("id", &self.id).finish_non_exhaustive()
    }
}

/// Stops a child gracefully and forgets it: it is not restarted whatever its restart type
/// (OTP's `terminate_child` followed by `delete_child`). A child that has not stopped by its
/// `shutdown` deadline is killed.
#[derive(Debug, Message)]
#[rtype(result = "Result<()>")]
pub struct TerminateChild {
    /// The child.
    pub id: ResourceId,
    /// Its recorded exit reason.
    pub reason: ExitReason,
}

/// Restarts a child now with a fresh actor: graceful stop (killed at its deadline), then an
/// immediate start without backoff. Operator restarts do not count toward the restart
/// intensity.
#[derive(Debug, Message)]
#[rtype(result = "Result<()>")]
pub struct RestartChild {
    /// The child.
    pub id: ResourceId,
}

/// Stops a supervisor as [`crate::StopResource`] does, with all its children stopped within
/// `within` (see [`super::SupervisorHandle::stop_within`]).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StopWithin {
    /// Its recorded exit reason.
    pub reason: ExitReason,
    /// The time the whole stop may take.
    pub within: Duration,
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
