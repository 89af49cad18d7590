//! The mapping of library errors to gRPC statuses, with the HTTP API's codes in the messages.

use std::time::Duration;

use steward_core::Error;
use tonic::Status;
use tonic::metadata::MetadataValue;

/// The gRPC status for a core error; the message starts with the same snake_case `code` the
/// HTTP API uses (`not_found: resource … not found`).
#[must_use]
pub fn status_from(e: &Error) -> Status {
    let msg = e.to_string();
    match e {
        Error::NotFound(_) => Status::not_found(format!("not_found: {msg}")),
        Error::MaxChildren { .. } => {
            Status::resource_exhausted(format!("resource_exhausted: {msg}"))
        }
        Error::ShuttingDown => Status::unavailable(format!("shutting_down: {msg}")),
        Error::NotSupervised(_) => Status::failed_precondition(format!("not_supervised: {msg}")),
        Error::IsSupervisor(_) => Status::failed_precondition(format!("is_supervisor: {msg}")),
        Error::Gone(_) => Status::failed_precondition(format!("gone: {msg}")),
        Error::Busy(_) => Status::unavailable(format!("busy: {msg}")),
        Error::StartFailed { .. } | Error::OwnerStopping(_) | Error::Spawn(_) => {
            Status::internal(format!("internal: {msg}"))
        }
    }
}

/// The gRPC status for a tenancy error; the message starts with the same snake_case `code` the
/// HTTP API uses:
///
/// | error | code | message |
/// |---|---|---|
/// | `InvalidArgument` | `INVALID_ARGUMENT` | ``bad_request: invalid `<field>`: <reason>`` |
/// | `NotFound` | `NOT_FOUND` | `not_found: tenant acme not found` |
/// | `AlreadyExists` | `ALREADY_EXISTS` | `already_exists: tenant acme already exists` |
/// | `Unauthenticated` | `UNAUTHENTICATED` | `unauthenticated: missing or invalid bearer token` |
/// | `QuotaExceeded` | `RESOURCE_EXHAUSTED` | ``quota_exceeded: quota `sessions` of tenant …`` |
/// | `LimitReached` | `RESOURCE_EXHAUSTED` | `limit_reached: at most … (tenancy.max_tenants)` |
/// | `Conflict` | `ABORTED` | `conflict: tenant acme was changed concurrently; retry` |
/// | `Store`, `Migrate` | `UNAVAILABLE` | `store_unavailable: …` |
/// | `Internal` | `INTERNAL` | `internal: …` |
///
/// A `QuotaExceeded` with a `retry_after` also carries the metadata entry `retry-after`: whole
/// seconds, rounded up (the HTTP `Retry-After` header's form, RFC 9110 §10.2.3).
#[must_use]
pub fn status_from_tenancy(e: &steward_tenancy::Error) -> Status {
    use steward_tenancy::Error as E;
    match e {
        E::InvalidArgument { .. } => Status::invalid_argument(format!("bad_request: {e}")),
        E::NotFound(_) => Status::not_found(format!("not_found: {e}")),
        E::AlreadyExists(_) => Status::already_exists(format!("already_exists: {e}")),
        E::Unauthenticated => Status::unauthenticated(format!("unauthenticated: {e}")),
        E::QuotaExceeded { retry_after, .. } => {
            let mut status = Status::resource_exhausted(format!("quota_exceeded: {e}"));
            if let Some(after) = retry_after {
                status
                    .metadata_mut()
                    .insert("retry-after", MetadataValue::from(retry_after_secs(*after)));
            }
            status
        }
        E::Throttled { retry_after } => {
            let mut status =
                Status::resource_exhausted(format!("too_many_failed_authentications: {e}"));
            status
                .metadata_mut()
                .insert("retry-after", MetadataValue::from(retry_after_secs(*retry_after)));
            status
        }
        E::LimitReached(_) => Status::resource_exhausted(format!("limit_reached: {e}")),
        E::Conflict(_) => Status::aborted(format!("conflict: {e}")),
        E::Store(source) => Status::unavailable(format!("store_unavailable: {source}")),
        E::Migrate(source) => {
            Status::unavailable(format!("store_unavailable: migration: {source}"))
        }
        E::Internal(what) => Status::internal(format!("internal: {what}")),
    }
}

