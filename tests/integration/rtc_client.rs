//! A WebRTC test client for `GET /v1/rtc` (docs/protocol/rtc.md): the JSON signaling socket
//! (tokio-tungstenite) plus one webrtc-rs PeerConnection, with what the tests observe (every
//! server message, RTP packets per remote track, data-channel messages) and raw, hostile helpers.
//!
//! Every task a client starts is aborted when it is closed or dropped; `live_handlers()` counts the
//! PeerConnection event handlers still alive (each one freed with its PeerConnection's core), so a
//! test can check that the client side does not leak either.
#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::media_stream::MediaStreamTrack;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceCandidateInit, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSdpType, RTCSessionDescription, Registry,
    register_default_interceptors,
};

/// The label of the data channel the client creates in its first offer.
pub(crate) const DATA_CHANNEL_LABEL: &str = "data";
/// Opus as `register_default_codecs` registers it (payload type 111).
const OPUS_PAYLOAD_TYPE: u8 = 111;
/// 20 ms of 48 kHz audio: the RTP timestamp step of one packet.
const OPUS_FRAME_SAMPLES: u32 = 960;
/// 50 packets a second.
const AUDIO_PACKET_INTERVAL: Duration = Duration::from_millis(20);
/// An Opus "silence" frame; the server forwards payloads unread, so any bytes would do.
const OPUS_SILENCE: [u8; 3] = [0xf8, 0xff, 0xfe];

static LIVE_HANDLERS: AtomicUsize = AtomicUsize::new(0);

/// PeerConnection event handlers of every client in this process that are still alive: a handler
/// is freed with its PeerConnection's core, so after every client closed this drops back (the
/// tests run in one process, so compare with a value taken before, or use `LeakProbe`).
pub(crate) fn live_handlers() -> usize {
    LIVE_HANDLERS.load(Ordering::SeqCst)
}

/// Starts a task owned by a client: its abort handle goes into the client's task list.
fn spawn_owned<F>(tasks: &Mutex<Vec<AbortHandle>>, fut: F) -> AbortHandle
where
    F: Future<Output = ()> + Send + 'static,
{
    #[allow(clippy::disallowed_methods)]
    // test client: it holds the handle, aborts it on close/drop
    let handle = tokio::spawn(fut).abort_handle();
    let mut tasks = tasks.lock().unwrap();
    tasks.retain(|t| !t.is_finished());
    tasks.push(handle.clone());
    handle
}

/// webrtc-rs's tokio runtime, keeping the abort handle of every task it starts for this
/// client's connection (its driver, which owns the UDP socket), so that a test can make the
/// client vanish without a word: [`RtcClient::freeze`].
#[derive(Debug, Default)]
struct FreezableRuntime {
    tasks: Mutex<Vec<AbortHandle>>,
}

/// A task of [`FreezableRuntime`].
struct FreezableTask(tokio::task::JoinHandle<()>);

impl webrtc::runtime::JoinHandle for FreezableTask {
    fn detach(&self) {}

    fn abort(&self) {
        self.0.abort();
    }

    fn is_finished(&self) -> bool {
        self.0.is_finished()
    }
}

impl webrtc::runtime::Runtime for FreezableRuntime {
    fn spawn(
        &self,
        future: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Box<dyn webrtc::runtime::JoinHandle> {
        #[allow(clippy::disallowed_methods)]
        // test client: the connection's own tasks, aborted by `freeze` or ended by `close()`
        let handle = tokio::spawn(future);
        let mut tasks = self.tasks.lock().unwrap();
        tasks.retain(|t| !t.is_finished());
        tasks.push(handle.abort_handle());
        Box::new(FreezableTask(handle))
    }

    fn wrap_udp_socket(
        &self,
        socket: std::net::UdpSocket,
    ) -> std::io::Result<Arc<dyn webrtc::runtime::AsyncUdpSocket>> {
        webrtc::runtime::TokioRuntime.wrap_udp_socket(socket)
    }

    fn wrap_tcp_listener(
        &self,
        listener: std::net::TcpListener,
    ) -> std::io::Result<Arc<dyn webrtc::runtime::AsyncTcpListener>> {
        webrtc::runtime::TokioRuntime.wrap_tcp_listener(listener)
    }

    fn connect_tcp<'a>(
        &'a self,
        remote_addr: std::net::SocketAddr,
    ) -> std::pin::Pin<
        Box<
            dyn Future<Output = std::io::Result<Arc<dyn webrtc::runtime::AsyncTcpStream>>>
                + Send
                + 'a,
        >,
    > {
        Box::pin(async move { webrtc::runtime::TokioRuntime.connect_tcp(remote_addr).await })
    }

