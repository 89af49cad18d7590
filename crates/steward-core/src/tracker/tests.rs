//! Tests of tracked spawning: tasks, timers and process groups end with their owner.

use std::path::Path;
use std::time::Duration;

use actix::prelude::*;

use crate::registry::HandleCounts;
use crate::testing::eventually;
use crate::{
    Error, ExitReason, Registry, Resource, ResourceCtx, ResourceId, ResourceKind, StopResource,
    start_unsupervised, stop_resource,
};

const WITHIN: Duration = Duration::from_secs(5);

/// A resource that spawns what it is told to through its tracker. Kind `consumer`: no idle
/// timer, so every counted timer is one the test asked for.
struct Holder {
    rcx: ResourceCtx,
}

impl Actor for Holder {
    type Context = Context<Self>;
}

impl Resource for Holder {
    fn resource_ctx(&self) -> &ResourceCtx {
        &self.rcx
    }

    fn resource_ctx_mut(&mut self) -> &mut ResourceCtx {
        &mut self.rcx
    }
}

impl Handler<StopResource> for Holder {
    type Result = ();

    fn handle(&mut self, msg: StopResource, ctx: &mut Context<Self>) {
        stop_resource(self, ctx, msg.reason);
    }
}

/// Spawns `argv` as a tracked process; returns its pid.
#[derive(Message)]
#[rtype(result = "crate::Result<u32>")]
struct SpawnProcess(&'static [&'static str]);

impl Handler<SpawnProcess> for Holder {
    type Result = crate::Result<u32>;

    fn handle(&mut self, msg: SpawnProcess, _ctx: &mut Context<Self>) -> Self::Result {
        let (program, args) = msg.0.split_first().expect("a program");
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args).stdin(std::process::Stdio::null());
        self.rcx.tracker().spawn_process(&mut cmd).map(|p| p.pid)
    }
}

/// Spawns tasks that never finish and timers far in the future.
#[derive(Message)]
#[rtype(result = "crate::Result<()>")]
struct SpawnTasks {
    tasks: usize,
    timers: usize,
}

impl Handler<SpawnTasks> for Holder {
    type Result = crate::Result<()>;

    fn handle(&mut self, msg: SpawnTasks, _ctx: &mut Context<Self>) -> Self::Result {
        for _ in 0..msg.tasks {
            self.rcx.tracker().spawn(std::future::pending())?;
        }
        for _ in 0..msg.timers {
            self.rcx.tracker().timer(Duration::from_secs(3600), async {})?;
        }
        Ok(())
    }
}

/// Spawns a task that keeps a clone of the owner's tracker (as a task that spawns more work
/// would).
#[derive(Message)]
#[rtype(result = "crate::Result<()>")]
struct SpawnTrackerHoldingTask;

impl Handler<SpawnTrackerHoldingTask> for Holder {
    type Result = crate::Result<()>;

    fn handle(&mut self, _: SpawnTrackerHoldingTask, _ctx: &mut Context<Self>) -> Self::Result {
        let tracker = self.rcx.tracker().clone();
        self.rcx.tracker().spawn(async move {
            let _tracker = tracker;
            std::future::pending::<()>().await;
        })
    }
}

/// Runs `Tracker::shutdown(grace)` from inside the owner; answers the number of process groups
/// that had to be SIGKILLed. The owner itself keeps running.
#[derive(Message)]
#[rtype(result = "usize")]
struct ShutdownTracker(Duration);

impl Handler<ShutdownTracker> for Holder {
    type Result = ResponseFuture<usize>;

    fn handle(&mut self, msg: ShutdownTracker, _ctx: &mut Context<Self>) -> Self::Result {
        let tracker = self.rcx.tracker().clone();
        Box::pin(async move { tracker.shutdown(msg.0).await })
    }
}

/// Tries a task, a timer and a process; answers the three results.
#[derive(Message)]
#[rtype(result = "Vec<crate::Result<()>>")]
struct TryEverything;

impl Handler<TryEverything> for Holder {
    type Result = Vec<crate::Result<()>>;

    fn handle(&mut self, _: TryEverything, _ctx: &mut Context<Self>) -> Self::Result {
        let tracker = self.rcx.tracker();
        vec![
            tracker.spawn(async {}),
            tracker.timer(Duration::from_secs(1), async {}),
            tracker.spawn_process(&mut tokio::process::Command::new("true")).map(drop),
        ]
    }
}

