//! The registry of every live resource.
//!
//! One entry per resource slot: id, kind, name, tenant, parent, state, start time, last activity,
//! restarts, last exit reason and the counts of the timers, tasks and processes it owns. It holds
//! only weak addresses (`WeakRecipient`), abort handles and supervisors' inboxes, so it never
//! keeps an actor alive. Stopped entries move to a bounded list kept for `stopped_retention`.
//!
//! It is data: it does not act on what it holds. Stopping, restarting and killing a resource by
//! id is the supervisor side's work (`crate::supervisor::Control`), and this module imports no
//! supervisor module (checked by `architecture::the_registry_does_not_know_the_supervisor`).
//!
//! The registry also owns the resource event stream, the per-kind counters exported as metrics,
//! the table of tracked handles (for the watchdog's orphan count) and the system-wide
//! shutting-down flag that stops supervisors from restarting anything.

mod entry;
#[cfg(test)]
mod tests;

pub(crate) use entry::{DeferredExit, STOP, TERMINATE};
pub use entry::{EntryShared, ResourceInfo};

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use actix::WeakRecipient;
use futures_util::future::AbortHandle;
use steward_config::{IdleConfig, RegistryConfig};
use tokio::sync::{Notify, broadcast};

use crate::messages::{NoticeSender, StopResource};
use crate::{EventKind, ExitReason, LifecycleState, ResourceEvent, ResourceId, ResourceKind};

const EVENT_CAPACITY: usize = 1024;

/// Shared handle to the registry; cheap to clone.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    live: Mutex<HashMap<ResourceId, Entry>>,
    /// Live resources per tenant and kind (only tenants with at least one).
    tenants: Mutex<HashMap<Arc<str>, [u64; ResourceKind::COUNT]>>,
    stopped: Mutex<VecDeque<ResourceInfo>>,
    kinds: [KindCounters; ResourceKind::COUNT],
    events: broadcast::Sender<ResourceEvent>,
    handles: Mutex<HashMap<u64, HandleRecord>>,
    handle_seq: AtomicU64,
    changed: Notify,
    shutting_down: AtomicBool,
    config: RegistryConfig,
    idle: [Option<Duration>; ResourceKind::COUNT],
    epoch: Instant,
    epoch_system: SystemTime,
}

/// Per-kind lifetime counters (monotonic) and the live gauge.
#[derive(Default)]
struct KindCounters {
    live: AtomicU64,
    started: AtomicU64,
    stopped: AtomicU64,
    restarted: AtomicU64,
    failed: AtomicU64,
    killed: AtomicU64,
    restart_pending: AtomicU64,
}

/// A count per resource kind, in [`ResourceKind::ALL`] order.
pub type KindCounts = [(ResourceKind, u64); ResourceKind::COUNT];

/// Per-kind counters, as read at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KindStats {
    /// Live resources (registered and not yet stopped).
    pub live: u64,
    /// Resources started since boot (restarts included).
    pub started: u64,
    /// Resources that left the registry since boot.
    pub stopped: u64,
    /// Restarts scheduled since boot.
    pub restarted: u64,
    /// Abnormal exits since boot.
    pub failed: u64,
    /// Incarnations killed since boot: their task was aborted because they had not stopped by
    /// their deadline (a child's `shutdown`, a shutdown phase's deadline) — the forced stops.
    pub killed: u64,
    /// Slots waiting out a restart backoff now.
    pub restart_pending: u64,
}

struct Entry {
    info: ResourceInfoStatic,
    shared: Arc<EntryShared>,
    stop: Option<WeakRecipient<StopResource>>,
    abort: Option<AbortHandle>,
    /// A supervisor's inbox (`None` for other resources).
    port: Option<NoticeSender>,
}

/// How to reach a live resource and its supervisor; see [`Registry::route`].
pub(crate) struct Route {
    pub(crate) kind: ResourceKind,
    pub(crate) shared: Arc<EntryShared>,
    pub(crate) is_supervisor: bool,
    pub(crate) parent_port: Option<NoticeSender>,
    pub(crate) stop: Option<WeakRecipient<StopResource>>,
    pub(crate) abort: Option<AbortHandle>,
}

