//! The hub's lifecycle: publish, sweep, the eviction timer.

use std::sync::atomic::Ordering;
use std::time::Instant;

use actix::prelude::*;
use steward_core::{Resource, ResourceCtx, StopResource, stop_resource};

use super::{JobHub, lock};

impl Actor for JobHub {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        *lock(&self.publish) = Some(ctx.address().downgrade());
        let every = self.config.sweep_interval;
        self.rcx.run_interval(ctx, every, |act: &mut Self, ctx| act.sweep(ctx));
        tracing::info!(
            max_jobs = self.config.max_jobs,
            finished_ttl_s = self.config.finished_ttl.as_secs(),
            "job hub started (jobs are kept in memory)"
        );
    }

    /// The table goes with this incarnation; so do its watchers (their streams and sockets see
    /// their subscriptions end rather than wait for updates that cannot come).
    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.subscribers.clear();
        self.metrics.jobs.store(0, Ordering::Relaxed);
        self.metrics.running.store(0, Ordering::Relaxed);
    }
}

impl Resource for JobHub {
    fn resource_ctx(&self) -> &ResourceCtx {
        &self.rcx
    }

    fn resource_ctx_mut(&mut self) -> &mut ResourceCtx {
        &mut self.rcx
    }
}

impl Handler<StopResource> for JobHub {
    type Result = ();

    fn handle(&mut self, msg: StopResource, ctx: &mut Context<Self>) {
        stop_resource(self, ctx, msg.reason);
    }
}

impl JobHub {
    /// Evicts the finished jobs that are due and drops their watchers; re-arms the timer.
    pub(super) fn sweep(&mut self, ctx: &mut Context<Self>) {
        // queued jobs past `queued_ttl` fail (their watchers hear it) before evictions run
        let expired = self.table.expired(Instant::now());
        for (tenant, id) in &expired {
            let patch =
                super::JobPatch { status: Some(super::JobStatus::Failed), ..Default::default() };
            if self.apply(tenant, id, &patch, ctx).is_ok() {
                self.metrics.expired.fetch_add(1, Ordering::Relaxed);
            }
        }
        if !expired.is_empty() {
            tracing::info!(expired = expired.len(), "queued jobs expired ([jobs] queued_ttl)");
        }
        let gone = self.table.evict_due(Instant::now());
        for id in &gone {
            self.subscribers.drop_job(id);
        }
        if !gone.is_empty() {
            self.metrics.evicted.fetch_add(gone.len() as u64, Ordering::Relaxed);
            tracing::debug!(evicted = gone.len(), jobs = self.table.len(), "finished jobs evicted");
        }
        self.subscribers.drop_closed();
        self.publish_gauges();
        if let Some((_, timer)) = self.eviction.take() {
            ctx.cancel_future(timer);
        }
        self.arm_eviction(ctx);
    }

    /// Keeps the one timer armed at the earliest deadline (an eviction or a queued job's
    /// expiry): re-armed when that deadline moved, cancelled when nothing is due, so the hub
    /// holds no timer for a deadline that went away (a job that started, a tenant removed).
    pub(super) fn arm_eviction(&mut self, ctx: &mut Context<Self>) {
        let next = match (self.table.next_eviction(), self.table.next_expiry()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let (Some((armed, _)), Some(next)) = (&self.eviction, next)
            && *armed == next
        {
            return;
        }
        if let Some((_, timer)) = self.eviction.take() {
            ctx.cancel_future(timer);
        }
        let Some(next) = next else { return };
        let delay = next.saturating_duration_since(Instant::now());
        let timer = self.rcx.run_later(ctx, delay, |act: &mut Self, ctx| {
            act.eviction = None;
            act.sweep(ctx);
        });
        self.eviction = Some((next, timer));
    }

    pub(super) fn publish_gauges(&self) {
        self.metrics.jobs.store(self.table.len() as u64, Ordering::Relaxed);
        self.metrics.running.store(self.table.running() as u64, Ordering::Relaxed);
    }
}
