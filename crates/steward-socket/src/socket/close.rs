//! WebSocket close codes Steward sends, with their reasons: RFC 6455 §7.4.1 for the standard
//! ones, the private-use range 4000–4999 (§7.4.2) for Steward's own (their numbers follow
//! Centrifugo's where it has one: 4008 slow consumer, 4012 no pong).

use std::fmt;

/// A close code Steward sends or records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 1000: normal closure (the client closed, or an operator stopped the socket).
    Normal,
    /// 1001: going away ("server shutting down").
    GoingAway,
    /// 1002: protocol error (a malformed frame).
    Protocol,
    /// 1006: abnormal closure; never sent, recorded when the connection vanished without a
    /// Close frame.
    Abnormal,
    /// 1008: policy violation (sustained rate-limit abuse).
    Policy,
    /// 1009: message too big (a frame over `max_frame` or a message over `max_message`).
    TooBig,
    /// 1011: internal error.
    Internal,
    /// 4000: idle timeout (no application message for `[idle] socket`).
    IdleTimeout,
    /// 4008: slow consumer (the outbound queue overflowed or a write missed its deadline).
    SlowConsumer,
    /// 4012: no pong (nothing received for `ping_interval + pong_timeout`).
    NoPong,
}

impl CloseCode {
    /// Every code, in a fixed order (for metrics).
    pub const ALL: [Self; 10] = [
        Self::Normal,
        Self::GoingAway,
        Self::Protocol,
        Self::Abnormal,
        Self::Policy,
        Self::TooBig,
        Self::Internal,
        Self::IdleTimeout,
        Self::SlowConsumer,
        Self::NoPong,
    ];

    /// The numeric code.
    #[must_use]
    pub fn as_u16(self) -> u16 {
        match self {
            Self::Normal => 1000,
            Self::GoingAway => 1001,
            Self::Protocol => 1002,
            Self::Abnormal => 1006,
            Self::Policy => 1008,
            Self::TooBig => 1009,
            Self::Internal => 1011,
            Self::IdleTimeout => 4000,
            Self::SlowConsumer => 4008,
            Self::NoPong => 4012,
        }
    }

    /// The reason text sent with it.
    #[must_use]
    pub fn reason(self) -> &'static str {
        match self {
            Self::Normal => "normal closure",
            Self::GoingAway => "server shutting down",
            Self::Protocol => "protocol error",
            Self::Abnormal => "connection lost",
            Self::Policy => "policy violation",
            Self::TooBig => "message too big",
            Self::Internal => "internal error",
            Self::IdleTimeout => "idle timeout",
            Self::SlowConsumer => "slow consumer",
            Self::NoPong => "no pong",
        }
    }

    /// Position in [`CloseCode::ALL`].
    #[must_use]
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_u16())
    }
}

/// A Close frame: code and reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CloseFrame {
    pub(crate) code: CloseCode,
    pub(crate) reason: &'static str,
}

impl CloseFrame {
    pub(crate) fn new(code: CloseCode) -> Self {
        Self { code, reason: code.reason() }
    }
}
