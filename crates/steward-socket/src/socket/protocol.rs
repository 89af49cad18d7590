//! The JSON text protocol of `GET /v1/ws` (documented with examples in
//! `docs/protocol/websocket.md`): what clients send, and the frames Steward answers with.

use bytestring::ByteString;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::jobs::render;
use crate::jobs::{Job, JobId};
use crate::port::StreamRequest;

/// A client request, validated.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Request {
    /// `{"type":"subscribe","job":"<id>"}`.
    Subscribe { job: JobId, id: Option<Value> },
    /// `{"type":"unsubscribe","job":"<id>"}`.
    Unsubscribe { job: JobId, id: Option<Value> },
    /// `{"type":"subscribe","stream":"<name>","since":{"offset":…,"epoch":…},"latest":true}`.
    SubscribeStream(StreamRequest),
    /// `{"type":"unsubscribe","stream":"<name>"}`.
    UnsubscribeStream { stream: String, id: Option<Value> },
    /// `{"type":"ping"}` (an application-level ping, answered with `pong`).
    Ping { id: Option<Value> },
}

/// A request that cannot be served: answered with `error` `bad_request`; the socket stays open.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BadRequest {
    pub(crate) message: String,
    pub(crate) id: Option<Value>,
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    job: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    stream: Option<std::borrow::Cow<'a, str>>,
    since: Option<Since>,
    latest: Option<bool>,
    id: Option<Value>,
}

/// A recovery point: the last `offset` seen and its `epoch`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Since {
    offset: u64,
    epoch: String,
}

/// Parses one text frame.
pub(crate) fn parse(text: &str) -> Result<Request, BadRequest> {
    let wire: Wire<'_> = serde_json::from_str(text)
        .map_err(|e| BadRequest { message: format!("malformed request: {e}"), id: None })?;
    let id = match wire.id {
        None | Some(Value::Null) => None,
        Some(v @ (Value::String(_) | Value::Number(_))) => Some(v),
        Some(_) => {
            return Err(BadRequest {
                message: "`id` must be a string or a number".into(),
                id: None,
            });
        }
    };
    let bad = |message: String, id: &Option<Value>| BadRequest { message, id: id.clone() };
    let job = |id: &Option<Value>| -> Result<JobId, BadRequest> {
        let text = wire.job.as_deref().ok_or_else(|| bad("`job` is required".into(), id))?;
        text.parse::<JobId>().map_err(|e| bad(e.to_string(), id))
    };
    let kind = wire.kind.as_deref();
    if matches!(kind, Some("subscribe" | "unsubscribe")) {
        match (&wire.job, &wire.stream) {
            (Some(_), Some(_)) => {
                return Err(bad("give either `job` or `stream`, not both".into(), &id));
            }
            (None, Some(stream)) => {
                let stream = stream.clone().into_owned();
                if kind == Some("unsubscribe") {
                    return Ok(Request::UnsubscribeStream { stream, id });
                }
                let since = wire.since.map(|s| (s.offset, s.epoch));
                let latest = wire.latest.unwrap_or(false);
                return Ok(Request::SubscribeStream(StreamRequest { stream, since, latest, id }));
            }
            (Some(_), None) if wire.since.is_some() || wire.latest.is_some() => {
                return Err(bad("`since` and `latest` apply to streams only".into(), &id));
            }
            _ => {}
        }
    }
    match kind {
        Some("subscribe") => Ok(Request::Subscribe { job: job(&id)?, id }),
        Some("unsubscribe") => Ok(Request::Unsubscribe { job: job(&id)?, id }),
        Some("ping") => Ok(Request::Ping { id }),
        Some(other) => Err(bad(
            format!("unknown type `{other}`: expected subscribe, unsubscribe or ping"),
            &id,
        )),
        None => Err(bad("`type` is required".into(), &id)),
    }
}

#[derive(Serialize)]
struct Subscribed<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    job: &'a JobId,
    snapshot: &'a Job,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a Value>,
}

/// `{"type":"subscribed","job":…,"snapshot":{…},"id":…}`.
pub(crate) fn subscribed(job: &Job, id: Option<&Value>) -> ByteString {
    render(&Subscribed { kind: "subscribed", job: &job.id, snapshot: job, id })
}

