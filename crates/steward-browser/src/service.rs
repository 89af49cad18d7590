//! [`Browsers`]: the crate's face to the edges. It holds the pool, the session directory and the
//! wait queue; every call finds the caller's session (tenant-checked) and asks its actor.

use std::any::Any;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use actix::{Addr, Message};
use futures_util::future::BoxFuture;
use steward_config::{BrowserConfig, BrowserIsolation, SupervisorConfig};
use steward_core::{
    ChildSpec, Control, ExitReason, Registry, ResourceId, Strategy, SupervisorCell, SupervisorSpec,
};

use crate::browser::messages::{AwaitReady as BrowserReady, ListTargets, Published};
use crate::browser::{self, BrowserActor};
use crate::launch;
use crate::session::messages::{
    AwaitReady, Close, ClosePage, GetInfo, NewPage, PageOp, PageOutput, RunOp, SubmitJob,
    TakeResult,
};
use crate::session::{self, SessionActor, SessionHandle, SessionStart};
use crate::shared::{Queue, Shared, SlotGuard, lock};
use crate::stats::{BrowserInfo, BrowserState, BrowserStats};
use crate::{
    Error, EvaluateRequest, NavigateRequest, NavigateResult, PdfRequest, Result, ScreenshotRequest,
    SessionInfo, SessionOptions, TenantScope,
};

/// What an admission hands back: a quota reservation, held by the session's child spec so the
/// slot is released exactly when the session is gone.
pub type AdmitGuard = Box<dyn Any + Send + Sync>;

/// Reserves one of the caller's `sessions` slots. Called once per attempt: again after each
/// wake-up while the call waits in the queue. Answer [`Error::ResourceExhausted`] with quota
/// `sessions` when the tenant is at its limit (the call then queues); any other error ends the
/// call with it.
pub type Admit<'a> = &'a (dyn Fn() -> Result<AdmitGuard> + Sync);

/// A capture submitted as a job ([`Browsers::submit_capture`]).
#[derive(Debug, Clone)]
pub enum Capture {
    /// A screenshot.
    Screenshot(ScreenshotRequest),
    /// A PDF.
    Pdf(PdfRequest),
}

/// Where a capture job reports: the edge's bridge to its job table (the sockets issue's jobs
/// API), so WebSocket clients can watch it. The session actor awaits each report inside the
/// future it owns; a session that stops drops the job's future (the edge's `Drop` of its
/// reporter then marks the job failed).
pub trait JobReport: Send + 'static {
    /// The capture started.
    fn running(&mut self) -> BoxFuture<'static, ()>;
    /// It finished: the result's size in bytes (the bytes wait in the session for
    /// [`Browsers::take_result`]), or the error.
    fn finished(self: Box<Self>, result: Result<usize>) -> BoxFuture<'static, ()>;
}

/// The browser pool and its sessions. Cheap to clone.
#[derive(Clone)]
pub struct Browsers {
    inner: Arc<Shared>,
    /// Names local browsers (`chromium-<n>`).
    names: Arc<AtomicU64>,
}

/// Retry advice when a wait in the queue ended without a slot.
const QUEUE_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Longest user agent, locale and time zone accepted, in bytes.
const MAX_USER_AGENT: usize = 512;
const MAX_LOCALE: usize = 35;
const MAX_TIMEZONE: usize = 64;

/// Longest URL accepted, in bytes (Chromium's own limit is 2 MiB; browsers and servers agree on
/// far less in practice).
const MAX_URL: usize = 16 * 1024;

/// Largest device scale factor, in hundredths.
const MAX_SCALE_PERCENT: u32 = 400;

impl Browsers {
    /// A pool over `config`, its browsers' CDP I/O on the current runtime.
    #[must_use]
    pub fn new(config: BrowserConfig, registry: Registry) -> Self {
        Self::build(config, registry, None)
    }

    /// A pool whose browsers run their CDP connections (the chromiumoxide handler, which parses
    /// every protocol message) on `io` (tonic's runtime), off the actors' arbiter.
    #[must_use]
    pub fn with_io_runtime(
        config: BrowserConfig,
        registry: Registry,
        io: tokio::runtime::Handle,
    ) -> Self {
        Self::build(config, registry, Some(io))
    }

