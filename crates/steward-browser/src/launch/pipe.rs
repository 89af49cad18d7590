//! CDP over a pipe: a local Chromium speaks the DevTools protocol on its fds 3 (commands in)
//! and 4 (answers and events out), NUL-delimited JSON (`--remote-debugging-pipe`, as Puppeteer
//! and Playwright use it), and opens no port — so no page can reach a DevTools endpoint and no
//! local process can find one.
//!
//! chromiumoxide 0.9 speaks only WebSocket (pipe support is its open PR #325, issue #294), so a
//! task of the browser bridges: after Chromium answered a `Browser.getVersion` on the pipe, it
//! listens on `127.0.0.1:<free port>` for exactly one WebSocket handshake on an unguessable path
//! (128 random bits), closes the listener as soon as that one is made, and relays frames to
//! and from the pipe until either side ends. The port exists for the few milliseconds between
//! Chromium's answer and chromiumoxide's connect, outside Chromium's process group, and a
//! client must know the path to be let in (decision 0008).

use std::os::fd::{OwnedFd, RawFd};
use std::time::Duration;

use bytes::{Buf as _, BytesMut};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::unix::pipe;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::{Error, Result};

/// Chromium reads commands from this descriptor.
const COMMANDS_FD: RawFd = 3;
/// Chromium writes answers and events to this one.
const EVENTS_FD: RawFd = 4;
/// The id of the probe: Chromium takes 32-bit ids; chromiumoxide's own count up from 0.
const PROBE_ID: u64 = i32::MAX as u64;
/// Largest message read from Chromium (a full-page screenshot, base64, is far below).
const MAX_MESSAGE: usize = 256 * 1024 * 1024;

/// The two pipes: the child's ends (for [`steward_core::Tracker::spawn_process_with_fds`]) and
/// the parent's (for [`run`]).
pub(crate) struct Pipes {
    /// `(fd, number in the child)`.
    pub(crate) child: Vec<(OwnedFd, RawFd)>,
    /// Where Steward writes commands.
    pub(crate) commands: OwnedFd,
    /// Where Steward reads answers and events.
    pub(crate) events: OwnedFd,
}

/// Creates the pipes (close-on-exec; the child gets its ends as fds 3 and 4).
///
/// # Errors
/// [`Error::BrowserUnavailable`] when the system refuses.
pub(crate) fn pipes() -> Result<Pipes> {
    let fail = |e| Error::BrowserUnavailable(format!("cannot create the CDP pipe: {e}"));
    let (child_reads, commands) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(fail)?;
    let (events, child_writes) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(fail)?;
    Ok(Pipes {
        child: vec![(child_reads, COMMANDS_FD), (child_writes, EVENTS_FD)],
        commands,
        events,
    })
}

/// The bridge's whole life, as one task of the browser: probe Chromium, then offer the
/// one-shot WebSocket (its URL goes to `ready`, or why it cannot), then relay. `connect_within`
/// bounds the wait for chromiumoxide's handshake.
pub(crate) async fn run(
    commands: OwnedFd,
    events: OwnedFd,
    ready: oneshot::Sender<Result<String>>,
    connect_within: Duration,
) {
    let (mut to_chromium, mut from_chromium) =
        match (pipe::Sender::from_owned_fd(commands), pipe::Receiver::from_owned_fd(events)) {
            (Ok(tx), Ok(rx)) => (tx, rx),
            (Err(e), _) | (_, Err(e)) => {
                let _ = ready.send(Err(Error::BrowserUnavailable(format!("CDP pipe: {e}"))));
                return;
            }
        };
    let mut pending = Incoming::default();
    if let Err(e) = probe(&mut to_chromium, &mut from_chromium, &mut pending).await {
        let _ = ready.send(Err(e));
        return;
    }
    let token: String = {
        let mut bytes = [0u8; 16];
        if getrandom::fill(&mut bytes).is_err() {
            let _ =
                ready.send(Err(Error::BrowserUnavailable("no randomness for the bridge".into())));
            return;
        }
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    };
    let path = format!("/devtools/browser/{token}");
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(Error::BrowserUnavailable(format!("CDP bridge: {e}"))));
            return;
        }
    };
    let Ok(addr) = listener.local_addr() else { return };
    if ready.send(Ok(format!("ws://{addr}{path}"))).is_err() {
        return; // the launch gave up
    }
    let Ok(Some(ws)) = tokio::time::timeout(connect_within, accept_one(&listener, &path)).await
    else {
        return;
    };
    drop(listener); // nothing else can connect from here on
    relay(ws, to_chromium, from_chromium, pending).await;
}

