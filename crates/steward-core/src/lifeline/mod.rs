//! Lifelines and panic containment: how an owner learns that something it owns is gone.
//!
//! - [`Lifeline`]: the drop guard inside every resource's context; whatever way the actor goes
//!   (graceful stop, panic, kill), its drop reports the exit to the supervisor, with an honest
//!   reason.
//! - [`Guarded`]: the future wrapper around every actor and every tracked task. It catches a
//!   panic at the task boundary (OTP: a crash is a message to the owner, never the node's end),
//!   marks the owner as panicked, and drops what panicked outside the unwinding, so a second
//!   panic in `stopping`/`stopped` or in a destructor is caught too instead of aborting.
//! - [`panic_has_owner`]: whether the panicking thread is inside such a boundary; the binary's
//!   panic hook exits the process only for panics that no owner will hear of.

use std::any::Any;
use std::cell::Cell;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::messages::{Notice, NoticeSender};

#[cfg(test)]
mod tests;
use crate::registry::{DeferredExit, EntryShared, Registry};
use crate::{ExitReason, ResourceId};

thread_local! {
    /// Depth of owned polls and drops on this thread.
    static OWNED: Cell<u32> = const { Cell::new(0) };
}

/// Whether the current thread is polling or dropping an actor or a tracked task, inside the
/// boundary that catches a panic and reports it to the owner's supervisor. A panic hook uses it:
/// a panic for which this is `false` has no owner (an HTTP worker's or a tonic handler's own
/// code) and escaped supervision.
#[must_use]
pub fn panic_has_owner() -> bool {
    OWNED.with(|depth| depth.get() > 0)
}

/// Marks the current thread as inside an owned boundary while it lives.
struct OwnedScope;

impl OwnedScope {
    fn enter() -> Self {
        OWNED.with(|depth| depth.set(depth.get() + 1));
        Self
    }
}

impl Drop for OwnedScope {
    fn drop(&mut self) {
        OWNED.with(|depth| depth.set(depth.get().saturating_sub(1)));
    }
}

/// Runs `f` inside an owned boundary; a panic becomes `Err(message)`.
pub(crate) fn catch<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    let _scope = OwnedScope::enter();
    std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(|payload| panic_message(&*payload))
}

/// The message of a panic payload (`panic!("…")` gives a `&str` or a `String`).
#[must_use]
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}

/// Drops `value` inside an owned boundary; a panic in its destructor is logged, not propagated.
fn drop_owned<T>(value: T, what: &'static str) {
    if let Err(message) = catch(move || drop(value)) {
        tracing::error!(panic = %message, what, "panic while dropping; contained");
    }
}

/// A future run inside the panic boundary of an owner (`shared`): an actor's context future or a
/// tracked task (pinned in a box by the tracker; an actor's context future is `Unpin` and kept
/// inline, so an actor costs no extra allocation). Resolves to `Err(message)` when it panicked;
/// the owner is then marked as panicked (its exit reason will be [`ExitReason::Panic`]) before
/// what panicked is dropped.
pub(crate) struct Guarded<F> {
    inner: Option<F>,
    owner: Arc<EntryShared>,
    what: &'static str,
    /// This is the actor's own task: its owner's exit is reported when it ends.
    holds_exit: bool,
}

impl<F: Future + Unpin> Guarded<F> {
    /// A tracked task; `what` names the boundary in logs.
    pub(crate) fn new(fut: F, owner: Arc<EntryShared>, what: &'static str) -> Self {
        Self { inner: Some(fut), owner, what, holds_exit: false }
    }

    /// An actor's context future: the actor's exit (its lifeline's report) is held until this
    /// task has dropped the whole context, timers and spawned futures included.
    pub(crate) fn actor(fut: F, owner: Arc<EntryShared>) -> Self {
        owner.hold_exit();
        Self { inner: Some(fut), owner, what: "actor", holds_exit: true }
    }
}

