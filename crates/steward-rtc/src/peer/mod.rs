//! The peer resource: one actor per peer connection (kind `peer`), a `temporary` child of the
//! `peers` dynamic supervisor, started when the edge admits a signaling socket.
//!
//! It owns its webrtc-rs `PeerConnection` (built at the client's first offer, on a leased UDP
//! port, its tasks tracked through [`crate::runtime::PeerRuntime`]), the deadline of its
//! current state, the tasks that read its published tracks and feed its subscriptions, and its
//! data channel. Whatever ends it (leave, deadline, ICE failure, lost socket, kick, shutdown,
//! panic), [`actor`]'s cleanup tells the client `closing`, leaves the room, takes the tracks
//! off the connection (webrtc-rs #906), calls `close()` under `[rtc] shutdown_timeout` and
//! closes the socket; the actor's drop releases the rest.

mod actor;
mod events;
mod keyframes;
mod media;
mod negotiation;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use bytestring::ByteString;
use futures_util::future::AbortHandle;
use steward_core::{ResourceCtx, ResourceId};
use webrtc::data_channel::DataChannel;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{PeerConnection, RTCIceCandidateInit, RTCPeerConnectionState};
use webrtc::rtp_transceiver::RtpSender;

use crate::ports::PortLease;
use crate::room::{DataPlane, DataSlot, Forward, RoomActor};
use crate::service::Env;
use crate::{CloseReason, Signaling};

/// How the edge reaches its peer: the socket's frames in, its attachment. Dropping it (the
/// socket is gone) closes the peer `signaling_lost`.
pub struct PeerLink {
    id: ResourceId,
    addr: Addr<PeerActor>,
}

/// The peer's mailbox is full: the client sends faster than its peer handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the peer is busy: slow down")]
pub struct Busy;

impl PeerLink {
    pub(crate) fn new(id: ResourceId, addr: Addr<PeerActor>) -> Self {
        Self { id, addr }
    }

    /// The peer's registry id (also its `peer_id` in the protocol).
    #[must_use]
    pub fn id(&self) -> ResourceId {
        self.id
    }

    /// Gives the peer its signaling socket (once, when the socket starts).
    pub fn attach(&self, signaling: Arc<dyn Signaling>) {
        #[allow(clippy::disallowed_methods)]
        // once per peer, as its socket starts; it must not be lost to a full mailbox
        self.addr.do_send(Attach(signaling));
    }

    /// Hands the peer one text frame of its client, without waiting.
    ///
    /// # Errors
    /// [`Busy`] when the peer's mailbox is full (the frame is dropped; the socket answers
    /// `rate_limited`), or the peer is gone.
    pub fn signal(&self, text: ByteString) -> Result<(), Busy> {
        self.addr.try_send(Signal(text)).map_err(|_| Busy)
    }
}

impl Drop for PeerLink {
    fn drop(&mut self) {
        if self.addr.connected() {
            #[allow(clippy::disallowed_methods)]
            // once, as the socket ends: the peer must learn it even with a full mailbox
            self.addr.do_send(Close(CloseReason::SignalingLost));
        }
    }
}

impl std::fmt::Debug for PeerLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerLink").field("id", &self.id).finish()
    }
}

/// The socket to talk through.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Attach(pub(crate) Arc<dyn Signaling>);

/// One text frame of the client.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Signal(pub(crate) ByteString);

/// Close with this reason (room closed, kicked, replaced, socket gone).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Close(pub(crate) CloseReason);

/// Forward this published track to the client.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Subscribe(pub(crate) Arc<Forward>);

/// Stop forwarding a track (its publisher left).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Unsubscribe {
    pub(crate) publisher: Arc<str>,
    pub(crate) track_id: String,
}

/// Events of the connection, sent by its event handler ([`events`]).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) enum Event {
    /// A local candidate to trickle to the client.
    Candidate(RTCIceCandidateInit),
    /// The connection's state changed.
    State(RTCPeerConnectionState),
    /// The client publishes a track.
    Track(Arc<dyn TrackRemote>),
    /// The client opened a data channel.
    DataChannel(Arc<dyn DataChannel>),
}

/// Where the peer is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for `join`.
    Lobby,
    /// Its `join` is being handled.
    Joining,
    /// In a room.
    Joined,
}

/// The peer's room.
struct InRoom {
    addr: Addr<RoomActor>,
}

/// A track forwarded to this peer's client.
struct Subscription {
    sender: Arc<dyn RtpSender>,
    task: AbortHandle,
    /// Asks the publisher for a key frame (video only).
    keyframes: Option<tokio::sync::mpsc::Sender<()>>,
}

/// The peer actor.
pub struct PeerActor {
    env: Arc<Env>,
    tenant: Arc<str>,
    /// Rooms its tenant may hold on this node (its `peers` quota).
    max_rooms: u64,
    peer_id: Arc<str>,
    signaling: Option<Arc<dyn Signaling>>,
    stage: Stage,
    room: Option<InRoom>,
    pc: Option<Arc<dyn PeerConnection>>,
    /// The UDP port its connection binds (returned with the lease's drop).
    port: Option<PortLease>,
    /// The remote description is set: candidates go to the connection.
    remote_set: bool,
    /// The client's candidates so far (at most `max_candidates`).
    candidates: u32,
    /// Candidates that came before the remote description, with when they came.
    early_candidates: Vec<(Instant, RTCIceCandidateInit)>,
    /// A server offer waits for the client's answer.
    awaiting_answer: bool,
    /// A renegotiation is due once the current one is over.
    renegotiate: bool,
    /// The first offer/answer exchange is done.
    negotiated: bool,
    connected: bool,
    /// The deadline of the current stage (join, negotiation, ICE).
    deadline: Option<SpawnHandle>,
    /// The disconnected grace, while it runs.
    grace: Option<SpawnHandle>,
    /// Tracks it publishes, by track id.
    published: HashMap<String, Arc<Forward>>,
    /// Tracks forwarded to it, by (publisher, track id).
    subscriptions: HashMap<(Arc<str>, String), Subscription>,
    /// Tracks to forward once the first negotiation is done.
    waiting: Vec<Arc<Forward>>,
    /// Its data channel, as the room's other participants send to it.
    data: Arc<DataSlot>,
    /// The room's data channels, where its client's messages go.
    plane: Option<Arc<DataPlane>>,
    /// Why it closes, once decided.
    reason: Option<CloseReason>,
    rcx: ResourceCtx,
}

impl PeerActor {
    pub(crate) fn new(rcx: ResourceCtx, env: Arc<Env>, tenant: Arc<str>, max_rooms: u64) -> Self {
        Self {
            peer_id: rcx.id().to_string().into(),
            env,
            tenant,
            max_rooms,
            signaling: None,
            stage: Stage::Lobby,
            room: None,
            pc: None,
            port: None,
            remote_set: false,
            candidates: 0,
            early_candidates: Vec::new(),
            awaiting_answer: false,
            renegotiate: false,
            negotiated: false,
            connected: false,
            deadline: None,
            grace: None,
            published: HashMap::new(),
            subscriptions: HashMap::new(),
            waiting: Vec::new(),
            data: Arc::default(),
            plane: None,
            reason: None,
            rcx,
        }
    }

    /// Sends one frame to the client (dropped when the socket is gone or full).
    fn send(&self, frame: ByteString) {
        if let Some(signaling) = &self.signaling {
            signaling.send(frame);
        }
    }
}
