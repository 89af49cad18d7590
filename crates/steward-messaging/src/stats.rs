//! Messaging counters, exported by `/metrics` as `steward_messaging_*` (see `steward-http`).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Counters and gauges of the messaging proxy. One per node, shared by the service, producers,
/// consumers and the broker (`Arc`).
#[derive(Debug, Default)]
pub struct MessagingStats {
    /// Messages stored (first time).
    pub sent_ok: AtomicU64,
    /// Messages answered as duplicates within the dedup window.
    pub sent_duplicate: AtomicU64,
    /// Messages refused because the topic was full.
    pub sent_retry_later: AtomicU64,
    /// Messages refused by a tenant quota (topics, stored messages or bytes).
    pub sent_quota_exceeded: AtomicU64,
    /// Messages not stored because the broker was unreachable or slow.
    pub sent_unavailable: AtomicU64,
    /// Messages refused as invalid.
    pub sent_invalid: AtomicU64,
    /// Deliveries handed to clients (first and repeated).
    pub deliveries: AtomicU64,
    /// Deliveries with attempt > 1.
    pub redeliveries: AtomicU64,
    /// Leases acked.
    pub acks: AtomicU64,
    /// Leases nacked by clients.
    pub nacks: AtomicU64,
    /// Messages moved to a dead-letter topic.
    pub dead_lettered: AtomicU64,
    /// Leases held by consumers right now.
    pub leases_in_flight: AtomicI64,
    /// Leases returned to the broker because their consumer ended.
    pub returned: AtomicU64,
    /// Writes to a client that stalled past `write_stall_timeout` (seed 001's metric).
    pub channel_full_events: AtomicU64,
    /// Producers stopped by the idle sweep (seed 001's metric).
    pub producer_leak_detections: AtomicU64,
    /// Consumers found without a live stream (seed 001's metric; must stay 0).
    pub consumer_leak_detections: AtomicU64,
}

/// A point-in-time copy of [`MessagingStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)] // the fields mirror MessagingStats one to one
pub struct MessagingStatsSnapshot {
    pub sent_ok: u64,
    pub sent_duplicate: u64,
    pub sent_retry_later: u64,
    /// Messages refused by a tenant quota.
    pub sent_quota_exceeded: u64,
    pub sent_unavailable: u64,
    pub sent_invalid: u64,
    pub deliveries: u64,
    pub redeliveries: u64,
    pub acks: u64,
    pub nacks: u64,
    pub dead_lettered: u64,
    pub leases_in_flight: i64,
    pub returned: u64,
    pub channel_full_events: u64,
    pub producer_leak_detections: u64,
    pub consumer_leak_detections: u64,
}

impl MessagingStats {
    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// A copy of every counter.
    #[must_use]
    pub fn snapshot(&self) -> MessagingStatsSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MessagingStatsSnapshot {
            sent_ok: r(&self.sent_ok),
            sent_duplicate: r(&self.sent_duplicate),
            sent_retry_later: r(&self.sent_retry_later),
            sent_quota_exceeded: r(&self.sent_quota_exceeded),
            sent_unavailable: r(&self.sent_unavailable),
            sent_invalid: r(&self.sent_invalid),
            deliveries: r(&self.deliveries),
            redeliveries: r(&self.redeliveries),
            acks: r(&self.acks),
            nacks: r(&self.nacks),
            dead_lettered: r(&self.dead_lettered),
            leases_in_flight: self.leases_in_flight.load(Ordering::Relaxed),
            returned: r(&self.returned),
            channel_full_events: r(&self.channel_full_events),
            producer_leak_detections: r(&self.producer_leak_detections),
            consumer_leak_detections: r(&self.consumer_leak_detections),
        }
    }
}
