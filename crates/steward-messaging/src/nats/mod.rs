//! The NATS JetStream backend (`[messaging] backend = "nats"`), for nats-server 2.9 and later
//! (tested with Debian's 2.9.10).
//!
//! # Mapping
//! - One shared async-nats client per node ([`NatsBroker::connect`]), reconnecting forever.
//! - A tenant's **topic** is a JetStream stream (names in `naming.rs`: stream
//!   `steward_<tenant>_<topic>`, subjects `steward.<tenant>.<topic>.<tag or ~>`), created on
//!   first send or open, then cached. `Interest` retention: a message is kept while a consumer
//!   that matched it when it was stored has not acked it, which is exactly "a group sees what was
//!   published after it was first opened; acked, it is gone for the group". `discard = new` with
//!   `max_bytes = topic_max_bytes` and `max_msgs = topic_max_messages`: a full stream refuses
//!   the publish ([`SendOutcome::RetryLater`]). `duplicate_window = dedup_window` (at least
//!   100 ms, the server's floor) with `Nats-Msg-Id` = the client id: a repeat answers
//!   `Stored { duplicate: true }` with the original's sequence. File storage, one replica.
//! - A message's fields travel in headers (`codec.rs`); its id is the stream sequence.
//! - Sending hands the batch to the broker's publish task (`publisher.rs`, started through the
//!   [`Spawner`]), which writes the messages of every send waiting at that moment back to back
//!   and routes the publish acks back by reply subject (one inbox subscription for all), all
//!   within `send_timeout` (waiting for each ack in turn is 15–20 times slower). At most
//!   16 384 messages wait for their acks at once, at most 4 096 of one tenant's; a send beyond
//!   either is answered [`SendOutcome::RetryLater`] at once.
//! - A **group** is a durable pull consumer named after it: `deliver_policy = new`,
//!   `ack_policy = explicit`, `ack_wait` = the invisible duration of the member that created
//!   it, `filter_subject` from the tag filter (an existing consumer with another filter is
//!   [`BrokerError::Conflict`]), `max_deliver = -1` (Steward dead-letters itself),
//!   `max_ack_pending = -1`, `inactive_threshold = consumer_cleanup_timeout` (nats-server 2.9
//!   honours it for durables: the group goes that long after its last pull, delivery or ack).
//!   A member whose invisible duration differs from the consumer's `ack_wait` moves each of its
//!   deliveries' deadlines with a nack-with-delay right after the fetch.
//! - [`Pull::fetch`] sends one pull request `{batch, no_wait, expires: wait}`: nats-server 2.9
//!   holds it until the first message arrives or `wait` passes, and closes it as soon as what
//!   is there was delivered, so a fetch returns promptly. Requests that wait ask for idle
//!   heartbeats, so one that nobody serves (its consumer was deleted: the server answers
//!   nothing) is noticed in seconds; the member then re-creates the stream and the consumer
//!   (nats.rs #1584) and pulls again. `max_bytes` is applied here, not by the server (below);
//!   deliveries that do not fit wait in the member for its next fetch, and go back without
//!   counting as an attempt when the member leaves first.
//! - Acks, nacks and extensions are confirmed requests on the delivery's ack subject (`+ACK`,
//!   `-NAK`, `-NAK {"delay": ns}`); JetStream keeps a message nacked with a delay pending and
//!   ackable until it is redelivered, which is `set_visibility`. [`Broker::release`] queues plain
//!   nacks for a task the broker owns (started through the [`Spawner`]).
//! - Dead letters: a delivery whose attempt exceeds `max_delivery_attempts` is published to
//!   `<topic>.dlq` as the embedded broker does it (client id `<topic>:<message id>`, so a
//!   repeated move is de-duplicated; no deliver-at), then terminated (`+TERM`) on the topic and
//!   never handed out; `stats.dead_lettered` counts it. A dead-letter topic is never
//!   dead-lettered again. A dead-letter stream without consumers gets a placeholder consumer
//!   (`~unclaimed`) that keeps its messages for the first group, which takes them over
//!   (`deliver_policy = all`) and deletes it: the embedded broker's "unclaimed" group.
//! - `deliver_at` (nats-server 2.9 has no scheduled delivery): a delivery that is not due yet
//!   is nacked with the time left and not handed out; the extra delivery is subtracted from the
//!   attempt.
//!
//! # Tenant quotas
//! - `topics` and `groups`: a stream or durable consumer this node would *create* past the
//!   tenant's count is refused (`QuotaExceeded`); the count is the last tally plus what this node
//!   created since. Dead-letter streams and the `~unclaimed` placeholder are not counted.
//! - `stored_messages` and `stored_bytes`: each stream's `max_msgs`/`max_bytes` is at most the
//!   tenant's quota (so one stream can never hold more), and a message is refused when the
//!   tenant's total (last tally plus what this node published since) would pass its limit. A
//!   message published to a topic without groups counts until the next tally (JetStream keeps
//!   nothing without interest; the embedded broker does not count it at all).
//! - The tally lists every stream once per messaging sweep (`producer_sweep_interval`), in
//!   [`Broker::sweep_idle`], which also deletes streams that hold no message, have no consumer
//!   and saw no message for `topic_idle_ttl`. Idle durable consumers go by themselves
//!   (`inactive_threshold`).
//!
//! # Gaps (what nats-server 2.9 cannot do, or not cheaply)
//! - Between two tallies the stored counts only grow (acks are not seen until the next tally),
//!   so a tenant near its limit may be refused until the next sweep although its consumers
//!   acked; other nodes' publishes are seen only at the tally.
//! - A topic is full when its *stream* is: bytes count subjects and headers too, and a message
//!   waiting for several groups counts once (the embedded broker counts per group).
//! - nats-server 2.9 answers every ack the same way and acks by stream sequence: an ack, nack or
//!   extension on a lease that was acked already, or whose message another Steward node
//!   received again since, is accepted. Within one process a lease whose message was delivered
//!   again answers [`BrokerError::LeaseNotFound`], as the contract asks.
//! - nats-server before 2.10.14 can deliver a message a second time as if new (delivery count
//!   back to 1) when a redelivery comes due just as the only waiting pull request expires
//!   (`loopAndGatherMsgs` rewinds its position; fixed by nats-server #5305). That is an extra
//!   at-least-once delivery; the attempt handed out stays right within this process. For the
//!   same reason no pull request carries `max_bytes`: a request that refuses a redelivery for
//!   its size rewinds the same way.
//! - The attempt corrections (deferred deliver-at, buffered deliveries returned, the rewind
//!   above) live in this process: after a restart, or on another node, such a message may
//!   report a higher attempt and so be dead-lettered earlier.
//! - `inactive_threshold` counts pulls, deliveries and acks, not members: a group whose members
//!   neither fetch nor ack for longer than `consumer_cleanup_timeout` (every member waiting on
//!   a stalled client with its credit spent) loses its state. Keep that timeout above the
//!   invisible durations clients use (the default 1 h is below the 12 h a client may ask for).
//! - A message larger than the server's `max_payload` (default 1 MiB, below Steward's default
//!   `max_message` of 4 MiB + 64 KiB) is refused with [`SendOutcome::Unavailable`], not stored;
//!   [`NatsBroker::max_payload`] tells the limit.
//! - Leases released while disconnected are not nacked: their messages come back when the
//!   leases expire.
//!
//! # Runtime
//! async-nats runs its connection on tasks of the tokio runtime where [`NatsBroker::connect`] is
//! called (its own `tokio::spawn`, outside our clippy ban): call it on a runtime that outlives
//! the broker (the system arbiter). The broker's own tasks (release and publish) run wherever
//! the [`Spawner`] puts them, and end when the broker is closed or dropped.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, AckKind, ErrorCode};
use async_nats::{Client, ConnectOptions, Event, ServerAddr, Subject};
use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use steward_config::BrokerBackend;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::broker::{
    Broker, BrokerError, BrokerSettings, GroupKey, Lease, LeaseInner, OutMessage, Pull,
    QuotaRefusal, SendOutcome, TagFilter, TenantLimits, TenantUsage, TopicKey,
};
use crate::stats::MessagingStats;