/// Spawns `sh -c script` with the given descriptors as its fds 3 and 4.
#[derive(Message)]
#[rtype(result = "crate::Result<u32>")]
struct SpawnWithFds(&'static str, Vec<(std::os::fd::OwnedFd, std::os::fd::RawFd)>);

impl Handler<SpawnWithFds> for Holder {
    type Result = crate::Result<u32>;

    fn handle(&mut self, msg: SpawnWithFds, _ctx: &mut Context<Self>) -> Self::Result {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.args(["-c", msg.0]).stdin(std::process::Stdio::null());
        let process = self.rcx.tracker().spawn_process_with_fds(&mut cmd, msg.1)?;
        drop(cmd); // the parent's copies of the child's ends close here
        Ok(process.pid)
    }
}

fn start_holder(registry: &Registry) -> (ResourceId, Addr<Holder>) {
    start_unsupervised(registry, ResourceKind::Consumer, "holder", |rcx| Holder { rcx })
}

/// State and process group of `pid` from `/proc/<pid>/stat` (fields 3 and 5); `None` once the
/// pid is gone (reaped).
fn stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // the command name (field 2) is in parentheses and may contain spaces
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

fn exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Dead means reaped or a zombie: this container's init does not reap orphaned grandchildren.
fn is_dead(pid: u32) -> bool {
    stat(pid).is_none_or(|(state, _)| state == 'Z')
}

/// Processes of group `pgid` that are not dead.
fn live_group(pgid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| stat(*pid).is_some_and(|(state, pgrp)| pgrp == pgid && state != 'Z'))
        .collect()
}

/// Whether `pid` has SIGTERM (15, bit 14 of `SigIgn`) ignored.
fn ignores_sigterm(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("SigIgn:"))
                .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        })
        .is_some_and(|mask| mask & (1 << 14) != 0)
}

#[actix_rt::test]
async fn a_process_runs_in_its_own_group_and_is_reaped_when_its_owner_stops() {
    let registry = Registry::with_defaults();
    let (id, addr) = start_holder(&registry);
    let pid = addr.send(SpawnProcess(&["sleep", "60"])).await.unwrap().unwrap();
    assert_eq!(stat(pid).map(|(_, pgrp)| pgrp), Some(pid), "the child leads its own group");
    assert_eq!(registry.handle_counts().processes, 1);
    assert_eq!(registry.get(id).unwrap().processes, 1);

    addr.send(StopResource { reason: ExitReason::Shutdown }).await.unwrap();
    assert!(eventually(WITHIN, || !registry.contains(id)).await);
    // the stop path waits for the reaping: no zombie is left when the owner is gone
    assert!(!exists(pid), "pid {pid} still has a /proc entry");
    let info = registry.get(id).unwrap();
    assert_eq!((info.processes, info.last_exit), (0, Some(ExitReason::Shutdown)));
    assert_eq!(registry.handle_counts(), HandleCounts::default());
}

// The grace is the `ResourceCtx`'s shutdown deadline, which is also the deadline at which a
// supervisor kills the whole actor (and a dropped tracker SIGKILLs at once): through a stop, a
// SIGKILL after the grace could not be told from a SIGKILL at the drop. So the owner runs
// `Tracker::shutdown(grace)` itself, in a handler, and keeps running.
#[actix_rt::test]
async fn a_process_ignoring_sigterm_is_sigkilled_after_the_grace() {
    let registry = Registry::with_defaults();
    let (id, addr) = start_holder(&registry);
    let pid =
        addr.send(SpawnProcess(&["sh", "-c", "trap '' TERM; sleep 60"])).await.unwrap().unwrap();
    assert!(eventually(WITHIN, || ignores_sigterm(pid)).await, "the trap is in place");

    let forced = addr.send(ShutdownTracker(Duration::from_millis(100))).await.unwrap();
    assert_eq!(forced, 1, "SIGTERM was ignored, SIGKILL was needed");
    assert!(!exists(pid), "the leader is reaped");
    assert!(eventually(WITHIN, || live_group(pid).is_empty()).await, "{:?}", live_group(pid));
    assert!(registry.contains(id), "only the tracker was shut down, not its owner");
    assert_eq!(registry.get(id).unwrap().processes, 0);
    assert_eq!(registry.handle_counts(), HandleCounts::default());

    addr.send(StopResource { reason: ExitReason::Shutdown }).await.unwrap();
    assert!(eventually(WITHIN, || !registry.contains(id)).await);
}

