//! Supervisors: child specs with factories, restart types, strategies, restart intensity and
//! backoff, as in OTP's `supervisor` and Elixir's `DynamicSupervisor`
//! (<https://www.erlang.org/doc/system/sup_princ.html>).
//!
//! actix's own `Supervisor` is not used: it re-polls the stopped actor object instead of building a
//! fresh one and has no limit, backoff or strategy (see the field notes). Here a restart always
//! calls the child's factory again, so stale state is never reused.
//!
//! Children run on the supervisor's arbiter, spawned by the supervisor itself so it holds their
//! abort handles. Every stop of a child is bounded (`stop.rs`): a child that misses its shutdown
//! deadline is killed (its task aborted, its lifeline reports [`crate::ExitReason::Killed`]).
//! Requests by resource id go through [`Control`]; children, their trackers and `Control` reach
//! a supervisor through its inbox (unbounded, at most a few notices per child incarnation).

mod actor;
mod control;
mod handlers;
mod messages;
mod policy;
mod stop;
#[cfg(test)]
mod tests;

pub use control::Control;
pub use messages::{
    ChildInfo, RestartChild, StartChild, StartedChild, StopWithin, TerminateChild, WhichChildren,
};
pub use policy::{Backoff, RestartIntensity, RestartType};

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::future::AbortHandle;
use steward_config::SupervisorConfig;
use tokio::sync::{mpsc, oneshot};

use crate::lifeline::{ExitNotify, catch};
use crate::messages::{Notice, NoticeSender, StopResource};
use crate::registry::{EntryShared, Registration, Registry};
use crate::resource::arm_idle_timer;
use crate::{
    ArbiterPool, Error, ExitReason, Resource, ResourceCtx, ResourceId, ResourceKind, Result,
};

/// Mailbox capacity of a child placed on a pool's arbiter (actix's default for `Context::new`).
const MAILBOX_CAPACITY: usize = 16;

/// How a supervisor reacts to a child's exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Only the exited child is restarted.
    OneForOne,
    /// All children are stopped (reverse start order) and restarted (start order).
    OneForAll,
    /// One-for-one over children added at run time, stopped all at once (not in order) on
    /// shutdown; `max_children` caps admission (Elixir's `DynamicSupervisor`).
    Dynamic,
}

impl Strategy {
    /// Lowercase name (`one_for_one`, `one_for_all`, `dynamic`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OneForOne => "one_for_one",
            Self::OneForAll => "one_for_all",
            Self::Dynamic => "dynamic",
        }
    }
}

type StartFn = dyn Fn(ResourceCtx) -> std::result::Result<Started, String> + Send + Sync;

pub(crate) struct Started {
    stop: Recipient<StopResource>,
    abort: AbortHandle,
    addr: Box<dyn Any + Send>,
}

/// How to build (and rebuild) one child: its identity, restart type, shutdown deadline and the
/// factory that makes a fresh actor from a [`ResourceCtx`]. Cheap to clone.
#[derive(Clone)]
pub struct ChildSpec {
    name: Arc<str>,
    kind: ResourceKind,
    tenant: Option<Arc<str>>,
    restart: RestartType,
    shutdown: Option<Duration>,
    start: Arc<StartFn>,
    #[allow(dead_code)] // never read: held for its `Drop` (see `ChildSpec::hold`)
    hold: Option<Arc<dyn Any + Send + Sync>>,
}

impl ChildSpec {
    /// A child built by `factory`; [`RestartType::Permanent`] and the supervisor's default
    /// shutdown deadline unless changed. The factory runs on the supervisor's arbiter every time
    /// the child (re)starts; an `Err` or a panic is a failed start (the supervisor and its other
    /// children live on; a failed restart counts toward the restart intensity).
    pub fn new<A, F, E>(name: impl Into<Arc<str>>, kind: ResourceKind, factory: F) -> Self
    where
        A: Resource,
        F: Fn(ResourceCtx) -> std::result::Result<A, E> + Send + Sync + 'static,
        E: fmt::Display,
    {
        let start = move |rcx: ResourceCtx| {
            let mut ctx = Context::<A>::new();
            let addr = ctx.address();
            rcx.bind(&addr);
            arm_idle_timer(&rcx, &mut ctx);
            let (shared, span) = (rcx.shared().clone(), rcx.span());
            // a panicking factory is a failed start, as an exception in an OTP start function
            // is; its context (moved into the factory) reports nothing the supervisor will use
            let actor = match catch(|| factory(rcx)) {
                Ok(Ok(actor)) => actor,
                Ok(Err(e)) => return Err(e.to_string()),
                Err(panic) => return Err(format!("factory panicked: {panic}")),
            };
            let abort = ResourceCtx::spawn_actor(ctx, actor, shared, span);
            Ok(Started { stop: addr.clone().recipient(), abort, addr: Box::new(addr) })
        };
        Self::with_start(name.into(), kind, Arc::new(start))
    }

