//! The front door over the embedded broker, under a real supervisor: producers and consumers
//! come and go as resources, and nothing a consumer held is lost when its stream ends.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use steward_config::Config;
use steward_core::supervisor::Supervisor;
use steward_core::{Registry, ResourceKind, Strategy, SupervisorSpec};

use super::*;

struct Harness {
    registry: Registry,
    messaging: Messaging,
    _root: steward_core::supervisor::RootSupervisor,
}

async fn harness(tweak: impl FnOnce(&mut MessagingConfig)) -> Harness {
    let c = Config::defaults();
    let mut config = c.messaging.clone();
    tweak(&mut config);
    let registry = Registry::with_defaults();
    let messaging = Messaging::new(config, registry.clone());
    let spec = SupervisorSpec::from_config("test", Strategy::OneForOne, &c.supervisor)
        .children(messaging.child_specs(&c.supervisor));
    let root = Supervisor::start_root(&registry, spec).await.unwrap();
    Harness { registry, messaging, _root: root }
}

fn admit_all(_: ResourceKind) -> Result<AdmitGuard, MessagingError> {
    Ok(Box::new(()))
}

fn entry(topic: &str, id: &str) -> SendEntry {
    SendEntry {
        topic: topic.to_owned(),
        message: OutMessage {
            client_id: id.to_owned(),
            body: Bytes::from(format!("body {id}")),
            tag: None,
            keys: Vec::new(),
            properties: BTreeMap::new(),
            deliver_at: None,
        },
    }
}

fn spec(group: &str, topic: &str) -> ReceiveSpec {
    ReceiveSpec { group: group.into(), topic: topic.into(), ..ReceiveSpec::default() }
}

async fn next_deliveries(stream: &mut ConsumerStream) -> Vec<Delivered> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
            Ok(Some(ConsumerEvent::Deliveries(d))) => return d,
            Ok(Some(ConsumerEvent::Heartbeat)) => {}
            other => panic!("expected deliveries, got {other:?}"),
        }
    }
}

async fn gone(registry: &Registry, kind: ResourceKind) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    assert!(registry.wait_none_of(&[kind], deadline).await, "{kind} left behind");
}

#[actix_rt::test]
async fn acked_messages_stay_acked_and_the_rest_go_to_the_next_member_when_a_stream_drops() {
    let h = harness(|_| {}).await;
    let tenant: Arc<str> = "acme".into();
    let mut first = h.messaging.receive(&tenant, spec("g", "orders"), &admit_all).await.unwrap();
    let batch: Vec<_> = (0..100).map(|i| entry("orders", &format!("m{i}"))).collect();
    let sent = h.messaging.send(&tenant, None, batch, &admit_all).await.unwrap();
    assert!(sent.iter().all(|r| matches!(r, SendResult::Ok { duplicate: false, .. })));

    let mut got = Vec::new();
    while got.len() < 100 {
        got.extend(next_deliveries(&mut first).await);
    }
    let order: Vec<_> = got.iter().map(|d| d.message.client_id.clone()).collect();
    let expected: Vec<_> = (0..100).map(|i| format!("m{i}")).collect();
    assert_eq!(order, expected, "first deliveries come in publish order");
    let receipts = got.iter().take(40).map(|d| d.receipt.clone()).collect();
    let acked = h.messaging.ack(&tenant, receipts).await.unwrap();
    assert!(acked.iter().all(Result::is_ok), "{acked:?}");
    drop(first);
    gone(&h.registry, ResourceKind::Consumer).await;

    let mut second = h.messaging.receive(&tenant, spec("g", "orders"), &admit_all).await.unwrap();
    let mut again = Vec::new();
    while again.len() < 60 {
        again.extend(next_deliveries(&mut second).await);
    }
    let ids: Vec<_> = again.iter().map(|d| d.message.client_id.clone()).collect();
    assert_eq!(ids, expected[40..].to_vec(), "exactly the 60 unacked, in order");
    assert!(again.iter().all(|d| d.attempt == 2));
    let stale = h.messaging.ack(&tenant, vec![got[50].receipt.clone()]).await.unwrap();
    assert!(matches!(stale[0], Err(EntryError::NotFound(_))), "{stale:?}");
    let other = h.messaging.ack(&"other".into(), vec![again[0].receipt.clone()]).await.unwrap();
    assert!(matches!(other[0], Err(EntryError::NotFound(_))), "another tenant's receipt");
    let junk = h.messaging.ack(&tenant, vec!["junk".into()]).await.unwrap();
    assert!(matches!(junk[0], Err(EntryError::Invalid(_))));
    drop(second);
    gone(&h.registry, ResourceKind::Consumer).await;
    let s = h.messaging.stats().snapshot();
    assert_eq!((s.acks, s.returned, s.redeliveries, s.leases_in_flight), (40, 120, 60, 0));
    assert_eq!(s.consumer_leak_detections, 0);
}

#[actix_rt::test]
async fn producers_are_resources_swept_when_idle_and_cleaned_up_on_request() {
    let h = harness(|c| {
        c.producer_cleanup_timeout = Duration::from_millis(100);
        c.producer_sweep_interval = Duration::from_millis(50);
    })
    .await;
    let tenant: Arc<str> = "acme".into();
    for i in 0..20 {
        let pid = format!("p{i}");
        h.messaging.send(&tenant, Some(&pid), vec![entry("t", &pid)], &admit_all).await.unwrap();
    }
    assert_eq!(h.registry.count_of(&[ResourceKind::Producer]), 20);
    assert!(h.messaging.cleanup_producer(&tenant, "p0").await.unwrap());
    assert!(!h.messaging.cleanup_producer(&tenant, "p0").await.unwrap(), "idempotent");
    gone(&h.registry, ResourceKind::Producer).await;
    assert_eq!(h.messaging.live().0, 0);
    assert_eq!(h.messaging.stats().snapshot().producer_leak_detections, 19);
}

#[actix_rt::test]
async fn bad_requests_are_refused_and_disturb_nothing() {
    let h = harness(|c| c.max_body = bytesize::ByteSize::b(16)).await;
    let tenant: Arc<str> = "acme".into();
    let err = h.messaging.send(&tenant, None, Vec::new(), &admit_all).await.unwrap_err();
    assert!(matches!(err, MessagingError::Invalid(_)));
    let mut big = entry("t", "big");
    big.message.body = Bytes::from(vec![0u8; 17]);
    let results = h
        .messaging
        .send(&tenant, None, vec![entry("", "a"), big, entry("t", "ok")], &admit_all)
        .await
        .unwrap();
    assert!(matches!(&results[0], SendResult::Invalid(m) if m.contains("messages[0].topic")));
    assert!(matches!(&results[1], SendResult::Invalid(m) if m.contains("messages[1].body")));
    assert!(matches!(&results[2], SendResult::Ok { .. }));
    let err = h.messaging.receive(&tenant, spec("g", "a b"), &admit_all).await.unwrap_err();
    assert!(matches!(err, MessagingError::Invalid(_)));
    assert_eq!(h.registry.count_of(&[ResourceKind::Consumer]), 0);
}
