//! The token-purge actor's life: its timer at the head of the deadline queue and its handlers.

use std::time::SystemTime;

use actix::prelude::*;
use steward_core::{Resource, ResourceCtx, StopResource, stop_resource};

use super::{TokenIssued, TokenPurge};

impl Actor for TokenPurge {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        *self.spec.link.addr.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(ctx.address().downgrade());
        self.tick(ctx);
    }
}

impl TokenPurge {
    /// Purges what is due, reloads the head of the queue from the store, re-arms the timer.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        self.busy = true;
        let now = SystemTime::now();
        let mut due = Vec::new();
        while self.queue.first().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, id)) = self.queue.pop_first() {
                due.push(id);
            }
        }
        let store = self.spec.store.clone();
        let batch = self.spec.batch;
        let work = async move {
            let mut purged = Vec::new();
            for id in due {
                match store.purge_expired(&id, now).await {
                    Ok(true) => purged.push(id),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(token_id = %id, error = %e, "cannot purge an expired token");
                    }
                }
            }
            (purged, store.earliest_expiries(batch).await)
        };
        ctx.spawn(work.into_actor(self).map(|(purged, head), act, ctx| {
            act.busy = false;
            for id in &purged {
                act.spec.cache.invalidate(id);
                tracing::info!(token_id = %id, "expired token purged");
            }
            act.spec
                .link
                .purged
                .fetch_add(purged.len() as u64, std::sync::atomic::Ordering::Relaxed);
            match head {
                Ok(head) => act.queue.extend(head.into_iter().map(|(id, at)| (at, id))),
                Err(e) => tracing::warn!(error = %e, "cannot read the token expiry index"),
            }
            act.trim();
            act.arm(ctx);
        }));
    }

    /// Keeps the queue bounded: the latest entries go (the store's index returns them later).
    fn trim(&mut self) {
        let max = 2 * self.spec.batch as usize;
        while self.queue.len() > max {
            self.queue.pop_last();
        }
    }

    /// Arms the one timer at the head of the queue, or `purge_max_sleep` from now.
    fn arm(&mut self, ctx: &mut Context<Self>) {
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        let now = SystemTime::now();
        let until_head = self
            .queue
            .first()
            .map_or(self.spec.max_sleep, |(at, _)| at.duration_since(now).unwrap_or_default());
        let delay = until_head.min(self.spec.max_sleep);
        self.timer = Some(self.rcx.run_later(ctx, delay, |act, ctx| {
            act.timer = None;
            act.tick(ctx);
        }));
    }
}

impl Resource for TokenPurge {
    fn resource_ctx(&self) -> &ResourceCtx {
        &self.rcx
    }

    fn resource_ctx_mut(&mut self) -> &mut ResourceCtx {
        &mut self.rcx
    }
}

impl Handler<StopResource> for TokenPurge {
    type Result = ();

    fn handle(&mut self, msg: StopResource, ctx: &mut Context<Self>) {
        stop_resource(self, ctx, msg.reason);
    }
}

impl Handler<TokenIssued> for TokenPurge {
    type Result = ();

    fn handle(&mut self, msg: TokenIssued, ctx: &mut Context<Self>) {
        let earliest = self.queue.first().is_none_or(|(at, _)| msg.expires_at < *at);
        self.queue.insert((msg.expires_at, msg.id));
        self.trim();
        if earliest && !self.busy {
            self.arm(ctx);
        }
    }
}
