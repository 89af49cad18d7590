//! Counters and gauges of the socket front door, exported by `/metrics` (steward-http renders
//! them with prometheus-client).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::socket::CloseCode;

/// Why an upgrade was refused before it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// No valid token (401).
    Unauthenticated,
    /// Not a WebSocket upgrade request (400).
    BadRequest,
    /// The client IP holds `max_per_ip` sockets (429).
    PerIp,
    /// The node holds `max_connections` sockets (503).
    NodeCap,
    /// The tenant's `sockets` quota is full (429).
    Quota,
    /// The server is shutting down (503).
    ShuttingDown,
}

impl Rejection {
    /// Every reason, in a fixed order.
    pub const ALL: [Self; 6] = [
        Self::Unauthenticated,
        Self::BadRequest,
        Self::PerIp,
        Self::NodeCap,
        Self::Quota,
        Self::ShuttingDown,
    ];

    /// snake_case label.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthenticated => "unauthenticated",
            Self::BadRequest => "bad_request",
            Self::PerIp => "per_ip",
            Self::NodeCap => "node_cap",
            Self::Quota => "quota",
            Self::ShuttingDown => "shutting_down",
        }
    }
}

/// Counters of every socket on this node (monotonic unless called a gauge).
#[derive(Debug, Default)]
pub struct SocketStats {
    accepted: AtomicU64,
    rejected: [AtomicU64; 6],
    closes: [AtomicU64; 10],
    messages_in: AtomicU64,
    bytes_in: AtomicU64,
    messages_out: AtomicU64,
    bytes_out: AtomicU64,
    rate_limited: AtomicU64,
    queue_depth: AtomicI64,
    queue_bytes: AtomicI64,
    remediated: AtomicU64,
}

/// A reading of [`SocketStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SocketStatsSnapshot {
    /// Upgrades accepted.
    pub accepted: u64,
    /// Upgrades refused, per reason in [`Rejection::ALL`] order.
    pub rejected: Vec<(Rejection, u64)>,
    /// Sockets closed, per code in [`CloseCode::ALL`] order.
    pub closes: Vec<(CloseCode, u64)>,
    /// Application messages received.
    pub messages_in: u64,
    /// Bytes of application messages received.
    pub bytes_in: u64,
    /// Frames written (text, ping, pong).
    pub messages_out: u64,
    /// Bytes of frames written (payloads).
    pub bytes_out: u64,
    /// Events refused by a socket's token bucket.
    pub rate_limited: u64,
    /// Frames waiting in outbound queues now (gauge).
    pub queue_depth: u64,
    /// Bytes waiting in outbound queues now (gauge).
    pub queue_bytes: u64,
    /// Sockets closed by the memory monitor's remediation.
    pub remediated: u64,
}

impl SocketStats {
    /// Counts an accepted upgrade.
    pub fn accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a refused upgrade.
    pub fn rejected(&self, why: Rejection) {
        self.rejected[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn closed(&self, code: CloseCode) {
        self.closes[code.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn received(&self, bytes: usize) {
        self.messages_in.fetch_add(1, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn sent(&self, bytes: usize) {
        self.messages_out.fetch_add(1, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn remediated(&self) {
        self.remediated.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn queued(&self, bytes: usize) {
        self.queue_depth.fetch_add(1, Ordering::Relaxed);
        self.queue_bytes.fetch_add(bytes as i64, Ordering::Relaxed);
    }

    pub(crate) fn dequeued(&self, bytes: usize) {
        self.queue_depth.fetch_sub(1, Ordering::Relaxed);
        self.queue_bytes.fetch_sub(bytes as i64, Ordering::Relaxed);
    }

    /// Reads every counter.
    #[must_use]
    pub fn snapshot(&self) -> SocketStatsSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SocketStatsSnapshot {
            accepted: get(&self.accepted),
            rejected: Rejection::ALL
                .iter()
                .map(|r| (*r, get(&self.rejected[*r as usize])))
                .collect(),
            closes: CloseCode::ALL.iter().map(|c| (*c, get(&self.closes[c.index()]))).collect(),
            messages_in: get(&self.messages_in),
            bytes_in: get(&self.bytes_in),
            messages_out: get(&self.messages_out),
            bytes_out: get(&self.bytes_out),
            rate_limited: get(&self.rate_limited),
            queue_depth: u64::try_from(self.queue_depth.load(Ordering::Relaxed)).unwrap_or(0),
            queue_bytes: u64::try_from(self.queue_bytes.load(Ordering::Relaxed)).unwrap_or(0),
            remediated: get(&self.remediated),
        }
    }
}
