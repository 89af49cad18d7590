//! Errors of the streams API, one variant per gRPC code / WebSocket error code the edges answer
//! with.

/// Why a streams request failed. Nothing else is disturbed by a failed request: a refused
/// publication is not stored, a refused subscription is not registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A field breaks a rule (`INVALID_ARGUMENT`, WebSocket `bad_request`): the field's name and
    /// why.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field, as named in the proto (`stream`, `key`, `data`).
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The stream or key does not exist (`NOT_FOUND`).
    #[error("{0}")]
    NotFound(String),
    /// A recovery position names another epoch than the stream's, or an offset past its top
    /// (`FAILED_PRECONDITION` for `History`; a subscription answers `recovered: false`).
    #[error("{0}")]
    Unrecoverable(String),
    /// A tenant quota (`streams`, `stream_keys`, `stream_bytes`) or the node's `max_streams` is
    /// full (`RESOURCE_EXHAUSTED`).
    #[error("quota `{quota}` exceeded (limit {limit})")]
    QuotaExceeded {
        /// The quota, as named in config and `/metrics`, or `max_streams` for the node cap.
        quota: &'static str,
        /// Its limit.
        limit: u64,
    },
    /// The engine (Redis) cannot be reached, or the node is shutting down (`UNAVAILABLE`).
    #[error("{0}")]
    Unavailable(String),
    /// Something that must not happen (`INTERNAL`).
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// `field` breaks a rule because of `reason`.
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid { field, reason: reason.into() }
    }

    /// The error code of the WebSocket protocol and the streams docs (`bad_request`,
    /// `not_found`, `unrecoverable`, `quota_exceeded`, `unavailable`, `internal`).
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid { .. } => "bad_request",
            Self::NotFound(_) => "not_found",
            Self::Unrecoverable(_) => "unrecoverable",
            Self::QuotaExceeded { .. } => "quota_exceeded",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }
}

impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Self {
        Self::Unavailable(format!("redis: {e}"))
    }
}

/// The result of a streams operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;