impl<F: Future + Unpin> Future for Guarded<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(Err("polled after completion".to_owned()));
        };
        match catch(|| Pin::new(inner).poll(cx)) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => {
                if let Some(done) = self.inner.take() {
                    drop_owned(done, self.what);
                }
                Poll::Ready(Ok(output))
            }
            Err(message) => {
                self.owner.mark_panicked();
                tracing::error!(panic = %message, what = self.what, "panic caught at the owner's boundary");
                if let Some(panicked) = self.inner.take() {
                    drop_owned(panicked, self.what);
                }
                Poll::Ready(Err(message))
            }
        }
    }
}

impl<F> Drop for Guarded<F> {
    fn drop(&mut self) {
        // aborted (a kill, or its owner went): actix re-polls an actor's context as it is
        // dropped, so `stopping`/`stopped` run here and may panic
        if let Some(inner) = self.inner.take() {
            let owner = self.owner.clone();
            if let Err(message) = catch(move || drop(inner)) {
                owner.mark_panicked();
                tracing::error!(panic = %message, what = self.what, "panic while stopping; contained");
            }
        }
        if self.holds_exit {
            self.owner.release_exit();
        }
    }
}

/// Where a lifeline reports the exit.
pub(crate) enum ExitNotify {
    /// To the supervisor's inbox, with the incarnation number.
    Supervisor(NoticeSender, u32),
    /// To nobody: the lifeline removes the entry from the registry itself.
    Registry,
    /// Remove from the registry and tell a waiter (root supervisors).
    Root(tokio::sync::oneshot::Sender<ExitReason>),
}

/// The drop guard that reports a resource's exit, whatever the way it went: a graceful stop,
/// a panic (caught by [`Guarded`], or unwinding through it), or its task being aborted.
pub(crate) struct Lifeline {
    id: ResourceId,
    shared: Arc<EntryShared>,
    registry: Registry,
    exit: Option<ExitNotify>,
    reason: Option<ExitReason>,
}

impl Lifeline {
    pub(crate) fn new(
        id: ResourceId,
        shared: Arc<EntryShared>,
        registry: Registry,
        exit: ExitNotify,
    ) -> Self {
        Self { id, shared, registry, exit: Some(exit), reason: None }
    }

    /// Records the exit reason; the first one wins.
    pub(crate) fn set_reason(&mut self, reason: ExitReason) {
        self.reason.get_or_insert(reason);
    }

    /// Tells the supervisor that the graceful stop has begun (its kill deadline starts), unless
    /// the supervisor asked for it and armed the deadline already.
    pub(crate) fn notify_stopping(&self) {
        if self.shared.kill_armed() {
            return;
        }
        if let Some(ExitNotify::Supervisor(tx, incarnation)) = &self.exit {
            let _ = tx.send(Notice::Stopping { id: self.id, incarnation: *incarnation });
        }
    }

    /// The reason this exit is recorded with. What happened to the actor outranks what it meant
    /// to do: a panic (even during its cleanup) is `panic`, a kill (even of a graceful stop that
    /// ran past its deadline) is `killed`; otherwise the recorded reason, else `abnormal`.
    fn honest_reason(&mut self) -> ExitReason {
        if std::thread::panicking() || self.shared.panicked() {
            ExitReason::Panic
        } else if self.shared.killed() {
            ExitReason::Killed
        } else {
            self.reason.take().unwrap_or(ExitReason::Abnormal)
        }
    }
}

impl Drop for Lifeline {
    fn drop(&mut self) {
        let reason = self.honest_reason();
        if reason.is_abnormal() {
            tracing::warn!(resource.id = %self.id, exit_reason = %reason, "resource exited abnormally");
        }
        self.shared.set_last_exit(reason.clone());
        let (id, registry, exit) = (self.id, self.registry.clone(), self.exit.take());
        let report = move || match exit {
            Some(ExitNotify::Supervisor(tx, incarnation)) => {
                if let Err(tokio::sync::mpsc::error::SendError(Notice::Exited { reason, .. })) =
                    tx.send(Notice::Exited { id, incarnation, reason })
                {
                    // the supervisor is gone: nobody will restart us, leave the registry
                    registry.remove(id, &reason);
                }
            }
            Some(ExitNotify::Root(tx)) => {
                registry.remove(id, &reason);
                let _ = tx.send(reason);
            }
            Some(ExitNotify::Registry) | None => registry.remove(id, &reason),
        };
        self.shared.defer_exit(DeferredExit(Box::new(report)));
    }
}
