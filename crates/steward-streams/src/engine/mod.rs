//! Engines: where a stream keeps its history and latest values. One trait, two engines, one
//! conformance suite (`tests/`, run against both).
//!
//! An [`Engine`] is shared by the node; it opens one [`StreamStore`] per stream, owned by that
//! stream's actor. A store's operations return futures, but they take effect in call order:
//! the memory store computes everything before it returns (its futures are ready at once, and
//! the actor uses the answer in the same turn), the Redis store sends its command before it
//! returns (one connection, commands answered in order).
//!
//! - [`memory`]: the default. The store is plain state of the actor: a ring of publications
//!   (`history_size`, `history_ttl`), the latest value per key (`key_ttl`), remembered
//!   idempotency keys, and one deadline queue over all three; lost when the stream stops.
//! - [`redis`]: Redis 7.0 or later. Each publish is one Lua script (offset, `XADD … MAXLEN`,
//!   latest value, key expiry on Redis time, `PUBLISH` for the other nodes); a node listens to a
//!   stream's channel only while it has local subscribers ([`StreamStore::live`]).

pub mod memory;
pub mod redis;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::LocalBoxFuture;
use tokio::sync::mpsc;

use crate::Result;
use crate::model::{
    HistoryPage, HistoryQuery, NewPublication, Position, Publication, Published, Snapshot,
    StoreInfo, StreamRef,
};

/// A store operation's answer. Futures are local: a store lives on its actor's arbiter.
pub type StoreFuture<T> = LocalBoxFuture<'static, Result<T>>;

/// Where streams keep their data. Shared by the node (`Send + Sync`).
pub trait Engine: Send + Sync + 'static {
    /// `memory` or `redis`, for logs and `/metrics`.
    fn name(&self) -> &'static str;

    /// Opens the store of one stream. Called by the stream actor's factory, on its arbiter; the
    /// store lives as long as the actor.
    fn open(&self, stream: &StreamRef, limits: StreamLimits) -> Box<dyn StreamStore>;

    /// Whether streams live outside this node (Redis): then a read of a stream this node has
    /// no actor for opens one, since another node may have published to it. Default false.
    fn is_shared(&self) -> bool {
        false
    }

    /// Background work the engine needs while the node runs (Redis: the one pub/sub connection
    /// that feeds every stream's live channel, reconnecting with backoff). The `stream-engine`
    /// service runs it on its arbiter through its tracker, and its supervisor restarts the
    /// service when it ends. Default: none.
    fn run(&self) -> Option<LocalBoxFuture<'static, ()>> {
        None
    }
}

/// The limits a store applies.
#[derive(Debug, Clone)]
pub struct StreamLimits {
    /// Publications kept (`[streams] history_size`).
    pub history_size: u32,
    /// How long a publication stays in the history (`[streams] history_ttl`).
    pub history_ttl: Duration,
    /// How long a key's latest value lives after its last publication; `None` forever
    /// (`[streams] key_ttl`).
    pub key_ttl: Option<Duration>,
    /// How long an idempotency key is remembered (`[streams] idempotency_window`).
    pub idempotency_window: Duration,
    /// Most keys with a latest value (the tenant's `stream_keys` quota); updated with
    /// [`StreamStore::set_max_keys`].
    pub max_keys: u64,
    /// Most latest values answered at once (`[streams] max_latest`).
    pub max_latest: usize,
    /// The tenant's `stream_bytes` budget, shared by its streams on this node.
    pub budget: Arc<Budget>,
}

/// One stream's data, owned by its actor. Every operation is applied in call order (see the
/// module docs); a failed one changes nothing.
pub trait StreamStore {
    /// Appends a publication (or answers the earlier one with the same idempotency key).
    ///
    /// # Errors
    /// `QuotaExceeded` (`stream_keys` for a new key beyond the limit, `stream_bytes` beyond the
    /// tenant's budget), `Unavailable` when the engine cannot be reached.
    fn publish(&mut self, publication: NewPublication) -> StoreFuture<Published>;

    /// What a new subscriber gets: the top, the publications after `since` (all or nothing),
    /// and the latest values when `latest`.
    ///
    /// # Errors
    /// `Unavailable`.
    fn snapshot(&mut self, since: Option<Position>, latest: bool) -> StoreFuture<Snapshot>;

