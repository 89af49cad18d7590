//! The job hub: the supervised actor that owns the job table (jobs of every tenant, a hard cap,
//! finished jobs evicted `finished_ttl` after they end) and fans job updates out to watchers
//! (sockets and `WatchJob` streams) without ever waiting on one.
//!
//! Seed 002's job map grew without bound and its eviction timers were per job; here one actor
//! timer is armed at the earliest deadline (finished jobs' evictions and queued jobs' expiries at
//! `queued_ttl`, two deadline queues), a sweep every `sweep_interval` is the safety net, a job
//! holds its tenant's `jobs` quota slot until it finishes, and a watcher's subscription ends in exactly one place:
//! the drop of its [`Subscription`].
//!
//! The table is the actor's state: a restart of the hub starts with an empty table (jobs are
//! in memory, like the seed's), and every subscription of the previous incarnation becomes
//! inactive.

mod actor;
mod handlers;
mod messages;
mod model;
mod subscribers;
mod table;
#[cfg(test)]
mod tests;

pub(crate) use model::render;
pub use model::{Job, JobId, JobStatus, JobUpdate};
pub use subscribers::{JobSink, Offer, Subscription};
pub use table::{JobHold, JobPatch};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::WeakAddr;
use actix::prelude::*;
use serde_json::Value;
use steward_config::JobsConfig;
use steward_core::{ChildSpec, ResourceCtx, ResourceKind};

use crate::{Error, Result};
use messages::{CreateJob, GetJob, RemoveTenantJobs, SubscribeJob, UpdateJob};
use subscribers::Subscribers;
use table::JobTable;

/// How long a caller waits for the hub to answer before `UNAVAILABLE`.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// The job hub actor (a `service` resource under the root supervisor).
pub struct JobHub {
    /// Its resource context.
    rcx: ResourceCtx,
    /// Jobs and eviction deadlines.
    table: JobTable,
    /// Watchers per job (shared with the handle, so metrics read it without a message).
    subscribers: Arc<Subscribers>,
    /// Counters shared with the handle.
    metrics: Arc<JobMetrics>,
    /// The one eviction timer, armed at the earliest deadline, with that deadline.
    eviction: Option<(Instant, SpawnHandle)>,
    /// Where the hub publishes its address when it starts.
    publish: Arc<Mutex<Option<WeakAddr<JobHub>>>>,
    config: JobsConfig,
}

/// Counters of the job hub, read by `/metrics` and the socket monitor.
#[derive(Debug, Default)]
pub struct JobMetrics {
    jobs: AtomicU64,
    running: AtomicU64,
    created: AtomicU64,
    updates: AtomicU64,
    evicted: AtomicU64,
    refused_cap: AtomicU64,
    watcher_overflows: AtomicU64,
    expired: AtomicU64,
}

/// A reading of [`JobMetrics`] plus the live subscription count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobStats {
    /// Jobs held now (live and finished-not-yet-evicted).
    pub jobs: u64,
    /// Jobs in status `running` now.
    pub running: u64,
    /// Live subscriptions (sockets and `WatchJob` streams) now.
    pub subscriptions: u64,
    /// Jobs created since start.
    pub created: u64,
    /// Updates applied since start (cancellations included).
    pub updates: u64,
    /// Finished jobs evicted since start.
    pub evicted: u64,
    /// Creations refused at the `max_jobs` cap since start.
    pub refused_cap: u64,
    /// Watchers dropped because their queue was full, since start.
    pub watcher_overflows: u64,
    /// Queued jobs failed at `[jobs] queued_ttl`, since start.
    pub expired: u64,
}

/// Typed handle to the job hub: follows the hub across restarts. Cheap to clone; usable from any
/// thread (tonic's runtime included).
#[derive(Clone)]
pub struct JobHubHandle {
    addr: Arc<Mutex<Option<WeakAddr<JobHub>>>>,
    subscribers: Arc<Mutex<Arc<Subscribers>>>,
    metrics: Arc<JobMetrics>,
}

impl Default for JobHubHandle {
    fn default() -> Self {
        Self::new()
    }
}

impl JobHubHandle {
    /// A handle to a hub not started yet; start it with [`JobHubHandle::child_spec`].
    #[must_use]
    pub fn new() -> Self {
        Self { addr: Arc::default(), subscribers: Arc::default(), metrics: Arc::default() }
    }

    /// The child spec of the hub (kind `service`, permanent): each incarnation starts with an
    /// empty table and publishes itself in this handle.
    #[must_use]
    pub fn child_spec(&self, config: JobsConfig) -> ChildSpec {
        let handle = self.clone();
        ChildSpec::new("job-hub", ResourceKind::Service, move |rcx: ResourceCtx| {
            let subscribers = Arc::new(Subscribers::default());
            *lock(&handle.subscribers) = subscribers.clone();
            handle.metrics.jobs.store(0, Ordering::Relaxed);
            handle.metrics.running.store(0, Ordering::Relaxed);
            Ok::<_, std::convert::Infallible>(JobHub {
                rcx,
                table: JobTable::new(&config),
                subscribers,
                metrics: handle.metrics.clone(),
                eviction: None,
                publish: handle.addr.clone(),
                config: config.clone(),
            })
        })
    }

