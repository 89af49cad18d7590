//! The signaling protocol of `GET /v1/rtc` (`docs/protocol/rtc.md`): the client's messages,
//! parsed, and the frames the server sends, rendered once.

use bytestring::ByteString;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use webrtc::peer_connection::RTCIceCandidateInit;

use crate::CloseReason;

/// Longest room name, in bytes.
pub const MAX_ROOM_NAME: usize = 64;
/// Longest display name, in bytes.
pub const MAX_DISPLAY_NAME: usize = 128;
/// Largest SDP accepted, in bytes (a browser's offer with a few tracks is 3–10 KiB; a frame is
/// at most `[socket] max_frame`, 64 KiB by default).
pub const MAX_SDP: usize = 48 * 1024;

/// A client message, parsed for shape.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ClientMessage {
    /// `{"type":"join","room":…,"name":…}`.
    Join {
        room: String,
        #[serde(default)]
        name: Option<String>,
    },
    /// `{"type":"offer","sdp":…}`.
    Offer { sdp: String },
    /// `{"type":"answer","sdp":…}`.
    Answer { sdp: String },
    /// `{"type":"candidate","candidate":{…}}`; `null` or an empty `candidate` string is the end
    /// of the client's candidates.
    Candidate { candidate: Option<RTCIceCandidateInit> },
    /// `{"type":"leave"}`.
    Leave,
}

/// A refused message: the `error` frame's code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl Refusal {
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    pub(crate) fn frame(&self) -> ByteString {
        error(self.code, &self.message)
    }
}

/// Parses one text frame and checks its fields' limits.
pub(crate) fn parse(text: &str) -> Result<ClientMessage, Refusal> {
    let message: ClientMessage = serde_json::from_str(text)
        .map_err(|e| Refusal::new("bad_request", format!("malformed message: {e}")))?;
    match &message {
        ClientMessage::Join { room, name } => {
            check_room_name(room).map_err(|m| Refusal::new("bad_request", m))?;
            if name.as_ref().is_some_and(|n| n.len() > MAX_DISPLAY_NAME || n.is_empty()) {
                return Err(Refusal::new(
                    "bad_request",
                    format!("`name` must be 1 to {MAX_DISPLAY_NAME} bytes"),
                ));
            }
        }
        ClientMessage::Offer { sdp } | ClientMessage::Answer { sdp } if sdp.len() > MAX_SDP => {
            return Err(Refusal::new(
                "malformed_sdp",
                format!("an SDP of {} bytes, more than the {MAX_SDP} allowed", sdp.len()),
            ));
        }
        _ => {}
    }
    Ok(message)
}

/// A room name: 1 to 64 bytes of `A-Z a-z 0-9 . _ -`.
///
/// # Errors
/// What is wrong with it.
pub fn check_room_name(room: &str) -> Result<(), String> {
    let ok = !room.is_empty()
        && room.len() <= MAX_ROOM_NAME
        && room.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!("`room` must be 1 to {MAX_ROOM_NAME} characters of A-Z a-z 0-9 . _ -"))
    }
}

fn render(value: &Value) -> ByteString {
    ByteString::from(value.to_string())
}

/// One participant as `joined` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParticipantInfo {
    /// The peer's id.
    pub peer_id: String,
    /// Its display name (the peer id when it gave none).
    pub name: String,
    /// The tracks it publishes.
    pub tracks: Vec<TrackInfo>,
}

/// A published track.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrackInfo {
    /// The publisher's track id.
    pub track_id: String,
    /// `audio` or `video`.
    pub kind: &'static str,
}

pub(crate) fn joined(peer_id: &str, room: &str, participants: &[ParticipantInfo]) -> ByteString {
    render(
        &json!({"type": "joined", "peer_id": peer_id, "room": room, "participants": participants}),
    )
}

pub(crate) fn participant_joined(peer_id: &str, name: &str) -> ByteString {
    render(&json!({"type": "participant_joined", "peer_id": peer_id, "name": name}))
}

pub(crate) fn participant_left(peer_id: &str, reason: CloseReason) -> ByteString {
    render(&json!({"type": "participant_left", "peer_id": peer_id, "reason": reason.as_str()}))
}

pub(crate) fn track_published(peer_id: &str, track: &TrackInfo) -> ByteString {
    render(&json!({
        "type": "track_published", "peer_id": peer_id, "track_id": track.track_id, "kind": track.kind,
    }))
}

pub(crate) fn track_unpublished(peer_id: &str, track_id: &str) -> ByteString {
    render(&json!({"type": "track_unpublished", "peer_id": peer_id, "track_id": track_id}))
}

pub(crate) fn description(kind: &'static str, sdp: &str) -> ByteString {
    render(&json!({"type": kind, "sdp": sdp}))
}

pub(crate) fn candidate(candidate: &RTCIceCandidateInit) -> ByteString {
    render(&json!({"type": "candidate", "candidate": candidate}))
}

pub(crate) fn error(code: &str, message: &str) -> ByteString {
    render(&json!({"type": "error", "code": code, "message": message}))
}

pub(crate) fn closing(reason: CloseReason) -> ByteString {
    render(&json!({"type": "closing", "reason": reason.as_str(), "reconnect": reason.reconnect()}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_parse_and_bad_ones_say_why() {
        assert_eq!(
            parse(r#"{"type":"join","room":"a-1"}"#).unwrap(),
            ClientMessage::Join { room: "a-1".into(), name: None }
        );
        assert_eq!(parse(r#"{"type":"leave"}"#).unwrap(), ClientMessage::Leave);
        let c = parse(r#"{"type":"candidate","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0}}"#).unwrap();
        assert!(matches!(c, ClientMessage::Candidate { candidate: Some(_) }));
        assert_eq!(parse(r#"{"type":"join","room":"../x"}"#).unwrap_err().code, "bad_request");
        assert_eq!(parse(r#"{"type":"nope"}"#).unwrap_err().code, "bad_request");
        assert_eq!(parse("{").unwrap_err().code, "bad_request");
        let big = format!(r#"{{"type":"offer","sdp":"{}"}}"#, "a".repeat(MAX_SDP + 1));
        assert_eq!(parse(&big).unwrap_err().code, "malformed_sdp");
    }

    #[test]
    fn closing_says_whether_to_reconnect() {
        let frame = closing(CloseReason::Shutdown);
        let v: Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(v, json!({"type": "closing", "reason": "shutdown", "reconnect": true}));
    }
}
