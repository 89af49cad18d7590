//! Counters and gauges of every stream on this node, exported by `/metrics` as
//! `steward_stream_*` (steward-http renders them).
//!
//! Seed 003 emitted its metrics from deferred callbacks that could run after the service was
//! gone. Here a stream updates these atomics synchronously, in its own turn, and nothing else:
//! no callback, no event bus, nothing scheduled. `timer_fires` counts the stream timers that ran,
//! so a test can prove that none runs after its stream stopped.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// How a recovery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryOutcome {
    /// Every missed publication was delivered.
    Recovered,
    /// The history no longer reached back (or the epoch changed): the client reloads.
    Failed,
}

/// Counters of every stream on this node (monotonic unless called a gauge).
#[derive(Debug, Default)]
pub struct StreamStats {
    publications: AtomicU64,
    duplicates: AtomicU64,
    refused: AtomicU64,
    subscribers: AtomicI64,
    keys: AtomicI64,
    hits: AtomicU64,
    misses: AtomicU64,
    recovered: AtomicU64,
    recovery_failed: AtomicU64,
    expired_keys: AtomicU64,
    expired_publications: AtomicU64,
    live_lost: AtomicU64,
    gap_fills: AtomicU64,
    overflows: AtomicU64,
    timer_fires: AtomicU64,
}

/// A reading of [`StreamStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamCounts {
    /// Publications stored since start.
    pub publications: u64,
    /// Publishes answered from an idempotency key (nothing stored) since start.
    pub duplicates: u64,
    /// Publishes refused by a quota since start.
    pub refused: u64,
    /// Live subscriptions now (WebSocket and `Watch`), a gauge.
    pub subscribers: u64,
    /// Keys with a latest value now (memory engine), a gauge.
    pub keys: u64,
    /// Latest-value reads that found a value, since start.
    pub hits: u64,
    /// Latest-value reads of a key without one, since start.
    pub misses: u64,
    /// Recoveries that delivered every missed publication, since start.
    pub recovered: u64,
    /// Recoveries that could not (`recovered: false`), since start.
    pub recovery_failed: u64,
    /// Latest values expired at `key_ttl`, since start.
    pub expired_keys: u64,
    /// Publications that left the history at `history_ttl`, since start.
    pub expired_publications: u64,
    /// Interruptions of a shared engine's live feed, since start.
    pub live_lost: u64,
    /// Gaps in a live feed filled from the history, since start.
    pub gap_fills: u64,
    /// Subscribers dropped because their queue was full, since start.
    pub overflows: u64,
    /// Stream timers that ran, since start.
    pub timer_fires: u64,
}

fn inc(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

fn read(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

impl StreamStats {
    /// A reading of every counter.
    #[must_use]
    pub fn read(&self) -> StreamCounts {
        StreamCounts {
            publications: read(&self.publications),
            duplicates: read(&self.duplicates),
            refused: read(&self.refused),
            subscribers: u64::try_from(self.subscribers.load(Ordering::Relaxed)).unwrap_or(0),
            keys: u64::try_from(self.keys.load(Ordering::Relaxed)).unwrap_or(0),
            hits: read(&self.hits),
            misses: read(&self.misses),
            recovered: read(&self.recovered),
            recovery_failed: read(&self.recovery_failed),
            expired_keys: read(&self.expired_keys),
            expired_publications: read(&self.expired_publications),
            live_lost: read(&self.live_lost),
            gap_fills: read(&self.gap_fills),
            overflows: read(&self.overflows),
            timer_fires: read(&self.timer_fires),
        }
    }

    pub(crate) fn published(&self, duplicate: bool) {
        inc(if duplicate { &self.duplicates } else { &self.publications }, 1);
    }

    pub(crate) fn refused(&self) {
        inc(&self.refused, 1);
    }

    pub(crate) fn subscribers_changed(&self, delta: i64) {
        self.subscribers.fetch_add(delta, Ordering::Relaxed);
    }

    pub(crate) fn keys_changed(&self, delta: i64) {
        self.keys.fetch_add(delta, Ordering::Relaxed);
    }

    pub(crate) fn lookup(&self, hit: bool) {
        inc(if hit { &self.hits } else { &self.misses }, 1);
    }

    pub(crate) fn recovery(&self, outcome: RecoveryOutcome) {
        inc(
            match outcome {
                RecoveryOutcome::Recovered => &self.recovered,
                RecoveryOutcome::Failed => &self.recovery_failed,
            },
            1,
        );
    }

    pub(crate) fn expired(&self, keys: u64, publications: u64) {
        inc(&self.expired_keys, keys);
        inc(&self.expired_publications, publications);
    }

    pub(crate) fn live_lost(&self) {
        inc(&self.live_lost, 1);
    }

    pub(crate) fn gap_filled(&self) {
        inc(&self.gap_fills, 1);
    }

    pub(crate) fn overflowed(&self, n: u64) {
        inc(&self.overflows, n);
    }

    pub(crate) fn timer_fired(&self) {
        inc(&self.timer_fires, 1);
    }
}
