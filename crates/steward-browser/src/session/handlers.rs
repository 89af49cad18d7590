//! What a session answers. Every call counts as activity (extends the idle deadline).

use actix::prelude::*;
use chromiumoxide::cdp::browser_protocol::browser::BrowserContextId;
use chromiumoxide::cdp::browser_protocol::target::{CloseTargetParams, CreateTargetParams};

use super::messages::{
    AwaitReady, Close, ClosePage, GetInfo, NewPage, PageCrashed, PageOp, PageOutput, RunOp,
    SubmitJob, TakeResult,
};
use super::{JobSlot, MAX_JOBS, SessionActor, ops};
use crate::browser::messages::BrowserLost;
use crate::cdp::timed;
use crate::service::Capture;
use crate::shared::lock;
use crate::stats::Op;
use crate::{CloseReason, Error, Result, SessionInfo};

impl SessionActor {
    fn closed_error(&self) -> Error {
        super::closed_error(self.reason)
    }

    fn usable(&mut self) -> Result<()> {
        if self.rcx.is_stopping() || !self.ready {
            return Err(self.closed_error());
        }
        self.touch();
        Ok(())
    }
}

impl Handler<AwaitReady> for SessionActor {
    type Result = Result<SessionInfo>;

    fn handle(&mut self, _: AwaitReady, _: &mut Context<Self>) -> Self::Result {
        if let Some(e) = self.start.failed.get() {
            return Err(e.clone());
        }
        self.usable()?;
        Ok(self.info())
    }
}

impl Handler<GetInfo> for SessionActor {
    type Result = Result<SessionInfo>;

    fn handle(&mut self, msg: GetInfo, _: &mut Context<Self>) -> Self::Result {
        if self.rcx.is_stopping() || !self.ready {
            return Err(self.closed_error());
        }
        if msg.touch {
            self.touch();
        }
        Ok(self.info())
    }
}

impl Handler<Close> for SessionActor {
    type Result = ();

    fn handle(&mut self, _: Close, ctx: &mut Context<Self>) {
        self.close(ctx, CloseReason::Client);
    }
}

impl Handler<BrowserLost> for SessionActor {
    type Result = ();

    fn handle(&mut self, _: BrowserLost, ctx: &mut Context<Self>) {
        self.browser_lost = true;
        self.close(ctx, CloseReason::BrowserUnavailable);
    }
}

impl Handler<PageCrashed> for SessionActor {
    type Result = ();

    fn handle(&mut self, _: PageCrashed, ctx: &mut Context<Self>) {
        tracing::warn!("page crashed, closing its session");
        self.close(ctx, CloseReason::PageCrashed);
    }
}

impl Handler<NewPage> for SessionActor {
    type Result = ResponseActFuture<Self, Result<String>>;

    fn handle(&mut self, msg: NewPage, _: &mut Context<Self>) -> Self::Result {
        if let Err(e) = self.usable() {
            return Box::pin(fut::ready(Err(e)));
        }
        // counted with the pages being opened, so concurrent calls cannot pass the limit
        let open = {
            let set = lock(&self.page_ids);
            set.ids.len() + set.opening as usize
        };
        if open >= msg.limit as usize {
            return Box::pin(fut::ready(Err(Error::ResourceExhausted {
                quota: "pages_per_session",
                retry_after: None,
            })));
        }
        let (Some(cdp), Some(context)) = (self.cdp.clone(), self.context.clone()) else {
            return Box::pin(fut::ready(Err(self.closed_error())));
        };
        let shared = self.start.shared.clone();
        let options = self.start.options.clone();
        let page_ids = self.page_ids.clone();
        let fut = async move {
            let t = shared.config.command_timeout;
            let mut params = CreateTargetParams::new("about:blank");
            params.browser_context_id = Some(BrowserContextId::new(context));
            let page = super::actor::open_page(&shared.stats, t, &cdp, params, &page_ids).await?;
            if let Err(e) = ops::emulate(&page, &options, &shared.stats, t).await {
                let _ = cdp.execute(CloseTargetParams::new(page.target_id().clone())).await;
                lock(&page_ids).ids.retain(|p| p != page.target_id().inner());
                return Err(e);
            }
            Ok(page)
        };
        Box::pin(fut.into_actor(self).map(|res, act, ctx| {
            let page = res?;
            let id = page.target_id().inner().clone();
            act.pages.push(page);
            act.watch_crash(ctx, act.pages.len() - 1);
            Ok(id)
        }))
    }
}

impl Handler<ClosePage> for SessionActor {
    type Result = ResponseActFuture<Self, Result<()>>;

