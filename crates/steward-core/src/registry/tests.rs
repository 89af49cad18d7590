//! Tests of the registry: entries, the stopped list, events, counters and tenants' usage.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use steward_config::{Config, RegistryConfig};

use super::*;
use crate::ParseError;
use crate::testing::{Quiet, eventually};

const WITHIN: Duration = Duration::from_secs(5);

fn registration(kind: ResourceKind, tenant: &str) -> Registration {
    Registration { kind, name: "r".into(), tenant: Some(tenant.into()), parent: None }
}

fn registry_with(stopped_retention: Duration, stopped_capacity: usize) -> Registry {
    let config = RegistryConfig { stopped_retention, stopped_capacity };
    Registry::new(config, &Config::defaults().idle)
}

fn ids(infos: &[ResourceInfo]) -> Vec<ResourceId> {
    infos.iter().map(|i| i.id).collect()
}

fn stopped() -> ResourceFilter {
    ResourceFilter { state: Some(LifecycleState::Stopped), ..ResourceFilter::default() }
}

#[test]
fn list_filters_by_kind_tenant_and_state() {
    let registry = Registry::with_defaults();
    let sockets_a: Vec<ResourceId> =
        (0..4).map(|_| registry.register(registration(ResourceKind::Socket, "a")).0).collect();
    let socket_b = registry.register(registration(ResourceKind::Socket, "b")).0;
    let peer_b = registry.register(registration(ResourceKind::Peer, "b")).0;
    registry.set_state(sockets_a[1], LifecycleState::Running);
    registry.set_state(peer_b, LifecycleState::Running);

    let list = |filter: ResourceFilter| ids(&registry.list(&filter, None, 100).0);
    let kind = |k| ResourceFilter { kind: Some(k), ..ResourceFilter::default() };
    let tenant = |t: &str| ResourceFilter { tenant: Some(t.into()), ..ResourceFilter::default() };
    let state = |s| ResourceFilter { state: Some(s), ..ResourceFilter::default() };

    assert_eq!(list(ResourceFilter::default()).len(), 6);
    assert_eq!(list(kind(ResourceKind::Peer)), [peer_b]);
    assert_eq!(list(tenant("b")), [socket_b, peer_b]);
    assert_eq!(list(state(LifecycleState::Running)), [sockets_a[1], peer_b]);
    assert_eq!(list(state(LifecycleState::Starting)).len(), 4);
    let socket_in_b =
        ResourceFilter { kind: Some(ResourceKind::Socket), tenant: Some("b".into()), state: None };
    assert_eq!(list(socket_in_b), [socket_b]);
    assert!(list(tenant("nobody")).is_empty());
    assert!(list(stopped()).is_empty(), "live entries are not listed as stopped");
}

#[test]
fn list_pages_in_id_order_with_chained_tokens() {
    let registry = Registry::with_defaults();
    let registered: Vec<ResourceId> =
        (0..25).map(|_| registry.register(registration(ResourceKind::Socket, "a")).0).collect();
    registry.register(registration(ResourceKind::Peer, "a")); // filtered out
    let filter = ResourceFilter { kind: Some(ResourceKind::Socket), ..ResourceFilter::default() };

    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let (page, next) = registry.list(&filter, after, 10);
        pages.push(ids(&page));
        if let Some(next) = next {
            assert_eq!(Some(next), page.last().map(|i| i.id), "the token is the last id");
        }
        match next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 5]);
    let all: Vec<ResourceId> = pages.concat();
    let mut sorted = registered.clone();
    sorted.sort();
    assert_eq!(all, sorted, "every entry once, in id order");

    let (page, next) = registry.list(&filter, None, 25);
    assert_eq!((page.len(), next), (25, None), "an exact fit has no next page");
}

#[test]
fn list_with_limit_zero_returns_an_empty_page() {
    let registry = Registry::with_defaults();
    registry.register(registration(ResourceKind::Socket, "a"));
    let (page, next) = registry.list(&ResourceFilter::default(), None, 0);
    assert!(page.is_empty());
    assert_eq!(next, None);
}