/// `Browser.getVersion` on the pipe: Chromium is up and speaking. Bytes read past its answer
/// stay in `pending`.
async fn probe(
    to_chromium: &mut pipe::Sender,
    from_chromium: &mut pipe::Receiver,
    pending: &mut Incoming,
) -> Result<()> {
    let probe = format!("{{\"id\":{PROBE_ID},\"method\":\"Browser.getVersion\"}}\0");
    to_chromium
        .write_all(probe.as_bytes())
        .await
        .map_err(|e| Error::BrowserUnavailable(format!("chromium closed its CDP pipe: {e}")))?;
    loop {
        while let Some(message) = pending.next() {
            let answer: serde_json::Value = serde_json::from_slice(&message).unwrap_or_default();
            if answer["id"].as_u64() == Some(PROBE_ID) {
                return Ok(());
            }
        }
        if !pending.fill(from_chromium).await {
            return Err(Error::BrowserUnavailable(
                "chromium exited (or spoke nonsense) before it answered on its CDP pipe".into(),
            ));
        }
    }
}

/// Accepts connections until one completes the WebSocket handshake on `path`; others are
/// refused (404) and dropped.
async fn accept_one(
    listener: &tokio::net::TcpListener,
    path: &str,
) -> Option<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>> {
    loop {
        let (stream, _) = listener.accept().await.ok()?;
        // the shape is tungstenite's `handshake::server::Callback`; its error type is not ours
        #[allow(clippy::result_large_err)]
        let check = |req: &Request,
                     res: Response|
         -> std::result::Result<Response, ErrorResponse> {
            if req.uri().path() == path {
                Ok(res)
            } else {
                let mut refused = ErrorResponse::new(None);
                *refused.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::NOT_FOUND;
                Err(refused)
            }
        };
        if let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, check).await {
            return Some(ws);
        }
    }
}

/// Frames to the pipe (each text followed by NUL), NUL-delimited messages to frames, until
/// either side ends.
async fn relay(
    mut ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    mut to_chromium: pipe::Sender,
    mut from_chromium: pipe::Receiver,
    mut pending: Incoming,
) {
    loop {
        while let Some(message) = pending.next() {
            let Ok(text) = Utf8Bytes::try_from(message.freeze()) else { return };
            if ws.send(Message::Text(text)).await.is_err() {
                return;
            }
        }
        tokio::select! {
            frame = ws.next() => {
                let bytes: bytes::Bytes = match frame {
                    Some(Ok(Message::Text(t))) => t.into(),
                    Some(Ok(Message::Binary(b))) => b,
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                    Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                };
                if to_chromium.write_all(&bytes).await.is_err()
                    || to_chromium.write_all(b"\0").await.is_err()
                {
                    return;
                }
            }
            more = pending.fill(&mut from_chromium) => {
                if !more {
                    let _ = ws.close(None).await;
                    return;
                }
            }
        }
    }
}

/// What Chromium wrote and was not relayed yet: complete messages (NUL-terminated) come out one
/// by one; a partial one is not scanned twice.
#[derive(Default)]
struct Incoming {
    buf: BytesMut,
    /// Bytes of `buf` known to hold no NUL.
    scanned: usize,
}

impl Incoming {
    fn next(&mut self) -> Option<BytesMut> {
        let Some(at) = self.buf[self.scanned..].iter().position(|b| *b == 0) else {
            self.scanned = self.buf.len();
            return None;
        };
        let message = self.buf.split_to(self.scanned + at);
        self.buf.advance(1);
        self.scanned = 0;
        Some(message)
    }

    /// Reads more from Chromium; `false` at its end, on an error, or past [`MAX_MESSAGE`].
    async fn fill(&mut self, from: &mut pipe::Receiver) -> bool {
        matches!(from.read_buf(&mut self.buf).await, Ok(n) if n > 0)
            && self.buf.len() <= MAX_MESSAGE
    }
}
