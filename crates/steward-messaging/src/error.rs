//! Errors of the messaging front door, one variant per gRPC code the edge answers with.

use std::time::Duration;

use crate::broker::BrokerError;
use crate::names::Invalid;

/// The retry advice of a refusal by a quota the broker counts (topics, groups, stored messages
/// and bytes): they free up as consumers ack and idle topics go, not at a known time.
pub const QUOTA_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Why a messaging request failed as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessagingError {
    /// A field breaks a rule (`INVALID_ARGUMENT`).
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// A quota or node cap is full (`RESOURCE_EXHAUSTED`, retry after the given time).
    #[error("{message}")]
    Exhausted {
        /// What is full.
        message: String,
        /// When trying again makes sense.
        retry_after: Duration,
    },
    /// A tenant quota the broker counts (`topics`, `groups`) refused a new topic or group
    /// (`RESOURCE_EXHAUSTED`, retry after [`QUOTA_RETRY_AFTER`] unless the limit is 0).
    #[error("{0}")]
    QuotaExceeded(crate::QuotaRefusal),
    /// The group exists with another tag filter (`FAILED_PRECONDITION`).
    #[error("{0}")]
    Conflict(String),
    /// The broker cannot be reached, or the server is shutting down (`UNAVAILABLE`).
    #[error("{0}")]
    Unavailable(String),
    /// Something that must not happen (`INTERNAL`).
    #[error("{0}")]
    Internal(String),
}

impl From<BrokerError> for MessagingError {
    fn from(e: BrokerError) -> Self {
        match e {
            BrokerError::Unavailable(m) => Self::Unavailable(format!("broker unavailable: {m}")),
            BrokerError::Conflict(m) => Self::Conflict(m),
            // a topic or group frees up when it is idle for `topic_idle_ttl`, or is removed
            BrokerError::QuotaExceeded(refusal) => Self::QuotaExceeded(refusal),
            BrokerError::LeaseNotFound(m) => Self::Internal(format!("lease not found: {m}")),
            BrokerError::Internal(m) => Self::Internal(m),
        }
    }
}

/// Why one entry of a batch (a message of `SendMessage`, a receipt of `AckMessages`, …) failed;
/// the rest of the batch is unaffected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// The entry breaks a rule (`INVALID_ARGUMENT`).
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The receipt handle is unknown: acked already, expired, its stream ended (its message was
    /// returned for redelivery), or it belongs to another tenant (`NOT_FOUND`).
    #[error("{0}")]
    NotFound(String),
    /// The broker cannot be reached (`UNAVAILABLE`).
    #[error("{0}")]
    Unavailable(String),
}

impl From<BrokerError> for EntryError {
    fn from(e: BrokerError) -> Self {
        match e {
            BrokerError::LeaseNotFound(m) => Self::NotFound(format!("receipt not found: {m}")),
            other => Self::Unavailable(other.to_string()),
        }
    }
}