#[test]
fn removed_entries_are_kept_as_stopped_with_their_reason() {
    let registry = registry_with(Duration::from_secs(60), 5);
    let (id, _) = registry.register(registration(ResourceKind::Socket, "a"));
    let before = SystemTime::now();
    registry.remove(id, &ExitReason::error("boom"));

    assert!(!registry.contains(id));
    let info = registry.get(id).unwrap();
    assert_eq!(info.state, LifecycleState::Stopped);
    assert_eq!(info.last_exit, Some(ExitReason::error("boom")));
    assert!(info.stopped_at.is_some_and(|t| t >= before), "{:?}", info.stopped_at);
    let stats = registry.kind_stats()[ResourceKind::Socket.index()].1;
    assert_eq!((stats.live, stats.stopped, stats.failed), (0, 1, 1));

    registry.remove(id, &ExitReason::Normal); // idempotent
    assert_eq!(registry.get(id).unwrap().last_exit, Some(ExitReason::error("boom")));
    assert_eq!(registry.kind_stats()[ResourceKind::Socket.index()].1.stopped, 1);
}

#[test]
fn the_stopped_list_keeps_the_most_recent_up_to_its_capacity() {
    let registry = registry_with(Duration::from_secs(60), 5);
    let removed: Vec<ResourceId> = (0..20)
        .map(|_| {
            let (id, _) = registry.register(registration(ResourceKind::Session, "a"));
            registry.remove(id, &ExitReason::Normal);
            id
        })
        .collect();
    let (list, next) = registry.list(&stopped(), None, 100);
    assert_eq!(ids(&list), removed[15..], "the five most recent");
    assert_eq!(next, None);
    assert!(list.iter().all(|i| i.state == LifecycleState::Stopped && i.stopped_at.is_some()));
    assert!(registry.get(removed[0]).is_none(), "the oldest was dropped");
    assert!(registry.is_empty());
}

#[test]
fn stopped_entries_past_their_retention_leave_at_the_next_list() {
    let registry = registry_with(Duration::ZERO, 5);
    let (id, _) = registry.register(registration(ResourceKind::Session, "a"));
    registry.remove(id, &ExitReason::Normal);
    assert!(eventually_sync(|| registry.list(&stopped(), None, 100).0.is_empty()));
    assert!(registry.get(id).is_none());
}

/// Retention is measured on the wall clock; a list call in the same nanosecond as the removal
/// keeps the entry, so allow a few calls.
fn eventually_sync(mut cond: impl FnMut() -> bool) -> bool {
    (0..1000).any(|_| cond())
}

#[actix_rt::test]
async fn events_tell_started_and_stopped_with_the_reason() {
    let registry = Registry::with_defaults();
    let mut events = registry.subscribe();
    let (id, addr) = crate::start_unsupervised(&registry, ResourceKind::Consumer, "quiet", |rcx| {
        Quiet { rcx, incarnations: Arc::default() }
    });
    addr.send(StopResource { reason: ExitReason::Normal }).await.unwrap();
    let mut seen = Vec::new();
    assert!(
        eventually(WITHIN, || {
            while let Ok(event) = events.try_recv() {
                seen.push(event);
            }
            seen.len() >= 2
        })
        .await
    );
    let summary: Vec<(EventKind, ResourceId, ResourceKind, Option<ExitReason>)> =
        seen.into_iter().map(|e| (e.event, e.id, e.kind, e.exit_reason)).collect();
    assert_eq!(
        summary,
        [
            (EventKind::Started, id, ResourceKind::Consumer, None),
            (EventKind::Stopped, id, ResourceKind::Consumer, Some(ExitReason::Normal)),
        ]
    );
}

