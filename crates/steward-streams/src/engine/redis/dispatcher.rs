//! The live feed of a node: ONE pub/sub connection that carries the channel of every stream
//! with a local receiver ([`StreamStore::live`](crate::engine::StreamStore::live)).
//!
//! - A stream's channel is subscribed when its first receiver registers and unsubscribed when
//!   its last receiver is dropped (each receiver is watched with `Sender::closed`: nothing scans
//!   the streams on a timer).
//! - Messages are decoded into [`LiveEvent::Publication`] and handed over in channel order with
//!   `try_send`: a slow receiver never holds the others up. A full receiver misses publications
//!   until it has room again; then it gets one [`LiveEvent::Lost`] (its subscribers recover).
//! - When the connection drops, every subscribed receiver gets `Lost(reason)`; the dispatcher
//!   reconnects with backoff (100 ms doubling to 5 s) and subscribes again, and then each of
//!   those receivers gets a second `Lost`: a recovery started after it misses nothing (the
//!   channel is subscribed again before it).
//! - A store that registers a receiver gets a `ready` signal once its channel is subscribed;
//!   its next operation waits for it, so a snapshot taken after `live()` cannot miss a
//!   publication made before the subscription.
//!
//! The state (registrations, watches) outlives one run of the dispatcher: registrations made
//! while it does not run wait in the command channel, and a restarted dispatcher subscribes
//! everything again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt as _, StreamExt as _};
use redis::aio::{PubSubSink, PubSubStream};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{OwnedMutexGuard, mpsc, oneshot};
use tracing::{debug, info, warn};

use super::codec;
use crate::engine::LiveEvent;

/// First wait before reconnecting; doubles per failed attempt.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait before reconnecting.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often an idle pub/sub connection is checked with `PING` (a half-open connection is
/// noticed within this plus the timeout).
const PING_EVERY: Duration = Duration::from_secs(5);
/// Most channels per `SUBSCRIBE` when subscribing everything again.
const SUBSCRIBE_BATCH: usize = 1000;

/// A request of a store to the dispatcher.
#[derive(Debug)]
pub(super) enum Command {
    /// Feed `sender` with the publications of `channel`; `ready` fires once it is subscribed.
    Register {
        /// The stream's channel.
        channel: Arc<str>,
        /// The receiver's sender.
        sender: mpsc::Sender<LiveEvent>,
        /// Fired (or dropped) once the channel is subscribed.
        ready: oneshot::Sender<()>,
    },
}

/// The dispatcher's state, kept across runs.
#[derive(Debug)]
pub(super) struct Dispatcher {
    /// Registrations from stores.
    commands: mpsc::UnboundedReceiver<Command>,
    /// Channels with at least one receiver.
    channels: HashMap<Arc<str>, Channel>,
    /// Receivers dropped, or with room again after an overflow.
    watches: FuturesUnordered<BoxFuture<'static, Watch>>,
    /// The next receiver id.
    next_id: u64,
}

/// One channel's receivers.
#[derive(Debug)]
struct Channel {
    name: Arc<str>,
    subscribers: Vec<Subscriber>,
    /// Subscribed on the current connection.
    subscribed: bool,
    /// Stores waiting for the subscription.
    ready: Vec<oneshot::Sender<()>>,
}

/// One receiver.
#[derive(Debug)]
struct Subscriber {
    id: u64,
    sender: mpsc::Sender<LiveEvent>,
    /// It was full: publications are skipped until it has room for a `Lost`.
    overflowed: bool,
    /// Its feed was interrupted: a `Lost` follows once the channel is subscribed again.
    interrupted: bool,
}

/// Something a watch noticed.
enum Watch {
    /// A receiver was dropped.
    Closed { channel: Arc<str>, id: u64 },
    /// An overflowed receiver has room again.
    Room { channel: Arc<str>, id: u64, permit: mpsc::OwnedPermit<LiveEvent> },
    /// An overflowed receiver went (its `Closed` watch removes it).
    Nothing,
}

/// The pub/sub connection, while there is one.
struct Connection<'a> {
    sink: &'a mut PubSubSink,
    timeout: Duration,
}

impl Connection<'_> {
    async fn subscribe(&mut self, channels: &[&str]) -> Result<(), String> {
        bounded(self.timeout, "SUBSCRIBE", self.sink.subscribe(channels)).await
    }

    async fn unsubscribe(&mut self, channel: &str) -> Result<(), String> {
        bounded(self.timeout, "UNSUBSCRIBE", self.sink.unsubscribe(channel)).await
    }
}

