//! Tests of the ordered shutdown: phase order, deadlines, forced stops and the report.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use steward_config::Config;

use super::*;
use crate::registry::HandleCounts;
use crate::supervisor::{RestartType, RootSupervisor, Strategy, Supervisor};
use crate::testing::{Behaviour, Crash, Log, TestResource, eventually, fast_spec};
use crate::{ExitReason, LifecycleState, ResourceId};

const WITHIN: Duration = Duration::from_secs(5);

fn config(tweak: impl FnOnce(&mut PhaseDeadlines)) -> ShutdownConfig {
    let mut config = Config::defaults().shutdown;
    tweak(&mut config.deadlines);
    config
}

fn coordinator(registry: &Registry, config: ShutdownConfig) -> ShutdownCoordinator {
    ShutdownCoordinator::new(registry.clone(), Readiness::new(), config)
}

fn phase(report: &ShutdownReport, phase: Phase) -> &PhaseReport {
    report.phases.iter().find(|p| p.phase == phase).expect("every phase is reported")
}

fn logging_hook(log: &Arc<Mutex<Vec<&'static str>>>, phase: Phase) -> Hook {
    let log = log.clone();
    Arc::new(move || {
        let log = log.clone();
        async move { log.lock().unwrap().push(phase.as_str()) }.boxed()
    })
}

async fn root_with_sessions(
    registry: &Registry,
    log: &Log,
    sessions: &[(&str, Behaviour)],
) -> (RootSupervisor, Vec<ResourceId>) {
    let root =
        Supervisor::start_root(registry, fast_spec("root", Strategy::Dynamic)).await.unwrap();
    let mut ids = Vec::new();
    for (name, behaviour) in sessions {
        let spec = TestResource::spec(name, log, behaviour.clone()).restart(RestartType::Permanent);
        ids.push(root.handle.start_child::<TestResource>(spec).await.unwrap().0);
    }
    (root, ids)
}

#[actix_rt::test]
async fn run_walks_every_phase_in_order() {
    let registry = Registry::with_defaults();
    let readiness = Readiness::new();
    readiness.set_ready();
    let coordinator =
        ShutdownCoordinator::new(registry.clone(), readiness.clone(), Config::defaults().shutdown);
    let log = Arc::new(Mutex::new(Vec::new()));
    // registered in reverse: the order comes from the phases, not from registration
    for phase in Phase::ALL.into_iter().rev() {
        coordinator.on(phase, phase.as_str(), logging_hook(&log, phase));
    }

    let report = coordinator.run(None).await;
    let names: Vec<&str> = Phase::ALL.iter().map(|p| p.as_str()).collect();
    assert_eq!(*log.lock().unwrap(), names);
    assert_eq!(report.phases.iter().map(|p| p.phase).collect::<Vec<_>>(), Phase::ALL);
    assert_eq!(coordinator.progress(), report.phases);
    assert_eq!((report.closed(), report.forced()), (0, 0));
    assert_eq!(readiness.state(), ReadinessState::Draining);
    assert!(registry.is_shutting_down());
}

#[actix_rt::test]
async fn sessions_close_in_their_phase_without_restarts_and_the_root_stops_in_flush() {
    let registry = Registry::with_defaults();
    let log = Log::default();
    let names = ["s1", "s2", "s3"];
    let sessions: Vec<(&str, Behaviour)> =
        names.iter().map(|n| (*n, Behaviour::default())).collect();
    let (root, ids) = root_with_sessions(&registry, &log, &sessions).await;
    let root_id = root.handle.id();

    let report = coordinator(&registry, Config::defaults().shutdown).run(Some(&root.handle)).await;
    let sessions_phase = phase(&report, Phase::Sessions);
    assert_eq!((sessions_phase.closed, sessions_phase.forced), (3, 0));
    let flush = phase(&report, Phase::Flush);
    assert_eq!((flush.closed, flush.forced), (1, 0), "the root supervisor is the one service");
    assert_eq!((report.closed(), report.forced()), (4, 0));
    for name in names {
        assert_eq!(log.count(&format!("start:{name}")), 1, "{name} was not restarted");
        assert_eq!(log.count(&format!("stop:{name}")), 1, "{name} ran its cleanup");
    }
    for id in ids {
        assert_eq!(registry.get(id).unwrap().last_exit, Some(ExitReason::Shutdown));
    }
    assert!(!registry.contains(root_id));
    assert_eq!(root.exited.await.unwrap(), ExitReason::Shutdown);
    assert!(registry.is_empty());
    assert!(eventually(WITHIN, || registry.handle_counts() == HandleCounts::default()).await);
}

