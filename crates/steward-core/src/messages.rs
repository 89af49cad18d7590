//! What the kernel's actors are told: [`StopResource`] (to any resource) and the [`Notice`]s a
//! supervisor receives on its unbounded inbox from its children's lifelines, their trackers, the
//! guards of unclaimed starts and [`crate::supervisor::Control`].
//!
//! A leaf module: it knows identities only, so the registry can hold a supervisor's inbox
//! without knowing the supervisor.

use actix::Message;
use tokio::sync::{mpsc, oneshot};

use crate::{ExitReason, ResourceId, Result};

/// Asks a resource to stop gracefully with `reason`: it runs its async cleanup, its tracker
/// aborts its tasks and kills its processes, then the actor stops. Idempotent. A supervised
/// resource that has not stopped by its child `shutdown` deadline is killed by its supervisor.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct StopResource {
    /// Recorded as the exit reason.
    pub reason: ExitReason,
}

/// Something a supervisor must act on, about one of its children. Sent on an unbounded channel
/// so that lifelines (which run in `Drop`) and any thread can send without waiting; each sender
/// sends at most a few per child incarnation (stop requests are de-duplicated through
/// [`crate::registry::EntryShared`]), so the channel is bounded by the number of children.
#[derive(Debug)]
pub(crate) enum Notice {
    /// A child's lifeline: the actor of `incarnation` is gone, for `reason`.
    Exited { id: ResourceId, incarnation: u32, reason: ExitReason },
    /// A child began its graceful stop by itself (`stop_resource`): its deadline starts now.
    Stopping { id: ResourceId, incarnation: u32 },
    /// Stop a child with `reason` (only `incarnation`, when given). `terminate`: it is not
    /// restarted whatever its restart type (OTP's `terminate_child`); otherwise the restart
    /// policy applies to its exit as to any other.
    Stop { id: ResourceId, incarnation: Option<u32>, reason: ExitReason, terminate: bool },
    /// Restart a child now with a fresh actor (an operator's request); the answer goes to `reply`.
    Restart { id: ResourceId, reply: oneshot::Sender<Result<()>> },
}

/// A supervisor's inbox.
pub(crate) type NoticeSender = mpsc::UnboundedSender<Notice>;
