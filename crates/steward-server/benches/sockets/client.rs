//! The bench's one WebSocket client, the same for every server: open a socket, authenticate,
//! subscribe to one job and wait for the acknowledgement ([`open_subscribed`]); hold it idle
//! while counting the updates it receives ([`hold`]); or close it at once ([`cycle`]). What
//! differs between servers is the wire format, in [`Protocol`]: Steward's JSON frames (also
//! spoken by the plain actix-ws server) or socket.io v4 over Engine.IO v4.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Deadline of anything that should be quick: one upgrade, one reply, one cycle.
pub(crate) const STEP: Duration = Duration::from_secs(30);

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The wire format of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// Steward's `GET /v1/ws` (`docs/protocol/websocket.md`): the bearer in the upgrade's
    /// `Authorization` header, then `ping` → `pong` to prove the socket live; `subscribe` →
    /// `subscribed`; updates are `job` frames.
    Steward,
    /// socket.io v4 over Engine.IO v4 on `/socket.io/?EIO=4&transport=websocket`: the server's
    /// open packet `0{…}`, the client's CONNECT `40{"token":…}` answered by `40{…}`; the event
    /// `421["subscribe",{"job":…}]` acknowledged by `431[{"type":"subscribed",…}]`; updates are
    /// `42["job",{…}]`; Engine.IO pings `2` are answered with `3`.
    SocketIo,
}

/// A frame received, as the client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Frame {
    /// Steward `pong`, or socket.io's open packet or CONNECT: the handshake's step went through.
    Ready,
    /// The subscription was acknowledged.
    Subscribed,
    /// An update of the job, with its progress.
    Update(u32),
    /// An Engine.IO ping, to be answered with [`Protocol::PONG`].
    Ping,
    /// Anything else (an error, a refused CONNECT).
    Other,
}

impl Protocol {
    /// The answer to [`Frame::Ping`].
    const PONG: &'static str = "3";

    /// The path and query of the WebSocket endpoint.
    pub(crate) fn path(self) -> &'static str {
        match self {
            Self::Steward => "/v1/ws",
            Self::SocketIo => "/socket.io/?EIO=4&transport=websocket",
        }
    }

    /// The subscribe request for `job`.
    pub(crate) fn subscribe(self, job: &str) -> String {
        match self {
            Self::Steward => json!({"type": "subscribe", "job": job}).to_string(),
            Self::SocketIo => format!("421{}", json!(["subscribe", {"job": job}])),
        }
    }

    /// What a text frame is.
    pub(crate) fn parse(self, text: &str) -> Frame {
        let progress = |v: &Value| {
            let p = v["progress"].as_u64().and_then(|p| u32::try_from(p).ok());
            p.map_or(Frame::Other, Frame::Update)
        };
        match self {
            Self::Steward => {
                let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
                match v["type"].as_str() {
                    Some("pong") => Frame::Ready,
                    Some("subscribed") => Frame::Subscribed,
                    Some("job") => progress(&v),
                    _ => Frame::Other,
                }
            }
            Self::SocketIo => {
                let json = |s: &str| serde_json::from_str::<Value>(s).unwrap_or(Value::Null);
                if text == "2" {
                    Frame::Ping
                } else if text.starts_with("0{") || text.starts_with("40") {
                    Frame::Ready
                } else if let Some(ack) = text.strip_prefix("431") {
                    let subscribed = json(ack)[0]["type"] == "subscribed";
                    if subscribed { Frame::Subscribed } else { Frame::Other }
                } else if let Some(event) = text.strip_prefix("42") {
                    let v = json(event);
                    if v[0] == "job" { progress(&v[1]) } else { Frame::Other }
                } else {
                    Frame::Other
                }
            }
        }
    }
}

/// Where and how the client reaches one server.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub(crate) protocol: Protocol,
    /// `ws://host:port` followed by [`Protocol::path`].
    pub(crate) url: String,
    /// The bearer token.
    pub(crate) token: String,
    /// The subscribe request (to the bench's one job).
    pub(crate) subscribe: String,
}

impl Endpoint {
    pub(crate) fn new(protocol: Protocol, addr: &str, token: &str, job: &str) -> Self {
        Self {
            protocol,
            url: format!("ws://{addr}{}", protocol.path()),
            token: token.to_owned(),
            subscribe: protocol.subscribe(job),
        }
    }
}

/// Opens a socket (with `Authorization: Bearer <token>` for Steward), small client buffers and
/// `TCP_NODELAY`.
async fn connect(endpoint: &Endpoint) -> Result<Ws, WsError> {
    let mut request = endpoint.url.as_str().into_client_request()?;
    if endpoint.protocol == Protocol::Steward {
        let value =
            HeaderValue::from_str(&format!("Bearer {}", endpoint.token)).expect("ascii header");
        request.headers_mut().insert("authorization", value);
    }
    // tungstenite's 128 KiB default buffers would make 10k clients weigh more than the server
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    let (ws, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true).await?;
    Ok(ws)
}

async fn send(ws: &mut Ws, text: String) -> Result<(), String> {
    ws.send(Message::text(text)).await.map_err(|e| format!("send: {e}"))
}

/// The next frame other than an Engine.IO ping (answered here), and its text. Protocol pings
/// are answered by tungstenite while it reads.
async fn next(ws: &mut Ws, protocol: Protocol) -> Result<(Frame, String), String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => match protocol.parse(&t) {
                Frame::Ping => send(ws, Protocol::PONG.to_owned()).await?,
                frame => return Ok((frame, t.as_str().to_owned())),
            },
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            other => return Err(format!("expected a text frame, got {other:?}")),
        }
    }
}