mod codec;
mod naming;
mod publisher;
mod pull_member;

use publisher::{Outgoing, Published, Publisher};
use pull_member::NatsPull;

/// Runs a background future of the broker; the owner decides where (in production the owning
/// actor's tracker, so the task has an owner and ends with it). [`NatsBroker`] never spawns on
/// its own.
pub type Spawner = Arc<dyn Fn(BoxFuture<'static, ()>) + Send + Sync>;

/// Pull requests one consumer holds at most (nats-server's default is 512); a member holds one
/// while it fetches. Fixed at creation: nats-server 2.9 cannot change it later.
const MAX_WAITING: i64 = 4096;
/// Ping period of the client: a silent server is noticed after two missed pongs.
const PING_INTERVAL: Duration = Duration::from_secs(10);
/// Longest pause between reconnect attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(2);
/// The placeholder consumer that keeps a dead-letter stream's messages until its first group
/// (no group maps to a name starting with `~`).
const UNCLAIMED: &str = "~unclaimed";
/// Delivery records (one per message in flight or returned) kept per group for lease checks
/// and attempt numbers; beyond it they are dropped (only those refinements are lost).
const MAX_TRACKED: usize = 100_000;

/// A JetStream lease: what acking, nacking or extending one delivery needs.
#[derive(Debug, Clone)]
pub(crate) struct NatsLease {
    /// The group state of this process the delivery belongs to.
    group: Arc<GroupShared>,
    /// The delivery's ack subject.
    reply: Subject,
    /// The message's stream sequence.
    stream_seq: u64,
    /// The consumer's sequence of this delivery.
    delivery_seq: u64,
}

impl NatsLease {
    /// Whether this process saw the message delivered again after this lease.
    fn is_stale(&self) -> bool {
        self.group.tracked(self.stream_seq).is_some_and(|t| t.latest_delivery > self.delivery_seq)
    }
}

/// What this process knows of a group (shared by its members here and their leases).
#[derive(Debug)]
struct GroupShared {
    /// The group's consumer name (for logs).
    consumer: String,
    /// Per stream sequence, what this process saw of a message's deliveries (until it is acked
    /// or moved).
    seqs: Mutex<HashMap<u64, Tracked>>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Tracked {
    /// The consumer sequence of the latest delivery seen.
    latest_delivery: u64,
    /// The attempt of the latest delivery handed out (0: none yet).
    handed: u32,
    /// Deliveries that were not handed out (not due yet, or buffered and returned): they do not
    /// count as attempts.
    deferrals: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl GroupShared {
    fn tracked(&self, seq: u64) -> Option<Tracked> {
        lock(&self.seqs).get(&seq).copied()
    }

    fn entry<'a>(&self, seqs: &'a mut HashMap<u64, Tracked>, seq: u64) -> &'a mut Tracked {
        if seqs.len() >= MAX_TRACKED && !seqs.contains_key(&seq) {
            debug!(consumer = %self.consumer, "too many deliveries tracked, forgetting them");
            seqs.clear();
        }
        seqs.entry(seq).or_default()
    }

    /// Records a delivery to be handed out and answers its attempt: the server's delivery count
    /// less the deferrals, and always past the last attempt handed out here (nats-server 2.9
    /// can deliver a message again with its count reset to 1: `loopAndGatherMsgs` rewinds on a
    /// redelivery that no pull request takes, fixed in 2.10.14, nats-server #5305).
    fn delivered(&self, seq: u64, delivery_seq: u64, delivered: u64) -> u32 {
        let mut seqs = lock(&self.seqs);
        let t = self.entry(&mut seqs, seq);
        t.latest_delivery = t.latest_delivery.max(delivery_seq);
        let by_server = u32::try_from(delivered.saturating_sub(t.deferrals)).unwrap_or(u32::MAX);
        let attempt = by_server.max(t.handed.saturating_add(1));
        t.handed = attempt;
        attempt
    }

    /// Notes that the delivery of `seq` at `delivery_seq` was not handed out (not due yet).
    fn deferred(&self, seq: u64, delivery_seq: u64) {
        let mut seqs = lock(&self.seqs);
        let t = self.entry(&mut seqs, seq);
        t.latest_delivery = t.latest_delivery.max(delivery_seq);
        t.deferrals += 1;
    }

    /// Notes that a delivery recorded by [`delivered`](Self::delivered) goes back unseen (it
    /// waited in a member that left).
    fn returned_unseen(&self, seq: u64) {
        let mut seqs = lock(&self.seqs);
        let t = self.entry(&mut seqs, seq);
        t.handed = t.handed.saturating_sub(1);
        t.deferrals += 1;
    }

    /// Forgets `seq` (acked or moved) unless a later delivery was seen.
    fn settled(&self, seq: u64, delivery_seq: u64) {
        let mut seqs = lock(&self.seqs);
        if seqs.get(&seq).is_some_and(|t| t.latest_delivery <= delivery_seq) {
            seqs.remove(&seq);
        }
    }
}

/// The NATS JetStream broker. One per node; see the [module docs](self) for the mapping.
pub struct NatsBroker {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    js: jetstream::Context,
    settings: BrokerSettings,
    stats: Arc<MessagingStats>,
    /// `true` after the client connected, `false` after it lost the connection.
    connected: watch::Receiver<bool>,
    /// Streams known to exist.
    streams: Mutex<HashSet<String>>,
    /// Per tenant: limits handed in and usage (last tally plus what this node did since).
    accounts: Mutex<HashMap<Arc<str>, Tally>>,
    /// Steward's streams at the last tally (`None` before the first): a tenant at its `topics`
    /// quota sending to a stream not among them is refused without asking the server.
    tallied: Mutex<Option<HashSet<String>>>,
    /// Group state shared by this process's members, by (stream, consumer).
    groups: Mutex<HashMap<(String, String), Weak<GroupShared>>>,
    /// Leases for the release task; `None` once closed.
    release_tx: Mutex<Option<mpsc::UnboundedSender<ReleaseWork>>>,
    /// Fires when the release task ended.
    release_done: Mutex<Option<oneshot::Receiver<()>>>,
    /// Nack batches handed to the release task and not sent yet (see [`Broker::returned`]).
    outstanding: Arc<watch::Sender<usize>>,
    /// The publish task's door: every send's messages go through it.
    publisher: Publisher,
    closed: AtomicBool,
}

impl NatsBroker {
    /// Creates the broker on one client of `url` (one or more `nats://host:port` URLs,
    /// comma-separated) and starts its release and publish tasks through `spawn`.
    ///
    /// Returns at once: the connection is made in the background and made again whenever it is
    /// lost (forever, at most 2 s apart), so Steward starts while NATS is down; until it is up
    /// every operation waits at most `send_timeout`, then answers [`SendOutcome::Unavailable`] /
    /// [`BrokerError::Unavailable`]. Pings every 10 s notice a silent server.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when `url` is not a NATS URL list.
    pub async fn connect(
        url: &str,
        settings: BrokerSettings,
        stats: Arc<MessagingStats>,
        spawn: Spawner,
    ) -> Result<Arc<NatsBroker>, BrokerError> {
        let addrs = url
            .split(',')
            .map(|u| u.trim().parse::<ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| BrokerError::Unavailable(format!("invalid NATS url {url:?}: {e}")))?;
        let (state_tx, connected) = watch::channel(false);
        let state_tx = Arc::new(state_tx);
        let client = ConnectOptions::new()
            .name("steward")
            .retry_on_initial_connect()
            .max_reconnects(None)
            .request_timeout(Some(settings.send_timeout))
            .ping_interval(PING_INTERVAL)
            .reconnect_delay_callback(reconnect_delay)
            .event_callback(move |event| {
                let state_tx = state_tx.clone();
                async move {
                    match event {
                        Event::Connected => {
                            state_tx.send_replace(true);
                        }
                        Event::Disconnected | Event::Closed => {
                            state_tx.send_replace(false);
                        }
                        _ => {}
                    }
                }
            })
            .connect(addrs)
            .await
            .map_err(|e| BrokerError::Unavailable(format!("NATS client for {url}: {e}")))?;
        let js =
            jetstream::ContextBuilder::new().timeout(settings.send_timeout).build(client.clone());
        let (release_tx, release_rx) = mpsc::unbounded_channel();
        let (done_tx, done_rx) = oneshot::channel();
        let outstanding = Arc::new(watch::Sender::new(0));
        let task = release_task(
            client.clone(),
            release_rx,
            settings.send_timeout,
            outstanding.clone(),
            done_tx,
        );
        spawn(task.boxed());
        let (publisher, task) = Publisher::new(
            client.clone(),
            connected.clone(),
            publisher::WINDOW,
            publisher::TENANT_SHARE,
        );
        spawn(task.boxed());
        Ok(Arc::new(NatsBroker {
            inner: Arc::new(Inner {
                client,
                js,
                settings,
                stats,
                connected,
                streams: Mutex::new(HashSet::new()),
                accounts: Mutex::new(HashMap::new()),
                tallied: Mutex::new(None),
                groups: Mutex::new(HashMap::new()),
                release_tx: Mutex::new(Some(release_tx)),
                release_done: Mutex::new(Some(done_rx)),
                outstanding,
                publisher,
                closed: AtomicBool::new(false),
            }),
        }))
    }

    /// Largest message, headers included, the connected server accepts (its `max_payload`,
    /// bytes); `None` before the first connection.
    #[must_use]
    pub fn max_payload(&self) -> Option<usize> {
        self.inner.client.try_server_info().map(|_| self.inner.client.max_payload())
    }

    /// Whether the client is connected right now.
    #[must_use]
    pub fn is_connected(&self) -> bool {
        self.inner.client.connection_state() == State::Connected
    }
}

/// Pause before reconnect attempt `attempts` (1-based): none, then 10 ms doubling up to
/// [`MAX_RECONNECT_DELAY`].
fn reconnect_delay(attempts: usize) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let exp = u32::try_from(attempts - 2).unwrap_or(u32::MAX).min(16);
    (Duration::from_millis(10) * 2u32.pow(exp)).min(MAX_RECONNECT_DELAY)
}