    fn build(
        config: BrowserConfig,
        registry: Registry,
        io: Option<tokio::runtime::Handle>,
    ) -> Self {
        let egress_hosts = config
            .egress_hosts
            .iter()
            .map(|(name, addrs)| (name.trim_end_matches('.').to_ascii_lowercase(), addrs.clone()))
            .collect();
        Self {
            inner: Arc::new(Shared {
                config,
                registry,
                io,
                stats: Arc::default(),
                browsers: SupervisorCell::new(),
                sessions: SupervisorCell::new(),
                pool: Mutex::default(),
                directory: Mutex::default(),
                recent: Mutex::default(),
                queue: Queue::default(),
                placement: tokio::sync::Mutex::new(()),
                walls: Arc::default(),
                egress_hosts: Arc::new(egress_hosts),
            }),
            names: Arc::default(),
        }
    }

    /// Walls off Steward's listener `name` (`admin`, `public`, `grpc`), bound to `addrs`: no
    /// session's egress proxy connects to it, whatever the tenant's `browser_allow` permits
    /// (refused as `steward`). A listener calls it each time it binds; the addresses replace
    /// those it had.
    pub fn wall_off_listener(&self, name: &str, addrs: &[SocketAddr]) {
        self.inner.walls.listener(name, addrs);
    }

    /// The root children: `browsers` (one-for-one supervisor of the browser actors, started
    /// empty: local browsers start on demand, up to `[browser] browsers`) and `sessions`
    /// (dynamic supervisor, `max_children = [browser] max_sessions`).
    ///
    /// `browsers` restarts a crashed browser with a backoff of 0.5 s doubling to 30 s and
    /// tolerates 10 restarts a minute, so a Chromium that cannot start (not installed) keeps
    /// being retried slowly instead of escalating to the root and taking Steward down.
    ///
    /// Called once at start, it also removes the browser directories a killed Steward left in
    /// the temp dir (`steward-chromium-<pid>-*` whose pid is gone).
    #[must_use]
    pub fn child_specs(&self, supervisor: &SupervisorConfig) -> Vec<ChildSpec> {
        match launch::sandbox_support() {
            Ok(()) => {}
            Err(why) if self.inner.config.allow_no_sandbox => {
                tracing::warn!(
                    why,
                    "Chromium's sandbox is not available; local browsers run without it ([browser] allow_no_sandbox = true)"
                );
            }
            Err(why) => {
                tracing::error!(
                    why,
                    "Chromium's sandbox is not available: local browsers are off (set [browser] allow_no_sandbox = true to run them without it)"
                );
            }
        }
        let stale = launch::sweep_stale_dirs();
        if stale > 0 {
            tracing::info!(
                removed = stale,
                "removed browser directories a stopped Steward left behind"
            );
        }
        let mut browsers = SupervisorSpec::from_config("browsers", Strategy::OneForOne, supervisor);
        browsers.intensity.max_restarts = 10;
        browsers.intensity.period = Duration::from_secs(60);
        browsers.backoff.base = browsers.backoff.base.max(Duration::from_millis(500));
        let sessions = SupervisorSpec::from_config("sessions", Strategy::Dynamic, supervisor)
            .max_children(self.inner.config.max_sessions as usize);
        vec![
            ChildSpec::supervisor_in(browsers, self.inner.browsers.clone()),
            ChildSpec::supervisor_in(sessions, self.inner.sessions.clone()),
        ]
    }

    /// `[browser]` config.
    #[must_use]
    pub fn config(&self) -> &BrowserConfig {
        &self.inner.config
    }

    /// Counters (for `/metrics`).
    #[must_use]
    pub fn stats(&self) -> &Arc<BrowserStats> {
        &self.inner.stats
    }

    /// Local browsers this node runs at most: `[browser] browsers`, or max(1, cores / 2).
    #[must_use]
    pub fn local_browsers(&self) -> usize {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        match (self.inner.config.browsers, self.inner.config.isolation) {
            (0, BrowserIsolation::Tenant) => cores.max(4),
            (0, BrowserIsolation::Shared) => (cores / 2).max(1),
            (n, _) => n as usize,
        }
    }

