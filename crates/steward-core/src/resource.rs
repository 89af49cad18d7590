//! The resource contract: the [`Resource`] trait, what every resource actor owns (its
//! [`ResourceCtx`]: identity, tracker, lifeline) and the graceful stop path ([`stop_resource`]).

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::FutureExt as _;
use futures_util::future::{AbortHandle, Abortable, LocalBoxFuture};
use tracing::Instrument as _;

use crate::lifeline::{ExitNotify, Guarded, Lifeline};
use crate::messages::StopResource;
use crate::registry::{EntryShared, HandleKind, Registry};
use crate::tracker::{HandleGuard, Tracker};
use crate::{ExitReason, LifecycleState, ResourceId, ResourceKind};

/// An actor that is a Steward resource. Implement it, and implement
/// `Handler<StopResource>` by calling [`stop_resource`].
///
/// # Panics
/// A panic in a handler, in [`Resource::cleanup`], in a task started through the
/// [`Tracker`] or in the actor's `stopping`/`stopped` is caught at the actor's boundary and ends
/// this incarnation with [`ExitReason::Panic`]; its supervisor applies the restart policy.
/// `stopping` and `stopped` run synchronously, also while the actor is being dropped after a
/// kill: they must not panic and must not block. Keep them to bookkeeping (counters, a channel
/// close); Steward logs and contains a panic there, but what the hook left undone stays undone.
pub trait Resource: Actor<Context = Context<Self>> + Handler<StopResource> {
    /// The context the actor was built with.
    fn resource_ctx(&self) -> &ResourceCtx;

    /// Mutable access to it.
    fn resource_ctx_mut(&mut self) -> &mut ResourceCtx;

    /// Async cleanup run before the actor stops (close a browser, flush a producer). Move what
    /// it needs out of `self`; it runs to completion or until the child's shutdown deadline,
    /// after which the supervisor kills the actor. Default: nothing.
    fn cleanup(&mut self, _reason: &ExitReason) -> LocalBoxFuture<'static, ()> {
        Box::pin(std::future::ready(()))
    }
}

/// The graceful stop path, shared by every resource: records `reason`, moves to `stopping`, runs
/// [`Resource::cleanup`] and the tracker's shutdown (processes killed and reaped, tasks aborted)
/// while the actor processes no other message, then stops the actor. Calls after the first are
/// ignored. A supervised resource's stop is bounded: its supervisor hears that it began and
/// kills it at its child `shutdown` deadline (recorded as [`ExitReason::Killed`]).
pub fn stop_resource<A: Resource>(act: &mut A, ctx: &mut Context<A>, reason: ExitReason) {
    let rcx = act.resource_ctx_mut();
    if rcx.stopping {
        return;
    }
    rcx.stopping = true;
    rcx.shared.set_state(LifecycleState::Stopping);
    rcx.lifeline.notify_stopping();
    let tracker = rcx.tracker.clone();
    let grace = rcx.shutdown;
    let cleanup = act.cleanup(&reason);
    act.resource_ctx_mut().lifeline.set_reason(reason);
    ctx.wait(
        async move {
            cleanup.await;
            tracker.shutdown(grace).await;
        }
        .into_actor(act)
        .map(|(), _act, ctx| ctx.stop()),
    );
}

/// Everything a resource actor owns besides its own state: identity, the [`Tracker`] of its
/// tasks, timers and processes, and the lifeline that tells its supervisor when it is gone.
///
/// Keep it as a field of the actor. Dropping it (with the actor, even during a panic) aborts
/// everything tracked and reports the exit.
pub struct ResourceCtx {
    // field order is drop order: the tracker goes before the lifeline reports the exit
    tracker: Tracker,
    id: ResourceId,
    kind: ResourceKind,
    tenant: Option<Arc<str>>,
    shared: Arc<EntryShared>,
    registry: Registry,
    shutdown: Duration,
    stopping: bool,
    lifeline: Lifeline,
}

impl ResourceCtx {
    pub(crate) fn new(
        registry: Registry,
        id: ResourceId,
        kind: ResourceKind,
        tenant: Option<Arc<str>>,
        shared: Arc<EntryShared>,
        shutdown: Duration,
        exit: ExitNotify,
    ) -> Self {
        let span = resource_span(kind, id, tenant.as_deref());
        let supervisor = match &exit {
            ExitNotify::Supervisor(tx, incarnation) => Some((tx.clone(), *incarnation)),
            ExitNotify::Registry | ExitNotify::Root(_) => None,
        };
        Self {
            tracker: Tracker::new(registry.clone(), id, shared.clone(), span, supervisor),
            id,
            kind,
            tenant,
            shared: shared.clone(),
            registry: registry.clone(),
            shutdown,
            stopping: false,
            lifeline: Lifeline::new(id, shared, registry, exit),
        }
    }