    /// As [`ChildSpec::new`], but the actor runs on an arbiter of `pool` (the next one, in turn,
    /// at every start) instead of on the supervisor's: the factory still runs on the
    /// supervisor's arbiter (so a failed start is reported as with [`ChildSpec::new`]), then the
    /// actor moves to its arbiter, where its context, timers and the tasks it starts live. Its
    /// address, stop and abort work from any thread, as ever.
    pub fn new_in<A, F, E>(
        name: impl Into<Arc<str>>,
        kind: ResourceKind,
        pool: &ArbiterPool,
        factory: F,
    ) -> Self
    where
        A: Resource + Send,
        F: Fn(ResourceCtx) -> std::result::Result<A, E> + Send + Sync + 'static,
        E: fmt::Display,
    {
        let pool = pool.clone();
        let start = move |rcx: ResourceCtx| {
            let (tx, mailbox) = actix::dev::channel::channel::<A>(MAILBOX_CAPACITY);
            let addr = Addr::new(tx);
            rcx.bind(&addr);
            let (shared, span) = (rcx.shared().clone(), rcx.span());
            let actor = match catch(|| factory(rcx)) {
                Ok(Ok(actor)) => actor,
                Ok(Err(e)) => return Err(e.to_string()),
                Err(panic) => return Err(format!("factory panicked: {panic}")),
            };
            let abort = ResourceCtx::spawn_actor_on(&pool.next(), mailbox, actor, shared, span)?;
            Ok(Started { stop: addr.clone().recipient(), abort, addr: Box::new(addr) })
        };
        Self::with_start(name.into(), kind, Arc::new(start))
    }

    /// A permanent child of `kind` started by `start`, with no tenant, guard or own deadline.
    fn with_start(name: Arc<str>, kind: ResourceKind, start: Arc<StartFn>) -> Self {
        Self {
            name,
            kind,
            tenant: None,
            restart: RestartType::Permanent,
            shutdown: None,
            start,
            hold: None,
        }
    }

    /// A nested supervisor as a child (kind `service`, permanent).
    #[must_use]
    pub fn supervisor(spec: SupervisorSpec) -> Self {
        Self::supervisor_in(spec, SupervisorCell::new())
    }

    /// A nested supervisor as a child whose current handle is published in `cell` each time it
    /// (re)starts, so edges that start children under it never hold a stale address.
    #[must_use]
    pub fn supervisor_in(spec: SupervisorSpec, cell: SupervisorCell) -> Self {
        let name = spec.name.clone();
        let start = move |rcx: ResourceCtx| {
            let ctx = Context::<Supervisor>::new();
            let addr = ctx.address();
            rcx.bind(&addr);
            let (shared, span) = (rcx.shared().clone(), rcx.span());
            let id = rcx.id();
            let actor = Supervisor::new(rcx, spec.clone(), None);
            cell.set(SupervisorHandle { id, addr: addr.clone() });
            let abort = ResourceCtx::spawn_actor(ctx, actor, shared, span);
            Ok(Started { stop: addr.clone().recipient(), abort, addr: Box::new(addr) })
        };
        Self::with_start(name, ResourceKind::Service, Arc::new(start))
    }

    /// Sets the restart type.
    #[must_use]
    pub fn restart(mut self, restart: RestartType) -> Self {
        self.restart = restart;
        self
    }

    /// Sets the owning tenant.
    #[must_use]
    pub fn tenant(mut self, tenant: impl Into<Arc<str>>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// Ties `guard` to the child's slot: it is dropped when the slot leaves its supervisor for
    /// good (after the last incarnation stopped, or when the start failed), not on a restart.
    /// Admission control uses it: a quota reservation held here is released exactly when the
    /// resource is gone. Clones of this spec share the guard; it drops with the last one.
    #[must_use]
    pub fn hold(mut self, guard: impl Any + Send + Sync) -> Self {
        self.hold = Some(Arc::new(guard));
        self
    }

    /// Sets the graceful stop deadline (OTP's child `shutdown`), after which it is killed.
    #[must_use]
    pub fn shutdown(mut self, deadline: Duration) -> Self {
        self.shutdown = Some(deadline);
        self
    }

    /// Its name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("restart", &self.restart)
            .finish_non_exhaustive()
    }
}

