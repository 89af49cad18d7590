//! The `Browser` resource: one actor per Chromium process Steward spawned (origin `local`), or
//! per tenant's remote CDP endpoint (origin `remote`, connect instead of spawn).
//!
//! It owns the process (through its tracker: own process group, parent-death signal, reaped),
//! the profile directory, the CDP connection and the task polling it — exactly one disconnect
//! watch: that task's first error or end, or a missed `Browser.getVersion` heartbeat. A
//! disconnect fails its sessions with `browser_unavailable` and stops the actor abnormally, so
//! its supervisor relaunches it with backoff (one restart in flight per child); an intentional
//! stop is a normal exit and is never relaunched. The reconciler disposes contexts and pages no
//! live session owns; recycling drains it after `recycle_after_contexts` contexts or
//! `recycle_after`.

mod actor;
mod handlers;
pub(crate) mod messages;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use actix::{Addr, Recipient};
use chromiumoxide::Browser as Cdp;
use steward_core::{ChildSpec, ResourceCtx, ResourceId, ResourceKind, RestartType};
use tempfile::TempDir;
use tokio::sync::oneshot;

use crate::Result;
use crate::shared::{PoolEntry, Shared, lock};
use crate::stats::BrowserState;
use messages::BrowserLost;

/// Where a browser comes from.
#[derive(Debug, Clone)]
pub(crate) enum Origin {
    /// A Chromium Steward spawns; with `[browser] isolation = "tenant"`, for one tenant only.
    Local { serves: Option<Arc<str>> },
    /// A tenant's CDP endpoint Steward connects to.
    Remote { tenant: Arc<str>, endpoint: String },
}

/// A context a session owns.
struct Owned {
    session: ResourceId,
    lost: Recipient<BrowserLost>,
    pages: crate::shared::Pages,
}

/// The browser actor. Field order is drop order: the context (tracker: process group, tasks)
/// goes before the profile directory is removed.
pub(crate) struct BrowserActor {
    rcx: ResourceCtx,
    shared: Arc<Shared>,
    origin: Origin,
    state: BrowserState,
    cdp: Option<Arc<Cdp>>,
    pid: Option<u32>,
    endpoint: Option<String>,
    /// Contexts by CDP id.
    contexts: HashMap<String, Owned>,
    /// Context creations in flight (the reconciler leaves unknown contexts alone meanwhile).
    creating: u32,
    /// Bumped by every creation and disposal; a reconcile that saw it change skips disposing
    /// contexts (its snapshot may predate them).
    epoch: u64,
    /// Contexts their sessions are disposing now.
    disposing: std::collections::HashSet<String>,
    contexts_created: u64,
    heartbeat_in_flight: bool,
    reconcile_in_flight: bool,
    /// A disconnect was seen (the watch fires once).
    lost: bool,
    started: Instant,
    started_at: SystemTime,
    ready_waiters: Vec<oneshot::Sender<Result<Arc<Cdp>>>>,
    /// A tenant's own browser without sessions: the timer that stops it
    /// (`[browser] tenant_browser_idle`).
    idle: Option<actix::SpawnHandle>,
    /// Local only: the process handle, for the graceful close.
    process: Option<steward_core::tracker::TrackedProcess>,
    /// Local only: the browser's own egress proxy (`--proxy-server`), which refuses everything
    /// outside a session's context; its tasks are the tracker's.
    egress: Option<crate::egress::Egress>,
    dir: Option<TempDir>,
}

impl BrowserActor {
    fn new(rcx: ResourceCtx, shared: Arc<Shared>, origin: Origin) -> Self {
        Self {
            rcx,
            shared,
            origin,
            state: BrowserState::Launching,
            cdp: None,
            pid: None,
            endpoint: None,
            contexts: HashMap::new(),
            creating: 0,
            epoch: 0,
            disposing: std::collections::HashSet::new(),
            contexts_created: 0,
            heartbeat_in_flight: false,
            reconcile_in_flight: false,
            lost: false,
            started: Instant::now(),
            started_at: SystemTime::now(),
            ready_waiters: Vec::new(),
            idle: None,
            process: None,
            egress: None,
            dir: None,
        }
    }

