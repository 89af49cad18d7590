//! Embedded-only behaviour; the shared contract is the conformance suite, run below.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::EmbeddedBroker;
use crate::broker::{
    Broker, BrokerError, BrokerSettings, GroupKey, OutMessage, TagFilter, TopicKey,
};
use crate::stats::MessagingStats;

fn settings() -> BrokerSettings {
    BrokerSettings {
        send_timeout: Duration::from_secs(1),
        max_delivery_attempts: 3,
        dedup_window: Duration::from_secs(60),
        group_grace: Duration::from_secs(60),
        topic_max_messages: 1000,
        topic_max_bytes: 1 << 20,
    }
}

fn msg(id: &str) -> OutMessage {
    OutMessage {
        client_id: id.to_owned(),
        body: Bytes::from_static(b"x"),
        tag: None,
        keys: Vec::new(),
        properties: Default::default(),
        deliver_at: None,
    }
}

#[tokio::test]
async fn unacked_counts_waiting_deliveries_and_close_refuses_everything() {
    let broker = EmbeddedBroker::new(settings(), Arc::new(MessagingStats::default()));
    let topic = TopicKey::new("t", "orders");
    let group = GroupKey { topic: topic.clone(), group: "g".into(), filter: TagFilter::All };
    let mut pull = broker.open(&group, Duration::from_secs(30)).await.unwrap();
    broker.send(&topic, vec![msg("1"), msg("2"), msg("3")]).await;
    let got = pull.fetch(1, 1 << 20, Duration::ZERO).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(broker.unacked(), Some(3), "one leased and two ready are all unacked");
    broker.ack(vec![got[0].lease.clone()]).await.into_iter().for_each(|r| r.unwrap());
    assert_eq!(broker.unacked(), Some(2));

    broker.close().await;
    let err = pull.fetch(1, 1 << 20, Duration::from_secs(5)).await.unwrap_err();
    assert!(matches!(err, BrokerError::Unavailable(_)), "{err:?}");
    let sent = broker.send(&topic, vec![msg("4")]).await;
    assert!(matches!(sent[0], crate::SendOutcome::Unavailable(_)), "{sent:?}");
}

#[tokio::test]
async fn a_group_without_members_is_forgotten_after_its_grace() {
    let mut s = settings();
    s.group_grace = Duration::from_millis(50);
    let broker = EmbeddedBroker::new(s, Arc::new(MessagingStats::default()));
    let topic = TopicKey::new("t", "orders");
    let group = GroupKey { topic: topic.clone(), group: "g".into(), filter: TagFilter::All };
    drop(broker.open(&group, Duration::from_secs(30)).await.unwrap());
    broker.send(&topic, vec![msg("1")]).await;
    assert_eq!(broker.unacked(), Some(1), "within the grace the group keeps its messages");
    tokio::time::sleep(Duration::from_millis(80)).await;
    broker.send(&topic, vec![msg("2")]).await;
    assert_eq!(broker.unacked(), Some(0), "past the grace the group and its backlog are gone");
}

#[tokio::test]
async fn a_waiting_fetch_wakes_on_send_and_on_lease_expiry() {
    let broker = EmbeddedBroker::new(settings(), Arc::new(MessagingStats::default()));
    let topic = TopicKey::new("t", "orders");
    let group = GroupKey { topic: topic.clone(), group: "g".into(), filter: TagFilter::All };
    let mut a = broker.open(&group, Duration::from_millis(100)).await.unwrap();
    let mut b = broker.open(&group, Duration::from_millis(100)).await.unwrap();
    let (got, ()) = tokio::join!(a.fetch(10, 1 << 20, Duration::from_secs(5)), async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        broker.send(&topic, vec![msg("1")]).await;
    });
    assert_eq!(got.unwrap().len(), 1);
    let started = std::time::Instant::now();
    let again = b.fetch(10, 1 << 20, Duration::from_secs(5)).await.unwrap();
    assert_eq!(again.len(), 1, "redelivered once the 100 ms lease expired");
    assert_eq!(again[0].attempt, 2);
    assert!(started.elapsed() < Duration::from_secs(2), "woken by the deadline, not the wait");
}