/// A supervisor's flags and its static children (started in order at start).
#[derive(Debug, Clone)]
pub struct SupervisorSpec {
    /// Its name in the registry.
    pub name: Arc<str>,
    /// Its strategy.
    pub strategy: Strategy,
    /// Restart intensity.
    pub intensity: RestartIntensity,
    /// Backoff between restarts.
    pub backoff: Backoff,
    /// Admission cap for children (static and dynamic); `None` = unbounded.
    pub max_children: Option<usize>,
    /// Default graceful stop deadline of its children.
    pub child_shutdown: Duration,
    /// Static children, started in this order and stopped in reverse.
    pub children: Vec<ChildSpec>,
}

impl SupervisorSpec {
    /// A spec with the policy from `[supervisor]` config and no children.
    #[must_use]
    pub fn from_config(
        name: impl Into<Arc<str>>,
        strategy: Strategy,
        config: &SupervisorConfig,
    ) -> Self {
        Self {
            name: name.into(),
            strategy,
            intensity: config.into(),
            backoff: config.into(),
            max_children: None,
            child_shutdown: config.child_shutdown,
            children: Vec::new(),
        }
    }

    /// Adds a static child.
    #[must_use]
    pub fn child(mut self, spec: ChildSpec) -> Self {
        self.children.push(spec);
        self
    }

    /// Adds static children in start order (a resource crate's group of services).
    #[must_use]
    pub fn children(mut self, specs: impl IntoIterator<Item = ChildSpec>) -> Self {
        self.children.extend(specs);
        self
    }

    /// Sets the admission cap.
    #[must_use]
    pub fn max_children(mut self, max: usize) -> Self {
        self.max_children = Some(max);
        self
    }
}

/// The supervisor actor. Other crates hold a [`SupervisorHandle`].
pub struct Supervisor {
    /// Its own resource context (it is a `service` resource under its parent).
    rcx: ResourceCtx,
    /// Flags and static children.
    spec: SupervisorSpec,
    /// Children by start sequence (start order = key order).
    slots: BTreeMap<u64, Slot>,
    /// Child id to start sequence.
    by_id: HashMap<ResourceId, u64>,
    next_seq: u64,
    /// Times of recent automatic restarts, for the restart intensity.
    restart_log: VecDeque<Instant>,
    /// Its inbox: lifelines, trackers, unclaimed starts and [`Control`] send [`Notice`]s here.
    port: NoticeSender,
    inbox: Option<mpsc::UnboundedReceiver<Notice>>,
    /// A stop of its children in progress (reverse start order, or all at once when dynamic).
    drain: Option<Drain>,
    /// Stopping for good (asked to, or escalating): nothing new starts.
    stopping: bool,
    /// A one-for-all restart round waiting out its backoff.
    round: Option<SpawnHandle>,
    /// Kill deadlines of children asked to stop: (deadline, start sequence), earliest first.
    kills: BTreeSet<(Instant, u64)>,
    /// The one timer, armed at the earliest kill deadline.
    kill_timer: Option<(Instant, SpawnHandle)>,
    /// Tells a root's starter whether the static children started.
    ready: Option<oneshot::Sender<Result<()>>>,
}

/// One child slot: its spec and, while it runs, its incarnation.
struct Slot {
    spec: ChildSpec,
    id: ResourceId,
    shared: Arc<EntryShared>,
    running: Option<Running>,
    incarnation: u32,
    consecutive: u32,
    /// A restart waiting out its backoff.
    pending: Option<SpawnHandle>,
    /// Terminated: forget it when it exits, whatever its restart type.
    terminating: bool,
    /// An operator's restart: start it again at once when it exits.
    restart_now: bool,
}

/// The running incarnation of a slot.
struct Running {
    stop: Recipient<StopResource>,
    abort: AbortHandle,
    since: Instant,
    /// When it will be killed (asked to stop, or stopping by itself), or given up on (killed).
    kill_at: Option<Instant>,
    /// Its task was aborted; `kill_at` is then the end of the wait for its drop.
    killed: bool,
}