#[actix_rt::test]
async fn a_session_that_ignores_stop_is_killed_at_the_phase_deadline_and_counted_forced() {
    let registry = Registry::with_defaults();
    let log = Log::default();
    let stubborn = Behaviour { ignore_stop: true, tasks: 1, ..Behaviour::default() };
    let (root, ids) = root_with_sessions(
        &registry,
        &log,
        &[("polite", Behaviour::default()), ("stubborn", stubborn)],
    )
    .await;
    let config = config(|d| d.sessions = Duration::from_millis(100));

    let report = coordinator(&registry, config).run(Some(&root.handle)).await;
    let sessions = phase(&report, Phase::Sessions);
    assert_eq!((sessions.closed, sessions.forced), (1, 1));
    assert_eq!(registry.get(ids[0]).unwrap().last_exit, Some(ExitReason::Shutdown));
    assert_eq!(registry.get(ids[1]).unwrap().last_exit, Some(ExitReason::Killed));
    assert_eq!(log.count("stop:stubborn"), 0, "it never ran its cleanup");
    assert_eq!(log.count("start:stubborn"), 1, "and was not restarted");
    assert!(registry.is_empty());
    assert!(eventually(WITHIN, || registry.handle_counts() == HandleCounts::default()).await);
}

#[actix_rt::test]
async fn a_session_waiting_to_restart_is_not_counted_as_forced() {
    let registry = Registry::with_defaults();
    let log = Log::default();
    let mut spec = fast_spec("root", Strategy::Dynamic);
    spec.backoff.base = Duration::from_secs(3600);
    spec.backoff.max = Duration::from_secs(3600);
    let root = Supervisor::start_root(&registry, spec).await.unwrap();
    let child = TestResource::spec("crashy", &log, Behaviour::default());
    let (id, addr) = root.handle.start_child::<TestResource>(child).await.unwrap();
    addr.send(Crash).await.unwrap();
    let restarting = || registry.get(id).is_some_and(|i| i.state == LifecycleState::Restarting);
    assert!(eventually(WITHIN, restarting).await);

    let config = config(|d| d.sessions = Duration::from_millis(100));
    let report = coordinator(&registry, config).run(Some(&root.handle)).await;
    assert_eq!(phase(&report, Phase::Sessions).forced, 0, "{report}");
    assert_eq!(log.count("start:crashy"), 1);
    assert!(registry.is_empty());
}

#[actix_rt::test]
async fn a_hook_that_never_finishes_is_cut_at_the_phase_deadline_and_counted_forced() {
    let registry = Registry::with_defaults();
    let config = config(|d| d.notify_clients = Duration::from_millis(50));
    let coordinator = coordinator(&registry, config);
    let log = Arc::new(Mutex::new(Vec::new()));
    coordinator.on(Phase::NotifyClients, "stuck", Arc::new(|| std::future::pending().boxed()));
    coordinator.on(Phase::NotifyClients, "prompt", logging_hook(&log, Phase::NotifyClients));
    coordinator.on(Phase::Flush, "later", logging_hook(&log, Phase::Flush));

    let report = coordinator.run(None).await;
    let notify = phase(&report, Phase::NotifyClients);
    assert_eq!((notify.closed, notify.forced), (0, 1));
    assert_eq!(notify.deadline, Duration::from_millis(50));
    assert!(notify.duration >= notify.deadline, "{report}");
    assert_eq!(report.forced(), 1, "no other phase forced anything");
    assert_eq!(*log.lock().unwrap(), ["notify_clients", "flush"], "the next phases still ran");
}

