//! Signaling: `join`, the offer/answer exchanges (the client offers first; the server offers
//! again when it adds other participants' tracks, and is the impolite side of perfect
//! negotiation), trickled candidates within their cap, `leave`.
//!
//! Every webrtc-rs call runs in the actor's context with `ctx.wait`, so the client's messages
//! are applied one at a time, in order, under [`CALL_TIMEOUT`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use rtc::ice::mdns::MulticastDnsMode;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, RTCConfigurationBuilder,
    RTCIceCandidateInit, RTCSessionDescription, Registry, SettingEngineBuilder,
    register_default_interceptors,
};

use super::events::Events;
use super::{PeerActor, Stage};
use crate::CloseReason;
use crate::room::{Join, JoinRefused};
use crate::runtime::PeerRuntime;
use crate::signal::{self, ClientMessage, Refusal};

/// Bound of one webrtc-rs call (they are round trips to the connection's driver).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

async fn bounded<T>(call: impl Future<Output = webrtc::error::Result<T>>) -> Result<T, String> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the connection did not answer in time".into()),
    }
}

impl PeerActor {
    pub(super) fn on_message(&mut self, message: ClientMessage, ctx: &mut Context<Self>) {
        match message {
            ClientMessage::Join { room, name } => self.join(room, name, ctx),
            ClientMessage::Leave => self.close(CloseReason::ClientLeave, ctx),
            _ if self.stage != Stage::Joined => {
                self.send(signal::error("not_joined", "send `join` first"));
            }
            ClientMessage::Offer { sdp } => self.offer(sdp, ctx),
            ClientMessage::Answer { sdp } => self.answer(sdp, ctx),
            ClientMessage::Candidate { candidate } => self.candidate(candidate, ctx),
        }
    }

    fn join(&mut self, room: String, name: Option<String>, ctx: &mut Context<Self>) {
        if self.stage != Stage::Lobby {
            self.send(signal::error("already_joined", "this socket has joined a room"));
            return;
        }
        let Some(signaling) = self.signaling.clone() else { return };
        self.stage = Stage::Joining;
        let env = self.env.clone();
        let key = (self.tenant.clone(), Arc::<str>::from(room.as_str()));
        let name: Arc<str> = name.map_or_else(|| self.peer_id.clone(), Arc::from);
        let room_name = room;
        let (peer_id, data, addr) = (self.peer_id.clone(), self.data.clone(), ctx.address());
        let max_rooms = self.max_rooms;
        let joining = async move {
            // a room that is closing refuses: the next try starts a new one
            for _ in 0..2 {
                let room = env.room(&key, max_rooms).await.map_err(|e| match e {
                    crate::Error::TenantRooms(_) => Refusal::new("quota_exceeded", e.to_string()),
                    e => Refusal::new("unavailable", e.to_string()),
                })?;
                let join = Join {
                    peer_id: peer_id.clone(),
                    name: name.clone(),
                    addr: addr.clone(),
                    signaling: signaling.clone(),
                    data: data.clone(),
                };
                match room.send(join).await {
                    Ok(Ok(participants)) => return Ok((room, participants)),
                    Ok(Err(JoinRefused::Full(max))) => {
                        return Err(Refusal::new(
                            "room_full",
                            format!("the room holds its maximum of {max} participants"),
                        ));
                    }
                    Ok(Err(JoinRefused::Closing)) | Err(_) => env.forget_closing(&key, &room),
                }
            }
            Err(Refusal::new("unavailable", "the room is closing; join again"))
        };
        ctx.wait(joining.into_actor(self).map(move |result, act, ctx| {
            if act.rcx.is_stopping() {
                if let Ok((room, _)) = result {
                    #[allow(clippy::disallowed_methods)]
                    // once: the peer stopped while it joined
                    room.do_send(crate::room::Leave {
                        peer_id: act.peer_id.clone(),
                        reason: CloseReason::Error,
                    });
                }
                return;
            }
            match result {
                Ok((room, (participants, plane))) => {
                    act.stage = Stage::Joined;
                    act.room = Some(super::InRoom { addr: room });
                    act.plane = Some(plane);
                    act.send(signal::joined(&act.peer_id, &room_name, &participants));
                    let after = act.env.config.negotiation_timeout;
                    act.arm_deadline(ctx, after, CloseReason::NegotiationTimeout);
                }
                Err(refusal) => {
                    act.stage = Stage::Lobby;
                    act.send(refusal.frame());
                }
            }
        }));
    }
}

