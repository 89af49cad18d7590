//! `steward.jobs.v1.Jobs` ([`JobsService`]): the job hub's gRPC face, called with tenant API
//! tokens. Every call goes through the [`JobHubHandle`]; a `WatchJob` stream is a [`JobSink`]
//! over a bounded channel that the hub offers updates to without ever waiting on it.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::Stream;
use serde_json::Value;
use steward_proto::jobs::v1 as pb;
use steward_proto::jobs::v1::jobs_server::Jobs as JobsRpc;
use steward_socket::jobs::{
    Job, JobHubHandle, JobId, JobPatch, JobSink, JobStatus, JobUpdate, Offer, Subscription,
};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use steward_tenancy::{QuotaKind, Reservation, Tenancy};

use crate::error::{status_from_jobs, status_from_tenancy};
use crate::tenant_of;

/// `steward.jobs.v1.Jobs`: the jobs of the calling tenant, through the job hub. Serve it behind
/// [`TenantAuth`](crate::TenantAuth), which supplies the caller; a tenant only ever sees its own
/// jobs (another tenant's id is `NOT_FOUND`).
///
/// Its `WatchJob` streams end with `UNAVAILABLE` when `streams` is cancelled (shutdown phase
/// `notify_clients`), so tonic's graceful stop never waits on them, and with
/// `RESOURCE_EXHAUSTED` when more than `watch_buffer` updates wait for a reader.
#[derive(Clone)]
pub struct JobsService {
    jobs: JobHubHandle,
    streams: CancellationToken,
    watch_buffer: usize,
    /// Admits jobs and `WatchJob` streams against the caller's quotas (`jobs`,
    /// `watch_streams`); without it (unit tests) nothing is counted.
    tenancy: Option<Tenancy>,
}

impl JobsService {
    /// A service over the job hub `jobs`; `streams` ends every open `WatchJob` stream when
    /// cancelled; `watch_buffer` is how many updates may wait for the reader of one stream
    /// (`[jobs] watch_buffer`, 64 by default; 0 counts as 1, the snapshot needs a place).
    #[must_use]
    pub fn new(jobs: JobHubHandle, streams: CancellationToken, watch_buffer: usize) -> Self {
        Self { jobs, streams, watch_buffer: watch_buffer.max(1), tenancy: None }
    }

    /// Counts jobs and `WatchJob` streams against each caller's quotas `jobs` (a job holds its
    /// slot until it reaches a final status) and `watch_streams` (a stream holds its slot until
    /// it ends), through `tenancy`'s admission ledger.
    #[must_use]
    pub fn with_quotas(mut self, tenancy: Tenancy) -> Self {
        self.tenancy = Some(tenancy);
        self
    }

    /// A slot of `quota` for the caller of `req`, when quotas are counted.
    fn slot<T>(&self, req: &Request<T>, quota: QuotaKind) -> Result<Option<Reservation>, Status> {
        let Some(tenancy) = &self.tenancy else { return Ok(None) };
        let ctx = tenant_of(req)?;
        tenancy.reserve(ctx, quota).map(Some).map_err(|e| status_from_tenancy(&e))
    }
}

/// The calling tenant's id, as the job hub keys jobs.
fn tenant<T>(req: &Request<T>) -> Result<Arc<str>, Status> {
    Ok(tenant_of(req)?.tenant_id().as_str().into())
}

/// The job id of request field `id`.
fn parse_id(id: &str) -> Result<JobId, Status> {
    id.parse().map_err(|_| {
        status_from_jobs(&steward_socket::Error::invalid("id", "must be a job id: 32 hex digits"))
    })
}

/// The status of request field `status`: a known status other than `JOB_STATUS_UNSPECIFIED`.
fn parse_status(value: i32) -> Result<JobStatus, Status> {
    let invalid =
        |reason: String| status_from_jobs(&steward_socket::Error::invalid("status", reason));
    match pb::JobStatus::try_from(value) {
        Ok(pb::JobStatus::Queued) => Ok(JobStatus::Queued),
        Ok(pb::JobStatus::Running) => Ok(JobStatus::Running),
        Ok(pb::JobStatus::Completed) => Ok(JobStatus::Completed),
        Ok(pb::JobStatus::Failed) => Ok(JobStatus::Failed),
        Ok(pb::JobStatus::Cancelled) => Ok(JobStatus::Cancelled),
        Ok(pb::JobStatus::Unspecified) => {
            Err(invalid("must be a status, not JOB_STATUS_UNSPECIFIED".to_owned()))
        }
        Err(_) => Err(invalid(format!("{value} is not a known job status"))),
    }
}