#[actix_rt::test]
async fn grandchildren_in_the_group_are_killed_with_the_leader() {
    let registry = Registry::with_defaults();
    let (id, addr) = start_holder(&registry);
    let pid = addr.send(SpawnProcess(&["sh", "-c", "sleep 60 & wait"])).await.unwrap().unwrap();
    assert!(eventually(WITHIN, || live_group(pid).len() == 2).await, "{:?}", live_group(pid));
    let grandchild = live_group(pid).into_iter().find(|p| *p != pid).unwrap();

    addr.send(StopResource { reason: ExitReason::Shutdown }).await.unwrap();
    assert!(eventually(WITHIN, || !registry.contains(id)).await);
    assert!(!exists(pid));
    assert!(eventually(WITHIN, || is_dead(grandchild)).await, "grandchild {grandchild} lives");
    assert!(live_group(pid).is_empty(), "{:?}", live_group(pid));
    assert_eq!(registry.handle_counts(), HandleCounts::default());
}

#[actix_rt::test]
async fn killing_the_owner_kills_its_process_group_and_aborts_its_tasks() {
    let registry = Registry::with_defaults();
    let (id, addr) = start_holder(&registry);
    addr.send(SpawnTasks { tasks: 2, timers: 1 }).await.unwrap().unwrap();
    let pid = addr.send(SpawnProcess(&["sleep", "60"])).await.unwrap().unwrap();
    let counts = registry.handle_counts();
    assert_eq!((counts.tasks, counts.timers, counts.processes), (2, 1, 1));

    assert!(crate::Control::new(registry.clone()).kill(id), "there was an actor to abort");
    assert!(eventually(WITHIN, || !registry.contains(id)).await);
    assert_eq!(registry.get(id).unwrap().last_exit, Some(ExitReason::Killed));
    // the waiter was aborted with the tracker: tokio reaps the orphan in the background
    assert!(eventually(WITHIN, || !exists(pid)).await, "pid {pid} was not reaped");
    assert!(
        eventually(WITHIN, || registry.handle_counts() == HandleCounts::default()).await,
        "{:?}",
        registry.handle_counts()
    );
    assert!(!addr.connected());
}

#[actix_rt::test]
async fn killing_the_owner_aborts_a_task_that_holds_its_tracker() {
    let registry = Registry::with_defaults();
    let (id, addr) = start_holder(&registry);
    addr.send(SpawnTrackerHoldingTask).await.unwrap().unwrap();
    assert_eq!(registry.handle_counts().tasks, 1);

    assert!(crate::Control::new(registry.clone()).kill(id));
    assert!(eventually(WITHIN, || !registry.contains(id)).await);
    assert!(
        eventually(WITHIN, || registry.handle_counts() == HandleCounts::default()).await,
        "the task outlives its owner: {:?}",
        registry.handle_counts()
    );
}

#[actix_rt::test]
async fn a_shut_down_tracker_aborts_its_tasks_and_refuses_new_work() {
    let registry = Registry::with_defaults();
    let (id, addr) = start_holder(&registry);
    addr.send(SpawnTasks { tasks: 2, timers: 1 }).await.unwrap().unwrap();
    assert_eq!(registry.get(id).unwrap().tasks, 2);

    assert_eq!(addr.send(ShutdownTracker(Duration::from_millis(100))).await.unwrap(), 0);
    let info = registry.get(id).unwrap();
    assert_eq!((info.tasks, info.timers), (0, 0));
    let refused = addr.send(TryEverything).await.unwrap();
    assert_eq!(refused.len(), 3);
    for result in refused {
        assert!(matches!(result, Err(Error::OwnerStopping(owner)) if owner == id), "{result:?}");
    }
    assert_eq!(registry.handle_counts(), HandleCounts::default(), "refused work left nothing");

    addr.send(StopResource { reason: ExitReason::Shutdown }).await.unwrap();
    assert!(eventually(WITHIN, || !registry.contains(id)).await);
    assert_eq!(registry.handle_counts(), HandleCounts::default());
}

#[actix_rt::test]
async fn a_child_gets_its_extra_descriptors_as_the_numbers_asked_and_only_it_holds_them() {
    use std::io::{Read as _, Write as _};
    let registry = Registry::with_defaults();
    let (_id, addr) = start_holder(&registry);
    // pipe2 answers (read end, write end)
    let (child_reads, to_child) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let (from_child, child_writes) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    // the child's ends are handed crosswise on purpose: 4 reads, 3 writes
    let script = "read line <&4; echo \"got $line\" >&3";
    let fds = vec![(child_writes, 3), (child_reads, 4)];
    addr.send(SpawnWithFds(script, fds)).await.unwrap().unwrap();
    let mut to_child = std::fs::File::from(to_child);
    to_child.write_all(b"ping\n").unwrap();
    let mut answer = String::new();
    // end-of-file once the child exits: the parent kept no copy of the child's write end
    std::fs::File::from(from_child).read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "got ping\n");
    let too_low = vec![(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap().0, 1)];
    assert!(matches!(
        addr.send(SpawnWithFds("true", too_low)).await.unwrap(),
        Err(Error::Spawn(_))
    ));
}