/// Drains [`Broker::release`]: a plain nack per lease, not confirmed. While disconnected the
/// leases are dropped: their messages come back when the leases expire. `outstanding` counts
/// the nack batches still to send: one per [`ReleaseWork::Leases`], two per
/// [`ReleaseWork::Abandoned`] (what it held, then what its inbox received), counted by the
/// sender and uncounted here once sent.
async fn release_task(
    client: Client,
    mut rx: mpsc::UnboundedReceiver<ReleaseWork>,
    send_timeout: Duration,
    outstanding: Arc<watch::Sender<usize>>,
    done: oneshot::Sender<()>,
) {
    // naks wait until every pull request that may have died with its member has expired:
    // nats-server would hand a returned message straight back to such a request, whose inbox
    // nobody reads any more, and it would come back only after the ack wait
    let mut due: std::collections::BinaryHeap<std::cmp::Reverse<(Instant, u64)>> =
        std::collections::BinaryHeap::new();
    let mut pending: HashMap<u64, Vec<Subject>> = HashMap::new();
    let mut next = 0u64;
    let mut drains = FuturesUnordered::new();
    let mut open = true;
    loop {
        let wake = due.peek().map(|std::cmp::Reverse((at, _))| *at);
        tokio::select! {
            work = rx.recv(), if open => match work {
                Some(ReleaseWork::Leases(leases)) => {
                    let subjects: Vec<Subject> =
                        leases.iter().filter(|l| !l.is_stale()).map(|l| l.reply.clone()).collect();
                    next += 1;
                    pending.insert(next, subjects);
                    due.push(std::cmp::Reverse((Instant::now() + RELEASE_DELAY, next)));
                }
                Some(ReleaseWork::Abandoned { sub, raw, expires }) => {
                    let until = expires + PULL_GRACE;
                    next += 1;
                    pending.insert(next, raw.into_iter().filter_map(|m| m.reply).collect());
                    due.push(std::cmp::Reverse((until, next)));
                    drains.push(drain_abandoned(sub, until));
                }
                None => open = false,
            },
            Some(subjects) = drains.next(), if !drains.is_empty() => {
                next += 1;
                pending.insert(next, subjects);
                due.push(std::cmp::Reverse((Instant::now(), next)));
            }
            () = sleep_until_opt(wake) => {
                let std::cmp::Reverse((_, id)) = due.pop().expect("a deadline was peeked");
                let subjects = pending.remove(&id).unwrap_or_default();
                nak_now(&client, subjects, send_timeout).await;
                outstanding.send_modify(|n| *n = n.saturating_sub(1));
            }
        }
        if !open && due.is_empty() && drains.is_empty() {
            break;
        }
    }
    outstanding.send_replace(0);
    let _ = done.send(());
}

