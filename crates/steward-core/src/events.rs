//! The resource event stream.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::{ExitReason, ResourceId, ResourceKind};

/// What happened to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// It was started (first time or after a restart).
    Started,
    /// It stopped for good and left the live registry.
    Stopped,
    /// Its supervisor scheduled a restart (after `restart_delay`).
    Restarted,
    /// A supervisor exceeded its restart intensity and escalated to its parent.
    Escalated,
}

impl EventKind {
    /// Lowercase name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Stopped => "stopped",
            Self::Restarted => "restarted",
            Self::Escalated => "escalated",
        }
    }
}

/// One event of the stream returned by [`crate::Registry::subscribe`]. The stream is a bounded
/// broadcast (1024 events); a subscriber that falls behind is told how many it missed.
#[derive(Debug, Clone)]
pub struct ResourceEvent {
    /// What happened.
    pub event: EventKind,
    /// The resource (for `Escalated`: the supervisor).
    pub id: ResourceId,
    /// Its kind.
    pub kind: ResourceKind,
    /// Its tenant, if any.
    pub tenant: Option<Arc<str>>,
    /// Its supervisor, if any.
    pub parent: Option<ResourceId>,
    /// For `Stopped`, `Restarted` and `Escalated`: the exit that caused it.
    pub exit_reason: Option<ExitReason>,
    /// For `Restarted`: the consecutive restart attempt (1-based).
    pub restart_attempt: u32,
    /// For `Restarted`: the backoff delay before the fresh actor starts.
    pub restart_delay: Duration,
    /// When it happened.
    pub at: SystemTime,
}
