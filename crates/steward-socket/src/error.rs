//! The crate's error type. Edges map it: HTTP statuses and WebSocket `error` codes in
//! steward-http, gRPC codes in steward-grpc.

use std::borrow::Cow;

/// What can go wrong with jobs and sockets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A request field is invalid (gRPC `INVALID_ARGUMENT`, WebSocket `bad_request`).
    #[error("invalid `{field}`: {reason}")]
    InvalidArgument {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: Cow<'static, str>,
    },
    /// No such job for this tenant (another tenant's job is reported the same way).
    #[error("job {0} not found")]
    NotFound(String),
    /// The job is in a final state and cannot change (gRPC `FAILED_PRECONDITION`).
    #[error("job {job} is {status}: a finished job cannot change")]
    Finished {
        /// The job.
        job: String,
        /// Its final status.
        status: &'static str,
    },
    /// A status transition that the job's state machine forbids (gRPC `FAILED_PRECONDITION`).
    #[error("job {job} cannot go from {from} to {to}")]
    Transition {
        /// The job.
        job: String,
        /// Current status.
        from: &'static str,
        /// Requested status.
        to: &'static str,
    },
    /// A hard cap was reached (gRPC `RESOURCE_EXHAUSTED`).
    #[error("{what} limit of {limit} reached")]
    LimitReached {
        /// What is capped (`jobs`, `subscriptions`).
        what: &'static str,
        /// The cap.
        limit: u64,
    },
    /// The job hub is not running or did not answer in time (gRPC `UNAVAILABLE`).
    #[error("the job hub is unavailable: {0}")]
    Unavailable(&'static str),
}

impl Error {
    /// An [`Error::InvalidArgument`].
    pub fn invalid(field: &'static str, reason: impl Into<Cow<'static, str>>) -> Self {
        Self::InvalidArgument { field, reason: reason.into() }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