/// What the release task does.
pub(super) enum ReleaseWork {
    /// Return these leases (plain nacks, after [`RELEASE_DELAY`]).
    Leases(Vec<NatsLease>),
    /// A member went away while its pull request was open: keep reading the request's inbox
    /// until it expires and return what arrives (and `raw`, received but never handed out).
    Abandoned {
        /// The request's inbox subscription.
        sub: async_nats::Subscriber,
        /// Messages it had received and not handed out.
        raw: Vec<async_nats::Message>,
        /// When the request expires on the server.
        expires: Instant,
    },
}

/// Longest life of one pull request ([`pull_member`] splits longer waits); a member's request
/// outlives the member at most this long.
pub(super) const PULL_EXPIRES_MAX: Duration = Duration::from_secs(1);
/// Margin past a request's expiry before it is taken as gone on the server.
const PULL_GRACE: Duration = Duration::from_millis(200);
/// Delay of a release's nacks: past the life of any pull request open when it was asked.
const RELEASE_DELAY: Duration = Duration::from_millis(1200);

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Reads an abandoned pull request's inbox until `until`; answers the ack subjects of what
/// arrived (to be nacked once the request is gone).
async fn drain_abandoned(mut sub: async_nats::Subscriber, until: Instant) -> Vec<Subject> {
    let mut got = Vec::new();
    loop {
        tokio::select! {
            m = sub.next() => match m {
                Some(m) if m.status.is_none() => got.extend(m.reply),
                Some(_) => {}
                None => break,
            },
            () = tokio::time::sleep_until(until) => break,
        }
    }
    got
}

/// Plain nacks on `subjects`, within `send_timeout`.
async fn nak_now(client: &Client, subjects: Vec<Subject>, send_timeout: Duration) {
    if subjects.is_empty() {
        return;
    }
    if client.connection_state() != State::Connected {
        debug!(count = subjects.len(), "not connected to NATS, leases are returned by expiry");
        return;
    }
    let nak = Bytes::from(AckKind::Nak(None));
    let count = subjects.len();
    let publish = async {
        for subject in subjects {
            if let Err(err) = client.publish(subject, nak.clone()).await {
                debug!(error = %err, "release nack failed");
            }
        }
        let _ = client.flush().await;
    };
    if tokio::time::timeout(send_timeout, publish).await.is_err() {
        warn!(count, "releasing leases timed out, they come back by expiry");
    }
}

fn unavailable(what: &str, err: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(format!("{what}: {err}"))
}

fn timed_out(what: &str) -> BrokerError {
    BrokerError::Unavailable(format!("{what}: NATS did not answer within send_timeout"))
}

/// Runs `fut` until `deadline`; past it, [`BrokerError::Unavailable`].
async fn within<T>(
    deadline: Instant,
    what: &str,
    fut: impl Future<Output = Result<T, BrokerError>>,
) -> Result<T, BrokerError> {
    tokio::time::timeout_at(deadline, fut).await.unwrap_or_else(|_| Err(timed_out(what)))
}

impl Inner {
    fn check_open(&self) -> Result<(), BrokerError> {
        if self.closed.load(Ordering::Acquire) {
            Err(BrokerError::Unavailable("the NATS broker is closed".into()))
        } else {
            Ok(())
        }
    }

