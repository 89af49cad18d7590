//! The job table: jobs by id with a hard cap, and the deadline queue of finished jobs awaiting
//! eviction. Plain data, owned by the job hub actor; unit-tested on its own.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use steward_config::JobsConfig;

use super::model::{Job, JobId, JobStatus, empty_data, parse_data};
use crate::{Error, Result};

/// A worker's report: any of status, progress and data (data replaces the previous object).
#[derive(Debug, Clone, Default)]
pub struct JobPatch {
    /// New status.
    pub status: Option<JobStatus>,
    /// New progress, 0–100.
    pub progress: Option<u32>,
    /// New data: a JSON object as text.
    pub data: Option<String>,
}

/// What a live job holds until it finishes (the tenant's `jobs` quota slot, from the edge);
/// dropped when the job reaches a final status or leaves the table.
pub type JobHold = Box<dyn std::any::Any + Send>;

/// The jobs of every tenant on this node.
pub(crate) struct JobTable {
    jobs: HashMap<JobId, Job>,
    /// Finished jobs by eviction deadline (earliest first). An entry whose job is already gone
    /// is skipped when popped.
    evictions: BinaryHeap<Reverse<(Instant, JobId)>>,
    /// Queued jobs by the instant they expire (`[jobs] queued_ttl`); a job leaves it when it
    /// leaves `queued` or the table, so no timer is kept for a job that cannot expire.
    expiries: BTreeSet<(Instant, JobId)>,
    /// Each queued job's expiry instant (its key in `expiries`).
    expires_at: HashMap<JobId, Instant>,
    /// What each live job holds.
    holds: HashMap<JobId, JobHold>,
    /// Finished jobs evicted early to make room, not yet told to the hub (`take_evicted`).
    evicted_early: Vec<JobId>,
    running: usize,
    max_jobs: usize,
    finished_ttl: Duration,
    queued_ttl: Duration,
    max_data: usize,
    max_kind_len: usize,
}

impl JobTable {
    pub(crate) fn new(config: &JobsConfig) -> Self {
        Self {
            jobs: HashMap::new(),
            evictions: BinaryHeap::new(),
            expiries: BTreeSet::new(),
            expires_at: HashMap::new(),
            holds: HashMap::new(),
            evicted_early: Vec::new(),
            running: 0,
            max_jobs: config.max_jobs as usize,
            finished_ttl: config.finished_ttl,
            queued_ttl: config.queued_ttl,
            max_data: usize::try_from(config.max_data.as_u64()).unwrap_or(usize::MAX),
            max_kind_len: config.max_kind_len as usize,
        }
    }

    /// Jobs held (live and finished-not-yet-evicted).
    pub(crate) fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Jobs in status `running`.
    pub(crate) fn running(&self) -> usize {
        self.running
    }

    /// Creates a job for `tenant` (tests: the hub always goes through `create_held`).
    #[cfg(test)]
    pub(crate) fn create(
        &mut self,
        tenant: &Arc<str>,
        kind: &str,
        data: Option<&str>,
    ) -> Result<Job> {
        self.create_held(tenant, kind, data, None)
    }

    /// Creates a job for `tenant` that keeps `hold` until it finishes. At `max_jobs` the
    /// finished job due first is evicted early to make room (a finished job is only kept to be
    /// read), so one tenant's churn of short jobs never refuses another tenant's live job;
    /// only when every held job is live is the creation refused.
    pub(crate) fn create_held(
        &mut self,
        tenant: &Arc<str>,
        kind: &str,
        data: Option<&str>,
        hold: Option<JobHold>,
    ) -> Result<Job> {
        if kind.trim().is_empty() {
            return Err(Error::invalid("kind", "must not be empty"));
        }
        if kind.len() > self.max_kind_len {
            return Err(Error::invalid(
                "kind",
                format!("is {} bytes, more than {}", kind.len(), self.max_kind_len),
            ));
        }
        let data = match data {
            Some(text) if !text.is_empty() => parse_data(text, self.max_data)?,
            _ => empty_data(),
        };
        if self.jobs.len() >= self.max_jobs && self.evict_one_finished().is_none() {
            return Err(Error::LimitReached { what: "jobs", limit: self.max_jobs as u64 });
        }
        let now = SystemTime::now();
        let job = Job {
            id: JobId::random(),
            tenant: tenant.clone(),
            kind: kind.to_owned(),
            status: JobStatus::Queued,
            progress: 0,
            data,
            created_at: now,
            updated_at: now,
            finished_at: None,
        };
        self.jobs.insert(job.id.clone(), job.clone());
        if let Some(hold) = hold {
            self.holds.insert(job.id.clone(), hold);
        }
        if !self.queued_ttl.is_zero() {
            let at = Instant::now() + self.queued_ttl;
            self.expiries.insert((at, job.id.clone()));
            self.expires_at.insert(job.id.clone(), at);
        }
        Ok(job)
    }

