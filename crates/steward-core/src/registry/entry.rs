//! One registry entry: its shared mutable part and the snapshot APIs return.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::{ExitReason, LifecycleState, ResourceId, ResourceKind};

/// The mutable part of a registry entry, shared lock-free with the resource that owns it
/// (activity timestamps and handle counts are updated without taking the registry lock).
#[derive(Debug)]
pub struct EntryShared {
    state: AtomicU8,
    last_activity_ms: AtomicU64,
    pub(crate) restarts: AtomicU32,
    pub(crate) tasks: AtomicU32,
    pub(crate) timers: AtomicU32,
    pub(crate) processes: AtomicU32,
    /// The current incarnation was killed (its task aborted) by its supervisor or the shutdown.
    killed: AtomicBool,
    /// The current incarnation, or a task it owns, panicked.
    panicked: AtomicBool,
    /// Its supervisor has armed the kill deadline of the current incarnation's stop.
    kill_armed: AtomicBool,
    /// Stop requests already sent for the current incarnation: [`STOP`] and [`TERMINATE`] bits.
    stop_requested: AtomicU8,
    last_exit: Mutex<Option<ExitReason>>,
    /// The actor's task is alive: its lifeline's report waits for the task's end (see
    /// [`EntryShared::defer_exit`]).
    exit_held: AtomicBool,
    /// The report a lifeline left while `exit_held`.
    deferred_exit: Mutex<Option<DeferredExit>>,
}

/// A lifeline's exit report, run once the actor's task has dropped everything it held.
pub(crate) struct DeferredExit(pub(crate) Box<dyn FnOnce() + Send>);

impl std::fmt::Debug for DeferredExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeferredExit")
    }
}

/// A stop that lets the restart policy decide (a panic in a tracked task).
pub(crate) const STOP: u8 = 1;
/// A stop for good (`Control::stop`, an unclaimed start).
pub(crate) const TERMINATE: u8 = 2;

impl EntryShared {
    pub(crate) fn new(now_ms: u64) -> Self {
        Self {
            state: AtomicU8::new(LifecycleState::Starting as u8),
            last_activity_ms: AtomicU64::new(now_ms),
            restarts: AtomicU32::new(0),
            tasks: AtomicU32::new(0),
            timers: AtomicU32::new(0),
            processes: AtomicU32::new(0),
            killed: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            kill_armed: AtomicBool::new(false),
            stop_requested: AtomicU8::new(0),
            last_exit: Mutex::new(None),
            exit_held: AtomicBool::new(false),
            deferred_exit: Mutex::new(None),
        }
    }

    /// The actor's task holds back its lifeline's report until the task has dropped the whole
    /// context (its timers and spawned futures drop after the actor itself): whoever watches
    /// the registry, on whatever thread, sees the resource gone only once all of it is.
    pub(crate) fn hold_exit(&self) {
        self.exit_held.store(true, Ordering::Release);
    }

    /// Runs `report` now, or when the actor's task ends if it [holds](Self::hold_exit) it.
    pub(crate) fn defer_exit(&self, report: DeferredExit) {
        if self.exit_held.load(Ordering::Acquire) {
            let mut slot =
                self.deferred_exit.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            // re-checked under the lock: the task may have ended meanwhile
            if self.exit_held.load(Ordering::Acquire) {
                *slot = Some(report);
                return;
            }
        }
        (report.0)();
    }

    /// The actor's task has ended: runs the report its lifeline left, if any.
    pub(crate) fn release_exit(&self) {
        let report = {
            let mut slot =
                self.deferred_exit.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            self.exit_held.store(false, Ordering::Release);
            slot.take()
        };
        if let Some(report) = report {
            (report.0)();
        }
    }

    /// Current lifecycle state.
    #[must_use]
    pub fn state(&self) -> LifecycleState {
        LifecycleState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Moves to `next` if the state machine allows it; returns whether it did.
    pub(crate) fn set_state(&self, next: LifecycleState) -> bool {
        let mut cur = self.state.load(Ordering::Acquire);
        loop {
            if !LifecycleState::from_u8(cur).can_become(next) {
                return false;
            }
            match self.state.compare_exchange(cur, next as u8, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }

    /// A new incarnation starts: it has not been killed, has not panicked and was not asked to
    /// stop.
    pub(crate) fn reset_incarnation(&self) {
        self.killed.store(false, Ordering::Relaxed);
        self.panicked.store(false, Ordering::Relaxed);
        self.kill_armed.store(false, Ordering::Relaxed);
        self.stop_requested.store(0, Ordering::Relaxed);
    }

    /// Records that the supervisor armed the kill deadline of this incarnation's stop.
    pub(crate) fn mark_kill_armed(&self) {
        self.kill_armed.store(true, Ordering::Relaxed);
    }

    /// Whether the supervisor already armed this incarnation's kill deadline.
    pub(crate) fn kill_armed(&self) -> bool {
        self.kill_armed.load(Ordering::Relaxed)
    }

    pub(crate) fn mark_killed(&self) {
        self.killed.store(true, Ordering::Relaxed);
    }

    pub(crate) fn killed(&self) -> bool {
        self.killed.load(Ordering::Relaxed)
    }

    pub(crate) fn mark_panicked(&self) {
        self.panicked.store(true, Ordering::Relaxed);
    }

    pub(crate) fn panicked(&self) -> bool {
        self.panicked.load(Ordering::Relaxed)
    }

    /// Records a stop request of kind `bit` ([`STOP`] or [`TERMINATE`]); returns whether it is
    /// new for this incarnation, i.e. whether it must be sent. A [`STOP`] after a
    /// [`TERMINATE`] is not new (the stronger one is on its way).
    pub(crate) fn request_stop(&self, bit: u8) -> bool {
        let before = self.stop_requested.fetch_or(bit, Ordering::AcqRel);
        before & bit == 0 && !(bit == STOP && before & TERMINATE != 0)
    }

    pub(crate) fn touch(&self, now_ms: u64) {
        self.last_activity_ms.fetch_max(now_ms, Ordering::Relaxed);
    }

    pub(crate) fn last_activity_ms(&self) -> u64 {
        self.last_activity_ms.load(Ordering::Relaxed)
    }

    pub(crate) fn set_last_exit(&self, reason: ExitReason) {
        *self.last_exit.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reason);
    }

    pub(crate) fn last_exit(&self) -> Option<ExitReason> {
        self.last_exit.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// A snapshot of one registry entry, for APIs.
#[derive(Debug, Clone)]
pub struct ResourceInfo {
    /// Its id (stable across restarts of the slot).
    pub id: ResourceId,
    /// Its kind.
    pub kind: ResourceKind,
    /// The name from its child spec.
    pub name: Arc<str>,
    /// Owning tenant, if any.
    pub tenant: Option<Arc<str>>,
    /// Its supervisor, if any.
    pub parent: Option<ResourceId>,
    /// Lifecycle state.
    pub state: LifecycleState,
    /// When the slot was first registered.
    pub started_at: SystemTime,
    /// Last recorded activity (idle timeouts count from here).
    pub last_activity_at: SystemTime,
    /// Restarts of this slot so far.
    pub restarts: u32,
    /// Exit reason of the last incarnation that exited, if any.
    pub last_exit: Option<ExitReason>,
    /// Tracked tasks it owns now.
    pub tasks: u32,
    /// Tracked timers it owns now.
    pub timers: u32,
    /// Tracked child processes it owns now.
    pub processes: u32,
    /// Whether it is a supervisor.
    pub is_supervisor: bool,
    /// When it left the live registry (stopped entries only).
    pub stopped_at: Option<SystemTime>,
}