    fn handle(&mut self, msg: ClosePage, _: &mut Context<Self>) -> Self::Result {
        if let Err(e) = self.usable() {
            return Box::pin(fut::ready(Err(e)));
        }
        let Some(i) = self.pages.iter().position(|p| *p.target_id().inner() == msg.page) else {
            return Box::pin(fut::ready(Err(Error::NotFound(format!("page {}", msg.page)))));
        };
        if self.pages.len() == 1 {
            return Box::pin(fut::ready(Err(Error::invalid(
                "page_id",
                "is the session's last page; close the session instead",
            ))));
        }
        let page = self.pages.remove(i);
        lock(&self.page_ids).ids.retain(|p| *p != msg.page);
        let Some(cdp) = self.cdp.clone() else {
            return Box::pin(fut::ready(Ok(())));
        };
        let shared = self.start.shared.clone();
        let fut = async move {
            let t = shared.config.command_timeout;
            let close = cdp.execute(CloseTargetParams::new(page.target_id().clone()));
            timed(&shared.stats, Op::ClosePage, t, close).await.map(|_| ())
        };
        Box::pin(fut.into_actor(self))
    }
}

impl Handler<RunOp> for SessionActor {
    type Result = ResponseActFuture<Self, Result<PageOutput>>;

    fn handle(&mut self, msg: RunOp, _: &mut Context<Self>) -> Self::Result {
        let page = match self.usable().and_then(|()| self.page(msg.page.as_deref())) {
            Ok(page) => page,
            Err(e) => return Box::pin(fut::ready(Err(e))),
        };
        self.refresh_policy(&msg.policy);
        let refusals = self.refusals();
        let shared = self.start.shared.clone();
        let policy = msg.policy;
        let fut = async move {
            let (stats, config) = (&shared.stats, &shared.config);
            if !matches!(msg.op, PageOp::Navigate(_)) {
                // read only from where the tenant may be (the page may have moved by itself)
                ops::check_current(&page, &policy, config).await?;
            }
            Ok(match msg.op {
                PageOp::Navigate(req) => PageOutput::Navigated(
                    ops::navigate(&page, &req, &policy, refusals.as_deref(), stats, config).await?,
                ),
                PageOp::Screenshot(req) => {
                    PageOutput::Bytes(ops::screenshot(&page, &req, stats, config).await?)
                }
                PageOp::Pdf(req) => PageOutput::Bytes(ops::pdf(&page, &req, stats, config).await?),
                PageOp::Evaluate(req) => {
                    PageOutput::Text(ops::evaluate(&page, &req, stats, config).await?)
                }
                PageOp::Content => PageOutput::Text(ops::content(&page, stats, config).await?),
            })
        };
        Box::pin(fut.into_actor(self).map(|res, act, _| {
            act.touch();
            // a call cut short by its browser going away reports that, not the symptom
            match res {
                Err(Error::BrowserUnavailable(_) | Error::Protocol(_)) if act.browser_lost => {
                    Err(Error::BrowserUnavailable("the session's browser went away".into()))
                }
                other => other,
            }
        }))
    }
}

impl Handler<SubmitJob> for SessionActor {
    type Result = Result<()>;

    fn handle(&mut self, msg: SubmitJob, ctx: &mut Context<Self>) -> Self::Result {
        self.usable()?;
        if self.jobs.len() >= MAX_JOBS {
            return Err(Error::ResourceExhausted { quota: "session_jobs", retry_after: None });
        }
        let page = self.page(match &msg.capture {
            Capture::Screenshot(r) => r.page.as_deref(),
            Capture::Pdf(r) => r.page.as_deref(),
        })?;
        let kind = match &msg.capture {
            Capture::Screenshot(r) if r.format == crate::ImageFormat::Jpeg => "image/jpeg",
            Capture::Screenshot(_) => "image/png",
            Capture::Pdf(_) => "application/pdf",
        };
        self.jobs.insert(msg.job.clone(), JobSlot::Running);
        self.refresh_policy(&msg.policy);
        let shared = self.start.shared.clone();
        let mut report = msg.report;
        let job = msg.job;
        let policy = msg.policy;
        let fut = async move {
            report.running().await;
            let (stats, config) = (&shared.stats, &shared.config);
            let res = match ops::check_current(&page, &policy, config).await {
                Err(e) => Err(e),
                Ok(()) => match &msg.capture {
                    Capture::Screenshot(r) => ops::screenshot(&page, r, stats, config).await,
                    Capture::Pdf(r) => ops::pdf(&page, r, stats, config).await,
                },
            };
            (res, report)
        };
        ctx.spawn(fut.into_actor(self).then(move |(res, report), act, _| {
            act.touch();
            let size = res.as_ref().map(Vec::len).map_err(Clone::clone);
            match res {
                Ok(bytes) => {
                    act.jobs.insert(job, JobSlot::Done(bytes, kind));
                }
                Err(_) => {
                    act.jobs.remove(&job);
                }
            }
            report.finished(size).into_actor(act)
        }));
        Ok(())
    }
}

impl Handler<TakeResult> for SessionActor {
    type Result = Result<(Vec<u8>, &'static str)>;

    fn handle(&mut self, msg: TakeResult, _: &mut Context<Self>) -> Self::Result {
        self.usable()?;
        match self.jobs.remove(&msg.job) {
            Some(JobSlot::Done(bytes, kind)) => Ok((bytes, kind)),
            Some(JobSlot::Running) => {
                self.jobs.insert(msg.job.clone(), JobSlot::Running);
                Err(Error::NotFound(format!("result of job {} (still running)", msg.job)))
            }
            None => Err(Error::NotFound(format!("result of job {}", msg.job))),
        }
    }
}