/// A stop of several children: one batch at a time (`current`), each next batch chosen among the
/// children running *then* (the latest started; or all of them for a dynamic supervisor), so a
/// child started meanwhile is never forgotten; then what to do next.
struct Drain {
    current: HashSet<ResourceId>,
    /// Everything must be stopped by then (shared fairly among the batches left).
    until: Option<Instant>,
    after: After,
}

enum After {
    /// One-for-all: start every slot again after `delay`.
    RestartAll(Duration),
    /// Restart intensity exceeded: exit with this reason (abnormal), so the parent decides.
    Escalate(ExitReason),
    /// Asked to stop.
    Exit(ExitReason),
}

/// Typed handle to a supervisor.
#[derive(Clone)]
pub struct SupervisorHandle {
    id: ResourceId,
    addr: Addr<Supervisor>,
}

impl SupervisorHandle {
    /// The supervisor's id.
    #[must_use]
    pub fn id(&self) -> ResourceId {
        self.id
    }

    /// Starts a child and returns its id and address.
    ///
    /// # Errors
    /// [`Error::MaxChildren`], [`Error::ShuttingDown`], [`Error::StartFailed`], or
    /// [`Error::Gone`] when the supervisor has stopped. An address of another actor type than
    /// `A` is reported as [`Error::StartFailed`] (the child is then terminated).
    ///
    /// # Cancel safety
    /// Cancel-safe: a caller that gives up gets no child. Dropped before the supervisor handled
    /// the request, nothing is started (actix skips a request whose caller is gone); dropped
    /// after, the started child is never claimed and its [`StartedChild`] terminates it (its
    /// guard, and with it any quota it held, is released once it has stopped).
    pub async fn start_child<A: Actor>(&self, spec: ChildSpec) -> Result<(ResourceId, Addr<A>)> {
        let name = spec.name.to_string();
        let started =
            self.addr.send(StartChild(spec)).await.map_err(|_| Error::Gone("supervisor"))??;
        let id = started.id;
        // an address of another type leaves `started` unclaimed: dropped, it terminates the child
        started.addr::<A>().map(|addr| (id, addr)).ok_or_else(|| Error::StartFailed {
            name,
            reason: "factory built another actor type".into(),
        })
    }

    /// Stops a child gracefully; it is not restarted. Killed if it has not stopped by its
    /// `shutdown` deadline.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown child; [`Error::Gone`] when the supervisor has stopped.
    ///
    /// # Cancel safety
    /// Dropped before the supervisor handled it, the request is withdrawn and the child keeps
    /// running; [`Control::stop`] is the form that cannot be withdrawn.
    pub async fn terminate_child(&self, id: ResourceId, reason: ExitReason) -> Result<()> {
        self.addr
            .send(TerminateChild { id, reason })
            .await
            .map_err(|_| Error::Gone("supervisor"))?
    }

    /// Restarts a child now with a fresh actor.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown child; [`Error::ShuttingDown`] while the supervisor
    /// stops or restarts all its children; [`Error::Gone`] when the supervisor has stopped.
    ///
    /// # Cancel safety
    /// Dropped before the supervisor handled it, the request is withdrawn.
    pub async fn restart_child(&self, id: ResourceId) -> Result<()> {
        self.addr.send(RestartChild { id }).await.map_err(|_| Error::Gone("supervisor"))?
    }

    /// Its children in start order.
    ///
    /// # Errors
    /// [`Error::Gone`] when the supervisor has stopped.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads.
    pub async fn which_children(&self) -> Result<Vec<ChildInfo>> {
        self.addr.send(WhichChildren).await.map_err(|_| Error::Gone("supervisor"))
    }

    /// Asks it to stop its children (reverse start order, each within its `shutdown` deadline)
    /// and then itself.
    ///
    /// # Errors
    /// [`Error::Gone`] when the supervisor has already stopped.
    ///
    /// # Cancel safety
    /// Dropped before the supervisor handled it, the request is withdrawn.
    pub async fn stop(&self, reason: ExitReason) -> Result<()> {
        self.addr.send(StopResource { reason }).await.map_err(|_| Error::Gone("supervisor"))
    }

    /// Asks it to stop as [`SupervisorHandle::stop`] does, all of it within `within`: each child
    /// in turn may take what is left but a slice (25 ms, less when time is short) for each
    /// child still after it, and never more than its own `shutdown` deadline, so the last ones
    /// to stop still stop in their order rather than being killed together. Returns once the
    /// request is queued; does not wait for the stop.
    ///
    /// # Errors
    /// [`Error::Gone`] when the supervisor has already stopped; [`Error::Busy`] when its mailbox
    /// is full.
    pub fn stop_within(&self, reason: ExitReason, within: Duration) -> Result<()> {
        self.addr.try_send(StopWithin { reason, within }).map_err(|e| match e {
            SendError::Full(_) => Error::Busy(self.id),
            SendError::Closed(_) => Error::Gone("supervisor"),
        })
    }
}

