//! No panic escapes its owner: a panic in a tracked task (on the arbiter or on another runtime)
//! stops the owner with `panic` and its supervisor applies the policy; a panicking factory is a
//! failed start; a panic in `stopped` or in a cleanup is contained and recorded as `panic`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actix::prelude::*;

use super::panic_has_owner;
use crate::supervisor::{RestartIntensity, Supervisor};
use crate::testing::{
    Behaviour, Crash, Log, Panic, PanicInTask, Ping, TestResource, eventually, fast_spec,
};
use crate::{ChildSpec, Control, Error, ExitReason, Registry, ResourceKind, RestartType, Strategy};

const WITHIN: Duration = Duration::from_secs(5);

fn other_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap()
}

#[actix_rt::test]
async fn a_panic_in_a_tracked_task_stops_its_owner_and_the_restart_type_decides() {
    let registry = Registry::with_defaults();
    let log = Log::default();
    let io = other_runtime();
    let root =
        Supervisor::start_root(&registry, fast_spec("root", Strategy::Dynamic)).await.unwrap();
    for (name, on) in [("local", None), ("remote", Some(io.handle().clone()))] {
        // transient: a panic is abnormal, so it comes back
        let spec = TestResource::spec(name, &log, Behaviour { tasks: 1, ..Behaviour::default() })
            .restart(RestartType::Transient);
        let (id, addr) = root.handle.start_child::<TestResource>(spec).await.unwrap();
        addr.send(PanicInTask(on.clone())).await.unwrap();
        assert!(eventually(WITHIN, || log.count(&format!("start:{name}")) == 2).await, "{name}");
        let info = registry.get(id).unwrap();
        assert_eq!((info.last_exit, info.restarts), (Some(ExitReason::Panic), 1), "{name}");
        assert_eq!(log.count(&format!("stop:{name}")), 1, "{name}: its cleanup ran");
        assert_eq!(log.addr(name).send(Ping).await.unwrap(), 1, "{name}: a fresh actor serves");

        // temporary: stopped for good, the registry shows why
        let tmp = format!("{name}-tmp");
        let spec =
            TestResource::spec(&tmp, &log, Behaviour::default()).restart(RestartType::Temporary);
        let (id, addr) = root.handle.start_child::<TestResource>(spec).await.unwrap();
        addr.send(PanicInTask(on)).await.unwrap();
        assert!(eventually(WITHIN, || !registry.contains(id)).await, "{tmp}");
        assert_eq!(registry.get(id).unwrap().last_exit, Some(ExitReason::Panic), "{tmp}");
        assert_eq!(log.count(&format!("start:{tmp}")), 1);
    }
    let stats = registry.kind_stats()[ResourceKind::Session.index()].1;
    assert_eq!(stats.failed, 4, "every panic is an abnormal exit");
    drop(root);
    io.shutdown_background();
}

#[actix_rt::test]
async fn actors_and_tracked_tasks_run_inside_their_owners_boundary() {
    let registry = Registry::with_defaults();
    let log = Log::default();
    let io = other_runtime();
    let root =
        Supervisor::start_root(&registry, fast_spec("root", Strategy::Dynamic)).await.unwrap();
    let (_, addr) = root
        .handle
        .start_child::<TestResource>(TestResource::spec("o", &log, Behaviour::default()))
        .await
        .unwrap();
    assert!(!panic_has_owner(), "a test's own code has no owner");
    let seen = Arc::new(AtomicUsize::new(0));
    let tracker = addr.send(GetTracker).await.unwrap();
    for on in [None, Some(io.handle().clone())] {
        let seen = seen.clone();
        let task = async move {
            if panic_has_owner() {
                seen.fetch_add(1, Ordering::SeqCst);
            }
        };
        match on {
            Some(rt) => tracker.spawn_on(&rt, task).unwrap(),
            None => tracker.spawn(task).unwrap(),
        }
    }
    assert!(eventually(WITHIN, || seen.load(Ordering::SeqCst) == 2).await);
    assert!(addr.send(InBoundary).await.unwrap(), "a handler runs inside the actor's boundary");
    drop(root);
    io.shutdown_background();
}

/// The tracker of a test resource.
#[derive(Message)]
#[rtype(result = "crate::Tracker")]
struct GetTracker;

impl Handler<GetTracker> for TestResource {
    type Result = MessageResult<GetTracker>;

    fn handle(&mut self, _: GetTracker, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.rcx.tracker().clone())
    }
}

/// Whether the handler runs inside a panic boundary.
#[derive(Message)]
#[rtype(result = "bool")]
struct InBoundary;

impl Handler<InBoundary> for TestResource {
    type Result = bool;

    fn handle(&mut self, _: InBoundary, _ctx: &mut Context<Self>) -> bool {
        panic_has_owner()
    }
}

