//! The WebSocket frames of streams (`docs/protocol/streams.md`), rendered here once per
//! publication and shared by every subscribed socket ([`crate::Delivery::frame`]).
//!
//! A publication's data goes inline when it is JSON (it was validated at publish) and as a
//! base64 string with `"encoding":"base64"` when it is bytes.

use base64::Engine as _;
use bytestring::ByteString;
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::model::{Position, Publication, Snapshot};

/// A publication as the WebSocket and `Watch` JSON show it.
#[derive(Serialize)]
struct PublicationJson<'a> {
    offset: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    data: Data<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    encoding: Option<&'static str>,
    time: u64,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Data<'a> {
    Json(&'a RawValue),
    Text(String),
}

impl<'a> PublicationJson<'a> {
    fn of(p: &'a Publication) -> Self {
        let json = p
            .json
            .then(|| std::str::from_utf8(&p.data).ok())
            .flatten()
            .and_then(|text| serde_json::from_str::<&RawValue>(text).ok());
        let (data, encoding) = match json {
            Some(raw) => (Data::Json(raw), None),
            None => (
                Data::Text(base64::engine::general_purpose::STANDARD.encode(&p.data)),
                Some("base64"),
            ),
        };
        Self { offset: p.offset, key: p.key.as_deref(), data, encoding, time: p.time_ms }
    }
}

#[derive(Serialize)]
struct PublicationFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    stream: &'a str,
    #[serde(flatten)]
    publication: PublicationJson<'a>,
}

/// `{"type":"publication","stream":…,"offset":…,"key":…,"data":…,"time":…}`.
#[must_use]
pub fn publication(stream: &str, p: &Publication) -> ByteString {
    render(&PublicationFrame { kind: "publication", stream, publication: PublicationJson::of(p) })
}

#[derive(Serialize)]
struct SubscribedFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    stream: &'a str,
    position: &'a Position,
    recovered: bool,
    was_recovering: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    latest: Option<Vec<PublicationJson<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    publications: Option<Vec<PublicationJson<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a Value>,
}

/// `{"type":"subscribed","stream":…,"position":{"offset":…,"epoch":…},"recovered":…,
/// "was_recovering":…,"latest":[…],"publications":[…],"id":…}`: `latest` when asked for,
/// `publications` when recovering.
#[must_use]
pub fn subscribed(
    stream: &str,
    s: &Snapshot,
    asked_latest: bool,
    id: Option<&Value>,
) -> ByteString {
    render(&SubscribedFrame {
        kind: "subscribed",
        stream,
        position: &s.position,
        recovered: s.recovered,
        was_recovering: s.was_recovering,
        latest: asked_latest.then(|| s.latest.iter().map(PublicationJson::of).collect()),
        publications: s
            .was_recovering
            .then(|| s.publications.iter().map(PublicationJson::of).collect()),
        id,
    })
}

#[derive(Serialize)]
struct Ended<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    stream: &'a str,
    code: &'a str,
    message: &'a str,
}

/// `{"type":"unsubscribed","stream":…,"code":…,"message":…}`: the stream ended the
/// subscription (`unavailable`: its engine's feed was interrupted; `insufficient_state`: a gap
/// could not be filled; `stream_closed`: the stream stopped). The client subscribes again with
/// its last position to recover.
#[must_use]
pub fn ended(stream: &str, code: &str, message: &str) -> ByteString {
    render(&Ended { kind: "unsubscribed", stream, code, message })
}

fn render<T: Serialize>(frame: &T) -> ByteString {
    // serializing these types cannot fail (string keys, no maps with non-string keys)
    serde_json::to_string(frame).map_or_else(|_| ByteString::from_static("{}"), ByteString::from)
}
