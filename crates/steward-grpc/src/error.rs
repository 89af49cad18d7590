use steward_core::Error;
use tonic::Status;

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
        Error::StartFailed { .. } | Error::OwnerStopping(_) | Error::Spawn(_) => {
            Status::internal(format!("internal: {msg}"))
        }
    }
}
