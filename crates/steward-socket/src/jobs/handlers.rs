//! What the hub does with each command.

use std::sync::atomic::Ordering;

use actix::prelude::*;

use super::JobHub;
use super::messages::{CreateJob, GetJob, RemoveTenantJobs, SubscribeJob, UpdateJob};
use super::model::{Job, JobUpdate};
use super::subscribers::{Offer, Subscription};
use crate::{Error, Result};

impl Handler<CreateJob> for JobHub {
    type Result = Result<Job>;

    fn handle(&mut self, msg: CreateJob, ctx: &mut Context<Self>) -> Self::Result {
        let created = self.table.create_held(&msg.tenant, &msg.kind, msg.data.as_deref(), msg.hold);
        match &created {
            Ok(job) => {
                self.metrics.created.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(job = %job.id, tenant = %msg.tenant, kind = %job.kind, "job created");
            }
            Err(Error::LimitReached { .. }) => {
                self.metrics.refused_cap.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {}
        }
        let early = self.table.take_evicted();
        for id in &early {
            self.subscribers.drop_job(id);
        }
        self.metrics.evicted.fetch_add(early.len() as u64, Ordering::Relaxed);
        if created.is_ok() {
            self.arm_eviction(ctx);
        }
        self.publish_gauges();
        created
    }
}

impl Handler<UpdateJob> for JobHub {
    type Result = Result<Job>;

    fn handle(&mut self, msg: UpdateJob, ctx: &mut Context<Self>) -> Self::Result {
        self.apply(&msg.tenant, &msg.id, &msg.patch, ctx)
    }
}

impl JobHub {
    /// Applies `patch` to job `id` of `tenant` and fans the change out.
    pub(super) fn apply(
        &mut self,
        tenant: &str,
        id: &super::JobId,
        patch: &super::JobPatch,
        ctx: &mut Context<Self>,
    ) -> Result<Job> {
        let job = self.table.update(tenant, id, patch)?;
        self.metrics.updates.fetch_add(1, Ordering::Relaxed);
        let last = job.status.is_final();
        let update = JobUpdate::new(job.clone());
        let (_, overflowed) = self.subscribers.fan_out(&update, last);
        if overflowed > 0 {
            self.metrics.watcher_overflows.fetch_add(overflowed, Ordering::Relaxed);
        }
        // a final job is due for eviction; a job that left `queued` can no longer expire
        self.arm_eviction(ctx);
        self.publish_gauges();
        Ok(job)
    }
}

impl Handler<GetJob> for JobHub {
    type Result = Result<Job>;

    fn handle(&mut self, msg: GetJob, _ctx: &mut Context<Self>) -> Self::Result {
        self.table.get(&msg.tenant, &msg.id).cloned()
    }
}

impl Handler<SubscribeJob> for JobHub {
    type Result = Result<Option<Subscription>>;

    fn handle(&mut self, msg: SubscribeJob, _ctx: &mut Context<Self>) -> Self::Result {
        let job = self.table.get(&msg.tenant, &msg.id)?.clone();
        let last = job.status.is_final();
        let snapshot = JobUpdate::new(job);
        match msg.sink.subscribed(&snapshot, msg.request.as_ref()) {
            Offer::Queued if !last => Ok(Some(self.subscribers.add(&msg.id, msg.sink))),
            Offer::Queued | Offer::Closed => Ok(None),
            Offer::Overflow => {
                self.metrics.watcher_overflows.fetch_add(1, Ordering::Relaxed);
                Ok(None)
            }
        }
    }
}

impl Handler<RemoveTenantJobs> for JobHub {
    type Result = usize;

    fn handle(&mut self, msg: RemoveTenantJobs, ctx: &mut Context<Self>) -> usize {
        let gone = self.table.remove_tenant(&msg.tenant);
        for id in &gone {
            self.subscribers.drop_job(id);
        }
        self.arm_eviction(ctx);
        self.publish_gauges();
        gone.len()
    }
}
