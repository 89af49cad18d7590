//! The leak watchdog: samples live resources per kind, tracked tasks and timers, child processes,
//! open file descriptors and RSS every `[watchdog] interval`; averages the first
//! `baseline_samples` samples into a baseline; flags `potential_leak` for a count above
//! `leak_factor` × baseline and above its floor (seed 004's goroutine check, generalised); and
//! counts orphans, tracked handles whose owner is gone (the check seed 004 lacked).

mod detector;
#[cfg(test)]
mod tests;

pub use detector::{
    LeakDetector, Sample, WatchdogReport, Watched, WatchedValue, open_fds, rss_bytes,
};

use std::sync::{Arc, Mutex};

use actix::prelude::*;
use steward_config::WatchdogConfig;

use crate::{ChildSpec, Resource, ResourceCtx, ResourceKind, StopResource, stop_resource};

/// Read access to the watchdog's latest report. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct WatchdogHandle {
    report: Arc<Mutex<WatchdogReport>>,
}

impl WatchdogHandle {
    /// A handle with an empty report, to be filled by the watchdog started with
    /// [`WatchdogHandle::child_spec`].
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The latest report.
    #[must_use]
    pub fn report(&self) -> WatchdogReport {
        self.report.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The child spec of the watchdog service (permanent, kind `service`), writing into this
    /// handle.
    #[must_use]
    pub fn child_spec(&self, config: WatchdogConfig) -> ChildSpec {
        let report = self.report.clone();
        ChildSpec::new("watchdog", ResourceKind::Service, move |rcx: ResourceCtx| {
            Ok::<_, std::convert::Infallible>(Watchdog {
                detector: LeakDetector::new(config.clone()),
                report: report.clone(),
                rcx,
            })
        })
    }
}

/// The watchdog service actor.
pub struct Watchdog {
    rcx: ResourceCtx,
    detector: LeakDetector,
    report: Arc<Mutex<WatchdogReport>>,
}

impl Watchdog {
    fn tick(&mut self) {
        let sample = Sample::take(self.rcx.registry());
        let newly = self.detector.observe(&sample);
        for w in newly {
            tracing::warn!(watched = %w.watched, current = w.current, baseline = w.baseline, "potential leak");
        }
        if sample.orphans > 0 {
            tracing::warn!(orphans = sample.orphans, "tracked handles outlive their owners");
        }
        *self.report.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            self.detector.report();
    }
}

impl Actor for Watchdog {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.tick();
        let interval = self.detector.interval();
        self.rcx.run_interval(ctx, interval, |act: &mut Self, _ctx| act.tick());
    }
}

impl Resource for Watchdog {
    fn resource_ctx(&self) -> &ResourceCtx {
        &self.rcx
    }

    fn resource_ctx_mut(&mut self) -> &mut ResourceCtx {
        &mut self.rcx
    }
}

impl Handler<StopResource> for Watchdog {
    type Result = ();

    fn handle(&mut self, msg: StopResource, ctx: &mut Context<Self>) {
        stop_resource(self, ctx, msg.reason);
    }
}
