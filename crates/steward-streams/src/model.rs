//! What streams hold and answer: positions, publications, history pages, snapshots, and the
//! validation of what clients name. Every rule here is documented in `docs/protocol/streams.md`.

use std::sync::Arc;

use bytes::Bytes;

use crate::{Error, Result};

/// Longest stream name, in bytes.
pub const MAX_STREAM_NAME: usize = 128;
/// Longest key, in bytes.
pub const MAX_KEY: usize = 256;
/// Longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY: usize = 128;

/// A stream of one tenant: streams are namespaced per tenant, so two tenants' `prices` are two
/// streams that never see each other.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamRef {
    /// The owning tenant's id.
    pub tenant: Arc<str>,
    /// The stream's name (validated with [`check_stream_name`]).
    pub name: Arc<str>,
}

impl std::fmt::Display for StreamRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.tenant, self.name)
    }
}

/// A place in a stream (Centrifugo's stream position): the offset of a publication and the
/// epoch of the stream's history. Offsets start at 1 and grow by one per publication; the epoch
/// changes when the history was lost (a memory stream that stopped, a Redis that lost its data),
/// and a position of another epoch cannot be recovered from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Position {
    /// Offset of the last publication at this place; 0 before the first.
    pub offset: u64,
    /// Epoch of the history (an opaque string, at most 64 bytes).
    pub epoch: String,
}

/// One publication as stored and delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    /// Its offset in the stream (1, 2, …).
    pub offset: u64,
    /// The key whose latest value it is; `None` for a publication without key (then it is the
    /// stream's key-less latest value).
    pub key: Option<Arc<str>>,
    /// The data: JSON text when `json`, else opaque bytes.
    pub data: Bytes,
    /// Whether `data` is JSON text (delivered inline on the WebSocket; bytes go base64).
    pub json: bool,
    /// When it was published, in milliseconds since the Unix epoch (the engine's clock).
    pub time_ms: u64,
}

impl Publication {
    /// Bytes it holds against the tenant's `stream_bytes` quota: data, key, and 64 bytes of
    /// bookkeeping.
    #[must_use]
    pub fn weight(&self) -> u64 {
        (self.data.len() + self.key.as_deref().map_or(0, str::len) + 64) as u64
    }
}

/// A publication asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPublication {
    /// Its key, if any (checked with [`check_key`]).
    pub key: Option<Arc<str>>,
    /// Its data (at most `[streams] max_data`; JSON text when `json`, checked by the edge).
    pub data: Bytes,
    /// Whether `data` is JSON text.
    pub json: bool,
    /// A client's idempotency key: a second publish with it within `[streams]
    /// idempotency_window` answers the first one's position and stores nothing.
    pub idempotency_key: Option<Arc<str>>,
}

/// What a publish answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The publication's place.
    pub position: Position,
    /// True when an earlier publish with the same idempotency key answered this position and
    /// nothing was stored now.
    pub duplicate: bool,
    /// The stored publication (`None` for a duplicate).
    pub publication: Option<Publication>,
}

/// A `History` query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Publications after this position only; its epoch must be the stream's. `None`: from the
    /// oldest kept.
    pub since: Option<Position>,
    /// Most publications answered (at most the history size).
    pub limit: usize,
    /// Newest first.
    pub reverse: bool,
}

/// A page of history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    /// The stream's current top (last offset, epoch).
    pub position: Position,
    /// The publications, oldest first (newest first with `reverse`).
    pub publications: Vec<Publication>,
}

/// What a new subscriber gets before live publications: the stream's top, what it missed since
/// its recovery point (all or nothing), and the latest values if it asked for them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// The stream's top when the snapshot was taken: live publications follow from
    /// `position.offset + 1`.
    pub position: Position,
    /// The subscriber gave a recovery point.
    pub was_recovering: bool,
    /// Every publication after the recovery point is in `publications` (false when none was
    /// asked for, when the epoch changed, or when the history no longer reaches back to it:
    /// the client reloads).
    pub recovered: bool,
    /// The recovered publications, oldest first (empty unless `recovered`).
    pub publications: Vec<Publication>,
    /// The latest value per key, most recent first (when asked for; at most `[streams]
    /// max_latest`).
    pub latest: Vec<Publication>,
}

/// What a stream holds, for `Info`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoreInfo {
    /// The current top.
    pub position: Position,
    /// Publications in the history.
    pub history: u64,
    /// Keys with a latest value (the key-less latest value counts as one).
    pub keys: u64,
    /// Bytes held in this node's memory (0 for the Redis engine, which holds them in Redis).
    pub bytes: u64,
}

fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')
}

/// A stream name: 1–128 bytes of `[A-Za-z0-9_.:-]`, not starting with `.` or `:`.
///
/// # Errors
/// [`Error::Invalid`] naming `stream`.
pub fn check_stream_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid("stream", "must not be empty"));
    }
    if name.len() > MAX_STREAM_NAME {
        return Err(Error::invalid("stream", format!("longer than {MAX_STREAM_NAME} bytes")));
    }
    if !name.chars().all(name_char) || name.starts_with(['.', ':']) {
        return Err(Error::invalid(
            "stream",
            "only letters, digits, `-`, `_`, `.` and `:` (not first) are allowed",
        ));
    }
    Ok(())
}

/// A key: 1–256 bytes of printable text (no control characters).
///
/// # Errors
/// [`Error::Invalid`] naming `key`.
pub fn check_key(key: &str) -> Result<()> {
    check_text("key", key, MAX_KEY)
}

/// An idempotency key: 1–128 bytes of printable text.
///
/// # Errors
/// [`Error::Invalid`] naming `idempotency_key`.
pub fn check_idempotency_key(key: &str) -> Result<()> {
    check_text("idempotency_key", key, MAX_IDEMPOTENCY_KEY)
}

fn check_text(field: &'static str, value: &str, max: usize) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(Error::invalid(field, format!("longer than {max} bytes")));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(())
}

/// Milliseconds since the Unix epoch, now.
#[must_use]
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The tenant's stream quotas as its token resolved them, handed in with each request (a
/// quota change applies from the next request on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamQuotas {
    /// Keys with a latest value per stream (`stream_keys`).
    pub stream_keys: u64,
    /// Bytes held by the tenant's streams on this node (`stream_bytes`).
    pub stream_bytes: u64,
}

/// What a subscriber asks for besides live publications.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// Recover every publication after this position (all or nothing).
    pub since: Option<Position>,
    /// Send the latest value of every key (most recent first, at most `[streams] max_latest`).
    pub latest: bool,
}

/// What `Info` answers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamInfo {
    /// What the store holds.
    pub store: StoreInfo,
    /// Live subscriptions on this node.
    pub subscribers: u64,
    /// The engine (`memory`, `redis`).
    pub engine: &'static str,
}
