//! The browser's life: launch (spawn + connect, or connect), the disconnect watch, heartbeat,
//! reconciler and recycling timers, and the graceful close.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chromiumoxide::Browser as Cdp;
use chromiumoxide::cdp::browser_protocol::browser::{BrowserContextId, CloseParams};
use chromiumoxide::cdp::browser_protocol::target::{
    CloseTargetParams, DisposeBrowserContextParams, GetBrowserContextsParams, GetTargetsParams,
    TargetInfo,
};
use chromiumoxide::handler::HandlerConfig;
use futures_util::StreamExt as _;
use futures_util::future::LocalBoxFuture;
use steward_core::{ExitReason, Resource, ResourceCtx, StopResource, stop_resource};

use super::messages::Disconnected;
use super::{BrowserActor, Origin};
use crate::cdp::timed;
use crate::egress::{Egress, Gate};
use crate::launch;
use crate::shared::{Shared, lock};
use crate::stats::{BrowserState, BrowserStats, Op};
use crate::{Error, Result};

/// chromiumoxide's own request timeout: above every Steward deadline, so ours always fire first.
const HANDLER_REQUEST_TIMEOUT: Duration = Duration::from_secs(600);

/// What a successful launch hands the actor.
struct Up {
    cdp: Arc<Cdp>,
    ws_url: String,
    process: Option<steward_core::tracker::TrackedProcess>,
    egress: Option<Egress>,
    dir: Option<tempfile::TempDir>,
}

impl Actor for BrowserActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.publish(ctx.address());
        // spawned, not awaited with `ctx.wait`: the mailbox stays open, so `AwaitReady` waits
        // in `ready_waiters` and hears a failed launch's error
        let launch = self.launch(ctx.address());
        ctx.spawn(launch.into_actor(self).map(|res, act, ctx| match res {
            Ok(up) => act.up(ctx, up),
            Err(e) => {
                BrowserStats::inc(&act.shared.stats.launch_failures);
                tracing::warn!(error = %e, "browser failed to come up");
                for w in act.ready_waiters.drain(..) {
                    let _ = w.send(Err(e.clone()));
                }
                act.state = BrowserState::Down;
                act.publish(ctx.address());
                stop_resource(act, ctx, ExitReason::error(format!("launch failed: {e}")));
            }
        }));
    }
}

