//! What a job is: its id, status machine, fields, and the update event fanned out to watchers.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use bytestring::ByteString;
use serde::Serialize;
use serde_json::value::RawValue;

/// A job's id: 32 lowercase hex digits (128 random bits), unique per node with overwhelming
/// likelihood. Not a secret: every job is also scoped to its tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(Arc<str>);

impl JobId {
    /// A fresh random id.
    #[must_use]
    pub fn random() -> Self {
        Self(format!("{:032x}", fastrand::u128(..)).into())
    }

    /// The id as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for JobId {
    type Err = crate::Error;

    /// Accepts exactly 32 hex digits (case-insensitive; kept lowercase).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(s.to_ascii_lowercase().into()))
        } else {
            Err(crate::Error::invalid("job", "must be a job id: 32 hex digits"))
        }
    }
}

impl Serialize for JobId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// The status of a job. `queued → running → completed | failed | cancelled`; a queued job may
/// also end directly. The three final states are final: nothing leaves them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Created, waiting for a worker.
    Queued,
    /// A worker is on it.
    Running,
    /// Finished successfully (final).
    Completed,
    /// Finished with an error (final).
    Failed,
    /// Cancelled by its tenant (final).
    Cancelled,
}

impl JobStatus {
    /// Lowercase name, as in the WebSocket protocol.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether the status is final.
    #[must_use]
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }

    /// Whether a job may move from `self` to `next`. Staying in a non-final state is allowed
    /// (a progress or data update); nothing leaves a final state; nothing returns to `queued`.
    #[must_use]
    pub fn may_become(self, next: Self) -> bool {
        match (self, next) {
            (from, _) if from.is_final() => false,
            (Self::Running, Self::Queued) => false,
            _ => true,
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One job as the hub holds it. Cloning copies `data` (at most `[jobs] max_data`).
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    /// Its id.
    pub id: JobId,
    /// Owning tenant; never shown to anyone else.
    #[serde(skip)]
    pub tenant: Arc<str>,
    /// Free text naming the kind of work (at most `[jobs] max_kind_len` bytes).
    pub kind: String,
    /// Current status.
    pub status: JobStatus,
    /// Progress, 0–100.
    pub progress: u8,
    /// A JSON object reported by the worker (at most `[jobs] max_data` bytes of JSON text).
    pub data: Box<RawValue>,
    /// When it was created.
    #[serde(serialize_with = "rfc3339")]
    pub created_at: SystemTime,
    /// When it last changed.
    #[serde(serialize_with = "rfc3339")]
    pub updated_at: SystemTime,
    /// When it reached a final status.
    #[serde(serialize_with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<SystemTime>,
}

/// One change of a job, shared by every watcher it is fanned out to (an `Arc`): the job after
/// the change, and its WebSocket frame rendered at most once however many sockets receive it.
#[derive(Debug)]
pub struct JobUpdate {
    /// The job after the change.
    pub job: Job,
    frame: OnceLock<ByteString>,
}

impl JobUpdate {
    /// Wraps a snapshot.
    #[must_use]
    pub fn new(job: Job) -> Arc<Self> {
        Arc::new(Self { job, frame: OnceLock::new() })
    }

    /// The `{"type":"job",…}` WebSocket frame of this update (rendered on first use).
    pub fn frame(&self) -> &ByteString {
        self.frame.get_or_init(|| {
            let j = &self.job;
            render(&JobFrame {
                kind: "job",
                job: &j.id,
                status: j.status,
                progress: j.progress,
                data: &j.data,
                at: Rfc3339(j.updated_at),
            })
        })
    }
}

#[derive(Serialize)]
struct JobFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    job: &'a JobId,
    status: JobStatus,
    progress: u8,
    data: &'a RawValue,
    at: Rfc3339,
}

/// A time rendered as RFC 3339 UTC with milliseconds (`2026-11-21T10:00:00.123Z`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rfc3339(pub(crate) SystemTime);

impl Serialize for Rfc3339 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(self.0))
    }
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    Rfc3339(*t).serialize(s)
}

#[allow(clippy::ref_option)] // serde's `serialize_with` passes `&Option<T>`
fn rfc3339_opt<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => Rfc3339(*t).serialize(s),
        None => s.serialize_none(),
    }
}

/// Renders a server frame as JSON text. Our frames are plain structs of strings, numbers and
/// already-valid raw JSON, so serialization cannot fail; should it ever, the frame is an
/// `internal` error frame instead of a panic.
pub(crate) fn render<T: Serialize>(frame: &T) -> ByteString {
    match serde_json::to_string(frame) {
        Ok(text) => ByteString::from(text),
        Err(e) => {
            debug_assert!(false, "frame serialization failed: {e}");
            ByteString::from_static(
                r#"{"type":"error","code":"internal","message":"cannot render a frame"}"#,
            )
        }
    }
}

/// Validates `text` as a JSON object of at most `max` bytes and keeps it as raw JSON.
///
/// # Errors
/// [`crate::Error::InvalidArgument`] naming `data` when it is too big, not JSON or not an object.
pub(crate) fn parse_data(text: &str, max: usize) -> crate::Result<Box<RawValue>> {
    if text.len() > max {
        return Err(crate::Error::invalid(
            "data",
            format!("is {} bytes, more than {max}", text.len()),
        ));
    }
    let value: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text)
        .map_err(|e| crate::Error::invalid("data", format!("must be a JSON object: {e}")))?;
    // re-serialize compactly so frames stay small and the text is canonical
    let compact = serde_json::to_string(&value)
        .map_err(|e| crate::Error::invalid("data", format!("cannot be re-encoded: {e}")))?;
    RawValue::from_string(compact)
        .map_err(|e| crate::Error::invalid("data", format!("must be a JSON object: {e}")))
}

/// The empty data object `{}`.
pub(crate) fn empty_data() -> Box<RawValue> {
    // `{}` is valid JSON, so this never falls back to the default (`null`)
    RawValue::from_string("{}".to_owned()).unwrap_or_default()
}
