//! Supervisor behaviour: restarts, intensity, strategies, admission, operator commands.

mod bounded_stops;
mod one_for_all;
mod placement;

use std::sync::Mutex;
use std::time::Duration;

use super::*;
use crate::testing::{
    Behaviour, Crash, Log, Panic, Ping, Quiet, StopWithoutReason, TestResource, eventually,
    fast_spec,
};
use crate::{EventKind, LifecycleState};

const WITHIN: Duration = Duration::from_secs(5);

fn state(registry: &Registry, id: ResourceId) -> Option<LifecycleState> {
    registry.get(id).map(|i| i.state)
}

#[actix_rt::test]
async fn one_for_one_restart_builds_a_fresh_actor() {
    let registry = Registry::with_defaults();
    let log = Log::default();
    let root =
        Supervisor::start_root(&registry, fast_spec("root", Strategy::OneForOne)).await.unwrap();
    let (id, addr) = root
        .handle
        .start_child::<TestResource>(TestResource::spec("a", &log, Behaviour::default()))
        .await
        .unwrap();
    assert_eq!(addr.send(Ping).await.unwrap(), 1);
    assert_eq!(addr.send(Ping).await.unwrap(), 2);
    addr.send(Crash).await.unwrap();
    assert!(
        eventually(WITHIN, || log.count("start:a") == 2
            && state(&registry, id) == Some(LifecycleState::Running))
        .await
    );
    let info = registry.get(id).unwrap();
    assert_eq!(info.restarts, 1);
    assert_eq!(info.last_exit, Some(ExitReason::error("crashed")));
    // same slot id, new actor: its state starts from scratch
    assert_eq!(log.addr("a").send(Ping).await.unwrap(), 1);
    assert!(!addr.connected(), "the crashed incarnation is gone");
}

#[actix_rt::test]
async fn intensity_exceeded_stops_children_in_reverse_order_and_escalates() {
    let registry = Registry::with_defaults();
    let mut events = registry.subscribe();
    let log = Log::default();
    let mut mid = fast_spec("mid", Strategy::OneForOne);
    mid.intensity = RestartIntensity { max_restarts: 1, period: Duration::from_secs(60) };
    for name in ["a", "b", "c"] {
        mid = mid.child(TestResource::spec(name, &log, Behaviour::default()));
    }
    let mut top = fast_spec("top", Strategy::OneForOne);
    top.intensity = RestartIntensity { max_restarts: 10, period: Duration::from_secs(60) };
    let top = top.child(ChildSpec::supervisor(mid));
    let _root = Supervisor::start_root(&registry, top).await.unwrap();
    assert!(eventually(WITHIN, || log.count("start:c") == 1).await);

    log.addr("a").send(Crash).await.unwrap(); // restart 1: within intensity
    assert!(eventually(WITHIN, || log.count("start:a") == 2).await);
    log.addr("a").send(Crash).await.unwrap(); // restart 2 > max_restarts 1: escalate
    // the parent restarts the whole `mid` subtree with fresh children
    assert!(eventually(WITHIN, || log.count("start:a") == 3 && log.count("start:c") == 2).await);

    let entries = log.entries();
    let escalation = entries.iter().position(|e| e == "stop:a").unwrap();
    let after: Vec<&str> = entries[escalation + 1..]
        .iter()
        .map(String::as_str)
        .filter(|e| e.starts_with("stop:"))
        .collect();
    // a crashed twice (its second crash triggered the escalation); c and b are stopped in reverse start order
    let second_crash_stops: Vec<&str> =
        after.iter().copied().filter(|e| *e != "stop:a").take(2).collect();
    assert_eq!(second_crash_stops, ["stop:c", "stop:b"], "log: {entries:?}");

    let mut escalated = false;
    while let Ok(ev) = events.try_recv() {
        escalated |= ev.event == EventKind::Escalated;
    }
    assert!(escalated, "an Escalated event was emitted");
}

#[actix_rt::test]
async fn backoff_attempts_grow_and_reset_after_healthy_uptime() {
    for (reset_after, expected) in
        [(Duration::from_secs(3600), vec![1, 2, 3]), (Duration::ZERO, vec![1, 1, 1])]
    {
        let registry = Registry::with_defaults();
        let mut events = registry.subscribe();
        let log = Log::default();
        let mut spec = fast_spec("root", Strategy::OneForOne);
        spec.backoff.reset_after = reset_after;
        let root = Supervisor::start_root(&registry, spec).await.unwrap();
        root.handle
            .start_child::<TestResource>(TestResource::spec("a", &log, Behaviour::default()))
            .await
            .unwrap();
        for n in 1..=3 {
            log.addr("a").send(Crash).await.unwrap();
            assert!(eventually(WITHIN, || log.count("start:a") == n + 1).await);
        }
        let mut attempts = Vec::new();
        let mut delays = Vec::new();
        while let Ok(ev) = events.try_recv() {
            if ev.event == EventKind::Restarted {
                attempts.push(ev.restart_attempt);
                delays.push(ev.restart_delay);
            }
        }
        assert_eq!(attempts, expected);
        if reset_after > Duration::ZERO {
            assert!(delays[0] < delays[1] && delays[1] < delays[2], "delays grow: {delays:?}");
        }
    }
}

