//! The session's life: opening its context and first page, its expiry timer, and the total
//! close in its cleanup.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use chromiumoxide::cdp::browser_protocol::browser::BrowserContextId;
use chromiumoxide::cdp::browser_protocol::inspector::{self, EventTargetCrashed};
use chromiumoxide::cdp::browser_protocol::target::{CloseTargetParams, CreateTargetParams};
use chromiumoxide::{Browser as Cdp, Page};
use futures_util::StreamExt as _;
use futures_util::future::LocalBoxFuture;
use steward_core::{ExitReason, Resource, ResourceCtx, StopResource, stop_resource};

use super::messages::PageCrashed;
use super::{SessionActor, SessionHandle, ops};
use crate::browser::messages::{BrowserLost, CreateContext, DisposeContext};
use crate::cdp::{bounded, timed};
use crate::egress::{Egress, Gate};
use crate::shared::lock;
use crate::stats::{BrowserStats, Op};
use crate::{CloseReason, Error, Result};

/// What opening got as far as, so a half-open session still closes what it opened.
#[derive(Default)]
struct Opened {
    cdp: Option<Arc<Cdp>>,
    context: Option<String>,
    page: Option<Page>,
}

impl Actor for SessionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        lock(&self.start.shared.directory).insert(
            self.rcx.id(),
            SessionHandle {
                tenant: self.start.tenant.clone(),
                addr: ctx.address(),
                closed: self.start.closed.clone(),
                created: self.created,
            },
        );
        self.arm_expiry(ctx);
        if self.start.local {
            let shared = &self.start.shared;
            let gate = Arc::new(Gate::new(
                Some(self.start.policy.clone()),
                shared.egress_hosts.clone(),
                shared.walls.clone(),
                shared.stats.clone(),
            ));
            match Egress::start(self.rcx.tracker(), shared.io.as_ref(), gate.clone(), &shared.walls)
            {
                Ok(egress) => self.egress = Some((gate, egress)),
                Err(e) => {
                    let _ = self.start.failed.set(e);
                    self.close(ctx, CloseReason::Error);
                    return;
                }
            }
        }
        let open = self.open(ctx);
        ctx.wait(open.into_actor(self).map(|(opened, res), act, ctx| {
            act.cdp = opened.cdp;
            act.context = opened.context;
            if let Some(page) = opened.page {
                act.pages.push(page);
            }
            match res {
                Ok(()) => {
                    act.ready = true;
                    BrowserStats::inc(&act.start.shared.stats.sessions_created);
                    act.watch_crash(ctx, 0);
                }
                Err(e) => {
                    tracing::info!(error = %e, "session could not open");
                    let reason = if matches!(e, Error::BrowserUnavailable(_)) {
                        CloseReason::BrowserUnavailable
                    } else {
                        CloseReason::Error
                    };
                    let _ = act.start.failed.set(e);
                    act.close(ctx, reason);
                }
            }
        }));
    }
}

impl SessionActor {
    /// Asks the browser for a context (it verifies it is live first), opens the first page in
    /// it and applies the emulation.
    fn open(&self, ctx: &mut Context<Self>) -> LocalBoxFuture<'static, (Opened, Result<()>)> {
        let browser = self.start.browser.clone();
        let msg = CreateContext {
            session: self.rcx.id(),
            lost: ctx.address().recipient::<BrowserLost>(),
            pages: self.page_ids.clone(),
            proxy: self.egress.as_ref().map(|(_, e)| e.url()),
        };
        let page_ids = self.page_ids.clone();
        let shared = self.start.shared.clone();
        let options = self.start.options.clone();
        Box::pin(async move {
            let mut opened = Opened::default();
            let res = async {
                let (context, cdp) = browser
                    .send(msg)
                    .await
                    .map_err(|_| Error::BrowserUnavailable("the browser stopped".into()))??;
                opened.context = Some(context.clone());
                opened.cdp = Some(cdp.clone());
                let t = shared.config.command_timeout;
                let mut params = CreateTargetParams::new("about:blank");
                params.browser_context_id = Some(BrowserContextId::new(context));
                let page = open_page(&shared.stats, t, &cdp, params, &page_ids).await?;
                opened.page = Some(page.clone());
                ops::emulate(&page, &options, &shared.stats, t).await?;
                bounded(Op::Emulate, t, page.execute(inspector::EnableParams {})).await?;
                Ok(())
            }
            .await;
            (opened, res)
        })
    }

    /// Watches page `index` for a renderer crash (`Inspector.targetCrashed`), in a task of
    /// this session's tracker.
    pub(super) fn watch_crash(&self, ctx: &mut Context<Self>, index: usize) {
        let Some(page) = self.pages.get(index).cloned() else { return };
        let addr = ctx.address();
        let _ = self.rcx.tracker().spawn(async move {
            let Ok(mut crashes) = page.event_listener::<EventTargetCrashed>().await else { return };
            if crashes.next().await.is_some() {
                let _ = addr.try_send(PageCrashed);
            }
        });
    }

    /// One counted timer at the next deadline; on firing it closes the session or re-arms
    /// for the (later) deadline that activity moved it to.
    fn arm_expiry(&self, ctx: &mut Context<Self>) {
        let next = self.idle_deadline().min(self.lifetime_deadline());
        let delay = next.saturating_duration_since(Instant::now());
        self.rcx.run_later(ctx, delay, |act, ctx| {
            let now = Instant::now();
            if now >= act.lifetime_deadline() {
                act.close(ctx, CloseReason::MaxLifetime);
            } else if now >= act.idle_deadline() {
                act.close(ctx, CloseReason::Idle);
            } else {
                act.arm_expiry(ctx);
            }
        });
    }

    /// Closes the session for `reason` (the first reason wins).
    pub(super) fn close(&mut self, ctx: &mut Context<Self>, reason: CloseReason) {
        if self.rcx.is_stopping() {
            return;
        }
        self.reason.get_or_insert(reason);
        let exit = match reason {
            CloseReason::Client | CloseReason::MaxLifetime => ExitReason::Normal,
            CloseReason::Idle => ExitReason::Idle,
            CloseReason::Shutdown => ExitReason::Shutdown,
            CloseReason::BrowserUnavailable | CloseReason::PageCrashed | CloseReason::Error => {
                ExitReason::error(reason.as_str())
            }
        };
        tracing::debug!(reason = reason.as_str(), "session closing");
        stop_resource(self, ctx, exit);
    }
}

