//! The kernel's error type.

use crate::ResourceId;

/// Errors of the supervision kernel.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// No live resource has this id.
    #[error("resource {0} not found")]
    NotFound(ResourceId),
    /// A dynamic supervisor is at its `max_children` cap; admission is refused.
    #[error("supervisor {supervisor} is at its max_children cap of {max}")]
    MaxChildren {
        /// The supervisor that refused.
        supervisor: ResourceId,
        /// Its cap.
        max: usize,
    },
    /// The system or the supervisor is shutting down; nothing new is started.
    #[error("shutting down")]
    ShuttingDown,
    /// The resource has no supervisor that could restart it.
    #[error("resource {0} is not supervised")]
    NotSupervised(ResourceId),
    /// Supervisors are stopped by stopping the system, not one by one through the API.
    #[error("resource {0} is a supervisor")]
    IsSupervisor(ResourceId),
    /// A child's factory refused to build it.
    #[error("child {name} failed to start: {reason}")]
    StartFailed {
        /// Child name from its spec.
        name: String,
        /// The factory's error, rendered.
        reason: String,
    },
    /// The actor that should have answered is gone (its mailbox is closed).
    #[error("{0} is gone")]
    Gone(&'static str),
    /// The owner of a tracker has stopped; nothing new can be spawned for it.
    #[error("owner {0} is stopping; nothing new can be spawned")]
    OwnerStopping(ResourceId),
    /// The actor's mailbox is full; the request was not queued (try again).
    #[error("resource {0} is busy: its mailbox is full")]
    Busy(ResourceId),
    /// Spawning a child process failed.
    #[error("could not spawn process: {0}")]
    Spawn(String),
}

/// Result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
