//! The proxy's connections: one request head, a decision, then a tunnel (`CONNECT`) or one
//! forwarded plain-HTTP request.

use std::sync::Arc;
use std::time::Duration;

use steward_core::Tracker;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use url::Url;

use super::{CONNECT_TIMEOUT, Gate, HEAD_TIMEOUT, MAX_CONNECTIONS, MAX_HEAD, Refusal};
use crate::stats::EgressRefusal;

/// Most headers of one request head.
const MAX_HEADERS: usize = 100;

/// Headers that belong to one hop (RFC 9110 §7.6.1) or to the proxy, never forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
];

/// Accepts connections until the owner's tracker aborts it; each is served in a task of the
/// same tracker, at most [`MAX_CONNECTIONS`] at once.
pub(super) async fn accept(
    listener: std::net::TcpListener,
    gate: Arc<Gate>,
    tracker: Tracker,
    io: Option<tokio::runtime::Handle>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // out of descriptors, most likely: wait rather than spin
                tracing::warn!(error = %e, "egress proxy: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            let _ = gate.refuse("-", EgressRefusal::BadRequest, "too many connections");
            continue; // dropped: Chromium sees the connection closed
        };
        let gate = gate.clone();
        let serve = async move {
            let _permit = permit;
            serve(stream, &gate).await;
        };
        let spawned = match &io {
            Some(io) => tracker.spawn_on(io, serve),
            None => tracker.spawn(serve),
        };
        if spawned.is_err() {
            return; // the owner is stopping
        }
    }
}

/// One client connection.
async fn serve(mut client: TcpStream, gate: &Gate) {
    let Ok(Some(head)) = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut client)).await else {
        return;
    };
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let (Ok(httparse::Status::Complete(len)), Some(method), Some(target)) =
        (req.parse(&head), req.method, req.path)
    else {
        let refusal = gate.refuse("-", EgressRefusal::BadRequest, "not an HTTP/1.1 request head");
        respond_refused(&mut client, &refusal).await;
        return;
    };
    let rest = &head[len..];
    if method.eq_ignore_ascii_case("CONNECT") {
        tunnel(client, gate, target, rest).await;
    } else {
        let Some((url, host, port)) = absolute(target) else {
            let refusal = gate.refuse(
                "-",
                EgressRefusal::BadRequest,
                "a proxy takes absolute http: URLs, and CONNECT for anything else",
            );
            respond_refused(&mut client, &refusal).await;
            return;
        };
        let upstream_head = origin_form(method, &url, req.headers);
        forward(client, gate, &host, port, upstream_head, rest).await;
    }
}

/// Reads until the end of a request head (`\r\n\r\n`); `None` when the client closes first or
/// sends more than [`MAX_HEAD`] bytes without one. May hold bytes after the head.
async fn read_head(client: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = client.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        let scan_from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if buf[scan_from..].windows(4).any(|w| w == b"\r\n\r\n") {
            return Some(buf);
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
    }
}

/// `CONNECT host:port`: decide, connect, answer 200, then relay both ways until both close.
async fn tunnel(mut client: TcpStream, gate: &Gate, authority: &str, rest: &[u8]) {
    let Some((host, port)) = split_authority(authority) else {
        let refusal = gate.refuse(authority, EgressRefusal::BadRequest, "CONNECT needs host:port");
        respond_refused(&mut client, &refusal).await;
        return;
    };
    let addr = match gate.decide(host, port).await {
        Ok(addr) => addr,
        Err(refusal) => {
            respond_refused(&mut client, &refusal).await;
            return;
        }
    };
    let Some(mut upstream) = connect(addr, host, &mut client, gate).await else { return };
    gate.connected();
    if client.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n").await.is_err() {
        return;
    }
    if !rest.is_empty() && upstream.write_all(rest).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