crate::broker::conformance::conformance_suite!(conformance, |settings, stats| async move {
    EmbeddedBroker::new(settings, stats) as Arc<dyn Broker>
});

/// The tenant's counts go back to zero whichever way what it held goes: acked, dead-lettered
/// and then acked, its group forgotten after the grace, its idle topics swept, the tenant
/// removed. (The counts live in guards, so this is the lifecycle proof of the quotas.)
#[tokio::test]
async fn tenant_usage_returns_to_zero_by_every_path_that_removes_what_it_held() {
    let broker = EmbeddedBroker::new(
        BrokerSettings { group_grace: Duration::ZERO, ..settings() },
        Arc::new(MessagingStats::default()),
    );
    let tenant: Arc<str> = "acme".into();
    broker.set_limits(&tenant, crate::TenantLimits::UNLIMITED);
    let usage = || broker.usage().into_iter().find(|(t, _)| *t == tenant).map(|(_, u)| u);
    let key = |topic: &str, group: &str| GroupKey {
        topic: TopicKey::new(tenant.clone(), topic),
        group: group.into(),
        filter: TagFilter::All,
    };
    // acked in one group, dead-lettered in another (max 3 attempts), then acked from the dlq
    let (a, b) = (key("a", "g"), key("a", "h"));
    let mut pa = broker.open(&a, Duration::from_secs(30)).await.unwrap();
    let mut pb = broker.open(&b, Duration::from_millis(1)).await.unwrap();
    broker.send(&a.topic, vec![msg("1"), msg("2")]).await;
    assert_eq!(usage().unwrap().stored_messages, 2, "each message counts once");
    let got = pa.fetch(10, usize::MAX, Duration::from_millis(100)).await.unwrap();
    broker.ack(got.into_iter().map(|d| d.lease).collect()).await;
    assert_eq!(usage().unwrap().stored_messages, 2, "group h still holds them");
    for _ in 0..4 {
        let got = pb.fetch(10, usize::MAX, Duration::from_millis(50)).await.unwrap();
        broker.set_visibility(got.into_iter().map(|d| (d.lease, Duration::ZERO)).collect()).await;
    }
    let dlq = key("a.dlq", "g");
    let mut pd = broker.open(&dlq, Duration::from_secs(30)).await.unwrap();
    let got = pd.fetch(10, usize::MAX, Duration::from_millis(100)).await.unwrap();
    assert_eq!(got.len(), 2, "both dead-lettered");
    assert_eq!(usage().unwrap().stored_messages, 2, "a dead letter keeps its weight");
    broker.ack(got.into_iter().map(|d| d.lease).collect()).await;
    assert_eq!(usage().unwrap().stored_messages, 0);
    assert_eq!(usage().unwrap().stored_bytes, 0);
    // groups without members and messages go after the grace (zero here) at the next send
    drop((pa, pb, pd));
    broker.send(&a.topic, vec![msg("3")]).await;
    assert_eq!(usage().unwrap().groups, 0, "{:?}", usage());
    // a group left holding messages: swept groups and topics give back places and weight
    let c = key("c", "g");
    let pc = broker.open(&c, Duration::from_secs(30)).await.unwrap();
    broker.send(&c.topic, vec![msg("4")]).await;
    drop(pc);
    assert_eq!(usage().unwrap().stored_messages, 1);
    broker.remove_tenant(&tenant).await.unwrap();
    assert_eq!(usage(), None, "the tenant's account goes with it");
    // and a fresh account starts from zero
    broker.set_limits(&tenant, crate::TenantLimits::UNLIMITED);
    broker.sweep_idle(Duration::ZERO).await;
    assert_eq!(usage(), Some(crate::TenantUsage::default()));
}