/// The peer's connection at an offer: the one it has, or the first, to build.
enum Connection {
    Built(Arc<dyn PeerConnection>),
    ToBuild(Box<PeerConnectionBuilder<std::net::SocketAddr>>),
}

impl PeerActor {
    /// The client's offer: the first one builds the connection. Answered with `answer`.
    fn offer(&mut self, sdp: String, ctx: &mut Context<Self>) {
        if self.awaiting_answer {
            self.send(signal::error(
                "glare",
                "the server's offer waits for your answer: answer it, then offer again",
            ));
            return;
        }
        let offer = match RTCSessionDescription::offer(sdp) {
            Ok(offer) => offer,
            Err(e) => {
                self.send(signal::error("malformed_sdp", &format!("not an offer: {e}")));
                return;
            }
        };
        let connection = match self.pc.clone() {
            Some(pc) => Connection::Built(pc),
            None => match self.prepare(ctx) {
                Ok(builder) => Connection::ToBuild(Box::new(builder)),
                Err(refusal) => {
                    self.send(refusal.frame());
                    self.close(CloseReason::Error, ctx);
                    return;
                }
            },
        };
        let early = self.take_early_candidates();
        let answering = async move {
            let (pc, fresh) = match connection {
                Connection::Built(pc) => (pc, None),
                Connection::ToBuild(builder) => match bounded(builder.build()).await {
                    Ok(pc) => {
                        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
                        (pc.clone(), Some(pc))
                    }
                    Err(e) => {
                        let refusal = Refusal::new("unavailable", format!("no connection: {e}"));
                        return (None, Err(refusal));
                    }
                },
            };
            let answered = async {
                bounded(pc.set_remote_description(offer)).await.map_err(|e| {
                    Refusal::new("malformed_sdp", format!("the offer was refused: {e}"))
                })?;
                for candidate in early {
                    if let Err(e) = bounded(pc.add_ice_candidate(candidate)).await {
                        tracing::debug!(error = %e, "a buffered candidate was refused");
                    }
                }
                let answer = bounded(pc.create_answer(None))
                    .await
                    .map_err(|e| Refusal::new("wrong_state", format!("cannot answer: {e}")))?;
                bounded(pc.set_local_description(answer.clone()))
                    .await
                    .map_err(|e| Refusal::new("wrong_state", format!("cannot answer: {e}")))?;
                Ok(answer.sdp)
            }
            .await;
            (fresh, answered)
        };
        ctx.wait(answering.into_actor(self).map(|(fresh, result), act, ctx| {
            // a connection built here is the peer's, whatever came of the offer: its cleanup
            // closes it
            if fresh.is_some() {
                act.pc = fresh;
            }
            match result {
                Ok(sdp) if !act.rcx.is_stopping() => act.answered(&sdp, ctx),
                Ok(_) => {}
                Err(refusal) => act.send(refusal.frame()),
            }
        }));
    }

    /// The client's offer is answered: the first time, the ICE deadline starts and the tracks
    /// waiting for it are forwarded.
    fn answered(&mut self, sdp: &str, ctx: &mut Context<Self>) {
        self.send(signal::description("answer", sdp));
        self.remote_set = true;
        if !self.negotiated {
            self.negotiated = true;
            if !self.connected {
                let after = self.env.config.ice_timeout;
                self.arm_deadline(ctx, after, CloseReason::IceFailed);
            }
            for track in std::mem::take(&mut self.waiting) {
                self.subscribe(track, ctx);
            }
        }
        self.renegotiate_if_due(ctx);
    }

