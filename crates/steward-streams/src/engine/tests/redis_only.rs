//! Cases only a shared engine has: Redis restarted without its data, Redis down (at start and
//! mid-run), two nodes on one stream, the live feed's subscriptions, and the keys in Redis.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{
    PATIENCE, Patience, TIMEOUT, json, keyed, limits, offsets, publish_n, spawn_dispatcher,
    unique_stream,
};
use crate::Error;
use crate::engine::redis::{LIVE_CAPACITY, RedisEngine};
use crate::engine::{Engine, LiveEvent, StreamLimits, StreamStore};
use crate::model::{NewPublication, Position, Published, StreamRef};
use crate::testing::RedisServer;

/// The next event of a live feed, within the patience.
async fn next_event(feed: &mut mpsc::Receiver<LiveEvent>) -> LiveEvent {
    tokio::time::timeout(PATIENCE, feed.recv())
        .await
        .expect("a live event within the patience")
        .expect("the live feed stays open")
}

/// Publishes until Redis answers again (the connection manager reconnects on its own).
async fn publish_when_back(store: &mut Box<dyn StreamStore>) -> Published {
    let patience = Patience::new("a publish to succeed once redis is back");
    loop {
        match store.publish(json("\"back\"")).await {
            Ok(published) => return published,
            Err(Error::Unavailable(_)) => patience.next().await,
            Err(other) => panic!("publish failed with {other:?}"),
        }
    }
}

/// The number of subscribers of a stream's channel, as the server counts them.
fn channel_subscribers(server: &RedisServer, stream: &StreamRef) -> u64 {
    let channel = format!("steward:{{{}/{}}}:live", stream.tenant, stream.name);
    let mut conn = server.connect().expect("connect");
    let (_, count): (String, u64) =
        ::redis::cmd("PUBSUB").arg("NUMSUB").arg(&channel).query(&mut conn).expect("NUMSUB");
    count
}

fn engine(server: &RedisServer, timeout: Duration) -> RedisEngine {
    RedisEngine::new(&server.url(), timeout).expect("redis engine")
}

#[actix_rt::test]
async fn redis_restarted_without_its_data_starts_a_new_epoch() {
    let mut server = RedisServer::start().expect("redis-server");
    let engine = engine(&server, TIMEOUT);
    spawn_dispatcher(&engine);
    let mut store = engine.open(&unique_stream(), limits());
    let before = publish_n(&mut store, 3).await;
    server.stop();
    server.start_again().expect("start again");
    let after = publish_when_back(&mut store).await;
    assert_eq!(after.position.offset, 1, "offsets start again");
    assert_ne!(after.position.epoch, before[2].epoch, "a new epoch");
    let snapshot = store.snapshot(Some(before[1].clone()), false).await.expect("snapshot");
    assert!(snapshot.was_recovering && !snapshot.recovered, "the old history is gone");
    assert_eq!(snapshot.position, after.position);
}

#[actix_rt::test]
async fn redis_down_mid_run_answers_unavailable_and_everything_comes_back() {
    let mut server = RedisServer::start().expect("redis-server");
    let timeout = Duration::from_millis(500);
    let engine = engine(&server, timeout);
    spawn_dispatcher(&engine);
    let mut store = engine.open(&unique_stream(), limits());
    let mut feed = store.live().expect("redis has a live feed");
    let first = store.publish(json("1")).await.expect("publish");
    assert!(
        matches!(next_event(&mut feed).await, LiveEvent::Publication { publication, .. } if publication.offset == 1)
    );

    server.stop();
    let asked = Instant::now();
    let down = store.publish(json("2")).await;
    assert!(matches!(down, Err(Error::Unavailable(_))), "{down:?}");
    assert!(asked.elapsed() < timeout + Duration::from_millis(500), "answered within the timeout");
    assert!(matches!(next_event(&mut feed).await, LiveEvent::Lost(_)), "the feed tells it lost");

    server.start_again().expect("start again");
    // the dispatcher reconnects by itself and says so with a second `Lost`
    assert!(matches!(next_event(&mut feed).await, LiveEvent::Lost(_)), "the feed is back");
    let back = publish_when_back(&mut store).await;
    assert_ne!(back.position.epoch, first.position.epoch, "redis lost its data");
    match next_event(&mut feed).await {
        LiveEvent::Publication { epoch, publication } => {
            assert_eq!(Position { offset: publication.offset, epoch }, back.position);
        }
        other @ LiveEvent::Lost(_) => panic!("expected the publication, got {other:?}"),
    }
}

#[actix_rt::test]
async fn steward_starts_while_redis_is_down_and_works_once_it_is_up() {
    let mut server = RedisServer::start().expect("redis-server");
    server.stop();
    let engine = engine(&server, Duration::from_millis(500));
    spawn_dispatcher(&engine);
    let mut store = engine.open(&unique_stream(), limits());
    let down = store.publish(json("1")).await;
    assert!(matches!(down, Err(Error::Unavailable(_))), "{down:?}");
    server.start_again().expect("start");
    assert_eq!(publish_when_back(&mut store).await.position.offset, 1);
}

#[actix_rt::test]
async fn a_publication_through_one_node_reaches_the_other_in_order() {
    let server = RedisServer::start().expect("redis-server");
    let (one, two) = (engine(&server, TIMEOUT), engine(&server, TIMEOUT));
    spawn_dispatcher(&one);
    spawn_dispatcher(&two);
    let stream = unique_stream();
    let mut on_one = one.open(&stream, limits());
    let mut on_two = two.open(&stream, limits());
    let mut feed = on_two.live().expect("live feed");
    // the next operation waits for the subscription: nothing published after it is missed
    let start = on_two.snapshot(None, false).await.expect("snapshot").position;
    let positions = publish_n(&mut on_one, 50).await;
    assert_eq!(positions[0].epoch, start.epoch, "both nodes see one epoch");
    for expected in &positions {
        match next_event(&mut feed).await {
            LiveEvent::Publication { epoch, publication } => {
                assert_eq!(&Position { offset: publication.offset, epoch }, expected);
            }
            other @ LiveEvent::Lost(_) => {
                panic!("expected offset {}, got {other:?}", expected.offset)
            }
        }
    }
    let page = on_two.history(super::everything()).await.expect("history on the other node");
    assert_eq!(offsets(&page.publications), (1..=50).collect::<Vec<_>>());
}