#[actix_rt::test]
async fn the_trigger_is_pulled_once_and_remembers_its_first_source() {
    let trigger = ShutdownTrigger::new();
    #[allow(clippy::disallowed_methods)] // test scaffolding
    let waiter = actix_rt::spawn({
        let trigger = trigger.clone();
        async move { trigger.triggered().await }
    });
    assert!(!trigger.is_triggered());
    assert!(trigger.trigger("SIGTERM"));
    assert!(!trigger.trigger("admin api"));
    assert!(trigger.is_triggered());
    assert_eq!(waiter.await.unwrap(), "SIGTERM");
    assert_eq!(trigger.triggered().await, "SIGTERM", "a late waiter returns at once");
}

#[test]
fn readiness_goes_from_starting_to_ready_to_draining_for_good() {
    let readiness = Readiness::new();
    let follower = readiness.subscribe();
    assert_eq!(readiness.state(), ReadinessState::Starting);
    readiness.set_ready();
    assert_eq!(readiness.state(), ReadinessState::Ready);
    readiness.set_draining();
    assert_eq!(readiness.state(), ReadinessState::Draining);
    readiness.set_ready();
    assert_eq!(readiness.state(), ReadinessState::Draining, "draining is final");
    assert_eq!(*follower.borrow(), ReadinessState::Draining, "clones share the state");

    let never_ready = Readiness::new();
    never_ready.set_draining();
    never_ready.set_ready();
    assert_eq!(never_ready.state(), ReadinessState::Draining);
}

#[test]
fn the_report_line_names_every_phase_with_its_counts() {
    let phases = Phase::ALL
        .iter()
        .map(|&phase| PhaseReport {
            phase,
            duration: Duration::from_millis(1),
            deadline: Duration::from_secs(1),
            closed: u64::from(phase == Phase::Sessions) * 2,
            forced: u64::from(phase == Phase::Browsers),
            forced_what: if phase == Phase::Browsers {
                vec!["browser chromium-0 3fa2c10000000007".to_owned()]
            } else {
                Vec::new()
            },
        })
        .collect();
    let report = ShutdownReport { phases, total: Duration::from_millis(9) };
    assert_eq!((report.closed(), report.forced()), (2, 1));
    let line = report.to_string();
    assert!(line.starts_with("closed 2 forced 1 in 9ms ["), "{line}");
    assert!(line.contains("sessions 1ms closed 2 forced 0"), "{line}");
    assert!(
        line.contains("browsers 1ms closed 0 forced 1 (browser chromium-0 3fa2c10000000007)"),
        "{line}"
    );
    for phase in Phase::ALL {
        assert!(line.contains(phase.as_str()), "{phase} missing from {line}");
    }
}

