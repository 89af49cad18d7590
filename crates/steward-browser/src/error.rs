//! The crate's one error type. Each variant has a stable snake_case [`Error::code`]; the edges
//! turn them into gRPC codes (`steward-grpc`), never this crate.

use std::time::Duration;

/// What went wrong with a browser or session call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// A request field is malformed or out of its limits.
    #[error("{field}: {reason}")]
    InvalidArgument {
        /// The field, as named in the protocol (`viewport.width`).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No such session for this tenant (another tenant's session is not found either), page or
    /// job result; carries what was looked for (`session 1f…`, `page 9A…`).
    #[error("{0} not found")]
    NotFound(String),
    /// The URL policy refuses the URL (scheme, or an address in a blocked range that the
    /// tenant's allow-list does not permit).
    #[error("url refused: {0}")]
    PermissionDenied(String),
    /// A limit is reached: `quota` names it (`sessions`, `session_rate`, `pages_per_session`,
    /// `max_sessions`, `queue_full`, `queue_timeout`); retry after `retry_after` if given.
    #[error("{quota} limit reached{}", retry_hint(*.retry_after))]
    ResourceExhausted {
        /// Which limit.
        quota: &'static str,
        /// When a retry may succeed.
        retry_after: Option<Duration>,
    },
    /// A deadline passed during `stage` (`navigate`, `evaluate`, `screenshot`, `pdf`,
    /// `content`, `connect`, `launch`, `create_context`, …).
    #[error("{stage} did not finish within {}ms", .after.as_millis())]
    DeadlineExceeded {
        /// The stage that was running.
        stage: &'static str,
        /// The deadline it had.
        after: Duration,
    },
    /// Chromium could not load the page; carries Chromium's error text (`net::ERR_…`).
    #[error("navigation failed: {0}")]
    NavigationFailed(String),
    /// No browser could take the session, or the session's browser went away
    /// (`browser_unavailable`).
    #[error("browser unavailable: {0}")]
    BrowserUnavailable(String),
    /// The session closed while the call ran; carries its close reason (`page_crashed`,
    /// `idle`, `max_lifetime`, …).
    #[error("session closed: {0}")]
    SessionClosed(&'static str),
    /// The evaluated expression threw; carries the exception text.
    #[error("evaluation failed: {0}")]
    EvaluationFailed(String),
    /// The result is bigger than `[browser] max_result`, or a screenshot taller than
    /// `max_screenshot_height`.
    #[error("{0}")]
    OutOfRange(String),
    /// The node is shutting down and takes no new sessions.
    #[error("shutting down")]
    ShuttingDown,
    /// Chromium answered a command with a protocol error.
    #[error("devtools protocol error: {0}")]
    Protocol(String),
}

fn retry_hint(after: Option<Duration>) -> String {
    after.map(|d| format!(", retry after {}ms", d.as_millis())).unwrap_or_default()
}

impl Error {
    /// Its stable snake_case code, as in the protocol document.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidArgument { .. } => "invalid_argument",
            Self::NotFound(_) => "not_found",
            Self::PermissionDenied(_) => "url_not_allowed",
            Self::ResourceExhausted { .. } => "resource_exhausted",
            Self::DeadlineExceeded { .. } => "deadline_exceeded",
            Self::NavigationFailed(_) => "navigation_failed",
            Self::BrowserUnavailable(_) => "browser_unavailable",
            Self::SessionClosed(reason) => reason,
            Self::EvaluationFailed(_) => "evaluation_failed",
            Self::OutOfRange(_) => "result_too_large",
            Self::ShuttingDown => "shutting_down",
            Self::Protocol(_) => "protocol_error",
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidArgument { field: field.into(), reason: reason.into() }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
