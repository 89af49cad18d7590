//! Tracked spawning: the only way resource code starts a task, a timer or a child process.
//!
//! Everything started through a [`Tracker`] is registered to its owner (counted in the owner's
//! registry entry and in the registry's handle table) and is aborted or killed when the owner
//! stops: gracefully through [`Tracker::shutdown`] on the stop path, or at once when the tracker
//! is dropped (a panic, a killed actor). A bare `tokio::spawn` / `actix_rt::spawn` in resource
//! code is a bug: nothing would own it.
//!
//! Every task and timer runs inside its owner's `resource` span and panic boundary
//! ([`crate::lifeline`]): a panic in one is logged there with its message, and the owner is
//! stopped with [`crate::ExitReason::Panic`] through its supervisor, which applies its restart
//! policy — one tenant's poisoned input never ends the process.

mod process;
#[cfg(test)]
mod tests;

pub use process::{MAX_EXTRA_FDS, TrackedProcess};

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use actix::WeakRecipient;
use tokio::task::AbortHandle;
use tracing::Instrument as _;

use crate::lifeline::Guarded;
use crate::messages::{Notice, NoticeSender, StopResource};
use crate::registry::{EntryShared, HandleKind, Registry, STOP};
use crate::{Error, ExitReason, ResourceId, Result};

/// Owner-scoped spawner; cheap to clone (all clones share one set of handles).
#[derive(Clone)]
pub struct Tracker {
    inner: Arc<TrackerInner>,
}

pub(crate) struct TrackerInner {
    owner: ResourceId,
    registry: Registry,
    shared: Arc<EntryShared>,
    /// The owner's span: every task runs in it.
    span: tracing::Span,
    /// How a panicking task gets its owner stopped.
    port: OwnerPort,
    tasks: Mutex<HashMap<u64, AbortHandle>>,
    processes: Mutex<HashMap<u64, process::ProcessSlot>>,
    closed: AtomicBool,
}

/// Where a tracked task's panic is reported: the owner's supervisor (which stops the owner and
/// kills it at its deadline) or, for an unsupervised owner, the owner itself.
pub(crate) struct OwnerPort {
    /// The supervisor's inbox and the owner's incarnation.
    pub(crate) supervisor: Option<(NoticeSender, u32)>,
    /// The owner's stop recipient, bound once its address exists.
    pub(crate) direct: OnceLock<WeakRecipient<StopResource>>,
}

