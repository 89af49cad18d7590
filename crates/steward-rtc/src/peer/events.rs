//! The connection's event handler: it runs on webrtc-rs's driver, holds only a weak address of
//! its peer and turns every event into a message, so the actor decides (and calls `close()`)
//! in its own turn, never inside a webrtc-rs callback. Its drop is the connection's: the live
//! count of `PeerConnection` objects ([`RtcStats::peer_connections_live`]) is kept here.

use std::net::IpAddr;
use std::sync::Arc;

use actix::WeakAddr;
use webrtc::data_channel::DataChannel;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    PeerConnectionEventHandler, RTCPeerConnectionIceEvent, RTCPeerConnectionState,
};

use super::{Event, PeerActor};
use crate::stats::RtcStats;

pub(super) struct Events {
    peer: WeakAddr<PeerActor>,
    stats: Arc<RtcStats>,
    /// `[rtc] nat_1to1_ips`: announced instead of the bound address.
    nat: Vec<IpAddr>,
}

impl Events {
    pub(super) fn new(peer: WeakAddr<PeerActor>, stats: Arc<RtcStats>, nat: Vec<IpAddr>) -> Self {
        stats.connection_created();
        Self { peer, stats, nat }
    }

    fn tell(&self, event: Event) {
        if let Some(peer) = self.peer.upgrade() {
            #[allow(clippy::disallowed_methods)]
            // the connection's own events (a few candidates per negotiation, state changes,
            // one per track or channel): bounded by what the peer's caps allow, and none may be
            // lost to a full mailbox
            peer.do_send(event);
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.stats.connection_freed();
    }
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Events {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        match event.candidate.to_json() {
            Ok(mut init) => {
                init.candidate = announce(&init.candidate, &self.nat);
                self.tell(Event::Candidate(init));
            }
            Err(e) => tracing::debug!(error = %e, "a local candidate cannot be sent"),
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        self.tell(Event::State(state));
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        self.tell(Event::Track(track));
    }

    async fn on_data_channel(&self, channel: Arc<dyn DataChannel>) {
        self.tell(Event::DataChannel(channel));
    }
}

/// A host candidate with its address replaced by the 1:1 NAT address of its family, if one is
/// configured. webrtc-rs 0.21.1 stores `SettingEngine::with_nat_1to1_ips` but never reads it,
/// so the candidate is rewritten as it is signalled. The address is the fifth field of
/// `candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type> …`.
fn announce(candidate: &str, nat: &[IpAddr]) -> String {
    let fields: Vec<&str> = candidate.split(' ').collect();
    let host = fields.get(6..8).is_some_and(|t| t == ["typ", "host"]);
    let Some(address) = fields.get(4).and_then(|a| a.parse::<IpAddr>().ok()) else {
        return candidate.to_owned();
    };
    match nat.iter().find(|ip| ip.is_ipv4() == address.is_ipv4()) {
        Some(public) if host => {
            let public = public.to_string();
            let mut fields = fields;
            fields[4] = &public;
            fields.join(" ")
        }
        _ => candidate.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::announce;

    #[test]
    fn host_candidates_announce_the_nat_address_of_their_family() {
        let c = "candidate:1 1 udp 2130706431 10.0.0.5 50000 typ host";
        let nat = ["203.0.113.7".parse().unwrap(), "2001:db8::1".parse().unwrap()];
        assert_eq!(announce(c, &nat), "candidate:1 1 udp 2130706431 203.0.113.7 50000 typ host");
        assert_eq!(announce(c, &[]), c);
        let srflx =
            "candidate:2 1 udp 1694498815 198.51.100.1 50000 typ srflx raddr 10.0.0.5 rport 50000";
        assert_eq!(announce(srflx, &nat), srflx);
    }
}