    /// Live sessions now.
    #[must_use]
    pub fn live_sessions(&self) -> usize {
        lock(&self.inner.directory).len()
    }

    /// `CreateSession` calls waiting in the queue now, per tenant.
    #[must_use]
    pub fn queued(&self) -> Vec<(Arc<str>, u32)> {
        self.inner.queue.waiting()
    }

    /// Every browser now: state, contexts, pages, Chromium processes and their memory (read
    /// from `/proc`).
    #[must_use]
    pub fn browsers(&self) -> Vec<BrowserInfo> {
        let entries: Vec<(ResourceId, crate::shared::PoolEntry)> =
            lock(&self.inner.pool).iter().map(|(id, e)| (*id, e.clone())).collect();
        let mut out: Vec<BrowserInfo> = entries
            .into_iter()
            .map(|(id, e)| {
                let (pids, rss_bytes) = e.pid.map_or((Vec::new(), 0), launch::group_usage);
                BrowserInfo {
                    id: id.to_string(),
                    origin: if e.tenant.is_some() { "remote" } else { "local" },
                    tenant: e.tenant.as_ref().or(e.serves.as_ref()).map(ToString::to_string),
                    state: e.state,
                    pid: e.pid,
                    endpoint: e.endpoint,
                    contexts: e.contexts,
                    pages: e.pages.iter().map(|p| lock(p).ids.len()).sum(),
                    contexts_created: e.contexts_created,
                    processes: pids.len(),
                    rss_bytes,
                    started_at: e.started_at,
                }
            })
            .collect();
        out.sort_by(|a, b| a.started_at.cmp(&b.started_at).then_with(|| a.id.cmp(&b.id)));
        out
    }

    /// What browser `id` (a resource id, as [`Browsers::browsers`] lists it) itself holds: its
    /// contexts and targets, asked over Steward's own CDP connection, within `[browser]
    /// command_timeout` — how an operator (or a test) sees Chromium's side when no one else
    /// can connect to it.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown browser; [`Error::BrowserUnavailable`] when it is not
    /// up; [`Error::DeadlineExceeded`].
    pub async fn chromium_view(&self, id: &str) -> Result<crate::stats::ChromiumView> {
        let addr = id
            .parse::<ResourceId>()
            .ok()
            .and_then(|id| lock(&self.inner.pool).get(&id).map(|e| e.addr.clone()))
            .ok_or_else(|| Error::NotFound(format!("browser {id}")))?;
        addr.send(ListTargets)
            .await
            .map_err(|_| Error::BrowserUnavailable("the browser stopped".into()))?
    }

    /// Creates a session for the caller: validates `options`, admits it (`admit`; when the
    /// tenant or the node is full the call waits in the tenant's queue, `[browser]
    /// queue_length` / `queue_timeout`), places it on a live browser (the tenant's remote
    /// endpoint if it has one) and opens its context and first page.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for bad options; [`Error::ResourceExhausted`] (`queue_full`,
    /// `queue_timeout`, or what `admit` said) with retry advice; [`Error::BrowserUnavailable`]
    /// when no browser could take it; [`Error::DeadlineExceeded`] (`create_context`,
    /// `launch`, `connect`); [`Error::ShuttingDown`].
    pub async fn create_session(
        &self,
        scope: &TenantScope,
        options: SessionOptions,
        admit: Admit<'_>,
    ) -> Result<SessionInfo> {
        let (idle_ttl, max_lifetime) = self.validate(&options)?;
        let config = &self.inner.config;
        let stats = &self.inner.stats;
        let deadline = tokio::time::Instant::now() + config.queue_timeout;
        let mut place = None;
        loop {
            if self.inner.registry.is_shutting_down() {
                return Err(Error::ShuttingDown);
            }
            // registered before the attempt, so a slot freed during it is not missed
            let released = self.inner.queue.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let refused = match self.attempt(scope, &options, idle_ttl, max_lifetime, admit).await {
                Err(e @ Error::ResourceExhausted { quota: "sessions" | "max_sessions", .. }) => e,
                done => return done,
            };
            if config.queue_length == 0 {
                return Err(refused);
            }
            if place.is_none() {
                place = self.inner.queue.enter(&scope.tenant, config.queue_length, stats);
                if place.is_none() {
                    BrowserStats::inc(&stats.queue_full);
                    return Err(Error::ResourceExhausted {
                        quota: "queue_full",
                        retry_after: Some(retry_after(&refused)),
                    });
                }
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                BrowserStats::inc(&stats.queue_timeouts);
                return Err(Error::ResourceExhausted {
                    quota: "queue_timeout",
                    retry_after: Some(retry_after(&refused)),
                });
            }
        }
    }

