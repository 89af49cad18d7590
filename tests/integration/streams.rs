//! Streams against the real binary: publish over gRPC (`steward.streams.v1.Streams`), watch
//! and recover over the WebSocket (`subscribe {stream}`), on the memory engine and on a
//! throwaway `redis-server` (two real nodes on one Redis, an outage), bad input, the churn of a
//! thousand streams, and SIGTERM with a thousand subscribers.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use steward_proto::streams::v1 as pb;
use steward_proto::streams::v1::streams_client::StreamsClient;
use steward_streams::testing::RedisServer;
use tonic::Code;

use crate::messaging::set_quotas;
use crate::sockets::{Ws, authed, close_code, connect, metric, next_json, send, tenant};
use crate::support::{Steward, WITHIN, eventually};

type Client = StreamsClient<tonic::transport::Channel>;

async fn client(s: &Steward) -> Client {
    StreamsClient::connect(s.grpc.clone()).await.unwrap()
}

/// Publishes JSON `data` (with `key`) and answers the position.
async fn publish(
    c: &mut Client,
    token: &str,
    stream: &str,
    key: Option<&str>,
    data: Value,
) -> pb::Position {
    let req = pb::PublishRequest {
        stream: stream.into(),
        key: key.map(str::to_owned),
        payload: Some(pb::publish_request::Payload::Json(data.to_string())),
        idempotency_key: None,
    };
    c.publish(authed(token, req)).await.unwrap().into_inner().position.unwrap()
}

/// Subscribes `ws` to `stream` and answers the `subscribed` frame.
async fn subscribe(ws: &mut Ws, request: Value) -> Value {
    send(ws, request).await;
    let v = next_json(ws).await;
    assert_eq!(v["type"], "subscribed", "{v}");
    v
}

fn offsets(frames: &[Value]) -> Vec<u64> {
    frames.iter().map(|p| p["offset"].as_u64().unwrap()).collect()
}

/// Redis for a scenario, and the env that points a node at it.
fn redis_env(redis: &RedisServer) -> Vec<(&'static str, String)> {
    vec![("STEWARD__STREAMS__ENGINE", "redis".into()), ("STEWARD__STREAMS__URL", redis.url())]
}

