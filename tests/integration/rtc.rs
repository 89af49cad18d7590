//! WebRTC rooms (`GET /v1/rtc`, `docs/protocol/rtc.md`) against the real binary, with real
//! webrtc-rs client peers (`rtc_client`): media and data flow through the SFU, bad input gets
//! its typed error and disturbs nothing, every fault ends in a typed close, and nothing of a
//! peer or a room outlives it.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::rtc_client::RtcClient;
use crate::sockets::metric;
use crate::support::{Steward, WITHIN, eventually};

/// The settings every RTC test runs with: loopback UDP ports of their own per process, short
/// deadlines.
pub(crate) fn rtc_env(ports: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("STEWARD__RTC__BIND_ADDRESS", "127.0.0.1"),
        ("STEWARD__RTC__UDP_PORTS", ports),
        ("STEWARD__RTC__DEPARTURE_TIMEOUT", "1s"),
        ("STEWARD__RTC__EMPTY_TIMEOUT", "5s"),
    ]
}

/// `ws://…/v1/rtc?token=…` of `s`.
pub(crate) fn rtc_url(s: &Steward, token: &str) -> String {
    format!("{}/v1/rtc?token={token}", s.public.replacen("http://", "ws://", 1))
}

/// A tenant's token.
async fn tenant(s: &Steward, id: &str) -> String {
    s.tenant_with_token(id, None).await.1
}

/// A client joined to `room` as `name`, its connection started (publishing audio or not).
async fn joined(s: &Steward, token: &str, room: &str, name: &str, audio: bool) -> RtcClient {
    let c = RtcClient::connect(&rtc_url(s, token)).await.expect("upgrade");
    c.join(room, name).await.expect("joined");
    c.start(audio).await.expect("offer/answer");
    if let Err(e) = c.wait_connected(WITHIN).await {
        let log: Vec<String> = s
            .dump()
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("rtc"))
            .map(str::to_owned)
            .collect();
        panic!("{name} in {room}: {e}; got {:?}\n{}", kinds(&c.messages()), log.join("\n"));
    }
    c
}

fn kinds(messages: &[Value]) -> Vec<String> {
    messages.iter().map(|m| m["type"].as_str().unwrap_or_default().to_owned()).collect()
}

#[tokio::test]
async fn two_peers_exchange_audio_and_data_messages_through_the_room() {
    let s = Steward::start(&rtc_env("41000-41019")).await;
    let token = tenant(&s, "acme").await;
    let bob = joined(&s, &token, "standup", "bob", false).await;
    let alice = joined(&s, &token, "standup", "alice", true).await;

    // alice's audio (50 packets/s): bob is told of her track, and the server re-offers it to him
    let sent = alice.start_audio().await.unwrap();
    let published = bob.next_message_of_type("track_published", WITHIN).await.unwrap();
    assert_eq!(published["kind"], "audio");
    let got = bob.wait_rtp(50, WITHIN).await.unwrap();
    alice.stop_audio();
    assert!(sent.load(std::sync::atomic::Ordering::Relaxed) >= 50);
    assert!(got >= 50, "bob received {got} RTP packets");

    for i in 0..5 {
        alice.send_data(format!("m{i}").as_bytes()).await.unwrap();
    }
    let data = bob.wait_data(5, WITHIN).await.unwrap();
    assert_eq!(data.len(), 5);
    bob.send_data(b"hi").await.unwrap();
    assert_eq!(alice.wait_data(1, WITHIN).await.unwrap()[0].as_ref(), b"hi");

    let peers = s.resources("?kind=peer").await;
    assert_eq!(peers.len(), 2, "{peers:?}");
    assert_eq!(metric(&s, "steward_rtc_peer_connections_live").await, 2.0);
    assert_eq!(metric(&s, "steward_rtc_rooms").await, 1.0);

    alice.leave().unwrap();
    let left = bob.next_message_of_type("participant_left", WITHIN).await.unwrap();
    assert_eq!(left["reason"], "client_leave");
    bob.close().await.unwrap();
    assert!(
        eventually(WITHIN, || async { s.resources("?kind=peer").await.is_empty() }).await,
        "{}",
        s.dump()
    );
    assert!(
        eventually(WITHIN, || async {
            metric(&s, "steward_rtc_peer_connections_live").await == 0.0
                && metric(&s, "steward_rtc_rooms").await == 0.0
        })
        .await
    );
    let alice_closing = alice.messages_of_type("closing");
    assert_eq!(alice_closing[0]["reason"], "client_leave", "{:?}", kinds(&alice.messages()));
    drop(alice);
    let _ = json!({});
}