/// The parts of an entry that do not change while it lives.
struct ResourceInfoStatic {
    kind: ResourceKind,
    name: Arc<str>,
    tenant: Option<Arc<str>>,
    parent: Option<ResourceId>,
    started_at: SystemTime,
}

/// What a tracked handle is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandleKind {
    /// A task.
    Task,
    /// A timer (a task that sleeps first, or a context timer).
    Timer,
    /// A child process (its waiter).
    Process,
}

#[derive(Debug, Clone, Copy)]
struct HandleRecord {
    owner: ResourceId,
    kind: HandleKind,
}

/// Counts of tracked handles across the process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandleCounts {
    /// Live tracked tasks.
    pub tasks: u64,
    /// Live tracked timers.
    pub timers: u64,
    /// Live tracked child processes.
    pub processes: u64,
    /// Handles whose owner is no longer in the live registry.
    pub orphans: u64,
}

/// Filter of [`Registry::list`]; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct ResourceFilter {
    /// Only this kind.
    pub kind: Option<ResourceKind>,
    /// Only this tenant.
    pub tenant: Option<String>,
    /// Only this state; `Stopped` lists the recently stopped entries.
    pub state: Option<LifecycleState>,
}

/// What [`Registry::register`] needs to know about a new resource.
#[derive(Debug, Clone)]
pub struct Registration {
    /// Its kind.
    pub kind: ResourceKind,
    /// A human name (the child spec's name).
    pub name: Arc<str>,
    /// Owning tenant, if any.
    pub tenant: Option<Arc<str>>,
    /// Its supervisor, if any.
    pub parent: Option<ResourceId>,
}

impl Registry {
    /// A new, empty registry. `idle` gives the idle timeout per kind (zero = none).
    #[must_use]
    pub fn new(config: RegistryConfig, idle: &IdleConfig) -> Self {
        let idle_of = |d: Duration| (!d.is_zero()).then_some(d);
        let idle = [
            idle_of(idle.browser),
            idle_of(idle.session),
            idle_of(idle.producer),
            idle_of(idle.consumer),
            idle_of(idle.socket),
            idle_of(idle.peer),
            idle_of(idle.stream),
            // a room owns its timeouts (`[rtc] empty_timeout`, `departure_timeout`)
            None,
            idle_of(idle.service),
        ];
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        Self {
            inner: Arc::new(Inner {
                live: Mutex::new(HashMap::new()),
                tenants: Mutex::new(HashMap::new()),
                stopped: Mutex::new(VecDeque::new()),
                kinds: Default::default(),
                events,
                handles: Mutex::new(HashMap::new()),
                handle_seq: AtomicU64::new(1),
                changed: Notify::new(),
                shutting_down: AtomicBool::new(false),
                config,
                idle,
                epoch: Instant::now(),
                epoch_system: SystemTime::now(),
            }),
        }
    }

    /// A registry with the documented defaults (for tests and benches).
    #[must_use]
    pub fn with_defaults() -> Self {
        let c = steward_config::Config::defaults();
        Self::new(c.registry, &c.idle)
    }

    /// The idle timeout configured for `kind`, if any.
    #[must_use]
    pub fn idle_timeout(&self, kind: ResourceKind) -> Option<Duration> {
        self.inner.idle[kind.index()]
    }

    /// Adds an entry in state `starting` and returns its id and shared state.
    pub fn register(&self, reg: Registration) -> (ResourceId, Arc<EntryShared>) {
        let id = ResourceId::next();
        let shared = Arc::new(EntryShared::new(self.now_ms()));
        let entry = Entry {
            info: ResourceInfoStatic {
                kind: reg.kind,
                name: reg.name,
                tenant: reg.tenant,
                parent: reg.parent,
                started_at: SystemTime::now(),
            },
            shared: shared.clone(),
            stop: None,
            abort: None,
            port: None,
        };
        if let Some(tenant) = &entry.info.tenant {
            let mut tenants = self.lock_tenants();
            tenants.entry(tenant.clone()).or_default()[reg.kind.index()] += 1;
        }
        self.lock_live().insert(id, entry);
        self.inner.kinds[reg.kind.index()].live.fetch_add(1, Ordering::Relaxed);
        (id, shared)
    }

