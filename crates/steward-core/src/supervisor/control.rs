//! [`Control`]: stopping, restarting and killing a resource by its id, through its supervisor.
//!
//! The registry only says where a resource is (its parent's inbox, its abort handle); acting on
//! it is the supervisor's work, so that every stop is bounded by the child's deadline and every
//! exit goes through the restart policy. The admin API (`DELETE /v1/resources/{id}`, restart),
//! tenant deletion, the messaging and socket sweeps and the shutdown coordinator all come here.

use tokio::sync::oneshot;

use crate::messages::{Notice, StopResource};
use crate::registry::{Registry, TERMINATE};
use crate::{Error, ExitReason, ResourceId, Result};

/// Stops, restarts and kills resources by id. Cheap to clone (it holds a [`Registry`]).
#[derive(Debug, Clone)]
pub struct Control {
    registry: Registry,
}

impl Control {
    /// Control over the resources of `registry`.
    #[must_use]
    pub fn new(registry: Registry) -> Self {
        Self { registry }
    }

    /// Stops `id` gracefully with `reason`, for good: its supervisor asks it to stop, does not
    /// restart it whatever its restart type (OTP's `terminate_child`), and kills it if it has
    /// not stopped by its child `shutdown` deadline (recorded as [`ExitReason::Killed`], its
    /// holds released with it). A resource waiting out a restart backoff is forgotten at once.
    /// Returns once the request is queued; [`crate::Registry::wait_gone`] waits for the end.
    /// Asking again while a stop is on its way does nothing.
    ///
    /// An unsupervised resource (tools, tests) is sent [`StopResource`] directly, without a
    /// deadline.
    ///
    /// # Errors
    /// [`Error::NotFound`] when `id` is not live; [`Error::IsSupervisor`] for a supervisor
    /// (supervisors stop with the system); [`Error::Gone`] when its supervisor has just gone;
    /// [`Error::Busy`] when an unsupervised resource's mailbox is full.
    pub fn stop(&self, id: ResourceId, reason: ExitReason) -> Result<()> {
        let route = self.registry.route(id).ok_or(Error::NotFound(id))?;
        if route.is_supervisor {
            return Err(Error::IsSupervisor(id));
        }
        if !route.shared.request_stop(TERMINATE) {
            return Ok(());
        }
        if let Some(port) = route.parent_port {
            return port
                .send(Notice::Stop { id, incarnation: None, reason, terminate: true })
                .map_err(|_| Error::Gone("supervisor"));
        }
        let Some(stop) = route.stop.and_then(|s| s.upgrade()) else {
            return Ok(()); // its actor is already going
        };
        match stop.try_send(StopResource { reason }) {
            Ok(()) | Err(actix::prelude::SendError::Closed(_)) => Ok(()),
            Err(actix::prelude::SendError::Full(_)) => Err(Error::Busy(id)),
        }
    }

    /// Asks the supervisor of `id` to restart it now with a fresh actor: a graceful stop
    /// (killed at its deadline), then a start without backoff. Operator restarts do not count
    /// toward the restart intensity.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::IsSupervisor`], [`Error::NotSupervised`] when it has no
    /// supervisor, [`Error::Gone`] when the supervisor has just gone, or the supervisor's
    /// refusal ([`Error::ShuttingDown`] while it stops or restarts all its children).
    ///
    /// # Cancel safety
    /// The request is queued before the first await: dropping the future does not withdraw it,
    /// only its answer is lost.
    pub async fn restart(&self, id: ResourceId) -> Result<()> {
        let route = self.registry.route(id).ok_or(Error::NotFound(id))?;
        if route.is_supervisor {
            return Err(Error::IsSupervisor(id));
        }
        let port = route.parent_port.ok_or(Error::NotSupervised(id))?;
        let (reply, answer) = oneshot::channel();
        port.send(Notice::Restart { id, reply }).map_err(|_| Error::Gone("supervisor"))?;
        answer.await.map_err(|_| Error::Gone("supervisor"))?
    }

    /// Kills `id`'s running actor now: aborts its task, so it is dropped without its async
    /// cleanup (its tracker still kills its processes and aborts its tasks) and its lifeline
    /// reports [`ExitReason::Killed`]; its supervisor then applies the restart policy (unless a
    /// stop for good was asked before). Counted in [`crate::registry::KindStats::killed`].
    /// Returns whether there was an actor to kill.
    #[must_use = "false means nothing was running"]
    pub fn kill(&self, id: ResourceId) -> bool {
        let Some(route) = self.registry.route(id) else { return false };
        let Some(abort) = route.abort else { return false };
        route.shared.mark_killed();
        self.registry.count_kill(route.kind);
        abort.abort();
        true
    }
}
