//! Commands the job hub receives (sent through [`super::JobHubHandle`]).

use std::sync::Arc;

use actix::Message;
use serde_json::Value;

use super::model::{Job, JobId};
use super::subscribers::{JobSink, Subscription};
use super::table::JobPatch;
use crate::Result;

/// Creates a job in status `queued` for `tenant`.
#[derive(Message)]
#[rtype(result = "Result<Job>")]
pub(crate) struct CreateJob {
    pub(crate) tenant: Arc<str>,
    pub(crate) kind: String,
    pub(crate) data: Option<String>,
    pub(crate) hold: Option<super::table::JobHold>,
}

/// Applies a worker's report to a job and fans the change out.
#[derive(Message)]
#[rtype(result = "Result<Job>")]
pub(crate) struct UpdateJob {
    pub(crate) tenant: Arc<str>,
    pub(crate) id: JobId,
    pub(crate) patch: JobPatch,
}

/// Reads a job.
#[derive(Message)]
#[rtype(result = "Result<Job>")]
pub(crate) struct GetJob {
    pub(crate) tenant: Arc<str>,
    pub(crate) id: JobId,
}

/// Subscribes a watcher to a job: the hub offers it the `subscribed` snapshot first, then every
/// update. `None` when the job is already final (the snapshot is all there will be).
#[derive(Message)]
#[rtype(result = "Result<Option<Subscription>>")]
pub(crate) struct SubscribeJob {
    pub(crate) tenant: Arc<str>,
    pub(crate) id: JobId,
    pub(crate) sink: Arc<dyn JobSink>,
    pub(crate) request: Option<Value>,
}

/// Removes every job of a deleted tenant; answers how many.
#[derive(Message)]
#[rtype(result = "usize")]
pub(crate) struct RemoveTenantJobs {
    pub(crate) tenant: Arc<str>,
}
