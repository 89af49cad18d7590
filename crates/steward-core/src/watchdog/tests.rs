//! Tests of the leak watchdog: samples, baselines, alarms and orphans.

use std::time::Duration;

use steward_config::{Config, WatchdogConfig};

use super::*;
use crate::registry::HandleCounts;
use crate::supervisor::{Strategy, Supervisor};
use crate::testing::{Behaviour, Log, TestResource, eventually, fast_spec};
use crate::{ExitReason, Registry, ResourceId, start_unsupervised};

const WITHIN: Duration = Duration::from_secs(5);

fn config(baseline_samples: u32) -> WatchdogConfig {
    WatchdogConfig {
        baseline_samples,
        leak_factor: 3.0,
        count_floor: 10,
        ..Config::defaults().watchdog
    }
}

fn sockets(n: u64) -> Sample {
    let mut sample = Sample::default();
    sample.resources[ResourceKind::Socket.index()] = n;
    sample
}

fn socket_value(detector: &LeakDetector) -> WatchedValue {
    let report = detector.report();
    let socket = Watched::Resources(ResourceKind::Socket);
    report.values.into_iter().find(|v| v.watched == socket).expect("sockets are watched")
}

fn newly_leaking(detector: &mut LeakDetector, sample: &Sample) -> Vec<Watched> {
    detector.observe(sample).into_iter().map(|v| v.watched).collect()
}

fn start_test_resource(
    registry: &Registry,
    log: &Log,
    kind: ResourceKind,
    tasks: usize,
) -> ResourceId {
    let behaviour = Behaviour { tasks, ..Behaviour::default() };
    start_unsupervised(registry, kind, "r", |rcx| TestResource {
        rcx,
        name: "r".into(),
        log: log.clone(),
        behaviour,
        handled: 0,
    })
    .0
}

#[test]
fn a_count_above_factor_times_baseline_and_floor_is_reported_once() {
    let mut detector = LeakDetector::new(config(3));
    for _ in 0..3 {
        assert!(newly_leaking(&mut detector, &sockets(5)).is_empty());
    }
    assert_eq!(socket_value(&detector).baseline, Some(5.0));

    let leak = detector.observe(&sockets(20));
    assert_eq!(leak.len(), 1, "{leak:?}");
    assert_eq!(leak[0].watched, Watched::Resources(ResourceKind::Socket));
    assert_eq!((leak[0].current, leak[0].baseline, leak[0].floor), (20, Some(5.0), 10));
    assert!(leak[0].potential_leak);
    assert!(newly_leaking(&mut detector, &sockets(20)).is_empty(), "not reported again");
    assert!(socket_value(&detector).potential_leak, "but still flagged");

    assert!(newly_leaking(&mut detector, &sockets(12)).is_empty());
    assert!(!socket_value(&detector).potential_leak, "12 is under 3 x 5");
    assert!(newly_leaking(&mut detector, &sockets(15)).is_empty(), "15 is not above 3 x 5");
    assert_eq!(
        newly_leaking(&mut detector, &sockets(20)),
        [Watched::Resources(ResourceKind::Socket)],
        "reported again after it recovered"
    );
}

#[test]
fn a_count_under_the_floor_is_never_a_leak() {
    let mut detector = LeakDetector::new(config(3));
    for _ in 0..3 {
        detector.observe(&sockets(2));
    }
    assert!(newly_leaking(&mut detector, &sockets(10)).is_empty(), "above 3 x 2 but not above 10");
    assert!(!socket_value(&detector).potential_leak);
    assert_eq!(
        newly_leaking(&mut detector, &sockets(11)),
        [Watched::Resources(ResourceKind::Socket)]
    );
}

#[test]
fn no_leak_is_reported_before_the_baseline_exists() {
    let mut detector = LeakDetector::new(config(3));
    let mut huge = sockets(1_000_000);
    huge.tasks = 1_000_000;
    huge.fds = 1_000_000;
    for _ in 0..2 {
        assert!(detector.observe(&huge).is_empty());
        let report = detector.report();
        assert!(report.values.iter().all(|v| v.baseline.is_none() && !v.potential_leak));
    }
    assert_eq!(detector.report().samples, 2);
}