#[test]
fn backoff_delay_is_exponential_capped_and_jittered_within_bounds() {
    let b = Backoff {
        base: Duration::from_millis(100),
        factor: 2.0,
        max: Duration::from_secs(1),
        jitter: 0.2,
        reset_after: Duration::from_secs(60),
    };
    assert_eq!(b.nominal(1), Duration::from_millis(100));
    assert_eq!(b.nominal(2), Duration::from_millis(200));
    assert_eq!(b.nominal(4), Duration::from_millis(800));
    assert_eq!(b.nominal(5), Duration::from_secs(1));
    assert_eq!(b.nominal(500), Duration::from_secs(1));
    assert_eq!(b.delay_with(2, 0.0), Duration::from_millis(160));
    assert_eq!(b.delay_with(2, 1.0), Duration::from_millis(240));
    assert!(b.delay_with(9, 1.0) <= b.max);
}

#[test]
fn intensity_counts_restarts_in_a_sliding_window() {
    let i = RestartIntensity { max_restarts: 2, period: Duration::from_secs(5) };
    let mut log = VecDeque::new();
    let t0 = Instant::now();
    assert!(!i.record(&mut log, t0));
    assert!(!i.record(&mut log, t0 + Duration::from_secs(1)));
    assert!(i.record(&mut log, t0 + Duration::from_secs(2)));
    let mut log = VecDeque::new();
    assert!(!i.record(&mut log, t0));
    assert!(!i.record(&mut log, t0 + Duration::from_secs(1)));
    assert!(!i.record(&mut log, t0 + Duration::from_secs(7)), "the first restart left the window");
}

#[actix_rt::test]
async fn a_panicking_handler_is_detected_and_restarted_per_policy() {
    let registry = Registry::with_defaults();
    let log = Log::default();
    let root =
        Supervisor::start_root(&registry, fast_spec("root", Strategy::OneForOne)).await.unwrap();
    let spec = TestResource::spec("p", &log, Behaviour::default()).restart(RestartType::Transient);
    let (id, addr) = root.handle.start_child::<TestResource>(spec).await.unwrap();
    assert!(addr.send(Panic).await.is_err(), "the actor died in the handler");
    assert!(eventually(WITHIN, || log.count("start:p") == 2).await);
    let info = registry.get(id).unwrap();
    assert_eq!(info.last_exit, Some(ExitReason::Panic));
    assert_eq!(info.restarts, 1);
}

#[actix_rt::test]
async fn temporary_children_are_not_restarted_and_transient_not_after_normal_exit() {
    let registry = Registry::with_defaults();
    let log = Log::default();
    let root =
        Supervisor::start_root(&registry, fast_spec("root", Strategy::Dynamic)).await.unwrap();
    let tmp = TestResource::spec("tmp", &log, Behaviour::default()).restart(RestartType::Temporary);
    let (tmp_id, tmp_addr) = root.handle.start_child::<TestResource>(tmp).await.unwrap();
    let tr = TestResource::spec("tr", &log, Behaviour::default()).restart(RestartType::Transient);
    let (tr_id, tr_addr) = root.handle.start_child::<TestResource>(tr).await.unwrap();
    tmp_addr.send(Crash).await.unwrap();
    tr_addr.send(StopResource { reason: ExitReason::Normal }).await.unwrap();
    assert!(eventually(WITHIN, || !registry.contains(tmp_id) && !registry.contains(tr_id)).await);
    assert_eq!(log.count("start:tmp"), 1);
    assert_eq!(log.count("start:tr"), 1);
    assert_eq!(registry.get(tmp_id).unwrap().last_exit, Some(ExitReason::error("crashed")));
    assert_eq!(registry.get(tr_id).unwrap().state, LifecycleState::Stopped);
}