impl Tracker {
    pub(crate) fn new(
        registry: Registry,
        owner: ResourceId,
        shared: Arc<EntryShared>,
        span: tracing::Span,
        supervisor: Option<(NoticeSender, u32)>,
    ) -> Self {
        Self {
            inner: Arc::new(TrackerInner {
                owner,
                registry,
                shared,
                span,
                port: OwnerPort { supervisor, direct: OnceLock::new() },
                tasks: Mutex::new(HashMap::new()),
                processes: Mutex::new(HashMap::new()),
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// The owner's span, which its tasks run in.
    pub(crate) fn span(&self) -> &tracing::Span {
        &self.inner.span
    }

    /// Whether a panicking task reports to the owner's supervisor.
    pub(crate) fn has_supervisor(&self) -> bool {
        self.inner.port.supervisor.is_some()
    }

    /// Binds the owner's address, once it exists (before the actor runs).
    pub(crate) fn bind_owner(&self, stop: WeakRecipient<StopResource>) {
        let _ = self.inner.port.direct.set(stop);
    }

    /// Wraps a task of this owner: its span, its panic boundary, and on a panic the owner's stop.
    fn owned<F>(&self, fut: F) -> impl Future<Output = ()> + use<F>
    where
        F: Future<Output = ()>,
    {
        let inner = Arc::downgrade(&self.inner);
        let guarded = Guarded::new(Box::pin(fut), self.inner.shared.clone(), "tracked task");
        async move {
            if guarded.await.is_err()
                && let Some(inner) = inner.upgrade()
            {
                inner.stop_owner_after_panic();
            }
        }
        .instrument(self.inner.span.clone())
    }

    /// The owner's id.
    #[must_use]
    pub fn owner(&self) -> ResourceId {
        self.inner.owner
    }

    /// Spawns `fut` on the current actix arbiter (it may be `!Send`), owned by this tracker.
    ///
    /// # Errors
    /// [`Error::OwnerStopping`] once the owner has begun to stop.
    ///
    /// # Panics
    /// When called outside an actix arbiter or a tokio `LocalSet` (as `actix_rt::spawn` does).
    pub fn spawn<F>(&self, fut: F) -> Result<()>
    where
        F: Future<Output = ()> + 'static,
    {
        let guard = self.prepare(HandleKind::Task)?;
        let key = guard.key;
        let fut = self.owned(fut);
        #[allow(clippy::disallowed_methods)]
        // this is the tracker: the task is registered to its owner
        let handle = actix_rt::spawn(async move {
            let _guard = guard;
            fut.await;
        });
        self.record(key, &handle);
        Ok(())
    }

    /// Spawns a `Send` future on another runtime (e.g. tonic's), owned by this tracker.
    ///
    /// # Errors
    /// [`Error::OwnerStopping`] once the owner has begun to stop.
    pub fn spawn_on<F>(&self, runtime: &tokio::runtime::Handle, fut: F) -> Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let guard = self.prepare(HandleKind::Task)?;
        let key = guard.key;
        let fut = self.owned(fut);
        #[allow(clippy::disallowed_methods)]
        // this is the tracker: the task is registered to its owner, and aborted when it stops
        let handle = runtime.spawn(async move {
            let _guard = guard;
            fut.await;
        });
        self.record(key, &handle);
        Ok(())
    }

    /// Runs `fut` after `delay` on the current arbiter; counted as a timer until it has run or
    /// the owner stops.
    ///
    /// # Errors
    /// [`Error::OwnerStopping`] once the owner has begun to stop.
    ///
    /// # Panics
    /// As [`Tracker::spawn`].
    pub fn timer<F>(&self, delay: Duration, fut: F) -> Result<()>
    where
        F: Future<Output = ()> + 'static,
    {
        let guard = self.prepare(HandleKind::Timer)?;
        let key = guard.key;
        let fut = self.owned(async move {
            tokio::time::sleep(delay).await;
            fut.await;
        });
        #[allow(clippy::disallowed_methods)]
        // this is the tracker: the task is registered to its owner
        let handle = actix_rt::spawn(async move {
            let _guard = guard;
            fut.await;
        });
        self.record(key, &handle);
        Ok(())
    }

    /// Tasks and timers alive now.
    #[must_use]
    pub fn live_tasks(&self) -> usize {
        lock(&self.inner.tasks).len()
    }

    /// Child processes alive (not yet reaped) now.
    #[must_use]
    pub fn live_processes(&self) -> usize {
        lock(&self.inner.processes).len()
    }

    /// Whether [`Tracker::shutdown`] has begun.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// Stops everything this tracker owns and refuses new work: each child process group gets
    /// SIGTERM, then SIGKILL once `grace` has passed (at most), and is reaped; then every task
    /// and timer is aborted. Returns how many process groups had to be SIGKILLed.
    ///
    /// # Cancel safety
    /// Not cancel-safe: dropped midway, the tracker stays closed and what it has not stopped yet
    /// is killed and aborted at once when its owner's context drops.
    pub async fn shutdown(&self, grace: Duration) -> usize {
        self.inner.closed.store(true, Ordering::Release);
        let forced = process::terminate_all(&self.inner, grace).await;
        self.inner.abort_tasks();
        forced
    }

    /// Closes the tracker at once: refuses new work, SIGKILLs every process group and aborts
    /// every task and timer. Used when the owner goes without a graceful stop.
    pub(crate) fn close_now(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.abort_tasks();
        process::kill_all_now(&self.inner);
    }

    fn prepare(&self, kind: HandleKind) -> Result<HandleGuard> {
        if self.is_closed() {
            return Err(Error::OwnerStopping(self.inner.owner));
        }
        Ok(HandleGuard::new(
            &self.inner.registry,
            self.inner.owner,
            &self.inner.shared,
            kind,
            Some(Arc::downgrade(&self.inner)),
        ))
    }

    fn record<T>(&self, key: u64, handle: &tokio::task::JoinHandle<T>) {
        let mut tasks = lock(&self.inner.tasks);
        // a task on another runtime may already have finished and dropped its guard
        if !handle.is_finished() {
            tasks.insert(key, handle.abort_handle());
        }
        // the tracker may have been shut down meanwhile: nothing may outlive it
        if self.is_closed() {
            handle.abort();
        }
    }
}

impl TrackerInner {
    /// A task of this owner panicked (already logged in the owner's span, the owner marked as
    /// panicked): have the owner stopped with [`ExitReason::Panic`], once per incarnation.
    fn stop_owner_after_panic(&self) {
        if !self.shared.request_stop(STOP) {
            return;
        }
        tracing::warn!(parent: &self.span, "a tracked task panicked; stopping its owner");
        match &self.port.supervisor {
            Some((tx, incarnation)) => {
                let _ = tx.send(Notice::Stop {
                    id: self.owner,
                    incarnation: Some(*incarnation),
                    reason: ExitReason::Panic,
                    terminate: false,
                });
            }
            None => {
                if let Some(stop) = self.port.direct.get().and_then(WeakRecipient::upgrade) {
                    // an unsupervised owner (tools, tests): a full mailbox means it is busy
                    // and gets no deadline; supervised owners always have one
                    let _ = stop.try_send(StopResource { reason: ExitReason::Panic });
                }
            }
        }
    }

    fn abort_tasks(&self) {
        let tasks: Vec<AbortHandle> = lock(&self.tasks).drain().map(|(_, h)| h).collect();
        for t in tasks {
            t.abort();
        }
    }
}

impl Drop for TrackerInner {
    fn drop(&mut self) {
        // the owner went without a graceful stop (panic, kill): nothing it started may outlive it
        self.abort_tasks();
        process::kill_all_now(self);
    }
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker")
            .field("owner", &self.inner.owner)
            .field("tasks", &self.live_tasks())
            .field("processes", &self.live_processes())
            .finish()
    }
}

/// A task its owner could not spawn through its tracker (it runs on another thread, such as an
/// HTTP worker's pump feeding a socket), counted as one of the owner's tasks while this guard
/// lives. See [`CountedTask::for_owner`].
pub struct CountedTask(#[allow(dead_code)] HandleGuard);

impl std::fmt::Debug for CountedTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountedTask").field("key", &self.0.key).finish()
    }
}

impl CountedTask {
    /// Counts a task that live resource `owner` owns but could not start through its
    /// [`Tracker`] (it runs on another thread, e.g. an edge's pump feeding a socket from an HTTP
    /// worker): it is counted in `owner`'s entry and the handle table until the guard drops. The
    /// task must end when its owner goes; one that outlives it is counted as an orphan by the
    /// leak watchdog. `None` when `owner` is not live.
    #[must_use]
    pub fn for_owner(registry: &Registry, owner: ResourceId) -> Option<Self> {
        let shared = registry.shared_of(owner)?;
        Some(Self(HandleGuard::new(registry, owner, &shared, HandleKind::Task, None)))
    }
}

/// Counts one tracked handle while it lives: in the owner's registry entry, in the registry's
/// handle table and in the owning tracker's map. Dropped with the task, timer or process waiter.
pub(crate) struct HandleGuard {
    key: u64,
    kind: HandleKind,
    registry: Registry,
    shared: Arc<EntryShared>,
    tracker: Option<Weak<TrackerInner>>,
}

impl HandleGuard {
    pub(crate) fn new(
        registry: &Registry,
        owner: ResourceId,
        shared: &Arc<EntryShared>,
        kind: HandleKind,
        tracker: Option<Weak<TrackerInner>>,
    ) -> Self {
        counter(shared, kind).fetch_add(1, Ordering::Relaxed);
        let key = registry.insert_handle(owner, kind);
        Self { key, kind, registry: registry.clone(), shared: shared.clone(), tracker }
    }
}

impl Drop for HandleGuard {
    fn drop(&mut self) {
        counter(&self.shared, self.kind).fetch_sub(1, Ordering::Relaxed);
        self.registry.remove_handle(self.key);
        if let Some(inner) = self.tracker.as_ref().and_then(Weak::upgrade) {
            lock(&inner.tasks).remove(&self.key);
        }
    }
}

fn counter(shared: &EntryShared, kind: HandleKind) -> &AtomicU32 {
    match kind {
        HandleKind::Task => &shared.tasks,
        HandleKind::Timer => &shared.timers,
        HandleKind::Process => &shared.processes,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