    /// One admission and, if admitted, the session's start.
    async fn attempt(
        &self,
        scope: &TenantScope,
        options: &SessionOptions,
        idle_ttl: Duration,
        max_lifetime: Duration,
        admit: Admit<'_>,
    ) -> Result<SessionInfo> {
        let admission = admit()?;
        if self.live_sessions() >= self.inner.config.max_sessions as usize {
            return Err(Error::ResourceExhausted {
                quota: "max_sessions",
                retry_after: Some(QUEUE_RETRY_AFTER),
            });
        }
        let (browser, browser_id) = self.place(scope).await?;
        let closed = Arc::new(OnceLock::new());
        let failed = Arc::new(OnceLock::new());
        let start = SessionStart {
            shared: self.inner.clone(),
            tenant: scope.tenant.clone(),
            options: options.clone(),
            idle_ttl,
            max_lifetime,
            browser,
            browser_id,
            closed: closed.clone(),
            failed: failed.clone(),
            policy: scope.policy.clone(),
            local: scope.endpoint.is_none(),
        };
        let slot = SlotGuard::new(admission, self.inner.queue.released.clone());
        let started =
            self.inner.sessions.start_child::<SessionActor>(session::spec(start, slot)).await;
        let (_, addr) = started.map_err(|e| match e {
            steward_core::Error::MaxChildren { .. } => Error::ResourceExhausted {
                quota: "max_sessions",
                retry_after: Some(QUEUE_RETRY_AFTER),
            },
            steward_core::Error::ShuttingDown => Error::ShuttingDown,
            other => Error::BrowserUnavailable(format!("the session could not start: {other}")),
        })?;
        match addr.send(AwaitReady).await {
            Ok(r) => r,
            Err(_) => Err(failed
                .get()
                .cloned()
                .unwrap_or_else(|| session::closed_error(closed.get().copied()))),
        }
    }

    /// Finds a live browser for a new session: the tenant's remote endpoint (connected on first
    /// use), else a local one (see `local`: the tenant's own, or the least-loaded shared one).
    /// Waits for a launching one.
    async fn place(&self, scope: &TenantScope) -> Result<(Addr<BrowserActor>, ResourceId)> {
        let config = &self.inner.config;
        let (addr, id) = match &scope.endpoint {
            Some(endpoint) => self.remote(scope, endpoint).await?,
            None => self.local(scope).await?,
        };
        let wait = config.launch_timeout + config.connect_timeout;
        match tokio::time::timeout(wait, addr.send(BrowserReady)).await {
            Ok(Ok(Ok(_))) => Ok((addr, id)),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(Error::BrowserUnavailable("the browser stopped".into())),
            Err(_) => Err(Error::DeadlineExceeded { stage: "launch", after: wait }),
        }
    }

