//! Sockets spread over several arbiters (`[socket] arbiters`) and the closing handshake on the
//! wire (RFC 6455 §7.1.1): a client's close completes at once, a server's close waits for the
//! client's answer for at most `close_timeout`, and one job's updates reach every socket in order
//! whichever arbiter it runs on.

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::sockets::{
    Ws, authed, close_code, connect, create_job, live_sockets, next_json, send, tenant,
};
use crate::support::{Steward, WITHIN, eventually};
use steward_proto::jobs::v1 as jobs;
use steward_proto::jobs::v1::jobs_client::JobsClient;

/// Reads the raw connection under `ws` until the server closes it (EOF, or a reset); how long
/// that took.
async fn until_tcp_closed(ws: Ws) -> Duration {
    let MaybeTlsStream::Plain(mut tcp) = ws.into_inner() else { panic!("a plain connection") };
    let t0 = Instant::now();
    let mut buf = [0u8; 1024];
    let read = async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(WITHIN, read).await.expect("the server closes the connection");
    t0.elapsed()
}

#[tokio::test]
async fn a_clients_close_completes_at_once_and_the_server_closes_tcp_first() {
    let s = Steward::start(&[("STEWARD__SOCKET__ARBITERS", "2")]).await;
    let token = tenant(&s, "acme").await;
    let mut took = Vec::new();
    for _ in 0..10 {
        let mut ws = connect(&s, &token).await;
        send(&mut ws, json!({"type": "ping", "id": 1})).await;
        assert_eq!(next_json(&mut ws).await["type"], "pong");
        let t0 = Instant::now();
        let bye = CloseFrame { code: CloseCode::Normal, reason: "bye".into() };
        ws.send(Message::Close(Some(bye))).await.unwrap();
        assert_eq!(close_code(&mut ws, WITHIN).await.map(|c| c.0), Some(1000), "echoed");
        until_tcp_closed(ws).await;
        took.push(t0.elapsed());
    }
    took.sort();
    // before, actix-http lingered 1 s after the handshake, waiting for the client to drop TCP
    // while the client waited for the server to (RFC 6455 §7.1.1)
    assert!(took[took.len() / 2] < Duration::from_millis(50), "median close {took:?}");
    assert!(took[took.len() - 1] < Duration::from_millis(500), "slowest close {took:?}");
    assert!(eventually(WITHIN, || async { live_sockets(&s).await.is_empty() }).await);
}

#[tokio::test]
async fn a_servers_close_waits_for_the_answer_at_most_close_timeout() {
    let s = Steward::start(&[
        ("STEWARD__IDLE__SOCKET", "300ms"),
        ("STEWARD__SOCKET__CLOSE_TIMEOUT", "3s"),
    ])
    .await;
    let token = tenant(&s, "acme").await;

    // a client that answers the server's Close: the server shuts the connection down as soon as
    // the answer arrives, long before close_timeout
    let mut ws = connect(&s, &token).await;
    assert_eq!(next_json(&mut ws).await["code"], "idle_timeout");
    assert_eq!(close_code(&mut ws, WITHIN).await.map(|c| c.0), Some(4000));
    // tungstenite queued its answer as it read the Close: write it out
    let _ = ws.flush().await;
    let answered = until_tcp_closed(ws).await;
    assert!(answered < Duration::from_millis(1500), "answered close took {answered:?}");

    // a client that never answers: the raw connection, read but never written to. The server's
    // Close comes at the idle timeout (300 ms after the upgrade at the earliest) and the
    // connection ends close_timeout (3 s) after it: never before 3.3 s from the connect, however
    // late this client gets to read (a late reader only sees it later)
    let t0 = Instant::now();
    let ws = connect(&s, &token).await;
    let MaybeTlsStream::Plain(mut tcp) = ws.into_inner() else { panic!("a plain connection") };
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    let read = async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return t0.elapsed(),
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    };
    let ended = tokio::time::timeout(WITHIN, read).await.expect("the server drops it");
    // 0x88: FIN + opcode Close (server frames are unmasked; the notice before it is JSON text)
    assert!(seen.contains(&0x88), "a Close frame came first");
    assert!(ended >= Duration::from_millis(3250), "dropped before close_timeout: {ended:?}");
    assert!(ended < Duration::from_secs(8), "dropped long after close_timeout: {ended:?}");
    assert!(eventually(WITHIN, || async { live_sockets(&s).await.is_empty() }).await);
}

#[tokio::test]
async fn one_jobs_updates_reach_sockets_on_every_arbiter_in_order() {
    let s = Steward::start(&[("STEWARD__SOCKET__ARBITERS", "3")]).await;
    let token = tenant(&s, "acme").await;
    let job = create_job(&s, &token).await;
    // consecutive sockets are placed on consecutive arbiters
    let mut sockets = Vec::new();
    for i in 0..12 {
        let mut ws = connect(&s, &token).await;
        send(&mut ws, json!({"type": "subscribe", "job": job, "id": i})).await;
        assert_eq!(next_json(&mut ws).await["type"], "subscribed");
        sockets.push(ws);
    }
    let mut worker = JobsClient::connect(s.grpc.clone()).await.unwrap();
    for p in 1..=50 {
        let req = jobs::UpdateJobRequest {
            id: job.clone(),
            status: Some(jobs::JobStatus::Running.into()),
            progress: Some(p),
            data: None,
        };
        worker.update_job(authed(&token, req)).await.unwrap();
    }
    for ws in &mut sockets {
        let mut got = Vec::new();
        while got.len() < 50 {
            let v = next_json(ws).await;
            assert_eq!(v["type"], "job", "{v}");
            got.push(v["progress"].as_u64().unwrap());
        }
        assert_eq!(got, (1..=50).collect::<Vec<u64>>(), "in order on every socket");
    }
    for mut ws in sockets {
        let _ = ws.close(None).await;
    }
    assert!(eventually(WITHIN, || async { live_sockets(&s).await.is_empty() }).await);
}