impl Handler<StopResource> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: StopResource, ctx: &mut Context<Self>) {
        let reason = match msg.reason {
            ExitReason::Idle => CloseReason::Idle,
            ExitReason::Normal | ExitReason::Shutdown => CloseReason::Shutdown,
            _ => CloseReason::Error,
        };
        self.close(ctx, reason);
    }
}

impl Resource for SessionActor {
    fn resource_ctx(&self) -> &ResourceCtx {
        &self.rcx
    }

    fn resource_ctx_mut(&mut self) -> &mut ResourceCtx {
        &mut self.rcx
    }

    /// Pages first, then the context (the browser verifies it is gone from its list). Nothing
    /// to close when the browser went away: it took both.
    fn cleanup(&mut self, _reason: &ExitReason) -> LocalBoxFuture<'static, ()> {
        let reason = self.reason.unwrap_or(CloseReason::Shutdown);
        let _ = self.start.closed.set(reason);
        self.jobs.clear();
        let pages = std::mem::take(&mut self.pages);
        let context = self.context.take();
        let cdp = self.cdp.take();
        let lost = self.browser_lost;
        let browser = self.start.browser.clone();
        let shared = self.start.shared.clone();
        Box::pin(async move {
            if lost {
                return;
            }
            let t = shared.config.command_timeout;
            if let Some(cdp) = &cdp {
                for page in pages {
                    let close = cdp.execute(CloseTargetParams::new(page.target_id().clone()));
                    if let Err(e) = timed(&shared.stats, Op::ClosePage, t, close).await {
                        tracing::debug!(error = %e, "page close failed; the context's disposal takes it");
                    }
                }
            }
            if let Some(context) = context {
                match browser.send(DisposeContext { context }).await {
                    Ok(Ok(())) | Err(_) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "context disposal failed; the reconciler will retry");
                    }
                }
            }
        })
    }
}

impl Drop for SessionActor {
    fn drop(&mut self) {
        lock(&self.start.shared.directory).remove(&self.rcx.id());
        let reason = self.reason.unwrap_or(CloseReason::Error);
        let _ = self.start.closed.set(reason);
        if reason != CloseReason::Client {
            lock(&self.start.shared.recent).insert(
                self.rcx.id(),
                self.start.tenant.clone(),
                reason,
            );
        }
        if self.ready {
            self.start.shared.stats.closed(reason);
        }
    }
}

/// Opens a page, counted as "opening" in `pages` until its id is known, so the reconciler never
/// takes it for an orphan.
pub(super) async fn open_page(
    stats: &BrowserStats,
    t: std::time::Duration,
    cdp: &Cdp,
    params: CreateTargetParams,
    pages: &crate::shared::Pages,
) -> Result<Page> {
    lock(pages).opening += 1;
    let page = timed(stats, Op::NewPage, t, cdp.new_page(params)).await;
    let mut set = lock(pages);
    set.opening -= 1;
    let page = page?;
    set.ids.push(page.target_id().inner().clone());
    Ok(page)
}