fn status_to_pb(status: JobStatus) -> pb::JobStatus {
    match status {
        JobStatus::Queued => pb::JobStatus::Queued,
        JobStatus::Running => pb::JobStatus::Running,
        JobStatus::Completed => pb::JobStatus::Completed,
        JobStatus::Failed => pb::JobStatus::Failed,
        JobStatus::Cancelled => pb::JobStatus::Cancelled,
    }
}

/// A job on the wire.
fn job_to_pb(job: &Job) -> pb::Job {
    pb::Job {
        id: job.id.to_string(),
        kind: job.kind.clone(),
        status: status_to_pb(job.status).into(),
        progress: u32::from(job.progress),
        data: job.data.get().to_owned(),
        created_at: Some(job.created_at.into()),
        updated_at: Some(job.updated_at.into()),
        finished_at: job.finished_at.map(Into::into),
    }
}

fn answer(job: steward_socket::Result<Job>) -> Result<Response<pb::Job>, Status> {
    job.map(|job| Response::new(job_to_pb(&job))).map_err(|e| status_from_jobs(&e))
}

fn shutting_down() -> Status {
    Status::unavailable("shutting_down: server shutting down")
}

type JobStream = Pin<Box<dyn Stream<Item = Result<pb::Job, Status>> + Send>>;

#[tonic::async_trait]
impl JobsRpc for JobsService {
    async fn create_job(
        &self,
        req: Request<pb::CreateJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let tenant = tenant(&req)?;
        let slot = self.slot(&req, QuotaKind::Jobs)?;
        let pb::CreateJobRequest { kind, data } = req.into_inner();
        match slot {
            Some(slot) => answer(self.jobs.create_held(tenant, kind, data, Box::new(slot)).await),
            None => answer(self.jobs.create(tenant, kind, data).await),
        }
    }

    async fn update_job(
        &self,
        req: Request<pb::UpdateJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let tenant = tenant(&req)?;
        let pb::UpdateJobRequest { id, status, progress, data } = req.into_inner();
        let id = parse_id(&id)?;
        let patch = JobPatch { status: status.map(parse_status).transpose()?, progress, data };
        answer(self.jobs.update(tenant, id, patch).await)
    }

    async fn get_job(&self, req: Request<pb::GetJobRequest>) -> Result<Response<pb::Job>, Status> {
        let tenant = tenant(&req)?;
        let id = parse_id(&req.get_ref().id)?;
        answer(self.jobs.get(tenant, id).await)
    }

    async fn cancel_job(
        &self,
        req: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let tenant = tenant(&req)?;
        let id = parse_id(&req.get_ref().id)?;
        answer(self.jobs.cancel(tenant, id).await)
    }

    type WatchJobStream = JobStream;

    async fn watch_job(
        &self,
        req: Request<pb::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let tenant = tenant(&req)?;
        let id = parse_id(&req.get_ref().id)?;
        if self.streams.is_cancelled() {
            return Err(shutting_down());
        }
        let slot = self.slot(&req, QuotaKind::WatchStreams)?;
        let mut watch = self.watch(tenant, id).await?;
        watch._slot = slot;
        Ok(Response::new(Box::pin(watch.into_stream())))
    }
}

impl JobsService {
    /// Subscribes a fresh [`Watch`] to job `id` of `tenant`; its channel already holds the
    /// snapshot.
    async fn watch(&self, tenant: Arc<str>, id: JobId) -> Result<Watch, Status> {
        let (tx, updates) = mpsc::channel(self.watch_buffer);
        let overflowed = Arc::new(AtomicBool::new(false));
        let sink = Arc::new(WatchSink { tx, overflowed: overflowed.clone() });
        // the hub holds the only sender from here on: when it drops the watcher (final update,
        // overflow, eviction, restart) the channel closes
        let subscription = self
            .jobs
            .subscribe(tenant.clone(), id.clone(), sink, None)
            .await
            .map_err(|e| status_from_jobs(&e))?;
        Ok(Watch {
            updates,
            overflowed,
            _subscription: subscription,
            cancel: self.streams.clone(),
            tenant,
            id,
            buffer: self.watch_buffer,
            finished: false,
            _slot: None,
        })
    }
}