/// A plain-HTTP request: decide, connect, send it in origin form, relay the answer, close.
async fn forward(
    mut client: TcpStream,
    gate: &Gate,
    host: &str,
    port: u16,
    head: Vec<u8>,
    rest: &[u8],
) {
    let addr = match gate.decide(host, port).await {
        Ok(addr) => addr,
        Err(refusal) => {
            respond_refused(&mut client, &refusal).await;
            return;
        }
    };
    let Some(mut upstream) = connect(addr, host, &mut client, gate).await else { return };
    gate.connected();
    if upstream.write_all(&head).await.is_err() || upstream.write_all(rest).await.is_err() {
        return;
    }
    let (mut from_client, mut to_client) = client.split();
    let (mut from_upstream, mut to_upstream) = upstream.split();
    // the body (or, after an upgrade, the client's side) goes up while the answer comes down;
    // the connection ends with the answer: the next request is decided on a new one
    tokio::select! {
        _ = tokio::io::copy(&mut from_upstream, &mut to_client) => {}
        () = async {
            let _ = tokio::io::copy(&mut from_client, &mut to_upstream).await;
            let _ = to_upstream.shutdown().await;
            std::future::pending::<()>().await;
        } => {}
    }
    let _ = to_client.shutdown().await;
}

/// Connects to `addr` (for `host`) within [`CONNECT_TIMEOUT`]; when it cannot, records the
/// failure under Chromium's name for it and answers 502 or 504 to the client.
async fn connect(
    addr: std::net::SocketAddr,
    host: &str,
    client: &mut TcpStream,
    gate: &Gate,
) -> Option<TcpStream> {
    let (status, error, text) =
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(upstream)) => return Some(upstream),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                ("502 Bad Gateway", "net::ERR_CONNECTION_REFUSED", e.to_string())
            }
            Ok(Err(e)) => ("502 Bad Gateway", "net::ERR_CONNECTION_FAILED", e.to_string()),
            Err(_) => {
                ("504 Gateway Timeout", "net::ERR_CONNECTION_TIMED_OUT", "timed out".to_owned())
            }
        };
    gate.refusals().record_unreachable(host, error);
    respond(client, status, None, &format!("{error}: cannot connect to {addr}: {text}")).await;
    None
}

/// `http://host[:port]/path?query` of an absolute-form request target, with its host (as it is
/// written, IPv6 in brackets removed) and port.
fn absolute(target: &str) -> Option<(Url, String, u16)> {
    let url = Url::parse(target).ok()?;
    if !matches!(url.scheme(), "http" | "ws") {
        return None;
    }
    let host = url.host_str()?.trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = url.port_or_known_default()?;
    Some((url, host, port))
}

/// The head to send upstream: the request line in origin form, the client's end-to-end
/// headers, and `Connection: close` (or the upgrade it asked for).
fn origin_form(method: &str, url: &Url, headers: &[httparse::Header<'_>]) -> Vec<u8> {
    let mut path = url.path().to_owned();
    if let Some(q) = url.query() {
        path.push('?');
        path.push_str(q);
    }
    let mut out = format!("{method} {path} HTTP/1.1\r\n").into_bytes();
    let mut upgrade = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade = Some(h.value);
        }
        if HOP_BY_HOP.iter().any(|n| h.name.eq_ignore_ascii_case(n)) {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    match upgrade {
        Some(protocol) => {
            out.extend_from_slice(b"Connection: Upgrade\r\nUpgrade: ");
            out.extend_from_slice(protocol);
            out.extend_from_slice(b"\r\n\r\n");
        }
        None => out.extend_from_slice(b"Connection: close\r\n\r\n"),
    }
    out
}

/// `host:port` or `[v6]:port`.
fn split_authority(authority: &str) -> Option<(&str, u16)> {
    let (host, port) = authority.rsplit_once(':')?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let port = port.parse().ok()?;
    (!host.is_empty()).then_some((host, port))
}

async fn respond_refused(client: &mut TcpStream, refusal: &Refusal) {
    respond(client, "403 Forbidden", Some(refusal), &refusal.message).await;
}

/// A complete answer from the proxy itself, then the connection closes.
async fn respond(client: &mut TcpStream, status: &str, refusal: Option<&Refusal>, body: &str) {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(r) = refusal {
        head.push_str(&format!("X-Steward-Egress: refused; reason={}\r\n", r.reason.as_str()));
    }
    head.push_str("\r\n");
    let _ = client.write_all(head.as_bytes()).await;
    let _ = client.write_all(body.as_bytes()).await;
    let _ = client.shutdown().await;
}