    /// A local browser for `scope`'s tenant, started when needed while the node runs fewer
    /// than [`Browsers::local_browsers`] (of every tenant):
    ///
    /// - `isolation = "tenant"`: the tenant's own Chromium, all its sessions in it (one per
    ///   tenant, so no tenant takes the slots of others; its `sessions` quota bounds it); when it
    ///   has none and the node is at the limit, an idle browser of another tenant is stopped to
    ///   make room, else `ResourceExhausted { quota: "browsers" }`.
    /// - `"shared"`: the least-loaded one, another started while all are busy.
    async fn local(&self, scope: &TenantScope) -> Result<(Addr<BrowserActor>, ResourceId)> {
        let _serial = self.inner.placement.lock().await;
        let serves = match self.inner.config.isolation {
            BrowserIsolation::Tenant => Some(scope.tenant.clone()),
            BrowserIsolation::Shared => None,
        };
        let pick = || {
            let pool = lock(&self.inner.pool);
            let locals: Vec<_> = pool
                .iter()
                .filter(|(_, e)| e.tenant.is_none() && e.state != BrowserState::Draining)
                .map(|(id, e)| (*id, e.clone()))
                .collect();
            let count = locals.len();
            let idle_other = locals
                .iter()
                .find(|(_, e)| {
                    e.serves != serves && e.contexts == 0 && e.state == BrowserState::Ready
                })
                .map(|(id, _)| *id);
            let best = locals
                .into_iter()
                .filter(|(_, e)| e.serves == serves)
                .filter(|(_, e)| matches!(e.state, BrowserState::Ready | BrowserState::Launching))
                .min_by_key(|(_, e)| (e.state != BrowserState::Ready, e.contexts));
            (count, best, idle_other)
        };
        let (mut count, best, idle_other) = pick();
        let busy = match self.inner.config.isolation {
            BrowserIsolation::Tenant => best.is_none(),
            BrowserIsolation::Shared => best.as_ref().is_none_or(|(_, e)| e.contexts > 0),
        };
        if busy
            && best.is_none()
            && count >= self.local_browsers()
            && let Some(victim) = idle_other
        {
            tracing::info!(browser = %victim, tenant = %scope.tenant, "every Chromium is taken: stopping an idle one of another tenant");
            let _ = Control::new(self.inner.registry.clone()).stop(victim, ExitReason::Idle);
            let c = &self.inner.config;
            let deadline = std::time::Instant::now() + c.close_timeout * 3;
            if self.inner.registry.wait_gone(victim, deadline).await {
                count -= 1;
            }
        }
        if busy && count < self.local_browsers() {
            let n = self.names.fetch_add(1, Ordering::Relaxed);
            let spec = browser::local_spec(&self.inner, &format!("chromium-{n}"), serves.clone());
            let started = self.inner.browsers.start_child::<BrowserActor>(spec).await;
            if let Ok((_, addr)) = &started {
                // in the pool before the next placement looks (a browser that died at once is
                // gone from it again)
                let _ = addr.send(Published).await;
            }
            match started {
                Ok((id, addr)) if best.is_none() => return Ok((addr, id)),
                Ok(_) => {}
                Err(e) if best.is_none() => {
                    return Err(Error::BrowserUnavailable(format!("no browser could start: {e}")));
                }
                Err(e) => tracing::warn!(error = %e, "could not start another browser"),
            }
        }
        best.map(|(id, e)| (e.addr, id)).ok_or(Error::ResourceExhausted {
            quota: "browsers",
            retry_after: Some(Duration::from_secs(1)),
        })
    }

    async fn remote(
        &self,
        scope: &TenantScope,
        endpoint: &str,
    ) -> Result<(Addr<BrowserActor>, ResourceId)> {
        let _serial = self.inner.placement.lock().await;
        let found = lock(&self.inner.pool)
            .iter()
            .find(|(_, e)| {
                e.tenant.as_deref() == Some(&*scope.tenant)
                    && e.endpoint.as_deref() == Some(endpoint)
                    && matches!(e.state, BrowserState::Ready | BrowserState::Launching)
            })
            .map(|(id, e)| (e.addr.clone(), *id));
        if let Some(found) = found {
            return Ok(found);
        }
        let spec = browser::remote_spec(&self.inner, scope.tenant.clone(), endpoint.to_owned());
        let (id, addr) = self
            .inner
            .browsers
            .start_child::<BrowserActor>(spec)
            .await
            .map_err(|e| Error::BrowserUnavailable(format!("cannot connect: {e}")))?;
        let _ = addr.send(Published).await;
        Ok((addr, id))
    }

