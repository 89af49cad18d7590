//! Unit tests of the Redis engine: error mapping, key names and URL handling (the conformance
//! suite drives it through a server).

use std::io;

use redis::{ErrorKind, ServerErrorKind};

use super::*;

#[test]
fn script_failures_are_internal_and_everything_else_unavailable() {
    let script = RedisError::from((ErrorKind::Server(ServerErrorKind::ResponseError), "boom"));
    assert!(matches!(redis_error(&script), Error::Internal(_)));
    let parse = RedisError::from((ErrorKind::UnexpectedReturnType, "odd"));
    assert!(matches!(redis_error(&parse), Error::Internal(_)));
    let refused = RedisError::from(io::Error::from(io::ErrorKind::ConnectionRefused));
    assert!(matches!(redis_error(&refused), Error::Unavailable(_)));
    let loading = RedisError::from((ErrorKind::Server(ServerErrorKind::BusyLoading), "loading"));
    assert!(matches!(redis_error(&loading), Error::Unavailable(_)));
}

#[test]
fn every_key_of_a_stream_carries_its_hash_tag() {
    let stream = StreamRef { tenant: Arc::from("acme"), name: Arc::from("prices:eu.1") };
    let keys = Keys::new(&stream);
    let all = [&keys.meta, &keys.history, &keys.latest, &keys.order, &keys.expiry];
    for key in all {
        assert!(key.starts_with("steward:{acme/prices:eu.1}:"), "{key}");
    }
    assert_eq!(keys.idempotency, "steward:{acme/prices:eu.1}:idem:");
    assert_eq!(&*keys.channel, "steward:{acme/prices:eu.1}:live");
}

#[test]
fn durations_go_to_redis_as_at_least_one_millisecond() {
    assert_eq!(ms(Duration::ZERO), 1);
    assert_eq!(ms(Duration::from_micros(1500)), 1);
    assert_eq!(ms(Duration::from_secs(2)), 2000);
}

#[test]
fn a_bad_url_is_refused_and_a_good_one_needs_no_redis() {
    let bad = RedisEngine::new("http://nowhere", Duration::from_secs(1));
    assert!(matches!(bad, Err(Error::Invalid { field: "streams.url", .. })), "{bad:?}");
    // nothing listens there: making the engine does not connect
    let engine = RedisEngine::new("redis://127.0.0.1:1", Duration::from_secs(1)).expect("engine");
    assert_eq!(engine.name(), "redis");
    assert!(engine.is_shared());
}