#[actix_rt::test]
async fn stubborn_resources_and_hooks_in_every_phase_are_forced_and_the_whole_fits_the_grace() {
    use crate::supervisor::SupervisorCell;
    let registry = Registry::with_defaults();
    let log = Log::default();
    let stubborn = Behaviour { ignore_stop: true, ..Behaviour::default() };
    // the supervisors' own deadlines are far away: only the phases' deadlines bound the stop
    let far = Duration::from_secs(30);
    let mut resources = fast_spec("resources", Strategy::Dynamic);
    resources.child_shutdown = far;
    let cell = SupervisorCell::new();
    let mut root = fast_spec("root", Strategy::OneForOne);
    root.child_shutdown = far;
    let root = root
        .child(TestResource::spec_of(
            ResourceKind::Service,
            "stubborn-service",
            &log,
            stubborn.clone(),
        ))
        .child(TestResource::spec_of(
            ResourceKind::Service,
            "polite-service",
            &log,
            Behaviour::default(),
        ))
        .child(crate::ChildSpec::supervisor_in(resources, cell.clone()));
    let root = Supervisor::start_root(&registry, root).await.unwrap();
    let kinds = [
        ResourceKind::Producer,
        ResourceKind::Consumer,
        ResourceKind::Session,
        ResourceKind::Peer,
        ResourceKind::Socket,
        ResourceKind::Browser,
    ];
    for kind in kinds {
        let spec = TestResource::spec_of(kind, kind.as_str(), &log, stubborn.clone());
        cell.start_child::<TestResource>(spec).await.unwrap();
    }

    let phase_deadline = Duration::from_millis(150);
    let config = config(|d| {
        for deadline in [
            &mut d.readiness_off,
            &mut d.stop_accepting,
            &mut d.notify_clients,
            &mut d.drain_messaging,
            &mut d.sessions,
            &mut d.peers,
            &mut d.sockets,
            &mut d.browsers,
            &mut d.flush,
        ] {
            *deadline = phase_deadline;
        }
    });
    let grace = phase_deadline * 9;
    let config = ShutdownConfig { grace, ..config };
    let coordinator = coordinator(&registry, config);
    for phase in Phase::ALL {
        coordinator.on(phase, "stuck", Arc::new(|| std::future::pending().boxed()));
    }

    let started = std::time::Instant::now();
    let report = coordinator.run(Some(&root.handle)).await;
    let took = started.elapsed();
    assert!(took <= grace + Duration::from_millis(250), "took {took:?} for a grace of {grace:?}");
    for p in &report.phases {
        assert!(
            p.duration <= p.deadline + Duration::from_millis(50),
            "{} ran {:?} past its deadline {:?}",
            p.phase,
            p.duration,
            p.deadline
        );
        assert!(p.forced_what.contains(&"hook stuck".to_owned()), "{report}");
    }
    for (which, kind) in [
        (Phase::Sessions, ResourceKind::Session),
        (Phase::Peers, ResourceKind::Peer),
        (Phase::Sockets, ResourceKind::Socket),
        (Phase::Browsers, ResourceKind::Browser),
    ] {
        let p = phase(&report, which);
        assert_eq!(p.forced, 2, "{report}");
        assert!(
            p.forced_what.iter().any(|w| w.starts_with(&format!("{kind} {kind} "))),
            "{report}"
        );
    }
    let messaging = phase(&report, Phase::DrainMessaging);
    assert_eq!(messaging.forced, 3, "a producer, a consumer and the hook: {report}");
    let flush = phase(&report, Phase::Flush);
    assert!(
        flush.forced_what.iter().any(|w| w.starts_with("service stubborn-service ")),
        "the report names the stubborn service: {report}"
    );
    assert_eq!(log.count("stop:polite-service"), 1, "the polite service still stopped in order");
    let line = report.to_string();
    assert!(line.contains("stubborn-service") && line.contains("hook stuck"), "{line}");
    let left = || registry.list(&crate::ResourceFilter::default(), None, usize::MAX).0;
    assert!(eventually(WITHIN, || registry.is_empty()).await, "left: {:?}\n{line}", left());
    assert!(eventually(WITHIN, || registry.handle_counts() == HandleCounts::default()).await);
}

#[actix_rt::test]
async fn no_phase_runs_past_the_grace_even_when_the_deadlines_add_up_to_more() {
    let registry = Registry::with_defaults();
    let mut config = config(|d| d.notify_clients = Duration::from_secs(3600));
    config.grace = Duration::from_millis(1500);
    let coordinator = coordinator(&registry, config);
    coordinator.on(Phase::NotifyClients, "stuck", Arc::new(|| std::future::pending().boxed()));
    let started = std::time::Instant::now();
    let report = coordinator.run(None).await;
    assert!(started.elapsed() <= Duration::from_millis(1500 + 250), "{report}");
    assert_eq!(report.forced(), 1);
}