#[actix_rt::test]
async fn one_for_all_restarts_every_child_after_stopping_the_others_in_reverse() {
    let registry = Registry::with_defaults();
    let log = Log::default();
    let mut spec = fast_spec("root", Strategy::OneForAll);
    for name in ["a", "b", "c"] {
        spec = spec.child(TestResource::spec(name, &log, Behaviour::default()));
    }
    let _root = Supervisor::start_root(&registry, spec).await.unwrap();
    log.addr("b").send(Crash).await.unwrap();
    assert!(
        eventually(WITHIN, || ["a", "b", "c"]
            .iter()
            .all(|n| log.count(&format!("start:{n}")) == 2))
        .await
    );
    let entries = log.entries();
    let stops: Vec<&str> =
        entries.iter().map(String::as_str).filter(|e| e.starts_with("stop:")).collect();
    assert_eq!(stops, ["stop:b", "stop:c", "stop:a"]);
    let starts: Vec<&str> =
        entries.iter().map(String::as_str).skip(3).filter(|e| e.starts_with("start:")).collect();
    assert_eq!(starts, ["start:a", "start:b", "start:c"], "restarted in start order");
}

#[actix_rt::test]
async fn dynamic_supervisor_rejects_admission_past_max_children() {
    let registry = Registry::with_defaults();
    let log = Log::default();
    let root =
        Supervisor::start_root(&registry, fast_spec("root", Strategy::Dynamic).max_children(2))
            .await
            .unwrap();
    for n in ["a", "b"] {
        root.handle
            .start_child::<TestResource>(TestResource::spec(n, &log, Behaviour::default()))
            .await
            .unwrap();
    }
    let err = root
        .handle
        .start_child::<TestResource>(TestResource::spec("c", &log, Behaviour::default()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::MaxChildren { max: 2, .. }), "{err}");
    assert_eq!(
        registry.count_of(&[ResourceKind::Session]),
        2,
        "the refused child left nothing behind"
    );
}

#[actix_rt::test]
async fn a_failed_start_leaves_no_entry() {
    let registry = Registry::with_defaults();
    let root =
        Supervisor::start_root(&registry, fast_spec("root", Strategy::Dynamic)).await.unwrap();
    let spec = ChildSpec::new("bad", ResourceKind::Session, |_rcx| {
        Err::<TestResource, _>("no such browser")
    });
    let err = root.handle.start_child::<TestResource>(spec).await.unwrap_err();
    assert!(
        matches!(&err, Error::StartFailed { reason, .. } if reason == "no such browser"),
        "{err}"
    );
    assert_eq!(registry.count_of(&[ResourceKind::Session]), 0);
}

#[actix_rt::test]
async fn stopping_cancels_a_pending_restart() {
    let registry = Registry::with_defaults();
    let log = Log::default();
    let mut spec = fast_spec("root", Strategy::OneForOne);
    spec.backoff.base = Duration::from_secs(3600);
    spec.backoff.max = Duration::from_secs(3600);
    let root = Supervisor::start_root(&registry, spec).await.unwrap();
    let (id, addr) = root
        .handle
        .start_child::<TestResource>(TestResource::spec("a", &log, Behaviour::default()))
        .await
        .unwrap();
    addr.send(Crash).await.unwrap();
    assert!(eventually(WITHIN, || state(&registry, id) == Some(LifecycleState::Restarting)).await);
    assert_eq!(registry.kind_stats()[ResourceKind::Session.index()].1.restart_pending, 1);
    let sup_timers = registry.get(root.handle.id()).unwrap().timers;
    assert_eq!(sup_timers, 1, "the pending restart is a timer the supervisor owns");
    root.handle.stop(ExitReason::Shutdown).await.unwrap();
    assert_eq!(root.exited.await.unwrap(), ExitReason::Shutdown);
    assert!(registry.is_empty());
    assert_eq!(registry.kind_stats()[ResourceKind::Session.index()].1.restart_pending, 0);
    assert_eq!(log.count("start:a"), 1, "never restarted");
    assert_eq!(registry.handle_counts(), crate::registry::HandleCounts::default());
}

#[actix_rt::test]
async fn a_child_that_ignores_stop_is_killed_at_its_deadline() {
    let registry = Registry::with_defaults();
    let log = Log::default();
    let root =
        Supervisor::start_root(&registry, fast_spec("root", Strategy::Dynamic)).await.unwrap();
    let behaviour = Behaviour { ignore_stop: true, tasks: 2, ..Behaviour::default() };
    let spec = TestResource::spec("stubborn", &log, behaviour).shutdown(Duration::from_millis(50));
    let (id, _addr) = root.handle.start_child::<TestResource>(spec).await.unwrap();
    root.handle.stop(ExitReason::Shutdown).await.unwrap();
    assert_eq!(root.exited.await.unwrap(), ExitReason::Shutdown);
    assert_eq!(registry.get(id).unwrap().last_exit, Some(ExitReason::Killed));
    assert!(
        eventually(WITHIN, || registry.handle_counts() == crate::registry::HandleCounts::default())
            .await
    );
}

