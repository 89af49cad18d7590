//! The peer's media: the connection's events (candidates out, state, a published track, the
//! client's data channel), forwarding other participants' tracks to the client, and releasing
//! it all when the peer ends.

use std::sync::Arc;

use actix::prelude::*;
use futures_util::future::{AbortHandle, Abortable};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use tokio::sync::{broadcast, mpsc};
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::media_stream::MediaStreamTrack;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{PeerConnection, RTCPeerConnectionState};
use webrtc::rtp_transceiver::RtpSender;

use super::{Event, PeerActor, Subscribe, Subscription, Unsubscribe};
use crate::CloseReason;
use crate::room::{Forward, Publish};
use crate::signal::{self, TrackInfo};

fn kind_name(kind: RtpCodecKind) -> &'static str {
    match kind {
        RtpCodecKind::Video => "video",
        _ => "audio",
    }
}

impl Handler<Event> for PeerActor {
    type Result = ();

    fn handle(&mut self, event: Event, ctx: &mut Context<Self>) {
        if self.rcx.is_stopping() {
            return;
        }
        match event {
            Event::Candidate(candidate) => self.send(signal::candidate(&candidate)),
            Event::State(state) => self.state(state, ctx),
            Event::Track(track) => self.publish(track, ctx),
            Event::DataChannel(channel) => self.data_channel(channel),
        }
    }
}

impl PeerActor {
    fn state(&mut self, state: RTCPeerConnectionState, ctx: &mut Context<Self>) {
        tracing::debug!(peer = %self.peer_id, %state, "peer connection state");
        match state {
            RTCPeerConnectionState::Connected => {
                self.connected = true;
                if !self.awaiting_answer {
                    self.disarm_deadline(ctx);
                }
                if let Some(grace) = self.grace.take() {
                    ctx.cancel_future(grace);
                }
            }
            RTCPeerConnectionState::Disconnected if self.grace.is_none() => {
                let after = self.env.config.disconnected_grace;
                self.grace = Some(self.rcx.run_later(ctx, after, |act: &mut Self, ctx| {
                    act.grace = None;
                    act.close(CloseReason::Disconnected, ctx);
                }));
            }
            RTCPeerConnectionState::Failed => self.close(CloseReason::IceFailed, ctx),
            // the client closed its side (DTLS close_notify): the call is over for it
            RTCPeerConnectionState::Closed => self.close(CloseReason::Disconnected, ctx),
            _ => {}
        }
    }

    /// The client publishes a track: a reading task (the peer's) fills its [`Forward`], and
    /// the room hands it to the other participants.
    fn publish(&mut self, track: Arc<dyn TrackRemote>, ctx: &mut Context<Self>) {
        let Some(room) = self.room.as_ref().map(|r| r.addr.clone()) else { return };
        let (publisher, queue) =
            (self.peer_id.clone(), self.env.config.forward_queue.max(1) as usize);
        let describing = async move {
            let ssrc = track.ssrcs().await.first().copied()?;
            let codec = track.codec(ssrc).await?;
            let kind = track.kind().await;
            let track_id = track.track_id().await;
            Some((track, ssrc, codec, kind, track_id))
        };
        ctx.wait(describing.into_actor(self).map(move |described, act, _ctx| {
            let Some((track, ssrc, codec, kind, track_id)) = described else {
                tracing::debug!(peer = %act.peer_id, "a published track has no codec yet: ignored");
                return;
            };
            if act.published.contains_key(&track_id) || act.rcx.is_stopping() {
                return;
            }
            let max = act.env.config.max_tracks as usize;
            if act.published.len() >= max {
                act.send(signal::error(
                    "too_many_tracks",
                    &format!(
                        "at most {max} published tracks per peer: `{track_id}` is not forwarded"
                    ),
                ));
                return;
            }
            let (packets, _) = broadcast::channel(queue);
            let (pli, pli_rx) = mpsc::channel(1);
            let info = TrackInfo { track_id: track_id.clone(), kind: kind_name(kind) };
            let forward = Arc::new(Forward { publisher, info, codec, packets, pli });
            let reading = read_track(track, ssrc, forward.packets.clone(), pli_rx);
            if act.rcx.tracker().spawn_on(&act.env.io, reading).is_err() {
                return;
            }
            act.published.insert(track_id, forward.clone());
            #[allow(clippy::disallowed_methods)]
            // one message per published track
            room.do_send(Publish(forward));
        }));
    }

