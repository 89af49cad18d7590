//! The stream resource: one actor per (tenant, stream name), kind `stream`, a temporary child of
//! the `streams` dynamic supervisor, started on the first publish or subscribe.
//!
//! It owns its store (the engine's state of this stream), its subscribers, its one timer (armed
//! at the earliest of the store's deadlines and its idle deadline; no periodic scan), the live
//! feed of a shared engine and any engine call in flight. All of them belong to the actor's
//! context and go when it stops: nothing it scheduled runs afterwards. An empty stream (no
//! history, no key, no subscriber) stops after `[streams] idle_timeout`.
//!
//! Publications reach subscribers in offset order, each exactly once: a memory stream fans out
//! what it stores in the same turn; a shared (Redis) stream fans out its live feed, skips what a
//! subscriber's snapshot already held, and fills gaps from the history (or ends the
//! subscriptions with `insufficient_state` when the history no longer reaches back).

mod actor;
mod handlers;
mod messages;
mod subscribers;
#[cfg(test)]
mod tests;

pub(crate) use messages::{GetHistory, GetInfo, GetLatest, Publish, RemoveKey, Subscribe};
pub use subscribers::{Delivery, Offer, Subscriber, Subscription};

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use steward_config::StreamsConfig;
use steward_core::ResourceCtx;

use crate::engine::{Budget, LiveEvent, StreamStore};
use crate::model::StreamRef;
use crate::service::StreamTable;
use crate::stats::StreamStats;
use subscribers::SubscriberSet;

/// Live publications a shared stream keeps to catch a new subscriber up with what was fanned
/// out while its snapshot was read.
const RECENT: usize = 1024;

/// What every stream of the node shares.
pub(crate) struct StreamEnv {
    /// Limits and timeouts.
    pub(crate) config: Arc<StreamsConfig>,
    /// Node-wide counters.
    pub(crate) stats: Arc<StreamStats>,
    /// Where streams are found by name.
    pub(crate) table: Arc<StreamTable>,
    /// Whether the engine is shared between nodes (its live feed is the one source of
    /// publications to fan out).
    pub(crate) shared: bool,
    /// The engine's name (`memory`, `redis`).
    pub(crate) engine: &'static str,
}

/// The stream actor. Other crates reach it through [`crate::Streams`].
pub struct StreamActor {
    /// Identity, tracker, lifeline.
    rcx: ResourceCtx,
    /// Tenant and name.
    stream: StreamRef,
    /// The engine's state of this stream.
    store: Box<dyn StreamStore>,
    /// Who receives its publications (shared with the [`Subscription`] guards).
    subscribers: Arc<SubscriberSet>,
    /// Keys last reported to the `keys` gauge.
    keys: u64,
    /// Whether the engine is shared between nodes (its live feed is the one source of
    /// publications to fan out).
    shared: bool,
    /// The engine's name (`memory`, `redis`).
    engine: &'static str,
    /// Subscriptions whose snapshot is being read (the live feed stays attached meanwhile).
    subscribing: usize,
    /// The live feed of a shared engine, while there are subscribers.
    live: Option<SpawnHandle>,
    /// Shared engines: the offset and epoch fanned out last (`None` before the first snapshot).
    delivered: Option<(u64, String)>,
    /// Shared engines: the last publications fanned out, newest last (at most [`RECENT`]).
    recent: VecDeque<Arc<Delivery>>,
    /// Shared engines: live events held while a gap is filled from the history.
    filling: Option<Vec<LiveEvent>>,
    /// The one timer, with its deadline.
    timer: Option<(Instant, SpawnHandle)>,
    /// Last request or publication (the idle deadline counts from it).
    last_active: Instant,
    /// Limits and timeouts.
    config: Arc<StreamsConfig>,
    /// Node-wide counters.
    stats: Arc<StreamStats>,
    /// The tenant's `stream_bytes` budget.
    budget: Arc<Budget>,
    /// Where the stream is found by name (its entry leaves with the actor).
    table: Arc<StreamTable>,
}

impl StreamActor {
    pub(crate) fn new(
        rcx: ResourceCtx,
        stream: StreamRef,
        store: Box<dyn StreamStore>,
        env: &StreamEnv,
        budget: Arc<Budget>,
    ) -> Self {
        Self {
            rcx,
            stream,
            store,
            subscribers: Arc::new(SubscriberSet::new(env.stats.clone())),
            keys: 0,
            shared: env.shared,
            engine: env.engine,
            subscribing: 0,
            live: None,
            delivered: None,
            recent: VecDeque::new(),
            filling: None,
            timer: None,
            last_active: Instant::now(),
            config: env.config.clone(),
            stats: env.stats.clone(),
            budget,
            table: env.table.clone(),
        }
    }
}