impl BrowserActor {
    /// Spawns (local) and connects, each under its own deadline; starts the one disconnect
    /// watch: the task polling chromiumoxide's handler, which reports its first error or end.
    fn launch(&self, addr: Addr<Self>) -> LocalBoxFuture<'static, Result<Up>> {
        let tracker = self.rcx.tracker().clone();
        let shared = self.shared.clone();
        let origin = self.origin.clone();
        Box::pin(async move {
            let config = &shared.config;
            let stats = &shared.stats;
            let (url, process, egress, dir) = match origin {
                Origin::Local { .. } => {
                    let owner = launch::run_as(config);
                    let dir = launch::make_dir(owner)?;
                    // refuses everything: pages load only in sessions' contexts, which each
                    // have their own proxy
                    let gate = Gate::new(
                        None,
                        shared.egress_hosts.clone(),
                        shared.walls.clone(),
                        shared.stats.clone(),
                    );
                    let egress =
                        Egress::start(&tracker, shared.io.as_ref(), Arc::new(gate), &shared.walls)?;
                    let started = std::time::Instant::now();
                    let launched = launch::spawn(
                        &tracker,
                        shared.io.as_ref(),
                        config,
                        dir.path(),
                        &egress.url(),
                        owner,
                    )
                    .await;
                    let timed_out = matches!(launched, Err(Error::DeadlineExceeded { .. }));
                    stats.cdp(Op::Launch, started.elapsed(), timed_out);
                    let launched = launched?;
                    (launched.ws_url, Some(launched.process), Some(egress), Some(dir))
                }
                Origin::Remote { endpoint, .. } => (endpoint, None, None, None),
            };
            let handler_config = HandlerConfig {
                ignore_https_errors: false,
                request_timeout: HANDLER_REQUEST_TIMEOUT,
                viewport: None,
                ..HandlerConfig::default()
            };
            let (cdp, mut handler) = timed(
                stats,
                Op::Connect,
                config.connect_timeout,
                Cdp::connect_with_config(url.clone(), handler_config),
            )
            .await?;
            let watch = async move {
                let why = loop {
                    match handler.next().await {
                        Some(Ok(())) => {}
                        Some(Err(e)) => break e.to_string(),
                        None => break "the devtools connection closed".to_owned(),
                    }
                };
                // the first error ends the watch: chromiumoxide's handler hangs after it
                // (field-notes.md), so this task returns and drops it
                let _ = addr.try_send(Disconnected { why });
            };
            let spawned = match &shared.io {
                Some(io) => tracker.spawn_on(io, watch),
                None => tracker.spawn(watch),
            };
            spawned.map_err(|e| Error::BrowserUnavailable(e.to_string()))?;
            Ok(Up { cdp: Arc::new(cdp), ws_url: url, process, egress, dir })
        })
    }

    fn up(&mut self, ctx: &mut Context<Self>, up: Up) {
        let restarts = self.rcx.registry().get(self.rcx.id()).map_or(0, |i| i.restarts);
        if restarts > 0 {
            BrowserStats::inc(&self.shared.stats.relaunched);
        }
        BrowserStats::inc(&self.shared.stats.launched);
        self.pid = up.process.as_ref().map(|p| p.pid);
        self.process = up.process;
        self.egress = up.egress;
        self.dir = up.dir;
        // a local browser's bridge took its one connection: there is no endpoint to show
        self.endpoint = Some(if self.is_remote() { up.ws_url } else { "pipe".to_owned() });
        self.cdp = Some(up.cdp.clone());
        self.state = BrowserState::Ready;
        self.started = std::time::Instant::now();
        tracing::info!(
            pid = ?self.pid,
            endpoint = ?self.endpoint.as_deref().map(steward_config::redact_url),
            "browser up"
        );
        // published before anyone hears it is ready, so what they read of the pool is current
        self.publish(ctx.address());
        for w in self.ready_waiters.drain(..) {
            let _ = w.send(Ok(up.cdp.clone()));
        }
        self.arm_idle(ctx);
        let config = &self.shared.config;
        self.rcx.run_interval(ctx, config.heartbeat_interval, Self::heartbeat);
        self.rcx.run_interval(ctx, config.reconcile_interval, Self::reconcile);
        if !config.recycle_after.is_zero() {
            self.rcx.run_later(ctx, config.recycle_after, |act, ctx| act.drain(ctx, "age"));
        }
    }

    /// A tenant's own browser with no session left stops `tenant_browser_idle` later, unless a
    /// session comes first (which cancels the timer). Nothing for a shared or remote browser.
    pub(super) fn arm_idle(&mut self, ctx: &mut Context<Self>) {
        if !matches!(self.origin, Origin::Local { serves: Some(_) }) {
            return;
        }
        let idle =
            self.contexts.is_empty() && self.creating == 0 && self.state == BrowserState::Ready;
        if !idle {
            if let Some(timer) = self.idle.take() {
                ctx.cancel_future(timer);
            }
            return;
        }
        if self.idle.is_some() {
            return;
        }
        let after = self.shared.config.tenant_browser_idle;
        self.idle = Some(self.rcx.run_later(ctx, after, |act: &mut Self, ctx| {
            act.idle = None;
            if act.contexts.is_empty() && act.creating == 0 && act.state == BrowserState::Ready {
                tracing::info!(
                    "the tenant's browser has had no session for tenant_browser_idle, stopping"
                );
                stop_resource(act, ctx, ExitReason::Idle);
            }
        }));
    }

    /// `Browser.getVersion` within `heartbeat_timeout`; a miss is a disconnect.
    pub(super) fn heartbeat(&mut self, ctx: &mut Context<Self>) {
        let Some(cdp) = self.cdp.clone() else { return };
        if self.heartbeat_in_flight || self.lost {
            return;
        }
        self.heartbeat_in_flight = true;
        let shared = self.shared.clone();
        let fut = async move {
            timed(&shared.stats, Op::Heartbeat, shared.config.heartbeat_timeout, cdp.version())
                .await
        };
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| {
            act.heartbeat_in_flight = false;
            if let Err(e) = res {
                act.disconnected(ctx, &format!("heartbeat failed: {e}"));
            }
        }));
    }

    /// The disconnect watch fired: fail the sessions, stop abnormally (the supervisor
    /// relaunches a local browser with backoff). Once per browser; never during a stop.
    pub(super) fn disconnected(&mut self, ctx: &mut Context<Self>, why: &str) {
        if self.lost || self.rcx.is_stopping() {
            return;
        }
        self.lost = true;
        BrowserStats::inc(&self.shared.stats.disconnects);
        tracing::warn!(why, sessions = self.contexts.len(), "browser disconnected");
        self.state = BrowserState::Down;
        self.cdp = None;
        self.lose_sessions();
        self.publish(ctx.address());
        stop_resource(self, ctx, ExitReason::error(format!("browser disconnected: {why}")));
    }

    /// Recycling: take no new sessions; stop (normally, so not relaunched) once the last one is
    /// gone.
    pub(super) fn drain(&mut self, ctx: &mut Context<Self>, why: &str) {
        if self.state != BrowserState::Ready || self.is_remote() {
            return;
        }
        tracing::info!(why, sessions = self.contexts.len(), "browser recycling: draining");
        self.state = BrowserState::Draining;
        self.publish(ctx.address());
        self.stop_if_drained(ctx);
    }

    pub(super) fn stop_if_drained(&mut self, ctx: &mut Context<Self>) {
        if self.state != BrowserState::Draining || !self.contexts.is_empty() || self.creating > 0 {
            return;
        }
        // its replacement starts on demand, with the next session that finds no room
        BrowserStats::inc(&self.shared.stats.recycled);
        stop_resource(self, ctx, ExitReason::Normal);
    }

    /// Disposes contexts (local browsers only: a remote one may serve other clients) and pages
    /// that no live session owns. Skips contexts while a creation is in flight.
    fn reconcile(&mut self, ctx: &mut Context<Self>) {
        let Some(cdp) = self.cdp.clone() else { return };
        if self.reconcile_in_flight || self.lost {
            return;
        }
        // owners that went without telling us (a session killed mid-creation)
        let gone: Vec<String> = self
            .contexts
            .iter()
            .filter(|(_, o)| !o.lost.connected())
            .map(|(id, _)| id.clone())
            .collect();
        for id in &gone {
            self.contexts.remove(id);
        }
        if !gone.is_empty() {
            self.arm_idle(ctx);
        }
        self.reconcile_in_flight = true;
        let epoch = self.epoch;
        let shared = self.shared.clone();
        let fut = async move {
            let (contexts, targets) = contexts_and_targets(&shared, &cdp).await?;
            Ok::<_, Error>((cdp, contexts, targets))
        };
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            act.reconcile_in_flight = false;
            let Ok((cdp, contexts, targets)) = res else { return };
            let quiet = act.creating == 0 && act.epoch == epoch;
            let mut stale_contexts = Vec::new();
            if quiet && !act.is_remote() {
                for c in contexts {
                    if !act.contexts.contains_key(c.inner()) && !act.disposing.contains(c.inner()) {
                        stale_contexts.push(c);
                    }
                }
            }
            let mut stale_pages = Vec::new();
            for t in targets.into_iter().filter(|t| t.r#type == "page") {
                let Some(c) = t.browser_context_id.as_ref() else { continue };
                if let Some(owned) = act.contexts.get(c.inner()) {
                    let set = lock(&owned.pages);
                    if set.opening == 0 && !set.ids.iter().any(|p| p == t.target_id.inner()) {
                        stale_pages.push(t.target_id);
                    }
                }
            }
            if stale_contexts.is_empty() && stale_pages.is_empty() {
                return;
            }
            let shared = act.shared.clone();
            tracing::info!(
                contexts = stale_contexts.len(),
                pages = stale_pages.len(),
                "reconciler: disposing what no live session owns"
            );
            ctx.spawn(
                async move {
                    let t = shared.config.command_timeout;
                    for page in stale_pages {
                        // a page opened since the snapshot by its own session is known by then
                        if timed(
                            &shared.stats,
                            Op::ClosePage,
                            t,
                            cdp.execute(CloseTargetParams::new(page)),
                        )
                        .await
                        .is_ok()
                        {
                            BrowserStats::inc(&shared.stats.reconciled);
                        }
                    }
                    for c in stale_contexts {
                        let dispose = cdp.execute(DisposeBrowserContextParams::new(c));
                        if timed(&shared.stats, Op::DisposeContext, t, dispose).await.is_ok() {
                            BrowserStats::inc(&shared.stats.reconciled);
                        }
                    }
                }
                .into_actor(act),
            );
        }));
    }
}