/// An offer for one data channel that no client will ever complete: a real shape, made-up ICE
/// credentials and fingerprint, and no candidates.
fn dead_end_offer() -> String {
    let fingerprint = (0..32).map(|i| format!("{i:02X}")).collect::<Vec<_>>().join(":");
    [
        "v=0",
        "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0",
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
        "c=IN IP4 0.0.0.0",
        "a=ice-ufrag:deadbeef",
        "a=ice-pwd:deadbeefdeadbeefdeadbeef",
        &format!("a=fingerprint:sha-256 {fingerprint}"),
        "a=setup:actpass",
        "a=mid:0",
        "a=sctp-port:5000",
        "",
    ]
    .join("\r\n")
}

fn host_candidate(port: u16) -> Value {
    json!({
        "candidate": format!("candidate:{port} 1 udp 2130706431 127.0.0.1 {port} typ host"),
        "sdpMid": "0",
        "sdpMLineIndex": 0,
    })
}

#[tokio::test]
async fn bad_input_gets_its_typed_error_and_disturbs_nothing() {
    let s = Steward::start(&rtc_env("41020-41039")).await;
    let token = tenant(&s, "acme").await;
    let other = tenant(&s, "globex").await;
    let bob = joined(&s, &token, "standup", "bob", false).await;
    let alice = joined(&s, &token, "standup", "alice", false).await;

    // each refusal is a typed error on alice's socket, which stays open
    let expect = |code: &'static str| {
        let alice = &alice;
        async move {
            let e = alice.next_message_of_type("error", WITHIN).await.unwrap();
            assert_eq!(e["code"], code, "{e}");
        }
    };
    alice.send_raw_text("not json").unwrap();
    expect("bad_request").await;
    alice.send_raw_json(&json!({"type": "offer", "sdp": "v=0 garbage"})).unwrap();
    expect("malformed_sdp").await;
    alice.send_raw_json(&json!({"type": "answer", "sdp": dead_end_offer()})).unwrap();
    expect("wrong_state").await;
    alice.send_raw_json(&json!({"type": "offer", "sdp": "a".repeat(50 * 1024)})).unwrap();
    expect("malformed_sdp").await;
    alice.send_raw_json(&json!({"type": "join", "room": "other"})).unwrap();
    expect("already_joined").await;
    alice.send_raw_json(&json!({"type": "join", "room": "../etc"})).unwrap();
    expect("bad_request").await;

    // candidates past the cap (50): refused one by one, counted (sent under the socket's
    // rate limit, 50 events/s)
    let before = alice.messages_of_type("error").len();
    for port in 0..55u16 {
        alice
            .send_raw_json(&json!({"type": "candidate", "candidate": host_candidate(9000 + port)}))
            .unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!(
        eventually(WITHIN, || async {
            alice
                .messages_of_type("error")
                .iter()
                .skip(before)
                .any(|e| e["code"] == "too_many_candidates")
        })
        .await,
        "{:?}",
        alice.messages()
    );
    assert!(metric(&s, "steward_rtc_candidates_refused_total{why=\"too_many\"}").await >= 1.0);

    // an oversize frame closes that socket (1009) and ends only its peer
    let mallory = RtcClient::connect(&rtc_url(&s, &token)).await.unwrap();
    mallory.join("standup", "mallory").await.unwrap();
    mallory.send_raw_text(&"x".repeat(2 * 1024 * 1024)).unwrap();
    let closed = mallory.wait_ws_closed(WITHIN).await.unwrap();
    assert_eq!(closed.map(|c| c.0), Some(1009));
    let left = bob.next_message_of_type("participant_left", WITHIN).await.unwrap();
    assert_eq!(left["reason"], "signaling_lost", "{left}");

    // another tenant's room of the same name is another room
    let eve = RtcClient::connect(&rtc_url(&s, &other)).await.unwrap();
    let eve_joined = eve.join("standup", "eve").await.unwrap();
    assert!(eve_joined.participants.is_empty(), "{:?}", eve_joined.participants);
    assert!(bob.messages_of_type("participant_joined").iter().all(|m| m["name"] != "eve"));

    // nothing else was disturbed: alice's socket is open and data still flows both ways
    assert!(!alice.ws_ended());
    alice.send_data(b"still here").await.unwrap();
    assert_eq!(bob.wait_data(1, WITHIN).await.unwrap()[0].as_ref(), b"still here");
    assert_eq!(s.resources("?kind=peer").await.len(), 3, "bob, alice, eve");
    for c in [bob, alice, eve] {
        c.close().await.unwrap();
    }
    drop(mallory);
}

