//! one_for_all never forgets a running child: a stop or an escalation during a restart round
//! stops every child running at that point, however it got started; temporary siblings are not
//! restarted; an operator's terminate wins over the round; restarts go in start order.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::super::*;
use crate::registry::HandleCounts;
use crate::testing::{Behaviour, Crash, Log, TestResource, eventually, fast_spec};

const WITHIN: Duration = Duration::from_secs(5);

/// Whether every child `name` that started has also run its `stopped` (its actor is gone).
fn none_left_running(log: &Log, names: &[&str]) -> bool {
    names.iter().all(|n| log.count(&format!("start:{n}")) == log.count(&format!("stopped:{n}")))
}

/// A child whose factory fails from its `fail_from`-th build on (1-based).
fn flaky(name: &str, log: &Log, fail_from: usize) -> ChildSpec {
    let builds = Arc::new(AtomicUsize::new(0));
    let (name, log) = (name.to_owned(), log.clone());
    ChildSpec::new(name.clone(), ResourceKind::Session, move |rcx| {
        if builds.fetch_add(1, Ordering::SeqCst) + 1 >= fail_from {
            return Err(format!("{name} cannot start"));
        }
        Ok::<_, String>(TestResource {
            rcx,
            name: name.clone(),
            log: log.clone(),
            behaviour: Behaviour::default(),
            handled: 0,
        })
    })
}

#[actix_rt::test]
async fn a_stop_during_a_round_stops_a_child_started_during_it() {
    let registry = Registry::with_defaults();
    let log = Log::default();
    let slow = Behaviour { slow_cleanup: Some(Duration::from_millis(150)), ..Behaviour::default() };
    let spec = fast_spec("ofa", Strategy::OneForAll)
        .child(TestResource::spec("a", &log, Behaviour::default()))
        .child(TestResource::spec("b", &log, slow));
    let root = Supervisor::start_root(&registry, spec).await.unwrap();
    log.addr("a").send(Crash).await.unwrap();
    // the round is stopping b (slowly); a child started now is not one it knows of
    let (late, _) = root
        .handle
        .start_child::<TestResource>(TestResource::spec("late", &log, Behaviour::default()))
        .await
        .unwrap();
    assert_eq!(log.count("start:late"), 1);
    root.handle.stop(ExitReason::Shutdown).await.unwrap();
    assert_eq!(root.exited.await.unwrap(), ExitReason::Shutdown);
    assert!(
        eventually(WITHIN, || none_left_running(&log, &["a", "b", "late"])).await,
        "{:?}",
        log.entries()
    );
    assert_eq!(log.count("stop:late"), 1, "it was stopped gracefully, not forgotten");
    assert!(!registry.contains(late));
    assert!(registry.is_empty());
    assert!(eventually(WITHIN, || registry.handle_counts() == HandleCounts::default()).await);
}

#[actix_rt::test]
async fn an_escalation_after_a_failed_start_in_a_round_leaves_no_child_running() {
    let registry = Registry::with_defaults();
    let log = Log::default();
    let mut spec = fast_spec("ofa", Strategy::OneForAll);
    // the crash of a is restart 1; b's failed start in the round is restart 2: escalation
    spec.intensity = RestartIntensity { max_restarts: 1, period: Duration::from_secs(60) };
    let spec = spec
        .child(TestResource::spec("a", &log, Behaviour::default()))
        .child(flaky("b", &log, 2))
        .child(TestResource::spec("c", &log, Behaviour::default()));
    let root = Supervisor::start_root(&registry, spec).await.unwrap();
    log.addr("a").send(Crash).await.unwrap();
    let reason = tokio::time::timeout(WITHIN, root.exited).await.unwrap().unwrap();
    assert!(reason.to_string().contains("restart intensity exceeded"), "{reason}");
    assert!(
        eventually(WITHIN, || none_left_running(&log, &["a", "b", "c"])).await,
        "{:?}",
        log.entries()
    );
    // the round ended at b's failure: c was not started behind the escalation's back
    assert_eq!(log.count("start:c"), 1, "{:?}", log.entries());
    assert!(registry.is_empty());
    assert!(eventually(WITHIN, || registry.handle_counts() == HandleCounts::default()).await);
}

