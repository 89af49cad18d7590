//! The stream actor's life: start, its one timer, the live feed of a shared engine, stop.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use futures_util::FutureExt as _;
use steward_core::{ExitReason, Resource, ResourceCtx, StopResource, stop_resource};
use tokio_stream::wrappers::ReceiverStream;

use super::StreamActor;
use super::messages::SubscribersLeft;
use super::subscribers::Delivery;
use crate::engine::{LiveEvent, StoreFuture};
use crate::model::{HistoryQuery, StreamQuotas};

impl Actor for StreamActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.rearm(ctx);
    }

    fn stopping(&mut self, _ctx: &mut Self::Context) -> Running {
        self.release();
        Running::Stop
    }
}

impl Handler<StopResource> for StreamActor {
    type Result = ();

    fn handle(&mut self, msg: StopResource, ctx: &mut Self::Context) {
        stop_resource(self, ctx, msg.reason);
    }
}

impl Resource for StreamActor {
    fn resource_ctx(&self) -> &ResourceCtx {
        &self.rcx
    }

    fn resource_ctx_mut(&mut self) -> &mut ResourceCtx {
        &mut self.rcx
    }

    fn cleanup(
        &mut self,
        _reason: &ExitReason,
    ) -> futures_util::future::LocalBoxFuture<'static, ()> {
        self.release();
        Box::pin(std::future::ready(()))
    }
}

impl Drop for StreamActor {
    fn drop(&mut self) {
        // a kill skips `stopping`: release here too (idempotent)
        self.release();
        self.table.forget(&self.stream, self.rcx.id());
    }
}

impl StreamActor {
    /// Ends every subscription and takes this stream's keys off the gauge. Idempotent.
    fn release(&mut self) {
        self.subscribers.end_all(&self.stream.name, "stream_closed", "the stream stopped");
        self.stats.keys_changed(-(self.keys as i64));
        self.keys = 0;
    }

    /// Records activity (the idle deadline counts from it).
    pub(super) fn touch(&mut self) {
        self.last_active = Instant::now();
        self.rcx.touch();
    }

    /// Applies the tenant's quotas as the caller's token resolved them.
    pub(super) fn apply(&mut self, quotas: StreamQuotas) {
        self.store.set_max_keys(quotas.stream_keys);
        self.budget.set_limit(quotas.stream_bytes);
    }

    /// Reports the store's key count to the gauge.
    pub(super) fn report_keys(&mut self) {
        if let Some(keys) = self.store.keys() {
            self.stats.keys_changed(keys as i64 - self.keys as i64);
            self.keys = keys;
        }
    }

    /// Whether the stream holds nothing and nobody listens: only then does it idle.
    fn is_idle(&self) -> bool {
        self.store.is_empty() && self.subscribers.len() == 0 && self.live.is_none()
    }