    fn resolve_host<'a>(
        &'a self,
        host: &'a str,
    ) -> std::pin::Pin<
        Box<dyn Future<Output = std::io::Result<Vec<std::net::SocketAddr>>> + Send + 'a>,
    > {
        Box::pin(async move { webrtc::runtime::TokioRuntime.resolve_host(host).await })
    }

    fn sleep(
        &self,
        duration: Duration,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        webrtc::runtime::TokioRuntime.sleep(duration)
    }

    fn interval(&self, period: Duration) -> Box<dyn webrtc::runtime::AsyncInterval> {
        webrtc::runtime::TokioRuntime.interval(period)
    }

    fn block_on(&self, future: std::pin::Pin<Box<dyn Future<Output = ()> + '_>>) {
        webrtc::runtime::TokioRuntime.block_on(future);
    }
}

/// What the server said in `joined`.
#[derive(Debug, Clone)]
pub(crate) struct Joined {
    pub(crate) peer_id: String,
    pub(crate) room: String,
    /// The `participants` array as sent (`peer_id`, `name`, `tracks`).
    pub(crate) participants: Vec<Value>,
    /// The whole message.
    pub(crate) raw: Value,
}

/// Tells whether a closed client's PeerConnection (and its event handler) was freed.
#[derive(Clone)]
pub(crate) struct LeakProbe {
    handler: Weak<Handler>,
    pc: Weak<dyn PeerConnection>,
}

impl LeakProbe {
    /// True once the event handler is gone (the PeerConnection's core dropped it).
    pub(crate) fn handler_freed(&self) -> bool {
        self.handler.strong_count() == 0
    }

    /// True once nobody holds the PeerConnection handle any more.
    pub(crate) fn pc_freed(&self) -> bool {
        self.pc.strong_count() == 0
    }
}

/// State shared by the client, its tasks and its PeerConnection handler.
#[derive(Default)]
struct Shared {
    /// Every JSON message the server sent, in order.
    messages: Mutex<Vec<Value>>,
    /// The runtime of the client's connection (`freeze`).
    runtime: Arc<FreezableRuntime>,
    /// Text frames that were not JSON objects.
    unparsed: Mutex<Vec<String>>,
    /// The server's Close frame (code, reason), if one came.
    close_frame: Mutex<Option<(u16, String)>>,
    /// The socket's read side ended (Close, error or EOF).
    ws_ended: AtomicBool,
    /// RTP packets received, by the remote track's id.
    rtp: Mutex<HashMap<String, u64>>,
    rtp_total: AtomicU64,
    /// Remote tracks seen (`on_track`): (track id, stream id, kind).
    tracks: Mutex<Vec<(String, String, String)>>,
    /// Data-channel messages received (on any channel).
    data: Mutex<Vec<Bytes>>,
    data_open: AtomicBool,
    pc_state: Mutex<Option<RTCPeerConnectionState>>,
    pc_states: Mutex<Vec<RTCPeerConnectionState>>,
    /// Local candidates sent, remote candidates applied.
    candidates_sent: AtomicUsize,
    candidates_added: AtomicUsize,
    /// Offers from the server answered, answers from the server applied.
    offers_answered: AtomicUsize,
    answers_applied: AtomicUsize,
    /// Failures of the negotiation task (a bad SDP from the server, a failed add_ice_candidate...).
    negotiation_errors: Mutex<Vec<String>>,
    /// The audio track's next RTP sequence number and timestamp.
    seq: AtomicU16,
    timestamp: AtomicU32,
    /// Tasks started by the client or its handler.
    tasks: Mutex<Vec<AbortHandle>>,
    /// Woken on every change above.
    changed: Notify,
}

impl Shared {
    fn bump(&self) {
        self.changed.notify_waiters();
    }

    fn error(&self, what: String) {
        self.negotiation_errors.lock().unwrap().push(what);
        self.bump();
    }