    /// The client's data channel: what it sends goes to the room's other participants, and
    /// what they send comes to it.
    fn data_channel(&mut self, channel: Arc<dyn DataChannel>) {
        let Some(plane) = self.plane.clone() else { return };
        self.data.set(Some(channel.clone()));
        let (from, stats) = (self.peer_id.clone(), self.env.stats.clone());
        let max = usize::try_from(self.env.config.max_data_message.as_u64()).unwrap_or(usize::MAX);
        let reading = async move {
            while let Some(event) = channel.poll().await {
                match event {
                    DataChannelEvent::OnMessage(message) if message.data.len() <= max => {
                        let text = message.is_string;
                        let data = message.data.freeze();
                        plane.send(Some(&from), data, text, &stats).await;
                    }
                    DataChannelEvent::OnMessage(_) => stats.data_dropped(),
                    DataChannelEvent::OnClose => break,
                    _ => {}
                }
            }
        };
        let _ = self.rcx.tracker().spawn_on(&self.env.io, reading);
    }

    /// Forwards another participant's track to the client (after the first negotiation),
    /// then offers again.
    pub(super) fn subscribe(&mut self, forward: Arc<Forward>, ctx: &mut Context<Self>) {
        if !self.negotiated {
            self.waiting.push(forward);
            return;
        }
        let key = (forward.publisher.clone(), forward.info.track_id.clone());
        let Some(pc) = self.pc.clone() else { return };
        if self.subscriptions.contains_key(&key) {
            return;
        }
        let ssrc = random_ssrc();
        let kind =
            if forward.info.kind == "video" { RtpCodecKind::Video } else { RtpCodecKind::Audio };
        let local = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            forward.publisher.to_string(),
            forward.info.track_id.clone(),
            forward.info.track_id.clone(),
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: forward.codec.clone(),
                ..Default::default()
            }],
        )));
        let track: Arc<dyn TrackLocal> = local.clone();
        let adding = async move { pc.add_track(track).await };
        ctx.wait(adding.into_actor(self).map(move |added, act, ctx| {
            let sender = match added {
                Ok(sender) => sender,
                Err(e) => {
                    tracing::warn!(peer = %act.peer_id, error = %e, "cannot forward a track");
                    return;
                }
            };
            let (task, registration) = AbortHandle::new_pair();
            let feeding = Abortable::new(
                feed_track(
                    Leg {
                        local,
                        ssrc,
                        sender: sender.clone(),
                        mime: forward.codec.mime_type.clone(),
                    },
                    forward.packets.subscribe(),
                    forward.pli.clone(),
                    act.env.stats.clone(),
                ),
                registration,
            );
            let spawned = act.rcx.tracker().spawn_on(&act.env.io, async move {
                let _ = feeding.await;
            });
            if spawned.is_err() {
                return;
            }
            // a new subscriber of video needs a key frame: asked for now, and again once its
            // answer is applied (what comes before that may not reach it)
            let keyframes = (kind == RtpCodecKind::Video).then(|| forward.pli.clone());
            if let Some(pli) = &keyframes {
                let _ = pli.try_send(());
            }
            act.subscriptions.insert(key, Subscription { sender, task, keyframes });
            act.renegotiate(ctx);
        }));
    }
}

impl Handler<Subscribe> for PeerActor {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, ctx: &mut Context<Self>) {
        if !self.rcx.is_stopping() {
            self.subscribe(msg.0, ctx);
        }
    }
}

impl Handler<Unsubscribe> for PeerActor {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, ctx: &mut Context<Self>) {
        self.waiting.retain(|f| !(f.publisher == msg.publisher && f.info.track_id == msg.track_id));
        let Some(gone) = self.subscriptions.remove(&(msg.publisher, msg.track_id)) else { return };
        gone.task.abort();
        let Some(pc) = self.pc.clone() else { return };
        if self.rcx.is_stopping() {
            return;
        }
        let removing = async move { pc.remove_track(&gone.sender).await };
        ctx.wait(removing.into_actor(self).map(|removed, act, ctx| {
            if let Err(e) = removed {
                tracing::debug!(peer = %act.peer_id, error = %e, "cannot remove a forwarded track");
            }
            act.renegotiate(ctx);
        }));
    }
}

