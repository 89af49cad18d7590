//! Tracked child processes: own process group, killed if Steward dies, group-killed and reaped
//! when the owner stops.

use std::io;
use std::os::fd::{BorrowedFd, IntoRawFd as _, OwnedFd, RawFd};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::sync::watch;
use tokio::task::AbortHandle;

use super::{Tracker, TrackerInner, lock};
use crate::registry::HandleKind;
use crate::{Error, Result};

/// Extra time given to a SIGKILLed process group to be reaped before its waiter is abandoned to
/// tokio's orphan reaper.
const REAP_GRACE: Duration = Duration::from_secs(2);

pub(super) struct ProcessSlot {
    pid: i32,
    exit: watch::Receiver<Option<Option<ExitStatus>>>,
    waiter: AbortHandle,
}

/// A child process owned by a [`Tracker`]. Its pipes (when the command asked for them) are
/// handed over; the process itself stays owned by the tracker, which reaps it.
#[derive(Debug)]
pub struct TrackedProcess {
    /// OS process id, which is also its process group id.
    pub pid: u32,
    /// Its stdin, if piped.
    pub stdin: Option<ChildStdin>,
    /// Its stdout, if piped.
    pub stdout: Option<ChildStdout>,
    /// Its stderr, if piped.
    pub stderr: Option<ChildStderr>,
    exit: watch::Receiver<Option<Option<ExitStatus>>>,
}

impl TrackedProcess {
    /// Waits for the process to exit and be reaped. `None` when its status could not be read.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only waits; the tracker reaps the process either way.
    pub async fn wait(&mut self) -> Option<ExitStatus> {
        match self.exit.wait_for(Option::is_some).await {
            Ok(status) => status.flatten(),
            Err(_) => None,
        }
    }

    /// Its exit status if it has exited and been reaped.
    #[must_use]
    pub fn try_status(&self) -> Option<Option<ExitStatus>> {
        *self.exit.borrow()
    }
}

impl Tracker {
    /// Spawns `cmd` as a child process owned by this tracker: in its own process group, with
    /// SIGKILL as its parent-death signal (so it dies with Steward), reaped by a tracked waiter.
    /// When the owner stops, the group gets SIGTERM, then SIGKILL after the grace.
    ///
    /// The parent-death signal fires when the *thread* that spawned the child exits; actix
    /// arbiter threads live as long as the process, which is where resources spawn.
    ///
    /// # Errors
    /// [`Error::OwnerStopping`] once the owner has begun to stop; [`Error::Spawn`] when the OS
    /// refuses.
    ///
    /// # Panics
    /// When called outside an actix arbiter or a tokio `LocalSet`.
    pub fn spawn_process(&self, cmd: &mut Command) -> Result<TrackedProcess> {
        self.spawn_process_with_fds(cmd, Vec::new())
    }

    /// [`Tracker::spawn_process`], handing the child extra open files: each `(fd, target)`
    /// becomes the child's descriptor number `target` (at most [`MAX_EXTRA_FDS`], targets above
    /// 2). Chromium's `--remote-debugging-pipe` takes its CDP pipe this way, as fds 3 and 4.
    /// The parent's copies live in `cmd` until it is dropped: drop it after the spawn, so the
    /// child holds the only ones (and an end of a pipe sees end-of-file when the child goes).
    ///
    /// # Errors
    /// As [`Tracker::spawn_process`]; [`Error::Spawn`] for too many or invalid targets.
    ///
    /// # Panics
    /// As [`Tracker::spawn_process`].
    pub fn spawn_process_with_fds(
        &self,
        cmd: &mut Command,
        fds: Vec<(OwnedFd, RawFd)>,
    ) -> Result<TrackedProcess> {
        if fds.len() > MAX_EXTRA_FDS || fds.iter().any(|(_, target)| *target <= 2) {
            return Err(Error::Spawn(format!(
                "at most {MAX_EXTRA_FDS} extra descriptors, numbered above 2"
            )));
        }
        let guard = self.prepare(HandleKind::Process)?;
        cmd.process_group(0).kill_on_drop(true);
        prepare_child(cmd, fds);
        #[allow(clippy::disallowed_methods)]
        // this is the tracker: the child is in its own group, dies with Steward, and is
        // registered to its owner, which kills and reaps it when it stops
        let mut child = cmd.spawn().map_err(|e| Error::Spawn(e.to_string()))?;
        let Some(pid) = child.id() else {
            return Err(Error::Spawn("child exited before its pid was read".into()));
        };
        let (tx, exit) = watch::channel(None);
        let (stdin, stdout, stderr) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let key = guard.key;
        let inner = Arc::downgrade(&self.inner);
        #[allow(clippy::disallowed_methods)]
        // this is the tracker: the waiter is registered to its owner
        let waiter = actix_rt::spawn(async move {
            let _guard = guard;
            let status = child.wait().await.ok();
            if let Some(inner) = inner.upgrade() {
                lock(&inner.processes).remove(&key);
            }
            let _ = tx.send(Some(status));
        });
        let pid_i32 = i32::try_from(pid).unwrap_or(i32::MAX);
        lock(&self.inner.processes).insert(
            key,
            ProcessSlot { pid: pid_i32, exit: exit.clone(), waiter: waiter.abort_handle() },
        );
        Ok(TrackedProcess { pid, stdin, stdout, stderr, exit })
    }
}

