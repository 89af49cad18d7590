//! RTC counters: closes by reason, refused candidates, dropped forwards, and the live counts
//! that prove nothing outlives its call (`PeerConnection` objects, webrtc-rs tasks).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::CloseReason;

/// Counters of this node's peers and rooms, for `/metrics`. Shared by every peer and room.
#[derive(Debug, Default)]
pub struct RtcStats {
    closes: [AtomicU64; CloseReason::ALL.len()],
    candidates_refused: AtomicU64,
    mdns_ignored: AtomicU64,
    candidates_walled: AtomicU64,
    candidates_expired: AtomicU64,
    data_dropped: AtomicU64,
    data_forwarded: AtomicU64,
    rtp_dropped: AtomicU64,
    rtp_forwarded: AtomicU64,
    peer_connections_live: AtomicI64,
    tasks_live: AtomicI64,
    forced_closes: AtomicU64,
}

impl RtcStats {
    pub(crate) fn closed(&self, reason: CloseReason) {
        self.closes[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Peers closed, per reason, in [`CloseReason::ALL`] order.
    #[must_use]
    pub fn closes(&self) -> Vec<(CloseReason, u64)> {
        CloseReason::ALL
            .iter()
            .map(|r| (*r, self.closes[*r as usize].load(Ordering::Relaxed)))
            .collect()
    }

    pub(crate) fn candidate_refused(&self) {
        self.candidates_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Candidates refused `too_many_candidates` (past `[rtc] max_candidates`).
    #[must_use]
    pub fn candidates_refused(&self) -> u64 {
        self.candidates_refused.load(Ordering::Relaxed)
    }

    pub(crate) fn mdns_ignored(&self) {
        self.mdns_ignored.fetch_add(1, Ordering::Relaxed);
    }

    /// `.local` (mDNS) candidates ignored (`[rtc] allow_mdns` off).
    #[must_use]
    pub fn mdns_candidates_ignored(&self) -> u64 {
        self.mdns_ignored.load(Ordering::Relaxed)
    }

    pub(crate) fn candidate_walled(&self) {
        self.candidates_walled.fetch_add(1, Ordering::Relaxed);
    }

    /// Candidates refused for their address (loopback, link-local, multicast…).
    #[must_use]
    pub fn candidates_walled(&self) -> u64 {
        self.candidates_walled.load(Ordering::Relaxed)
    }

    pub(crate) fn candidates_expired(&self, n: usize) {
        self.candidates_expired.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Buffered candidates dropped unused after `[rtc] candidate_ttl`.
    #[must_use]
    pub fn candidates_expired_total(&self) -> u64 {
        self.candidates_expired.load(Ordering::Relaxed)
    }

    pub(crate) fn data_dropped(&self) {
        self.data_dropped.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn data_forwarded(&self) {
        self.data_forwarded.fetch_add(1, Ordering::Relaxed);
    }

    /// Data-channel messages dropped for a receiver whose buffer was full (or closed).
    #[must_use]
    pub fn data_messages_dropped(&self) -> u64 {
        self.data_dropped.load(Ordering::Relaxed)
    }

    /// Data-channel messages handed to a receiver's channel.
    #[must_use]
    pub fn data_messages_forwarded(&self) -> u64 {
        self.data_forwarded.load(Ordering::Relaxed)
    }

    pub(crate) fn rtp_dropped(&self, n: u64) {
        self.rtp_dropped.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn rtp_forwarded(&self) {
        self.rtp_forwarded.fetch_add(1, Ordering::Relaxed);
    }

    /// RTP packets a subscriber lost because its forward queue was full.
    #[must_use]
    pub fn rtp_packets_dropped(&self) -> u64 {
        self.rtp_dropped.load(Ordering::Relaxed)
    }

    /// RTP packets written to a subscriber's track.
    #[must_use]
    pub fn rtp_packets_forwarded(&self) -> u64 {
        self.rtp_forwarded.load(Ordering::Relaxed)
    }

    pub(crate) fn connection_created(&self) {
        self.peer_connections_live.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connection_freed(&self) {
        self.peer_connections_live.fetch_sub(1, Ordering::Relaxed);
    }

    /// webrtc-rs `PeerConnection` objects alive: counted up when one is built, down when its
    /// event handler is dropped, which only happens when the connection itself is freed. Must
    /// equal the live peers that have a connection (webrtc-rs #906).
    #[must_use]
    pub fn peer_connections_live(&self) -> i64 {
        self.peer_connections_live.load(Ordering::Relaxed)
    }

    pub(crate) fn task_started(&self) {
        self.tasks_live.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn task_ended(&self) {
        self.tasks_live.fetch_sub(1, Ordering::Relaxed);
    }

    /// Tasks webrtc-rs runs for the peers' connections (drivers), alive.
    #[must_use]
    pub fn tasks_live(&self) -> i64 {
        self.tasks_live.load(Ordering::Relaxed)
    }

    pub(crate) fn forced_close(&self) {
        self.forced_closes.fetch_add(1, Ordering::Relaxed);
    }

    /// Peer connections whose `close()` did not finish within `[rtc] shutdown_timeout`.
    #[must_use]
    pub fn forced_closes(&self) -> u64 {
        self.forced_closes.load(Ordering::Relaxed)
    }
}