impl fmt::Debug for SupervisorHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupervisorHandle").field("id", &self.id).finish()
    }
}

/// A late-bound [`SupervisorHandle`] of a supervisor started as a child
/// ([`ChildSpec::supervisor_in`]): it holds the handle of the current incarnation, replaced on
/// every restart. Cheap to clone.
#[derive(Clone, Default)]
pub struct SupervisorCell(Arc<std::sync::Mutex<Option<SupervisorHandle>>>);

impl SupervisorCell {
    /// An empty cell; filled when the supervisor starts.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn set(&self, handle: SupervisorHandle) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(handle);
    }

    /// The current incarnation's handle, if it has started.
    #[must_use]
    pub fn get(&self) -> Option<SupervisorHandle> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Starts a child under the current incarnation ([`SupervisorHandle::start_child`]).
    ///
    /// # Errors
    /// [`Error::Gone`] when the supervisor has not started or has stopped, and every error of
    /// [`SupervisorHandle::start_child`].
    ///
    /// # Cancel safety
    /// Cancel-safe, as [`SupervisorHandle::start_child`].
    pub async fn start_child<A: Actor>(&self, spec: ChildSpec) -> Result<(ResourceId, Addr<A>)> {
        let handle = self.get().ok_or(Error::Gone("supervisor"))?;
        handle.start_child(spec).await
    }
}

impl fmt::Debug for SupervisorCell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SupervisorCell").field(&self.get().map(|h| h.id)).finish()
    }
}

/// Stops a root supervisor whose starter gave up before it was ready.
struct StopOnDrop(Option<Addr<Supervisor>>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(addr) = self.0.take() {
            let _ = addr.try_send(StopResource { reason: ExitReason::Shutdown });
        }
    }
}

/// A top-level supervisor and the way to learn that it exited.
#[derive(Debug)]
pub struct RootSupervisor {
    /// Its handle.
    pub handle: SupervisorHandle,
    /// Resolves with its exit reason once it has stopped (after its children).
    pub exited: oneshot::Receiver<ExitReason>,
}

impl Supervisor {
    /// Starts a root supervisor (no parent) on the current arbiter and waits until its static
    /// children have started.
    ///
    /// # Errors
    /// [`Error::StartFailed`] when a static child failed to start (those already started are
    /// stopped again in reverse order), [`Error::Gone`] if the supervisor vanished.
    ///
    /// # Cancel safety
    /// Cancel-safe: dropped before the static children have started, the supervisor is asked to
    /// stop them and itself.
    ///
    /// # Panics
    /// When called outside an actix arbiter.
    pub async fn start_root(registry: &Registry, spec: SupervisorSpec) -> Result<RootSupervisor> {
        let (id, shared) = registry.register(Registration {
            kind: ResourceKind::Service,
            name: spec.name.clone(),
            tenant: None,
            parent: None,
        });
        let (exit_tx, exited) = oneshot::channel();
        let rcx = ResourceCtx::new(
            registry.clone(),
            id,
            ResourceKind::Service,
            None,
            shared.clone(),
            spec.child_shutdown,
            ExitNotify::Root(exit_tx),
        );
        let span = rcx.span();
        let (ready_tx, ready_rx) = oneshot::channel();
        let ctx = Context::<Supervisor>::new();
        let addr = ctx.address();
        rcx.bind(&addr);
        let abort =
            ResourceCtx::spawn_actor(ctx, Self::new(rcx, spec, Some(ready_tx)), shared, span);
        registry.attach(id, addr.clone().recipient().downgrade(), abort);
        let mut unclaimed = StopOnDrop(Some(addr.clone()));
        ready_rx.await.map_err(|_| Error::Gone("supervisor"))??;
        unclaimed.0 = None;
        Ok(RootSupervisor { handle: SupervisorHandle { id, addr }, exited })
    }

    fn new(
        rcx: ResourceCtx,
        spec: SupervisorSpec,
        ready: Option<oneshot::Sender<Result<()>>>,
    ) -> Self {
        let (port, inbox) = mpsc::unbounded_channel();
        Self {
            rcx,
            spec,
            slots: BTreeMap::new(),
            by_id: HashMap::new(),
            next_seq: 0,
            restart_log: VecDeque::new(),
            port,
            inbox: Some(inbox),
            drain: None,
            stopping: false,
            round: None,
            kills: BTreeSet::new(),
            kill_timer: None,
            ready,
        }
    }

