//! WebRTC rooms for Steward: an SFU where every peer connection is a supervised actor and none
//! outlives its call.
//!
//! - A **peer** ([`peer`], kind `peer`, a `temporary` child of the `peers` dynamic supervisor)
//!   is one signaling socket's peer connection: it owns the webrtc-rs `PeerConnection` (whose
//!   tasks are its tracked tasks, [`runtime`]), its UDP port, its deadlines (join, negotiation,
//!   ICE, disconnected grace, lifetime), its forwarding tasks and its data channel. It closes
//!   with a typed [`CloseReason`], counted, and always calls `close()` itself, never from a
//!   webrtc-rs event handler (those hold a weak address and send the actor messages).
//! - A **room** ([`room`], kind `room`, under `rooms`) is one per (tenant, name): its
//!   participants, the tracks they publish and the data plane; it forwards RTP (one queue per
//!   track and subscriber, bounded, lossy) and data-channel messages (bounded by each
//!   receiver's buffer, lossy), and stops after its empty or departure timeout.
//! - The signaling socket itself is the edge's (steward-http's `GET /v1/rtc` on a
//!   `steward-socket` socket, with its limits); this crate sees it as a [`Signaling`] and is
//!   reached through a [`PeerLink`].
//!
//! Decision 0012 records the choice of webrtc-rs 0.21.1 and how its #906 cycle is broken.

pub mod peer;
pub mod room;
pub mod runtime;
pub mod service;
pub mod signal;
pub mod stats;

mod ports;

use bytestring::ByteString;

pub use peer::PeerLink;
pub use service::{RoomSummary, Rtc};
pub use signal::{ParticipantInfo, TrackInfo};
pub use stats::RtcStats;

/// Why a peer closed: sent to its client in `closing {reason, reconnect}` and counted
/// (`steward_rtc_peer_closes_total{reason}`). Names follow LiveKit's disconnect reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The client sent `leave`.
    ClientLeave,
    /// No `join` within `[rtc] join_timeout`.
    JoinTimeout,
    /// An offer or answer did not come within `[rtc] negotiation_timeout`.
    NegotiationTimeout,
    /// ICE failed, or did not connect within `[rtc] ice_timeout` of the first answer.
    IceFailed,
    /// The connection stayed `disconnected` past `[rtc] disconnected_grace`.
    Disconnected,
    /// The signaling socket went away.
    SignalingLost,
    /// Another peer joined the room with the same name.
    DuplicateIdentity,
    /// The room was closed (`CloseRoom`).
    RoomClosed,
    /// The server is shutting down.
    Shutdown,
    /// Removed by the tenant (`RemoveParticipant`) or an operator.
    Kicked,
    /// Something failed on the server's side (the log says what), or `[rtc] max_lifetime`.
    Error,
}

impl CloseReason {
    /// Every reason, in a fixed order (metrics).
    pub const ALL: [Self; 11] = [
        Self::ClientLeave,
        Self::JoinTimeout,
        Self::NegotiationTimeout,
        Self::IceFailed,
        Self::Disconnected,
        Self::SignalingLost,
        Self::DuplicateIdentity,
        Self::RoomClosed,
        Self::Shutdown,
        Self::Kicked,
        Self::Error,
    ];

    /// The protocol's name of it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientLeave => "client_leave",
            Self::JoinTimeout => "join_timeout",
            Self::NegotiationTimeout => "negotiation_timeout",
            Self::IceFailed => "ice_failed",
            Self::Disconnected => "disconnected",
            Self::SignalingLost => "signaling_lost",
            Self::DuplicateIdentity => "duplicate_identity",
            Self::RoomClosed => "room_closed",
            Self::Shutdown => "shutdown",
            Self::Kicked => "kicked",
            Self::Error => "error",
        }
    }

    /// Whether a client should join again (the `closing` frame's `reconnect`): after a
    /// transient failure or a shutdown, not after a decision (leave, kick, replaced, closed).
    #[must_use]
    pub fn reconnect(self) -> bool {
        matches!(
            self,
            Self::NegotiationTimeout
                | Self::IceFailed
                | Self::Disconnected
                | Self::SignalingLost
                | Self::Shutdown
                | Self::Error
        )
    }

    /// Whether it is a failure (the peer's exit reason is then an error, which the log and the
    /// stopped list show).
    #[must_use]
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Self::JoinTimeout
                | Self::NegotiationTimeout
                | Self::IceFailed
                | Self::Disconnected
                | Self::Error
        )
    }
}

/// The peer's signaling socket, as the edge gives it: frames out, and its close.
pub trait Signaling: Send + Sync {
    /// Offers one text frame; never waits. `false` when the socket is gone or its queue is full
    /// (the socket then closes itself, 4008).
    fn send(&self, frame: ByteString) -> bool;

    /// Closes the socket after what is queued: 1000, or 1001 while the server shuts down.
    fn close(&self);
}

/// Errors of the RTC façade.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A node cap (`max_peers`, `max_rooms`) is reached.
    #[error("this node holds its maximum of {max} {what}")]
    NodeFull {
        /// Which cap.
        what: &'static str,
        /// Its value.
        max: usize,
    },
    /// The tenant holds as many rooms as it may on this node (its `peers` quota).
    #[error("the tenant holds its maximum of {0} rooms on this node")]
    TenantRooms(u64),
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// No such room or participant (of this tenant).
    #[error("{0}")]
    NotFound(String),
    /// A request that cannot be served as given.
    #[error("{0}")]
    Invalid(String),
    /// A supervisor or actor is not reachable.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