#[actix_rt::test]
async fn a_receiver_registered_before_the_dispatcher_runs_gets_publications() {
    let server = RedisServer::start().expect("redis-server");
    let engine = engine(&server, TIMEOUT);
    let mut store = engine.open(&unique_stream(), limits());
    // the command connection is up and the script loaded: a publish would run at once if it
    // did not wait for the subscription
    store.publish(json("0")).await.expect("publish before");
    let mut feed = store.live().expect("live feed");
    spawn_dispatcher(&engine);
    let published = store.publish(json("1")).await.expect("publish");
    match next_event(&mut feed).await {
        LiveEvent::Publication { epoch, publication } => {
            assert_eq!(Position { offset: publication.offset, epoch }, published.position);
        }
        other @ LiveEvent::Lost(_) => panic!("expected the publication, got {other:?}"),
    }
}

#[actix_rt::test]
async fn the_channel_is_unsubscribed_when_the_last_receiver_goes() {
    let server = RedisServer::start().expect("redis-server");
    let engine = engine(&server, TIMEOUT);
    spawn_dispatcher(&engine);
    let stream = unique_stream();
    let mut store = engine.open(&stream, limits());
    let first = store.live().expect("live feed");
    let second = store.live().expect("another live feed");
    store.info().await.expect("info, once subscribed");
    assert_eq!(channel_subscribers(&server, &stream), 1, "one subscription per node");
    drop(first);
    store.info().await.expect("info");
    assert_eq!(channel_subscribers(&server, &stream), 1, "a receiver is left");
    drop(second);
    let patience = Patience::new("the channel to be unsubscribed");
    while channel_subscribers(&server, &stream) != 0 {
        patience.next().await;
    }
}

#[actix_rt::test]
async fn a_receiver_that_falls_behind_is_told_it_lost_publications() {
    let server = RedisServer::start().expect("redis-server");
    let engine = engine(&server, TIMEOUT);
    spawn_dispatcher(&engine);
    let mut store = engine.open(&unique_stream(), limits());
    let mut feed = store.live().expect("live feed");
    let total = LIVE_CAPACITY as u64 + 20;
    publish_n(&mut store, total).await;
    let mut received = Vec::new();
    while let LiveEvent::Publication { publication, .. } = next_event(&mut feed).await {
        received.push(publication.offset);
    }
    let count = received.len() as u64;
    assert_eq!(received, (1..=count).collect::<Vec<_>>(), "in order until the loss");
    assert!(count >= LIVE_CAPACITY as u64 && count < total, "{count} received");
    // the feed goes on after the loss
    let published = store.publish(json("after")).await.expect("publish");
    let patience = Patience::new("the feed to go on after the loss");
    loop {
        match next_event(&mut feed).await {
            LiveEvent::Publication { publication, .. }
                if publication.offset == published.position.offset =>
            {
                break;
            }
            _ => patience.next().await,
        }
    }
}

#[actix_rt::test]
async fn a_streams_keys_share_its_hash_tag_and_expire_when_abandoned() {
    let server = RedisServer::start().expect("redis-server");
    let engine = engine(&server, TIMEOUT);
    let stream = unique_stream();
    let tag = format!("steward:{{{}/{}}}:", stream.tenant, stream.name);
    let mut conn = server.connect().expect("connect");
    let mut pttl = |suffix: &str| -> i64 {
        ::redis::cmd("PTTL").arg(format!("{tag}{suffix}")).query(&mut conn).expect("PTTL")
    };
    let hour = Duration::from_secs(3600);
    let forever = StreamLimits { history_ttl: hour, idempotency_window: hour, ..limits() };
    let mut store = engine.open(&stream, forever.clone());
    let once = NewPublication { idempotency_key: Some(Arc::from("req")), ..keyed("k", "1") };
    store.publish(once).await.expect("publish");
    let hour_ms = 3_600_000;
    let around_an_hour = |ttl: i64| (hour_ms - 60_000..=hour_ms).contains(&ttl);
    assert!(
        around_an_hour(pttl("history")),
        "the history goes history_ttl after its last publication"
    );
    assert!(around_an_hour(pttl("idem:req")), "an idempotency key goes after its window");
    for without_key_ttl in ["meta", "latest", "order"] {
        assert_eq!(pttl(without_key_ttl), -1, "{without_key_ttl} stays without key_ttl");
    }
    let mut store = engine.open(&stream, StreamLimits { key_ttl: Some(2 * hour), ..forever });
    store.publish(keyed("k", "2")).await.expect("publish");
    for longest in ["meta", "latest", "order", "expiry"] {
        let ttl = pttl(longest);
        assert!((2 * hour_ms - 60_000..=2 * hour_ms).contains(&ttl), "{longest}: {ttl}");
    }
    let mut keys: Vec<String> =
        ::redis::cmd("KEYS").arg("steward:*").query(&mut conn).expect("KEYS");
    keys.sort();
    let expected: Vec<String> = ["expiry", "history", "idem:req", "latest", "meta", "order"]
        .iter()
        .map(|suffix| format!("{tag}{suffix}"))
        .collect();
    assert_eq!(keys, expected, "every key of the stream carries its hash tag");
}