    /// Registers a child slot and starts its first incarnation; returns its id, its shared
    /// registry state and its address (an `Addr<A>` in a box).
    fn add_child(
        &mut self,
        spec: ChildSpec,
    ) -> Result<(ResourceId, Arc<EntryShared>, Box<dyn Any + Send>)> {
        if self.stopping || self.rcx.registry().is_shutting_down() {
            return Err(Error::ShuttingDown);
        }
        if let Some(max) = self.spec.max_children
            && self.slots.len() >= max
        {
            return Err(Error::MaxChildren { supervisor: self.rcx.id(), max });
        }
        let registry = self.rcx.registry().clone();
        let (id, shared) = registry.register(Registration {
            kind: spec.kind,
            name: spec.name.clone(),
            tenant: spec.tenant.clone(),
            parent: Some(self.rcx.id()),
        });
        let seq = self.next_seq;
        self.next_seq += 1;
        let name = spec.name.to_string();
        self.slots.insert(
            seq,
            Slot {
                spec,
                id,
                shared,
                running: None,
                incarnation: 0,
                consecutive: 0,
                pending: None,
                terminating: false,
                restart_now: false,
            },
        );
        self.by_id.insert(id, seq);
        match self.start_slot(seq) {
            Ok(addr) => Ok((id, self.slots[&seq].shared.clone(), addr)),
            Err(reason) => {
                tracing::warn!(child = %id, name = %name, error = %reason, "child failed to start");
                self.forget(seq, &ExitReason::error(format!("start failed: {reason}")));
                Err(Error::StartFailed { name, reason })
            }
        }
    }

    /// Builds a fresh actor for slot `seq`; returns its address.
    fn start_slot(&mut self, seq: u64) -> std::result::Result<Box<dyn Any + Send>, String> {
        let registry = self.rcx.registry().clone();
        let default_shutdown = self.spec.child_shutdown;
        let port = self.port.clone();
        let parent = self.rcx.id();
        let Some(slot) = self.slots.get_mut(&seq) else { return Err("unknown child".into()) };
        slot.incarnation += 1;
        slot.shared.reset_incarnation();
        slot.shared.set_state(crate::LifecycleState::Starting);
        let rcx = ResourceCtx::new(
            registry.clone(),
            slot.id,
            slot.spec.kind,
            slot.spec.tenant.clone(),
            slot.shared.clone(),
            slot.spec.shutdown.unwrap_or(default_shutdown),
            ExitNotify::Supervisor(port, slot.incarnation),
        );
        let started = (slot.spec.start)(rcx)?;
        registry.attach(slot.id, started.stop.downgrade(), started.abort.clone());
        tracing::debug!(parent = %parent, child = %slot.id, name = %slot.spec.name, "child started");
        slot.running = Some(Running {
            stop: started.stop,
            abort: started.abort,
            since: Instant::now(),
            kill_at: None,
            killed: false,
        });
        Ok(started.addr)
    }

    /// Drops slot `seq` for good and removes it from the registry with `reason`.
    fn forget(&mut self, seq: u64, reason: &ExitReason) {
        if let Some(slot) = self.slots.remove(&seq) {
            self.by_id.remove(&slot.id);
            if slot.pending.is_some() {
                self.rcx.registry().restart_pending(slot.spec.kind, false);
            }
            if let Some(at) = slot.running.as_ref().and_then(|r| r.kill_at) {
                self.kills.remove(&(at, seq));
            }
            self.rcx.registry().remove(slot.id, reason);
        }
    }

    /// The slot of live child `id`, if its running incarnation is `incarnation` (any, if `None`).
    fn running_slot(&self, id: ResourceId, incarnation: Option<u32>) -> Option<u64> {
        let seq = *self.by_id.get(&id)?;
        let slot = self.slots.get(&seq)?;
        (slot.running.is_some() && incarnation.is_none_or(|i| i == slot.incarnation)).then_some(seq)
    }

    /// The graceful stop deadline of slot `seq`'s child.
    fn deadline_of(&self, seq: u64) -> Duration {
        self.slots.get(&seq).and_then(|s| s.spec.shutdown).unwrap_or(self.spec.child_shutdown)
    }
}