async fn start(env: &[(&'static str, String)]) -> Steward {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Steward::start(&env).await
}

/// Publish, watch, disconnect, publish 100 more, reconnect and recover all 100 in order; then a
/// history of 10 cannot recover a gap of 100.
async fn recover_after_a_disconnect(env: Vec<(&'static str, String)>) {
    let s = start(&env).await;
    let token = tenant(&s, "acme").await;
    let mut c = client(&s).await;
    publish(&mut c, &token, "prices", Some("eur"), json!({"bid": 1})).await;
    publish(&mut c, &token, "prices", Some("usd"), json!({"bid": 2})).await;
    publish(&mut c, &token, "prices", Some("eur"), json!({"bid": 3})).await;

    let mut ws = connect(&s, &token).await;
    let sub = subscribe(
        &mut ws,
        json!({"type": "subscribe", "stream": "prices", "latest": true, "id": 7}),
    )
    .await;
    assert_eq!(
        (sub["position"]["offset"].as_u64(), sub["id"].as_u64()),
        (Some(3), Some(7)),
        "{sub}"
    );
    let latest = sub["latest"].as_array().unwrap();
    assert_eq!(offsets(latest), [3, 2], "one latest value per key, most recent first: {sub}");
    assert_eq!(latest[0]["data"], json!({"bid": 3}));
    let epoch = sub["position"]["epoch"].as_str().unwrap().to_owned();
    publish(&mut c, &token, "prices", None, json!(4)).await;
    let live = next_json(&mut ws).await;
    assert_eq!(
        (live["type"].as_str(), live["offset"].as_u64()),
        (Some("publication"), Some(4)),
        "{live}"
    );
    assert_eq!(live["data"], json!(4));
    drop(ws);

    for i in 0..100 {
        publish(&mut c, &token, "prices", None, json!({"i": i})).await;
    }
    let mut ws = connect(&s, &token).await;
    let since = json!({"offset": 4, "epoch": epoch});
    let sub =
        subscribe(&mut ws, json!({"type": "subscribe", "stream": "prices", "since": since})).await;
    assert_eq!(
        (sub["recovered"].as_bool(), sub["was_recovering"].as_bool()),
        (Some(true), Some(true))
    );
    let recovered = sub["publications"].as_array().unwrap();
    assert_eq!(offsets(recovered), (5..=104).collect::<Vec<_>>(), "all 100, in order");
    assert_eq!(recovered[99]["data"], json!({"i": 99}));
    // live publications follow the recovered ones without a gap or a repeat
    publish(&mut c, &token, "prices", None, json!("next")).await;
    assert_eq!(next_json(&mut ws).await["offset"], 105);
    assert_eq!(metric(&s, "steward_stream_recoveries_total{outcome=\"recovered\"}").await, 1.0);
    drop(s);

    // a history of 10 does not reach back over 100 publications
    let mut short = env.clone();
    short.push(("STEWARD__STREAMS__HISTORY_SIZE", "10".into()));
    let s = start(&short).await;
    let token = tenant(&s, "acme").await;
    let mut c = client(&s).await;
    let first = publish(&mut c, &token, "short", None, json!(0)).await;
    for i in 0..100 {
        publish(&mut c, &token, "short", None, json!(i)).await;
    }
    let mut ws = connect(&s, &token).await;
    let since = json!({"offset": first.offset, "epoch": first.epoch});
    let sub =
        subscribe(&mut ws, json!({"type": "subscribe", "stream": "short", "since": since})).await;
    assert_eq!(sub["recovered"], false, "{sub}");
    assert_eq!(sub["position"]["offset"], 101);
    assert_eq!(metric(&s, "steward_stream_recoveries_total{outcome=\"failed\"}").await, 1.0);
}

#[tokio::test]
async fn a_client_recovers_what_it_missed_memory() {
    recover_after_a_disconnect(Vec::new()).await;
}

#[tokio::test]
async fn a_client_recovers_what_it_missed_redis() {
    let redis =
        RedisServer::start().expect("a throwaway redis-server (apt-get install redis-server)");
    recover_after_a_disconnect(redis_env(&redis)).await;
}

/// A key's latest value is delivered on subscribe and expires at `key_ttl`.
async fn latest_values_expire(env: Vec<(&'static str, String)>) {
    let mut env = env;
    env.push(("STEWARD__STREAMS__KEY_TTL", "500ms".into()));
    let s = start(&env).await;
    let token = tenant(&s, "acme").await;
    let mut c = client(&s).await;
    publish(&mut c, &token, "quotes", Some("aapl"), json!(190)).await;
    let req = pb::LatestRequest { stream: "quotes".into(), key: Some("aapl".into()) };
    let got = c.latest(authed(&token, req.clone())).await.unwrap().into_inner();
    assert_eq!(got.publications.len(), 1);
    let mut ws = connect(&s, &token).await;
    let sub =
        subscribe(&mut ws, json!({"type": "subscribe", "stream": "quotes", "latest": true})).await;
    assert_eq!(sub["latest"][0]["key"], "aapl", "{sub}");
    let expired = eventually(WITHIN, || {
        let (mut c, req, token) = (c.clone(), req.clone(), token.clone());
        async move { c.latest(authed(&token, req)).await.is_err_and(|e| e.code() == Code::NotFound) }
    })
    .await;
    assert!(expired, "the key expired at key_ttl");
    let mut ws = connect(&s, &token).await;
    let sub =
        subscribe(&mut ws, json!({"type": "subscribe", "stream": "quotes", "latest": true})).await;
    assert_eq!(sub["latest"], json!([]), "{sub}");
}

#[tokio::test]
async fn latest_values_are_delivered_on_subscribe_and_expire_memory() {
    latest_values_expire(Vec::new()).await;
}

#[tokio::test]
async fn latest_values_are_delivered_on_subscribe_and_expire_redis() {
    let redis = RedisServer::start().expect("a throwaway redis-server");
    latest_values_expire(redis_env(&redis)).await;
}

#[tokio::test]
async fn bad_input_gets_a_typed_error_and_disturbs_nothing() {
    let s = Steward::start(&[]).await;
    let token = tenant(&s, "acme").await;
    let other = tenant(&s, "globex").await;
    let mut c = client(&s).await;
    publish(&mut c, &token, "orders", Some("k"), json!(1)).await;
    let mut ws = connect(&s, &token).await;
    subscribe(&mut ws, json!({"type": "subscribe", "stream": "orders"})).await;

    // oversize data, a bad name, not JSON, no payload
    let big = pb::PublishRequest {
        stream: "orders".into(),
        key: None,
        payload: Some(pb::publish_request::Payload::Data(vec![0u8; 65 * 1024].into())),
        idempotency_key: None,
    };
    let e = c.publish(authed(&token, big)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("bad_request: data:"), "{e:?}");
    let bad_name = pb::PublishRequest {
        stream: "no spaces".into(),
        payload: Some(pb::publish_request::Payload::Json("1".into())),
        ..Default::default()
    };
    let e = c.publish(authed(&token, bad_name)).await.unwrap_err();
    assert!(e.code() == Code::InvalidArgument && e.message().contains("stream:"), "{e:?}");
    let not_json = pb::PublishRequest {
        stream: "orders".into(),
        payload: Some(pb::publish_request::Payload::Json("{".into())),
        ..Default::default()
    };
    let e = c.publish(authed(&token, not_json)).await.unwrap_err();
    assert!(e.code() == Code::InvalidArgument && e.message().contains("json:"), "{e:?}");
    let e = c
        .publish(authed(
            &token,
            pb::PublishRequest { stream: "orders".into(), ..Default::default() },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    // another tenant's stream is another stream: it does not exist for globex
    let e = c
        .latest(authed(
            &other,
            pb::LatestRequest { stream: "orders".into(), key: Some("k".into()) },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    publish(&mut c, &other, "orders", Some("k"), json!("globex's")).await;
    // the same on the socket: typed errors, the socket stays open
    send(&mut ws, json!({"type": "subscribe", "stream": "bad name", "id": 1})).await;
    let e = next_json(&mut ws).await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str(), e["id"].as_u64()),
        (Some("error"), Some("bad_request"), Some(1)),
        "{e}"
    );
    send(&mut ws, json!({"type": "subscribe", "stream": "orders", "since": {"offset": "x"}})).await;
    assert_eq!(next_json(&mut ws).await["code"], "bad_request");
    send(&mut ws, json!({"type": "subscribe", "stream": "orders"})).await;
    assert_eq!(next_json(&mut ws).await["code"], "already_subscribed");
    send(&mut ws, json!({"type": "subscribe", "stream": "o", "since": {"offset": 1, "epoch": "x".repeat(65)}})).await;
    assert_eq!(next_json(&mut ws).await["code"], "bad_request");
    // nothing was disturbed: the subscription still delivers, only acme's publication
    publish(&mut c, &token, "orders", Some("k"), json!(2)).await;
    let p = next_json(&mut ws).await;
    assert_eq!(
        (p["type"].as_str(), p["offset"].as_u64(), &p["data"]),
        (Some("publication"), Some(2), &json!(2)),
        "{p}"
    );
    let info = c
        .info(authed(&token, pb::InfoRequest { stream: "orders".into() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((info.position.unwrap().offset, info.keys, info.subscribers), (2, 1, 1));
    send(&mut ws, json!({"type": "unsubscribe", "stream": "orders", "id": "u"})).await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({"type": "unsubscribed", "stream": "orders", "id": "u"})
    );
}

#[tokio::test]
async fn stream_quotas_refuse_with_resource_exhausted() {
    let s = Steward::start(&[]).await;
    let token = tenant(&s, "acme").await;
    set_quotas(&s, "acme", json!({"streams": 2, "stream_keys": 2, "stream_bytes": 4096})).await;
    let mut c = client(&s).await;
    publish(&mut c, &token, "a", Some("k1"), json!(1)).await;
    publish(&mut c, &token, "a", Some("k2"), json!(1)).await;
    let new_key = pb::PublishRequest {
        stream: "a".into(),
        key: Some("k3".into()),
        payload: Some(pb::publish_request::Payload::Json("1".into())),
        idempotency_key: None,
    };
    let e = c.publish(authed(&token, new_key)).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(e.message().contains("`stream_keys`"), "{e:?}");
    assert_eq!(e.metadata().get("retry-after").unwrap(), "1");
    publish(&mut c, &token, "b", None, json!(1)).await;
    let e = c
        .publish(authed(
            &token,
            pb::PublishRequest {
                stream: "c".into(),
                payload: Some(pb::publish_request::Payload::Json("1".into())),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert!(e.code() == Code::ResourceExhausted && e.message().contains("`streams`"), "{e:?}");
    let big = pb::PublishRequest {
        stream: "b".into(),
        payload: Some(pb::publish_request::Payload::Data(vec![1; 5000].into())),
        ..Default::default()
    };
    let e = c.publish(authed(&token, big)).await.unwrap_err();
    assert!(e.code() == Code::ResourceExhausted && e.message().contains("`stream_bytes`"), "{e:?}");
    assert_eq!(
        metric(&s, "steward_stream_publications_total{result=\"quota_exceeded\"}").await,
        2.0
    );
    assert_eq!(
        metric(&s, "steward_tenant_quota_used{tenant=\"acme\",quota=\"streams\"}").await,
        2.0
    );
}

/// Two real nodes on one Redis: a WebSocket subscriber on node B receives what a publisher
/// sends through node A, then reconnects to node A and recovers what it missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_redis_share_streams() {
    let redis = RedisServer::start().expect("a throwaway redis-server");
    let a = start(&redis_env(&redis)).await;
    let b = start(&redis_env(&redis)).await;
    let (token_a, token_b) = (tenant(&a, "acme").await, tenant(&b, "acme").await);
    let mut ca = client(&a).await;
    let mut on_b = connect(&b, &token_b).await;
    let sub = subscribe(&mut on_b, json!({"type": "subscribe", "stream": "fx"})).await;
    let epoch = sub["position"]["epoch"].as_str().unwrap().to_owned();
    for i in 0..20 {
        publish(&mut ca, &token_a, "fx", None, json!(i)).await;
    }
    let mut got = Vec::new();
    while got.len() < 20 {
        got.push(next_json(&mut on_b).await);
    }
    assert_eq!(offsets(&got), (1..=20).collect::<Vec<_>>(), "in order, each once");
    drop(on_b);
    for i in 20..30 {
        publish(&mut ca, &token_a, "fx", None, json!(i)).await;
    }
    let mut on_a = connect(&a, &token_a).await;
    let since = json!({"offset": 20, "epoch": epoch});
    let sub =
        subscribe(&mut on_a, json!({"type": "subscribe", "stream": "fx", "since": since})).await;
    assert_eq!(sub["recovered"], true, "{sub}");
    assert_eq!(offsets(sub["publications"].as_array().unwrap()), (21..=30).collect::<Vec<_>>());
}

/// Redis stops mid-run: Publish answers UNAVAILABLE and subscribers are told; Redis returns
/// (without its data): both work again, on a new epoch, without a restart of Steward.
#[tokio::test]
async fn a_redis_outage_is_told_and_heals() {
    let mut redis = RedisServer::start().expect("a throwaway redis-server");
    let mut env = redis_env(&redis);
    env.push(("STEWARD__STREAMS__TIMEOUT", "1s".into()));
    let s = start(&env).await;
    let token = tenant(&s, "acme").await;
    let mut c = client(&s).await;
    let before = publish(&mut c, &token, "fx", None, json!(1)).await;
    let mut ws = connect(&s, &token).await;
    subscribe(&mut ws, json!({"type": "subscribe", "stream": "fx"})).await;
    redis.stop();
    let told = next_json(&mut ws).await;
    assert_eq!(
        (told["type"].as_str(), told["code"].as_str()),
        (Some("unsubscribed"), Some("unavailable")),
        "{told}"
    );
    let req = || pb::PublishRequest {
        stream: "fx".into(),
        payload: Some(pb::publish_request::Payload::Json("2".into())),
        ..Default::default()
    };
    let e = c.publish(authed(&token, req())).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    redis.start_again().unwrap();
    let healed = eventually(WITHIN, || {
        let (mut c, token) = (c.clone(), token.clone());
        async move { c.publish(authed(&token, req())).await.is_ok() }
    })
    .await;
    assert!(healed, "publishes work again once redis is back");
    let mut back = None;
    for _ in 0..50 {
        send(&mut ws, json!({"type": "subscribe", "stream": "fx", "since": {"offset": before.offset, "epoch": before.epoch}})).await;
        let v = next_json(&mut ws).await;
        if v["type"] == "subscribed" {
            back = Some(v);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let back = back.expect("subscriptions work again once redis is back");
    assert_eq!(back["recovered"], false, "redis lost its data: a new epoch: {back}");
    assert_ne!(back["position"]["epoch"], json!(before.epoch));
    publish(&mut c, &token, "fx", None, json!(3)).await;
    assert_eq!(next_json(&mut ws).await["type"], "publication");
    assert_eq!(metric(&s, "steward_stream_live_feed_lost_total").await, 1.0);
}

/// `steward_tracked_handles{type=…}` of the server.
async fn tracked(s: &Steward, kind: &str) -> f64 {
    metric(s, &format!("steward_tracked_handles{{type=\"{kind}\"}}")).await
}

fn server_rss(s: &Steward) -> u64 {
    let statm = std::fs::read_to_string(format!("/proc/{}/statm", s.pid())).unwrap();
    statm.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 4096
}

async fn publish_round(s: &Steward, token: &str, round: usize) {
    let c = client(s).await;
    futures_util::stream::iter(0..1000)
        .for_each_concurrent(50, |i| {
            let mut c = c.clone();
            async move {
                let stream = format!("r{round}.s{i}");
                publish(&mut c, token, &stream, Some("k"), json!({"i": i})).await;
            }
        })
        .await;
}

/// 1000 streams created (one publication each) and expired: every actor stops, and the registry,
/// tracked tasks and timers are back to baseline, with RSS growth under 5 MiB.
async fn churn_of_1000_streams(mut env: Vec<(&'static str, String)>) {
    let redis = env.iter().any(|(k, v)| *k == "STEWARD__STREAMS__ENGINE" && v == "redis");
    env.extend([
        ("STEWARD__STREAMS__KEY_TTL", "200ms".to_owned()),
        ("STEWARD__STREAMS__HISTORY_TTL", "200ms".to_owned()),
        ("STEWARD__STREAMS__IDLE_TIMEOUT", "200ms".to_owned()),
    ]);
    let s = start(&env).await;
    let token = tenant(&s, "acme").await;
    set_quotas(&s, "acme", json!({"streams": 1000})).await;
    let none_live = || async { s.resources("?kind=stream").await.is_empty() };
    // warm up: worker threads, allocator pools, the store's connections
    publish_round(&s, &token, 0).await;
    assert!(eventually(WITHIN, none_live).await);
    let base_rss = server_rss(&s);
    let (base_tasks, base_timers) = (tracked(&s, "task").await, tracked(&s, "timer").await);

    publish_round(&s, &token, 1).await;
    assert_eq!(metric(&s, "steward_resources_started_total{kind=\"stream\"}").await, 2000.0);
    assert!(eventually(WITHIN, none_live).await, "every stream expired and stopped");
    assert_eq!(metric(&s, "steward_stream_streams").await, 0.0);
    assert_eq!(metric(&s, "steward_stream_keys").await, 0.0);
    assert_eq!(metric(&s, "steward_stream_bytes").await, 0.0);
    if !redis {
        // Redis expires keys itself; in memory each stream's timer did
        assert_eq!(metric(&s, "steward_stream_expirations_total{kind=\"key\"}").await, 2000.0);
    }
    assert_eq!(metric(&s, "steward_orphaned_handles").await, 0.0);
    assert!(
        eventually(WITHIN, || async {
            tracked(&s, "task").await == base_tasks && tracked(&s, "timer").await == base_timers
        })
        .await,
        "tasks {} timers {} (baseline {base_tasks} {base_timers})",
        tracked(&s, "task").await,
        tracked(&s, "timer").await
    );
    let grown = server_rss(&s).saturating_sub(base_rss);
    eprintln!("1000 stream churn (redis: {redis}): RSS grew {grown} bytes");
    assert!(grown < 5 * 1024 * 1024, "RSS grew by {grown} bytes over 1000 streams");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_of_1000_streams_created_and_expired_leaves_nothing_behind_memory() {
    churn_of_1000_streams(Vec::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_of_1000_streams_created_and_expired_leaves_nothing_behind_redis() {
    let redis = RedisServer::start().expect("a throwaway redis-server");
    churn_of_1000_streams(redis_env(&redis)).await;
}

/// `Watch` over gRPC: the snapshot with the recovered publications, then live ones in order; a
/// slow or ended watch is an error status, and the shutdown ends it `UNAVAILABLE`.
#[tokio::test]
async fn a_grpc_watch_recovers_then_follows_and_ends_unavailable_on_shutdown() {
    let mut s = Steward::start(&[]).await;
    let token = tenant(&s, "acme").await;
    let mut c = client(&s).await;
    let first = publish(&mut c, &token, "ticks", Some("a"), json!(1)).await;
    publish(&mut c, &token, "ticks", Some("b"), json!(2)).await;
    publish(&mut c, &token, "ticks", None, json!(3)).await;
    let req = pb::WatchRequest { stream: "ticks".into(), since: Some(first), latest: true };
    let mut watch = c.watch(authed(&token, req)).await.unwrap().into_inner();
    let Some(pb::watch_event::Event::Subscribed(sub)) =
        watch.message().await.unwrap().unwrap().event
    else {
        panic!("subscribed first")
    };
    assert!(sub.recovered && sub.was_recovering);
    assert_eq!(sub.publications.iter().map(|p| p.offset).collect::<Vec<_>>(), [2, 3]);
    assert_eq!(sub.latest.iter().map(|p| p.offset).collect::<Vec<_>>(), [3, 2, 1]);
    publish(&mut c, &token, "ticks", Some("a"), json!(4)).await;
    let Some(pb::watch_event::Event::Publication(p)) =
        watch.message().await.unwrap().unwrap().event
    else {
        panic!("a publication")
    };
    assert_eq!((p.offset, p.key.as_deref()), (4, Some("a")));
    assert_eq!(p.payload, Some(pb::publication::Payload::Json("4".into())));
    s.signal(nix::sys::signal::Signal::SIGTERM);
    let end = tokio::time::timeout(WITHIN, watch.message()).await.expect("the watch ends");
    assert_eq!(end.unwrap_err().code(), Code::Unavailable);
    assert!(s.wait_exit(Duration::from_secs(40)).await.expect("exits").success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_1000_stream_subscribers_tells_them_all_and_exits_0() {
    let mut s = Steward::start(&[]).await;
    let token = tenant(&s, "acme").await;
    // 100 sockets with 10 stream subscriptions each
    let mut sockets = Vec::new();
    for _ in 0..100 {
        let mut ws = connect(&s, &token).await;
        for i in 0..10 {
            subscribe(&mut ws, json!({"type": "subscribe", "stream": format!("s{i}")})).await;
        }
        sockets.push(ws);
    }
    assert_eq!(metric(&s, "steward_stream_subscribers").await, 1000.0);
    let mut c = client(&s).await;
    publish(&mut c, &token, "s0", None, json!("last")).await;
    s.signal(nix::sys::signal::Signal::SIGTERM);
    let readers = sockets.into_iter().map(|mut ws| async move {
        // the last publication, then the shutdown's Close
        let p = next_json(&mut ws).await;
        (p["offset"].as_u64(), close_code(&mut ws, WITHIN).await)
    });
    let ends = futures_util::future::join_all(readers).await;
    for (offset, close) in &ends {
        assert_eq!(*offset, Some(1));
        assert_eq!(close.as_ref().map(|c| c.0), Some(1001), "{close:?}");
    }
    let status = s.wait_exit(Duration::from_secs(40)).await.expect("steward exits");
    assert!(status.success(), "{status:?}\n{}", s.dump());
    let report = s.find_message("shutdown complete").expect("the shutdown report");
    assert_eq!(report["forced"], 0, "{report}");
}