    /// Arms the one timer at the earliest deadline: the store's next expiry, or the idle
    /// deadline of an empty, unwatched stream. Nothing changes when that deadline is armed
    /// already.
    pub(super) fn rearm(&mut self, ctx: &mut Context<Self>) {
        if self.rcx.is_stopping() {
            return;
        }
        if self.live.is_some() && self.subscribers.len() == 0 && self.subscribing == 0 {
            // nobody listens here any more: a shared engine stops sending this node the channel
            self.detach_live(ctx);
        }
        let idle = self.is_idle().then(|| self.last_active + self.config.idle_timeout);
        let due = match (self.store.next_deadline(), idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if self.timer.as_ref().map(|(at, _)| *at) == due {
            return;
        }
        if let Some((_, handle)) = self.timer.take() {
            ctx.cancel_future(handle);
        }
        if let Some(at) = due {
            let delay = at.saturating_duration_since(Instant::now());
            let handle = self.rcx.run_later(ctx, delay, |act: &mut Self, ctx| act.on_timer(ctx));
            self.timer = Some((at, handle));
        }
    }

    fn on_timer(&mut self, ctx: &mut Context<Self>) {
        self.timer = None;
        self.stats.timer_fired();
        let now = Instant::now();
        let expired = self.store.expire(now);
        self.stats.expired(expired.keys, expired.publications);
        self.report_keys();
        if self.is_idle() && now >= self.last_active + self.config.idle_timeout {
            tracing::debug!(stream = %self.stream, "idle and empty, stopping");
            stop_resource(self, ctx, ExitReason::Idle);
            return;
        }
        self.rearm(ctx);
    }

    /// Runs a store call: a ready answer (the memory engine) is handled in this turn, a pending
    /// one (Redis) when it arrives, inside the actor's context (it goes with the actor).
    pub(super) fn respond<T: 'static, U: 'static>(
        &mut self,
        ctx: &mut Context<Self>,
        mut call: StoreFuture<T>,
        then: impl FnOnce(&mut Self, &mut Context<Self>, crate::Result<T>) -> crate::Result<U> + 'static,
    ) -> ResponseActFuture<Self, crate::Result<U>> {
        if let Some(answer) = (&mut call).now_or_never() {
            let answer = then(self, ctx, answer);
            return Box::pin(actix::fut::ready(answer));
        }
        Box::pin(call.into_actor(self).map(move |answer, act, ctx| {
            let answer = then(act, ctx, answer);
            act.rearm(ctx);
            answer
        }))
    }

    /// Shared engines: starts listening to the live feed (before a snapshot is read, so
    /// nothing published after it is missed).
    pub(super) fn attach_live(&mut self, ctx: &mut Context<Self>) {
        if !self.shared || self.live.is_some() {
            return;
        }
        if let Some(rx) = self.store.live() {
            self.live = Some(ctx.add_stream(ReceiverStream::new(rx)));
        }
    }

    /// Stops listening (no subscriber left, or the feed was lost).
    fn detach_live(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.live.take() {
            ctx.cancel_future(handle);
        }
        self.delivered = None;
        self.recent.clear();
        self.filling = None;
    }

    /// Fans out one publication of a shared engine's feed, in offset order: skips what was
    /// delivered, fills a gap from the history first.
    fn on_live(&mut self, event: LiveEvent, ctx: &mut Context<Self>) {
        if let Some(held) = &mut self.filling {
            held.push(event);
            return;
        }
        let (epoch, publication) = match event {
            LiveEvent::Lost(reason) => {
                self.stats.live_lost();
                tracing::warn!(stream = %self.stream, %reason, "live feed lost; subscribers told to recover");
                self.subscribers.end_all(&self.stream.name, "unavailable", &reason);
                self.detach_live(ctx);
                self.rearm(ctx);
                return;
            }
            LiveEvent::Publication { epoch, publication } => (epoch, publication),
        };
        match &self.delivered {
            Some((_, e)) if *e != epoch => {
                self.subscribers.end_all(
                    &self.stream.name,
                    "insufficient_state",
                    "the stream's history was lost (new epoch)",
                );
                self.recent.clear();
            }
            Some((top, _)) if publication.offset <= *top => return,
            Some((top, _)) if publication.offset > top + 1 => {
                let top = *top;
                self.fill_gap(top, epoch, publication, ctx);
                return;
            }
            _ => {}
        }
        self.deliver(&epoch, publication);
    }

    /// Delivers one publication to the subscribers and remembers it.
    pub(super) fn deliver(&mut self, epoch: &str, publication: crate::model::Publication) {
        let offset = publication.offset;
        let delivery = Arc::new(Delivery::new(self.stream.name.clone(), epoch.into(), publication));
        self.subscribers.fan_out(&delivery);
        if self.shared {
            self.recent.push_back(delivery);
            while self.recent.len() > super::RECENT {
                self.recent.pop_front();
            }
            self.delivered = Some((offset, epoch.to_owned()));
        }
    }

    /// A gap after `top` in the live feed: holds the feed, reads the history since `top`,
    /// delivers it, then what was held. When the history no longer reaches back, every
    /// subscription ends with `insufficient_state` (the clients recover by position).
    fn fill_gap(
        &mut self,
        top: u64,
        epoch: String,
        first: crate::model::Publication,
        ctx: &mut Context<Self>,
    ) {
        let first = LiveEvent::Publication { epoch: epoch.clone(), publication: first };
        self.filling = Some(vec![first]);
        let since = Some(crate::model::Position { offset: top, epoch: epoch.clone() });
        let limit = self.config.history_size as usize;
        let call = self.store.history(HistoryQuery { since, limit, reverse: false });
        ctx.spawn(call.into_actor(self).map(move |page, act, ctx| {
            // the feed was detached meanwhile (no subscriber left, or lost): nothing to fill
            let Some(held) = act.filling.take() else { return };
            match page {
                Ok(page)
                    if page.position.epoch == epoch
                        && page.publications.first().is_none_or(|p| p.offset == top + 1) =>
                {
                    act.stats.gap_filled();
                    for p in page.publications {
                        act.deliver(&epoch, p);
                    }
                }
                _ => {
                    act.subscribers.end_all(
                        &act.stream.name,
                        "insufficient_state",
                        "publications were missed and the history no longer has them",
                    );
                    act.recent.clear();
                    act.delivered = None;
                }
            }
            for event in held {
                act.on_live(event, ctx);
            }
        }));
    }
}

impl StreamHandler<LiveEvent> for StreamActor {
    fn handle(&mut self, event: LiveEvent, ctx: &mut Context<Self>) {
        if !self.rcx.is_stopping() {
            self.on_live(event, ctx);
        }
    }

    /// The engine dropped the feed: tell subscribers, like a lost feed; the stream lives on.
    fn finished(&mut self, ctx: &mut Context<Self>) {
        if self.live.is_some() {
            self.on_live(LiveEvent::Lost("the live feed ended".into()), ctx);
        }
    }
}

impl Handler<SubscribersLeft> for StreamActor {
    type Result = ();

    fn handle(&mut self, _msg: SubscribersLeft, ctx: &mut Context<Self>) {
        if self.subscribers.len() == 0 {
            self.touch();
            self.rearm(ctx);
        }
    }
}
