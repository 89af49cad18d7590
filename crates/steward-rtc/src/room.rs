//! The room resource: one actor per (tenant, room name) under `rooms` (kind `room`). It knows
//! its participants (their peers' addresses and signaling), the tracks they publish, and the
//! data plane its participants' data channels share. It starts on the first `join`, stops
//! `empty_timeout` after its start if nobody joined, and `departure_timeout` after its last
//! participant left (LiveKit's names).
//!
//! Media does not pass through the actor: a published track is a [`Forward`] (a bounded
//! broadcast queue the publisher's reading task fills), and each subscriber's own task drains
//! its receiver into its own outgoing track. Data-channel messages go from the sender's
//! reading task straight to each receiver's channel ([`DataPlane`]), never waiting.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use futures_util::future::LocalBoxFuture;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::RTCRtpCodec;
use steward_core::{ExitReason, Resource, ResourceCtx, StopResource, stop_resource};
use tokio::sync::{broadcast, mpsc};
use webrtc::data_channel::DataChannel;

use crate::peer::{Close, PeerActor, Subscribe, Unsubscribe};
use crate::service::{Env, RoomKey, RoomSummary};
use crate::signal::{self, ParticipantInfo, TrackInfo};
use crate::stats::RtcStats;
use crate::{CloseReason, Signaling};

/// A published track: what subscribers need to forward it.
pub(crate) struct Forward {
    /// The publishing peer's id.
    pub(crate) publisher: Arc<str>,
    pub(crate) info: TrackInfo,
    pub(crate) codec: RTCRtpCodec,
    /// The publisher's RTP, as it arrives (bounded: `[rtc] forward_queue`; a subscriber that
    /// lags loses packets, counted).
    pub(crate) packets: broadcast::Sender<rtp::Packet>,
    /// Asks the publisher for a key frame (a PLI upstream); one pending at most.
    pub(crate) pli: mpsc::Sender<()>,
}

/// One participant's data channel, as the others send to it.
#[derive(Default)]
pub(crate) struct DataSlot {
    channel: Mutex<Option<Arc<dyn DataChannel>>>,
}

impl DataSlot {
    pub(crate) fn set(&self, channel: Option<Arc<dyn DataChannel>>) {
        *self.channel.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = channel;
    }

    /// Hands `data` to the channel without waiting, as text or binary as it came: a full send
    /// buffer (`[rtc] data_channel_buffer`) or no open channel drops it, counted.
    async fn offer(&self, data: &Bytes, text: bool, stats: &RtcStats) -> bool {
        let channel =
            self.channel.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let Some(channel) = channel else {
            stats.data_dropped();
            return false;
        };
        let sent = match std::str::from_utf8(data) {
            Ok(text_data) if text => channel.try_send_text(text_data).await,
            _ => channel.try_send(BytesMut::from(&data[..])).await,
        };
        if sent.is_ok() {
            stats.data_forwarded();
            true
        } else {
            stats.data_dropped();
            false
        }
    }
}

/// The data channels of a room's participants.
#[derive(Default)]
pub(crate) struct DataPlane {
    receivers: RwLock<Vec<(Arc<str>, Arc<DataSlot>)>>,
}

impl DataPlane {
    /// Offers `data` (a text message when `text`, else binary) to every participant but
    /// `from`; answers how many took it.
    pub(crate) async fn send(
        &self,
        from: Option<&str>,
        data: Bytes,
        text: bool,
        stats: &RtcStats,
    ) -> usize {
        let targets: Vec<Arc<DataSlot>> = self
            .receivers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|(id, _)| Some(&**id) != from)
            .map(|(_, slot)| slot.clone())
            .collect();
        let mut taken = 0;
        for slot in targets {
            taken += usize::from(slot.offer(&data, text, stats).await);
        }
        taken
    }

    fn insert(&self, id: Arc<str>, slot: Arc<DataSlot>) {
        self.receivers.write().unwrap_or_else(std::sync::PoisonError::into_inner).push((id, slot));
    }

    fn remove(&self, id: &str) {
        self.receivers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|(held, _)| &**held != id);
    }
}

struct Participant {
    name: Arc<str>,
    addr: Addr<PeerActor>,
    signaling: Arc<dyn Signaling>,
    tracks: Vec<Arc<Forward>>,
}

impl Participant {
    fn info(&self, peer_id: &str) -> ParticipantInfo {
        ParticipantInfo {
            peer_id: peer_id.to_owned(),
            name: self.name.to_string(),
            tracks: self.tracks.iter().map(|t| t.info.clone()).collect(),
        }
    }
}

/// The room actor.
pub struct RoomActor {
    env: Arc<Env>,
    key: RoomKey,
    participants: BTreeMap<Arc<str>, Participant>,
    plane: Arc<DataPlane>,
    /// The empty or departure timer, while one runs.
    timer: Option<SpawnHandle>,
    /// `CloseRoom` was asked: joins are refused.
    closing: bool,
    rcx: ResourceCtx,
}