#[actix_rt::test]
async fn tracked_tasks_and_timers_are_aborted_when_their_owner_stops() {
    let registry = Registry::with_defaults();
    let log = Log::default();
    let root =
        Supervisor::start_root(&registry, fast_spec("root", Strategy::Dynamic)).await.unwrap();
    let behaviour = Behaviour { tasks: 3, timers: 2, ..Behaviour::default() };
    let (id, _addr) = root
        .handle
        .start_child::<TestResource>(TestResource::spec("t", &log, behaviour))
        .await
        .unwrap();
    // sessions keep their own TTLs (`[idle] session = "0s"`): no idle timer, its two timers
    assert!(
        eventually(WITHIN, || registry.handle_counts().tasks == 3
            && registry.handle_counts().timers == 2)
        .await
    );
    let info = registry.get(id).unwrap();
    assert_eq!((info.tasks, info.timers), (3, 2));
    root.handle.terminate_child(id, ExitReason::Shutdown).await.unwrap();
    assert!(eventually(WITHIN, || !registry.contains(id)).await);
    assert!(
        eventually(WITHIN, || registry.handle_counts() == crate::registry::HandleCounts::default())
            .await
    );
    assert_eq!(log.count("stop:t"), 1, "async cleanup ran");
}

#[actix_rt::test]
async fn the_registry_keeps_nothing_alive() {
    let registry = Registry::with_defaults();
    let log = Log::default();
    // a kind without idle timeout: a pending idle timer would (rightly) keep the actor alive
    let (id, addr) =
        crate::start_unsupervised(&registry, ResourceKind::Consumer, "lonely", |rcx| {
            TestResource {
                rcx,
                name: "lonely".into(),
                log: log.clone(),
                behaviour: Behaviour::default(),
                handled: 0,
            }
        });
    assert!(eventually(WITHIN, || log.count("start:lonely") == 1).await);
    assert!(registry.contains(id));
    drop(addr);
    log.forget_addr("lonely");
    // with its last strong address gone, the actor stops although the registry still points at it
    assert!(eventually(WITHIN, || !registry.contains(id)).await);
    assert_eq!(registry.get(id).unwrap().last_exit, Some(ExitReason::Abnormal));
}

#[actix_rt::test]
async fn idle_resources_are_stopped_with_reason_idle() {
    let mut config = steward_config::Config::defaults();
    config.idle.session = Duration::from_millis(30);
    let registry = Registry::new(config.registry, &config.idle);
    let log = Log::default();
    let root =
        Supervisor::start_root(&registry, fast_spec("root", Strategy::Dynamic)).await.unwrap();
    let spec =
        TestResource::spec("idle", &log, Behaviour::default()).restart(RestartType::Transient);
    let (id, _addr) = root.handle.start_child::<TestResource>(spec).await.unwrap();
    assert!(eventually(WITHIN, || !registry.contains(id)).await);
    assert_eq!(registry.get(id).unwrap().last_exit, Some(ExitReason::Idle));
    assert_eq!(log.count("start:idle"), 1, "an idle exit is normal: transient is not restarted");
}

#[actix_rt::test]
async fn operator_restart_builds_a_fresh_actor_at_once() {
    let registry = Registry::with_defaults();
    let log = Log::default();
    let root =
        Supervisor::start_root(&registry, fast_spec("root", Strategy::OneForOne)).await.unwrap();
    let (id, addr) = root
        .handle
        .start_child::<TestResource>(TestResource::spec("r", &log, Behaviour::default()))
        .await
        .unwrap();
    addr.send(Ping).await.unwrap();
    Control::new(registry.clone()).restart(id).await.unwrap();
    assert!(
        eventually(WITHIN, || log.count("start:r") == 2
            && state(&registry, id) == Some(LifecycleState::Running))
        .await
    );
    assert_eq!(log.addr("r").send(Ping).await.unwrap(), 1);
    assert_eq!(registry.get(id).unwrap().restarts, 1);
}

