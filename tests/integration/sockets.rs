//! The WebSocket front door (`GET /v1/ws`) against the real binary, with a real WebSocket client
//! (tokio-tungstenite): admission statuses, the protocol, every limit's close code, and that
//! nothing of a socket is left after it closes.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::support::{Steward, WITHIN, eventually};

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// `ws://…/v1/ws` of `s`.
pub(crate) fn ws_url(s: &Steward) -> String {
    format!("{}/v1/ws", s.public.replacen("http://", "ws://", 1))
}

/// Opens a socket with `Authorization: Bearer <token>` (and extra headers).
pub(crate) async fn connect_with(
    s: &Steward,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> Result<Ws, tungstenite::Error> {
    let mut request = ws_url(s).into_client_request().unwrap();
    if let Some(token) = token {
        request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    for (k, v) in headers {
        let name = tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap();
        request.headers_mut().insert(name, v.parse().unwrap());
    }
    tokio_tungstenite::connect_async(request).await.map(|(ws, _)| ws)
}

/// Opens a socket or fails the test.
pub(crate) async fn connect(s: &Steward, token: &str) -> Ws {
    connect_with(s, Some(token), &[]).await.expect("websocket upgrade")
}

/// The HTTP status (and `Retry-After`) of a refused upgrade.
pub(crate) fn refusal(r: Result<Ws, tungstenite::Error>) -> (u16, Option<String>, Value) {
    match r {
        Err(tungstenite::Error::Http(resp)) => {
            let retry = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
            let body = resp
                .body()
                .as_ref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            (resp.status().as_u16(), retry, body)
        }
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("expected an HTTP refusal, the upgrade succeeded"),
    }
}

/// Sends a JSON request.
pub(crate) async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.expect("send");
}

/// The next JSON text frame (protocol pings are answered by tungstenite and skipped).
pub(crate) async fn next_json(ws: &mut Ws) -> Value {
    let read = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => return serde_json::from_str::<Value>(&t).unwrap(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    };
    tokio::time::timeout(WITHIN, read).await.expect("a frame within the deadline")
}

/// Reads until the server's Close frame and returns its code (and reason); `None` when the
/// connection ended without one.
pub(crate) async fn close_code(ws: &mut Ws, within: Duration) -> Option<(u16, String)> {
    let read = async {
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(Message::Close(Some(frame))) => {
                    return Some((u16::from(frame.code), frame.reason.to_string()));
                }
                Ok(Message::Close(None)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
        None
    };
    tokio::time::timeout(within, read).await.expect("the server closes within the deadline")
}

/// Live sockets in the registry.
pub(crate) async fn live_sockets(s: &Steward) -> Vec<Value> {
    s.resources("?kind=socket").await
}

/// A tenant with a token, for socket tests.
pub(crate) async fn tenant(s: &Steward, id: &str) -> String {
    s.tenant_with_token(id, None).await.1
}

/// One line of `/metrics` with this exact series name and labels, as a number.
pub(crate) async fn metric(s: &Steward, series: &str) -> f64 {
    let text = s.get("/metrics").send().await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(series)?;
            rest.strip_prefix("{}").unwrap_or(rest).trim().parse::<f64>().ok()
        })
        .unwrap_or(0.0)
}