impl RoomActor {
    pub(crate) fn new(rcx: ResourceCtx, env: Arc<Env>, key: RoomKey) -> Self {
        Self {
            env,
            key,
            participants: BTreeMap::new(),
            plane: Arc::default(),
            timer: None,
            closing: false,
            rcx,
        }
    }

    /// Stops the room after `after` unless someone joins first.
    fn arm(&mut self, ctx: &mut Context<Self>, after: std::time::Duration) {
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        self.timer = Some(self.rcx.run_later(ctx, after, |act: &mut Self, ctx| {
            act.timer = None;
            if act.participants.is_empty() {
                stop_resource(act, ctx, ExitReason::Normal);
            }
        }));
    }

    fn broadcast(&self, except: Option<&str>, frame: &bytestring::ByteString) {
        for (id, p) in &self.participants {
            if Some(&**id) != except {
                p.signaling.send(frame.clone());
            }
        }
    }

    /// Takes `peer_id` out: the others are told it left and lose its tracks.
    fn remove(&mut self, peer_id: &str, reason: CloseReason, ctx: &mut Context<Self>) -> bool {
        let Some(gone) = self.participants.remove(peer_id) else { return false };
        self.plane.remove(peer_id);
        for track in &gone.tracks {
            let frame = signal::track_unpublished(peer_id, &track.info.track_id);
            self.broadcast(None, &frame);
            for p in self.participants.values() {
                #[allow(clippy::disallowed_methods)]
                // a control message per subscriber and track as a publisher leaves: bounded by
                // the room's participants and their tracks
                p.addr.do_send(Unsubscribe {
                    publisher: track.publisher.clone(),
                    track_id: track.info.track_id.clone(),
                });
            }
        }
        self.broadcast(None, &signal::participant_left(peer_id, reason));
        if self.participants.is_empty() && !self.rcx.is_stopping() {
            let after = self.env.config.departure_timeout;
            self.arm(ctx, after);
        }
        true
    }
}

impl Actor for RoomActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let after = self.env.config.empty_timeout;
        self.arm(ctx, after);
    }
}

impl Resource for RoomActor {
    fn resource_ctx(&self) -> &ResourceCtx {
        &self.rcx
    }

    fn resource_ctx_mut(&mut self) -> &mut ResourceCtx {
        &mut self.rcx
    }

    /// Every participant's peer closes `room_closed` (`shutdown` while the server stops).
    fn cleanup(&mut self, _reason: &ExitReason) -> LocalBoxFuture<'static, ()> {
        for p in self.participants.values() {
            #[allow(clippy::disallowed_methods)]
            // one message per participant as the room ends
            p.addr.do_send(Close(CloseReason::RoomClosed));
        }
        Box::pin(std::future::ready(()))
    }
}

impl Drop for RoomActor {
    fn drop(&mut self) {
        self.env.forget_room(&self.key, self.rcx.id());
    }
}

impl Handler<StopResource> for RoomActor {
    type Result = ();

    fn handle(&mut self, msg: StopResource, ctx: &mut Context<Self>) {
        stop_resource(self, ctx, msg.reason);
    }
}

/// Why a join was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JoinRefused {
    /// `max_participants` are in the room.
    Full(u32),
    /// The room is closing: try a new one.
    Closing,
}

/// A peer joins.
#[derive(Message)]
#[rtype(result = "Result<(Vec<ParticipantInfo>, Arc<DataPlane>), JoinRefused>")]
pub(crate) struct Join {
    pub(crate) peer_id: Arc<str>,
    pub(crate) name: Arc<str>,
    pub(crate) addr: Addr<PeerActor>,
    pub(crate) signaling: Arc<dyn Signaling>,
    pub(crate) data: Arc<DataSlot>,
}

impl Handler<Join> for RoomActor {
    type Result = Result<(Vec<ParticipantInfo>, Arc<DataPlane>), JoinRefused>;

