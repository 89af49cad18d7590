//! WebRTC rooms (`GET /v1/rtc`, `docs/protocol/rtc.md`) against the real binary, with real
//! webrtc-rs client peers (`rtc_client`): media and data flow through the SFU, bad input gets
//! its typed error and disturbs nothing, every fault ends in a typed close, and nothing of a
//! peer or a room outlives it.

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
    c.wait_connected(WITHIN).await.expect("connected");
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
