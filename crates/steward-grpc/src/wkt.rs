//! The protobuf well-known types of requests and responses (`google.protobuf.Duration`,
//! `google.protobuf.Timestamp`), shared by the tenant services: a malformed one is a client bug,
//! refused as a whole request naming its field ([`BadField`]; each service turns it into its own
//! `INVALID_ARGUMENT`).

use std::time::{Duration, SystemTime};

/// Seconds of the earliest and latest valid `google.protobuf.Timestamp`
/// (0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z, `timestamp.proto`).
const TIMESTAMP_SECONDS: std::ops::RangeInclusive<i64> = -62_135_596_800..=253_402_300_799;

/// Largest `seconds` of a valid `google.protobuf.Duration` (about 10000 years, `duration.proto`).
const MAX_DURATION_SECONDS: i64 = 315_576_000_000;

/// Largest `nanos` of a valid `google.protobuf.Duration` or `Timestamp`.
const MAX_NANOS: i32 = 999_999_999;

/// A request field that is not a valid value of its well-known type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadField {
    /// The field, as the request names it (`entries[0].delay`, `timeout`).
    pub(crate) field: String,
    /// What is wrong with it.
    pub(crate) reason: String,
}

impl BadField {
    pub(crate) fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { field: field.into(), reason: reason.into() }
    }
}

/// A non-negative `google.protobuf.Duration` of request field `field`.
///
/// Refused: `seconds` beyond ±315576000000, `nanos` beyond ±999999999 or of the other sign than
/// `seconds` (`duration.proto` says so), and negative durations.
pub(crate) fn duration_from_pb(
    field: &str,
    d: &prost_types::Duration,
) -> Result<Duration, BadField> {
    let (seconds, nanos) = (d.seconds, d.nanos);
    if !(-MAX_DURATION_SECONDS..=MAX_DURATION_SECONDS).contains(&seconds)
        || !(-MAX_NANOS..=MAX_NANOS).contains(&nanos)
        || (seconds > 0 && nanos < 0)
        || (seconds < 0 && nanos > 0)
    {
        return Err(BadField::new(
            field,
            format!(
                "not a valid google.protobuf.Duration (seconds {seconds}, nanos {nanos}): seconds \
                 are within ±{MAX_DURATION_SECONDS}, nanos within ±{MAX_NANOS} with the sign of \
                 seconds"
            ),
        ));
    }
    match (u64::try_from(seconds), u32::try_from(nanos)) {
        (Ok(s), Ok(n)) => Ok(Duration::new(s, n)),
        _ => Err(BadField::new(field, "must not be negative")),
    }
}

/// The instant of `google.protobuf.Timestamp` request field `field`.
///
/// Refused: `seconds` outside 0001-01-01T00:00:00Z..=9999-12-31T23:59:59Z and `nanos` outside
/// 0..=999999999 (`timestamp.proto`).
pub(crate) fn time_from_pb(
    field: &str,
    t: &prost_types::Timestamp,
) -> Result<SystemTime, BadField> {
    if !TIMESTAMP_SECONDS.contains(&t.seconds) || !(0..=MAX_NANOS).contains(&t.nanos) {
        return Err(BadField::new(
            field,
            format!(
                "not a valid google.protobuf.Timestamp (seconds {}, nanos {}): from \
                 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z, nanos 0 to {MAX_NANOS}",
                t.seconds, t.nanos
            ),
        ));
    }
    SystemTime::try_from(*t)
        .map_err(|e| BadField::new(field, format!("not representable here: {e}")))
}

/// `d` on the wire (saturating at the largest valid duration, which no config reaches).
pub(crate) fn duration_to_pb(d: Duration) -> prost_types::Duration {
    prost_types::Duration::try_from(d)
        .ok()
        .filter(|p| p.seconds <= MAX_DURATION_SECONDS)
        .unwrap_or(prost_types::Duration { seconds: MAX_DURATION_SECONDS, nanos: MAX_NANOS })
}