/// Short deadlines for the fault tests.
fn fault_env(ports: &'static str) -> Vec<(&'static str, &'static str)> {
    let mut env = rtc_env(ports);
    env.extend([
        ("STEWARD__RTC__JOIN_TIMEOUT", "2s"),
        ("STEWARD__RTC__NEGOTIATION_TIMEOUT", "2s"),
        ("STEWARD__RTC__ICE_TIMEOUT", "3s"),
        ("STEWARD__RTC__DISCONNECTED_GRACE", "2s"),
    ]);
    env
}

/// The `closing` frame a client got, then its socket's close code.
async fn closing_of(c: &RtcClient) -> (String, bool, Option<u16>) {
    let closing = c.next_message_of_type("closing", WITHIN).await.unwrap();
    let code = c.wait_ws_closed(WITHIN).await.unwrap().map(|c| c.0);
    (closing["reason"].as_str().unwrap().to_owned(), closing["reconnect"] == true, code)
}

#[tokio::test]
async fn every_fault_ends_its_peer_with_its_typed_reason() {
    let s = Steward::start(&fault_env("41040-41059")).await;
    let token = tenant(&s, "acme").await;

    // never joins
    let idle = RtcClient::connect(&rtc_url(&s, &token)).await.unwrap();
    // joins, never offers
    let mute = RtcClient::connect(&rtc_url(&s, &token)).await.unwrap();
    mute.join("faults", "mute").await.unwrap();
    // offers, and its ICE never connects
    let deaf = RtcClient::connect(&rtc_url(&s, &token)).await.unwrap();
    deaf.join("faults", "deaf").await.unwrap();
    deaf.send_raw_json(&json!({"type": "offer", "sdp": dead_end_offer()})).unwrap();
    deaf.next_message_of_type("answer", WITHIN).await.unwrap();

    assert_eq!(closing_of(&idle).await, ("join_timeout".into(), false, Some(1000)));
    assert_eq!(closing_of(&mute).await, ("negotiation_timeout".into(), true, Some(1000)));
    assert_eq!(closing_of(&deaf).await, ("ice_failed".into(), true, Some(1000)));

    // a connected client that closes its connection (its socket stays) is closed as
    // disconnected; one whose media goes silent (no DTLS close: its UDP socket is gone) too,
    // after ICE notices and the grace (2 s) passes; one whose signaling socket drops (TCP) is
    // gone as signaling_lost
    let watcher = joined(&s, &token, "calls", "watcher", false).await;
    let quitter = joined(&s, &token, "calls", "quitter", false).await;
    let vanisher = joined(&s, &token, "calls", "vanisher", false).await;
    let freezer = joined(&s, &token, "calls", "freezer", false).await;
    quitter.close_pc().await.unwrap();
    assert_eq!(closing_of(&quitter).await.0, "disconnected");
    vanisher.drop_tcp();
    let frozen = std::time::Instant::now();
    freezer.freeze();
    assert_eq!(closing_of(&freezer).await.0, "disconnected");
    assert!(
        frozen.elapsed() >= Duration::from_secs(2),
        "not before the grace: {:?}",
        frozen.elapsed()
    );
    let mut reasons = Vec::new();
    for _ in 0..3 {
        let left = watcher.next_message_of_type("participant_left", WITHIN).await.unwrap();
        reasons.push(left["reason"].as_str().unwrap().to_owned());
    }
    reasons.sort();
    assert_eq!(reasons, ["disconnected", "disconnected", "signaling_lost"]);

    watcher.close().await.unwrap();
    assert!(
        eventually(WITHIN, || async {
            s.resources("?kind=peer").await.is_empty()
                && metric(&s, "steward_rtc_peer_connections_live").await == 0.0
        })
        .await,
        "{}",
        s.dump()
    );
    for (reason, at_least) in [
        ("join_timeout", 1.0),
        ("negotiation_timeout", 1.0),
        ("ice_failed", 1.0),
        ("disconnected", 1.0),
        ("signaling_lost", 1.0),
    ] {
        let series = format!("steward_rtc_peer_closes_total{{reason=\"{reason}\"}}");
        assert!(metric(&s, &series).await >= at_least, "{series}");
    }
    freezer.close().await.unwrap();
    drop((idle, mute, deaf, quitter, vanisher));
}