#[actix_rt::test]
async fn a_failed_start_in_a_round_begins_another_round_in_start_order() {
    let registry = Registry::with_defaults();
    let log = Log::default();
    let builds = Arc::new(AtomicUsize::new(0));
    // b fails its first restart only
    let b = {
        let (builds, log) = (builds.clone(), log.clone());
        ChildSpec::new("b", ResourceKind::Session, move |rcx| {
            if builds.fetch_add(1, Ordering::SeqCst) == 1 {
                return Err("b cannot start this once".to_owned());
            }
            Ok::<_, String>(TestResource {
                rcx,
                name: "b".into(),
                log: log.clone(),
                behaviour: Behaviour::default(),
                handled: 0,
            })
        })
    };
    let spec = fast_spec("ofa", Strategy::OneForAll)
        .child(TestResource::spec("a", &log, Behaviour::default()))
        .child(b)
        .child(TestResource::spec("c", &log, Behaviour::default()));
    let _root = Supervisor::start_root(&registry, spec).await.unwrap();
    log.addr("c").send(Crash).await.unwrap();
    assert!(
        eventually(WITHIN, || ["a", "b", "c"]
            .iter()
            .all(|n| log.count(&format!("start:{n}")) >= 2
                && log.count(&format!("start:{n}")) == log.count(&format!("stopped:{n}")) + 1))
        .await,
        "{:?}",
        log.entries()
    );
    let starts: Vec<String> =
        log.entries().into_iter().filter(|e| e.starts_with("start:")).skip(3).collect();
    // round 1: a (b fails, a is stopped again); round 2: a, b, c — always in start order
    assert_eq!(starts, ["start:a", "start:a", "start:b", "start:c"], "{:?}", log.entries());
}

#[actix_rt::test]
async fn temporary_siblings_are_not_restarted_by_a_round() {
    let registry = Registry::with_defaults();
    let log = Log::default();
    let spec = fast_spec("ofa", Strategy::OneForAll)
        .child(TestResource::spec("a", &log, Behaviour::default()))
        .child(TestResource::spec("t", &log, Behaviour::default()).restart(RestartType::Temporary))
        .child(TestResource::spec("c", &log, Behaviour::default()));
    let root = Supervisor::start_root(&registry, spec).await.unwrap();
    let children = root.handle.which_children().await.unwrap();
    let t = children.iter().find(|c| &*c.name == "t").unwrap().id;
    log.addr("a").send(Crash).await.unwrap();
    assert!(eventually(WITHIN, || log.count("start:a") == 2 && log.count("start:c") == 2).await);
    assert_eq!(log.count("stop:t"), 1, "stopped with its siblings");
    assert_eq!(log.count("start:t"), 1, "but never restarted");
    assert!(!registry.contains(t));
    let names: Vec<String> =
        root.handle.which_children().await.unwrap().iter().map(|c| c.name.to_string()).collect();
    assert_eq!(names, ["a", "c"]);
}

#[actix_rt::test]
async fn an_operators_terminate_during_a_round_wins() {
    let registry = Registry::with_defaults();
    let log = Log::default();
    let slow = Behaviour { slow_cleanup: Some(Duration::from_millis(100)), ..Behaviour::default() };
    let spec = fast_spec("ofa", Strategy::OneForAll)
        .child(TestResource::spec("a", &log, Behaviour::default()))
        .child(TestResource::spec("b", &log, slow))
        .child(TestResource::spec("c", &log, Behaviour::default()));
    let root = Supervisor::start_root(&registry, spec).await.unwrap();
    let children = root.handle.which_children().await.unwrap();
    let b = children.iter().find(|c| &*c.name == "b").unwrap().id;
    log.addr("a").send(Crash).await.unwrap();
    // the round is stopping c, then b (slowly): terminate b meanwhile
    assert!(eventually(WITHIN, || log.count("stop:c") == 1).await);
    root.handle.terminate_child(b, ExitReason::Normal).await.unwrap();
    assert!(eventually(WITHIN, || log.count("start:a") == 2 && log.count("start:c") == 2).await);
    assert!(eventually(WITHIN, || !registry.contains(b)).await);
    assert_eq!(log.count("start:b"), 1, "terminated during the round: not restarted");
    assert_eq!(registry.get(b).unwrap().last_exit, Some(ExitReason::Shutdown));
}