/// The gRPC status for a job hub error; the message starts with a snake_case `code`, as the other
/// mappings do:
///
/// | error | code | message |
/// |---|---|---|
/// | `InvalidArgument` | `INVALID_ARGUMENT` | ``bad_request: invalid `<field>`: <reason>`` |
/// | `NotFound` | `NOT_FOUND` | `not_found: job <id> not found` |
/// | `Finished` | `FAILED_PRECONDITION` | `finished: job <id> is completed: a finished job …` |
/// | `Transition` | `FAILED_PRECONDITION` | `invalid_transition: job <id> cannot go from … to …` |
/// | `LimitReached` | `RESOURCE_EXHAUSTED` | `limit_reached: jobs limit of 100000 reached` |
/// | `Unavailable` | `UNAVAILABLE` | `unavailable: the job hub is unavailable: not running` |
///
/// Another tenant's job is `NOT_FOUND` like a job that never existed (the hub answers so).
#[must_use]
pub fn status_from_jobs(e: &steward_socket::Error) -> Status {
    use steward_socket::Error as E;
    match e {
        E::InvalidArgument { .. } => Status::invalid_argument(format!("bad_request: {e}")),
        E::NotFound(_) => Status::not_found(format!("not_found: {e}")),
        E::Finished { .. } => Status::failed_precondition(format!("finished: {e}")),
        E::Transition { .. } => Status::failed_precondition(format!("invalid_transition: {e}")),
        E::LimitReached { .. } => Status::resource_exhausted(format!("limit_reached: {e}")),
        E::Unavailable(_) => Status::unavailable(format!("unavailable: {e}")),
    }
}

/// The gRPC status for a streams error; the message starts with the error's snake_case code
/// (`bad_request`, `not_found`, `unrecoverable`, `quota_exceeded`, `unavailable`, `internal`):
///
/// | error | code |
/// |---|---|
/// | `Invalid` | `INVALID_ARGUMENT` |
/// | `NotFound` | `NOT_FOUND` |
/// | `Unrecoverable` | `FAILED_PRECONDITION` |
/// | `QuotaExceeded` | `RESOURCE_EXHAUSTED`, with `retry-after: 1` unless the limit is 0 |
/// | `Unavailable` | `UNAVAILABLE` |
/// | `Internal` | `INTERNAL` |
#[must_use]
pub fn status_from_streams(e: &steward_streams::Error) -> Status {
    use steward_streams::Error as E;
    let message = format!("{}: {e}", e.code());
    match e {
        E::Invalid { .. } => Status::invalid_argument(message),
        E::NotFound(_) => Status::not_found(message),
        E::Unrecoverable(_) => Status::failed_precondition(message),
        E::QuotaExceeded { limit, .. } => {
            let mut status = Status::resource_exhausted(message);
            if *limit > 0 {
                // what a stream holds frees up as keys and history expire, not at a known time
                status.metadata_mut().insert("retry-after", MetadataValue::from(1u64));
            }
            status
        }
        E::Unavailable(_) => Status::unavailable(message),
        E::Internal(_) => Status::internal(message),
    }
}

/// The gRPC status for a messaging error (a whole request failed); the message starts with a
/// snake_case `code`, as the other mappings do:
///
/// | error | code | message |
/// |---|---|---|
/// | `Invalid` | `INVALID_ARGUMENT` | ``bad_request: invalid `<field>`: <reason>`` |
/// | `Exhausted` | `RESOURCE_EXHAUSTED` | ``resource_exhausted: quota `producers` of tenant acme is exhausted (limit 10)`` |
/// | `QuotaExceeded` | `RESOURCE_EXHAUSTED` | ``quota_exceeded: quota `groups` of the tenant is exhausted (limit 1000)`` |
/// | `Conflict` | `FAILED_PRECONDITION` | `failed_precondition: <why>` (a group's other tag filter, a tenant being deleted) |
/// | `Unavailable` | `UNAVAILABLE` | `unavailable: broker unavailable: …` |
/// | `Internal` | `INTERNAL` | `internal: …` |
///
/// An `Exhausted` with a non-zero `retry_after` also carries the metadata entry `retry-after`:
/// whole seconds, rounded up, as [`status_from_tenancy`] gives it for quotas. Errors of single
/// entries of a batch are not statuses: they are result codes in the response
/// (`steward.messaging.v1.ResultCode`).
#[must_use]
pub fn status_from_messaging(e: &steward_messaging::MessagingError) -> Status {
    use steward_messaging::MessagingError as E;
    match e {
        E::Invalid(invalid) => Status::invalid_argument(format!(
            "bad_request: invalid `{}`: {}",
            invalid.field, invalid.reason
        )),
        E::Exhausted { message, retry_after } => {
            let mut status = Status::resource_exhausted(format!("resource_exhausted: {message}"));
            if !retry_after.is_zero() {
                status
                    .metadata_mut()
                    .insert("retry-after", MetadataValue::from(retry_after_secs(*retry_after)));
            }
            status
        }
        E::QuotaExceeded(refusal) => {
            let mut status = Status::resource_exhausted(format!("quota_exceeded: {refusal}"));
            if refusal.limit > 0 {
                let after = retry_after_secs(steward_messaging::QUOTA_RETRY_AFTER);
                status.metadata_mut().insert("retry-after", MetadataValue::from(after));
            }
            status
        }
        E::Conflict(m) => Status::failed_precondition(format!("failed_precondition: {m}")),
        E::Unavailable(m) => Status::unavailable(format!("unavailable: {m}")),
        E::Internal(m) => Status::internal(format!("internal: {m}")),
    }
}