#[tokio::test]
async fn an_upgrade_needs_a_valid_token_in_the_header_or_the_query() {
    let s = Steward::start(&[]).await;
    let token = tenant(&s, "acme").await;
    let (status, _, body) = refusal(connect_with(&s, None, &[]).await);
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthenticated");
    let (status, _, _) = refusal(connect_with(&s, Some("stw_0000000000000000_00"), &[]).await);
    assert_eq!(status, 401);

    let url = format!("{}?token={token}", ws_url(&s));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("?token= upgrade");
    send(&mut ws, json!({"type": "ping", "id": 1})).await;
    assert_eq!(next_json(&mut ws).await, json!({"type": "pong", "id": 1}));

    let sockets = live_sockets(&s).await;
    assert_eq!(sockets.len(), 1, "{sockets:?}");
    assert_eq!(sockets[0]["tenant"], "acme");
    assert_eq!(sockets[0]["name"], "127.0.0.1", "the registry names the client IP");
    // not a WebSocket request at all
    let r = s.http.get(format!("{}/v1/ws", s.public)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn bad_requests_get_an_error_and_the_socket_stays_open() {
    let s = Steward::start(&[]).await;
    let token = tenant(&s, "acme").await;
    let mut ws = connect(&s, &token).await;

    ws.send(Message::text("{not json")).await.unwrap();
    let e = next_json(&mut ws).await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("error"), Some("bad_request")),
        "{e}"
    );

    send(&mut ws, json!({"type": "dance", "id": "a"})).await;
    let e = next_json(&mut ws).await;
    assert_eq!((e["code"].as_str(), e["id"].as_str()), (Some("bad_request"), Some("a")), "{e}");

    send(&mut ws, json!({"type": "subscribe", "job": "nope", "id": 2})).await;
    let e = next_json(&mut ws).await;
    assert_eq!((e["code"].as_str(), e["id"].as_i64()), (Some("bad_request"), Some(2)), "{e}");

    let unknown = "0123456789abcdef0123456789abcdef";
    send(&mut ws, json!({"type": "subscribe", "job": unknown, "id": 3})).await;
    let e = next_json(&mut ws).await;
    assert_eq!((e["code"].as_str(), e["id"].as_i64()), (Some("not_found"), Some(3)), "{e}");
    assert_eq!(e["job"], unknown);

    send(&mut ws, json!({"type": "unsubscribe", "job": unknown})).await;
    assert_eq!(next_json(&mut ws).await["code"], "not_found");

    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(next_json(&mut ws).await["code"], "bad_request");

    send(&mut ws, json!({"type": "ping", "id": "still-here"})).await;
    assert_eq!(next_json(&mut ws).await, json!({"type": "pong", "id": "still-here"}));
    assert_eq!(live_sockets(&s).await.len(), 1);

    ws.close(None).await.unwrap();
    assert!(eventually(WITHIN, || async { live_sockets(&s).await.is_empty() }).await);
}

#[tokio::test]
async fn the_per_ip_cap_is_429_with_retry_after_and_forwarded_for_counts_only_from_trusted_proxies()
{
    let s = Steward::start(&[
        ("STEWARD__SOCKET__MAX_PER_IP", "2"),
        ("STEWARD__SOCKET__TRUSTED_PROXIES", "[\"127.0.0.1\"]"),
    ])
    .await;
    let token = tenant(&s, "acme").await;
    let _a = connect(&s, &token).await;
    let _b = connect(&s, &token).await;
    let (status, retry, body) = refusal(connect_with(&s, Some(&token), &[]).await);
    assert_eq!((status, retry.as_deref()), (429, Some("1")));
    assert_eq!(body["error"]["code"], "too_many_connections");

    // through the trusted proxy (loopback), the forwarded client has its own count
    let xff = [("x-forwarded-for", "203.0.113.9, 198.51.100.7")];
    let _c = connect_with(&s, Some(&token), &xff).await.expect("forwarded client 1");
    let _d = connect_with(&s, Some(&token), &xff).await.expect("forwarded client 2");
    let (status, _, _) = refusal(connect_with(&s, Some(&token), &xff).await);
    assert_eq!(status, 429);
    let names: Vec<String> =
        live_sockets(&s).await.iter().map(|r| r["name"].as_str().unwrap().to_owned()).collect();
    assert_eq!(names.iter().filter(|n| *n == "198.51.100.7").count(), 2, "{names:?}");
    assert!(metric(&s, "steward_socket_rejected_total{reason=\"per_ip\"}").await >= 2.0);
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    let s = Steward::start(&[("STEWARD__SOCKET__MAX_PER_IP", "1")]).await;
    let token = tenant(&s, "acme").await;
    let _a = connect(&s, &token).await;
    let (status, _, _) =
        refusal(connect_with(&s, Some(&token), &[("x-forwarded-for", "203.0.113.9")]).await);
    assert_eq!(status, 429, "a spoofed header must not buy a second place");
}