#[actix_rt::test]
async fn a_sample_counts_live_resources_per_kind_and_tracked_tasks() {
    let registry = Registry::with_defaults();
    let log = Log::default();
    // sockets have a 24 h idle timeout: one counted timer each; consumers have none
    let ids = [
        start_test_resource(&registry, &log, ResourceKind::Socket, 1),
        start_test_resource(&registry, &log, ResourceKind::Socket, 1),
        start_test_resource(&registry, &log, ResourceKind::Consumer, 0),
    ];
    assert!(eventually(WITHIN, || log.count("start:r") == 3).await);

    let sample = Sample::take(&registry);
    let mut expected = [0; ResourceKind::COUNT];
    expected[ResourceKind::Socket.index()] = 2;
    expected[ResourceKind::Consumer.index()] = 1;
    assert_eq!(sample.resources, expected);
    assert_eq!((sample.tasks, sample.processes, sample.orphans), (4, 0, 0));
    assert!(sample.fds > 0 && sample.rss_bytes > 0, "{sample:?}");

    for id in ids {
        crate::Control::new(registry.clone()).stop(id, ExitReason::Shutdown).unwrap();
    }
    assert!(eventually(WITHIN, || registry.is_empty()).await);
    let after = Sample::take(&registry);
    assert_eq!((after.resources, after.tasks, after.orphans), ([0; ResourceKind::COUNT], 0, 0));
}

// An orphan is a tracked handle that outlives its owner's registry entry. The owner's drop
// aborts everything it tracked, so an orphan only lives where an abort cannot take effect: here a
// task on a runtime that nobody drives (a stuck runtime), which keeps the aborted future alive.
#[actix_rt::test]
async fn a_sample_counts_handles_whose_owner_is_gone_as_orphans() {
    let registry = Registry::with_defaults();
    let log = Log::default();
    let stuck = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let (id, _addr) = start_unsupervised(&registry, ResourceKind::Consumer, "owner", |rcx| {
        rcx.tracker().spawn_on(stuck.handle(), std::future::pending()).unwrap();
        TestResource {
            rcx,
            name: "owner".into(),
            log: log.clone(),
            behaviour: Behaviour::default(),
            handled: 0,
        }
    });
    assert_eq!(Sample::take(&registry).orphans, 0, "its owner is live");

    assert!(crate::Control::new(registry.clone()).kill(id));
    assert!(eventually(WITHIN, || !registry.contains(id)).await);
    let sample = Sample::take(&registry);
    assert_eq!((sample.tasks, sample.orphans), (1, 1));

    stuck.shutdown_background();
    assert!(eventually(WITHIN, || registry.handle_counts() == HandleCounts::default()).await);
    assert_eq!(Sample::take(&registry).orphans, 0);
}

#[actix_rt::test]
async fn the_watchdog_service_samples_and_builds_a_baseline_for_every_count() {
    let registry = Registry::with_defaults();
    let watchdog = WatchdogHandle::new();
    let config = WatchdogConfig {
        interval: Duration::from_millis(10),
        baseline_samples: 2,
        ..Config::defaults().watchdog
    };
    let spec = fast_spec("root", Strategy::OneForOne).child(watchdog.child_spec(config));
    let root = Supervisor::start_root(&registry, spec).await.unwrap();
    assert_eq!(registry.count_of(&[ResourceKind::Service]), 2, "the root and the watchdog");

    assert!(
        eventually(WITHIN, || {
            let report = watchdog.report();
            report.samples >= 3 && report.values.iter().all(|v| v.baseline.is_some())
        })
        .await,
        "{:?}",
        watchdog.report()
    );
    let report = watchdog.report();
    assert_eq!((report.baseline_samples, report.interval), (2, Duration::from_millis(10)));
    assert_eq!(report.values.len(), ResourceKind::ALL.len() + 4);
    let current = |w: Watched| report.values.iter().find(|v| v.watched == w).unwrap().current;
    assert!(current(Watched::Fds) > 0);
    assert!(current(Watched::RssBytes) > 0);
    assert_eq!(current(Watched::Resources(ResourceKind::Service)), 2);
    assert!(report.values.iter().all(|v| !v.potential_leak), "{report:?}");
    assert_eq!(report.orphans, 0);

    root.handle.stop(ExitReason::Shutdown).await.unwrap();
    assert_eq!(root.exited.await.unwrap(), ExitReason::Shutdown);
    assert!(registry.is_empty());
    assert!(eventually(WITHIN, || registry.handle_counts() == HandleCounts::default()).await);
}