    /// Creates a job (status `queued`, progress 0) for `tenant`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty or too long `kind` or bad `data` (must be a JSON
    /// object within `[jobs] max_data`); [`Error::LimitReached`] at `[jobs] max_jobs`;
    /// [`Error::Unavailable`] when the hub is down or does not answer within 5 s.
    pub async fn create(
        &self,
        tenant: Arc<str>,
        kind: String,
        data: Option<String>,
    ) -> Result<Job> {
        self.ask(CreateJob { tenant, kind, data, hold: None }).await?
    }

    /// [`JobHubHandle::create`] for a job that keeps `hold` (the tenant's `jobs` quota slot)
    /// until it reaches a final status or leaves the table; `hold` is dropped at once when the
    /// creation fails.
    ///
    /// # Errors
    /// As [`JobHubHandle::create`].
    pub async fn create_held(
        &self,
        tenant: Arc<str>,
        kind: String,
        data: Option<String>,
        hold: JobHold,
    ) -> Result<Job> {
        self.ask(CreateJob { tenant, kind, data, hold: Some(hold) }).await?
    }

    /// Applies a worker's report (status, progress, data) and fans it out to watchers.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown job or another tenant's; [`Error::Finished`] when the
    /// job is final; [`Error::Transition`] for a forbidden move; [`Error::InvalidArgument`] for
    /// progress over 100 or bad data; [`Error::Unavailable`].
    pub async fn update(&self, tenant: Arc<str>, id: JobId, patch: JobPatch) -> Result<Job> {
        self.ask(UpdateJob { tenant, id, patch }).await?
    }

    /// Cancels a job (status `cancelled`, final).
    ///
    /// # Errors
    /// As [`JobHubHandle::update`].
    pub async fn cancel(&self, tenant: Arc<str>, id: JobId) -> Result<Job> {
        let patch = JobPatch { status: Some(JobStatus::Cancelled), ..JobPatch::default() };
        self.update(tenant, id, patch).await
    }

    /// Reads a job.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown job or another tenant's; [`Error::Unavailable`].
    pub async fn get(&self, tenant: Arc<str>, id: JobId) -> Result<Job> {
        self.ask(GetJob { tenant, id }).await?
    }

    /// Subscribes `sink` to a job: it is offered the `subscribed` snapshot (echoing `request`),
    /// then every update until the job is final. `Ok(None)` when the job is already final.
    /// Dropping the returned [`Subscription`] ends it.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown job or another tenant's; [`Error::Unavailable`].
    pub async fn subscribe(
        &self,
        tenant: Arc<str>,
        id: JobId,
        sink: Arc<dyn JobSink>,
        request: Option<Value>,
    ) -> Result<Option<Subscription>> {
        self.ask(SubscribeJob { tenant, id, sink, request }).await?
    }

    /// Removes every job of a deleted tenant (their watchers get nothing more); returns how many.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub async fn remove_tenant(&self, tenant: Arc<str>) -> Result<usize> {
        self.ask(RemoveTenantJobs { tenant }).await
    }

    /// Counters and gauges of the hub.
    #[must_use]
    pub fn stats(&self) -> JobStats {
        let m = &self.metrics;
        JobStats {
            jobs: m.jobs.load(Ordering::Relaxed),
            running: m.running.load(Ordering::Relaxed),
            subscriptions: lock(&self.subscribers).len() as u64,
            created: m.created.load(Ordering::Relaxed),
            updates: m.updates.load(Ordering::Relaxed),
            evicted: m.evicted.load(Ordering::Relaxed),
            refused_cap: m.refused_cap.load(Ordering::Relaxed),
            watcher_overflows: m.watcher_overflows.load(Ordering::Relaxed),
            expired: m.expired.load(Ordering::Relaxed),
        }
    }

    async fn ask<M>(&self, msg: M) -> Result<M::Result>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        JobHub: Handler<M>,
    {
        let addr = lock(&self.addr)
            .as_ref()
            .and_then(WeakAddr::upgrade)
            .ok_or(Error::Unavailable("not running"))?;
        match tokio::time::timeout(ASK_TIMEOUT, addr.send(msg)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(Error::Unavailable("stopped")),
            Err(_) => Err(Error::Unavailable("no answer within 5 s")),
        }
    }
}

impl std::fmt::Debug for JobHubHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobHubHandle").field("stats", &self.stats()).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