    fn handle(&mut self, msg: Join, ctx: &mut Context<Self>) -> Self::Result {
        if self.closing || self.rcx.is_stopping() {
            return Err(JoinRefused::Closing);
        }
        // the same name joining again replaces the old participant (LiveKit's
        // duplicate identity)
        let twin = self
            .participants
            .iter()
            .find(|(_, p)| p.name == msg.name)
            .map(|(id, p)| (id.clone(), p.addr.clone()));
        if let Some((id, addr)) = twin {
            #[allow(clippy::disallowed_methods)]
            // one message to the replaced peer
            addr.do_send(Close(CloseReason::DuplicateIdentity));
            self.remove(&id, CloseReason::DuplicateIdentity, ctx);
        }
        let max = self.env.config.max_participants;
        if self.participants.len() >= max as usize {
            return Err(JoinRefused::Full(max));
        }
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        self.rcx.touch();
        self.broadcast(None, &signal::participant_joined(&msg.peer_id, &msg.name));
        let others: Vec<ParticipantInfo> =
            self.participants.iter().map(|(id, p)| p.info(id)).collect();
        for p in self.participants.values() {
            for track in &p.tracks {
                #[allow(clippy::disallowed_methods)]
                // the newcomer subscribes to each published track: bounded by the room's
                // participants and their tracks
                msg.addr.do_send(Subscribe(track.clone()));
            }
        }
        self.plane.insert(msg.peer_id.clone(), msg.data);
        self.participants.insert(
            msg.peer_id,
            Participant {
                name: msg.name,
                addr: msg.addr,
                signaling: msg.signaling,
                tracks: Vec::new(),
            },
        );
        Ok((others, self.plane.clone()))
    }
}

/// A peer left (or is gone).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Leave {
    pub(crate) peer_id: Arc<str>,
    pub(crate) reason: CloseReason,
}

impl Handler<Leave> for RoomActor {
    type Result = ();

    fn handle(&mut self, msg: Leave, ctx: &mut Context<Self>) {
        self.remove(&msg.peer_id, msg.reason, ctx);
    }
}

/// A participant publishes a track: every other participant subscribes.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Publish(pub(crate) Arc<Forward>);

impl Handler<Publish> for RoomActor {
    type Result = ();

    fn handle(&mut self, msg: Publish, _ctx: &mut Context<Self>) {
        let track = msg.0;
        let Some(publisher) = self.participants.get_mut(&track.publisher) else { return };
        publisher.tracks.push(track.clone());
        self.rcx.touch();
        let frame = signal::track_published(&track.publisher, &track.info);
        for (id, p) in &self.participants {
            if *id == track.publisher {
                continue;
            }
            p.signaling.send(frame.clone());
            #[allow(clippy::disallowed_methods)]
            // one control message per subscriber as a track is published
            p.addr.do_send(Subscribe(track.clone()));
        }
    }
}

/// The room's data plane (for `SendData` and the participants' reading tasks).
#[derive(Message)]
#[rtype(result = "Arc<DataPlane>")]
pub(crate) struct Plane;

impl Handler<Plane> for RoomActor {
    type Result = Arc<DataPlane>;

    fn handle(&mut self, _: Plane, _ctx: &mut Context<Self>) -> Arc<DataPlane> {
        self.plane.clone()
    }
}

/// `ListRooms`' view of it (`None` once it is closing).
#[derive(Message)]
#[rtype(result = "Option<RoomSummary>")]
pub(crate) struct Summary;

impl Handler<Summary> for RoomActor {
    type Result = Option<RoomSummary>;

    fn handle(&mut self, _: Summary, _ctx: &mut Context<Self>) -> Option<RoomSummary> {
        (!self.closing && !self.rcx.is_stopping()).then(|| RoomSummary {
            name: self.key.1.to_string(),
            id: self.rcx.id(),
            participants: self.participants.len(),
            tracks: self.participants.values().map(|p| p.tracks.len()).sum(),
        })
    }
}

/// Its participants.
#[derive(Message)]
#[rtype(result = "Vec<ParticipantInfo>")]
pub(crate) struct Participants;

impl Handler<Participants> for RoomActor {
    type Result = Vec<ParticipantInfo>;

    fn handle(&mut self, _: Participants, _ctx: &mut Context<Self>) -> Vec<ParticipantInfo> {
        self.participants.iter().map(|(id, p)| p.info(id)).collect()
    }
}

/// Removes a participant (`RemoveParticipant`): its peer closes `kicked`. Answers whether it
/// was there.
#[derive(Message)]
#[rtype(result = "bool")]
pub(crate) struct Kick(pub(crate) String);

impl Handler<Kick> for RoomActor {
    type Result = bool;

    fn handle(&mut self, msg: Kick, _ctx: &mut Context<Self>) -> bool {
        let Some(p) = self.participants.get(msg.0.as_str()) else { return false };
        #[allow(clippy::disallowed_methods)]
        // one message to the removed peer
        p.addr.do_send(Close(CloseReason::Kicked));
        true
    }
}

/// Closes the room (`CloseRoom`); answers how many participants it had.
#[derive(Message)]
#[rtype(result = "usize")]
pub(crate) struct CloseRoom;

impl Handler<CloseRoom> for RoomActor {
    type Result = usize;

    fn handle(&mut self, _: CloseRoom, ctx: &mut Context<Self>) -> usize {
        self.closing = true;
        let n = self.participants.len();
        stop_resource(self, ctx, ExitReason::Normal);
        n
    }
}