    /// Waits until the client is connected, at most until `deadline`.
    async fn wait_connected(&self, deadline: Instant) -> Result<(), BrokerError> {
        let mut rx = self.connected.clone();
        loop {
            self.check_open()?;
            // the event (our watch) and the client's state flip a moment apart: either will do,
            // what is sent before the socket is up waits in the client's queue
            if *rx.borrow_and_update() || self.client.connection_state() == State::Connected {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    return Err(BrokerError::Unavailable(
                        "not connected to NATS (reconnecting in the background)".into(),
                    ));
                }
            }
        }
    }

    /// `tenant`'s limits (unlimited when never handed in).
    fn limits(&self, tenant: &str) -> TenantLimits {
        lock(&self.accounts).get(tenant).map_or(TenantLimits::UNLIMITED, |t| t.limits)
    }

    /// Checks `quota` of `topic`'s tenant before creating a stream (`topics`) or a consumer
    /// (`groups`), and counts it when it passes.
    fn take_place(&self, topic: &TopicKey, topics: bool) -> Result<(), BrokerError> {
        if topic.is_dead_letter() {
            return Ok(());
        }
        let mut accounts = lock(&self.accounts);
        let Some(t) = accounts.get_mut(&*topic.tenant) else { return Ok(()) };
        let (used, limit, quota) = if topics {
            (&mut t.usage.topics, t.limits.topics, "topics")
        } else {
            (&mut t.usage.groups, t.limits.groups, "groups")
        };
        if *used >= limit {
            return Err(BrokerError::QuotaExceeded(QuotaRefusal { quota, limit }));
        }
        *used += 1;
        Ok(())
    }

    /// The `topics` refusal when `topic`'s tenant holds its limit of topics already.
    fn at_topics_limit(&self, topic: &TopicKey) -> Option<QuotaRefusal> {
        if topic.is_dead_letter() {
            return None;
        }
        let accounts = lock(&self.accounts);
        let t = accounts.get(&*topic.tenant)?;
        (t.usage.topics >= t.limits.topics)
            .then_some(QuotaRefusal { quota: "topics", limit: t.limits.topics })
    }

    /// Takes room for one message of `bytes` in the tenant's stored counts, or refuses at the
    /// limits (a message that is then not stored gives it back with [`Inner::give_back`]).
    fn take_stored(&self, topic: &TopicKey, bytes: u64) -> Result<(), QuotaRefusal> {
        let mut accounts = lock(&self.accounts);
        let Some(t) = accounts.get_mut(&*topic.tenant) else { return Ok(()) };
        if t.usage.stored_messages >= t.limits.stored_messages {
            return Err(QuotaRefusal { quota: "stored_messages", limit: t.limits.stored_messages });
        }
        if t.usage.stored_bytes.saturating_add(bytes) > t.limits.stored_bytes {
            return Err(QuotaRefusal { quota: "stored_bytes", limit: t.limits.stored_bytes });
        }
        t.usage.stored_messages += 1;
        t.usage.stored_bytes += bytes;
        Ok(())
    }

    /// Gives back what [`Inner::take_stored`] took for a message that was not stored.
    fn give_back(&self, tenant: &str, bytes: u64) {
        if let Some(t) = lock(&self.accounts).get_mut(tenant) {
            t.usage.stored_messages = t.usage.stored_messages.saturating_sub(1);
            t.usage.stored_bytes = t.usage.stored_bytes.saturating_sub(bytes);
        }
    }

    fn stream_config(&self, topic: &TopicKey, name: &str) -> stream::Config {
        let s = &self.settings;
        let limit = |v: u64| if v == 0 { -1 } else { i64::try_from(v).unwrap_or(i64::MAX) };
        // the topic's cap (0 = none), at most the tenant's quota
        let capped = |topic: u64, tenant: u64| if topic == 0 { tenant } else { topic.min(tenant) };
        let tenant = self.limits(&topic.tenant);
        stream::Config {
            name: name.to_owned(),
            description: Some(format!("steward topic {topic}")),
            subjects: vec![naming::stream_subjects(topic)],
            retention: RetentionPolicy::Interest,
            discard: DiscardPolicy::New,
            max_bytes: limit(capped(s.topic_max_bytes, tenant.stored_bytes)),
            max_messages: limit(capped(s.topic_max_messages, tenant.stored_messages)),
            duplicate_window: s.dedup_window.max(Duration::from_millis(100)),
            storage: StorageType::File,
            num_replicas: 1,
            ..Default::default()
        }
    }

    fn forget_stream(&self, name: &str) {
        lock(&self.streams).remove(name);
    }

    /// Makes sure `topic`'s stream exists with our limits; answers its name.
    async fn ensure_stream(&self, topic: &TopicKey) -> Result<String, BrokerError> {
        let name = naming::stream_name(topic);
        if lock(&self.streams).contains(&name) {
            return Ok(name);
        }
        // a tenant at its topics quota asking for a stream the last tally did not see: refused
        // without a lookup (a hostile loop over new topic names costs the server nothing)
        if let Some(refusal) = self.at_topics_limit(topic)
            && lock(&self.tallied).as_ref().is_some_and(|seen| !seen.contains(&name))
        {
            return Err(BrokerError::QuotaExceeded(refusal));
        }
        let config = self.stream_config(topic, &name);
        match self.js.get_stream(&name).await {
            Ok(existing) => {
                let have = &existing.cached_info().config;
                if have.max_bytes != config.max_bytes
                    || have.max_messages != config.max_messages
                    || have.duplicate_window != config.duplicate_window
                    || have.discard != config.discard
                {
                    self.js
                        .update_stream(config)
                        .await
                        .map_err(|e| unavailable(&format!("updating stream {name}"), e))?;
                }
            }
            Err(err) => match err.kind() {
                jetstream::context::GetStreamErrorKind::JetStream(e)
                    if e.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                {
                    self.take_place(topic, true)?;
                    self.create_stream(&name, config).await?;
                }
                _ => return Err(unavailable(&format!("looking up stream {name}"), err)),
            },
        }
        lock(&self.streams).insert(name.clone());
        Ok(name)
    }

    async fn create_stream(&self, name: &str, config: stream::Config) -> Result<(), BrokerError> {
        match self.js.create_stream(config).await {
            Ok(_) => {}
            // created by someone else in between
            Err(err)
                if matches!(err.kind(), jetstream::context::CreateStreamErrorKind::JetStream(ref e)
                    if e.error_code() == ErrorCode::STREAM_NAME_EXIST) => {}
            Err(err) => return Err(unavailable(&format!("creating stream {name}"), err)),
        }
        Ok(())
    }

    /// On a dead-letter stream without consumers, creates the placeholder that keeps what
    /// arrives for the first group (the embedded broker's "unclaimed" group).
    async fn ensure_unclaimed(&self, stream: &str) -> Result<(), BrokerError> {
        let info = self
            .js
            .get_stream(stream)
            .await
            .map_err(|e| unavailable(&format!("looking up stream {stream}"), e))?;
        if info.cached_info().state.consumer_count > 0 {
            return Ok(());
        }
        let placeholder = pull::Config {
            durable_name: Some(UNCLAIMED.to_owned()),
            description: Some("steward: keeps dead letters for the first group".into()),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            max_deliver: -1,
            max_ack_pending: -1,
            ..Default::default()
        };
        self.js
            .create_consumer_on_stream(placeholder, stream)
            .await
            .map_err(|e| unavailable(&format!("creating the placeholder of {stream}"), e))?;
        Ok(())
    }

    /// Opens (or creates) the consumer of `group` on `stream`.
    async fn ensure_consumer(
        &self,
        stream: &str,
        group: &GroupKey,
        invisible: Duration,
    ) -> Result<PullConsumer, BrokerError> {
        let name = naming::consumer_name(&group.group);
        let filter = naming::filter_subject(&group.topic, &group.filter);
        let consumer =
            match self.js.get_consumer_from_stream::<pull::Config, _, _>(&name, stream).await {
                Ok(consumer) => consumer,
                Err(err) => match err.kind() {
                    stream::ConsumerErrorKind::JetStream(e)
                        if e.error_code() == ErrorCode::CONSUMER_NOT_FOUND =>
                    {
                        self.take_place(&group.topic, false)?;
                        self.create_consumer(stream, group, &name, filter.clone(), invisible)
                            .await?
                    }
                    stream::ConsumerErrorKind::JetStream(e)
                        if e.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                    {
                        self.forget_stream(stream);
                        return Err(BrokerError::Unavailable(format!("stream {stream} vanished")));
                    }
                    _ => return Err(unavailable(&format!("looking up consumer {name}"), err)),
                },
            };
        let have = &consumer.cached_info().config.filter_subject;
        if *have != filter {
            let have_filter = have.rsplit('.').next().map_or_else(String::new, |t| match t {
                "*" => TagFilter::All.to_string(),
                tag => tag.to_owned(),
            });
            return Err(BrokerError::Conflict(format!(
                "group {} of topic {} filters on tag {have_filter}, not {}",
                group.group, group.topic.topic, group.filter
            )));
        }
        Ok(consumer)
    }

    async fn create_consumer(
        &self,
        stream: &str,
        group: &GroupKey,
        name: &str,
        filter: String,
        invisible: Duration,
    ) -> Result<PullConsumer, BrokerError> {
        // the first group of a dead-letter topic takes what waited for one
        let claims = group.topic.is_dead_letter()
            && self
                .js
                .get_consumer_from_stream::<pull::Config, _, _>(UNCLAIMED, stream)
                .await
                .is_ok();
        let config = pull::Config {
            durable_name: Some(name.to_owned()),
            description: Some(format!("steward group {} of {}", group.group, group.topic)),
            deliver_policy: if claims { DeliverPolicy::All } else { DeliverPolicy::New },
            ack_policy: AckPolicy::Explicit,
            ack_wait: invisible,
            max_deliver: -1,
            filter_subject: filter,
            max_waiting: MAX_WAITING,
            max_ack_pending: -1,
            inactive_threshold: self.settings.group_grace,
            ..Default::default()
        };
        let consumer = match self.js.create_consumer_on_stream(config, stream).await {
            Ok(consumer) => consumer,
            Err(err) => {
                return Err(match err.kind() {
                    stream::ConsumerErrorKind::JetStream(e)
                        if e.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                    {
                        self.forget_stream(stream);
                        BrokerError::Unavailable(format!("stream {stream} vanished"))
                    }
                    stream::ConsumerErrorKind::JetStream(e) => {
                        BrokerError::Internal(format!("creating consumer {name} on {stream}: {e}"))
                    }
                    _ => unavailable(&format!("creating consumer {name}"), err),
                });
            }
        };
        if claims && let Err(err) = self.js.delete_consumer_from_stream(UNCLAIMED, stream).await {
            warn!(stream = %stream, error = %err, "deleting the placeholder consumer");
        }
        Ok(consumer)
    }

    fn group_shared(&self, stream: &str, consumer: &str) -> Arc<GroupShared> {
        let mut groups = lock(&self.groups);
        let key = (stream.to_owned(), consumer.to_owned());
        if let Some(shared) = groups.get(&key).and_then(Weak::upgrade) {
            return shared;
        }
        groups.retain(|_, g| g.strong_count() > 0);
        let shared = Arc::new(GroupShared {
            consumer: consumer.to_owned(),
            seqs: Mutex::new(HashMap::new()),
        });
        groups.insert(key, Arc::downgrade(&shared));
        shared
    }

    /// Publishes `messages` to `topic` through the publish task and awaits every publish ack,
    /// until `deadline`. A stream deleted behind our back is re-created once, and the messages
    /// it refused are published again as `again` rebuilds them (by index in `messages`).
    async fn publish_all(
        &self,
        topic: &TopicKey,
        messages: Vec<Outgoing>,
        again: impl Fn(usize) -> Option<Outgoing>,
        deadline: Instant,
    ) -> Vec<SendOutcome> {
        let mut outcomes: Vec<Option<SendOutcome>> = vec![None; messages.len()];
        let mut todo: Vec<usize> = (0..messages.len()).collect();
        let mut batch = messages;
        for round in 0..2 {
            let ready = within(deadline, "creating the stream", async {
                let stream = self.ensure_stream(topic).await?;
                if topic.is_dead_letter() {
                    self.ensure_unclaimed(&stream).await?;
                }
                Ok(stream)
            });
            let stream = match ready.await {
                Ok(stream) => stream,
                Err(err) => {
                    for i in todo {
                        outcomes[i] = Some(match &err {
                            BrokerError::QuotaExceeded(refusal) => {
                                SendOutcome::QuotaExceeded(*refusal)
                            }
                            other => SendOutcome::Unavailable(other.to_string()),
                        });
                    }
                    break;
                }
            };
            let published = self
                .publisher
                .publish(topic.tenant.clone(), std::mem::take(&mut batch), deadline)
                .await;
            let mut gone = Vec::new();
            for (i, result) in todo.into_iter().zip(published) {
                match result {
                    Published::Done(outcome) => outcomes[i] = Some(outcome),
                    Published::StreamNotFound if round == 0 => gone.push(i),
                    Published::StreamNotFound => {
                        outcomes[i] = Some(SendOutcome::Unavailable(format!(
                            "stream {stream} vanished again"
                        )));
                    }
                }
            }
            if gone.is_empty() {
                break;
            }
            debug!(stream = %stream, "stream vanished, re-creating it");
            self.forget_stream(&stream);
            todo = Vec::with_capacity(gone.len());
            for i in gone {
                match again(i) {
                    Some(message) => {
                        batch.push(message);
                        todo.push(i);
                    }
                    None => {
                        outcomes[i] =
                            Some(SendOutcome::Unavailable(format!("stream {stream} vanished")));
                    }
                }
            }
            if todo.is_empty() {
                break;
            }
        }
        outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| SendOutcome::Unavailable(timed_out("publishing").to_string()))
            })
            .collect()
    }

    /// Sends `kind` on each lease's ack subject and awaits the server's confirmation.
    async fn confirm_all(&self, items: Vec<(Lease, AckKind)>) -> Vec<Result<(), BrokerError>> {
        let mut out: Vec<Option<Result<(), BrokerError>>> = vec![None; items.len()];
        if let Err(err) = self.check_open() {
            return items.iter().map(|_| Err(err.clone())).collect();
        }
        let deadline = Instant::now() + self.settings.send_timeout;
        let connected = self.wait_connected(deadline).await;
        let mut pending = FuturesUnordered::new();
        for (i, (lease, kind)) in items.into_iter().enumerate() {
            let LeaseInner::Nats(lease) = lease.0 else {
                out[i] = Some(Err(BrokerError::LeaseNotFound("not a NATS lease".into())));
                continue;
            };
            if let Err(err) = &connected {
                out[i] = Some(Err(err.clone()));
                continue;
            }
            if lease.is_stale() {
                out[i] = Some(Err(BrokerError::LeaseNotFound(
                    "the message was delivered again since".into(),
                )));
                continue;
            }
            let client = self.client.clone();
            pending.push(async move {
                let result = client.request(lease.reply.clone(), Bytes::from(kind)).await;
                (i, lease, kind, result)
            });
        }
        while let Ok(Some((i, lease, kind, result))) =
            tokio::time::timeout_at(deadline, pending.next()).await
        {
            out[i] = Some(match result {
                Ok(_) => {
                    if matches!(kind, AckKind::Ack | AckKind::Term) {
                        lease.group.settled(lease.stream_seq, lease.delivery_seq);
                    }
                    Ok(())
                }
                Err(err) if err.kind() == async_nats::RequestErrorKind::NoResponders => Err(
                    BrokerError::LeaseNotFound(format!("group {} is gone", lease.group.consumer)),
                ),
                Err(err) => Err(unavailable("ack", err)),
            });
        }
        out.into_iter().map(|o| o.unwrap_or_else(|| Err(timed_out("ack")))).collect()
    }

    fn release_leases(&self, leases: Vec<NatsLease>) {
        if leases.is_empty() {
            return;
        }
        self.hand_over(ReleaseWork::Leases(leases), 1);
    }

    /// Hands `work` (`batches` nack batches) to the release task, counted until they are sent.
    fn hand_over(&self, work: ReleaseWork, batches: usize) {
        if let Some(tx) = lock(&self.release_tx).as_ref() {
            self.outstanding.send_modify(|n| *n += batches);
            if tx.send(work).is_err() {
                self.outstanding.send_modify(|n| *n = n.saturating_sub(batches));
            }
        }
    }

    /// Hands the subscription of a pull request whose member went away mid-request to the
    /// release task (see [`ReleaseWork::Abandoned`]).
    pub(super) fn abandon(
        &self,
        sub: async_nats::Subscriber,
        raw: Vec<async_nats::Message>,
        expires: Instant,
    ) {
        self.hand_over(ReleaseWork::Abandoned { sub, raw, expires }, 2);
    }
}