#[tokio::test]
async fn the_node_cap_is_503_and_the_tenant_quota_is_429() {
    let s = Steward::start(&[("STEWARD__SOCKET__MAX_CONNECTIONS", "2")]).await;
    let token = tenant(&s, "acme").await;
    let r = s
        .request(Method::PATCH, "/v1/tenants/acme")
        .json(&json!({"quotas": {"sockets": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let _a = connect(&s, &token).await;
    let (status, retry, body) = refusal(connect_with(&s, Some(&token), &[]).await);
    assert_eq!(status, 429, "{body}");
    assert!(retry.is_some());
    assert_eq!(body["error"]["code"], "quota_exceeded");

    let other = tenant(&s, "globex").await;
    let _b = connect(&s, &other).await;
    let (status, retry, body) = refusal(connect_with(&s, Some(&other), &[]).await);
    assert_eq!((status, retry.as_deref()), (503, Some("1")), "{body}");
    assert_eq!(body["error"]["code"], "node_full");
}

#[tokio::test]
async fn sustained_abuse_of_the_rate_limit_closes_1008() {
    let s = Steward::start(&[
        ("STEWARD__SOCKET__RATE_LIMIT", "5"),
        ("STEWARD__SOCKET__RATE_BURST", "5"),
        ("STEWARD__SOCKET__ABUSE_LIMIT", "10"),
    ])
    .await;
    let token = tenant(&s, "acme").await;
    let mut ws = connect(&s, &token).await;
    for i in 0..40 {
        if ws.send(Message::text(json!({"type": "ping", "id": i}).to_string())).await.is_err() {
            break;
        }
    }
    let mut limited = 0;
    let code = loop {
        match tokio::time::timeout(WITHIN, ws.next()).await.expect("frames") {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["code"] == "rate_limited" {
                    limited += 1;
                }
            }
            Some(Ok(Message::Close(Some(f)))) => break Some(u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break None,
        }
    };
    assert!(limited >= 1, "some events are answered rate_limited");
    assert_eq!(code, Some(1008));
    assert!(metric(&s, "steward_socket_rate_limited_total").await >= 11.0);
    assert!(eventually(WITHIN, || async { live_sockets(&s).await.is_empty() }).await);
}

#[tokio::test]
async fn an_oversized_frame_or_message_closes_1009() {
    let s = Steward::start(&[]).await;
    let token = tenant(&s, "acme").await;

    let mut ws = connect(&s, &token).await;
    let big = "x".repeat(70 * 1024);
    ws.send(Message::text(big)).await.unwrap();
    assert_eq!(close_code(&mut ws, WITHIN).await.map(|c| c.0), Some(1009));

    // a message of continuation frames, each under the frame limit, over 1 MiB in total
    let mut ws = connect(&s, &token).await;
    let chunk = vec![b'y'; 60 * 1024];
    ws.send(Message::Frame(Frame::message(chunk.clone(), OpCode::Data(Data::Text), false)))
        .await
        .unwrap();
    for _ in 0..20 {
        let sent = ws
            .send(Message::Frame(Frame::message(
                chunk.clone(),
                OpCode::Data(Data::Continue),
                false,
            )))
            .await;
        if sent.is_err() {
            break;
        }
    }
    assert_eq!(close_code(&mut ws, WITHIN).await.map(|c| c.0), Some(1009));
    assert!(eventually(WITHIN, || async { live_sockets(&s).await.is_empty() }).await);
}

#[tokio::test]
async fn a_client_that_never_answers_pings_is_closed_4012() {
    let s = Steward::start(&[
        ("STEWARD__SOCKET__PING_INTERVAL", "500ms"),
        ("STEWARD__SOCKET__PONG_TIMEOUT", "500ms"),
    ])
    .await;
    let token = tenant(&s, "acme").await;
    // tungstenite answers pings only while it is read: not reading = never answering
    let mut ws = connect(&s, &token).await;
    assert!(eventually(WITHIN, || async { live_sockets(&s).await.is_empty() }).await);
    let (code, reason) = close_code(&mut ws, WITHIN).await.expect("a close frame");
    assert_eq!((code, reason.as_str()), (4012, "no pong"));
    assert!(metric(&s, "steward_socket_closes_total{code=\"4012\"}").await >= 1.0);
}

#[tokio::test]
async fn a_client_that_vanishes_without_a_close_leaves_the_registry() {
    let s = Steward::start(&[
        ("STEWARD__SOCKET__PING_INTERVAL", "500ms"),
        ("STEWARD__SOCKET__PONG_TIMEOUT", "500ms"),
    ])
    .await;
    let token = tenant(&s, "acme").await;
    let ws = connect(&s, &token).await;
    assert_eq!(live_sockets(&s).await.len(), 1);
    // drop the TCP connection: no Close frame
    drop(ws);
    assert!(eventually(WITHIN, || async { live_sockets(&s).await.is_empty() }).await);
    assert!(
        eventually(WITHIN, || async {
            metric(&s, "steward_socket_closes_total{code=\"1006\"}").await >= 1.0
        })
        .await
    );
}

#[tokio::test]
async fn an_idle_socket_gets_a_notice_then_4000() {
    let s = Steward::start(&[("STEWARD__IDLE__SOCKET", "1s")]).await;
    let token = tenant(&s, "acme").await;
    let mut ws = connect(&s, &token).await;
    let notice = next_json(&mut ws).await;
    assert_eq!(
        (notice["type"].as_str(), notice["code"].as_str()),
        (Some("notice"), Some("idle_timeout"))
    );
    let (code, reason) = close_code(&mut ws, WITHIN).await.expect("a close frame");
    assert_eq!((code, reason.as_str()), (4000, "idle timeout"));
    assert!(eventually(WITHIN, || async { live_sockets(&s).await.is_empty() }).await);
}

// ---- with jobs (gRPC steward.jobs.v1.Jobs as the worker) -------------------------------------

use steward_proto::jobs::v1 as jobs;
use steward_proto::jobs::v1::jobs_client::JobsClient;
use tonic::metadata::MetadataValue;

/// A gRPC request carrying the tenant's bearer token.
pub(crate) fn authed<T>(token: &str, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", MetadataValue::try_from(format!("Bearer {token}")).unwrap());
    r
}

/// Creates a job; returns its id.
pub(crate) async fn create_job(s: &Steward, token: &str) -> String {
    let mut client = JobsClient::connect(s.grpc.clone()).await.unwrap();
    let req = jobs::CreateJobRequest { kind: "render".into(), data: None };
    client.create_job(authed(token, req)).await.unwrap().into_inner().id
}

/// Reports progress on a job as a worker would.
pub(crate) async fn progress(
    client: &mut JobsClient<tonic::transport::Channel>,
    token: &str,
    job: &str,
    progress: u32,
    data: Option<String>,
) {
    let req = jobs::UpdateJobRequest {
        id: job.to_owned(),
        status: Some(jobs::JobStatus::Running.into()),
        progress: Some(progress),
        data,
    };
    client.update_job(authed(token, req)).await.unwrap();
}

/// Subscribes `ws` to `job` and waits for `subscribed`.
pub(crate) async fn subscribe(ws: &mut Ws, job: &str) {
    send(ws, json!({"type": "subscribe", "job": job})).await;
    let v = next_json(ws).await;
    assert_eq!(v["type"], "subscribed", "{v}");
}

/// Resident memory of the server process, bytes (from /proc, as the test runs beside it).
/// Whether the server's end of the loopback connection `(server port, client port)` is open
/// (in `/proc/net/tcp`, any state but TIME_WAIT and CLOSE).
fn server_side_open((server, client): (u16, u16)) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let port = |addr: &str| addr.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
    table.lines().skip(1).any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        f.len() > 3
            && port(f[1]) == Some(server)
            && port(f[2]) == Some(client)
            && !matches!(f[3], "06" | "07")
    })
}

pub(crate) fn server_rss(s: &Steward) -> u64 {
    let statm = std::fs::read_to_string(format!("/proc/{}/statm", s.pid())).unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[tokio::test]
async fn a_worker_posts_updates_and_subscribed_sockets_see_them_in_order() {
    let s = Steward::start(&[]).await;
    let token = tenant(&s, "acme").await;
    let other = tenant(&s, "globex").await;
    let job = create_job(&s, &token).await;
    let mut ws = connect(&s, &token).await;
    send(&mut ws, json!({"type": "subscribe", "job": job, "id": "sub-1"})).await;
    let v = next_json(&mut ws).await;
    assert_eq!((v["type"].as_str(), v["id"].as_str()), (Some("subscribed"), Some("sub-1")));
    assert_eq!(v["snapshot"]["status"], "queued");
    assert_eq!(v["snapshot"]["id"], job.as_str());

    // another tenant cannot subscribe to it
    let mut intruder = connect(&s, &other).await;
    send(&mut intruder, json!({"type": "subscribe", "job": job})).await;
    assert_eq!(next_json(&mut intruder).await["code"], "not_found");

    let mut worker = JobsClient::connect(s.grpc.clone()).await.unwrap();
    for p in [10, 60] {
        progress(&mut worker, &token, &job, p, Some(format!("{{\"step\":{p}}}"))).await;
    }
    let done = jobs::UpdateJobRequest {
        id: job.clone(),
        status: Some(jobs::JobStatus::Completed.into()),
        ..Default::default()
    };
    worker.update_job(authed(&token, done)).await.unwrap();
    let seen: Vec<Value> =
        vec![next_json(&mut ws).await, next_json(&mut ws).await, next_json(&mut ws).await];
    let got: Vec<(String, i64)> = seen
        .iter()
        .map(|v| (v["status"].as_str().unwrap().to_owned(), v["progress"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        got,
        vec![("running".into(), 10), ("running".into(), 60), ("completed".into(), 100)]
    );
    assert_eq!(seen[1]["data"], json!({"step": 60}));
    assert!(seen.iter().all(|v| v["type"] == "job" && v["job"] == job.as_str()));
    // nothing more will come for a finished job: its subscription is gone
    assert!(
        eventually(WITHIN, || async { metric(&s, "steward_jobs_subscriptions").await == 0.0 })
            .await
    );
}

#[tokio::test]
async fn a_client_that_never_reads_is_closed_4008_within_2s_and_memory_stays_bounded() {
    // its bound is the product's write deadline: not while Chromium churns on the same cores
    let _cpu = crate::support::exclusive().await;
    let s = Steward::start(&[]).await;
    let token = tenant(&s, "acme").await;
    let job = create_job(&s, &token).await;
    // a small receive window, so the backlog piles up on the server side quickly
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let addr: std::net::SocketAddr = s.public.trim_start_matches("http://").parse().unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    let ports = (addr.port(), tcp.local_addr().unwrap().port());
    let mut request = ws_url(&s).into_client_request().unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, _) =
        tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(tcp)).await.unwrap();
    subscribe(&mut ws, &job).await;
    assert!(server_side_open(ports), "the connection is not seen in /proc/net/tcp");
    let rss_before = server_rss(&s);

    // from here on the client reads nothing while the worker streams 8 KiB updates
    let data = Some(json!({"blob": "z".repeat(8 * 1024)}).to_string());
    let mut worker = JobsClient::connect(s.grpc.clone()).await.unwrap();
    let started = std::time::Instant::now();
    let watch = async {
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        while started.elapsed() < Duration::from_secs(10) {
            tick.tick().await;
            if live_sockets(&s).await.is_empty() {
                return Some(started.elapsed());
            }
        }
        None
    };
    let post = async {
        let mut posted = 0u64;
        while posted < 2000 && started.elapsed() < Duration::from_secs(10) {
            progress(&mut worker, &token, &job, (posted % 100) as u32, data.clone()).await;
            posted += 1;
        }
        posted
    };
    let (closed_after, posted) = tokio::join!(watch, post);
    let Some(closed_after) = closed_after else {
        let m = s.get("/metrics").send().await.unwrap().text().await.unwrap();
        let m: Vec<&str> = m.lines().filter(|l| l.starts_with("steward_socket")).collect();
        panic!(
            "the slow socket was not closed after {posted} updates; {m:#?}\nRSS {}",
            server_rss(&s)
        );
    };
    eprintln!(
        "slow consumer closed {closed_after:?} after the client stopped reading; {posted} updates posted"
    );
    assert!(closed_after < Duration::from_secs(2), "closed after {closed_after:?}");
    assert_eq!(metric(&s, "steward_socket_closes_total{code=\"4008\"}").await, 1.0);
    assert_eq!(metric(&s, "steward_socket_slow_consumer_total").await, 1.0);
    assert_eq!(metric(&s, "steward_socket_queue_bytes").await, 0.0);
    assert_eq!(metric(&s, "steward_jobs_subscriptions").await, 0.0);
    // updates kept flowing (~16 MiB posted) and the server did not keep them
    let grown = server_rss(&s).saturating_sub(rss_before);
    assert!(posted >= 2000, "the worker was never blocked: {posted} updates");
    assert!(grown < 12 * 1024 * 1024, "RSS grew by {grown} bytes after {posted} updates");

    // still reading nothing, the client cannot keep the connection: with the socket gone,
    // nothing would ever write its backlog, and it would hold a descriptor and buffers outside
    // every cap. It is aborted once the socket's closing bound has passed (about 4 s here).
    let aborted = eventually(Duration::from_secs(10), || async { !server_side_open(ports) }).await;
    assert!(aborted, "the server still holds the connection of a client that reads nothing");

    // the client finds the connection ended: with 4008 if the Close frame got through
    if let Some((code, reason)) = close_code(&mut ws, WITHIN).await {
        assert_eq!((code, reason.as_str()), (4008, "slow consumer"));
    }
}

#[tokio::test]
async fn subscriptions_are_gone_after_every_kind_of_close() {
    let s = Steward::start(&[
        ("STEWARD__SOCKET__RATE_LIMIT", "5"),
        ("STEWARD__SOCKET__RATE_BURST", "5"),
        ("STEWARD__SOCKET__ABUSE_LIMIT", "3"),
    ])
    .await;
    let token = tenant(&s, "acme").await;
    let job = create_job(&s, &token).await;
    let mut socks = Vec::new();
    for _ in 0..5 {
        let mut ws = connect(&s, &token).await;
        subscribe(&mut ws, &job).await;
        socks.push(ws);
    }
    assert_eq!(metric(&s, "steward_jobs_subscriptions").await, 5.0);
    let mut socks = socks.into_iter();
    // 1. the client closes
    let mut ws = socks.next().unwrap();
    ws.close(None).await.unwrap();
    // 2. the TCP connection just goes
    drop(socks.next().unwrap());
    // 3. an oversized frame (1009)
    let mut big = socks.next().unwrap();
    big.send(Message::text("x".repeat(70 * 1024))).await.unwrap();
    // 4. rate-limit abuse (1008)
    let mut abuser = socks.next().unwrap();
    for i in 0..30 {
        if abuser.send(Message::text(json!({"type": "ping", "id": i}).to_string())).await.is_err() {
            break;
        }
    }
    assert!(
        eventually(WITHIN, || async { live_sockets(&s).await.len() == 1 }).await,
        "{}",
        s.dump()
    );
    assert_eq!(close_code(&mut big, WITHIN).await.map(|c| c.0), Some(1009));
    assert_eq!(close_code(&mut abuser, WITHIN).await.map(|c| c.0), Some(1008));
    // 5. an operator stops the last one through the admin API
    let mut last = socks.next().unwrap();
    let id = live_sockets(&s).await[0]["id"].as_str().unwrap().to_owned();
    let r = s.request(Method::DELETE, &format!("/v1/resources/{id}")).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(close_code(&mut last, WITHIN).await.map(|c| c.0), Some(1000));
    assert!(eventually(WITHIN, || async { live_sockets(&s).await.is_empty() }).await);
    assert!(
        eventually(WITHIN, || async { metric(&s, "steward_jobs_subscriptions").await == 0.0 })
            .await
    );
    drop((ws, abuser, last));
    // the job still fans out to nobody, and nothing is queued anywhere
    let mut worker = JobsClient::connect(s.grpc.clone()).await.unwrap();
    progress(&mut worker, &token, &job, 50, None).await;
    assert_eq!(metric(&s, "steward_socket_queue_depth").await, 0.0);
    assert_eq!(metric(&s, "steward_socket_tracked_ips").await, 0.0);
}

/// Open descriptors of the server process, without the store's: the SQLite pool opens up to
/// `[store] max_connections` connections lazily under concurrent token lookups, a bounded pool
/// rather than a per-socket cost.
pub(crate) fn server_fds(s: &Steward) -> usize {
    server_fd_targets(s).iter().filter(|t| !t.contains("steward.db")).count()
}

/// What the server's descriptors point at (for assertion messages).
pub(crate) fn server_fd_targets(s: &Steward) -> Vec<String> {
    let mut targets: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", s.pid()))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.display().to_string())
        .collect();
    targets.sort();
    targets
}

/// `steward_tracked_handles{type=…}` of the server.
pub(crate) async fn tracked(s: &Steward, kind: &str) -> f64 {
    metric(s, &format!("steward_tracked_handles{{type=\"{kind}\"}}")).await
}

/// One socket's whole life: connect, authenticate, subscribe, close.
async fn cycle(s: &Steward, token: &str, job: &str) {
    let mut ws = connect(s, token).await;
    subscribe(&mut ws, job).await;
    ws.close(None).await.unwrap();
    assert_eq!(close_code(&mut ws, WITHIN).await.map(|c| c.0), Some(1000));
}

async fn cycles(s: &Steward, token: &str, job: &str, n: usize, concurrency: usize) {
    futures_util::stream::iter(0..n)
        .for_each_concurrent(concurrency, |_| cycle(s, token, job))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_of_10k_sockets_leaves_nothing_behind() {
    // sockets spread over several arbiters, whatever the machine's core count
    let s = Steward::start(&[("STEWARD__SOCKET__ARBITERS", "3")]).await;
    let token = tenant(&s, "acme").await;
    let job = create_job(&s, &token).await;
    // warm up: worker threads, allocator pools, the store's connections
    cycles(&s, &token, &job, 1000, 50).await;
    assert!(eventually(WITHIN, || async { live_sockets(&s).await.is_empty() }).await);
    let base_fds = server_fds(&s);
    let base_targets = server_fd_targets(&s);
    let base_rss = server_rss(&s);
    let (base_tasks, base_timers) = (tracked(&s, "task").await, tracked(&s, "timer").await);

    cycles(&s, &token, &job, 10_000, 50).await;

    assert!(eventually(WITHIN, || async { live_sockets(&s).await.is_empty() }).await);
    assert_eq!(metric(&s, "steward_resources_live{kind=\"socket\"}").await, 0.0);
    assert!(metric(&s, "steward_resources_stopped_total{kind=\"socket\"}").await >= 10_200.0);
    assert_eq!(metric(&s, "steward_jobs_subscriptions").await, 0.0);
    assert_eq!(metric(&s, "steward_socket_tracked_ips").await, 0.0);
    assert_eq!(metric(&s, "steward_socket_queue_depth").await, 0.0);
    // a socket's pump (on an HTTP worker) and its aborted writer (on its arbiter) end just after
    // the socket leaves the registry: awaited with the counts
    assert!(
        eventually(WITHIN, || async {
            tracked(&s, "task").await == base_tasks
                && tracked(&s, "timer").await == base_timers
                && metric(&s, "steward_orphaned_handles").await == 0.0
        })
        .await,
        "tasks {} timers {} (baseline {base_tasks} {base_timers})",
        tracked(&s, "task").await,
        tracked(&s, "timer").await
    );
    assert!(
        eventually(WITHIN, || async { server_fds(&s) <= base_fds }).await,
        "fds {} > baseline {base_fds}: {:?} then {:?}",
        server_fds(&s),
        base_targets,
        server_fd_targets(&s)
    );
    let grown = server_rss(&s).saturating_sub(base_rss);
    eprintln!(
        "10k socket churn: RSS grew {grown} bytes, fds {} (baseline {base_fds})",
        server_fds(&s)
    );
    assert!(grown < 5 * 1024 * 1024, "RSS grew by {grown} bytes over 10k sockets");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_1000_open_sockets_sends_1001_to_all_and_exits_0() {
    let mut s = Steward::start(&[("STEWARD__SOCKET__MAX_PER_IP", "2000")]).await;
    let token = tenant(&s, "acme").await;
    let mut sockets = Vec::new();
    for chunk in 0..10 {
        let opened = futures_util::future::join_all((0..100).map(|_| connect(&s, &token))).await;
        sockets.extend(opened);
        assert_eq!(sockets.len(), (chunk + 1) * 100);
    }
    assert!(
        eventually(WITHIN, || async {
            metric(&s, "steward_resources_live{kind=\"socket\"}").await == 1000.0
        })
        .await
    );
    s.signal(nix::sys::signal::Signal::SIGTERM);
    let readers =
        sockets.into_iter().map(|mut ws| async move { close_code(&mut ws, WITHIN).await });
    let closes = futures_util::future::join_all(readers).await;
    let mut codes = std::collections::BTreeMap::new();
    for close in closes {
        let code = close.map(|(c, reason)| format!("{c} {reason}"));
        *codes.entry(code).or_insert(0) += 1;
    }
    assert_eq!(
        codes,
        std::collections::BTreeMap::from([(Some("1001 server shutting down".to_owned()), 1000)])
    );
    let status = s.wait_exit(Duration::from_secs(40)).await.expect("steward exits");
    assert!(status.success(), "{status:?}\n{}", s.dump());
    let report = s.find_message("shutdown complete").expect("the shutdown report");
    assert_eq!(report["forced"], 0, "{report}");
}

#[tokio::test]
async fn deleting_a_tenant_closes_its_sockets_and_removes_its_jobs() {
    let s = Steward::start(&[]).await;
    let token = tenant(&s, "acme").await;
    let other = tenant(&s, "globex").await;
    let job = create_job(&s, &token).await;
    let kept = create_job(&s, &other).await;
    let mut ws = connect(&s, &token).await;
    subscribe(&mut ws, &job).await;
    let mut bystander = connect(&s, &other).await;
    subscribe(&mut bystander, &kept).await;

    let r = s.request(Method::DELETE, "/v1/tenants/acme").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        (body["resources_stopped"].as_u64(), body["jobs_removed"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(close_code(&mut ws, WITHIN).await, Some((1000, "closed by the server".to_owned())));
    // the other tenant is undisturbed
    send(&mut bystander, json!({"type": "ping", "id": 1})).await;
    assert_eq!(next_json(&mut bystander).await["type"], "pong");
    assert_eq!(metric(&s, "steward_jobs_subscriptions").await, 1.0);
    assert_eq!(metric(&s, "steward_jobs{state=\"all\"}").await, 1.0);
}

#[tokio::test]
async fn the_memory_monitor_raises_its_alarms_and_remediates_inactive_sockets() {
    let s = Steward::start(&[
        ("STEWARD__SOCKET__MONITOR__INTERVAL", "100ms"),
        ("STEWARD__SOCKET__MONITOR__BASELINE_SAMPLES", "1"),
        ("STEWARD__SOCKET__MONITOR__MAX_CONNECTIONS", "0"),
        ("STEWARD__SOCKET__MONITOR__INACTIVE_AFTER", "200ms"),
        ("STEWARD__SOCKET__MONITOR__REMEDIATE_INACTIVE_AFTER", "500ms"),
    ])
    .await;
    let token = tenant(&s, "acme").await;
    let mut ws = connect(&s, &token).await;
    // more than max_connections (0) open: the alarm is raised and logged
    assert!(
        eventually(WITHIN, || async {
            metric(&s, "steward_socket_monitor_alarm{alarm=\"high_connections\"}").await == 1.0
        })
        .await
    );
    assert!(s.find_message("socket monitor alarm raised").is_some());
    // the socket sends nothing: once inactive beyond the remediation age it is closed like an
    // idle one
    let notice = next_json(&mut ws).await;
    assert_eq!(notice["code"], "idle_timeout");
    assert_eq!(close_code(&mut ws, WITHIN).await.map(|c| c.0), Some(4000));
    assert!(eventually(WITHIN, || async { live_sockets(&s).await.is_empty() }).await);
    assert_eq!(metric(&s, "steward_socket_remediated_total").await, 1.0);
    assert!(
        eventually(WITHIN, || async {
            metric(&s, "steward_socket_monitor_alarm{alarm=\"high_connections\"}").await == 0.0
        })
        .await,
        "the alarm clears when the sockets are gone"
    );
}