#[derive(Serialize)]
struct Reply<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    job: Option<&'a JobId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a Value>,
}

/// `{"type":"unsubscribed","job":…,"id":…}`.
pub(crate) fn unsubscribed(job: &JobId, id: Option<&Value>) -> ByteString {
    render(&Reply {
        kind: "unsubscribed",
        job: Some(job),
        stream: None,
        code: None,
        message: None,
        id,
    })
}

/// `{"type":"unsubscribed","stream":…,"id":…}`.
pub(crate) fn stream_unsubscribed(stream: &str, id: Option<&Value>) -> ByteString {
    render(&Reply {
        kind: "unsubscribed",
        job: None,
        stream: Some(stream),
        code: None,
        message: None,
        id,
    })
}

/// `{"type":"error","code":…,"message":…,"stream":…,"id":…}`.
pub(crate) fn stream_error(
    code: &str,
    message: &str,
    stream: &str,
    id: Option<&Value>,
) -> ByteString {
    render(&Reply {
        kind: "error",
        job: None,
        stream: Some(stream),
        code: Some(code),
        message: Some(message),
        id,
    })
}

/// `{"type":"pong","id":…}`.
pub(crate) fn pong(id: Option<&Value>) -> ByteString {
    render(&Reply { kind: "pong", job: None, stream: None, code: None, message: None, id })
}

/// `{"type":"error","code":…,"message":…,"job":…,"id":…}`.
pub(crate) fn error(
    code: &str,
    message: &str,
    job: Option<&JobId>,
    id: Option<&Value>,
) -> ByteString {
    render(&Reply {
        kind: "error",
        job,
        stream: None,
        code: Some(code),
        message: Some(message),
        id,
    })
}

/// `{"type":"notice","code":…,"message":…}`.
pub(crate) fn notice(code: &str, message: &str) -> ByteString {
    render(&Reply {
        kind: "notice",
        job: None,
        stream: None,
        code: Some(code),
        message: Some(message),
        id: None,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn requests_parse_and_bad_ones_say_why_and_keep_the_id() {
        let job = "0123456789ABCDEF0123456789abcdef";
        let r = parse(&json!({"type": "subscribe", "job": job, "id": 1}).to_string()).unwrap();
        assert_eq!(r, Request::Subscribe { job: job.parse().unwrap(), id: Some(json!(1)) });
        assert_eq!(parse(r#"{"type":"ping"}"#).unwrap(), Request::Ping { id: None });
        let bad = parse(r#"{"type":"subscribe","id":"x"}"#).unwrap_err();
        assert_eq!((bad.message.as_str(), bad.id), ("`job` is required", Some(json!("x"))));
        assert!(parse("{").unwrap_err().message.starts_with("malformed request"));
        assert!(parse(r#"{"type":"ping","id":{"a":1}}"#).is_err());
        assert!(parse(r#"{"type":"nope"}"#).unwrap_err().message.contains("unknown type"));
        assert!(parse(r#"{"job":"x"}"#).unwrap_err().message.contains("`type` is required"));
        let r = parse(r#"{"type":"subscribe","stream":"prices","since":{"offset":3,"epoch":"e"},"latest":true,"id":2}"#)
            .unwrap();
        assert_eq!(
            r,
            Request::SubscribeStream(StreamRequest {
                stream: "prices".into(),
                since: Some((3, "e".into())),
                latest: true,
                id: Some(json!(2)),
            })
        );
        assert_eq!(
            parse(r#"{"type":"unsubscribe","stream":"prices"}"#).unwrap(),
            Request::UnsubscribeStream { stream: "prices".into(), id: None }
        );
        assert!(parse(r#"{"type":"subscribe","job":"x","stream":"y"}"#).is_err());
        assert!(parse(r#"{"type":"subscribe","stream":"y","since":{"offset":-1}}"#).is_err());
        let job_with_since = format!(r#"{{"type":"subscribe","job":"{job}","latest":true}}"#);
        assert!(parse(&job_with_since).unwrap_err().message.contains("streams only"));
    }
}
