//! Two participants of a Steward WebRTC room (`GET /v1/rtc`, `docs/protocol/rtc.md`), with the
//! webrtc-rs client of the tests (`tests/integration/rtc_client.rs`): `alice` joins room
//! `example` with a data channel only, `bob` joins it publishing one Opus audio track. Bob sends
//! 50 packets a second and three data-channel messages; the example prints what alice
//! receives through the SFU (RTP packets, messages, and her message back to bob), then waits for
//! Ctrl-C or the server's `closing` (stop the server with SIGTERM to see `closing {reason:
//! shutdown, reconnect: true}`), and leaves.
//!
//! Run it against a running Steward (with `[rtc] bind_address` reachable from here, e.g.
//! `STEWARD__RTC__BIND_ADDRESS=127.0.0.1` for a local one) with one of a tenant's API tokens:
//!
//! ```sh
//! STEWARD_TOKEN=stw_… cargo run --example rtc
//! ```
//!
//! `STEWARD_PUBLIC` points it at another public listener (default `http://127.0.0.1:8080`),
//! `STEWARD_ROOM` at another room (default `example`). It exits 0 after Ctrl-C or the server's
//! `closing`, 1 on any error.
#![allow(clippy::print_stdout)]

#[path = "../tests/integration/rtc_client.rs"]
mod rtc_client;

use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use crate::rtc_client::RtcClient;

/// How long each step may take.
const STEP: Duration = Duration::from_secs(20);

/// A client joined to `room` as `name` and connected, publishing audio or not.
async fn participant(url: &str, room: &str, name: &str, audio: bool) -> Result<RtcClient> {
    let client = RtcClient::connect(url).await.with_context(|| format!("{name}: upgrade"))?;
    let joined = client.join(room, name).await?;
    println!(
        "{name}: joined {} as {} ({} already there)",
        joined.room,
        joined.peer_id,
        joined.participants.len()
    );
    client.start(audio).await?;
    client.wait_connected(STEP).await.with_context(|| format!("{name}: connecting"))?;
    println!("{name}: connected (ICE, DTLS and the data channel are up)");
    Ok(client)
}

/// The next `closing` of either client (it comes right before the server closes the socket).
async fn closing(alice: &RtcClient, bob: &RtcClient) -> Result<()> {
    let forever = Duration::from_secs(365 * 24 * 3600);
    let (who, closing) = tokio::select! {
        c = alice.next_message_of_type("closing", forever) => ("alice", c?),
        c = bob.next_message_of_type("closing", forever) => ("bob", c?),
    };
    println!("{who}: closing {closing}");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let token = std::env::var("STEWARD_TOKEN").context("set STEWARD_TOKEN to an API token")?;
    let public = std::env::var("STEWARD_PUBLIC").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let room = std::env::var("STEWARD_ROOM").unwrap_or_else(|_| "example".into());
    let base = public.replacen("https://", "wss://", 1).replacen("http://", "ws://", 1);
    let url = format!("{}/v1/rtc?token={token}", base.trim_end_matches('/'));

    // 1. alice listens; bob publishes audio (the server re-offers his track to alice)
    let alice = participant(&url, &room, "alice", false).await?;
    let bob = participant(&url, &room, "bob", true).await?;
    let sent = bob.start_audio().await?;
    let published = alice.next_message_of_type("track_published", STEP).await?;
    println!("alice: bob publishes {} track {}", published["kind"], published["track_id"]);

    // 2. media: alice receives bob's packets through the SFU
    let got = alice.wait_rtp(100, STEP).await?;
    println!(
        "alice: received {got} RTP packets of bob's audio ({} sent so far, 50/s)",
        sent.load(std::sync::atomic::Ordering::Relaxed)
    );

    // 3. data: three messages from bob, one back from alice
    for i in 1..=3 {
        bob.send_data(format!("hello #{i} from bob").as_bytes()).await?;
    }
    for m in alice.wait_data(3, STEP).await? {
        println!("alice: data message {:?}", String::from_utf8_lossy(&m));
    }
    alice.send_data(b"hi bob, alice here").await?;
    for m in bob.wait_data(1, STEP).await? {
        println!("bob:   data message {:?}", String::from_utf8_lossy(&m));
    }
    println!("media and data flow; waiting for Ctrl-C or the server's `closing`");

    // 4. Ctrl-C, or the server closes the room (a SIGTERM shows `closing {reason: shutdown}`)
    tokio::select! {
        r = tokio::signal::ctrl_c() => {
            r.context("Ctrl-C handler")?;
            println!("Ctrl-C: leaving");
        }
        r = closing(&alice, &bob) => r?,
    }
    println!(
        "alice received {} RTP packets and {} data messages in all",
        alice.rtp_total(),
        alice.data_received().len()
    );
    bob.stop_audio();
    let (a, b) = tokio::join!(alice.close(), bob.close());
    if let Err(e) = a.and(b) {
        // after the server's `closing` the connections are already gone
        if !alice.ws_ended() || !bob.ws_ended() {
            bail!("closing: {e:#}");
        }
    }
    Ok(())
}
