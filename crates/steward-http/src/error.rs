//! The HTTP error shape and the mapping of every library error to a status and code.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use steward_core::Error as CoreError;
use steward_tenancy::Error as TenancyError;

/// An HTTP error with the body every front door uses:
/// `{"error":{"code":"snake_case","message":"…"}}`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable snake_case code.
    pub code: &'static str,
    /// Human-readable detail.
    pub message: String,
    /// Seconds for `Retry-After` (429 and 503).
    pub retry_after: Option<u64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    pub(crate) error: ErrorDetail,
}

/// The `error` object of an error body.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorDetail {
    /// Stable snake_case code.
    pub(crate) code: String,
    /// Human-readable detail.
    pub(crate) message: String,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after: None }
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 401 `unauthenticated`, saying nothing about why.
    #[must_use]
    pub fn unauthenticated() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", "missing or invalid bearer token")
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// Adds `Retry-After: secs`.
    #[must_use]
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status);
        if let Some(secs) = self.retry_after {
            res.insert_header((header::RETRY_AFTER, HeaderValue::from(secs)));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            res.insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
        }
        res.json(ErrorBody {
            error: ErrorDetail { code: self.code.to_string(), message: self.message.clone() },
        })
    }
}

impl From<TenancyError> for ApiError {
    fn from(e: TenancyError) -> Self {
        let message = e.to_string();
        match e {
            TenancyError::InvalidArgument { .. } => Self::bad_request(message),
            TenancyError::NotFound(_) => Self::not_found(message),
            TenancyError::AlreadyExists(_) => {
                Self::new(StatusCode::CONFLICT, "already_exists", message)
            }
            TenancyError::Unauthenticated => Self::unauthenticated(),
            TenancyError::QuotaExceeded { retry_after, .. } => {
                let err = Self::new(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded", message);
                match retry_after {
                    Some(d) => err.retry_after(d.as_secs() + u64::from(d.subsec_nanos() > 0)),
                    None => err,
                }
            }
            TenancyError::Throttled { retry_after } => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, "too_many_failed_authentications", message)
                    .retry_after(retry_after.as_secs().max(1))
            }
            TenancyError::LimitReached(_) => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, "limit_reached", message)
            }
            TenancyError::Conflict(_) => Self::new(StatusCode::CONFLICT, "conflict", message),
            TenancyError::Store(_) | TenancyError::Migrate(_) => {
                tracing::warn!(error = %message, "store unavailable");
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", message)
                    .retry_after(1)
            }
            TenancyError::Internal(_) => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
            }
        }
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        let message = e.to_string();
        match e {
            CoreError::NotFound(_) => Self::not_found(message),
            CoreError::MaxChildren { .. } => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, "resource_exhausted", message)
                    .retry_after(1)
            }
            CoreError::ShuttingDown => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", message).retry_after(5)
            }
            CoreError::NotSupervised(_) => {
                Self::new(StatusCode::CONFLICT, "not_supervised", message)
            }
            CoreError::IsSupervisor(_) => Self::new(StatusCode::CONFLICT, "is_supervisor", message),
            CoreError::Gone(_) => Self::new(StatusCode::CONFLICT, "gone", message),
            CoreError::Busy(_) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "busy", message).retry_after(1)
            }
            CoreError::StartFailed { .. } | CoreError::OwnerStopping(_) | CoreError::Spawn(_) => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
            }
        }
    }
}
