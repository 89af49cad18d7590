//! The encoding of a publication in Redis and on a stream's channel, and the reading of script
//! answers.
//!
//! A publication is one byte string, built by the publish script (which decides the offset and
//! the time) and read here:
//!
//! ```text
//! <offset>,<time_ms>,<json>,<key_len>,<key><data>
//! ```
//!
//! `offset`, `time_ms` and `key_len` are decimal; `json` is `1` for JSON text and `0` for bytes;
//! `key_len` is the key's length in bytes, `0` for a publication without key (keys are 1–256
//! bytes, so no key is empty); the key's bytes follow the fourth comma and the data takes the
//! rest, as is (arbitrary bytes). The same string is the value of a history entry (field `p`)
//! and of a key's latest value. A channel message prefixes it with the epoch:
//! `<epoch>,<publication>` (epochs are hex, without commas).

use std::sync::Arc;

use bytes::Bytes;
use redis::Value;

use crate::model::Publication;
use crate::{Error, Result};

/// The latest-hash field of the key-less latest value: a NUL byte, which no valid key contains
/// (keys have no control characters).
pub(super) const NO_KEY_FIELD: &str = "\u{0}";

/// The latest-hash field of `key`.
pub(super) fn key_field(key: Option<&str>) -> &str {
    key.unwrap_or(NO_KEY_FIELD)
}

/// Splits the decimal number before the next comma off `raw`.
fn number<'a>(raw: &'a [u8], what: &str) -> Result<(u64, &'a [u8]), String> {
    let comma = raw.iter().position(|&b| b == b',').ok_or_else(|| format!("no {what}"))?;
    let digits = std::str::from_utf8(&raw[..comma]).map_err(|_| format!("{what} is not text"))?;
    let n = digits.parse().map_err(|_| format!("{what} `{digits}` is not a number"))?;
    Ok((n, &raw[comma + 1..]))
}

/// Reads an encoded publication.
///
/// # Errors
/// What is malformed.
pub(super) fn decode_publication(raw: &[u8]) -> Result<Publication, String> {
    let (offset, rest) = number(raw, "offset")?;
    let (time_ms, rest) = number(rest, "time")?;
    let (json, rest) = number(rest, "json flag")?;
    let (key_len, rest) = number(rest, "key length")?;
    let key_len = usize::try_from(key_len).map_err(|_| "key length too large".to_owned())?;
    if key_len > rest.len() {
        return Err(format!("key length {key_len} past the end"));
    }
    let (key, data) = rest.split_at(key_len);
    let key = if key.is_empty() {
        None
    } else {
        Some(Arc::from(std::str::from_utf8(key).map_err(|_| "key is not UTF-8".to_owned())?))
    };
    Ok(Publication { offset, key, data: Bytes::copy_from_slice(data), json: json == 1, time_ms })
}

/// Reads a channel message: the epoch and the publication.
///
/// # Errors
/// What is malformed.
pub(super) fn decode_live(raw: &[u8]) -> Result<(String, Publication), String> {
    let comma = raw.iter().position(|&b| b == b',').ok_or("no epoch")?;
    let epoch = std::str::from_utf8(&raw[..comma]).map_err(|_| "epoch is not text")?;
    Ok((epoch.to_owned(), decode_publication(&raw[comma + 1..])?))
}

/// The same encoding, built in Rust (tests compare it with what the script builds).
#[cfg(test)]
pub(super) fn encode_publication(p: &Publication) -> Vec<u8> {
    let key = p.key.as_deref().unwrap_or("");
    let mut out =
        format!("{},{},{},{},{key}", p.offset, p.time_ms, u8::from(p.json), key.len()).into_bytes();
    out.extend_from_slice(&p.data);
    out
}

/// A script answered something this module does not understand.
fn malformed(what: &str, value: &Value) -> Error {
    Error::Internal(format!("redis script answered a malformed {what}: {value:?}"))
}

/// The items of an array answer.
pub(super) fn array<'a>(value: &'a Value, what: &str) -> Result<&'a [Value]> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        Value::Nil => Ok(&[]),
        other => Err(malformed(what, other)),
    }
}

/// The bytes of a string answer.
pub(super) fn bytes<'a>(value: &'a Value, what: &str) -> Result<&'a [u8]> {
    match value {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.as_bytes()),
        other => Err(malformed(what, other)),
    }
}

/// A text answer.
pub(super) fn text(value: &Value, what: &str) -> Result<String> {
    std::str::from_utf8(bytes(value, what)?).map(str::to_owned).map_err(|_| malformed(what, value))
}

/// A number answer (an integer, or decimal text).
pub(super) fn int(value: &Value, what: &str) -> Result<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).map_err(|_| malformed(what, value)),
        other => std::str::from_utf8(bytes(other, what)?)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| malformed(what, other)),
    }
}

/// Item `i` of an answer's items.
pub(super) fn item<'a>(items: &'a [Value], i: usize, what: &str) -> Result<&'a Value> {
    items.get(i).ok_or_else(|| Error::Internal(format!("redis script answer lacks the {what}")))
}

/// A list of encoded publications.
pub(super) fn publications(value: &Value, what: &str) -> Result<Vec<Publication>> {
    array(value, what)?
        .iter()
        .map(|v| {
            decode_publication(bytes(v, what)?).map_err(|e| {
                Error::Internal(format!("redis holds a malformed publication ({what}): {e}"))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publication(key: Option<&str>, data: &[u8], json: bool) -> Publication {
        Publication {
            offset: 42,
            key: key.map(Arc::from),
            data: Bytes::copy_from_slice(data),
            json,
            time_ms: 1_700_000_000_123,
        }
    }

    #[test]
    fn a_publication_survives_its_encoding() {
        for p in [
            publication(Some("k,e:y"), b"{\"a\":1}", true),
            publication(None, b"\x00,\xff,1,2,", false),
            publication(Some("\u{e9}t\u{e9}"), b"", false),
        ] {
            assert_eq!(decode_publication(&encode_publication(&p)), Ok(p.clone()));
            let mut live = b"00ff,".to_vec();
            live.extend_from_slice(&encode_publication(&p));
            assert_eq!(decode_live(&live), Ok(("00ff".to_owned(), p)));
        }
    }

    #[test]
    fn malformed_publications_are_refused() {
        for raw in [&b""[..], b"1,2,0", b"x,2,0,0,", b"1,2,0,5,abc", b"1,2,0,1,\xff"] {
            assert!(decode_publication(raw).is_err(), "{raw:?}");
        }
        assert!(decode_live(b"no-epoch").is_err());
    }

    #[test]
    fn answers_are_read_or_refused_as_internal() {
        assert_eq!(int(&Value::Int(7), "n"), Ok(7));
        assert_eq!(int(&Value::BulkString(b"12".to_vec()), "n"), Ok(12));
        assert!(matches!(int(&Value::Int(-1), "n"), Err(Error::Internal(_))));
        assert_eq!(text(&Value::BulkString(b"ab".to_vec()), "t"), Ok("ab".to_owned()));
        assert!(matches!(array(&Value::Int(1), "a"), Err(Error::Internal(_))));
        assert!(matches!(item(&[], 0, "x"), Err(Error::Internal(_))));
    }
}