impl Handler<StopResource> for BrowserActor {
    type Result = ();

    fn handle(&mut self, msg: StopResource, ctx: &mut Context<Self>) {
        stop_resource(self, ctx, msg.reason);
    }
}

impl Resource for BrowserActor {
    fn resource_ctx(&self) -> &ResourceCtx {
        &self.rcx
    }

    fn resource_ctx_mut(&mut self) -> &mut ResourceCtx {
        &mut self.rcx
    }

    /// Sessions first (they fail with `browser_unavailable`), then `Browser.close` (local
    /// only: a remote browser is the tenant's), then wait for the process to exit and kill its
    /// group if it does not, then remove the profile directory. The tracker's shutdown that
    /// follows finds nothing left.
    fn cleanup(&mut self, reason: &ExitReason) -> LocalBoxFuture<'static, ()> {
        tracing::debug!(exit_reason = %reason, "browser stopping");
        self.state = BrowserState::Down;
        lock(&self.shared.pool).remove(&self.rcx.id());
        self.lose_sessions();
        let cdp = self.cdp.take().filter(|_| !self.is_remote() && !self.lost);
        let process = self.process.take();
        let dir = self.dir.take();
        let shared = self.shared.clone();
        Box::pin(async move {
            let close = shared.config.close_timeout;
            if let Some(cdp) = cdp {
                let _ = tokio::time::timeout(close, cdp.execute(CloseParams::default())).await;
            }
            if let Some(mut process) = process {
                let pgid = process.pid;
                if tokio::time::timeout(close, process.wait()).await.is_err() {
                    tracing::warn!(
                        pid = pgid,
                        "chromium did not exit after Browser.close, killing its group"
                    );
                }
                kill_group(pgid);
                let _ = tokio::time::timeout(close, process.wait()).await;
                // the leader is reaped; wait (briefly) for the rest of its group to be gone
                // before the profile directory is removed under it
                let deadline = tokio::time::Instant::now() + close;
                while !launch::group_usage(pgid).0.is_empty()
                    && tokio::time::Instant::now() < deadline
                {
                    kill_group(pgid);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            if let Some(dir) = dir {
                let path = dir.path().to_owned();
                if let Err(e) = dir.close() {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove the browser's directory");
                }
            }
        })
    }
}

fn kill_group(pgid: u32) {
    if let Ok(pgid) = i32::try_from(pgid) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pgid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Chromium's own view: its browser contexts (`Target.getBrowserContexts`) and targets
/// (`Target.getTargets`), each call within `[browser] command_timeout` (recorded as
/// `reconcile`).
///
/// # Errors
/// [`Error::DeadlineExceeded`] or the CDP error of either call.
pub(super) async fn contexts_and_targets(
    shared: &Shared,
    cdp: &Cdp,
) -> Result<(Vec<BrowserContextId>, Vec<TargetInfo>)> {
    let t = shared.config.command_timeout;
    let contexts = timed(&shared.stats, Op::Reconcile, t, cdp.execute(GetBrowserContextsParams {}))
        .await?
        .result
        .browser_context_ids;
    let targets = timed(&shared.stats, Op::Reconcile, t, cdp.execute(GetTargetsParams::default()))
        .await?
        .result
        .target_infos;
    Ok((contexts, targets))
}
