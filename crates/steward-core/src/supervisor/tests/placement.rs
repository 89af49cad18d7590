//! Children placed on an [`ArbiterPool`] (`ChildSpec::new_in`): they run on the pool's threads,
//! in turn, and every lifecycle path (stop, kill at the deadline, churn) releases them as a child
//! on the supervisor's own arbiter is released.

use std::collections::HashSet;

use super::*;
use crate::registry::HandleCounts;
use crate::testing::WhichThread;

#[actix_rt::test]
async fn placed_children_run_on_the_pool_in_turn_and_stop_cleanly() {
    let registry = Registry::with_defaults();
    let log = Log::default();
    let pool = ArbiterPool::new("test", 2);
    let root =
        Supervisor::start_root(&registry, fast_spec("root", Strategy::Dynamic)).await.unwrap();
    let behaviour = Behaviour { tasks: 2, timers: 1, ..Behaviour::default() };
    let mut threads = Vec::new();
    let mut ids = Vec::new();
    for i in 0..4 {
        let spec = TestResource::spec_in(&format!("p{i}"), &log, behaviour.clone(), &pool);
        let (id, addr) = root.handle.start_child::<TestResource>(spec).await.unwrap();
        assert_eq!(addr.send(Ping).await.unwrap(), 1, "it answers from its arbiter");
        threads.push(addr.send(WhichThread).await.unwrap());
        ids.push(id);
    }
    let here = format!("{:?}", std::thread::current().id());
    assert!(threads.iter().all(|t| *t != here), "no child on the supervisor's thread");
    assert_eq!(threads.iter().collect::<HashSet<_>>().len(), 2, "both arbiters used");
    assert_eq!((&threads[0], &threads[1]), (&threads[2], &threads[3]), "placed in turn");
    assert!(
        eventually(WITHIN, || registry.handle_counts().tasks == 8
            && registry.handle_counts().timers == 4)
        .await
    );
    for id in &ids {
        root.handle.terminate_child(*id, ExitReason::Shutdown).await.unwrap();
    }
    assert!(eventually(WITHIN, || ids.iter().all(|id| !registry.contains(*id))).await);
    assert!(eventually(WITHIN, || registry.handle_counts() == HandleCounts::default()).await);
    let cleaned = log.entries().iter().filter(|e| e.starts_with("stop:p")).count();
    assert_eq!(cleaned, 4, "each ran its async cleanup");
}

#[actix_rt::test]
async fn a_placed_child_that_ignores_stop_is_killed_at_its_deadline() {
    let registry = Registry::with_defaults();
    let log = Log::default();
    let pool = ArbiterPool::new("test", 1);
    let root =
        Supervisor::start_root(&registry, fast_spec("root", Strategy::Dynamic)).await.unwrap();
    let behaviour = Behaviour { ignore_stop: true, tasks: 2, ..Behaviour::default() };
    let spec = TestResource::spec_in("stubborn", &log, behaviour, &pool)
        .shutdown(Duration::from_millis(50));
    let (id, _addr) = root.handle.start_child::<TestResource>(spec).await.unwrap();
    assert!(eventually(WITHIN, || registry.handle_counts().tasks == 2).await);
    root.handle.stop(ExitReason::Shutdown).await.unwrap();
    assert_eq!(root.exited.await.unwrap(), ExitReason::Shutdown);
    assert_eq!(registry.get(id).unwrap().last_exit, Some(ExitReason::Killed));
    assert!(eventually(WITHIN, || registry.handle_counts() == HandleCounts::default()).await);
}

#[actix_rt::test]
async fn a_placed_child_that_crashes_is_restarted_on_the_pool() {
    let registry = Registry::with_defaults();
    let log = Log::default();
    let pool = ArbiterPool::new("test", 2);
    let root =
        Supervisor::start_root(&registry, fast_spec("root", Strategy::OneForOne)).await.unwrap();
    let spec = TestResource::spec_in("a", &log, Behaviour::default(), &pool);
    let (id, addr) = root.handle.start_child::<TestResource>(spec).await.unwrap();
    addr.send(Crash).await.unwrap();
    assert!(
        eventually(WITHIN, || log.count("start:a") == 2
            && state(&registry, id) == Some(LifecycleState::Running))
        .await
    );
    let again = log.addr("a");
    assert_eq!(again.send(Ping).await.unwrap(), 1, "a fresh actor");
    assert_ne!(
        again.send(WhichThread).await.unwrap(),
        format!("{:?}", std::thread::current().id())
    );
}

#[actix_rt::test]
async fn churn_of_placed_children_returns_to_baseline() {
    let registry = Registry::with_defaults();
    let log = Log::default();
    let pool = ArbiterPool::new("test", 2);
    let root =
        Supervisor::start_root(&registry, fast_spec("root", Strategy::Dynamic)).await.unwrap();
    let behaviour = Behaviour { tasks: 1, timers: 1, ..Behaviour::default() };
    for round in 0..5 {
        let mut ids = Vec::new();
        for i in 0..100 {
            let spec =
                TestResource::spec_in(&format!("c{round}-{i}"), &log, behaviour.clone(), &pool);
            ids.push(root.handle.start_child::<TestResource>(spec).await.unwrap().0);
        }
        for id in &ids {
            root.handle.terminate_child(*id, ExitReason::Normal).await.unwrap();
        }
        assert!(eventually(WITHIN, || ids.iter().all(|id| !registry.contains(*id))).await);
    }
    assert_eq!(registry.count_of(&[ResourceKind::Session]), 0);
    assert!(eventually(WITHIN, || registry.handle_counts() == HandleCounts::default()).await);
    assert_eq!(log.entries().iter().filter(|e| e.starts_with("stop:c")).count(), 500);
}