#[actix_rt::test]
async fn churn_of_10k_resources_leaves_the_registry_tasks_and_fds_at_baseline() {
    let registry = Registry::with_defaults();
    let log = Log::default();
    let root =
        Supervisor::start_root(&registry, fast_spec("root", Strategy::Dynamic)).await.unwrap();
    let fds_before = crate::watchdog::open_fds();
    let behaviour = Behaviour { tasks: 1, timers: 1, ..Behaviour::default() };
    for _ in 0..100 {
        let mut batch = Vec::with_capacity(100);
        for _ in 0..100 {
            let spec =
                TestResource::spec("c", &log, behaviour.clone()).restart(RestartType::Temporary);
            batch.push(root.handle.start_child::<TestResource>(spec));
        }
        let started = futures_util::future::join_all(batch).await;
        let stops = started.into_iter().map(|r| {
            let (id, _) = r.unwrap();
            let handle = root.handle.clone();
            async move { handle.terminate_child(id, ExitReason::Normal).await.unwrap() }
        });
        futures_util::future::join_all(stops).await;
    }
    assert!(
        eventually(WITHIN, || registry.len() == 1).await,
        "only the root supervisor is left: {}",
        registry.len()
    );
    assert!(
        eventually(WITHIN, || registry.handle_counts() == crate::registry::HandleCounts::default())
            .await
    );
    let stats = registry.kind_stats()[ResourceKind::Session.index()].1;
    assert_eq!((stats.live, stats.started, stats.stopped), (0, 10_000, 10_000));
    assert_eq!(log.count("stop:c"), 10_000, "every cleanup ran");
    // the count is the process's: tests running beside this one open and close their own
    let back = eventually(WITHIN, || crate::watchdog::open_fds() <= fds_before + 2).await;
    assert!(back, "fds {fds_before} -> {}", crate::watchdog::open_fds());
    let (stopped, _) = registry.list(
        &crate::ResourceFilter { state: Some(LifecycleState::Stopped), ..Default::default() },
        None,
        usize::MAX,
    );
    assert!(stopped.len() <= 1024, "stopped entries are bounded: {}", stopped.len());
}

#[actix_rt::test]
async fn a_held_guard_lives_across_restarts_and_drops_with_the_slot() {
    struct Guard(Arc<std::sync::atomic::AtomicBool>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let registry = Registry::with_defaults();
    let log = Log::default();
    let root =
        Supervisor::start_root(&registry, fast_spec("root", Strategy::OneForOne)).await.unwrap();
    let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spec = TestResource::spec("a", &log, Behaviour::default()).hold(Guard(dropped.clone()));
    let (id, _) = root.handle.start_child::<TestResource>(spec).await.unwrap();
    log.addr("a").send(Crash).await.unwrap();
    assert!(eventually(WITHIN, || log.count("start:a") == 2).await, "restarted");
    assert!(!dropped.load(std::sync::atomic::Ordering::SeqCst), "a restart keeps the guard");
    root.handle.terminate_child(id, ExitReason::Normal).await.unwrap();
    assert!(eventually(WITHIN, || dropped.load(std::sync::atomic::Ordering::SeqCst)).await);
    assert!(!registry.contains(id));

    // a failed start releases it too
    let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spec = ChildSpec::new("bad", ResourceKind::Socket, |_rcx| Err::<TestResource, _>("no"))
        .hold(Guard(failed.clone()));
    assert!(root.handle.start_child::<TestResource>(spec).await.is_err());
    assert!(failed.load(std::sync::atomic::Ordering::SeqCst));
}

#[actix_rt::test]
async fn a_kill_does_not_mark_later_incarnations_as_killed() {
    let registry = Registry::with_defaults();
    let root =
        Supervisor::start_root(&registry, fast_spec("root", Strategy::OneForOne)).await.unwrap();
    let incarnations: Arc<Mutex<Vec<Addr<Quiet>>>> = Arc::default();
    let spec = ChildSpec::new("q", ResourceKind::Consumer, {
        let incarnations = incarnations.clone();
        move |rcx| Ok::<_, String>(Quiet { rcx, incarnations: incarnations.clone() })
    });
    let (id, _first) = root.handle.start_child::<Quiet>(spec).await.unwrap();
    let running = |restarts| {
        registry
            .get(id)
            .is_some_and(|i| i.restarts == restarts && i.state == LifecycleState::Running)
    };

    assert!(Control::new(registry.clone()).kill(id));
    assert!(eventually(WITHIN, || running(1)).await);
    assert_eq!(registry.get(id).unwrap().last_exit, Some(ExitReason::Killed));

    let second = incarnations.lock().unwrap().last().cloned().unwrap();
    second.send(StopWithoutReason).await.unwrap();
    assert!(eventually(WITHIN, || running(2)).await);
    assert_eq!(registry.get(id).unwrap().last_exit, Some(ExitReason::Abnormal));
}