/// A random SSRC for a forwarded track.
fn random_ssrc() -> u32 {
    let mut bytes = [0u8; 4];
    let _ = getrandom::fill(&mut bytes);
    u32::from_le_bytes(bytes) | 1
}

/// Reads a published track into its forward queue (a lagging subscriber loses packets, the
/// publisher never waits) and asks the client for a key frame when a subscriber needs one.
async fn read_track(
    track: Arc<dyn TrackRemote>,
    ssrc: u32,
    packets: broadcast::Sender<rtc::rtp::Packet>,
    mut pli: mpsc::Receiver<()>,
) {
    loop {
        tokio::select! {
            event = track.poll() => match event {
                Some(TrackRemoteEvent::OnRtpPacket(packet)) => {
                    // no subscriber yet: the packet is dropped
                    let _ = packets.send(packet);
                }
                Some(TrackRemoteEvent::OnEnded) | None => return,
                Some(_) => {}
            },
            Some(()) = pli.recv() => {
                let request = PictureLossIndication { sender_ssrc: 0, media_ssrc: ssrc };
                let _ = track.write_rtcp(vec![Box::new(request)]).await;
            }
        }
    }
}

/// The subscriber's side of a forwarded track.
struct Leg {
    local: Arc<TrackLocalStaticRTP>,
    /// Its own SSRC.
    ssrc: u32,
    sender: Arc<dyn RtpSender>,
    /// The publisher's codec, whose payload type on this leg the packets must carry.
    mime: String,
}

impl Leg {
    /// The payload type this leg negotiated for the codec (the subscriber's numbering may not
    /// be the publisher's; webrtc-rs refuses a packet whose type the leg did not negotiate).
    async fn payload_type(&self) -> Option<u8> {
        let parameters = self.sender.get_parameters().await.ok()?;
        parameters
            .rtp_parameters
            .codecs
            .iter()
            .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(&self.mime))
            .map(|c| c.payload_type)
    }
}

/// Writes a forwarded track's packets to the subscriber's own outgoing track (its SSRC, its
/// payload type), and passes the subscriber's keyframe requests (PLI, FIR) back to the
/// publisher (at most one pending).
async fn feed_track(
    leg: Leg,
    mut packets: broadcast::Receiver<rtc::rtp::Packet>,
    pli: mpsc::Sender<()>,
    stats: Arc<crate::RtcStats>,
) {
    let mut payload_type = None;
    loop {
        tokio::select! {
            received = packets.recv() => match received {
                Ok(mut packet) => {
                    if payload_type.is_none() {
                        payload_type = leg.payload_type().await;
                    }
                    let Some(pt) = payload_type else {
                        stats.rtp_dropped(1);
                        continue;
                    };
                    packet.header.ssrc = leg.ssrc;
                    packet.header.payload_type = pt;
                    if leg.local.write_rtp(packet).await.is_err() {
                        return;
                    }
                    stats.rtp_forwarded();
                }
                Err(broadcast::error::RecvError::Lagged(n)) => stats.rtp_dropped(n),
                Err(broadcast::error::RecvError::Closed) => return,
            },
            Some(TrackLocalEvent::OnRtcpPacket(feedback)) = leg.local.poll() => {
                if feedback.iter().any(|p| super::keyframes::is_keyframe_request(p.as_ref())) {
                    let _ = pli.try_send(());
                }
            }
        }
    }
}

/// Releases a connection: the tracks it forwards are taken off it and every transceiver is
/// stopped before `close()`, which frees it (webrtc-rs #906: a connection that still holds
/// media tracks at `close()` is never freed).
pub(super) async fn release(pc: Arc<dyn PeerConnection>, subscriptions: Vec<Subscription>) {
    for s in &subscriptions {
        let _ = pc.remove_track(&s.sender).await;
    }
    for transceiver in pc.get_transceivers().await {
        let _ = transceiver.stop().await;
    }
    if let Err(e) = pc.close().await {
        tracing::debug!(error = %e, "closing a peer connection");
    }
}
