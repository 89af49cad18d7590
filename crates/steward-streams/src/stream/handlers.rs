//! What a stream does with each request.

use std::sync::Arc;

use actix::prelude::*;

use super::StreamActor;
use super::messages::{GetHistory, GetInfo, GetLatest, Publish, RemoveKey, Subscribe};
use super::subscribers::{Offer, Subscriber, Subscription};
use crate::model::{HistoryPage, Position, Publication, Published, Snapshot, StreamInfo};
use crate::stats::RecoveryOutcome;
use crate::{Error, Result};

impl Handler<Publish> for StreamActor {
    type Result = ResponseActFuture<Self, Result<Published>>;

    fn handle(&mut self, msg: Publish, ctx: &mut Context<Self>) -> Self::Result {
        self.touch();
        self.apply(msg.quotas);
        let call = self.store.publish(msg.publication);
        self.respond(ctx, call, |act, ctx, published| {
            match &published {
                Ok(p) => {
                    act.stats.published(p.duplicate);
                    // a shared engine's publications come back through its live feed
                    if !act.shared
                        && let Some(publication) = &p.publication
                    {
                        act.deliver(&p.position.epoch, publication.clone());
                    }
                }
                Err(Error::QuotaExceeded { .. }) => act.stats.refused(),
                Err(_) => {}
            }
            act.report_keys();
            act.rearm(ctx);
            published
        })
    }
}

impl Handler<Subscribe> for StreamActor {
    type Result = ResponseActFuture<Self, Result<Subscription>>;

    fn handle(&mut self, msg: Subscribe, ctx: &mut Context<Self>) -> Self::Result {
        self.touch();
        self.apply(msg.quotas);
        // listen first: whatever is published after the snapshot arrives on the feed
        self.attach_live(ctx);
        self.subscribing += 1;
        let Subscribe { since, latest, subscriber, .. } = msg;
        let call = self.store.snapshot(since, latest);
        self.respond(ctx, call, move |act, ctx, snapshot| {
            act.subscribing -= 1;
            let answer = snapshot.and_then(|s| act.admit(&s, subscriber, ctx));
            act.rearm(ctx);
            answer
        })
    }
}

impl StreamActor {
    /// Offers `snapshot` to `subscriber` and adds it, catching it up with what was fanned out
    /// while the snapshot was read (shared engines).
    fn admit(
        &mut self,
        snapshot: &Snapshot,
        subscriber: Arc<dyn Subscriber>,
        ctx: &mut Context<Self>,
    ) -> Result<Subscription> {
        if self.rcx.is_stopping() {
            return Err(Error::Unavailable("the stream is stopping".into()));
        }
        let top = snapshot.position.offset;
        let mut catch_up = Vec::new();
        if self.shared {
            // the feed was lost (and detached) while this snapshot was read: listen again; a
            // publication missed in between shows as a gap and is filled from the history
            self.attach_live(ctx);
            match &self.delivered {
                None => self.delivered = Some((top, snapshot.position.epoch.clone())),
                Some((_, epoch)) if *epoch != snapshot.position.epoch => {
                    // the history was lost between the feed and the snapshot: start over
                    self.subscribers.end_all(
                        &self.stream.name,
                        "insufficient_state",
                        "the stream's history was lost (new epoch)",
                    );
                    self.recent.clear();
                    self.delivered = Some((top, snapshot.position.epoch.clone()));
                }
                Some((delivered, _)) if *delivered > top => {
                    if self.recent.front().is_none_or(|d| d.publication.offset > top + 1) {
                        return Err(Error::Unavailable(
                            "the stream moved on while subscribing; subscribe again".into(),
                        ));
                    }
                    catch_up = self
                        .recent
                        .iter()
                        .filter(|d| d.publication.offset > top)
                        .cloned()
                        .collect();
                }
                Some(_) => {}
            }
        }
        if snapshot.was_recovering {
            self.stats.recovery(if snapshot.recovered {
                RecoveryOutcome::Recovered
            } else {
                RecoveryOutcome::Failed
            });
        }
        if !snapshot.latest.is_empty() {
            self.stats.lookup(true);
        }
        if subscriber.subscribed(&self.stream.name, snapshot) != Offer::Queued {
            return Err(Error::Unavailable("the subscriber is gone".into()));
        }
        let mut from = top;
        for delivery in catch_up {
            if subscriber.publication(&delivery) != Offer::Queued {
                return Err(Error::Unavailable("the subscriber is gone".into()));
            }
            from = delivery.publication.offset;
        }
        let notify = ctx.address().downgrade().recipient();
        Ok(self.subscribers.add(subscriber, from, notify))
    }
}

impl Handler<GetHistory> for StreamActor {
    type Result = ResponseActFuture<Self, Result<HistoryPage>>;

    fn handle(&mut self, msg: GetHistory, ctx: &mut Context<Self>) -> Self::Result {
        self.touch();
        let call = self.store.history(msg.0);
        self.respond(ctx, call, |_, _, page| page)
    }
}

impl Handler<GetLatest> for StreamActor {
    type Result = ResponseActFuture<Self, Result<(Position, Vec<Publication>)>>;

    fn handle(&mut self, msg: GetLatest, ctx: &mut Context<Self>) -> Self::Result {
        self.touch();
        let one = msg.0.is_some();
        let call = self.store.latest(msg.0);
        self.respond(ctx, call, move |act, _, latest| {
            match &latest {
                Ok(_) if one => act.stats.lookup(true),
                Err(Error::NotFound(_)) => act.stats.lookup(false),
                _ => {}
            }
            latest
        })
    }
}

impl Handler<RemoveKey> for StreamActor {
    type Result = ResponseActFuture<Self, Result<bool>>;

    fn handle(&mut self, msg: RemoveKey, ctx: &mut Context<Self>) -> Self::Result {
        self.touch();
        let call = self.store.remove_key(msg.0);
        self.respond(ctx, call, |act, ctx, removed| {
            act.report_keys();
            act.rearm(ctx);
            removed
        })
    }
}

impl Handler<GetInfo> for StreamActor {
    type Result = ResponseActFuture<Self, Result<StreamInfo>>;

    fn handle(&mut self, _msg: GetInfo, ctx: &mut Context<Self>) -> Self::Result {
        self.touch();
        let call = self.store.info();
        let engine = self.engine;
        self.respond(ctx, call, move |act, _, store| {
            store.map(|store| StreamInfo {
                store,
                subscribers: act.subscribers.len() as u64,
                engine,
            })
        })
    }
}