/// The hub's side of one `WatchJob` stream: offers go into a bounded channel with `try_send`;
/// a full channel marks the watcher as overflowed (the hub then drops it).
struct WatchSink {
    tx: mpsc::Sender<Arc<JobUpdate>>,
    overflowed: Arc<AtomicBool>,
}

impl WatchSink {
    fn push(&self, update: &Arc<JobUpdate>) -> Offer {
        match self.tx.try_send(update.clone()) {
            Ok(()) => Offer::Queued,
            Err(TrySendError::Full(_)) => {
                self.overflowed.store(true, Ordering::Release);
                Offer::Overflow
            }
            Err(TrySendError::Closed(_)) => Offer::Closed,
        }
    }
}

impl JobSink for WatchSink {
    fn subscribed(&self, snapshot: &Arc<JobUpdate>, _request: Option<&Value>) -> Offer {
        self.push(snapshot)
    }

    fn offer(&self, update: &Arc<JobUpdate>) -> Offer {
        self.push(update)
    }

    fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// The stream's side of one `WatchJob`: what it reads, and why it ends. Dropping it (the client
/// went away, or the stream ended) drops the subscription, which removes the watcher from the hub.
struct Watch {
    updates: mpsc::Receiver<Arc<JobUpdate>>,
    overflowed: Arc<AtomicBool>,
    /// `None` when the job was already final: the snapshot is all there is.
    _subscription: Option<Subscription>,
    cancel: CancellationToken,
    tenant: Arc<str>,
    id: JobId,
    buffer: usize,
    /// A final-status update was sent: the stream ends `OK`.
    finished: bool,
    /// The caller's `watch_streams` quota slot, released when the stream ends.
    _slot: Option<Reservation>,
}

impl Watch {
    /// The next message: `None` ends the stream with `OK`; an error is the last item.
    async fn next(&mut self) -> Option<Result<pb::Job, Status>> {
        if self.finished {
            return None;
        }
        if self.overflowed.load(Ordering::Acquire) {
            return Some(Err(self.slow_consumer()));
        }
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => Some(Err(shutting_down())),
            update = self.updates.recv() => match update {
                Some(update) => {
                    self.finished = update.job.status.is_final();
                    Some(Ok(job_to_pb(&update.job)))
                }
                None if self.overflowed.load(Ordering::Acquire) => Some(Err(self.slow_consumer())),
                None => Some(Err(self.abandoned())),
            },
        }
    }

    /// The end of a watcher whose queue overflowed (the hub dropped it).
    fn slow_consumer(&self) -> Status {
        let (job, tenant, buffer) = (&self.id, &self.tenant, self.buffer);
        tracing::debug!(job = %job, tenant = %tenant, buffer, "WatchJob stream too slow, ended");
        Status::resource_exhausted(format!(
            "slow_consumer: slow consumer, more than {buffer} updates of job {job} waited for this \
             stream; watch again"
        ))
    }

    /// The end of a watcher the hub dropped before the job finished (its jobs were removed with
    /// its tenant, or the hub restarted with an empty table).
    fn abandoned(&self) -> Status {
        let (job, tenant) = (&self.id, &self.tenant);
        tracing::debug!(job = %job, tenant = %tenant, "job hub stopped watching an unfinished job");
        Status::unavailable(format!(
            "unavailable: the job hub stopped watching job {job} before it finished; watch again"
        ))
    }

    /// The messages until the end: `OK` after a final status, or one error.
    fn into_stream(self) -> impl Stream<Item = Result<pb::Job, Status>> + Send + 'static {
        futures_util::stream::unfold(Some(self), |watch| async move {
            let mut watch = watch?;
            let item = watch.next().await?;
            let more = item.is_ok().then_some(watch);
            Some((item, more))
        })
    }
}

#[cfg(test)]
mod tests;
