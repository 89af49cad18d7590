//! The `Session` resource: one actor per client session, owning one incognito browser context
//! (never shared between tenants) and its pages on one browser.
//!
//! It expires from its own deadline — one counted timer at the earlier of its idle deadline
//! (last call + idle TTL) and the end of its max lifetime, re-armed lazily, never a scan. Its
//! page operations run as futures the actor owns, so a stop cancels them. Closing is total and
//! idempotent: pages, then the context (verified gone from Chromium's list), in the cleanup that
//! runs before the actor goes, whatever the reason; a browser that went away already took both.

mod actor;
mod handlers;
pub(crate) mod messages;
mod ops;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use actix::Addr;
use chromiumoxide::{Browser as Cdp, Page};
use steward_core::{ChildSpec, ResourceCtx, ResourceId, ResourceKind, RestartType};

use crate::browser::BrowserActor;
use crate::egress::{Egress, Gate};
use crate::policy::UrlPolicy;
use crate::shared::{Shared, SlotGuard};
use crate::{CloseReason, Error, SessionInfo, SessionOptions};

/// A live session as the directory holds it.
#[derive(Clone)]
pub(crate) struct SessionHandle {
    pub(crate) tenant: Arc<str>,
    pub(crate) addr: Addr<SessionActor>,
    /// Why it closed, once it did (answers calls that were running then).
    pub(crate) closed: Arc<OnceLock<CloseReason>>,
    pub(crate) created: Instant,
}

/// What the session is built from (cloned into each factory call; sessions are temporary).
#[derive(Clone)]
pub(crate) struct SessionStart {
    pub(crate) shared: Arc<Shared>,
    pub(crate) tenant: Arc<str>,
    pub(crate) options: SessionOptions,
    pub(crate) idle_ttl: Duration,
    pub(crate) max_lifetime: Duration,
    pub(crate) browser: Addr<BrowserActor>,
    pub(crate) browser_id: ResourceId,
    pub(crate) closed: Arc<OnceLock<CloseReason>>,
    pub(crate) failed: Arc<OnceLock<Error>>,
    /// The tenant's URL policy when the session was created (each call brings the current one).
    pub(crate) policy: Arc<UrlPolicy>,
    /// On a local Chromium (its context gets an egress proxy), not a tenant's remote one.
    pub(crate) local: bool,
}

/// A finished or running capture job.
enum JobSlot {
    Running,
    Done(Vec<u8>, &'static str),
}

/// Most capture jobs (running or holding unfetched bytes) per session.
pub(crate) const MAX_JOBS: usize = 4;

/// The session actor.
pub(crate) struct SessionActor {
    rcx: ResourceCtx,
    start: SessionStart,
    created_at: SystemTime,
    created: Instant,
    last_activity: Instant,
    cdp: Option<Arc<Cdp>>,
    context: Option<String>,
    /// Open pages, the default first.
    pages: Vec<Page>,
    /// Their target ids, shared with the browser's reconciler.
    page_ids: crate::shared::Pages,
    ready: bool,
    /// The browser went away: nothing to close in Chromium.
    browser_lost: bool,
    reason: Option<CloseReason>,
    jobs: HashMap<String, JobSlot>,
    /// Its egress proxy (local browsers): its decisions and what it refused.
    egress: Option<(Arc<Gate>, Egress)>,
}

impl SessionActor {
    fn new(rcx: ResourceCtx, start: SessionStart) -> Self {
        let now = Instant::now();
        Self {
            rcx,
            start,
            created_at: SystemTime::now(),
            created: now,
            last_activity: now,
            cdp: None,
            context: None,
            pages: Vec::new(),
            page_ids: Arc::default(),
            ready: false,
            browser_lost: false,
            reason: None,
            jobs: HashMap::new(),
            egress: None,
        }
    }

    /// Decides the session's egress with `policy` from now on (the tenant's, as this call
    /// brought it).
    fn refresh_policy(&self, policy: &Arc<UrlPolicy>) {
        if let Some((gate, _)) = &self.egress {
            gate.set_policy(policy.clone());
        }
    }

    /// What its egress proxy refused lately.
    fn refusals(&self) -> Option<Arc<crate::egress::Refusals>> {
        self.egress.as_ref().map(|(_, e)| e.refusals().clone())
    }

    fn touch(&mut self) {
        self.last_activity = Instant::now();
        self.rcx.touch();
    }

    fn idle_deadline(&self) -> Instant {
        self.last_activity + self.start.idle_ttl
    }

    fn lifetime_deadline(&self) -> Instant {
        self.created + self.start.max_lifetime
    }

    fn info(&self) -> SessionInfo {
        let now_i = Instant::now();
        let now = SystemTime::now();
        let at = |i: Instant| now + i.saturating_duration_since(now_i);
        SessionInfo {
            id: self.rcx.id().to_string(),
            created_at: self.created_at,
            expires_at: at(self.idle_deadline().min(self.lifetime_deadline())),
            max_lifetime_at: at(self.lifetime_deadline()),
            pages: self.pages.iter().map(|p| p.target_id().inner().clone()).collect(),
            browser: self.start.browser_id.to_string(),
        }
    }

    fn page(&self, id: Option<&str>) -> crate::Result<Page> {
        match id {
            None => self.pages.first().cloned(),
            Some(id) => self.pages.iter().find(|p| p.target_id().inner() == id).cloned(),
        }
        .ok_or_else(|| match id {
            Some(id) => Error::NotFound(format!("page {id}")),
            None => Error::SessionClosed("session_closed"),
        })
    }
}

/// The error a call on a closed session answers: `browser_unavailable` when its browser went
/// away, else [`Error::SessionClosed`] with the reason.
pub(crate) fn closed_error(reason: Option<CloseReason>) -> Error {
    match reason {
        Some(CloseReason::BrowserUnavailable) => {
            Error::BrowserUnavailable("the session's browser went away".into())
        }
        Some(r) => Error::SessionClosed(r.as_str()),
        None => Error::SessionClosed("session_closed"),
    }
}

/// The child spec of a session: temporary, owned by its tenant, holding its admission.
pub(crate) fn spec(start: SessionStart, slot: SlotGuard) -> ChildSpec {
    let tenant = start.tenant.clone();
    let deadline = start.shared.config.command_timeout * 3 + Duration::from_secs(1);
    ChildSpec::new(format!("session:{tenant}"), ResourceKind::Session, move |rcx: ResourceCtx| {
        Ok::<_, std::convert::Infallible>(SessionActor::new(rcx, start.clone()))
    })
    .restart(RestartType::Temporary)
    .tenant(tenant)
    .hold(slot)
    .shutdown(deadline)
}