    /// Writes this browser's state into the pool table.
    fn publish(&self, addr: Addr<Self>) {
        let (tenant, endpoint) = match &self.origin {
            Origin::Local { .. } => (None, self.endpoint.clone()),
            Origin::Remote { tenant, endpoint } => (Some(tenant.clone()), Some(endpoint.clone())),
        };
        let serves = match &self.origin {
            Origin::Local { serves } => serves.clone(),
            Origin::Remote { .. } => None,
        };
        lock(&self.shared.pool).insert(
            self.rcx.id(),
            PoolEntry {
                addr,
                tenant,
                serves,
                endpoint,
                state: self.state,
                pid: self.pid,
                contexts: self.contexts.len() + self.creating as usize,
                pages: self.contexts.values().map(|o| o.pages.clone()).collect(),
                contexts_created: self.contexts_created,
                started_at: self.started_at,
            },
        );
    }

    /// Forgets every context and tells its session the browser is gone (`browser_unavailable`).
    fn lose_sessions(&mut self) {
        for (_, owned) in self.contexts.drain() {
            let _ = owned.lost.try_send(BrowserLost);
        }
    }

    fn is_remote(&self) -> bool {
        matches!(self.origin, Origin::Remote { .. })
    }
}

impl Drop for BrowserActor {
    fn drop(&mut self) {
        lock(&self.shared.pool).remove(&self.rcx.id());
        self.lose_sessions();
        for w in self.ready_waiters.drain(..) {
            let _ = w.send(Err(crate::Error::BrowserUnavailable("browser stopped".into())));
        }
    }
}

/// The child spec of a local browser: transient (relaunched only after an abnormal exit, i.e.
/// a disconnect or a failed launch; an operator's stop or a recycle is final).
/// A tenant's own local browser (`serves`) is owned by the tenant in the registry: deleting the
/// tenant stops it.
pub(crate) fn local_spec(shared: &Arc<Shared>, name: &str, serves: Option<Arc<str>>) -> ChildSpec {
    let deadline = shutdown_deadline(&shared.config);
    let shared = shared.clone();
    let origin = Origin::Local { serves: serves.clone() };
    let spec = ChildSpec::new(name.to_owned(), ResourceKind::Browser, move |rcx| {
        Ok::<_, std::convert::Infallible>(BrowserActor::new(rcx, shared.clone(), origin.clone()))
    })
    .restart(RestartType::Transient)
    .shutdown(deadline);
    match serves {
        Some(tenant) => spec.tenant(tenant),
        None => spec,
    }
}

/// The child spec of a tenant's remote browser: temporary (a failed connect or a disconnect
/// ends it; the tenant's next `CreateSession` connects again), owned by the tenant.
pub(crate) fn remote_spec(shared: &Arc<Shared>, tenant: Arc<str>, endpoint: String) -> ChildSpec {
    let deadline = shutdown_deadline(&shared.config);
    let shared = shared.clone();
    let t = tenant.clone();
    ChildSpec::new(format!("remote:{tenant}"), ResourceKind::Browser, move |rcx| {
        let origin = Origin::Remote { tenant: t.clone(), endpoint: endpoint.clone() };
        Ok::<_, std::convert::Infallible>(BrowserActor::new(rcx, shared.clone(), origin))
    })
    .restart(RestartType::Temporary)
    .tenant(tenant)
    .shutdown(deadline)
}

/// Graceful stop of a browser: `Browser.close`, then the group's SIGTERM → SIGKILL, plus slack.
fn shutdown_deadline(config: &steward_config::BrowserConfig) -> std::time::Duration {
    config.close_timeout * 2 + std::time::Duration::from_secs(2)
}