/// What a refused publish means for the producer.
/// One tenant's limits and usage on NATS.
#[derive(Debug, Clone, Copy)]
struct Tally {
    limits: TenantLimits,
    usage: TenantUsage,
}

impl Inner {
    fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }

    /// Lists every Steward stream once: recounts each tenant's topics, groups and stored
    /// messages and bytes, and deletes the streams that hold nothing, have no consumer and saw
    /// no message for `ttl`. Answers how many streams went.
    async fn tally(&self, ttl: Duration) -> Result<u64, BrokerError> {
        let mut counted: HashMap<String, TenantUsage> = HashMap::new();
        let mut seen = HashSet::new();
        let mut idle = Vec::new();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let mut all = self.js.streams();
        while let Some(info) = all.next().await {
            let info = info.map_err(|e| unavailable("listing streams", e))?;
            let name = &info.config.name;
            let Some(tenant) = naming::tenant_of_stream(name) else { continue };
            let usage = counted.entry(tenant.to_owned()).or_default();
            let dead_letter = name.ends_with(&naming::dead_letter_suffix());
            let state = &info.state;
            let last = state.last_timestamp.max(info.created).unix_timestamp();
            if state.messages == 0
                && state.consumer_count == 0
                && now.saturating_sub(last).unsigned_abs() >= ttl.as_secs()
            {
                // about to go: not counted
                idle.push(name.clone());
                continue;
            }
            seen.insert(name.clone());
            usage.topics += u64::from(!dead_letter);
            usage.groups += if dead_letter { 0 } else { state.consumer_count as u64 };
            usage.stored_messages += state.messages;
            usage.stored_bytes += state.bytes;
        }
        {
            let mut accounts = lock(&self.accounts);
            for (tenant, t) in accounts.iter_mut() {
                t.usage = counted.remove(&**tenant).unwrap_or_default();
            }
            // tenants this node has not served yet: their usage is known before their first
            // call hands in their limits
            for (tenant, usage) in counted {
                let limits = TenantLimits::UNLIMITED;
                accounts.insert(tenant.into(), Tally { limits, usage });
            }
        }
        *lock(&self.tallied) = Some(seen);
        let mut removed = 0;
        for name in idle {
            self.forget_stream(&name);
            match self.js.delete_stream(&name).await {
                Ok(_) => removed += 1,
                Err(err) => debug!(stream = %name, error = %err, "deleting an idle stream"),
            }
        }
        Ok(removed)
    }
}