/// The gRPC status for an RTC error (`steward.rtc.v1.Rooms`); the message starts with a
/// snake_case `code`, as the other mappings do:
///
/// | error | code | message |
/// |---|---|---|
/// | `Invalid` | `INVALID_ARGUMENT` | ``bad_request: `room` must be 1 to 64 characters of …`` (naming the field) |
/// | `NotFound` | `NOT_FOUND` | ``not_found: no room `standup` `` |
/// | `NodeFull` | `RESOURCE_EXHAUSTED` | `resource_exhausted: this node holds its maximum of 100 rooms` |
/// | `TenantRooms` | `RESOURCE_EXHAUSTED` | `quota_exceeded: the tenant holds its maximum of 50 rooms on this node` |
/// | `ShuttingDown` | `UNAVAILABLE` | `shutting_down: the server is shutting down` |
/// | `Unavailable` | `UNAVAILABLE` | `unavailable: the room did not answer in time` |
///
/// Another tenant's room is `NOT_FOUND` like a room that never existed (the façade answers so).
#[must_use]
pub fn status_from_rtc(e: &steward_rtc::Error) -> Status {
    use steward_rtc::Error as E;
    match e {
        E::Invalid(_) => Status::invalid_argument(format!("bad_request: {e}")),
        E::NotFound(_) => Status::not_found(format!("not_found: {e}")),
        E::NodeFull { .. } => Status::resource_exhausted(format!("resource_exhausted: {e}")),
        E::TenantRooms(_) => Status::resource_exhausted(format!("quota_exceeded: {e}")),
        E::ShuttingDown => Status::unavailable(format!("shutting_down: {e}")),
        E::Unavailable(why) => Status::unavailable(format!("unavailable: {why}")),
    }
}

/// `after` in whole seconds, rounded up.
pub(crate) fn retry_after_secs(after: Duration) -> u64 {
    after.as_secs() + u64::from(after.subsec_nanos() > 0)
}

/// The gRPC status for a browser error; the message starts with the error's snake_case code
/// ([`steward_browser::Error::code`]), as the other mappings do:
///
/// | error | code | message |
/// |---|---|---|
/// | `InvalidArgument` | `INVALID_ARGUMENT` | ``bad_request: invalid `<field>`: <reason>`` |
/// | `NotFound` | `NOT_FOUND` | `not_found: session <id> not found` |
/// | `PermissionDenied` | `PERMISSION_DENIED` | `url_not_allowed: url refused: <why>` |
/// | `ResourceExhausted` | `RESOURCE_EXHAUSTED` | `resource_exhausted: sessions limit reached, retry after 1000ms` |
/// | `DeadlineExceeded` | `DEADLINE_EXCEEDED` | `deadline_exceeded: navigate did not finish within 30000ms` |
/// | `NavigationFailed` | `UNAVAILABLE` | `navigation_failed: navigation failed: net::ERR_…` |
/// | `BrowserUnavailable` | `UNAVAILABLE` | `browser_unavailable: browser unavailable: …` |
/// | `ShuttingDown` | `UNAVAILABLE` | `shutting_down: server shutting down` |
/// | `SessionClosed` | `ABORTED` | `<reason>: session closed: <reason>` (`page_crashed`, `idle`, …) |
/// | `EvaluationFailed` | `INVALID_ARGUMENT` | `evaluation_failed: evaluation failed: <exception>` |
/// | `OutOfRange` | `OUT_OF_RANGE` | `result_too_large: …` |
/// | `Protocol` | `INTERNAL` | `protocol_error: devtools protocol error: …` |
///
/// A `ResourceExhausted` with a `retry_after` also carries the metadata entry `retry-after`:
/// whole seconds, rounded up, at least 1 (the HTTP `Retry-After` header's form, RFC 9110
/// §10.2.3); without one (waiting cannot help) there is none.
#[must_use]
pub fn status_from_browser(e: &steward_browser::Error) -> Status {
    use steward_browser::Error as E;
    let msg = || format!("{}: {e}", e.code());
    match e {
        E::InvalidArgument { field, reason } => {
            Status::invalid_argument(format!("bad_request: invalid `{field}`: {reason}"))
        }
        E::NotFound(_) => Status::not_found(msg()),
        E::PermissionDenied(_) => Status::permission_denied(msg()),
        E::ResourceExhausted { retry_after, .. } => {
            let mut status = Status::resource_exhausted(msg());
            if let Some(after) = retry_after {
                let secs = retry_after_secs(*after).max(1);
                status.metadata_mut().insert("retry-after", MetadataValue::from(secs));
            }
            status
        }
        E::DeadlineExceeded { .. } => Status::deadline_exceeded(msg()),
        E::NavigationFailed(_) | E::BrowserUnavailable(_) => Status::unavailable(msg()),
        E::ShuttingDown => Status::unavailable("shutting_down: server shutting down"),
        E::SessionClosed(_) => Status::aborted(msg()),
        E::EvaluationFailed(_) => Status::invalid_argument(msg()),
        E::OutOfRange(_) => Status::out_of_range(msg()),
        E::Protocol(_) => Status::internal(msg()),
    }
}