#[tokio::test]
async fn sigterm_with_20_connected_peers_tells_every_one_and_exits_0() {
    let mut s = Steward::start(&rtc_env("41060-41089")).await;
    let token = tenant(&s, "acme").await;
    let mut clients = Vec::new();
    for i in 0..20 {
        let room = if i % 2 == 0 { "even" } else { "odd" };
        clients.push(joined(&s, &token, room, &format!("p{i}"), false).await);
    }
    assert_eq!(metric(&s, "steward_rtc_peer_connections_live").await, 20.0);
    s.signal(nix::sys::signal::Signal::SIGTERM);
    let mut told = std::collections::BTreeMap::new();
    for c in &clients {
        *told.entry(closing_of(c).await).or_insert(0) += 1;
    }
    assert_eq!(
        told,
        std::collections::BTreeMap::from([(("shutdown".to_owned(), true, Some(1001)), 20)])
    );
    let status = s.wait_exit(Duration::from_secs(40)).await.expect("steward exits");
    assert!(status.success(), "{status:?}\n{}", s.dump());
    let report = s.find_message("shutdown complete").expect("the shutdown report");
    assert_eq!(report["forced"], 0, "{report}");
    for c in clients {
        c.close().await.unwrap();
    }
}

/// Everything a peer or room can leave behind in the server, read at once.
#[derive(Debug, PartialEq)]
struct Leftovers {
    peers: usize,
    rooms: f64,
    connections: f64,
    webrtc_tasks: f64,
    free_ports: f64,
    tasks: f64,
    timers: f64,
    orphans: f64,
}

async fn leftovers(s: &Steward) -> Leftovers {
    Leftovers {
        peers: s.resources("?kind=peer").await.len(),
        rooms: metric(s, "steward_rtc_rooms").await,
        connections: metric(s, "steward_rtc_peer_connections_live").await,
        webrtc_tasks: metric(s, "steward_rtc_tasks_live").await,
        free_ports: metric(s, "steward_rtc_free_udp_ports").await,
        tasks: crate::sockets::tracked(s, "task").await,
        timers: crate::sockets::tracked(s, "timer").await,
        orphans: metric(s, "steward_orphaned_handles").await,
    }
}