    /// The client's answer to the server's offer.
    fn answer(&mut self, sdp: String, ctx: &mut Context<Self>) {
        let Some(pc) = self.pc.clone().filter(|_| self.awaiting_answer) else {
            self.send(signal::error("wrong_state", "no offer of the server waits for an answer"));
            return;
        };
        let answer = match RTCSessionDescription::answer(sdp) {
            Ok(answer) => answer,
            Err(e) => {
                self.send(signal::error("malformed_sdp", &format!("not an answer: {e}")));
                return;
            }
        };
        let applying = async move { bounded(pc.set_remote_description(answer)).await };
        ctx.wait(applying.into_actor(self).map(|result, act, ctx| match result {
            Ok(()) => {
                act.awaiting_answer = false;
                // the tracks this answer accepted can be decoded from their next key frame
                for pli in act.subscriptions.values().filter_map(|s| s.keyframes.as_ref()) {
                    let _ = pli.try_send(());
                }
                if act.connected {
                    act.disarm_deadline(ctx);
                } else {
                    let after = act.env.config.ice_timeout;
                    act.arm_deadline(ctx, after, CloseReason::IceFailed);
                }
                act.renegotiate_if_due(ctx);
            }
            Err(e) => {
                act.send(signal::error("malformed_sdp", &format!("the answer was refused: {e}")));
            }
        }));
    }

    /// A trickled candidate: counted against `max_candidates`, mDNS ones ignored unless
    /// allowed, buffered (at most `candidate_ttl`) until the remote description is set.
    fn candidate(&mut self, candidate: Option<RTCIceCandidateInit>, ctx: &mut Context<Self>) {
        // `null` or an empty candidate: the end of the client's candidates
        let Some(candidate) = candidate.filter(|c| !c.candidate.is_empty()) else { return };
        let config = &self.env.config;
        if self.candidates >= config.max_candidates {
            self.env.stats.candidate_refused();
            self.send(signal::error(
                "too_many_candidates",
                &format!("at most {} candidates per peer", config.max_candidates),
            ));
            return;
        }
        self.candidates += 1;
        let address = candidate.candidate.split_whitespace().nth(4).unwrap_or_default();
        if address.ends_with(".local") && !config.allow_mdns {
            self.env.stats.mdns_ignored();
            return;
        }
        if let Ok(ip) = address.parse::<std::net::IpAddr>()
            && !reachable(ip, config.bind_address)
        {
            self.env.stats.candidate_walled();
            self.send(signal::error(
                "bad_request",
                &format!("a candidate at {ip} is refused: Steward does not send to such addresses"),
            ));
            return;
        }
        let Some(pc) = self.pc.clone().filter(|_| self.remote_set) else {
            self.prune_early_candidates();
            self.early_candidates.push((Instant::now(), candidate));
            return;
        };
        let adding = async move { bounded(pc.add_ice_candidate(candidate)).await };
        ctx.wait(adding.into_actor(self).map(|result, act, _ctx| {
            if let Err(e) = result {
                act.send(signal::error("bad_request", &format!("the candidate was refused: {e}")));
            }
        }));
    }

    fn prune_early_candidates(&mut self) {
        let ttl = self.env.config.candidate_ttl;
        let before = self.early_candidates.len();
        self.early_candidates.retain(|(at, _)| at.elapsed() < ttl);
        self.env.stats.candidates_expired(before - self.early_candidates.len());
    }

    fn take_early_candidates(&mut self) -> Vec<RTCIceCandidateInit> {
        self.prune_early_candidates();
        self.early_candidates.drain(..).map(|(_, c)| c).collect()
    }

    /// Offers again (new tracks to forward) once nothing else is being negotiated.
    pub(super) fn renegotiate(&mut self, ctx: &mut Context<Self>) {
        self.renegotiate = true;
        self.renegotiate_if_due(ctx);
    }

    fn renegotiate_if_due(&mut self, ctx: &mut Context<Self>) {
        if !self.renegotiate || self.awaiting_answer || !self.negotiated || self.rcx.is_stopping() {
            return;
        }
        let Some(pc) = self.pc.clone() else { return };
        self.renegotiate = false;
        self.awaiting_answer = true;
        let offering = async move {
            let offer = bounded(pc.create_offer(None)).await?;
            bounded(pc.set_local_description(offer.clone())).await?;
            Ok::<_, String>(offer.sdp)
        };
        ctx.wait(offering.into_actor(self).map(|result, act, ctx| match result {
            Ok(sdp) => {
                act.send(signal::description("offer", &sdp));
                let after = act.env.config.negotiation_timeout;
                act.arm_deadline(ctx, after, CloseReason::NegotiationTimeout);
            }
            Err(e) => {
                tracing::warn!(peer = %act.peer_id, error = %e, "cannot offer a renegotiation");
                act.close(CloseReason::Error, ctx);
            }
        }));
    }

