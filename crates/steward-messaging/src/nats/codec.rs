//! How a [`Message`] travels in NATS headers, and what a JetStream ack subject says.
//!
//! | field | where |
//! |---|---|
//! | client id | `Nats-Msg-Id` (JetStream de-duplicates on it) |
//! | tag | the subject's last token ([`super::naming`]) |
//! | keys | `Steward-Keys: k1,k2` (keys have no commas or spaces), absent when none |
//! | properties | one `Steward-P-<name>` header each, the value percent-encoded |
//! | deliver at | `Steward-Deliver-At`: signed nanoseconds since the Unix epoch |
//! | message id, published at, delivery count | the ack subject (stream sequence, timestamp) |
//!
//! Property values are percent-encoded (every byte outside `!`..=`~`, and `%`) because NATS
//! header values cannot hold CR/LF and async-nats trims their surrounding whitespace; encoded, an
//! empty value, a value with edge spaces and any UTF-8 come back exactly.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::{HeaderMap, HeaderName, HeaderValue};

use super::naming;
use crate::broker::{Message, OutMessage};

const NATS_MSG_ID: &str = "Nats-Msg-Id";
const KEYS: &str = "Steward-Keys";
const DELIVER_AT: &str = "Steward-Deliver-At";
const PROPERTY_PREFIX: &str = "Steward-P-";

/// A header that cannot be encoded (never for validated input).
#[derive(Debug)]
pub(super) struct EncodeError(pub(super) String);

fn insert(headers: &mut HeaderMap, name: &str, value: &str) -> Result<(), EncodeError> {
    let name =
        HeaderName::from_str(name).map_err(|_| EncodeError(format!("header name {name:?}")))?;
    let value =
        HeaderValue::from_str(value).map_err(|_| EncodeError(format!("header value of {name}")))?;
    headers.insert(name, value);
    Ok(())
}

/// The headers of `message` as first published, `Nats-Msg-Id` = its client id.
pub(super) fn encode(message: &OutMessage) -> Result<HeaderMap, EncodeError> {
    let mut headers = HeaderMap::new();
    insert(&mut headers, NATS_MSG_ID, &message.client_id)?;
    put_fields(&mut headers, &message.keys, &message.properties, message.deliver_at)?;
    Ok(headers)
}

/// The headers of `message`'s copy on its dead-letter topic, as the embedded broker makes it:
/// client id (`Nats-Msg-Id`) `move_id`, so a repeated move is de-duplicated; no deliver-at.
pub(super) fn encode_dead_letter(
    message: &Message,
    move_id: &str,
) -> Result<HeaderMap, EncodeError> {
    let mut headers = HeaderMap::new();
    insert(&mut headers, NATS_MSG_ID, move_id)?;
    put_fields(&mut headers, &message.keys, &message.properties, None)?;
    Ok(headers)
}

fn put_fields(
    headers: &mut HeaderMap,
    keys: &[String],
    properties: &BTreeMap<String, String>,
    deliver_at: Option<SystemTime>,
) -> Result<(), EncodeError> {
    if !keys.is_empty() {
        insert(headers, KEYS, &keys.join(","))?;
    }
    for (name, value) in properties {
        insert(headers, &format!("{PROPERTY_PREFIX}{name}"), &percent_encode(value))?;
    }
    if let Some(at) = deliver_at {
        insert(headers, DELIVER_AT, &unix_nanos(at).to_string())?;
    }
    Ok(())
}

/// What a delivery's ack subject says (`$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.
/// <consumer seq>.<timestamp ns>.<pending>`, with a domain and account hash in front on newer
/// servers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct AckInfo {
    /// Times the consumer delivered the message, this delivery included.
    pub(super) delivered: u64,
    /// The stream sequence: the message id.
    pub(super) stream_seq: u64,
    /// The consumer's delivery sequence: unique per delivery.
    pub(super) delivery_seq: u64,
    /// When the stream stored the message, nanoseconds since the Unix epoch.
    pub(super) published_nanos: i128,
}

/// Parses an ack subject; `None` when it is not one.
pub(super) fn parse_ack_subject(subject: &str) -> Option<AckInfo> {
    let rest = subject.strip_prefix("$JS.ACK.")?;
    let tokens: Vec<&str> = rest.split('.').collect();
    // 7 tokens: stream, consumer, delivered, sseq, dseq, ts, pending (nats-server 2.9);
    // 9 or more: domain and account hash first, a random token last (ADR-15).
    let numbers = match tokens.len() {
        7 => &tokens[2..6],
        n if n >= 9 => &tokens[4..8],
        _ => return None,
    };
    Some(AckInfo {
        delivered: numbers[0].parse().ok()?,
        stream_seq: numbers[1].parse().ok()?,
        delivery_seq: numbers[2].parse().ok()?,
        published_nanos: numbers[3].parse().ok()?,
    })
}