    /// The shared registry state of this incarnation.
    pub(crate) fn shared(&self) -> &Arc<EntryShared> {
        &self.shared
    }

    /// Binds the actor's address (before it runs), so a panicking task can stop it. Only an
    /// owner without a supervisor needs it (a supervised one is stopped through its
    /// supervisor's inbox), so a supervised resource pays no allocation for it.
    pub(crate) fn bind<A: Resource>(&self, addr: &Addr<A>) {
        if !self.tracker.has_supervisor() {
            self.tracker.bind_owner(addr.clone().recipient().downgrade());
        }
    }

    /// Spawns the actor's context future on the current arbiter, inside its span and panic
    /// boundary ([`Guarded`]), and returns the abort handle of its task.
    ///
    /// # Panics
    /// When called outside an actix arbiter.
    pub(crate) fn spawn_actor<A: Resource>(
        ctx: Context<A>,
        actor: A,
        shared: Arc<EntryShared>,
        span: tracing::Span,
    ) -> AbortHandle {
        let (abort, registration) = AbortHandle::new_pair();
        let fut = Guarded::actor(ctx.into_future(actor), shared);
        #[allow(clippy::disallowed_methods)]
        // supervisors spawn their children themselves and keep the abort handles; the actor
        // owns the task, the lifeline inside it reports its end
        // `map`, not an async block: a block would hold the future twice (its capture and its
        // awaitee), doubling the task's size for every resource
        actix_rt::spawn(Abortable::new(fut, registration).map(|_| ()).instrument(span));
        abort
    }

    /// As [`ResourceCtx::spawn_actor`], on `arbiter` (another thread): the context is built there
    /// around `mailbox`, the idle timer armed there, and the actor's task spawned there. The
    /// abort handle is returned at once (an abort that arrives before the task runs ends it at
    /// its first poll).
    ///
    /// # Errors
    /// When the arbiter has stopped (the actor is dropped unstarted).
    pub(crate) fn spawn_actor_on<A: Resource + Send>(
        arbiter: &actix_rt::ArbiterHandle,
        mailbox: actix::dev::channel::AddressReceiver<A>,
        actor: A,
        shared: Arc<EntryShared>,
        span: tracing::Span,
    ) -> std::result::Result<AbortHandle, String> {
        let (abort, registration) = AbortHandle::new_pair();
        let spawned = arbiter.spawn_fn(move || {
            let mut ctx = Context::with_receiver(mailbox);
            arm_idle_timer(actor.resource_ctx(), &mut ctx);
            let fut = Guarded::actor(ctx.into_future(actor), shared);
            #[allow(clippy::disallowed_methods)]
            // as in `spawn_actor`, on the arbiter this closure runs on
            actix_rt::spawn(Abortable::new(fut, registration).map(|_| ()).instrument(span));
        });
        if spawned { Ok(abort) } else { Err("its arbiter has stopped".to_owned()) }
    }

    /// Its id.
    #[must_use]
    pub fn id(&self) -> ResourceId {
        self.id
    }

    /// Its kind.
    #[must_use]
    pub fn kind(&self) -> ResourceKind {
        self.kind
    }

    /// Its tenant, if any.
    #[must_use]
    pub fn tenant(&self) -> Option<&Arc<str>> {
        self.tenant.as_ref()
    }

    /// The registry it is in.
    #[must_use]
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The tracker: the only way resource code starts tasks, timers and processes.
    #[must_use]
    pub fn tracker(&self) -> &Tracker {
        &self.tracker
    }

    /// Whether the graceful stop has begun.
    #[must_use]
    pub fn is_stopping(&self) -> bool {
        self.stopping
    }

    /// Records activity now; the idle timeout counts from the last activity.
    pub fn touch(&self) {
        self.shared.touch(self.registry.now_ms());
    }

    /// Records the exit reason without stopping (for actors that then call `ctx.stop()`
    /// themselves). The first recorded reason wins.
    pub fn set_exit_reason(&mut self, reason: ExitReason) {
        self.lifeline.set_reason(reason);
    }

    /// A counted actor timer: `ctx.run_later`, with the timer included in this resource's
    /// timer count until it fires or the actor stops.
    pub fn run_later<A, F>(&self, ctx: &mut Context<A>, delay: Duration, f: F) -> SpawnHandle
    where
        A: Actor<Context = Context<A>>,
        F: FnOnce(&mut A, &mut Context<A>) + 'static,
    {
        let guard =
            HandleGuard::new(&self.registry, self.id, &self.shared, HandleKind::Timer, None);
        ctx.run_later(delay, move |act, ctx| {
            drop(guard);
            f(act, ctx);
        })
    }