    /// What builds the peer's connection at its first offer: a leased UDP port (kept by the
    /// actor), the codecs, the interceptors, the settings of `[rtc]`, the event handler and the
    /// runtime that makes its tasks the peer's.
    fn prepare(
        &mut self,
        ctx: &mut Context<Self>,
    ) -> Result<PeerConnectionBuilder<std::net::SocketAddr>, Refusal> {
        let unavailable = |what: String| Refusal::new("unavailable", what);
        let config = self.env.config.clone();
        // webrtc-rs binds the one address it is given and fails on a port in use (by another
        // process): a port that cannot be bound now is skipped
        let port = (0..8)
            .filter_map(|_| self.env.ports.lease())
            .find(|lease| std::net::UdpSocket::bind((config.bind_address, lease.port)).is_ok())
            .ok_or_else(|| unavailable("no UDP port of [rtc] udp_ports is free".into()))?;
        let mut media = MediaEngine::default();
        media.register_default_codecs().map_err(|e| unavailable(e.to_string()))?;
        let interceptors = register_default_interceptors(Registry::new(), &mut media)
            .map_err(|e| unavailable(e.to_string()))?
            .with(
                rtc::interceptor::Slot::from(super::keyframes::SLOT),
                super::keyframes::KeyframeRequests::default(),
            );
        let settings = SettingEngineBuilder::new()
            .with_include_loopback_candidate(config.bind_address.is_loopback())
            .with_multicast_dns_mode(if config.allow_mdns {
                MulticastDnsMode::QueryOnly
            } else {
                MulticastDnsMode::Disabled
            });
        let runtime = Arc::new(PeerRuntime {
            tracker: self.rcx.tracker().clone(),
            io: self.env.io.clone(),
            stats: self.env.stats.clone(),
        });
        let events = Arc::new(Events::new(
            ctx.address().downgrade(),
            self.env.stats.clone(),
            config.nat_1to1_ips.clone(),
        ));
        let buffer = usize::try_from(config.data_channel_buffer.as_u64()).unwrap_or(usize::MAX);
        let addr = std::net::SocketAddr::new(config.bind_address, port.port);
        self.port = Some(port);
        Ok(PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(media)
            .with_interceptor_registry(interceptors)
            .with_setting_engine(settings.build())
            .with_handler(events)
            .with_runtime(runtime)
            .with_udp_addrs(vec![addr])
            .with_data_channel_send_buffer_limit(buffer))
    }
}

/// Whether the ICE agent may send to a client's candidate at `ip`. A hostile tenant's candidate
/// would otherwise make Steward send STUN to any address it names: never to this host's
/// loopback (unless Steward itself is bound to loopback, as on a test machine), an unspecified,
/// multicast or broadcast address, or (for IPv4) link-local ones (cloud metadata services).
fn reachable(ip: std::net::IpAddr, bind: std::net::IpAddr) -> bool {
    if ip.is_unspecified() || ip.is_multicast() {
        return false;
    }
    if ip.is_loopback() {
        return bind.is_loopback();
    }
    match ip {
        std::net::IpAddr::V4(v4) => !v4.is_broadcast() && !v4.is_link_local(),
        std::net::IpAddr::V6(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::reachable;

    #[test]
    fn candidates_never_aim_the_agent_at_loopback_metadata_or_multicast() {
        let any: std::net::IpAddr = "0.0.0.0".parse().unwrap();
        let lo: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        for refused in
            ["127.0.0.1", "::1", "0.0.0.0", "169.254.169.254", "224.0.0.251", "255.255.255.255"]
        {
            assert!(!reachable(refused.parse().unwrap(), any), "{refused}");
        }
        for allowed in ["203.0.113.9", "10.1.2.3", "2001:db8::7"] {
            assert!(reachable(allowed.parse().unwrap(), any), "{allowed}");
        }
        assert!(reachable(lo, lo), "a loopback-bound Steward talks to loopback clients");
    }
}