    fn abort_all(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

/// Counts an RTP packet stream and records the data channels the server opens.
struct Handler {
    shared: Arc<Shared>,
    candidates: mpsc::UnboundedSender<RTCIceCandidateInit>,
}

impl Handler {
    fn new(shared: Arc<Shared>, candidates: mpsc::UnboundedSender<RTCIceCandidateInit>) -> Self {
        LIVE_HANDLERS.fetch_add(1, Ordering::SeqCst);
        Self { shared, candidates }
    }
}

impl Drop for Handler {
    fn drop(&mut self) {
        LIVE_HANDLERS.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        match event.candidate.to_json() {
            Ok(init) => {
                let _ = self.candidates.send(init);
            }
            Err(e) => self.shared.error(format!("local candidate to_json: {e}")),
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        *self.shared.pc_state.lock().unwrap() = Some(state);
        self.shared.pc_states.lock().unwrap().push(state);
        self.shared.bump();
    }

    async fn on_data_channel(&self, dc: Arc<dyn DataChannel>) {
        // only the reading task holds the channel: a channel kept in the handler would hold the
        // PeerConnection that holds the handler (a cycle)
        let shared = self.shared.clone();
        let _ = spawn_owned(&self.shared.tasks, poll_data_channel(shared, dc));
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let shared = self.shared.clone();
        spawn_owned(&self.shared.tasks, async move {
            let id = track.track_id().await;
            let stream = track.stream_id().await;
            let kind = match track.kind().await {
                RtpCodecKind::Audio => "audio",
                RtpCodecKind::Video => "video",
                _ => "unknown",
            };
            shared.tracks.lock().unwrap().push((id.clone(), stream, kind.to_owned()));
            shared.rtp.lock().unwrap().entry(id.clone()).or_insert(0);
            shared.bump();
            while let Some(event) = track.poll().await {
                match event {
                    TrackRemoteEvent::OnRtpPacket(_) => {
                        *shared.rtp.lock().unwrap().entry(id.clone()).or_insert(0) += 1;
                        shared.rtp_total.fetch_add(1, Ordering::Relaxed);
                        shared.bump();
                    }
                    TrackRemoteEvent::OnEnded => break,
                    _ => {}
                }
            }
        });
    }
}

/// Reads a data channel until it closes: marks it open, records its messages.
async fn poll_data_channel(shared: Arc<Shared>, dc: Arc<dyn DataChannel>) {
    while let Some(event) = dc.poll().await {
        match event {
            DataChannelEvent::OnOpen => {
                shared.data_open.store(true, Ordering::SeqCst);
                shared.bump();
            }
            DataChannelEvent::OnMessage(m) => {
                shared.data.lock().unwrap().push(m.data.freeze());
                shared.bump();
            }
            DataChannelEvent::OnClose => break,
            _ => {}
        }
    }
}

/// What the writer task does with the socket.
enum Out {
    Text(String),
    /// Sends a Close frame (the reader then sees the server's answer).
    Close(u16, String),
}

/// What `start` sets up.
struct Media {
    pc: Arc<dyn PeerConnection>,
    dc: Arc<dyn DataChannel>,
    audio: Option<Arc<TrackLocalStaticRTP>>,
    audio_ssrc: u32,
    probe: LeakProbe,
    negotiate: mpsc::UnboundedSender<Negotiate>,
}

/// Requests to the negotiation task (which alone touches the descriptions).
enum Negotiate {
    /// Create, apply and send an offer (the client's re-offer after adding a track).
    Offer,
}

/// A test client: one signaling socket, at most one PeerConnection.
pub(crate) struct RtcClient {
    shared: Arc<Shared>,
    out: mpsc::UnboundedSender<Out>,
    /// Signaling messages (`answer`, `offer`, `candidate`) for the negotiation task, until `start`.
    signaling: Mutex<Option<mpsc::UnboundedReceiver<Value>>>,
    /// A duplicate of the socket's file descriptor, to cut the TCP connection at once.
    tcp: Mutex<Option<std::net::TcpStream>>,
    media: tokio::sync::Mutex<Option<Media>>,
    /// `next_message_of_type`'s position per type.
    cursors: Mutex<HashMap<String, usize>>,
    audio_task: Mutex<Option<AbortHandle>>,
    closed: AtomicBool,
}

impl RtcClient {
    /// Opens the signaling socket. `ws_url` is `ws://host:port/v1/rtc?token=…`. A refused upgrade
    /// is an error whose `downcast_ref::<tungstenite::Error>()` is `Error::Http(response)`.
    pub(crate) async fn connect(ws_url: &str) -> Result<Self> {
        Self::connect_with(ws_url, &[]).await
    }

    /// `connect` with extra request headers (e.g. `("authorization", "Bearer stw_…")`).
    pub(crate) async fn connect_with(ws_url: &str, headers: &[(&str, &str)]) -> Result<Self> {
        let mut request = ws_url.into_client_request()?;
        for (k, v) in headers {
            let name = tungstenite::http::HeaderName::from_bytes(k.as_bytes())?;
            request.headers_mut().insert(name, v.parse()?);
        }
        let host = request.uri().host().context("no host in the URL")?.to_owned();
        let port = request.uri().port_u16().unwrap_or(80);
        let tcp = TcpStream::connect((host.as_str(), port)).await?;
        tcp.set_nodelay(true)?;
        let std_tcp = tcp.into_std()?;
        let dup = std_tcp.try_clone()?;
        let tcp = TcpStream::from_std(std_tcp)?;
        let (ws, _response) = tokio_tungstenite::client_async(request, tcp).await?;
        let (mut sink, mut stream) = ws.split();

        let shared = Arc::new(Shared::default());
        shared.seq.store(fastrand_u16(), Ordering::Relaxed);
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Out>();
        let (sig_tx, sig_rx) = mpsc::unbounded_channel::<Value>();

        // writer: everything the client sends goes through here, in order
        spawn_owned(&shared.tasks, async move {
            while let Some(out) = out_rx.recv().await {
                let msg = match out {
                    Out::Text(t) => Message::text(t),
                    Out::Close(code, reason) => Message::Close(Some(CloseFrame {
                        code: CloseCode::from(code),
                        reason: reason.into(),
                    })),
                };
                if sink.send(msg).await.is_err() {
                    break;
                }
            }
        });

        // reader: records every message; hands signaling to the negotiation task
        let reader_shared = shared.clone();
        spawn_owned(&shared.tasks, async move {
            let shared = reader_shared;
            while let Some(frame) = stream.next().await {
                match frame {
                    Ok(Message::Text(text)) => match serde_json::from_str::<Value>(&text) {
                        Ok(v) if v.is_object() => {
                            let ty = v["type"].as_str().unwrap_or_default();
                            if matches!(ty, "answer" | "offer" | "candidate") {
                                let _ = sig_tx.send(v.clone());
                            }
                            shared.messages.lock().unwrap().push(v);
                            shared.bump();
                        }
                        _ => {
                            shared.unparsed.lock().unwrap().push(text.to_string());
                            shared.bump();
                        }
                    },
                    Ok(Message::Close(frame)) => {
                        let (code, reason) = frame
                            .map(|f| (u16::from(f.code), f.reason.to_string()))
                            .unwrap_or((1005, String::new()));
                        *shared.close_frame.lock().unwrap() = Some((code, reason));
                        shared.bump();
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            shared.ws_ended.store(true, Ordering::SeqCst);
            shared.bump();
        });

        Ok(Self {
            shared,
            out: out_tx,
            signaling: Mutex::new(Some(sig_rx)),
            tcp: Mutex::new(Some(dup)),
            media: tokio::sync::Mutex::new(None),
            cursors: Mutex::new(HashMap::new()),
            audio_task: Mutex::new(None),
            closed: AtomicBool::new(false),
        })
    }

    /// Sends `join` (without `name` if it is empty) and waits for `joined` (an `error` or `closing`
    /// instead is an error).
    pub(crate) async fn join(&self, room: &str, name: &str) -> Result<Joined> {
        let from = self.shared.messages.lock().unwrap().len();
        let join = if name.is_empty() {
            json!({"type": "join", "room": room})
        } else {
            json!({"type": "join", "room": room, "name": name})
        };
        self.send_json(&join)?;
        let reply = self
            .wait_for(Duration::from_secs(20), || {
                let messages = self.shared.messages.lock().unwrap();
                messages[from..]
                    .iter()
                    .find(|m| matches!(m["type"].as_str(), Some("joined" | "error" | "closing")))
                    .cloned()
            })
            .await
            .context("no reply to join")?;
        if reply["type"] != "joined" {
            bail!("join refused: {reply}");
        }
        Ok(Joined {
            peer_id: reply["peer_id"].as_str().unwrap_or_default().to_owned(),
            room: reply["room"].as_str().unwrap_or_default().to_owned(),
            participants: reply["participants"].as_array().cloned().unwrap_or_default(),
            raw: reply,
        })
    }

    /// Builds the PeerConnection (UDP on 127.0.0.1, no ICE servers, default codecs and
    /// interceptors), creates the data channel `"data"`, adds an Opus track if `publish_audio`,
    /// sends the offer, and starts the negotiation task: it applies the server's `answer`, answers
    /// every server `offer`, and applies the server's candidates (held until a remote description
    /// is set). Local candidates are sent after the offer. Returns once the offer is sent.
    pub(crate) async fn start(&self, publish_audio: bool) -> Result<()> {
        let mut media = self.media.lock().await;
        if media.is_some() {
            bail!("already started");
        }
        let sig_rx = self.signaling.lock().unwrap().take().context("signaling taken")?;

        let mut media_engine = MediaEngine::default();
        media_engine.register_default_codecs()?;
        let registry = register_default_interceptors(Registry::new(), &mut media_engine)?;
        let (cand_tx, mut cand_rx) = mpsc::unbounded_channel::<RTCIceCandidateInit>();
        let handler = Arc::new(Handler::new(self.shared.clone(), cand_tx));
        let weak_handler = Arc::downgrade(&handler);
        let pc = PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .with_handler(handler as Arc<dyn PeerConnectionEventHandler>)
            .with_runtime(self.shared.runtime.clone())
            .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
            .build()
            .await?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);

        let dc = pc.create_data_channel(DATA_CHANNEL_LABEL, None).await?;
        spawn_owned(&self.shared.tasks, poll_data_channel(self.shared.clone(), dc.clone()));

        let audio_ssrc = fastrand_u32();
        let audio = if publish_audio {
            let track = Arc::new(opus_track(audio_ssrc));
            pc.add_track(track.clone() as Arc<dyn TrackLocal>).await?;
            Some(track)
        } else {
            None
        };

        let offer = pc.create_offer(None).await?;
        pc.set_local_description(offer).await?;
        let sdp = pc.local_description().await.context("no local description")?.sdp;
        self.send_json(&json!({"type": "offer", "sdp": sdp}))?;

        // local candidates, only after the offer
        let out = self.out.clone();
        let shared = self.shared.clone();
        spawn_owned(&self.shared.tasks, async move {
            while let Some(c) = cand_rx.recv().await {
                let msg = json!({"type": "candidate", "candidate": c});
                if out.send(Out::Text(msg.to_string())).is_err() {
                    break;
                }
                shared.candidates_sent.fetch_add(1, Ordering::SeqCst);
                shared.bump();
            }
        });

        let (neg_tx, neg_rx) = mpsc::unbounded_channel();
        spawn_owned(
            &self.shared.tasks,
            negotiate(pc.clone(), self.shared.clone(), self.out.clone(), sig_rx, neg_rx),
        );

        *media = Some(Media {
            probe: LeakProbe { handler: weak_handler, pc: Arc::downgrade(&pc) },
            pc,
            dc,
            audio,
            audio_ssrc,
            negotiate: neg_tx,
        });
        Ok(())
    }

    /// After `start(false)`: adds an Opus track and re-offers (through the negotiation task, so
    /// never while a server offer waits for its answer).
    pub(crate) async fn publish_audio(&self) -> Result<()> {
        let mut media = self.media.lock().await;
        let media = media.as_mut().context("not started")?;
        if media.audio.is_some() {
            bail!("already publishing audio");
        }
        let track = Arc::new(opus_track(media.audio_ssrc));
        media.pc.add_track(track.clone() as Arc<dyn TrackLocal>).await?;
        media.audio = Some(track);
        media.negotiate.send(Negotiate::Offer).map_err(|_| anyhow!("negotiation task ended"))?;
        Ok(())
    }

    /// Waits until the PeerConnection is `connected` and the data channel is open.
    pub(crate) async fn wait_connected(&self, timeout: Duration) -> Result<()> {
        let state = self
            .wait_for(timeout, || {
                let state = *self.shared.pc_state.lock().unwrap();
                match state {
                    Some(RTCPeerConnectionState::Connected)
                        if self.shared.data_open.load(Ordering::SeqCst) =>
                    {
                        Some(Ok(()))
                    }
                    Some(s @ (RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed)) => {
                        Some(Err(anyhow!("peer connection {s}")))
                    }
                    _ => None,
                }
            })
            .await;
        match state {
            Some(r) => r,
            None => bail!(
                "not connected within {timeout:?}: states {:?}, data channel open {}, errors {:?}",
                self.shared.pc_states.lock().unwrap(),
                self.shared.data_open.load(Ordering::SeqCst),
                self.negotiation_errors()
            ),
        }
    }

    /// The PeerConnection's current state (None before `start` or before its first change).
    pub(crate) fn pc_state(&self) -> Option<RTCPeerConnectionState> {
        *self.shared.pc_state.lock().unwrap()
    }

    /// Every state the PeerConnection went through.
    pub(crate) fn pc_states(&self) -> Vec<RTCPeerConnectionState> {
        self.shared.pc_states.lock().unwrap().clone()
    }

    /// Writes `n` synthetic Opus packets to the local track, one every 20 ms (50/s). Returns how
    /// many the track accepted.
    pub(crate) async fn send_audio(&self, n: usize) -> Result<usize> {
        let (track, ssrc) = self.audio_track().await?;
        let mut sent = 0;
        let mut tick = tokio::time::interval(AUDIO_PACKET_INTERVAL);
        for _ in 0..n {
            tick.tick().await;
            if track.write_rtp(next_packet(&self.shared, ssrc)).await.is_ok() {
                sent += 1;
            }
        }
        Ok(sent)
    }

    /// Starts a background sender at 50 packets/s until `stop_audio` or close. The counter
    /// returned counts the packets the track accepted.
    pub(crate) async fn start_audio(&self) -> Result<Arc<AtomicU64>> {
        let (track, ssrc) = self.audio_track().await?;
        let sent = Arc::new(AtomicU64::new(0));
        let counter = sent.clone();
        let shared = self.shared.clone();
        let handle = spawn_owned(&self.shared.tasks, async move {
            let mut tick = tokio::time::interval(AUDIO_PACKET_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                if track.write_rtp(next_packet(&shared, ssrc)).await.is_ok() {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        if let Some(old) = self.audio_task.lock().unwrap().replace(handle) {
            old.abort();
        }
        Ok(sent)
    }

    /// Stops the background sender.
    pub(crate) fn stop_audio(&self) {
        if let Some(t) = self.audio_task.lock().unwrap().take() {
            t.abort();
        }
    }

    /// Sends one binary message on the data channel (waits up to 10 s for it to open).
    pub(crate) async fn send_data(&self, bytes: &[u8]) -> Result<()> {
        let dc = self.media.lock().await.as_ref().context("not started")?.dc.clone();
        let open = self
            .wait_for(Duration::from_secs(10), || {
                self.shared.data_open.load(Ordering::SeqCst).then_some(())
            })
            .await;
        open.context("data channel not open")?;
        dc.send(BytesMut::from(bytes)).await?;
        Ok(())
    }

    /// Data-channel messages received so far.
    pub(crate) fn data_received(&self) -> Vec<Bytes> {
        self.shared.data.lock().unwrap().clone()
    }

    /// Waits until at least `n` data messages arrived; returns them all.
    pub(crate) async fn wait_data(&self, n: usize, timeout: Duration) -> Result<Vec<Bytes>> {
        self.wait_for(timeout, || {
            let data = self.shared.data.lock().unwrap();
            (data.len() >= n).then(|| data.clone())
        })
        .await
        .with_context(|| format!("fewer than {n} data messages within {timeout:?}"))
    }

    /// RTP packets received, by remote track id (a track appears at 0 once `on_track` fired).
    pub(crate) fn rtp_counts(&self) -> HashMap<String, u64> {
        self.shared.rtp.lock().unwrap().clone()
    }

    /// RTP packets received on all remote tracks.
    pub(crate) fn rtp_total(&self) -> u64 {
        self.shared.rtp_total.load(Ordering::Relaxed)
    }

    /// Remote tracks seen: (track id, stream id, kind).
    pub(crate) fn remote_tracks(&self) -> Vec<(String, String, String)> {
        self.shared.tracks.lock().unwrap().clone()
    }

    /// Waits until at least `n` RTP packets arrived in total.
    pub(crate) async fn wait_rtp(&self, n: u64, timeout: Duration) -> Result<u64> {
        self.wait_for(timeout, || {
            let total = self.rtp_total();
            (total >= n).then_some(total)
        })
        .await
        .with_context(|| {
            format!("fewer than {n} RTP packets within {timeout:?}: {}", self.rtp_total())
        })
    }

    /// Every JSON message the server sent so far.
    pub(crate) fn messages(&self) -> Vec<Value> {
        self.shared.messages.lock().unwrap().clone()
    }

    /// The messages of one `type` received so far.
    pub(crate) fn messages_of_type(&self, ty: &str) -> Vec<Value> {
        self.messages().into_iter().filter(|m| m["type"] == ty).collect()
    }

    /// The next message of `type` this method has not returned yet (each call moves on).
    pub(crate) async fn next_message_of_type(&self, ty: &str, timeout: Duration) -> Result<Value> {
        let start = self.cursors.lock().unwrap().get(ty).copied().unwrap_or(0);
        let (index, message) = self
            .wait_for(timeout, || {
                let messages = self.shared.messages.lock().unwrap();
                messages
                    .iter()
                    .enumerate()
                    .skip(start)
                    .find(|(_, m)| m["type"] == ty)
                    .map(|(i, m)| (i, m.clone()))
            })
            .await
            .with_context(|| {
                format!("no `{ty}` message within {timeout:?}; got {:?}", self.messages())
            })?;
        self.cursors.lock().unwrap().insert(ty.to_owned(), index + 1);
        Ok(message)
    }

    /// Text frames from the server that were not JSON objects.
    pub(crate) fn unparsed(&self) -> Vec<String> {
        self.shared.unparsed.lock().unwrap().clone()
    }

    /// The server's Close frame, if one came: (code, reason); 1005 for a Close without a code.
    pub(crate) fn close_frame(&self) -> Option<(u16, String)> {
        self.shared.close_frame.lock().unwrap().clone()
    }

    /// Waits until the socket's read side ended; returns the server's Close frame, if any.
    pub(crate) async fn wait_ws_closed(&self, timeout: Duration) -> Result<Option<(u16, String)>> {
        self.wait_for(timeout, || self.shared.ws_ended.load(Ordering::SeqCst).then_some(()))
            .await
            .with_context(|| format!("socket still open after {timeout:?}"))?;
        Ok(self.close_frame())
    }

    /// Whether the socket's read side ended.
    pub(crate) fn ws_ended(&self) -> bool {
        self.shared.ws_ended.load(Ordering::SeqCst)
    }

    /// Errors of the negotiation task (bad server SDP, a failed `add_ice_candidate`...).
    pub(crate) fn negotiation_errors(&self) -> Vec<String> {
        self.shared.negotiation_errors.lock().unwrap().clone()
    }

    /// (local candidates sent, remote candidates applied, server offers answered, server answers
    /// applied).
    pub(crate) fn negotiation_counts(&self) -> (usize, usize, usize, usize) {
        let s = &self.shared;
        (
            s.candidates_sent.load(Ordering::SeqCst),
            s.candidates_added.load(Ordering::SeqCst),
            s.offers_answered.load(Ordering::SeqCst),
            s.answers_applied.load(Ordering::SeqCst),
        )
    }

    /// Whether the PeerConnection (handler and handle) was freed; None before `start`.
    pub(crate) async fn leak_probe(&self) -> Option<LeakProbe> {
        self.media.lock().await.as_ref().map(|m| m.probe.clone())
    }

    /// Sends a JSON value as one text frame.
    pub(crate) fn send_raw_json(&self, value: &Value) -> Result<()> {
        self.send_json(value)
    }

    /// Sends any text as one text frame.
    pub(crate) fn send_raw_text(&self, text: &str) -> Result<()> {
        self.out.send(Out::Text(text.to_owned())).map_err(|_| anyhow!("socket writer ended"))
    }

    /// Sends `leave`.
    pub(crate) fn leave(&self) -> Result<()> {
        self.send_json(&json!({"type": "leave"}))
    }

    /// Sends a Close frame (1000) and waits up to 2 s for the server's; the PeerConnection stays.
    pub(crate) async fn close_ws(&self) -> Result<Option<(u16, String)>> {
        self.close_ws_with(1000, "").await
    }

    /// Sends a Close frame with `code` and `reason`, then waits up to 2 s for the socket to end.
    pub(crate) async fn close_ws_with(
        &self,
        code: u16,
        reason: &str,
    ) -> Result<Option<(u16, String)>> {
        self.out
            .send(Out::Close(code, reason.to_owned()))
            .map_err(|_| anyhow!("socket writer ended"))?;
        self.wait_ws_closed(Duration::from_secs(2)).await
    }

    /// Cuts the TCP connection without a Close frame (the server sees the connection end, 1006);
    /// the PeerConnection stays up, so media goes on until the server gives up on the peer.
    pub(crate) fn drop_tcp(&self) {
        if let Some(tcp) = self.tcp.lock().unwrap().take() {
            let _ = tcp.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Closes the PeerConnection only (no `leave`, the socket stays): the server sees ICE go
    /// away.
    /// Makes the client vanish without a word: its connection's tasks (the driver and its UDP
    /// socket) are aborted, no DTLS close is sent, and the signaling socket stays open. The
    /// server sees ICE go `disconnected`. Call `close()` afterwards to release the rest.
    pub(crate) fn freeze(&self) {
        for task in self.shared.runtime.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    pub(crate) async fn close_pc(&self) -> Result<()> {
        self.stop_audio();
        let media = self.media.lock().await.take();
        if let Some(media) = media {
            let closed = close_media(media).await;
            // close() ends the event streams before the handler sees `closed`
            *self.shared.pc_state.lock().unwrap() = Some(RTCPeerConnectionState::Closed);
            self.shared.bump();
            closed?;
        }
        Ok(())
    }

    /// Closes everything: the audio sender, the PeerConnection (`close()`), the socket (Close
    /// 1000, waiting up to 2 s for the server's answer), then aborts every task.
    pub(crate) async fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let pc = self.close_pc().await;
        if !self.ws_ended() {
            let _ = self.close_ws().await;
        }
        self.drop_tcp();
        self.shared.abort_all();
        pc
    }

    async fn audio_track(&self) -> Result<(Arc<TrackLocalStaticRTP>, u32)> {
        let media = self.media.lock().await;
        let media = media.as_ref().context("not started")?;
        let track = media.audio.clone().context("not publishing audio")?;
        Ok((track, media.audio_ssrc))
    }

    fn send_json(&self, value: &Value) -> Result<()> {
        self.out.send(Out::Text(value.to_string())).map_err(|_| anyhow!("socket writer ended"))
    }

    /// Polls `f` on every change until it returns Some, or `timeout` passes.
    async fn wait_for<T>(&self, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.shared.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(v) = f() {
                return Some(v);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return f();
            }
        }
    }
}

impl Drop for RtcClient {
    fn drop(&mut self) {
        self.stop_audio();
        self.shared.abort_all();
        self.drop_tcp();
        // a PeerConnection left open keeps answering ICE checks: close it in the background
        if let Some(media) = self.media.get_mut().take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            #[allow(clippy::disallowed_methods)]
            // test client: a last close(), bounded by its timeout
            rt.spawn(async move {
                let _ = close_media(media).await;
            });
        }
    }
}

/// Closes a client's PeerConnection: the data channel, the senders, then `close()`, which stops the
/// driver (without it the driver runs on, detached). webrtc-rs #906 (a PeerConnection with tracks
/// never freed) is fixed in 0.21.1; removing the senders first is belt and braces. What would
/// still leak is a cycle of ours: nothing the handler holds may hold a `DataChannel` (a channel
/// holds the PeerConnection), so only the reading tasks hold channels.
async fn close_media(media: Media) -> Result<()> {
    let Media { pc, dc, audio, negotiate, .. } = media;
    drop(negotiate);
    let _ = dc.close().await;
    for sender in pc.get_senders().await {
        let _ = pc.remove_track(&sender).await;
    }
    if let Some(track) = &audio {
        track.unbind().await;
    }
    let closed = pc.close().await;
    drop(audio);
    drop(dc);
    drop(pc);
    closed.map_err(Into::into)
}

/// The negotiation task: applies the server's answers, answers its offers, applies its
/// candidates (held until a remote description is set), and makes the client's re-offers.
async fn negotiate(
    pc: Arc<dyn PeerConnection>,
    shared: Arc<Shared>,
    out: mpsc::UnboundedSender<Out>,
    mut signaling: mpsc::UnboundedReceiver<Value>,
    mut requests: mpsc::UnboundedReceiver<Negotiate>,
) {
    let mut held: Vec<RTCIceCandidateInit> = Vec::new();
    // a re-offer asked for while a server offer is being handled waits for it
    let mut offer_wanted = false;
    loop {
        let message = tokio::select! {
            m = signaling.recv() => match m { Some(m) => m, None => break },
            r = requests.recv() => {
                match r {
                    Some(Negotiate::Offer) => offer_wanted = true,
                    None => break,
                }
                if offer_wanted && pc.pending_local_description().await.is_none() {
                    offer_wanted = false;
                    if let Err(e) = send_offer(&*pc, &out).await {
                        shared.error(format!("re-offer: {e}"));
                    }
                }
                continue;
            }
        };
        match message["type"].as_str() {
            Some("answer") => {
                let sdp = message["sdp"].as_str().unwrap_or_default().to_owned();
                match RTCSessionDescription::answer(sdp) {
                    Ok(desc) => match pc.set_remote_description(desc).await {
                        Ok(()) => {
                            shared.answers_applied.fetch_add(1, Ordering::SeqCst);
                            shared.bump();
                        }
                        Err(e) => shared.error(format!("set_remote_description(answer): {e}")),
                    },
                    Err(e) => shared.error(format!("bad answer: {e}")),
                }
            }
            Some("offer") => {
                let sdp = message["sdp"].as_str().unwrap_or_default().to_owned();
                if let Err(e) = answer_offer(&*pc, &out, sdp).await {
                    shared.error(format!("answering a server offer: {e}"));
                } else {
                    shared.offers_answered.fetch_add(1, Ordering::SeqCst);
                    shared.bump();
                }
            }
            Some("candidate") => {
                let c = &message["candidate"];
                if c.is_null() || c["candidate"] == "" {
                    continue; // end of candidates
                }
                match serde_json::from_value::<RTCIceCandidateInit>(c.clone()) {
                    Ok(c) => held.push(c),
                    Err(e) => shared.error(format!("bad candidate {c}: {e}")),
                }
            }
            _ => {}
        }
        if pc.remote_description().await.is_some() {
            for c in held.drain(..) {
                match pc.add_ice_candidate(c.clone()).await {
                    Ok(()) => {
                        shared.candidates_added.fetch_add(1, Ordering::SeqCst);
                        shared.bump();
                    }
                    Err(e) => shared.error(format!("add_ice_candidate({}): {e}", c.candidate)),
                }
            }
        }
        if offer_wanted && pc.pending_local_description().await.is_none() {
            offer_wanted = false;
            if let Err(e) = send_offer(&*pc, &out).await {
                shared.error(format!("re-offer: {e}"));
            }
        }
    }
}

async fn send_offer(pc: &dyn PeerConnection, out: &mpsc::UnboundedSender<Out>) -> Result<()> {
    let offer = pc.create_offer(None).await?;
    pc.set_local_description(offer).await?;
    let sdp = pc.local_description().await.context("no local description")?.sdp;
    out.send(Out::Text(json!({"type": "offer", "sdp": sdp}).to_string()))
        .map_err(|_| anyhow!("socket writer ended"))
}

async fn answer_offer(
    pc: &dyn PeerConnection,
    out: &mpsc::UnboundedSender<Out>,
    sdp: String,
) -> Result<()> {
    // the server is the impolite side: a client offer of ours still pending is rolled back
    if pc.pending_local_description().await.is_some_and(|d| d.sdp_type == RTCSdpType::Offer) {
        pc.set_local_description(RTCSessionDescription::rollback(None)?).await?;
    }
    pc.set_remote_description(RTCSessionDescription::offer(sdp)?).await?;
    let answer = pc.create_answer(None).await?;
    pc.set_local_description(answer).await?;
    let sdp = pc.local_description().await.context("no local description")?.sdp;
    out.send(Out::Text(json!({"type": "answer", "sdp": sdp}).to_string()))
        .map_err(|_| anyhow!("socket writer ended"))
}

/// The next synthetic Opus packet of the client's audio track.
fn next_packet(shared: &Shared, ssrc: u32) -> rtp::Packet {
    let seq = shared.seq.fetch_add(1, Ordering::Relaxed);
    let ts = shared.timestamp.fetch_add(OPUS_FRAME_SAMPLES, Ordering::Relaxed);
    rtp::Packet {
        header: rtp::header::Header {
            version: 2,
            payload_type: OPUS_PAYLOAD_TYPE,
            sequence_number: seq,
            timestamp: ts,
            ssrc,
            ..Default::default()
        },
        payload: Bytes::from_static(&OPUS_SILENCE),
    }
}

/// An Opus track of the default codec, on `ssrc`.
fn opus_track(ssrc: u32) -> TrackLocalStaticRTP {
    let id = format!("audio-{ssrc:08x}");
    TrackLocalStaticRTP::new(MediaStreamTrack::new(
        format!("stream-{ssrc:08x}"),
        id.clone(),
        id,
        RtpCodecKind::Audio,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: RTCRtpCodec {
                mime_type: "audio/opus".to_owned(),
                clock_rate: 48000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                rtcp_feedback: vec![],
            },
            ..Default::default()
        }],
    ))
}

/// Random-enough numbers for SSRCs and the first sequence number (no extra dependency).
fn fastrand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id().into());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    (h.finish() >> 16) as u32 | 1
}

fn fastrand_u16() -> u16 {
    (fastrand_u32() >> 8) as u16
}
