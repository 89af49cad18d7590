//! What a browser answers.

use std::sync::Arc;

use actix::prelude::*;
use chromiumoxide::Browser as Cdp;
use chromiumoxide::cdp::browser_protocol::target::{
    CreateBrowserContextParams, DisposeBrowserContextParams, GetBrowserContextsParams,
};

use super::messages::{
    AwaitReady, CreateContext, Disconnected, DisposeContext, ListTargets, Published,
};
use super::{BrowserActor, Owned};
use crate::cdp::{bounded, timed};
use crate::stats::{BrowserState, ChromiumView, Op, TargetView};
use crate::{Error, Result};

impl Handler<ListTargets> for BrowserActor {
    type Result = ResponseFuture<Result<ChromiumView>>;

    fn handle(&mut self, _: ListTargets, _: &mut Context<Self>) -> Self::Result {
        let Some(cdp) = self.cdp.clone().filter(|_| !self.lost) else {
            let why = format!("browser is {}", self.state.as_str());
            return Box::pin(std::future::ready(Err(Error::BrowserUnavailable(why))));
        };
        let shared = self.shared.clone();
        Box::pin(async move {
            let (contexts, targets) = super::actor::contexts_and_targets(&shared, &cdp).await?;
            Ok(ChromiumView {
                contexts: contexts.iter().map(|c| c.inner().clone()).collect(),
                targets: targets
                    .into_iter()
                    .map(|t| TargetView {
                        id: t.target_id.inner().clone(),
                        kind: t.r#type,
                        context: t.browser_context_id.map(|c| c.inner().clone()),
                        url: t.url,
                    })
                    .collect(),
            })
        })
    }
}

impl Handler<Published> for BrowserActor {
    type Result = ();

    fn handle(&mut self, _: Published, _ctx: &mut Context<Self>) {}
}

impl Handler<AwaitReady> for BrowserActor {
    type Result = ResponseFuture<Result<Arc<Cdp>>>;

    fn handle(&mut self, _: AwaitReady, _: &mut Context<Self>) -> Self::Result {
        match (&self.cdp, self.state) {
            (Some(cdp), BrowserState::Ready | BrowserState::Draining) => {
                let cdp = cdp.clone();
                Box::pin(async move { Ok(cdp) })
            }
            (_, BrowserState::Launching) => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                self.ready_waiters.push(tx);
                Box::pin(async move {
                    rx.await.unwrap_or(Err(Error::BrowserUnavailable("browser stopped".into())))
                })
            }
            _ => Box::pin(async { Err(Error::BrowserUnavailable("browser is down".into())) }),
        }
    }
}

impl Handler<CreateContext> for BrowserActor {
    type Result = ResponseActFuture<Self, Result<(String, Arc<Cdp>)>>;

    /// Verifies the browser is live (ready, watch not fired, not stopping) and creates the
    /// context; the creation's answer is itself the proof that the connection works. A failed
    /// creation is followed by a heartbeat, which turns a dead browser into a disconnect.
    fn handle(&mut self, msg: CreateContext, ctx: &mut Context<Self>) -> Self::Result {
        let live = self.state == BrowserState::Ready && !self.lost && !self.rcx.is_stopping();
        let Some(cdp) = self.cdp.clone().filter(|_| live) else {
            let why = format!("browser is {}", self.state.as_str());
            return Box::pin(fut::ready(Err(Error::BrowserUnavailable(why))));
        };
        self.creating += 1;
        self.arm_idle(ctx);
        self.epoch += 1;
        let shared = self.shared.clone();
        let proxy = msg.proxy.clone();
        let fut = async move {
            let params = CreateBrowserContextParams {
                // `<-loopback>`: Chromium would otherwise bypass any proxy for loopback
                proxy_bypass_list: proxy.as_ref().map(|_| "<-loopback>".to_owned()),
                proxy_server: proxy,
                ..CreateBrowserContextParams::default()
            };
            let t = shared.config.command_timeout;
            let created = timed(&shared.stats, Op::CreateContext, t, cdp.execute(params)).await;
            created.map(|r| (r.result.browser_context_id.inner().clone(), cdp))
        };
        Box::pin(fut.into_actor(self).map(move |res, act, ctx| {
            act.creating -= 1;
            match res {
                Ok((id, cdp)) => {
                    if act.lost || act.rcx.is_stopping() {
                        return Err(Error::BrowserUnavailable("browser stopped".into()));
                    }
                    act.contexts_created += 1;
                    act.contexts.insert(
                        id.clone(),
                        Owned { session: msg.session, lost: msg.lost, pages: msg.pages },
                    );
                    let limit = act.shared.config.recycle_after_contexts;
                    if limit > 0 && act.contexts_created >= u64::from(limit) {
                        act.drain(ctx, "contexts");
                    }
                    act.publish(ctx.address());
                    Ok((id, cdp))
                }
                Err(e) => {
                    act.heartbeat(ctx);
                    act.stop_if_drained(ctx);
                    act.arm_idle(ctx);
                    Err(e)
                }
            }
        }))
    }
}

impl Handler<DisposeContext> for BrowserActor {
    type Result = ResponseActFuture<Self, Result<()>>;

    /// Disposes the context and checks `Target.getBrowserContexts` no longer lists it.
    fn handle(&mut self, msg: DisposeContext, ctx: &mut Context<Self>) -> Self::Result {
        let owner = self.contexts.remove(&msg.context).map(|o| o.session);
        self.epoch += 1;
        self.publish(ctx.address());
        self.stop_if_drained(ctx);
        self.arm_idle(ctx);
        let Some(cdp) = self.cdp.clone().filter(|_| !self.lost) else {
            // the browser is gone or going: so is the context
            return Box::pin(fut::ready(Ok(())));
        };
        tracing::debug!(context = %msg.context, session = ?owner, "disposing context");
        self.disposing.insert(msg.context.clone());
        let context = msg.context.clone();
        let shared = self.shared.clone();
        let fut = async move {
            let t = shared.config.command_timeout;
            let dispose = DisposeBrowserContextParams::new(msg.context.clone());
            timed(&shared.stats, Op::DisposeContext, t, cdp.execute(dispose)).await?;
            let left = bounded(Op::DisposeContext, t, cdp.execute(GetBrowserContextsParams {}))
                .await?
                .result
                .browser_context_ids;
            if left.iter().any(|c| *c.inner() == msg.context) {
                return Err(Error::Protocol(format!(
                    "context {} still listed after disposal",
                    msg.context
                )));
            }
            Ok(())
        };
        Box::pin(fut.into_actor(self).map(move |res, act, _| {
            act.disposing.remove(&context);
            act.epoch += 1;
            res
        }))
    }
}

impl Handler<Disconnected> for BrowserActor {
    type Result = ();

    fn handle(&mut self, msg: Disconnected, ctx: &mut Context<Self>) {
        self.disconnected(ctx, &msg.why);
    }
}