    /// Evicts the finished job due first, ahead of its time; its id, or `None` when no job is
    /// finished.
    fn evict_one_finished(&mut self) -> Option<JobId> {
        while let Some(Reverse((_, id))) = self.evictions.pop() {
            if self.jobs.get(&id).is_some_and(|j| j.status.is_final()) {
                self.jobs.remove(&id);
                self.evicted_early.push(id.clone());
                return Some(id);
            }
        }
        None
    }

    /// The finished jobs evicted early since the last call (their watchers must go).
    pub(crate) fn take_evicted(&mut self) -> Vec<JobId> {
        std::mem::take(&mut self.evicted_early)
    }

    /// When the earliest queued job expires.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.expiries.first().map(|(at, _)| *at)
    }

    /// Job `id` can no longer expire (it left `queued` or the table).
    fn forget_expiry(&mut self, id: &JobId) {
        if let Some(at) = self.expires_at.remove(id) {
            self.expiries.remove(&(at, id.clone()));
        }
    }

    /// The jobs still queued whose `queued_ttl` passed at `now` (to be failed by the hub).
    pub(crate) fn expired(&mut self, now: Instant) -> Vec<(Arc<str>, JobId)> {
        let mut due = Vec::new();
        while let Some((at, _)) = self.expiries.first() {
            if *at > now {
                break;
            }
            let Some((_, id)) = self.expiries.pop_first() else { break };
            self.expires_at.remove(&id);
            if let Some(job) = self.jobs.get(&id).filter(|j| j.status == JobStatus::Queued) {
                due.push((job.tenant.clone(), id));
            }
        }
        due
    }

    /// The job `id` of `tenant`.
    pub(crate) fn get(&self, tenant: &str, id: &JobId) -> Result<&Job> {
        self.jobs
            .get(id)
            .filter(|j| &*j.tenant == tenant)
            .ok_or_else(|| Error::NotFound(id.to_string()))
    }

    /// Applies a worker's report; returns the job after it. Validates everything before
    /// changing anything, so a refused patch changes nothing.
    pub(crate) fn update(&mut self, tenant: &str, id: &JobId, patch: &JobPatch) -> Result<Job> {
        let max_data = self.max_data;
        let job = self
            .jobs
            .get_mut(id)
            .filter(|j| &*j.tenant == tenant)
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        if job.status.is_final() {
            return Err(Error::Finished { job: id.to_string(), status: job.status.as_str() });
        }
        if let Some(next) = patch.status
            && !job.status.may_become(next)
        {
            return Err(Error::Transition {
                job: id.to_string(),
                from: job.status.as_str(),
                to: next.as_str(),
            });
        }
        let progress = match patch.progress {
            Some(p) if p > 100 => return Err(Error::invalid("progress", "must be 0..=100")),
            Some(p) => Some(u8::try_from(p).unwrap_or(100)),
            None => None,
        };
        let data = match patch.data.as_deref() {
            Some(text) => Some(parse_data(text, max_data)?),
            None => None,
        };
        let before = job.status;
        if let Some(p) = progress {
            job.progress = p;
        }
        if let Some(d) = data {
            job.data = d;
        }
        if let Some(next) = patch.status {
            job.status = next;
            if next == JobStatus::Completed && patch.progress.is_none() {
                job.progress = 100;
            }
        }
        job.updated_at = SystemTime::now();
        let after = job.status;
        if after.is_final() {
            job.finished_at = Some(job.updated_at);
        }
        let snapshot = job.clone();
        self.note_transition(id, before, after);
        Ok(snapshot)
    }

    fn note_transition(&mut self, id: &JobId, before: JobStatus, after: JobStatus) {
        if before == after {
            return;
        }
        if before == JobStatus::Queued {
            self.forget_expiry(id);
        }
        if before == JobStatus::Running {
            self.running -= 1;
        }
        if after == JobStatus::Running {
            self.running += 1;
        }
        if after.is_final() {
            self.holds.remove(id);
            self.evictions.push(Reverse((Instant::now() + self.finished_ttl, id.clone())));
        }
    }

    /// When the earliest finished job is due for eviction.
    pub(crate) fn next_eviction(&self) -> Option<Instant> {
        self.evictions.peek().map(|Reverse((at, _))| *at)
    }

    /// Evicts every finished job due at `now`; returns their ids.
    pub(crate) fn evict_due(&mut self, now: Instant) -> Vec<JobId> {
        let mut gone = Vec::new();
        while let Some(Reverse((at, _))) = self.evictions.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, id))) = self.evictions.pop() else { break };
            if self.jobs.get(&id).is_some_and(|j| j.status.is_final()) {
                self.jobs.remove(&id);
                gone.push(id);
            }
        }
        gone
    }

    /// Removes every job of `tenant` (the tenant was deleted); returns their ids.
    pub(crate) fn remove_tenant(&mut self, tenant: &str) -> Vec<JobId> {
        let ids: Vec<JobId> =
            self.jobs.values().filter(|j| &*j.tenant == tenant).map(|j| j.id.clone()).collect();
        for id in &ids {
            self.holds.remove(id);
            self.forget_expiry(id);
            if let Some(job) = self.jobs.remove(id)
                && job.status == JobStatus::Running
            {
                self.running -= 1;
            }
        }
        ids
    }
}
