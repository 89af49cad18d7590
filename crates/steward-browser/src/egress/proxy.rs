//! The proxy's connections: HTTP/1.1 served by hyper, every request decided on its own. A
//! `CONNECT` becomes a tunnel to the address the gate chose; a plain-HTTP request (absolute
//! form) goes to that address on a connection of its own, in origin form, and its answer comes
//! back on the client's connection, which stays open for the next request (decided again).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::{TokioIo, TokioTimer};
use steward_core::Tracker;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use url::Url;

use super::{CONNECT_TIMEOUT, Gate, HEAD_TIMEOUT, MAX_CONNECTIONS, MAX_HEAD, Refusal};
use crate::stats::EgressRefusal;

/// Headers that belong to one hop (RFC 9110 §7.6.1) or to the proxy, never forwarded (nor
/// those the `Connection` header names).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// What an answer's body is: the upstream's, relayed, or the proxy's own.
type Body = BoxBody<Bytes, hyper::Error>;

/// What every connection of one proxy shares.
struct Shared {
    gate: Arc<Gate>,
    tracker: Tracker,
    io: Option<tokio::runtime::Handle>,
}

impl Shared {
    /// Runs `fut` as a task of the owner's tracker; `false` when the owner is stopping.
    fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) -> bool {
        match &self.io {
            Some(io) => self.tracker.spawn_on(io, fut),
            None => self.tracker.spawn(fut),
        }
        .is_ok()
    }
}

/// Accepts connections until the owner's tracker aborts it; each is served in a task of the
/// same tracker, at most [`MAX_CONNECTIONS`] at once.
pub(super) async fn accept(
    listener: std::net::TcpListener,
    gate: Arc<Gate>,
    tracker: Tracker,
    io: Option<tokio::runtime::Handle>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
    let shared = Arc::new(Shared { gate, tracker, io });
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
            let _ = shared.gate.refuse("-", EgressRefusal::BadRequest, "too many connections");
            continue; // dropped: Chromium sees the connection closed
        };
        let serving = shared.clone();
        let serve = async move {
            let _permit = permit;
            serve(stream, serving).await;
        };
        if !shared.spawn(serve) {
            return; // the owner is stopping
        }
    }
}

/// One client connection: its requests one after another, each head within [`HEAD_TIMEOUT`]
/// and at most [`MAX_HEAD`] bytes (hyper answers `400` or `431` otherwise, counted here as
/// `bad_request`).
async fn serve(client: TcpStream, shared: Arc<Shared>) {
    let _ = client.set_nodelay(true);
    let per_request = shared.clone();
    let service = hyper::service::service_fn(move |req| {
        let shared = per_request.clone();
        async move { Ok::<_, Infallible>(handle(req, &shared).await) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .auto_date_header(false)
        .title_case_headers(true)
        .serve_connection(TokioIo::new(client), service)
        .with_upgrades()
        .await;
    if let Err(e) = served
        && e.is_parse()
    {
        let _ = shared.gate.refuse("-", EgressRefusal::BadRequest, "not an HTTP/1.1 request");
    }
}

async fn handle(req: Request<Incoming>, shared: &Shared) -> Response<Body> {
    if req.method() == Method::CONNECT {
        tunnel(req, shared).await
    } else {
        forward(req, shared).await
    }
}

/// `CONNECT host:port`: decide, connect, answer `200`, then relay both ways until both close.
async fn tunnel(req: Request<Incoming>, shared: &Shared) -> Response<Body> {
    let gate = &shared.gate;
    let authority = req.uri().authority().map(|a| a.as_str().to_owned()).unwrap_or_default();
    let Some((host, port)) = split_authority(&authority) else {
        let refusal = gate.refuse(&authority, EgressRefusal::BadRequest, "CONNECT needs host:port");
        return refused(&refusal);
    };
    let addr = match gate.decide(host, port).await {
        Ok(addr) => addr,
        Err(refusal) => return refused(&refusal),
    };
    let mut upstream = match connect(addr, host, gate).await {
        Ok(upstream) => upstream,
        Err(answer) => return answer,
    };
    gate.connected();
    // the tunnel starts once hyper has sent the 200 and hands the connection over
    let relay = async move {
        if let Ok(upgraded) = hyper::upgrade::on(req).await {
            let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(upgraded), &mut upstream).await;
        }
    };
    if !shared.spawn(relay) {
        return answer(StatusCode::SERVICE_UNAVAILABLE, None, "the session is closing".into());
    }
    Response::new(Empty::new().map_err(|never| match never {}).boxed())
}

/// A plain-HTTP request in absolute form: decide, connect, send it in origin form with its
/// end-to-end headers and `Connection: close`, relay the answer.
async fn forward(req: Request<Incoming>, shared: &Shared) -> Response<Body> {
    let gate = &shared.gate;
    let Some((url, host, port)) = absolute(&req.uri().to_string()) else {
        let refusal = gate.refuse(
            "-",
            EgressRefusal::BadRequest,
            "a proxy takes absolute http: URLs, and CONNECT for anything else",
        );
        return refused(&refusal);
    };
    let addr = match gate.decide(&host, port).await {
        Ok(addr) => addr,
        Err(refusal) => return refused(&refusal),
    };
    let upstream = match connect(addr, &host, gate).await {
        Ok(upstream) => upstream,
        Err(answer) => return answer,
    };
    gate.connected();
    let bad_gateway = |e: hyper::Error| {
        let text = format!("net::ERR_EMPTY_RESPONSE: {host} ({addr}): {e}");
        answer(StatusCode::BAD_GATEWAY, None, text)
    };
    let (mut sender, connection) =
        match hyper::client::conn::http1::handshake(TokioIo::new(upstream)).await {
            Ok(pair) => pair,
            Err(e) => return bad_gateway(e),
        };
    // drives the upstream connection until the answer's body is relayed
    if !shared.spawn(async move {
        let _ = connection.await;
    }) {
        return answer(StatusCode::SERVICE_UNAVAILABLE, None, "the session is closing".into());
    }
    let (mut parts, body) = req.into_parts();
    let mut path = url.path().to_owned();
    if let Some(q) = url.query() {
        path.push('?');
        path.push_str(q);
    }
    let Ok(origin) = path.parse::<Uri>() else {
        let refusal = gate.refuse(&host, EgressRefusal::BadRequest, "not a valid request path");
        return refused(&refusal);
    };
    parts.uri = origin;
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    if !parts.headers.contains_key(header::HOST)
        && let Ok(value) =
            HeaderValue::from_str(&url[url::Position::BeforeHost..url::Position::AfterPort])
    {
        parts.headers.insert(header::HOST, value);
    }
    match sender.send_request(Request::from_parts(parts, body)).await {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, body.boxed())
        }
        Err(e) => bad_gateway(e),
    }
}