/// The [`Message`] in a JetStream delivery of `topic`. Lenient: a message Steward did not
/// publish decodes with empty fields rather than failing.
pub(super) fn decode(
    topic: &Arc<str>,
    subject: &str,
    headers: Option<&HeaderMap>,
    payload: bytes::Bytes,
    info: &AckInfo,
) -> Message {
    let mut message = Message {
        message_id: info.stream_seq.to_string(),
        client_id: String::new(),
        topic: topic.clone(),
        body: payload,
        tag: naming::tag_of_subject(subject),
        keys: Vec::new(),
        properties: BTreeMap::new(),
        published_at: from_unix_nanos(info.published_nanos),
        deliver_at: None,
    };
    let Some(headers) = headers else { return message };
    for (name, values) in headers.iter() {
        let name: &str = name.as_ref();
        let Some(value) = values.last().map(HeaderValue::as_str) else { continue };
        match name {
            NATS_MSG_ID => message.client_id = value.to_owned(),
            KEYS if !value.is_empty() => {
                message.keys = value.split(',').map(str::to_owned).collect();
            }
            DELIVER_AT => message.deliver_at = value.parse().ok().map(from_unix_nanos),
            _ => {
                if let Some(property) = name.strip_prefix(PROPERTY_PREFIX) {
                    message.properties.insert(property.to_owned(), percent_decode(value));
                }
            }
        }
    }
    message
}

/// `at` in signed nanoseconds since the Unix epoch.
pub(super) fn unix_nanos(at: SystemTime) -> i128 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(after) => i128::try_from(after.as_nanos()).unwrap_or(i128::MAX),
        Err(before) => -i128::try_from(before.duration().as_nanos()).unwrap_or(i128::MAX),
    }
}

fn from_unix_nanos(nanos: i128) -> SystemTime {
    let magnitude = |n: u128| {
        let secs = u64::try_from(n / 1_000_000_000).unwrap_or(u64::MAX);
        // the remainder is below 10^9, so it fits
        Duration::new(secs, u32::try_from(n % 1_000_000_000).unwrap_or(0))
    };
    if nanos >= 0 {
        UNIX_EPOCH.checked_add(magnitude(nanos.unsigned_abs())).unwrap_or(UNIX_EPOCH)
    } else {
        UNIX_EPOCH.checked_sub(magnitude(nanos.unsigned_abs())).unwrap_or(UNIX_EPOCH)
    }
}

fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_graphic() && byte != b'%' {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| value.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        if let Some(byte) = escaped {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .unwrap_or_else(|err| String::from_utf8_lossy(err.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn property_values_round_trip_exactly() {
        for value in ["", " a ", "x%41y: z", "ünïcødé ✓", "tab\there", "100%", "%zz", "plain"]
        {
            assert_eq!(percent_decode(&percent_encode(value)), value, "{value:?}");
            let encoded = percent_encode(value);
            assert!(encoded.bytes().all(|b| b.is_ascii_graphic()), "{encoded:?}");
        }
    }

    #[test]
    fn ack_subjects_of_old_and_new_servers_parse() {
        let old = "$JS.ACK.steward_t_orders.billing.3.17.42.1700000000123456789.5";
        assert_eq!(
            parse_ack_subject(old),
            Some(AckInfo {
                delivered: 3,
                stream_seq: 17,
                delivery_seq: 42,
                published_nanos: 1_700_000_000_123_456_789,
            })
        );
        let new = "$JS.ACK._.HASH.steward_t_orders.billing.1.2.3.1700000000000000000.0.tok";
        assert_eq!(parse_ack_subject(new).map(|i| (i.delivered, i.stream_seq)), Some((1, 2)));
        assert_eq!(parse_ack_subject("_INBOX.abc"), None);
        assert_eq!(parse_ack_subject("$JS.ACK.a.b.c"), None);
    }

    #[test]
    fn times_round_trip_to_the_nanosecond() {
        let after = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        assert_eq!(from_unix_nanos(unix_nanos(after)), after);
        let before = UNIX_EPOCH - Duration::new(5, 7);
        assert_eq!(from_unix_nanos(unix_nanos(before)), before);
    }

    #[test]
    fn a_message_round_trips_through_headers() {
        let out = OutMessage {
            client_id: "c-1".into(),
            body: bytes::Bytes::from_static(b"\x00body"),
            tag: Some("eu".into()),
            keys: vec!["k1".into(), "k:2".into()],
            properties: [("a".to_owned(), String::new()), ("b.c".to_owned(), " v ".to_owned())]
                .into_iter()
                .collect(),
            deliver_at: Some(UNIX_EPOCH + Duration::new(1_800_000_000, 1)),
        };
        let headers = encode(&out).unwrap();
        let topic: Arc<str> = Arc::from("orders");
        let info = AckInfo { delivered: 1, stream_seq: 9, delivery_seq: 9, published_nanos: 0 };
        let subject = naming::subject(&crate::broker::TopicKey::new("t", "orders"), Some("eu"));
        let message = decode(&topic, &subject, Some(&headers), out.body.clone(), &info);
        assert_eq!(message.client_id, out.client_id);
        assert_eq!(message.tag, out.tag);
        assert_eq!(message.keys, out.keys);
        assert_eq!(message.properties, out.properties);
        assert_eq!(message.deliver_at, out.deliver_at);
        assert_eq!(message.message_id, "9");

        let copy = encode_dead_letter(&message, "orders:9").unwrap();
        let moved = decode(&topic, &subject, Some(&copy), out.body.clone(), &info);
        assert_eq!(moved.client_id, "orders:9");
        assert_eq!((moved.keys, moved.properties), (out.keys, out.properties));
        assert_eq!(moved.deliver_at, None);
    }
}
