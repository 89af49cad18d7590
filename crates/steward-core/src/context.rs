//! What every resource actor owns: its [`ResourceCtx`] (identity, tracker, lifeline) and the
//! graceful stop path ([`StopResource`], [`stop_resource`]).

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::future::LocalBoxFuture;
use tokio::sync::{mpsc, oneshot};

use crate::registry::{EntryShared, HandleKind, Registry};
use crate::tracker::{HandleGuard, Tracker};
use crate::{ExitReason, LifecycleState, ResourceId, ResourceKind};

/// Asks a resource to stop gracefully with `reason`: it runs its async cleanup, its tracker
/// aborts its tasks and kills its processes, then the actor stops. Idempotent.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct StopResource {
    /// Recorded as the exit reason.
    pub reason: ExitReason,
}

/// Told to a supervisor by a child's lifeline when the child's actor is gone.
#[derive(Debug)]
pub(crate) struct ChildExited {
    pub(crate) id: ResourceId,
    pub(crate) incarnation: u32,
    pub(crate) reason: ExitReason,
}

/// An actor that is a Steward resource. Implement it, and implement
/// `Handler<StopResource>` by calling [`stop_resource`].
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
/// ignored.
pub fn stop_resource<A: Resource>(act: &mut A, ctx: &mut Context<A>, reason: ExitReason) {
    let rcx = act.resource_ctx_mut();
    if rcx.stopping {
        return;
    }
    rcx.stopping = true;
    rcx.shared.set_state(LifecycleState::Stopping);
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
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        registry: Registry,
        id: ResourceId,
        kind: ResourceKind,
        tenant: Option<Arc<str>>,
        shared: Arc<EntryShared>,
        shutdown: Duration,
        exit: ExitNotify,
    ) -> Self {
        Self {
            tracker: Tracker::new(registry.clone(), id, shared.clone()),
            id,
            kind,
            tenant,
            shared: shared.clone(),
            registry: registry.clone(),
            shutdown,
            stopping: false,
            lifeline: Lifeline { id, shared, registry, exit: Some(exit), reason: None },
        }
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

    /// A `tracing` span with `resource.kind`, `resource.id` and `tenant`; every actor runs in
    /// its own.
    #[must_use]
    pub fn span(&self) -> tracing::Span {
        resource_span(self.kind, self.id, self.tenant.as_deref())
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
    let span = rcx.span();
    let mut ctx = Context::<A>::new();
    arm_idle_timer(&rcx, &mut ctx);
    let addr = ctx.address();
    #[allow(clippy::disallowed_methods)]
    // the registry holds this task's abort handle; the lifeline reports its end
    let task = actix_rt::spawn(tracing::Instrument::instrument(ctx.into_future(build(rcx)), span));
    registry.attach(id, addr.clone().recipient().downgrade(), task.abort_handle());
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

/// Where a lifeline reports the exit.
pub(crate) enum ExitNotify {
    /// To the supervisor's exit channel, with the incarnation number.
    Supervisor(mpsc::UnboundedSender<ChildExited>, u32),
    /// To nobody: the lifeline removes the entry from the registry itself.
    Registry,
    /// Remove from the registry and tell a waiter (root supervisors).
    Root(oneshot::Sender<ExitReason>),
}

/// The drop guard that reports a resource's exit, whatever the way it went: a graceful stop,
/// a panic unwinding through a handler, or its task being aborted.
struct Lifeline {
    id: ResourceId,
    shared: Arc<EntryShared>,
    registry: Registry,
    exit: Option<ExitNotify>,
    reason: Option<ExitReason>,
}

impl Lifeline {
    fn set_reason(&mut self, reason: ExitReason) {
        self.reason.get_or_insert(reason);
    }
}

impl Drop for Lifeline {
    fn drop(&mut self) {
        let reason = match self.reason.take() {
            Some(reason) => reason,
            None if std::thread::panicking() => ExitReason::Panic,
            None if self.shared.forced.load(std::sync::atomic::Ordering::Relaxed) => {
                ExitReason::Killed
            }
            None => ExitReason::Abnormal,
        };
        if reason.is_abnormal() {
            tracing::warn!(resource.id = %self.id, exit_reason = %reason, "resource exited abnormally");
        }
        self.shared.set_last_exit(reason.clone());
        match self.exit.take() {
            Some(ExitNotify::Supervisor(tx, incarnation)) => {
                if let Err(mpsc::error::SendError(msg)) =
                    tx.send(ChildExited { id: self.id, incarnation, reason })
                {
                    // the supervisor is gone: nobody will restart us, leave the registry
                    self.registry.remove(self.id, &msg.reason);
                }
            }
            Some(ExitNotify::Root(tx)) => {
                self.registry.remove(self.id, &reason);
                let _ = tx.send(reason);
            }
            Some(ExitNotify::Registry) | None => self.registry.remove(self.id, &reason),
        }
    }
}