/// One call: a listener and a publisher join a room, the listener hears the publisher's audio
/// and gets a data message, then both go (the publisher leaves, the listener closes).
async fn call(s: &Steward, token: &str, room: &str) {
    let listener = joined(s, token, room, "listener", false).await;
    let publisher = joined(s, token, room, "publisher", true).await;
    let _sending = publisher.start_audio().await.unwrap();
    if let Err(e) = listener.wait_rtp(3, WITHIN).await {
        panic!(
            "the listener hears the publisher: {e}; listener got {:?}, errors {:?}; publisher got {:?}",
            kinds(&listener.messages()),
            listener.negotiation_errors(),
            kinds(&publisher.messages())
        );
    }
    publisher.send_data(b"bye").await.unwrap();
    listener.wait_data(1, WITHIN).await.unwrap();
    publisher.stop_audio();
    publisher.leave().unwrap();
    publisher.wait_ws_closed(WITHIN).await.unwrap();
    publisher.close().await.unwrap();
    listener.close().await.unwrap();
}

#[tokio::test]
async fn churn_of_500_calls_with_tracks_leaves_nothing_behind() {
    let _cpu = crate::support::exclusive().await;
    let s = Steward::start(&rtc_env("41300-41399")).await;
    let token = tenant(&s, "acme").await;
    s.request(reqwest::Method::PATCH, "/v1/tenants/acme")
        .json(&json!({"quotas": {"peers": 100}}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    // calls first, 10 at a time as below, so that what is created once per process (and the
    // allocator's arenas of every thread) exists in the baseline
    let warmup = (0..20).map(|i| {
        let (s, token) = (&s, &token);
        async move { call(s, token, &format!("warmup-{i}")).await }
    });
    futures_util::stream::iter(warmup).buffer_unordered(10).collect::<Vec<_>>().await;
    assert!(eventually(WITHIN, || async { leftovers(&s).await.rooms == 0.0 }).await);
    let base = leftovers(&s).await;
    let base_fds = crate::sockets::server_fds(&s);
    let base_rss = crate::sockets::server_rss(&s);

    // 500 join/publish/leave cycles: 500 calls of two peers (1000 peers, 500 publishing), 10
    // at a time
    let calls = (0..500).map(|i| {
        let (s, token) = (&s, &token);
        async move { call(s, token, &format!("churn-{i}")).await }
    });
    futures_util::stream::iter(calls).buffer_unordered(10).collect::<Vec<_>>().await;

    let settled = eventually(Duration::from_secs(30), || async {
        leftovers(&s).await == base && crate::sockets::server_fds(&s) <= base_fds
    })
    .await;
    assert!(
        settled,
        "{:?} (baseline {base:?}); fds {} (baseline {base_fds}): {:?}",
        leftovers(&s).await,
        crate::sockets::server_fds(&s),
        crate::sockets::server_fd_targets(&s)
    );
    assert_eq!(base.peers, 0);
    assert_eq!(base.connections, 0.0);
    assert_eq!(base.webrtc_tasks, 0.0);
    assert!(metric(&s, "steward_rtc_peer_closes_total{reason=\"client_leave\"}").await >= 500.0);
    let grown = crate::sockets::server_rss(&s).saturating_sub(base_rss);
    eprintln!("500 calls (1000 peers) of churn: RSS grew {grown} bytes");
    assert!(grown < 10 * 1024 * 1024, "RSS grew {grown} bytes");
    assert_eq!(crate::rtc_client::live_handlers(), 0, "the clients freed theirs too");
}

#[tokio::test]
async fn a_receiver_whose_buffer_is_full_loses_data_messages_counted_and_nothing_waits() {
    let mut env = rtc_env("41200-41219");
    env.extend([
        ("STEWARD__RTC__DATA_CHANNEL_BUFFER", "4KiB"),
        ("STEWARD__RTC__MAX_DATA_MESSAGE", "1KiB"),
    ]);
    let s = Steward::start(&env).await;
    let token = tenant(&s, "acme").await;
    let bob = joined(&s, &token, "burst", "bob", false).await;
    let alice = joined(&s, &token, "burst", "alice", false).await;
    let message = vec![7u8; 1000];
    for _ in 0..300 {
        alice.send_data(&message).await.unwrap();
    }
    // one over max_data_message is not forwarded at all
    alice.send_data(&vec![8u8; 2000]).await.unwrap();
    let outcomes = || async {
        (
            metric(&s, "steward_rtc_data_messages_total{outcome=\"forwarded\"}").await,
            metric(&s, "steward_rtc_data_messages_total{outcome=\"dropped\"}").await,
        )
    };
    assert!(
        eventually(WITHIN, || async {
            let (forwarded, dropped) = outcomes().await;
            forwarded + dropped == 301.0
        })
        .await,
        "{:?}",
        outcomes().await
    );
    let (forwarded, dropped) = outcomes().await;
    assert!(dropped >= 2.0, "a 4 KiB buffer cannot take a 300 KiB burst: {forwarded} {dropped}");
    assert!(
        eventually(WITHIN, || async { bob.data_received().len() as f64 == forwarded }).await,
        "bob got {} of {forwarded}",
        bob.data_received().len()
    );
    assert!(bob.data_received().iter().all(|m| m.len() == 1000));
    // the call goes on
    bob.send_data(b"ok").await.unwrap();
    assert_eq!(alice.wait_data(1, WITHIN).await.unwrap()[0].as_ref(), b"ok");
    bob.close().await.unwrap();
    alice.close().await.unwrap();
}

#[tokio::test]
async fn a_tenant_cannot_aim_candidates_at_the_host_nor_hoard_the_nodes_rooms() {
    // bound beyond loopback, as in production: loopback candidates are refused
    let mut env = rtc_env("41220-41239");
    env.retain(|(k, _)| *k != "STEWARD__RTC__BIND_ADDRESS");
    env.push(("STEWARD__RTC__BIND_ADDRESS", "0.0.0.0"));
    let s = Steward::start(&env).await;
    let token = tenant(&s, "acme").await;
    let c = RtcClient::connect(&rtc_url(&s, &token)).await.unwrap();
    c.join("walls", "c").await.unwrap();
    for (ip, port) in [("127.0.0.1", 9090), ("169.254.169.254", 80), ("224.0.0.251", 5353)] {
        let candidate = format!("candidate:1 1 udp 2130706431 {ip} {port} typ host");
        c.send_raw_json(&json!({"type": "candidate", "candidate": {"candidate": candidate, "sdpMid": "0", "sdpMLineIndex": 0}}))
            .unwrap();
        let e = c.next_message_of_type("error", WITHIN).await.unwrap();
        assert_eq!(e["code"], "bad_request", "{e}");
        assert!(e["message"].as_str().unwrap().contains(ip), "{e}");
    }
    assert_eq!(metric(&s, "steward_rtc_candidates_refused_total{why=\"address\"}").await, 3.0);
    c.close().await.unwrap();

    // a tenant holds at most its `peers` quota of rooms: an emptied room lingers
    // (departure_timeout), so joining room after room could otherwise fill the node
    let small = s.tenant_with_token("small", None).await.1;
    s.request(reqwest::Method::PATCH, "/v1/tenants/small")
        .json(&json!({"quotas": {"peers": 2}}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let a = RtcClient::connect(&rtc_url(&s, &small)).await.unwrap();
    a.join("a", "a").await.unwrap();
    let b = RtcClient::connect(&rtc_url(&s, &small)).await.unwrap();
    b.join("b", "b").await.unwrap();
    a.leave().unwrap();
    a.wait_ws_closed(WITHIN).await.unwrap();
    let c = RtcClient::connect(&rtc_url(&s, &small)).await.unwrap();
    let refused = c.join("c", "c").await.unwrap_err().to_string();
    assert!(refused.contains("quota_exceeded"), "{refused}");
    // its own rooms are still open to it, and once "a" is gone a new one may start
    c.join("b", "c").await.unwrap();
    b.close().await.unwrap();
    c.close().await.unwrap();
}