    /// A page of history.
    ///
    /// # Errors
    /// `Unrecoverable` when `since` names another epoch or an offset past the top;
    /// `Unavailable`.
    fn history(&mut self, query: HistoryQuery) -> StoreFuture<HistoryPage>;

    /// The latest value of `key` (`None`: of every key, most recent first, at most
    /// `max_latest`), with the top.
    ///
    /// # Errors
    /// `NotFound` for a key without a live value; `Unavailable`.
    fn latest(&mut self, key: Option<Arc<str>>) -> StoreFuture<(Position, Vec<Publication>)>;

    /// Removes the latest value of `key`; answers whether it had one. The history keeps its
    /// publications.
    ///
    /// # Errors
    /// `Unavailable`.
    fn remove_key(&mut self, key: Arc<str>) -> StoreFuture<bool>;

    /// What the stream holds.
    ///
    /// # Errors
    /// `Unavailable`.
    fn info(&mut self) -> StoreFuture<StoreInfo>;

    /// The tenant's `stream_keys` quota changed.
    fn set_max_keys(&mut self, max_keys: u64);

    /// The earliest moment something held expires (memory only; Redis expires on its own).
    fn next_deadline(&self) -> Option<Instant> {
        None
    }

    /// Drops what expired by `now`; answers what went. Memory only.
    fn expire(&mut self, _now: Instant) -> Expired {
        Expired::default()
    }

    /// Keys with a latest value, when the store knows it without a round trip (memory), for the
    /// `steward_stream_keys` gauge. Default `None`.
    fn keys(&self) -> Option<u64> {
        None
    }

    /// Whether the store holds nothing in this node's memory (an empty memory stream may stop
    /// when idle; a Redis stream holds nothing here).
    fn is_empty(&self) -> bool;

    /// Live publications from every node, for engines shared between nodes (Redis: the
    /// stream's pub/sub channel). `None` when the stream's own publishes are all there is
    /// (memory): then the actor fans out what it publishes. Called when the first local
    /// subscriber arrives; dropping the receiver unsubscribes from the channel.
    fn live(&mut self) -> Option<mpsc::Receiver<LiveEvent>> {
        None
    }
}

/// What expired in one [`StreamStore::expire`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expired {
    /// Latest values whose key TTL passed.
    pub keys: u64,
    /// Publications that left the history (`history_ttl`).
    pub publications: u64,
}

/// An event of a shared engine's live feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveEvent {
    /// A publication of any node, in offset order, with the epoch it belongs to.
    Publication {
        /// The history's epoch.
        epoch: String,
        /// The publication.
        publication: Publication,
    },
    /// The feed was interrupted (the engine's connection dropped): publications may have been
    /// missed, so subscribers are told to recover.
    Lost(String),
}

/// A tenant's `stream_bytes` budget on this node: bytes held by all its streams, against its
/// limit (the quota as last seen). Charges are taken with [`Budget::charge`] and given back
/// when the [`Charge`] drops.
#[derive(Debug)]
pub struct Budget {
    used: AtomicU64,
    limit: AtomicU64,
}

impl Budget {
    /// A budget of `limit` bytes.
    #[must_use]
    pub fn new(limit: u64) -> Self {
        Self { used: AtomicU64::new(0), limit: AtomicU64::new(limit) }
    }

    /// Sets the limit (the tenant's quota changed); what is held stays.
    pub fn set_limit(&self, limit: u64) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// Bytes held now.
    #[must_use]
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// The limit.
    #[must_use]
    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Takes `bytes` from the budget, or `None` when they do not fit (one compare-and-swap loop:
    /// concurrent charges never overshoot the limit).
    #[must_use]
    pub fn charge(self: &Arc<Self>, bytes: u64) -> Option<Charge> {
        let limit = self.limit();
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&n| n <= limit)
            })
            .ok()?;
        Some(Charge { budget: self.clone(), bytes })
    }
}

/// Bytes held against a [`Budget`]; given back when dropped (the one place they are).
#[derive(Debug)]
pub struct Charge {
    budget: Arc<Budget>,
    bytes: u64,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}
