//! The socket memory monitor (seed 002's `memoryMonitor.js`, as a supervised actor): every
//! `interval` it samples open sockets, RSS, inactive sockets and running jobs; raises the seed's
//! four alarms as metrics and warnings; and while any alarm is raised, remediates by closing
//! sockets inactive for longer than `remediate_inactive_after` (notice `idle_timeout`, then
//! Close 4000).

#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use actix::prelude::*;
use steward_config::SocketMonitorConfig;
use steward_core::{
    ChildSpec, Control, ExitReason, Resource, ResourceCtx, ResourceFilter, ResourceKind,
    StopResource, stop_resource,
};

use crate::jobs::JobHubHandle;
use crate::stats::SocketStats;

/// The seed's alarms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alarm {
    /// Open sockets above `max_connections`.
    HighConnections,
    /// RSS more than `max_growth` over its baseline.
    MemoryGrowth,
    /// More than `max_inactive_ratio` of sockets inactive.
    HighInactive,
    /// More than `max_running_jobs` running jobs.
    HighRunningJobs,
}

impl Alarm {
    /// Every alarm, in a fixed order.
    pub const ALL: [Self; 4] =
        [Self::HighConnections, Self::MemoryGrowth, Self::HighInactive, Self::HighRunningJobs];

    /// snake_case label.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HighConnections => "high_connections",
            Self::MemoryGrowth => "memory_growth",
            Self::HighInactive => "high_inactive",
            Self::HighRunningJobs => "high_running_jobs",
        }
    }
}

/// The monitor's latest reading.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MonitorReport {
    /// Samples taken.
    pub samples: u64,
    /// Open sockets.
    pub connections: u64,
    /// Sockets without an application message for `inactive_after`.
    pub inactive: u64,
    /// Resident set size, bytes.
    pub rss_bytes: u64,
    /// Baseline RSS (mean of the first `baseline_samples`), once taken.
    pub rss_baseline: Option<u64>,
    /// Running jobs.
    pub running_jobs: u64,
    /// Alarms raised now.
    pub alarms: Vec<Alarm>,
    /// Sockets closed by remediation since start.
    pub remediated: u64,
}

/// Reads the monitor's report; fed by the monitor started from [`MonitorHandle::child_spec`].
#[derive(Debug, Clone, Default)]
pub struct MonitorHandle {
    report: Arc<Mutex<MonitorReport>>,
}

impl MonitorHandle {
    /// An empty handle.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The latest report.
    #[must_use]
    pub fn report(&self) -> MonitorReport {
        self.report.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The child spec of the monitor (kind `service`, permanent), writing into this handle.
    #[must_use]
    pub fn child_spec(
        &self,
        config: SocketMonitorConfig,
        jobs: JobHubHandle,
        stats: Arc<SocketStats>,
    ) -> ChildSpec {
        let report = self.report.clone();
        ChildSpec::new("socket-monitor", ResourceKind::Service, move |rcx: ResourceCtx| {
            Ok::<_, std::convert::Infallible>(SocketMonitor {
                rcx,
                config: config.clone(),
                jobs: jobs.clone(),
                stats: stats.clone(),
                report: report.clone(),
                baseline: Vec::new(),
            })
        })
    }
}

/// The monitor actor.
pub struct SocketMonitor {
    rcx: ResourceCtx,
    config: SocketMonitorConfig,
    jobs: JobHubHandle,
    stats: Arc<SocketStats>,
    report: Arc<Mutex<MonitorReport>>,
    /// RSS samples until the baseline is taken.
    baseline: Vec<u64>,
}

impl Actor for SocketMonitor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let every = self.config.interval;
        self.rcx.run_interval(ctx, every, |act: &mut Self, _ctx| act.sample());
    }
}

impl Resource for SocketMonitor {
    fn resource_ctx(&self) -> &ResourceCtx {
        &self.rcx
    }

    fn resource_ctx_mut(&mut self) -> &mut ResourceCtx {
        &mut self.rcx
    }
}

impl Handler<StopResource> for SocketMonitor {
    type Result = ();

    fn handle(&mut self, msg: StopResource, ctx: &mut Context<Self>) {
        stop_resource(self, ctx, msg.reason);
    }
}

/// The alarms a reading raises under `config`.
pub(crate) fn alarms(config: &SocketMonitorConfig, r: &MonitorReport) -> Vec<Alarm> {
    let mut raised = Vec::new();
    if r.connections > config.max_connections {
        raised.push(Alarm::HighConnections);
    }
    if let Some(base) = r.rss_baseline
        && base > 0
        && (r.rss_bytes as f64) > (base as f64) * (1.0 + config.max_growth)
    {
        raised.push(Alarm::MemoryGrowth);
    }
    if r.connections > 0 && (r.inactive as f64) / (r.connections as f64) > config.max_inactive_ratio
    {
        raised.push(Alarm::HighInactive);
    }
    if r.running_jobs > config.max_running_jobs {
        raised.push(Alarm::HighRunningJobs);
    }
    raised
}

impl SocketMonitor {
    fn sample(&mut self) {
        let registry = self.rcx.registry().clone();
        let filter =
            ResourceFilter { kind: Some(ResourceKind::Socket), ..ResourceFilter::default() };
        let (sockets, _) = registry.list(&filter, None, usize::MAX);
        let now = SystemTime::now();
        let idle_for = |last: SystemTime| now.duration_since(last).unwrap_or(Duration::ZERO);
        let inactive = sockets
            .iter()
            .filter(|s| idle_for(s.last_activity_at) >= self.config.inactive_after)
            .count();
        let rss = steward_core::watchdog::rss_bytes();
        let mut report =
            self.report.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        if report.rss_baseline.is_none() {
            self.baseline.push(rss);
            if self.baseline.len() >= self.config.baseline_samples as usize {
                report.rss_baseline =
                    Some(self.baseline.iter().sum::<u64>() / self.baseline.len() as u64);
                self.baseline.clear();
            }
        }
        report.samples += 1;
        report.connections = sockets.len() as u64;
        report.inactive = inactive as u64;
        report.rss_bytes = rss;
        report.running_jobs = self.jobs.stats().running;
        let before = std::mem::take(&mut report.alarms);
        report.alarms = alarms(&self.config, &report);
        for alarm in &report.alarms {
            if !before.contains(alarm) {
                tracing::warn!(
                    alarm = alarm.as_str(),
                    connections = report.connections,
                    inactive = report.inactive,
                    rss_bytes = report.rss_bytes,
                    rss_baseline = report.rss_baseline.unwrap_or(0),
                    running_jobs = report.running_jobs,
                    "socket monitor alarm raised"
                );
            }
        }
        for alarm in &before {
            if !report.alarms.contains(alarm) {
                tracing::info!(alarm = alarm.as_str(), "socket monitor alarm cleared");
            }
        }
        let age = self.config.remediate_inactive_after;
        if !report.alarms.is_empty() && !age.is_zero() {
            let stale: Vec<_> = sockets
                .iter()
                // one already closing (remediated by an earlier sample whose close is still
                // under way) is not closed, nor counted, twice
                .filter(|s| s.state == steward_core::LifecycleState::Running)
                .filter(|s| idle_for(s.last_activity_at) >= age)
                .map(|s| s.id)
                .collect();
            if !stale.is_empty() {
                tracing::warn!(sockets = stale.len(), "remediation: closing inactive sockets");
            }
            let control = Control::new(registry.clone());
            for id in stale {
                if control.stop(id, ExitReason::Idle).is_ok() {
                    self.stats.remediated();
                    report.remediated += 1;
                }
            }
        }
        *self.report.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = report;
    }
}