    /// A counted actor interval: `ctx.run_interval`, counted as one timer until the actor stops
    /// or the handle is cancelled with `ctx.cancel_future`.
    pub fn run_interval<A, F>(
        &self,
        ctx: &mut Context<A>,
        period: Duration,
        mut f: F,
    ) -> SpawnHandle
    where
        A: Actor<Context = Context<A>>,
        F: FnMut(&mut A, &mut Context<A>) + 'static,
    {
        let guard =
            HandleGuard::new(&self.registry, self.id, &self.shared, HandleKind::Timer, None);
        ctx.run_interval(period, move |act, ctx| {
            let _keep = &guard;
            f(act, ctx);
        })
    }

    /// The `tracing` span with `resource.kind`, `resource.id` and `tenant` that the actor and
    /// its tracked tasks run in.
    #[must_use]
    pub fn span(&self) -> tracing::Span {
        self.tracker.span().clone()
    }
}

/// Starts a resource that has no supervisor (tools, tests) on the current arbiter: registered,
/// in its span, with its idle timer; its lifeline removes it from the registry when it goes.
/// Resources of the product are always started by a supervisor.
///
/// # Panics
/// When called outside an actix arbiter.
pub fn start_unsupervised<A, F>(
    registry: &Registry,
    kind: ResourceKind,
    name: &str,
    build: F,
) -> (ResourceId, Addr<A>)
where
    A: Resource,
    F: FnOnce(ResourceCtx) -> A,
{
    let (id, shared) = registry.register(crate::registry::Registration {
        kind,
        name: name.into(),
        tenant: None,
        parent: None,
    });
    let rcx = ResourceCtx::new(
        registry.clone(),
        id,
        kind,
        None,
        shared,
        Duration::from_secs(5),
        ExitNotify::Registry,
    );
    let (span, shared) = (rcx.span(), rcx.shared().clone());
    let mut ctx = Context::<A>::new();
    let addr = ctx.address();
    rcx.bind(&addr);
    arm_idle_timer(&rcx, &mut ctx);
    let abort = ResourceCtx::spawn_actor(ctx, build(rcx), shared, span);
    registry.attach(id, addr.clone().recipient().downgrade(), abort);
    (id, addr)
}

impl Drop for ResourceCtx {
    fn drop(&mut self) {
        // The owner is going (graceful stop, panic or kill). Nothing it started may outlive it,
        // even a task that holds a clone of its tracker; then (field drop) the lifeline reports.
        self.tracker.close_now();
    }
}

pub(crate) fn resource_span(
    kind: ResourceKind,
    id: ResourceId,
    tenant: Option<&str>,
) -> tracing::Span {
    tracing::info_span!("resource", resource.kind = %kind, resource.id = %id, tenant = tenant.unwrap_or("-"))
}

/// Arms the idle timeout of a resource from its kind's configured value: a counted timer that
/// fires at last activity + timeout, stops the actor with [`ExitReason::Idle`] if nothing
/// happened since, and otherwise re-arms for the remaining time. Nothing when the kind has no
/// idle timeout.
pub(crate) fn arm_idle_timer<A: Resource>(rcx: &ResourceCtx, ctx: &mut Context<A>) {
    let Some(timeout) = rcx.registry.idle_timeout(rcx.kind) else { return };
    schedule_idle_check::<A>(rcx, ctx, timeout);
}

fn schedule_idle_check<A: Resource>(rcx: &ResourceCtx, ctx: &mut Context<A>, timeout: Duration) {
    let deadline = rcx.registry.instant_of(rcx.shared.last_activity_ms()) + timeout;
    let delay = deadline.saturating_duration_since(std::time::Instant::now());
    rcx.run_later(ctx, delay, move |act: &mut A, ctx| {
        let rcx = act.resource_ctx();
        if rcx.stopping {
            return;
        }
        let idle_for = rcx.registry.now_ms().saturating_sub(rcx.shared.last_activity_ms());
        if Duration::from_millis(idle_for) >= timeout {
            tracing::info!(resource.kind = %rcx.kind, resource.id = %rcx.id, idle_for_ms = idle_for, "idle timeout, stopping");
            stop_resource(act, ctx, ExitReason::Idle);
        } else {
            schedule_idle_check::<A>(act.resource_ctx(), ctx, timeout);
        }
    });
}