/// The next frame, which must be `want`.
async fn expect_frame(ws: &mut Ws, protocol: Protocol, want: Frame) -> Result<(), String> {
    let (frame, text) = next(ws, protocol).await?;
    if frame == want { Ok(()) } else { Err(format!("expected {want:?}, got {text}")) }
}

/// Opens a socket, authenticates it (Steward: the upgrade's header, proven by `ping` → `pong`;
/// socket.io: the open packet, then CONNECT with the token) and subscribes it to the job, once
/// the subscription is acknowledged.
pub(crate) async fn open_subscribed(endpoint: &Endpoint) -> Result<Ws, String> {
    let protocol = endpoint.protocol;
    let open = async {
        let mut ws = connect(endpoint).await.map_err(|e| format!("upgrade: {e}"))?;
        match protocol {
            Protocol::Steward => send(&mut ws, json!({"type": "ping"}).to_string()).await?,
            Protocol::SocketIo => {
                expect_frame(&mut ws, protocol, Frame::Ready).await?;
                send(&mut ws, format!("40{}", json!({"token": endpoint.token}))).await?;
            }
        }
        expect_frame(&mut ws, protocol, Frame::Ready).await?;
        send(&mut ws, endpoint.subscribe.clone()).await?;
        expect_frame(&mut ws, protocol, Frame::Subscribed).await?;
        Ok(ws)
    };
    tokio::time::timeout(STEP, open).await.map_err(|_| "not subscribed within 30 s".to_owned())?
}

/// One cycle: [`open_subscribed`], Close, wait for the server's Close (or the end of the
/// connection). Its duration.
pub(crate) async fn cycle(endpoint: &Endpoint) -> Result<Duration, String> {
    let start = Instant::now();
    let run = async {
        let mut ws = open_subscribed(endpoint).await?;
        ws.close(None).await.map_err(|e| format!("close: {e}"))?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) | None => return Ok(start.elapsed()),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("waiting for the server's Close: {e}")),
            }
        }
    };
    tokio::time::timeout(STEP, run).await.map_err(|_| "cycle over 30 s".to_owned())?
}

/// State shared by the held sockets' tasks and the main task.
pub(crate) struct Shared {
    pub(crate) protocol: Protocol,
    /// Per update (index = progress − 1), the sockets that received it.
    pub(crate) received: Vec<AtomicUsize>,
    /// Notified when an update has reached every socket.
    pub(crate) all_in: Notify,
    /// Held sockets.
    pub(crate) sockets: usize,
    /// Sockets that failed (an unexpected frame, or the connection ended before the Close).
    pub(crate) failures: AtomicUsize,
    /// The first failure, for the report.
    pub(crate) first_failure: Mutex<Option<String>>,
}

impl Shared {
    pub(crate) fn new(protocol: Protocol, sockets: usize, updates: u32) -> Self {
        Self {
            protocol,
            received: (0..updates).map(|_| AtomicUsize::new(0)).collect(),
            all_in: Notify::new(),
            sockets,
            failures: AtomicUsize::new(0),
            first_failure: Mutex::new(None),
        }
    }

    fn fail(&self, why: String) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.first_failure.lock().expect("failure lock").get_or_insert(why);
    }

    /// ` (first: …)` when a socket failed.
    pub(crate) fn first_failure(&self) -> String {
        let first = self.first_failure.lock().expect("failure lock");
        first.as_ref().map(|f| format!(" (first: {f})")).unwrap_or_default()
    }

    /// An update with `progress` reached a socket at `at`.
    fn on_update(&self, progress: u32, at: Instant, got: &mut Vec<(u32, Instant)>) {
        let slot = progress.checked_sub(1).and_then(|i| self.received.get(i as usize));
        if let Some(count) = slot {
            got.push((progress, at));
            if count.fetch_add(1, Ordering::AcqRel) + 1 == self.sockets {
                self.all_in.notify_one();
            }
        }
    }
}

/// One held socket, subscribed already: reads it all along (answering pings) until `close`
/// turns true, then sends a Close and ends with the server's. When each update arrived (its
/// progress, the instant).
pub(crate) async fn hold(
    mut ws: Ws,
    mut close: watch::Receiver<bool>,
    shared: Arc<Shared>,
) -> Vec<(u32, Instant)> {
    let mut got = Vec::with_capacity(shared.received.len());
    let mut closing = false;
    loop {
        tokio::select! {
            changed = close.changed(), if !closing => {
                if changed.is_err() {
                    break;
                }
                if *close.borrow_and_update() {
                    closing = true;
                    if ws.close(None).await.is_err() {
                        break;
                    }
                }
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => match shared.protocol.parse(&t) {
                    Frame::Update(progress) => shared.on_update(progress, Instant::now(), &mut got),
                    Frame::Ping => {
                        if ws.send(Message::text(Protocol::PONG)).await.is_err() && !closing {
                            shared.fail("answering an Engine.IO ping".to_owned());
                            break;
                        }
                    }
                    _ => shared.fail(format!("unexpected frame: {t}")),
                },
                Some(Ok(Message::Close(frame))) if !closing => {
                    shared.fail(format!("the server closed the socket: {frame:?}"));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) if !closing => {
                    shared.fail(format!("read: {e}"));
                    break;
                }
                Some(Err(_)) | None => break,
            }
        }
    }
    got
}