    /// Checks `options` against the limits; the effective idle TTL and max lifetime.
    fn validate(&self, o: &SessionOptions) -> Result<(Duration, Duration)> {
        let c = &self.inner.config;
        if o.width > c.max_viewport_width {
            return Err(Error::invalid(
                "viewport.width",
                format!("must be at most {}", c.max_viewport_width),
            ));
        }
        if o.height > c.max_viewport_height {
            return Err(Error::invalid(
                "viewport.height",
                format!("must be at most {}", c.max_viewport_height),
            ));
        }
        if o.scale_percent > MAX_SCALE_PERCENT {
            return Err(Error::invalid("viewport.device_scale_factor", "must be at most 4"));
        }
        for (field, v, max) in [
            ("user_agent", &o.user_agent, MAX_USER_AGENT),
            ("locale", &o.locale, MAX_LOCALE),
            ("timezone", &o.timezone, MAX_TIMEZONE),
        ] {
            if v.len() > max {
                return Err(Error::invalid(field, format!("must be at most {max} bytes")));
            }
            if v.chars().any(char::is_control) {
                return Err(Error::invalid(field, "must not contain control characters"));
            }
        }
        let max = c.session_max_lifetime;
        let lifetime = o.max_lifetime.unwrap_or(max);
        let idle = o.idle_ttl.unwrap_or(c.session_idle_ttl);
        for (field, d) in [("idle_ttl", idle), ("max_lifetime", lifetime)] {
            if d.is_zero() || d > max {
                return Err(Error::invalid(
                    field,
                    format!("must be greater than 0s and at most {}s", max.as_secs()),
                ));
            }
        }
        Ok((idle.min(lifetime), lifetime))
    }

    fn find(&self, tenant: &str, id: &str) -> Result<SessionHandle> {
        let not_found = || Error::NotFound(format!("session {id}"));
        let rid: ResourceId = id.parse().map_err(|_| not_found())?;
        let live = lock(&self.inner.directory).get(&rid).filter(|h| &*h.tenant == tenant).cloned();
        if let Some(h) = live {
            return Ok(h);
        }
        match lock(&self.inner.recent).get(rid) {
            Some((owner, reason)) if &*owner == tenant => Err(session::closed_error(Some(reason))),
            _ => Err(not_found()),
        }
    }

    async fn ask<M>(&self, tenant: &str, id: &str, msg: M) -> Result<M::Result>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        SessionActor: actix::Handler<M>,
    {
        let h = self.find(tenant, id)?;
        h.addr.send(msg).await.map_err(|_| session::closed_error(h.closed.get().copied()))
    }

    /// One of the tenant's sessions.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown id or another tenant's session.
    pub async fn session(&self, tenant: &str, id: &str) -> Result<SessionInfo> {
        self.ask(tenant, id, GetInfo { touch: false }).await?
    }

    /// The tenant's live sessions, oldest first.
    pub async fn sessions(&self, tenant: &str) -> Vec<SessionInfo> {
        let mut handles: Vec<SessionHandle> = lock(&self.inner.directory)
            .values()
            .filter(|h| &*h.tenant == tenant)
            .cloned()
            .collect();
        handles.sort_by_key(|h| h.created);
        let asks = handles.iter().map(|h| h.addr.send(GetInfo { touch: false }));
        futures_util::future::join_all(asks)
            .await
            .into_iter()
            .filter_map(|r| r.ok().and_then(Result::ok))
            .collect()
    }

    /// Closes a session: its pages, then its context, verified gone; returns once it is.
    /// Idempotent while the session is closing, and for a session closed lately for another
    /// reason (idle, browser lost, …); a session its client closed is then unknown.
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub async fn close_session(&self, tenant: &str, id: &str) -> Result<()> {
        let h = match self.find(tenant, id) {
            Ok(h) => h,
            Err(e @ Error::NotFound(_)) => return Err(e),
            // closed lately for another reason: closed is what the caller wants
            Err(_) => return Ok(()),
        };
        let _ = h.addr.send(Close).await;
        let deadline = Instant::now() + self.inner.config.command_timeout * 3;
        if let Ok(rid) = id.parse::<ResourceId>() {
            self.inner.registry.wait_gone(rid, deadline).await;
        }
        Ok(())
    }