#[test]
fn lifecycle_transitions_follow_the_state_machine() {
    use LifecycleState::{Restarting, Running, Starting, Stopped, Stopping};
    let all = [Starting, Running, Restarting, Stopping, Stopped];
    for s in all {
        assert!(s.can_become(s), "staying in {s} is allowed");
        assert_eq!(s.to_string().parse::<LifecycleState>(), Ok(s));
    }
    for next in [Starting, Running, Restarting, Stopping] {
        assert!(!Stopped.can_become(next), "stopped is final, not {next}");
    }
    assert!(Starting.can_become(Running));
    assert!(Running.can_become(Stopping));
    assert!(Stopping.can_become(Stopped));
    assert!(Stopping.can_become(Restarting));
    assert!(Restarting.can_become(Starting));
    assert!(!Running.can_become(Starting));
    assert!(!Stopping.can_become(Running));
    assert!(!Restarting.can_become(Running));
    assert!("bogus".parse::<LifecycleState>().is_err());
}

#[test]
fn resource_ids_render_as_16_hex_digits_and_parse_back() {
    for _ in 0..3 {
        let id = ResourceId::next();
        let text = id.to_string();
        assert_eq!(text.len(), 16);
        assert!(text.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{text}");
        assert_eq!(text.parse::<ResourceId>(), Ok(id));
    }
    assert_eq!("0000000000000007".parse::<ResourceId>().map(ResourceId::as_u64), Ok(7));
    let error = Err(ParseError("resource id must be 16 hex digits"));
    for bad in
        ["", "7", "000000000000007", "00000000000000007", "zzzzzzzzzzzzzzzz", "-00000000000000f"]
    {
        assert_eq!(bad.parse::<ResourceId>(), error, "{bad:?}");
    }
}

#[test]
fn resource_ids_with_a_sign_are_refused() {
    assert!("+00000000000000f".parse::<ResourceId>().is_err());
}

#[test]
fn resource_kinds_parse_from_their_names() {
    for kind in ResourceKind::ALL {
        assert_eq!(kind.as_str().parse::<ResourceKind>(), Ok(kind));
        assert_eq!(ResourceKind::ALL[kind.index()], kind);
    }
    let names: Vec<&str> = ResourceKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "browser", "session", "producer", "consumer", "socket", "peer", "stream", "room",
            "service"
        ]
    );
    let err = "bogus".parse::<ResourceKind>().unwrap_err();
    assert!(err.to_string().contains("browser, session"), "{err}");
}

#[test]
fn only_normal_shutdown_and_idle_exits_are_normal() {
    let cases = [
        (ExitReason::Normal, false),
        (ExitReason::Shutdown, false),
        (ExitReason::Idle, false),
        (ExitReason::error("boom"), true),
        (ExitReason::Killed, true),
        (ExitReason::Panic, true),
        (ExitReason::Abnormal, true),
    ];
    for (reason, abnormal) in cases {
        assert_eq!(reason.is_abnormal(), abnormal, "{reason}");
    }
    assert_eq!(ExitReason::error("boom").to_string(), "error: boom");
}

#[test]
fn tenant_usage_follows_register_and_remove() {
    let registry = Registry::with_defaults();
    let reg = |kind, tenant: Option<&str>| Registration {
        kind,
        name: "t".into(),
        tenant: tenant.map(Into::into),
        parent: None,
    };
    let (a, _) = registry.register(reg(ResourceKind::Socket, Some("acme")));
    let (b, _) = registry.register(reg(ResourceKind::Socket, Some("acme")));
    let (c, _) = registry.register(reg(ResourceKind::Producer, Some("acme")));
    let (d, _) = registry.register(reg(ResourceKind::Socket, Some("other")));
    let (e, _) = registry.register(reg(ResourceKind::Service, None));
    let usage = registry.tenant_usage("acme");
    assert_eq!(usage[ResourceKind::Socket.index()], (ResourceKind::Socket, 2));
    assert_eq!(usage[ResourceKind::Producer.index()], (ResourceKind::Producer, 1));
    assert_eq!(registry.ids_of_tenant("acme"), {
        let mut v = vec![a, b, c];
        v.sort_unstable();
        v
    });
    assert_eq!(registry.tenants_usage().len(), 2);
    for id in [a, b, c, d, e] {
        registry.remove(id, &ExitReason::Normal);
    }
    assert!(registry.tenant_usage("acme").iter().all(|(_, n)| *n == 0));
    assert!(registry.tenants_usage().is_empty(), "tenants with nothing live are forgotten");
    assert!(registry.ids_of_tenant("acme").is_empty());
}