    /// Records the running incarnation of `id`: its weak stop recipient and the abort handle of
    /// its actor task; moves it to `running` and emits `Started`.
    pub fn attach(&self, id: ResourceId, stop: WeakRecipient<StopResource>, abort: AbortHandle) {
        let event = {
            let mut live = self.lock_live();
            let Some(entry) = live.get_mut(&id) else { return };
            entry.stop = Some(stop);
            entry.abort = Some(abort);
            entry.shared.set_state(LifecycleState::Running);
            entry.shared.touch(self.now_ms());
            self.inner.kinds[entry.info.kind.index()].started.fetch_add(1, Ordering::Relaxed);
            Self::event_for(id, entry, EventKind::Started, None)
        };
        self.emit(event);
    }

    /// Marks `id` as a supervisor with inbox `port`, through which stop and restart requests for
    /// its children go (`crate::supervisor::Control`).
    pub(crate) fn attach_port(&self, id: ResourceId, port: NoticeSender) {
        if let Some(entry) = self.lock_live().get_mut(&id) {
            entry.port = Some(port);
        }
    }

    /// Clears the handles of an incarnation that exited (the slot may be restarted).
    pub(crate) fn detach(&self, id: ResourceId) {
        if let Some(entry) = self.lock_live().get_mut(&id) {
            entry.stop = None;
            entry.abort = None;
        }
    }

    /// Moves `id` to `state`, if the state machine allows it.
    pub fn set_state(&self, id: ResourceId, state: LifecycleState) {
        if let Some(entry) = self.lock_live().get(&id) {
            entry.shared.set_state(state);
        }
    }

    /// Counts a scheduled restart of `id` and emits `Restarted`.
    pub(crate) fn record_restart(
        &self,
        id: ResourceId,
        reason: &ExitReason,
        attempt: u32,
        delay: Duration,
    ) {
        let event = {
            let live = self.lock_live();
            let Some(entry) = live.get(&id) else { return };
            entry.shared.restarts.fetch_add(1, Ordering::Relaxed);
            entry.shared.set_state(LifecycleState::Restarting);
            let counters = &self.inner.kinds[entry.info.kind.index()];
            counters.restarted.fetch_add(1, Ordering::Relaxed);
            if reason.is_abnormal() {
                counters.failed.fetch_add(1, Ordering::Relaxed);
            }
            let mut ev = Self::event_for(id, entry, EventKind::Restarted, Some(reason.clone()));
            ev.restart_attempt = attempt;
            ev.restart_delay = delay;
            ev
        };
        self.emit(event);
    }

