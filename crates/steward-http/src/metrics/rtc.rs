//! The WebRTC series: `steward_rtc_*`, read from the peers' and rooms' atomics at scrape time.

use prometheus_client::encoding::DescriptorEncoder;
use steward_rtc::{CloseReason, Rtc};

use super::{Labels, counter, gauge, label, one};

/// The rooms' and peers' readings, for [`render_metrics`](crate::render_metrics).
#[derive(Debug, Clone, Default)]
pub struct RtcMetrics {
    /// Peers closed, per reason.
    pub closes: Vec<(CloseReason, u64)>,
    /// webrtc-rs `PeerConnection` objects alive (a drop counter on their event handlers).
    pub peer_connections_live: i64,
    /// webrtc-rs tasks (drivers) alive.
    pub tasks_live: i64,
    /// Live rooms.
    pub rooms: u64,
    /// UDP ports of `[rtc] udp_ports` not leased.
    pub free_udp_ports: u64,
    /// Candidates refused past `max_candidates`, mDNS candidates ignored, buffered candidates
    /// expired, candidates refused for their address.
    pub candidates: [u64; 4],
    /// Data-channel messages forwarded and dropped.
    pub data: [u64; 2],
    /// RTP packets forwarded and dropped.
    pub rtp: [u64; 2],
    /// Connections whose `close()` outran `shutdown_timeout`.
    pub forced_closes: u64,
}

impl RtcMetrics {
    /// The readings of `rtc` now.
    #[must_use]
    pub fn of(rtc: &Rtc) -> Self {
        let s = rtc.stats();
        Self {
            closes: s.closes(),
            peer_connections_live: s.peer_connections_live(),
            tasks_live: s.tasks_live(),
            rooms: rtc.live_rooms() as u64,
            free_udp_ports: rtc.free_udp_ports() as u64,
            candidates: [
                s.candidates_refused(),
                s.mdns_candidates_ignored(),
                s.candidates_expired_total(),
                s.candidates_walled(),
            ],
            data: [s.data_messages_forwarded(), s.data_messages_dropped()],
            rtp: [s.rtp_packets_forwarded(), s.rtp_packets_dropped()],
            forced_closes: s.forced_closes(),
        }
    }
}

pub(super) fn encode_rtc(
    enc: &mut DescriptorEncoder<'_>,
    m: &RtcMetrics,
) -> Result<(), std::fmt::Error> {
    gauge(
        enc,
        "steward_rtc_peer_connections_live",
        "webrtc-rs PeerConnection objects alive (counted down when one is freed); equals the \
         live peers that have a connection.",
        one(m.peer_connections_live),
    )?;
    gauge(enc, "steward_rtc_tasks_live", "webrtc-rs tasks of the peers alive.", one(m.tasks_live))?;
    gauge(enc, "steward_rtc_rooms", "Live rooms on this node.", one(m.rooms as i64))?;
    gauge(
        enc,
        "steward_rtc_free_udp_ports",
        "UDP ports of [rtc] udp_ports no peer holds.",
        one(m.free_udp_ports as i64),
    )?;
    let closes: Vec<(Labels, u64)> =
        m.closes.iter().map(|(reason, n)| (label("reason", reason.as_str()), *n)).collect();
    counter(enc, "steward_rtc_peer_closes", "Peers closed, per reason.", closes)?;
    let [refused, mdns, expired, walled] = m.candidates;
    counter(
        enc,
        "steward_rtc_candidates_refused",
        "ICE candidates not used: past max_candidates (too_many), mDNS ones ignored (mdns), \
         buffered ones expired (expired), ones at an address Steward does not send to \
         (address: loopback, link-local, multicast…).",
        vec![
            (label("why", "too_many"), refused),
            (label("why", "mdns"), mdns),
            (label("why", "expired"), expired),
            (label("why", "address"), walled),
        ],
    )?;
    counter(
        enc,
        "steward_rtc_data_messages",
        "Data-channel messages to a participant, per outcome (dropped: its buffer was full).",
        vec![(label("outcome", "forwarded"), m.data[0]), (label("outcome", "dropped"), m.data[1])],
    )?;
    counter(
        enc,
        "steward_rtc_rtp_packets",
        "RTP packets to a subscriber, per outcome (dropped: its forward queue was full).",
        vec![(label("outcome", "forwarded"), m.rtp[0]), (label("outcome", "dropped"), m.rtp[1])],
    )?;
    counter(
        enc,
        "steward_rtc_forced_closes",
        "Peer connections whose close() outran [rtc] shutdown_timeout.",
        one(m.forced_closes),
    )
}
