//! Every single stop is bounded: whichever way a child is asked to stop (or begins to stop by
//! itself), a child that does not finish is killed at its `shutdown` deadline, counted, recorded
//! as `killed`, and its holds are released.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::super::*;
use crate::testing::{Behaviour, Crash, Log, TestResource, eventually, fast_spec};
use crate::{Control, LifecycleState};

const WITHIN: Duration = Duration::from_secs(5);
/// The child `shutdown` deadline of these tests.
const DEADLINE: Duration = Duration::from_millis(150);
/// What the issue allows past the deadline for the kill and the release.
const SLACK: Duration = Duration::from_millis(100);

/// Drops to `true` when released (a quota slot, a per-IP place).
struct Hold(Arc<AtomicBool>);

impl Drop for Hold {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn killed(registry: &Registry) -> u64 {
    registry.kind_stats()[ResourceKind::Session.index()].1.killed
}

/// A child that ignores `StopResource`, with [`DEADLINE`] and a hold; its id and the hold's flag.
async fn stubborn(
    root: &SupervisorHandle,
    log: &Log,
    name: &str,
    restart: RestartType,
) -> (ResourceId, Arc<AtomicBool>) {
    let released = Arc::new(AtomicBool::new(false));
    let behaviour = Behaviour { ignore_stop: true, tasks: 1, ..Behaviour::default() };
    let spec = TestResource::spec(name, log, behaviour)
        .shutdown(DEADLINE)
        .restart(restart)
        .hold(Hold(released.clone()));
    let (id, _) = root.start_child::<TestResource>(spec).await.unwrap();
    (id, released)
}

/// Waits until `cond`; returns how long it took.
async fn took(mut cond: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    assert!(eventually(WITHIN, &mut cond).await, "never happened");
    t0.elapsed()
}

#[actix_rt::test]
async fn a_child_that_ignores_every_kind_of_stop_is_killed_at_its_deadline_and_released() {
    let registry = Registry::with_defaults();
    let control = Control::new(registry.clone());
    let log = Log::default();
    let root =
        Supervisor::start_root(&registry, fast_spec("root", Strategy::Dynamic)).await.unwrap();
    let h = &root.handle;

    // the operator's DELETE /v1/resources/{id}, tenant deletion, CleanupProducer and
    // CleanupConsumer, the idle sweeps: Control::stop
    let (id, released) = stubborn(h, &log, "control", RestartType::Temporary).await;
    control.stop(id, ExitReason::Shutdown).unwrap();
    let gone = took(|| !registry.contains(id)).await;
    assert!(gone <= DEADLINE + SLACK, "gone after {gone:?}");
    assert!(gone >= DEADLINE, "killed before its deadline: {gone:?}");
    assert_eq!(registry.get(id).unwrap().last_exit, Some(ExitReason::Killed));
    assert!(released.load(Ordering::SeqCst), "its hold is released");
    assert_eq!(killed(&registry), 1, "counted as forced");

    // TerminateChild through the handle
    let (id, released) = stubborn(h, &log, "terminate", RestartType::Permanent).await;
    h.terminate_child(id, ExitReason::Normal).await.unwrap();
    let gone = took(|| !registry.contains(id)).await;
    assert!(gone <= DEADLINE + SLACK, "gone after {gone:?}");
    assert_eq!(registry.get(id).unwrap().last_exit, Some(ExitReason::Killed));
    assert!(released.load(Ordering::SeqCst));
    assert_eq!(log.count("start:terminate"), 1, "terminated: not restarted");

    // RestartChild and Control::restart: killed at the deadline, then a fresh actor
    for (n, name) in ["restart", "control-restart"].into_iter().enumerate() {
        let (id, released) = stubborn(h, &log, name, RestartType::Permanent).await;
        if n == 0 {
            h.restart_child(id).await.unwrap();
        } else {
            control.restart(id).await.unwrap();
        }
        let again = took(|| log.count(&format!("start:{name}")) == 2).await;
        assert!(again <= DEADLINE + SLACK, "restarted after {again:?}");
        let info = registry.get(id).unwrap();
        assert_eq!((info.last_exit, info.restarts), (Some(ExitReason::Killed), 1));
        assert!(!released.load(Ordering::SeqCst), "a restart keeps the slot and its hold");
    }
    assert_eq!(killed(&registry), 4);
}

#[actix_rt::test]
async fn a_child_whose_own_stop_hangs_is_killed_at_its_deadline_as_killed() {
    let registry = Registry::with_defaults();
    let log = Log::default();
    let root =
        Supervisor::start_root(&registry, fast_spec("root", Strategy::Dynamic)).await.unwrap();
    let behaviour = Behaviour { hang_cleanup: true, ..Behaviour::default() };
    let spec = TestResource::spec("hangs", &log, behaviour)
        .shutdown(DEADLINE)
        .restart(RestartType::Temporary);
    let (id, addr) = root.handle.start_child::<TestResource>(spec).await.unwrap();
    // it stops itself (an error, an idle timeout): nobody asked, its supervisor still bounds it
    addr.send(Crash).await.unwrap();
    assert_eq!(registry.get(id).unwrap().state, LifecycleState::Stopping);
    let gone = took(|| !registry.contains(id)).await;
    assert!(gone <= DEADLINE + SLACK, "gone after {gone:?}");
    // killed during its cleanup: recorded as killed, never as what it meant to exit with
    assert_eq!(registry.get(id).unwrap().last_exit, Some(ExitReason::Killed));
    assert_eq!(log.count("stop:hangs"), 0);
    assert!(eventually(WITHIN, || registry.handle_counts().tasks == 0).await);
}

#[actix_rt::test]
async fn a_stop_that_finishes_in_time_cancels_its_kill() {
    let registry = Registry::with_defaults();
    let log = Log::default();
    let root =
        Supervisor::start_root(&registry, fast_spec("root", Strategy::Dynamic)).await.unwrap();
    let behaviour = Behaviour { slow_cleanup: Some(DEADLINE / 3), ..Behaviour::default() };
    let spec = TestResource::spec("polite", &log, behaviour).shutdown(DEADLINE);
    let (id, _) = root.handle.start_child::<TestResource>(spec).await.unwrap();
    Control::new(registry.clone()).stop(id, ExitReason::Normal).unwrap();
    assert!(eventually(WITHIN, || !registry.contains(id)).await);
    assert_eq!(registry.get(id).unwrap().last_exit, Some(ExitReason::Normal));
    assert_eq!(killed(&registry), 0);
    // the kill timer went with the last pending deadline
    let sup = registry.get(root.handle.id()).unwrap();
    assert_eq!(sup.timers, 0, "no kill timer is left armed");
}

#[actix_rt::test]
async fn a_stop_asked_twice_is_sent_once_and_unknown_ids_are_refused() {
    let registry = Registry::with_defaults();
    let control = Control::new(registry.clone());
    let log = Log::default();
    let root =
        Supervisor::start_root(&registry, fast_spec("root", Strategy::Dynamic)).await.unwrap();
    let spec = TestResource::spec("once", &log, Behaviour::default());
    let (id, _) = root.handle.start_child::<TestResource>(spec).await.unwrap();
    control.stop(id, ExitReason::Normal).unwrap();
    control.stop(id, ExitReason::Idle).unwrap();
    assert!(eventually(WITHIN, || !registry.contains(id)).await);
    assert_eq!(registry.get(id).unwrap().last_exit, Some(ExitReason::Normal), "the first wins");
    assert!(matches!(control.stop(id, ExitReason::Normal), Err(Error::NotFound(_))));
    assert!(matches!(
        control.stop(root.handle.id(), ExitReason::Normal),
        Err(Error::IsSupervisor(_))
    ));
    assert!(matches!(control.restart(id).await, Err(Error::NotFound(_))));
    assert!(!control.kill(id));
}

#[actix_rt::test]
async fn start_child_is_cancel_safe() {
    use std::future::Future as _;
    use std::task::Poll;

    let registry = Registry::with_defaults();
    let log = Log::default();
    let root =
        Supervisor::start_root(&registry, fast_spec("root", Strategy::Dynamic)).await.unwrap();
    let released = Arc::new(AtomicBool::new(false));

    // given up before the supervisor saw the request: nothing starts
    let spec = TestResource::spec("early", &log, Behaviour::default()).hold(Hold(released.clone()));
    let mut call = Box::pin(root.handle.start_child::<TestResource>(spec));
    std::future::poll_fn(|cx| {
        assert!(call.as_mut().poll(cx).is_pending(), "the request is queued");
        Poll::Ready(())
    })
    .await;
    drop(call);
    let _ = root.handle.which_children().await.unwrap(); // the supervisor has seen the request
    assert_eq!(log.count("start:early"), 0);
    assert!(released.load(Ordering::SeqCst), "the spec and its hold are dropped");

    // given up after it was started: the unclaimed child is terminated, its hold released
    let released = Arc::new(AtomicBool::new(false));
    let spec = TestResource::spec("late", &log, Behaviour::default()).hold(Hold(released.clone()));
    let mut call = Box::pin(root.handle.start_child::<TestResource>(spec));
    std::future::poll_fn(|cx| {
        assert!(call.as_mut().poll(cx).is_pending());
        Poll::Ready(())
    })
    .await;
    assert!(eventually(WITHIN, || log.count("start:late") == 1).await, "it was started");
    drop(call);
    assert!(eventually(WITHIN, || log.count("stop:late") == 1).await, "and then stopped");
    assert!(eventually(WITHIN, || released.load(Ordering::SeqCst)).await);
    assert_eq!(registry.count_of(&[ResourceKind::Session]), 0);
}
