//! The tenancy error type.

use std::time::Duration;

use crate::model::QuotaKind;

/// Errors of tenancy. The edges map them: `InvalidArgument` 400 / `INVALID_ARGUMENT`,
/// `NotFound` 404 / `NOT_FOUND`, `AlreadyExists` 409 / `ALREADY_EXISTS`, `Unauthenticated` 401 /
/// `UNAUTHENTICATED`, `QuotaExceeded`, `Throttled` and `LimitReached` 429 / `RESOURCE_EXHAUSTED`,
/// `Conflict` 409 / `ABORTED`, `Store` and `Internal` 500 or 503 / `UNAVAILABLE`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field of the request is invalid; `field` names it (`quotas.sockets`, `id`).
    #[error("invalid `{field}`: {reason}")]
    InvalidArgument {
        /// The field, as a dotted path.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No such tenant or token.
    #[error("{0} not found")]
    NotFound(String),
    /// A tenant with this id exists already.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// Missing, malformed, unknown, revoked or expired token; deliberately says nothing more.
    #[error("missing or invalid bearer token")]
    Unauthenticated,
    /// A tenant's quota refused an admission.
    #[error("quota `{quota}` of tenant {tenant} is exhausted (limit {limit})")]
    QuotaExceeded {
        /// The tenant.
        tenant: String,
        /// The quota that refused.
        quota: QuotaKind,
        /// Its limit.
        limit: u64,
        /// When a retry can succeed; `None` when it cannot (the limit is 0).
        retry_after: Option<Duration>,
    },
    /// The client's address failed to authenticate too often within the window
    /// (`[tenancy]`/`[admin]` `max_auth_failures_per_ip`); its requests are refused without
    /// looking at the token until the window ends.
    #[error("too many failed authentications from this address; retry later")]
    Throttled {
        /// When the window ends.
        retry_after: Duration,
    },
    /// A node-wide limit (`tenancy.max_tenants`, `tenancy.max_tokens_per_tenant`).
    #[error("{0}")]
    LimitReached(String),
    /// The record changed under a concurrent update too many times; retry.
    #[error("{0} was changed concurrently; retry")]
    Conflict(String),
    /// The database failed.
    #[error("store: {0}")]
    Store(#[source] sqlx::Error),
    /// Running the embedded migrations failed.
    #[error("store migration: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// Something that should not happen (a corrupt row, a failed random source).
    #[error("internal: {0}")]
    Internal(String),
}

impl Error {
    pub(crate) fn invalid(field: &str, reason: &str) -> Self {
        Self::InvalidArgument { field: field.to_owned(), reason: reason.to_owned() }
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e)
    }
}

/// Result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