/// SIGTERM to every group, wait up to `grace`, SIGKILL what is left, wait for the reaping.
/// Returns how many groups needed SIGKILL.
pub(super) async fn terminate_all(inner: &TrackerInner, grace: Duration) -> usize {
    let slots: Vec<(i32, watch::Receiver<Option<Option<ExitStatus>>>)> =
        lock(&inner.processes).values().map(|s| (s.pid, s.exit.clone())).collect();
    if slots.is_empty() {
        return 0;
    }
    for (pid, _) in &slots {
        signal_group(*pid, Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    let mut forced = 0;
    for (pid, mut exit) in slots.iter().cloned() {
        let exited =
            tokio::time::timeout_at(deadline.into(), exit.wait_for(Option::is_some)).await.is_ok();
        if !exited {
            forced += 1;
            signal_group(pid, Signal::SIGKILL);
            let _ = tokio::time::timeout(REAP_GRACE, exit.wait_for(Option::is_some)).await;
        }
        // the leader is gone; anything left in its group goes too
        signal_group(pid, Signal::SIGKILL);
    }
    if forced > 0 {
        tracing::warn!(owner = %inner.owner, forced, "process groups did not exit on SIGTERM, killed");
    }
    forced
}

/// The owner vanished: SIGKILL every group now and abort the waiters (tokio reaps the orphans).
pub(super) fn kill_all_now(inner: &TrackerInner) {
    let slots: Vec<ProcessSlot> = lock(&inner.processes).drain().map(|(_, s)| s).collect();
    for s in slots {
        signal_group(s.pid, Signal::SIGKILL);
        s.waiter.abort();
    }
}

fn signal_group(pid: i32, signal: Signal) {
    match killpg(Pid::from_raw(pid), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => tracing::warn!(pid, %signal, error = %e, "could not signal process group"),
    }
}

/// Most extra descriptors [`Tracker::spawn_process_with_fds`] hands a child.
pub const MAX_EXTRA_FDS: usize = 8;

/// One of the two places Steward needs `unsafe` (the other: steward-http `conn.rs`): `pre_exec` runs a closure in the forked child before
/// `exec`, which the standard library cannot check. The closure sets the parent-death signal
/// (`prctl(2)`) and moves the extra descriptors to their numbers (`fcntl(F_DUPFD_CLOEXEC)` to
/// get every source out of the targets' way, then `dup2(2)`, which leaves the targets open
/// across `exec`): all async-signal-safe, and it allocates nothing (a fixed array), so the
/// requirements of `pre_exec` hold. `dup2` on raw numbers is itself `unsafe` in nix: the
/// targets are the child's own fresh numbers, given up at once (`into_raw_fd`), never closed
/// twice.
#[allow(unsafe_code)]
fn prepare_child(cmd: &mut Command, fds: Vec<(OwnedFd, RawFd)>) {
    let above = fds.iter().map(|(_, target)| *target).max().unwrap_or(2) + 1;
    let child = move || {
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
        let mut moved = [0 as RawFd; MAX_EXTRA_FDS];
        for (i, (fd, _)) in fds.iter().enumerate() {
            moved[i] = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(above))
                .map_err(io::Error::from)?;
        }
        for (i, (_, target)) in fds.iter().enumerate() {
            // SAFETY: `moved[i]` is open in this child; `target` is free or ours to replace,
            // and is given up at once, never closed by this process
            let placed =
                unsafe { nix::unistd::dup2_raw(BorrowedFd::borrow_raw(moved[i]), *target) };
            let _ = placed.map_err(io::Error::from)?.into_raw_fd();
        }
        Ok(())
    };
    // SAFETY: see the function's doc: the closure is async-signal-safe and allocates nothing.
    unsafe {
        cmd.pre_exec(child);
    }
}
