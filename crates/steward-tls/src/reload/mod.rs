//! The `tls-reload` service: a supervised `service` resource whose one interval timer (owned by
//! the actor, counted in the registry) asks the shared [`CertResolver`] to look at the
//! certificate files every `[tls] reload_interval`.

mod actor;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use steward_core::{ChildSpec, ResourceCtx, ResourceKind};

use crate::resolver::CertResolver;

/// The child spec of the `tls-reload` service (permanent, kind `service`).
pub(crate) fn child_spec(resolver: Arc<CertResolver>, interval: Duration) -> ChildSpec {
    ChildSpec::new("tls-reload", ResourceKind::Service, move |rcx| {
        Ok::<_, std::convert::Infallible>(TlsReload {
            rcx,
            resolver: resolver.clone(),
            interval,
            timer: None,
        })
    })
}

/// The reload actor.
pub(crate) struct TlsReload {
    rcx: ResourceCtx,
    /// The resolver every TLS listener shares.
    resolver: Arc<CertResolver>,
    /// `[tls] reload_interval`.
    interval: Duration,
    /// The one interval timer, armed in `started`.
    timer: Option<SpawnHandle>,
}