/// Connects to `addr` (for `host`) within [`CONNECT_TIMEOUT`]; when it cannot, records the
/// failure under Chromium's name for it and gives the `502` or `504` to answer.
async fn connect(
    addr: std::net::SocketAddr,
    host: &str,
    gate: &Gate,
) -> Result<TcpStream, Response<Body>> {
    let (status, error, text) =
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(upstream)) => {
                let _ = upstream.set_nodelay(true);
                return Ok(upstream);
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                (StatusCode::BAD_GATEWAY, "net::ERR_CONNECTION_REFUSED", e.to_string())
            }
            Ok(Err(e)) => (StatusCode::BAD_GATEWAY, "net::ERR_CONNECTION_FAILED", e.to_string()),
            Err(_) => {
                (StatusCode::GATEWAY_TIMEOUT, "net::ERR_CONNECTION_TIMED_OUT", "timed out".into())
            }
        };
    gate.refusals().record_unreachable(host, error);
    Err(answer(status, None, format!("{error}: cannot connect to {addr}: {text}")))
}

/// `http://host[:port]/path?query` of an absolute-form request target (as the WHATWG URL
/// parser reads it, so `http://2130706433/` is `127.0.0.1`), with its host (IPv6 brackets
/// removed) and port.
fn absolute(target: &str) -> Option<(Url, String, u16)> {
    let url = Url::parse(target).ok()?;
    if url.scheme() != "http" {
        return None;
    }
    let host = url.host_str()?.trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = url.port_or_known_default()?;
    Some((url, host, port))
}

/// Removes [`HOP_BY_HOP`] headers and those the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// `host:port` or `[v6]:port`.
fn split_authority(authority: &str) -> Option<(&str, u16)> {
    let (host, port) = authority.rsplit_once(':')?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let port = port.parse().ok()?;
    (!host.is_empty()).then_some((host, port))
}

/// `403` with `X-Steward-Egress: refused; reason=<reason>`.
fn refused(refusal: &Refusal) -> Response<Body> {
    answer(StatusCode::FORBIDDEN, Some(refusal), refusal.message.clone())
}

/// An answer from the proxy itself; the client's connection closes after it.
fn answer(status: StatusCode, refusal: Option<&Refusal>, text: String) -> Response<Body> {
    let mut response =
        Response::new(Full::new(Bytes::from(text)).map_err(|never| match never {}).boxed());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    if let Some(r) = refusal
        && let Ok(value) = HeaderValue::from_str(&format!("refused; reason={}", r.reason.as_str()))
    {
        headers.insert(HeaderName::from_static("x-steward-egress"), value);
    }
    response
}