/// A child whose factory panics from its `panic_from`-th build on (1-based).
fn panicking(name: &str, log: &Log, panic_from: usize) -> ChildSpec {
    let builds = Arc::new(AtomicUsize::new(0));
    let (name, log) = (name.to_owned(), log.clone());
    ChildSpec::new(name.clone(), ResourceKind::Session, move |rcx| {
        assert!(
            builds.fetch_add(1, Ordering::SeqCst) + 1 < panic_from,
            "factory of {name} panicked on purpose"
        );
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
async fn a_panicking_factory_is_a_failed_start_and_its_siblings_live_on() {
    let registry = Registry::with_defaults();
    let log = Log::default();
    let root =
        Supervisor::start_root(&registry, fast_spec("root", Strategy::Dynamic)).await.unwrap();
    let (_, sibling) = root
        .handle
        .start_child::<TestResource>(TestResource::spec("sibling", &log, Behaviour::default()))
        .await
        .unwrap();
    let err = root.handle.start_child::<TestResource>(panicking("bad", &log, 1)).await.unwrap_err();
    assert!(
        matches!(&err, Error::StartFailed { reason, .. } if reason.contains("factory panicked")),
        "{err}"
    );
    assert_eq!(sibling.send(Ping).await.unwrap(), 1, "the sibling lives on");
    let (_, again) = root
        .handle
        .start_child::<TestResource>(TestResource::spec("after", &log, Behaviour::default()))
        .await
        .unwrap();
    assert_eq!(again.send(Ping).await.unwrap(), 1, "and the supervisor still starts children");
    assert_eq!(registry.count_of(&[ResourceKind::Session]), 2, "the failed start left nothing");
}

#[actix_rt::test]
async fn a_factory_that_panics_on_restart_counts_toward_the_restart_intensity() {
    let registry = Registry::with_defaults();
    let log = Log::default();
    let mut spec = fast_spec("root", Strategy::OneForOne);
    spec.intensity = RestartIntensity { max_restarts: 3, period: Duration::from_secs(60) };
    let spec = spec
        .child(TestResource::spec("sibling", &log, Behaviour::default()))
        .child(panicking("p", &log, 2));
    let root = Supervisor::start_root(&registry, spec).await.unwrap();
    log.addr("p").send(Crash).await.unwrap();
    // the crash, then every failed (panicking) restart, count: the fourth exceeds 3 in 60 s
    let reason = tokio::time::timeout(WITHIN, root.exited).await.unwrap().unwrap();
    assert!(reason.to_string().contains("restart intensity exceeded"), "{reason}");
    assert_eq!(log.count("stop:sibling"), 1, "escalation stopped the sibling in order");
    assert!(registry.is_empty());
}

#[actix_rt::test]
async fn a_panic_in_stopped_or_in_a_cleanup_is_contained_and_recorded_as_panic() {
    let registry = Registry::with_defaults();
    let log = Log::default();
    let root =
        Supervisor::start_root(&registry, fast_spec("root", Strategy::Dynamic)).await.unwrap();
    let start = |name: &'static str, behaviour: Behaviour| {
        let spec = TestResource::spec(name, &log, behaviour).restart(RestartType::Temporary);
        root.handle.start_child::<TestResource>(spec)
    };
    let panics_in_stopped = Behaviour { panic_in_stopped: true, ..Behaviour::default() };

    // a handler panics, then `stopped` panics while the actor is dropped: a double panic
    // would abort the process; the boundary keeps them apart
    let (id, addr) = start("double", panics_in_stopped.clone()).await.unwrap();
    assert!(addr.send(Panic).await.is_err());
    assert!(eventually(WITHIN, || !registry.contains(id)).await);
    assert_eq!(registry.get(id).unwrap().last_exit, Some(ExitReason::Panic));

    // killed, and `stopped` panics as the aborted actor is dropped
    let (id, _) = start("killed", panics_in_stopped.clone()).await.unwrap();
    assert!(Control::new(registry.clone()).kill(id));
    assert!(eventually(WITHIN, || !registry.contains(id)).await);
    assert_eq!(registry.get(id).unwrap().last_exit, Some(ExitReason::Panic));

    // a graceful stop whose `stopped` panics
    let (id, _) = start("graceful", panics_in_stopped).await.unwrap();
    Control::new(registry.clone()).stop(id, ExitReason::Normal).unwrap();
    assert!(eventually(WITHIN, || !registry.contains(id)).await);
    assert_eq!(registry.get(id).unwrap().last_exit, Some(ExitReason::Panic));
    assert_eq!(log.count("stop:graceful"), 1, "its cleanup ran first");

    // a cleanup that panics: recorded as panic, never as the reason it was stopped with
    let (id, _) = start("cleanup", Behaviour { panic_in_cleanup: true, ..Behaviour::default() })
        .await
        .unwrap();
    Control::new(registry.clone()).stop(id, ExitReason::Normal).unwrap();
    assert!(eventually(WITHIN, || !registry.contains(id)).await);
    assert_eq!(registry.get(id).unwrap().last_exit, Some(ExitReason::Panic));

    // and the supervisor is unharmed
    let (_, ok) = start("after", Behaviour::default()).await.unwrap();
    assert_eq!(ok.send(Ping).await.unwrap(), 1);
    assert!(eventually(WITHIN, || registry.handle_counts().tasks == 0).await);
}