/// What a publish JetStream refused (its ack's `error`) means for the producer: a full
/// stream or account is [`SendOutcome::RetryLater`], anything else
/// [`SendOutcome::Unavailable`].
fn refused(api: &jetstream::Error) -> SendOutcome {
    let code = api.error_code();
    let text = api.to_string();
    if code == ErrorCode::ACCOUNT_RESOURCES_EXCEEDED
        || code == ErrorCode::INSUFFICIENT_RESOURCES
        || (code == ErrorCode::STREAM_STORE_FAILED && text.contains("maximum"))
    {
        return SendOutcome::RetryLater(format!("topic is full: {text}"));
    }
    SendOutcome::Unavailable(format!("NATS refused the message: {text}"))
}

impl Broker for NatsBroker {
    fn backend(&self) -> BrokerBackend {
        BrokerBackend::Nats
    }

    fn send<'a>(
        &'a self,
        topic: &'a TopicKey,
        messages: Vec<OutMessage>,
    ) -> BoxFuture<'a, Vec<SendOutcome>> {
        async move {
            let inner = &self.inner;
            let deadline = Instant::now() + inner.settings.send_timeout;
            let ready = match inner.check_open() {
                Ok(()) => inner.wait_connected(deadline).await,
                Err(err) => Err(err),
            };
            if let Err(err) = ready {
                return messages
                    .iter()
                    .map(|_| SendOutcome::Unavailable(err.to_string()))
                    .collect();
            }
            let mut outcomes: Vec<Option<SendOutcome>> = vec![None; messages.len()];
            let mut encoded = Vec::with_capacity(messages.len());
            let mut index = Vec::with_capacity(messages.len());
            let untagged = Subject::from(naming::subject(topic, None));
            let subject = |m: &OutMessage| match m.tag.as_deref() {
                None => untagged.clone(),
                tag => Subject::from(naming::subject(topic, tag)),
            };
            for (i, m) in messages.iter().enumerate() {
                if let Err(refusal) = inner.take_stored(topic, m.weight() as u64) {
                    outcomes[i] = Some(SendOutcome::QuotaExceeded(refusal));
                    continue;
                }
                match codec::encode(m) {
                    Ok(headers) => {
                        encoded.push((subject(m), m.body.clone(), headers));
                        index.push(i);
                    }
                    Err(err) => {
                        inner.give_back(&topic.tenant, m.weight() as u64);
                        outcomes[i] = Some(SendOutcome::Unavailable(format!(
                            "cannot encode the message for NATS: {}",
                            err.0
                        )));
                    }
                }
            }
            let again = |k: usize| {
                let m = &messages[index[k]];
                codec::encode(m).ok().map(|headers| (subject(m), m.body.clone(), headers))
            };
            let published = inner.publish_all(topic, encoded, again, deadline).await;
            for (i, outcome) in index.iter().copied().zip(published) {
                if !matches!(outcome, SendOutcome::Stored { duplicate: false, .. }) {
                    inner.give_back(&topic.tenant, messages[i].weight() as u64);
                }
                outcomes[i] = Some(outcome);
            }
            outcomes
                .into_iter()
                .map(|o| o.unwrap_or_else(|| SendOutcome::Unavailable(String::new())))
                .collect()
        }
        .boxed()
    }

    fn open<'a>(
        &'a self,
        group: &'a GroupKey,
        invisible: Duration,
    ) -> BoxFuture<'a, Result<Box<dyn Pull>, BrokerError>> {
        async move {
            let inner = &self.inner;
            inner.check_open()?;
            let deadline = Instant::now() + inner.settings.send_timeout;
            inner.wait_connected(deadline).await?;
            let stream =
                within(deadline, "creating the stream", inner.ensure_stream(&group.topic)).await?;
            let consumer = within(
                deadline,
                "opening the group",
                inner.ensure_consumer(&stream, group, invisible),
            )
            .await?;
            let shared = inner.group_shared(&stream, &consumer.cached_info().name);
            let member: Box<dyn Pull> =
                Box::new(NatsPull::new(inner.clone(), shared, group.clone(), invisible, consumer));
            Ok(member)
        }
        .boxed()
    }

    fn ack(&self, leases: Vec<Lease>) -> BoxFuture<'_, Vec<Result<(), BrokerError>>> {
        let items = leases.into_iter().map(|l| (l, AckKind::Ack)).collect();
        self.inner.confirm_all(items).boxed()
    }

    fn set_visibility(
        &self,
        leases: Vec<(Lease, Duration)>,
    ) -> BoxFuture<'_, Vec<Result<(), BrokerError>>> {
        let items = leases
            .into_iter()
            .map(|(l, delay)| (l, AckKind::Nak((!delay.is_zero()).then_some(delay))))
            .collect();
        self.inner.confirm_all(items).boxed()
    }

    fn release(&self, leases: Vec<Lease>) {
        let leases = leases
            .into_iter()
            .filter_map(|l| match l.0 {
                LeaseInner::Nats(lease) => Some(lease),
                LeaseInner::Embedded(_) => None,
            })
            .collect();
        self.inner.release_leases(leases);
    }

    fn set_limits(&self, tenant: &Arc<str>, limits: TenantLimits) {
        lock(&self.inner.accounts)
            .entry(tenant.clone())
            .or_insert_with(|| Tally { limits, usage: TenantUsage::default() })
            .limits = limits;
    }

    fn usage(&self) -> Vec<(Arc<str>, TenantUsage)> {
        let mut usage: Vec<_> =
            lock(&self.inner.accounts).iter().map(|(k, t)| (k.clone(), t.usage)).collect();
        usage.sort_by(|a, b| a.0.cmp(&b.0));
        usage
    }

    fn sweep_idle(&self, ttl: Duration) -> BoxFuture<'_, u64> {
        async move {
            let inner = &self.inner;
            if inner.check_open().is_err() || !inner.is_connected() {
                return 0;
            }
            let deadline = Instant::now() + inner.settings.send_timeout;
            match within(deadline, "tallying streams", inner.tally(ttl)).await {
                Ok(removed) => removed,
                Err(err) => {
                    debug!(error = %err, "the stream tally did not finish");
                    0
                }
            }
        }
        .boxed()
    }

    fn remove_tenant<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, Result<u64, BrokerError>> {
        async move {
            let inner = &self.inner;
            lock(&inner.accounts).remove(tenant);
            inner.check_open()?;
            let deadline = Instant::now() + inner.settings.send_timeout;
            inner.wait_connected(deadline).await?;
            let prefix = naming::tenant_stream_prefix(tenant);
            let names: Vec<String> = within(deadline, "listing streams", async {
                let mut names = Vec::new();
                let mut all = inner.js.stream_names();
                while let Some(name) = all.next().await {
                    let name = name.map_err(|e| unavailable("listing streams", e))?;
                    if name.starts_with(&prefix) {
                        names.push(name);
                    }
                }
                Ok(names)
            })
            .await?;
            let mut removed = 0;
            for name in names {
                inner.forget_stream(&name);
                let deleted = tokio::time::timeout_at(deadline, inner.js.delete_stream(&name))
                    .await
                    .map_err(|_| timed_out("deleting streams"))?;
                match deleted {
                    Ok(_) => removed += 1,
                    Err(err) => match err.kind() {
                        jetstream::context::DeleteStreamErrorKind::JetStream(e)
                            if e.error_code() == ErrorCode::STREAM_NOT_FOUND => {}
                        _ => return Err(unavailable(&format!("deleting stream {name}"), err)),
                    },
                }
            }
            Ok(removed)
        }
        .boxed()
    }

    fn unacked(&self) -> Option<u64> {
        // JetStream keeps them: nothing is lost when Steward stops
        None
    }

    fn returned(&self) -> BoxFuture<'_, ()> {
        let mut outstanding = self.inner.outstanding.subscribe();
        async move {
            let _ = outstanding.wait_for(|n| *n == 0).await;
        }
        .boxed()
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        async move {
            let inner = &self.inner;
            if inner.closed.swap(true, Ordering::AcqRel) {
                return;
            }
            lock(&inner.release_tx).take();
            inner.publisher.close(inner.settings.send_timeout).await;
            let done = lock(&inner.release_done).take();
            if let Some(done) = done {
                let _ = tokio::time::timeout(inner.settings.send_timeout, done).await;
            }
            if let Err(err) =
                tokio::time::timeout(inner.settings.send_timeout, inner.client.drain())
                    .await
                    .unwrap_or(Ok(()))
            {
                debug!(error = %err, "draining the NATS client");
            }
        }
        .boxed()
    }
}

impl std::fmt::Debug for NatsBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBroker")
            .field("connected", &self.is_connected())
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