/// `call` within `timeout`; the reason the connection is dropped otherwise.
async fn bounded<T>(
    timeout: Duration,
    what: &str,
    call: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(format!("redis pub/sub {what} failed: {e}")),
        Err(_) => Err(format!("redis pub/sub {what} not answered within {timeout:?}")),
    }
}

impl Dispatcher {
    /// An idle dispatcher reading registrations from `commands`.
    pub(super) fn new(commands: mpsc::UnboundedReceiver<Command>) -> Self {
        Self { commands, channels: HashMap::new(), watches: FuturesUnordered::new(), next_id: 0 }
    }

    /// Runs the live feed until dropped: connects, serves, and on a lost connection tells the
    /// receivers and reconnects with backoff.
    ///
    /// # Cancel safety
    /// Dropping it drops the connection; the state stays, and the next run subscribes again
    /// (receivers that were subscribed get `Lost`).
    pub(super) async fn run(
        mut this: OwnedMutexGuard<Self>,
        client: redis::Client,
        timeout: Duration,
    ) {
        // an earlier run's connection is gone
        this.interrupted("the redis live feed restarted");
        let mut backoff = MIN_BACKOFF;
        loop {
            let reason = match bounded(timeout, "connection", client.get_async_pubsub()).await {
                Ok(pubsub) => {
                    let (mut sink, stream) = pubsub.split();
                    let connection = Connection { sink: &mut sink, timeout };
                    this.serve(connection, stream, &mut backoff).await
                }
                Err(reason) => reason,
            };
            this.interrupted(&reason);
            warn!(error = %reason, retry_in = ?backoff, "redis live feed lost, reconnecting");
            this.offline(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Serves one connection; answers why it ended.
    async fn serve(
        &mut self,
        mut conn: Connection<'_>,
        mut stream: PubSubStream,
        backoff: &mut Duration,
    ) -> String {
        let names: Vec<Arc<str>> = self.channels.keys().cloned().collect();
        for batch in names.chunks(SUBSCRIBE_BATCH) {
            let batch: Vec<&str> = batch.iter().map(|c| &**c).collect();
            if let Err(reason) = conn.subscribe(&batch).await {
                return reason;
            }
        }
        for channel in self.channels.values_mut() {
            channel.subscribed_now(&mut self.watches);
        }
        *backoff = MIN_BACKOFF;
        info!(channels = names.len(), "redis live feed connected");
        let start = tokio::time::Instant::now() + PING_EVERY;
        let mut ping = tokio::time::interval_at(start, PING_EVERY);
        loop {
            tokio::select! {
                message = stream.next() => match message {
                    Some(message) => self.dispatch(&message),
                    None => return "the redis pub/sub connection closed".to_owned(),
                },
                Some(command) = self.commands.recv() => {
                    if let Err(reason) = self.register(command, Some(&mut conn)).await {
                        return reason;
                    }
                }
                Some(watch) = self.watches.next(), if !self.watches.is_empty() => {
                    if let Err(reason) = self.watched(watch, Some(&mut conn)).await {
                        return reason;
                    }
                }
                _ = ping.tick() => {
                    let pong = conn.sink.ping::<redis::Value>();
                    if let Err(reason) = bounded(conn.timeout, "PING", pong).await {
                        return reason;
                    }
                }
            }
        }
    }

    /// Waits `backoff` without a connection, keeping registrations and watches up to date.
    async fn offline(&mut self, backoff: Duration) {
        let sleep = tokio::time::sleep(backoff);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => return,
                Some(command) = self.commands.recv() => {
                    // without a connection nothing can fail
                    let _ = self.register(command, None).await;
                }
                Some(watch) = self.watches.next(), if !self.watches.is_empty() => {
                    let _ = self.watched(watch, None).await;
                }
            }
        }
    }

    /// A store registered a receiver: subscribes its channel if it is the first one.
    async fn register(
        &mut self,
        command: Command,
        conn: Option<&mut Connection<'_>>,
    ) -> Result<(), String> {
        let Command::Register { channel: name, sender, ready } = command;
        let id = self.next_id;
        self.next_id += 1;
        let closed = sender.clone();
        let watched = name.clone();
        self.watches.push(
            async move {
                closed.closed().await;
                Watch::Closed { channel: watched, id }
            }
            .boxed(),
        );
        let channel = self.channels.entry(name.clone()).or_insert_with(|| Channel {
            name: name.clone(),
            subscribers: Vec::new(),
            subscribed: false,
            ready: Vec::new(),
        });
        channel.subscribers.push(Subscriber { id, sender, overflowed: false, interrupted: false });
        if channel.subscribed {
            let _ = ready.send(());
            return Ok(());
        }
        channel.ready.push(ready);
        let Some(conn) = conn else { return Ok(()) };
        conn.subscribe(&[&*name]).await?;
        debug!(channel = %name, "redis live feed subscribed");
        if let Some(channel) = self.channels.get_mut(&name) {
            channel.subscribed_now(&mut self.watches);
        }
        Ok(())
    }

    /// A watch fired: a receiver went (the last one of its channel unsubscribes it), or an
    /// overflowed one has room for its `Lost`.
    async fn watched(
        &mut self,
        watch: Watch,
        conn: Option<&mut Connection<'_>>,
    ) -> Result<(), String> {
        match watch {
            Watch::Closed { channel: name, id } => {
                let Some(channel) = self.channels.get_mut(&name) else { return Ok(()) };
                channel.subscribers.retain(|s| s.id != id);
                if !channel.subscribers.is_empty() {
                    return Ok(());
                }
                let subscribed = channel.subscribed;
                self.channels.remove(&name);
                if let (true, Some(conn)) = (subscribed, conn) {
                    conn.unsubscribe(&name).await?;
                    debug!(channel = %name, "redis live feed unsubscribed");
                }
            }
            Watch::Room { channel, id, permit } => {
                let subscriber = self
                    .channels
                    .get_mut(&channel)
                    .and_then(|c| c.subscribers.iter_mut().find(|s| s.id == id));
                if let Some(subscriber) = subscriber {
                    subscriber.overflowed = false;
                    permit.send(LiveEvent::Lost(
                        "the live feed overflowed: publications were dropped".to_owned(),
                    ));
                }
            }
            Watch::Nothing => {}
        }
        Ok(())
    }

    /// Hands a message to the receivers of its channel.
    fn dispatch(&mut self, message: &redis::Msg) {
        let Some(Channel { name, subscribers, .. }) =
            self.channels.get_mut(message.get_channel_name())
        else {
            return; // unsubscribed meanwhile
        };
        let event = match codec::decode_live(message.get_payload_bytes()) {
            Ok((epoch, publication)) => LiveEvent::Publication { epoch, publication },
            Err(e) => {
                warn!(channel = %name, error = %e, "undecodable publication on a redis channel");
                LiveEvent::Lost(format!("an undecodable publication arrived: {e}"))
            }
        };
        for subscriber in subscribers {
            deliver(subscriber, name, event.clone(), &mut self.watches);
        }
    }

    /// The connection is gone: every subscribed receiver gets `Lost(reason)`.
    fn interrupted(&mut self, reason: &str) {
        for Channel { name, subscribers, subscribed, .. } in self.channels.values_mut() {
            if !std::mem::take(subscribed) {
                continue;
            }
            for subscriber in subscribers {
                subscriber.interrupted = true;
                deliver(subscriber, name, LiveEvent::Lost(reason.to_owned()), &mut self.watches);
            }
        }
    }
}

impl Channel {
    /// The channel is subscribed: waiting stores go on, interrupted receivers get their second
    /// `Lost`.
    fn subscribed_now(&mut self, watches: &mut FuturesUnordered<BoxFuture<'static, Watch>>) {
        self.subscribed = true;
        for ready in self.ready.drain(..) {
            let _ = ready.send(());
        }
        for subscriber in &mut self.subscribers {
            if std::mem::take(&mut subscriber.interrupted) {
                let lost = LiveEvent::Lost(
                    "the redis live feed is back: recover what was missed".to_owned(),
                );
                deliver(subscriber, &self.name, lost, watches);
            }
        }
    }
}

/// Hands `event` to one receiver without waiting; a full one is marked overflowed and watched
/// for room.
fn deliver(
    subscriber: &mut Subscriber,
    channel: &Arc<str>,
    event: LiveEvent,
    watches: &mut FuturesUnordered<BoxFuture<'static, Watch>>,
) {
    if subscriber.overflowed {
        return;
    }
    match subscriber.sender.try_send(event) {
        Ok(()) | Err(TrySendError::Closed(_)) => {} // a closed one is removed by its watch
        Err(TrySendError::Full(_)) => {
            subscriber.overflowed = true;
            let sender = subscriber.sender.clone();
            let (channel, id) = (channel.clone(), subscriber.id);
            watches.push(
                async move {
                    match sender.reserve_owned().await {
                        Ok(permit) => Watch::Room { channel, id, permit },
                        Err(_) => Watch::Nothing,
                    }
                }
                .boxed(),
            );
        }
    }
}