    pub(crate) fn restart_pending(&self, kind: ResourceKind, pending: bool) {
        let c = &self.inner.kinds[kind.index()].restart_pending;
        if pending {
            c.fetch_add(1, Ordering::Relaxed);
        } else {
            c.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Emits `Escalated` for supervisor `id`.
    pub(crate) fn record_escalation(&self, id: ResourceId, reason: &ExitReason) {
        let event = {
            let live = self.lock_live();
            let Some(entry) = live.get(&id) else { return };
            Self::event_for(id, entry, EventKind::Escalated, Some(reason.clone()))
        };
        self.emit(event);
    }

    /// Removes `id` for good: records `reason`, moves the entry to the stopped list and emits
    /// `Stopped`. Unknown ids are ignored (removal is idempotent).
    pub fn remove(&self, id: ResourceId, reason: &ExitReason) {
        let Some(entry) = self.lock_live().remove(&id) else { return };
        if let Some(tenant) = &entry.info.tenant {
            let mut tenants = self.lock_tenants();
            if let Some(counts) = tenants.get_mut(tenant) {
                let n = &mut counts[entry.info.kind.index()];
                *n = n.saturating_sub(1);
                if counts.iter().all(|n| *n == 0) {
                    tenants.remove(tenant);
                }
            }
        }
        let counters = &self.inner.kinds[entry.info.kind.index()];
        counters.live.fetch_sub(1, Ordering::Relaxed);
        counters.stopped.fetch_add(1, Ordering::Relaxed);
        if reason.is_abnormal() {
            counters.failed.fetch_add(1, Ordering::Relaxed);
        }
        entry.shared.set_last_exit(reason.clone());
        entry.shared.set_state(LifecycleState::Stopped);
        let now = SystemTime::now();
        let mut info = self.info_of(id, &entry);
        info.stopped_at = Some(now);
        let event = Self::event_for(id, &entry, EventKind::Stopped, Some(reason.clone()));
        drop(entry);
        {
            let mut stopped = self.lock_stopped();
            stopped.push_back(info);
            self.prune_stopped(&mut stopped, now);
        }
        self.emit(event);
        self.inner.changed.notify_waiters();
    }

    fn prune_stopped(&self, stopped: &mut VecDeque<ResourceInfo>, now: SystemTime) {
        let retention = self.inner.config.stopped_retention;
        while stopped.len() > self.inner.config.stopped_capacity
            || stopped.front().is_some_and(|i| {
                i.stopped_at.is_some_and(|t| now.duration_since(t).unwrap_or_default() > retention)
            })
        {
            stopped.pop_front();
        }
    }

    /// Whether `id` is live.
    #[must_use]
    pub fn contains(&self, id: ResourceId) -> bool {
        self.lock_live().contains_key(&id)
    }

    /// A snapshot of `id`: live, or recently stopped.
    #[must_use]
    pub fn get(&self, id: ResourceId) -> Option<ResourceInfo> {
        if let Some(entry) = self.lock_live().get(&id) {
            return Some(self.info_of(id, entry));
        }
        self.lock_stopped().iter().rev().find(|i| i.id == id).cloned()
    }

    /// Snapshots matching `filter`, ordered by id, starting after `after`, at most `limit`.
    /// Returns them and the id to pass as `after` for the next page, if there is one.
    #[must_use]
    pub fn list(
        &self,
        filter: &ResourceFilter,
        after: Option<ResourceId>,
        limit: usize,
    ) -> (Vec<ResourceInfo>, Option<ResourceId>) {
        let matches = |i: &ResourceInfo| {
            filter.kind.is_none_or(|k| k == i.kind)
                && filter.tenant.as_deref().is_none_or(|t| i.tenant.as_deref() == Some(t))
                && filter.state.is_none_or(|s| s == i.state)
                && after.is_none_or(|a| i.id > a)
        };
        let mut all: Vec<ResourceInfo> = if filter.state == Some(LifecycleState::Stopped) {
            let mut stopped = self.lock_stopped();
            self.prune_stopped(&mut stopped, SystemTime::now());
            stopped.iter().filter(|i| matches(i)).cloned().collect()
        } else {
            let live = self.lock_live();
            live.iter().map(|(id, e)| self.info_of(*id, e)).filter(|i| matches(i)).collect()
        };
        all.sort_by_key(|i| i.id);
        let next = if limit > 0 && all.len() > limit { Some(all[limit - 1].id) } else { None };
        all.truncate(limit);
        (all, next)
    }

    /// Ids of the live resources of the given kinds.
    #[must_use]
    pub fn ids_of(&self, kinds: &[ResourceKind]) -> Vec<ResourceId> {
        self.lock_live()
            .iter()
            .filter(|(_, e)| kinds.contains(&e.info.kind))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Live resources of the given kinds.
    #[must_use]
    pub fn count_of(&self, kinds: &[ResourceKind]) -> u64 {
        kinds.iter().map(|k| self.inner.kinds[k.index()].live.load(Ordering::Relaxed)).sum()
    }

    /// Live resources of `tenant` per kind, in [`ResourceKind::ALL`] order (all zero for a
    /// tenant that owns nothing). O(1): kept up to date on register and remove.
    #[must_use]
    pub fn tenant_usage(&self, tenant: &str) -> [(ResourceKind, u64); ResourceKind::COUNT] {
        let counts = self.lock_tenants().get(tenant).copied().unwrap_or_default();
        ResourceKind::ALL.map(|k| (k, counts[k.index()]))
    }

    /// Live resources per kind of every tenant that owns at least one, sorted by tenant.
    #[must_use]
    pub fn tenants_usage(&self) -> Vec<(Arc<str>, KindCounts)> {
        let mut all: Vec<_> = self
            .lock_tenants()
            .iter()
            .map(|(t, counts)| (t.clone(), ResourceKind::ALL.map(|k| (k, counts[k.index()]))))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Ids of the live resources owned by `tenant` (a scan of the live table: for rare admin
    /// operations such as deleting a tenant).
    #[must_use]
    pub fn ids_of_tenant(&self, tenant: &str) -> Vec<ResourceId> {
        let mut ids: Vec<ResourceId> = self
            .lock_live()
            .iter()
            .filter(|(_, e)| e.info.tenant.as_deref() == Some(tenant))
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Total live resources.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock_live().len()
    }

    /// Whether no resource is live.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Per-kind counters, in [`ResourceKind::ALL`] order.
    #[must_use]
    pub fn kind_stats(&self) -> [(ResourceKind, KindStats); ResourceKind::COUNT] {
        ResourceKind::ALL.map(|k| {
            let c = &self.inner.kinds[k.index()];
            (
                k,
                KindStats {
                    live: c.live.load(Ordering::Relaxed),
                    started: c.started.load(Ordering::Relaxed),
                    stopped: c.stopped.load(Ordering::Relaxed),
                    restarted: c.restarted.load(Ordering::Relaxed),
                    failed: c.failed.load(Ordering::Relaxed),
                    killed: c.killed.load(Ordering::Relaxed),
                    restart_pending: c.restart_pending.load(Ordering::Relaxed),
                },
            )
        })
    }

    /// Subscribes to the resource event stream.
    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<ResourceEvent> {
        self.inner.events.subscribe()
    }

    /// Records activity of `id` now (idle timeouts are measured from it).
    pub fn touch(&self, id: ResourceId) {
        if let Some(e) = self.lock_live().get(&id) {
            e.shared.touch(self.now_ms());
        }
    }

    /// What the supervisor side needs to stop, restart or kill `id`: its shared state, its
    /// parent's inbox, its own stop recipient and abort handle. `None` when `id` is not live.
    pub(crate) fn route(&self, id: ResourceId) -> Option<Route> {
        let live = self.lock_live();
        let entry = live.get(&id)?;
        Some(Route {
            kind: entry.info.kind,
            shared: entry.shared.clone(),
            is_supervisor: entry.port.is_some(),
            parent_port: entry.info.parent.and_then(|p| live.get(&p)).and_then(|p| p.port.clone()),
            stop: entry.stop.clone(),
            abort: entry.abort.clone(),
        })
    }

    /// Waits until none of `kinds` is live, or `deadline` passes. Returns whether they are gone.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only waits.
    pub async fn wait_none_of(&self, kinds: &[ResourceKind], deadline: Instant) -> bool {
        loop {
            let notified = self.inner.changed.notified();
            if self.count_of(kinds) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline.into(), notified).await.is_err() {
                return self.count_of(kinds) == 0;
            }
        }
    }

    /// Waits until `id` has left the live registry, or `deadline` passes. Returns whether it did.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only waits.
    pub async fn wait_gone(&self, id: ResourceId, deadline: Instant) -> bool {
        loop {
            let notified = self.inner.changed.notified();
            if !self.contains(id) {
                return true;
            }
            if tokio::time::timeout_at(deadline.into(), notified).await.is_err() {
                return !self.contains(id);
            }
        }
    }

    /// Counts a forced stop of a resource of `kind` (see [`KindStats::killed`]).
    pub(crate) fn count_kill(&self, kind: ResourceKind) {
        self.inner.kinds[kind.index()].killed.fetch_add(1, Ordering::Relaxed);
    }

    /// The shared state of live `id` (for handles counted outside a tracker).
    pub(crate) fn shared_of(&self, id: ResourceId) -> Option<Arc<EntryShared>> {
        self.lock_live().get(&id).map(|e| e.shared.clone())
    }

    /// Turns restarts off for good: from now on supervisors let exited children go.
    pub fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Whether [`Registry::begin_shutdown`] was called.
    #[must_use]
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::SeqCst)
    }

    // ---- tracked handles -------------------------------------------------------------------

    pub(crate) fn insert_handle(&self, owner: ResourceId, kind: HandleKind) -> u64 {
        let id = self.inner.handle_seq.fetch_add(1, Ordering::Relaxed);
        lock(&self.inner.handles).insert(id, HandleRecord { owner, kind });
        id
    }

    pub(crate) fn remove_handle(&self, id: u64) {
        lock(&self.inner.handles).remove(&id);
    }

    /// Counts tracked handles by kind, and those whose owner is no longer live (orphans).
    #[must_use]
    pub fn handle_counts(&self) -> HandleCounts {
        let records: Vec<HandleRecord> = lock(&self.inner.handles).values().copied().collect();
        let live = self.lock_live();
        let mut c = HandleCounts::default();
        for r in records {
            match r.kind {
                HandleKind::Task => c.tasks += 1,
                HandleKind::Timer => c.timers += 1,
                HandleKind::Process => c.processes += 1,
            }
            if !live.contains_key(&r.owner) {
                c.orphans += 1;
            }
        }
        c
    }

    // ---- internals -------------------------------------------------------------------------

    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.inner.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub(crate) fn system_time_of(&self, ms: u64) -> SystemTime {
        self.inner.epoch_system + Duration::from_millis(ms)
    }

    pub(crate) fn instant_of(&self, ms: u64) -> Instant {
        self.inner.epoch + Duration::from_millis(ms)
    }

    fn info_of(&self, id: ResourceId, e: &Entry) -> ResourceInfo {
        let s = &e.shared;
        ResourceInfo {
            id,
            kind: e.info.kind,
            name: e.info.name.clone(),
            tenant: e.info.tenant.clone(),
            parent: e.info.parent,
            state: s.state(),
            started_at: e.info.started_at,
            last_activity_at: self.system_time_of(s.last_activity_ms()),
            restarts: s.restarts.load(Ordering::Relaxed),
            last_exit: s.last_exit(),
            tasks: s.tasks.load(Ordering::Relaxed),
            timers: s.timers.load(Ordering::Relaxed),
            processes: s.processes.load(Ordering::Relaxed),
            is_supervisor: e.port.is_some(),
            stopped_at: None,
        }
    }

    fn event_for(
        id: ResourceId,
        e: &Entry,
        event: EventKind,
        exit_reason: Option<ExitReason>,
    ) -> ResourceEvent {
        ResourceEvent {
            event,
            id,
            kind: e.info.kind,
            tenant: e.info.tenant.clone(),
            parent: e.info.parent,
            exit_reason,
            restart_attempt: 0,
            restart_delay: Duration::ZERO,
            at: SystemTime::now(),
        }
    }

    fn emit(&self, event: ResourceEvent) {
        // no subscriber is fine: the stream is best-effort by design
        let _ = self.inner.events.send(event);
    }

    fn lock_live(&self) -> MutexGuard<'_, HashMap<ResourceId, Entry>> {
        lock(&self.inner.live)
    }

    fn lock_tenants(&self) -> MutexGuard<'_, HashMap<Arc<str>, [u64; ResourceKind::COUNT]>> {
        lock(&self.inner.tenants)
    }

    fn lock_stopped(&self) -> MutexGuard<'_, VecDeque<ResourceInfo>> {
        lock(&self.inner.stopped)
    }
}

/// Locks a mutex, recovering from poisoning: registry data stays consistent under a panic
/// because every critical section is a single map operation.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("live", &self.len()).finish_non_exhaustive()
    }
}
