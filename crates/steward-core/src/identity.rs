//! Resource identity: ids, kinds, the lifecycle state machine and exit reasons.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Identity of one resource, unique within a process and, with overwhelming likelihood, across
/// its restarts: the top 24 bits are random per process, the low 40 bits a counter.
/// Rendered as 16 lowercase hex digits (`"3fa2c10000000007"`); [`FromStr`] parses that form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceId(u64);

impl ResourceId {
    /// Allocates the next id.
    #[must_use]
    pub fn next() -> Self {
        static SALT: OnceLock<u64> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(1);
        let salt = *SALT.get_or_init(|| fastrand::u64(1..(1 << 24)));
        let n = COUNTER.fetch_add(1, Ordering::Relaxed) & ((1 << 40) - 1);
        Self((salt << 40) | n)
    }

    /// The raw value.
    #[must_use]
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for ResourceId {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ParseError("resource id must be 16 hex digits"));
        }
        u64::from_str_radix(s, 16)
            .map(Self)
            .map_err(|_| ParseError("resource id must be 16 hex digits"))
    }
}

/// A string did not name a valid id, kind or state; the message says what was expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub &'static str);

/// The kinds of long-lived resources Steward holds, plus `service` for its own actors
/// (listeners, the watchdog, supervisors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceKind {
    /// A Chromium process (or a remote CDP endpoint) holding browser contexts.
    Browser,
    /// A client's browser context with its pages.
    Session,
    /// A message producer.
    Producer,
    /// A message consumer, one per receive stream.
    Consumer,
    /// A WebSocket connection.
    Socket,
    /// A WebRTC peer connection.
    Peer,
    /// A stream of publications (last-value cache and history), one per tenant and stream name.
    Stream,
    /// A WebRTC room (an SFU), one per tenant and room name.
    Room,
    /// One of Steward's own long-lived actors.
    Service,
}

impl ResourceKind {
    /// How many kinds there are.
    pub const COUNT: usize = 9;

    /// Every kind, in a fixed order (used for per-kind tables and metrics).
    pub const ALL: [Self; Self::COUNT] = [
        Self::Browser,
        Self::Session,
        Self::Producer,
        Self::Consumer,
        Self::Socket,
        Self::Peer,
        Self::Stream,
        Self::Room,
        Self::Service,
    ];

    /// Lowercase name, as in APIs and metrics labels.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Browser => "browser",
            Self::Session => "session",
            Self::Producer => "producer",
            Self::Consumer => "consumer",
            Self::Socket => "socket",
            Self::Peer => "peer",
            Self::Stream => "stream",
            Self::Room => "room",
            Self::Service => "service",
        }
    }

    /// Position in [`ResourceKind::ALL`].
    #[must_use]
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ResourceKind {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|k| k.as_str() == s).ok_or(ParseError(
            "kind must be one of browser, session, producer, consumer, socket, peer, stream, room, service",
        ))
    }
}

/// Lifecycle of a resource slot.
///
/// ```text
/// starting ──► running ──► stopping ──► stopped
///    │            │  ▲          │
///    │            ▼  │          ▼
///    └──────► restarting ◄──────┘ (restart requested while stopping)
/// ```
/// `stopped` is final. A restart keeps the id and builds a fresh actor (`restarting` → `starting`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum LifecycleState {
    /// Being built by its factory.
    Starting = 0,
    /// Running and serving.
    Running = 1,
    /// Exited; its supervisor will build a fresh one after the backoff delay.
    Restarting = 2,
    /// Asked to stop; running its async cleanup.
    Stopping = 3,
    /// Gone. Kept briefly in the registry's stopped list.
    Stopped = 4,
}

impl LifecycleState {
    /// Lowercase name, as in APIs.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Restarting => "restarting",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
        }
    }

    /// Whether the state machine allows `self` → `next`. Staying in a state is allowed.
    #[must_use]
    pub fn can_become(self, next: Self) -> bool {
        use LifecycleState::{Restarting, Running, Starting, Stopped, Stopping};
        self == next
            || matches!(
                (self, next),
                (Starting, Running | Restarting | Stopping | Stopped)
                    | (Running, Restarting | Stopping | Stopped)
                    | (Restarting, Starting | Stopping | Stopped)
                    | (Stopping, Stopped | Restarting)
            )
    }

    pub(crate) fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Starting,
            1 => Self::Running,
            2 => Self::Restarting,
            3 => Self::Stopping,
            _ => Self::Stopped,
        }
    }
}

impl fmt::Display for LifecycleState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LifecycleState {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::Starting, Self::Running, Self::Restarting, Self::Stopping, Self::Stopped]
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or(ParseError(
                "state must be one of starting, running, restarting, stopping, stopped",
            ))
    }
}

/// Why a resource stopped. Recorded for every stop; a resource that vanished without recording
/// one exited [`ExitReason::Abnormal`]. As in OTP, `normal`, `shutdown` and `idle` are normal
/// exits (a `transient` child is not restarted after them); the rest are abnormal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// It finished its work or was closed by its client.
    Normal,
    /// It was stopped by its supervisor, an operator or the system shutdown.
    Shutdown,
    /// Its idle timeout expired.
    Idle,
    /// It stopped itself because of an error.
    Error(Arc<str>),
    /// It did not stop within its deadline and was killed.
    Killed,
    /// A handler panicked; the lifeline saw it unwind.
    Panic,
    /// It vanished without a recorded reason.
    Abnormal,
}

impl ExitReason {
    /// An [`ExitReason::Error`] with this message.
    pub fn error(msg: impl fmt::Display) -> Self {
        Self::Error(msg.to_string().into())
    }

    /// Whether this exit is abnormal (OTP: anything but `normal`/`shutdown`).
    #[must_use]
    pub fn is_abnormal(&self) -> bool {
        !matches!(self, Self::Normal | Self::Shutdown | Self::Idle)
    }

    /// Short label for metrics and logs: `normal`, `shutdown`, `idle`, `error`, `killed`,
    /// `panic`, `abnormal`.
    #[must_use]
    pub fn label(&self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::Shutdown => "shutdown",
            Self::Idle => "idle",
            Self::Error(_) => "error",
            Self::Killed => "killed",
            Self::Panic => "panic",
            Self::Abnormal => "abnormal",
        }
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Error(msg) => write!(f, "error: {msg}"),
            other => f.write_str(other.label()),
        }
    }
}