    /// Extends the session's idle deadline (as any call does).
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::SessionClosed`].
    pub async fn keep_alive(&self, tenant: &str, id: &str) -> Result<SessionInfo> {
        self.ask(tenant, id, GetInfo { touch: true }).await?
    }

    /// Opens another page in the session (at most the tenant's `pages_per_session`).
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::ResourceExhausted`] (`pages_per_session`);
    /// [`Error::DeadlineExceeded`] (`new_page`); [`Error::SessionClosed`].
    pub async fn new_page(&self, scope: &TenantScope, id: &str) -> Result<String> {
        self.ask(&scope.tenant, id, NewPage { limit: scope.pages_per_session }).await?
    }

    /// Closes one page (not the session's last).
    ///
    /// # Errors
    /// [`Error::NotFound`] (session or page); [`Error::InvalidArgument`] for the last page.
    pub async fn close_page(&self, tenant: &str, id: &str, page: &str) -> Result<()> {
        self.ask(tenant, id, ClosePage { page: page.to_owned() }).await?
    }

    async fn run(
        &self,
        scope: &TenantScope,
        id: &str,
        page: Option<String>,
        op: PageOp,
    ) -> Result<PageOutput> {
        let policy = scope.policy.clone();
        self.ask(&scope.tenant, id, RunOp { page, op, policy }).await?
    }

    /// Navigates a page. The URL is checked against `scope.policy` before and after (the final
    /// URL after redirects; a refused one leaves the page on `about:blank`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`]; [`Error::PermissionDenied`]; [`Error::NavigationFailed`]
    /// with Chromium's text; [`Error::DeadlineExceeded`] (`navigate`, naming the wait);
    /// [`Error::NotFound`]; [`Error::SessionClosed`].
    pub async fn navigate(
        &self,
        scope: &TenantScope,
        id: &str,
        req: NavigateRequest,
    ) -> Result<NavigateResult> {
        self.find(&scope.tenant, id)?;
        if req.url.len() > MAX_URL {
            return Err(Error::invalid("url", format!("must be at most {MAX_URL} bytes")));
        }
        if let Err(e) = scope.policy.check(&req.url).await {
            if matches!(e, Error::PermissionDenied(_)) {
                BrowserStats::inc(&self.inner.stats.urls_refused);
            }
            return Err(e);
        }
        let page = req.page.clone();
        match self.run(scope, id, page, PageOp::Navigate(req)).await? {
            PageOutput::Navigated(r) => Ok(r),
            _ => Err(Error::Protocol("navigate: unexpected answer".into())),
        }
    }

    fn check_screenshot(&self, req: &ScreenshotRequest) -> Result<()> {
        if req.quality > 100 {
            return Err(Error::invalid("quality", "must be at most 100"));
        }
        if let Some(c) = req.clip {
            let max = f64::from(self.inner.config.max_screenshot_height);
            let finite = [c.x, c.y, c.width, c.height].iter().all(|v| v.is_finite());
            if !finite || c.x < 0.0 || c.y < 0.0 || c.width <= 0.0 || c.height <= 0.0 {
                return Err(Error::invalid("clip", "must have x, y >= 0 and width, height > 0"));
            }
            if c.height > max || c.width > max {
                return Err(Error::OutOfRange(format!(
                    "clip is larger than max_screenshot_height ({max:.0}px)"
                )));
            }
        }
        Ok(())
    }

    /// A screenshot (PNG or JPEG bytes). Refused while the page is somewhere the tenant's
    /// policy forbids (defence in depth: a page may move by itself after `Navigate`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`]; [`Error::PermissionDenied`] (where the page is);
    /// [`Error::OutOfRange`] (too tall, too big); [`Error::DeadlineExceeded`] (`screenshot`);
    /// [`Error::NotFound`]; [`Error::SessionClosed`].
    pub async fn screenshot(
        &self,
        scope: &TenantScope,
        id: &str,
        req: ScreenshotRequest,
    ) -> Result<Vec<u8>> {
        self.check_screenshot(&req)?;
        let page = req.page.clone();
        bytes(self.run(scope, id, page, PageOp::Screenshot(req)).await?)
    }

    /// A PDF of the page; refused as [`Browsers::screenshot`] is.
    ///
    /// # Errors
    /// As [`Browsers::screenshot`], stage `pdf`.
    pub async fn pdf(&self, scope: &TenantScope, id: &str, req: PdfRequest) -> Result<Vec<u8>> {
        let page = req.page.clone();
        bytes(self.run(scope, id, page, PageOp::Pdf(req)).await?)
    }

    /// Evaluates an expression; the result as JSON text (`null` for `undefined`). Refused as
    /// [`Browsers::screenshot`] is.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (empty expression); [`Error::PermissionDenied`];
    /// [`Error::EvaluationFailed`] when it throws; [`Error::OutOfRange`];
    /// [`Error::DeadlineExceeded`] (`evaluate`); [`Error::NotFound`]; [`Error::SessionClosed`].
    pub async fn evaluate(
        &self,
        scope: &TenantScope,
        id: &str,
        req: EvaluateRequest,
    ) -> Result<String> {
        if req.expression.trim().is_empty() {
            return Err(Error::invalid("expression", "must not be empty"));
        }
        let page = req.page.clone();
        text(self.run(scope, id, page, PageOp::Evaluate(req)).await?)
    }

    /// The page's HTML; refused as [`Browsers::screenshot`] is.
    ///
    /// # Errors
    /// [`Error::PermissionDenied`]; [`Error::OutOfRange`]; [`Error::DeadlineExceeded`]
    /// (`content`); [`Error::NotFound`]; [`Error::SessionClosed`].
    pub async fn content(
        &self,
        scope: &TenantScope,
        id: &str,
        page: Option<String>,
    ) -> Result<String> {
        text(self.run(scope, id, page, PageOp::Content).await?)
    }

    /// Runs a screenshot or PDF as a job owned by the session: returns at once; `report` hears
    /// `running` and then `finished`; the bytes wait in the session under `job` (at most 4
    /// jobs per session) until [`Browsers::take_result`] or the session closes.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::InvalidArgument`]; [`Error::ResourceExhausted`]
    /// (`session_jobs`: 4 unfetched results or running jobs); [`Error::SessionClosed`].
    pub async fn submit_capture(
        &self,
        scope: &TenantScope,
        id: &str,
        job: String,
        capture: Capture,
        report: Box<dyn JobReport>,
    ) -> Result<()> {
        if let Capture::Screenshot(req) = &capture {
            self.check_screenshot(req)?;
        }
        let policy = scope.policy.clone();
        self.ask(&scope.tenant, id, SubmitJob { job, capture, report, policy }).await?
    }

    /// Takes (removes) a finished capture job's bytes, with their content type (`image/png`,
    /// `image/jpeg` or `application/pdf`).
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown session, or a job with no result (unknown, still
    /// running, failed or already taken).
    pub async fn take_result(
        &self,
        tenant: &str,
        id: &str,
        job: &str,
    ) -> Result<(Vec<u8>, &'static str)> {
        self.ask(tenant, id, TakeResult { job: job.to_owned() }).await?
    }

    /// Deadline of a call: what the request asked for, capped by the configured one.
    pub(crate) fn deadline(asked: Option<Duration>, configured: Duration) -> Duration {
        asked.filter(|d| !d.is_zero()).map_or(configured, |d| d.min(configured))
    }
}

fn retry_after(refused: &Error) -> Duration {
    match refused {
        Error::ResourceExhausted { retry_after: Some(d), .. } => *d,
        _ => QUEUE_RETRY_AFTER,
    }
}

fn bytes(out: PageOutput) -> Result<Vec<u8>> {
    match out {
        PageOutput::Bytes(b) => Ok(b),
        _ => Err(Error::Protocol("unexpected answer".into())),
    }
}

fn text(out: PageOutput) -> Result<String> {
    match out {
        PageOutput::Text(t) => Ok(t),
        _ => Err(Error::Protocol("unexpected answer".into())),
    }
}

impl std::fmt::Debug for Browsers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browsers")
            .field("sessions", &self.live_sessions())
            .field("browsers", &lock(&self.inner.pool).len())
            .finish()
    }
}

#[cfg(test)]
mod tests;
