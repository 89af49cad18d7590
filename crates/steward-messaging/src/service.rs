//! [`Messaging`]: what the gRPC edge holds to send, receive, ack and clean up, and what the
//! server wires into the supervision tree.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use futures_util::future::join_all;
use steward_config::{BrokerBackend, MessagingConfig, SupervisorConfig};
use steward_core::{
    ChildSpec, Control, ExitReason, Registry, ResourceKind, RestartType, Strategy, SupervisorCell,
    SupervisorSpec,
};
use tokio::sync::mpsc;

use crate::broker::{
    Broker, BrokerSettings, GroupKey, Message, OutMessage, SendOutcome, TagFilter, TopicKey,
};
use crate::consumer::{
    Consumer, ConsumerParts, ConsumerStream, Directory, STREAM_BUFFER, StreamSettings,
    parse_receipt,
};
use crate::embedded::EmbeddedBroker;
use crate::error::{EntryError, MessagingError};
use crate::hub::MessagingHub;
use crate::names::{self, Invalid};
use crate::producer::{InFlight, Producer, ProducerKey, ProducerTable};
use crate::stats::MessagingStats;

/// Shortest invisible duration a stream or a `ChangeInvisibleDuration` may ask for (except 0
/// for "visible now" in `ChangeInvisibleDuration`).
pub const MIN_INVISIBLE_DURATION: Duration = Duration::from_millis(100);

/// How long `CleanupConsumer` waits for the streams it ends to be gone.
const CLEANUP_WAIT: Duration = Duration::from_secs(5);

/// What the edge's quota check returns for an admitted producer or consumer: a guard that
/// holds the tenant's quota slot until dropped (it goes into the resource's child spec).
pub type AdmitGuard = Box<dyn Any + Send + Sync>;

/// The edge's quota check, called once per new producer or consumer (`kind` is
/// `ResourceKind::Producer` or `ResourceKind::Consumer`). The messaging crate knows no tenancy;
/// the edge maps its own refusal to [`MessagingError::Exhausted`].
pub type Admit<'a> =
    &'a (dyn Fn(steward_core::ResourceKind) -> Result<AdmitGuard, MessagingError> + Sync);

/// One message of a `SendMessage` batch: its topic and the message.
#[derive(Debug, Clone)]
pub struct SendEntry {
    /// The topic name (validated by [`Messaging::send`]).
    pub topic: String,
    /// The message (validated by [`Messaging::send`]).
    pub message: OutMessage,
}

/// The result of one message of a batch, in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendResult {
    /// Stored (`duplicate`: stored before, within the dedup window).
    Ok {
        /// The broker's message id.
        message_id: String,
        /// Whether it was a duplicate.
        duplicate: bool,
    },
    /// The topic is full; nothing was stored. Retry later.
    RetryLater(String),
    /// The message breaks a rule; nothing was stored.
    Invalid(String),
    /// The broker could not be reached in time; it may have been stored (a retry with the same
    /// client id is de-duplicated).
    Unavailable(String),
    /// A tenant quota the broker counts (`topics`, `stored_messages`, `stored_bytes`) is
    /// exhausted; nothing was stored.
    QuotaExceeded(crate::QuotaRefusal),
}

/// What a `ReceiveMessages` stream asks for.
#[derive(Debug, Clone, Default)]
pub struct ReceiveSpec {
    /// Consumer group name.
    pub group: String,
    /// Topic name.
    pub topic: String,
    /// Only messages with this tag (`None` or `"*"`: all).
    pub tag: Option<String>,
    /// The client's consumer id (a group member); `CleanupConsumer` names it. Default: a fresh
    /// id per stream.
    pub consumer_id: Option<String>,
    /// Most unacked deliveries held by the stream. Default `[messaging] max_outstanding_messages`.
    pub max_outstanding_messages: Option<u32>,
    /// Most unacked bytes held by the stream. Default `[messaging] max_outstanding_bytes`.
    pub max_outstanding_bytes: Option<u64>,
    /// How long a delivery stays invisible to others. Default `[messaging] invisible_duration`.
    pub invisible_duration: Option<Duration>,
    /// Whether Steward extends each lease before it expires until the client acks or nacks it.
    pub auto_renew: bool,
}

/// A delivery as the edge renders it.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// The message.
    pub message: Arc<Message>,
    /// Delivery attempt, 1 for the first.
    pub attempt: u32,
    /// The receipt handle to ack, nack or extend it with.
    pub receipt: String,
    /// When it becomes visible to others unless acked (or renewed).
    pub invisible_until: SystemTime,
}

/// What a receive stream yields.
#[derive(Debug, Clone)]
pub enum ConsumerEvent {
    /// Deliveries, leased to this stream.
    Deliveries(Vec<Delivered>),
    /// Nothing to deliver for `[messaging] heartbeat_interval`: the server is alive.
    Heartbeat,
    /// The stream ends with this error (`UNAVAILABLE` at shutdown, after `CleanupConsumer`,
    /// …). Nothing follows.
    End(MessagingError),
}

/// What `CleanupConsumer` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// Streams ended.
    pub streams: u64,
    /// Unacked deliveries they returned to the broker for redelivery.
    pub returned: u64,
}

/// The messaging front door's shared state. Cheap to clone; every method may be called from any
/// thread (the gRPC runtime).
#[derive(Clone)]
pub struct Messaging {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: MessagingConfig,
    pub(crate) stats: Arc<MessagingStats>,
    pub(crate) registry: Registry,
    /// The broker in use: set by the `messaging` service when it is up, cleared when it stops.
    pub(crate) broker: RwLock<Option<Arc<dyn Broker>>>,
    /// The embedded broker outlives restarts of the `messaging` service (its messages with it).
    pub(crate) embedded: Option<Arc<EmbeddedBroker>>,
    pub(crate) producers: Arc<ProducerTable>,
    /// Held while a producer is being started, so concurrent first sends on one key start
    /// one producer (and take one quota slot), not one each.
    starting: tokio::sync::Mutex<()>,
    pub(crate) directory: Arc<Directory>,
    /// Where the NATS client's connection tasks run (a multi-thread runtime, e.g. tonic's);
    /// `None`: the `messaging` service's own arbiter.
    pub(crate) io: Option<tokio::runtime::Handle>,
    producers_sup: SupervisorCell,
    consumers_sup: SupervisorCell,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> MessagingError {
    MessagingError::Invalid(Invalid::new(field, reason))
}

impl Messaging {
    /// A front door over `config`'s broker; resources register in `registry`. Nothing runs
    /// until the specs of [`Messaging::child_specs`] are started by a supervisor.
    #[must_use]
    pub fn new(config: MessagingConfig, registry: Registry) -> Self {
        Self::build(config, registry, None)
    }

    /// As [`Messaging::new`], with the NATS client's connection and release tasks on `io` (a
    /// multi-thread runtime) instead of the actix arbiter that runs every actor: its socket
    /// I/O then never waits behind actor messages. The tasks are still owned (tracked) by the
    /// `messaging` service.
    #[must_use]
    pub fn with_io_runtime(
        config: MessagingConfig,
        registry: Registry,
        io: tokio::runtime::Handle,
    ) -> Self {
        Self::build(config, registry, Some(io))
    }

    fn build(
        config: MessagingConfig,
        registry: Registry,
        io: Option<tokio::runtime::Handle>,
    ) -> Self {
        let stats = Arc::new(MessagingStats::default());
        let embedded = (config.backend == BrokerBackend::Embedded)
            .then(|| EmbeddedBroker::new(BrokerSettings::from_config(&config), stats.clone()));
        Self {
            inner: Arc::new(Inner {
                config,
                stats,
                registry,
                broker: RwLock::new(None),
                embedded,
                producers: Arc::default(),
                starting: tokio::sync::Mutex::new(()),
                directory: Arc::default(),
                io,
                producers_sup: SupervisorCell::new(),
                consumers_sup: SupervisorCell::new(),
            }),
        }
    }

    /// The children to start under the root supervisor, in order: the `messaging` service
    /// (owns the broker connection, the idle-producer sweep and the consumer leak check), and
    /// the `producers` and `consumers` dynamic supervisors (`max_producers`, `max_consumers`).
    #[must_use]
    pub fn child_specs(&self, supervisor: &SupervisorConfig) -> Vec<ChildSpec> {
        let me = self.clone();
        let hub = ChildSpec::new("messaging", ResourceKind::Service, move |rcx| {
            Ok::<_, &str>(MessagingHub::new(rcx, me.clone()))
        });
        let sup = |name: &str, max: u32, cell: &SupervisorCell| {
            ChildSpec::supervisor_in(
                SupervisorSpec::from_config(name, Strategy::Dynamic, supervisor)
                    .max_children(max as usize),
                cell.clone(),
            )
        };
        vec![
            hub,
            sup("producers", self.inner.config.max_producers, &self.inner.producers_sup),
            sup("consumers", self.inner.config.max_consumers, &self.inner.consumers_sup),
        ]
    }

    /// The config.
    #[must_use]
    pub fn config(&self) -> &MessagingConfig {
        &self.inner.config
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> &Arc<MessagingStats> {
        &self.inner.stats
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    /// The broker, when it is up.
    fn broker(&self) -> Result<Arc<dyn Broker>, MessagingError> {
        if self.inner.registry.is_shutting_down() {
            return Err(MessagingError::Unavailable("the server is shutting down".into()));
        }
        self.inner
            .broker
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or_else(|| MessagingError::Unavailable("the broker is not connected".into()))
    }

    fn check_batch(&self, field: &str, n: usize) -> Result<(), MessagingError> {
        if n == 0 {
            return Err(invalid(field, "must not be empty"));
        }
        let max = self.inner.config.max_batch as usize;
        if n > max {
            return Err(invalid(field, format!("more than {max} entries")));
        }
        Ok(())
    }

    fn check_entry(&self, i: usize, e: &SendEntry) -> Result<(), Invalid> {
        // the checks name the bare field; its path is formatted only for a refusal (per
        // message on the send path, four `format!`s were a few percent of a send's CPU)
        let at = |mut err: Invalid| {
            err.field = format!("messages[{i}].{}", err.field);
            err
        };
        names::check_name("topic", &e.topic).map_err(at)?;
        let m = &e.message;
        names::check_client_id("client_message_id", &m.client_id).map_err(at)?;
        if let Some(tag) = &m.tag {
            names::check_tag("tag", tag).map_err(at)?;
        }
        names::check_keys("keys", &m.keys).map_err(at)?;
        names::check_properties("properties", &m.properties).map_err(at)?;
        let max_body = self.inner.config.max_body.as_u64();
        if m.body.len() as u64 > max_body {
            return Err(Invalid::new(
                format!("messages[{i}].body"),
                format!("{} bytes, more than the {max_body} allowed", m.body.len()),
            ));
        }
        let max = self.inner.config.max_message.as_u64();
        if m.weight() as u64 > max {
            return Err(Invalid::new(
                format!("messages[{i}]"),
                format!("{} bytes with keys and properties, more than {max}", m.weight()),
            ));
        }
        Ok(())
    }

    /// A send on the producer `key`, starting it (admitted by `admit`) when there is none.
    async fn producer(
        &self,
        key: ProducerKey,
        admit: Admit<'_>,
    ) -> Result<InFlight, MessagingError> {
        let inner = &self.inner;
        if let Some(inflight) = inner.producers.acquire(&key) {
            return Ok(inflight);
        }
        let _starting = inner.starting.lock().await;
        for _ in 0..3 {
            if let Some(inflight) = inner.producers.acquire(&key) {
                return Ok(inflight);
            }
            let hold = admit(ResourceKind::Producer)?;
            let (table, spec_key) = (inner.producers.clone(), key.clone());
            let spec = ChildSpec::new(key.1.clone(), ResourceKind::Producer, move |rcx| {
                Producer::new(rcx, spec_key.clone(), table.clone())
                    .ok_or("a producer with this id is live already")
            })
            .restart(RestartType::Temporary)
            .tenant(key.0.clone())
            .hold(hold);
            match inner.producers_sup.start_child::<Producer>(spec).await {
                // registered by its factory, or a concurrent send's producer won: use it
                Ok(_) | Err(steward_core::Error::StartFailed { .. }) => {}
                Err(e) => return Err(start_error(&e, "producers", inner.config.max_producers)),
            }
        }
        Err(MessagingError::Unavailable(format!("producer {} keeps stopping", key.1)))
    }

    /// Hands `tenant`'s messaging quotas to the broker, which counts topics, groups and stored
    /// messages and refuses past them. The edge calls it before each send and receive with the
    /// limits the caller's token resolved to (cheap: one map update).
    pub fn set_limits(&self, tenant: &Arc<str>, limits: crate::TenantLimits) {
        if let Ok(broker) = self.broker() {
            broker.set_limits(tenant, limits);
        }
    }

    /// Every tenant's messaging usage now (topics, groups, stored messages and bytes), for
    /// `/metrics`; empty while the broker is not connected.
    #[must_use]
    pub fn tenant_usage(&self) -> Vec<(Arc<str>, crate::TenantUsage)> {
        self.broker().map(|b| b.usage()).unwrap_or_default()
    }

    /// `SendMessage`: validates each entry, finds or starts the producer (`producer_id`, else
    /// one per topic; `admit` is asked for each new one), stores the valid entries and answers
    /// one [`SendResult`] per entry, in order.
    ///
    /// # Errors
    /// [`MessagingError::Invalid`] for an empty batch, more than `max_batch` entries or a bad
    /// `producer_id`; [`MessagingError::Exhausted`] when a new producer is over quota or the
    /// node cap; [`MessagingError::Unavailable`] while shutting down or while the broker is not
    /// connected.
    pub async fn send(
        &self,
        tenant: &Arc<str>,
        producer_id: Option<&str>,
        entries: Vec<SendEntry>,
        admit: Admit<'_>,
    ) -> Result<Vec<SendResult>, MessagingError> {
        self.check_batch("messages", entries.len())?;
        if let Some(id) = producer_id {
            names::check_id("producer_id", id)?;
        }
        let broker = self.broker()?;
        let stats = &self.inner.stats;
        let mut results: Vec<Option<SendResult>> = vec![None; entries.len()];
        let mut by_topic: BTreeMap<String, (Vec<usize>, Vec<OutMessage>)> = BTreeMap::new();
        for (i, e) in entries.into_iter().enumerate() {
            if let Err(why) = self.check_entry(i, &e) {
                MessagingStats::add(&stats.sent_invalid, 1);
                results[i] = Some(SendResult::Invalid(why.to_string()));
                continue;
            }
            let slot = by_topic.entry(e.topic).or_default();
            slot.0.push(i);
            slot.1.push(e.message);
        }
        let keys: Vec<Arc<str>> = match producer_id {
            Some(id) => vec![id.into()],
            None => by_topic.keys().map(|t| Arc::from(t.as_str())).collect(),
        };
        let mut inflight = Vec::with_capacity(keys.len());
        for key in keys {
            inflight.push(self.producer((tenant.clone(), key), admit).await?);
        }
        let timeout = self.inner.config.send_timeout;
        let sends = by_topic.into_iter().map(|(topic, (idx, msgs))| {
            let broker = broker.clone();
            let key = TopicKey::new(tenant.clone(), topic);
            async move {
                let n = msgs.len();
                let outcomes = tokio::time::timeout(timeout, broker.send(&key, msgs))
                    .await
                    .unwrap_or_else(|_| {
                        let why = format!("the broker did not store the batch within {timeout:?}");
                        vec![SendOutcome::Unavailable(why); n]
                    });
                idx.into_iter().zip(outcomes).collect::<Vec<_>>()
            }
        });
        for (i, outcome) in join_all(sends).await.into_iter().flatten() {
            let (counter, result) = match outcome {
                SendOutcome::Stored { message_id, duplicate } => (
                    if duplicate { &stats.sent_duplicate } else { &stats.sent_ok },
                    SendResult::Ok { message_id, duplicate },
                ),
                SendOutcome::RetryLater(why) => {
                    (&stats.sent_retry_later, SendResult::RetryLater(why))
                }
                SendOutcome::Unavailable(why) => {
                    (&stats.sent_unavailable, SendResult::Unavailable(why))
                }
                SendOutcome::QuotaExceeded(refusal) => {
                    (&stats.sent_quota_exceeded, SendResult::QuotaExceeded(refusal))
                }
            };
            MessagingStats::add(counter, 1);
            results[i] = Some(result);
        }
        for f in &inflight {
            self.inner.registry.touch(f.producer());
        }
        drop(inflight);
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| SendResult::Unavailable("not sent".into())))
            .collect())
    }

    fn stream_settings(&self, spec: &ReceiveSpec) -> Result<StreamSettings, MessagingError> {
        let c = &self.inner.config;
        let msgs = match spec.max_outstanding_messages {
            None | Some(0) => c.max_outstanding_messages,
            Some(n) if n > c.max_outstanding_messages_limit => {
                return Err(invalid(
                    "max_outstanding_messages",
                    format!("at most {}", c.max_outstanding_messages_limit),
                ));
            }
            Some(n) => n,
        };
        let limit = c.max_outstanding_bytes_limit.as_u64();
        let bytes = match spec.max_outstanding_bytes {
            None | Some(0) => c.max_outstanding_bytes.as_u64(),
            Some(n) if n > limit => {
                return Err(invalid("max_outstanding_bytes", format!("at most {limit}")));
            }
            Some(n) => n,
        };
        let invisible = spec.invisible_duration.unwrap_or(c.invisible_duration);
        self.check_invisible("invisible_duration", invisible, false)?;
        Ok(StreamSettings {
            max_outstanding_messages: msgs,
            max_outstanding_bytes: bytes,
            invisible_duration: invisible,
            auto_renew: spec.auto_renew,
        })
    }

    fn check_invisible(&self, field: &str, d: Duration, zero_ok: bool) -> Result<(), Invalid> {
        let max = self.inner.config.max_invisible_duration;
        if (d.is_zero() && zero_ok) || (MIN_INVISIBLE_DURATION..=max).contains(&d) {
            Ok(())
        } else {
            Err(Invalid::new(
                field,
                format!("must be between {MIN_INVISIBLE_DURATION:?} and {max:?}"),
            ))
        }
    }

    /// `ReceiveMessages`: validates `spec`, admits and starts a consumer, and answers its event
    /// stream. Dropping the stream ends the consumer, which returns what it holds unacked.
    ///
    /// # Errors
    /// [`MessagingError::Invalid`] (names, limits), [`MessagingError::Exhausted`] (quota,
    /// node cap), [`MessagingError::Conflict`] (group exists with another tag filter),
    /// [`MessagingError::Unavailable`] (broker down, shutting down).
    pub async fn receive(
        &self,
        tenant: &Arc<str>,
        spec: ReceiveSpec,
        admit: Admit<'_>,
    ) -> Result<ConsumerStream, MessagingError> {
        names::check_name("group", &spec.group)?;
        names::check_name("topic", &spec.topic)?;
        let filter = match spec.tag.as_deref() {
            None | Some("" | "*") => TagFilter::All,
            Some(tag) => {
                names::check_tag("tag", tag)?;
                TagFilter::Tag(tag.into())
            }
        };
        let consumer_id: Arc<str> = match spec.consumer_id.as_deref() {
            None | Some("") => format!("c-{:016x}", fastrand::u64(..)).into(),
            Some(id) => {
                names::check_id("consumer_id", id)?;
                id.into()
            }
        };
        let settings = self.stream_settings(&spec)?;
        let broker = self.broker()?;
        let hold = admit(ResourceKind::Consumer)?;
        let group = GroupKey {
            topic: TopicKey::new(tenant.clone(), spec.topic.as_str()),
            group: spec.group.as_str().into(),
            filter,
        };
        let pull = broker.open(&group, settings.invisible_duration).await?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let inner = &self.inner;
        let parts = Mutex::new(Some(ConsumerParts {
            tenant: tenant.clone(),
            group: group.group.clone(),
            consumer_id: consumer_id.clone(),
            settings,
            pull,
            out: tx,
            broker,
            directory: inner.directory.clone(),
            stats: inner.stats.clone(),
            heartbeat: inner.config.heartbeat_interval,
            write_stall: inner.config.write_stall_timeout,
        }));
        let name = format!("{}/{}", spec.topic, spec.group);
        let spec = ChildSpec::new(name, ResourceKind::Consumer, move |rcx| {
            let parts = parts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take()
                .ok_or("a consumer cannot be restarted: its stream is gone")?;
            Ok::<_, &str>(Consumer::new(rcx, parts))
        })
        .restart(RestartType::Temporary)
        .tenant(tenant.clone())
        .hold(hold);
        inner
            .consumers_sup
            .start_child::<Consumer>(spec)
            .await
            .map_err(|e| start_error(&e, "consumers", inner.config.max_consumers))?;
        Ok(ConsumerStream { rx, consumer_id, settings })
    }

    /// Finds the lease behind receipt `i`; the consumer must be live and the tenant's.
    fn lookup(
        &self,
        tenant: &str,
        field: impl FnOnce() -> String,
        handle: &str,
    ) -> Result<(Arc<crate::consumer::ConsumerEntry>, u64), EntryError> {
        let Some((consumer, seq)) = parse_receipt(handle) else {
            return Err(EntryError::Invalid(Invalid::new(field(), "not a receipt handle")));
        };
        match self.inner.directory.get(consumer) {
            Some(entry) if &*entry.tenant == tenant => Ok((entry, seq)),
            _ => Err(EntryError::NotFound(
                "receipt not found: its stream has ended (the message was returned for redelivery)"
                    .into(),
            )),
        }
    }

    fn spent() -> EntryError {
        EntryError::NotFound(
            "receipt not found: acked or nacked already, or its lease expired".into(),
        )
    }

    /// `AckMessages`: one result per receipt, in order.
    ///
    /// # Errors
    /// [`MessagingError::Invalid`] for an empty list or more than `max_batch` receipts;
    /// [`MessagingError::Unavailable`] while the broker is not connected.
    pub async fn ack(
        &self,
        tenant: &Arc<str>,
        receipts: Vec<String>,
    ) -> Result<Vec<Result<(), EntryError>>, MessagingError> {
        self.check_batch("receipt_handles", receipts.len())?;
        let broker = self.broker()?;
        let mut results: Vec<Result<(), EntryError>> = Vec::with_capacity(receipts.len());
        let (mut idx, mut leases) = (Vec::new(), Vec::new());
        for (i, handle) in receipts.iter().enumerate() {
            let taken = self
                .lookup(tenant, || format!("receipt_handles[{i}]"), handle)
                .and_then(|(entry, seq)| entry.leases.take(seq).ok_or_else(Self::spent));
            match taken {
                Ok(held) => {
                    idx.push(i);
                    leases.push(held.lease);
                    results.push(Ok(()));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        let acked = broker.ack(leases).await;
        for (i, r) in idx.into_iter().zip(acked) {
            results[i] = r.map_err(EntryError::from);
        }
        let ok = results.iter().filter(|r| r.is_ok()).count();
        MessagingStats::add(&self.inner.stats.acks, ok as u64);
        Ok(results)
    }

    /// `NackMessages`: each delivery is returned for redelivery after its delay (at most
    /// `max_invisible_duration`); the receipt is spent. One result per receipt, in order.
    ///
    /// # Errors
    /// As [`Messaging::ack`].
    pub async fn nack(
        &self,
        tenant: &Arc<str>,
        receipts: Vec<(String, Duration)>,
    ) -> Result<Vec<Result<(), EntryError>>, MessagingError> {
        self.check_batch("entries", receipts.len())?;
        let broker = self.broker()?;
        let max = self.inner.config.max_invisible_duration;
        let mut results: Vec<Result<(), EntryError>> = Vec::with_capacity(receipts.len());
        let (mut idx, mut leases) = (Vec::new(), Vec::new());
        for (i, (handle, delay)) in receipts.iter().enumerate() {
            if *delay > max {
                results.push(Err(EntryError::Invalid(Invalid::new(
                    format!("entries[{i}].delay"),
                    format!("at most {max:?}"),
                ))));
                continue;
            }
            let taken = self
                .lookup(tenant, || format!("entries[{i}].receipt_handle"), handle)
                .and_then(|(entry, seq)| entry.leases.take(seq).ok_or_else(Self::spent));
            match taken {
                Ok(held) => {
                    idx.push(i);
                    leases.push((held.lease, *delay));
                    results.push(Ok(()));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        let done = broker.set_visibility(leases).await;
        for (i, r) in idx.into_iter().zip(done) {
            results[i] = r.map_err(EntryError::from);
        }
        let ok = results.iter().filter(|r| r.is_ok()).count();
        MessagingStats::add(&self.inner.stats.nacks, ok as u64);
        Ok(results)
    }

    /// `ChangeInvisibleDuration`: each delivery becomes visible again `duration` from now
    /// unless acked (0: at once); the receipt stays valid until then. Answers the new deadline
    /// per receipt.
    ///
    /// # Errors
    /// As [`Messaging::ack`]; a duration over `max_invisible_duration` is an entry error.
    pub async fn change_invisible_duration(
        &self,
        tenant: &Arc<str>,
        receipts: Vec<(String, Duration)>,
    ) -> Result<Vec<Result<SystemTime, EntryError>>, MessagingError> {
        self.check_batch("entries", receipts.len())?;
        let broker = self.broker()?;
        let mut results: Vec<Result<SystemTime, EntryError>> = Vec::with_capacity(receipts.len());
        let mut todo = Vec::new();
        for (i, (handle, d)) in receipts.iter().enumerate() {
            let found = self
                .check_invisible(&format!("entries[{i}].invisible_duration"), *d, true)
                .map_err(EntryError::Invalid)
                .and_then(|()| {
                    self.lookup(tenant, || format!("entries[{i}].receipt_handle"), handle)
                })
                .and_then(|(entry, seq)| {
                    entry.leases.lease(seq).map(|l| (entry, seq, l)).ok_or_else(Self::spent)
                });
            match found {
                Ok((entry, seq, lease)) => {
                    todo.push((i, entry, seq, lease, *d));
                    results.push(Ok(SystemTime::now()));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        let batch = todo.iter().map(|(_, _, _, l, d)| (l.clone(), *d)).collect();
        let done = broker.set_visibility(batch).await;
        let (now, wall) = (Instant::now(), SystemTime::now());
        for ((i, entry, seq, _, d), r) in todo.into_iter().zip(done) {
            results[i] = match r {
                Ok(()) => {
                    entry.leases.set_deadline(seq, now + d);
                    Ok(wall + d)
                }
                Err(e) => Err(EntryError::from(e)),
            };
        }
        Ok(results)
    }

    /// `CleanupProducer`: stops the tenant's producer `producer_id` (a topic name when the
    /// client sent without an id). Idempotent: answers whether one was live.
    ///
    /// # Errors
    /// [`MessagingError::Invalid`] for a bad id.
    pub async fn cleanup_producer(
        &self,
        tenant: &Arc<str>,
        producer_id: &str,
    ) -> Result<bool, MessagingError> {
        names::check_id("producer_id", producer_id)?;
        let Some(id) = self.inner.producers.remove(&(tenant.clone(), producer_id.into())) else {
            return Ok(false);
        };
        // already stopping (the sweep, the tenant's deletion) is as good
        let _ = Control::new(self.inner.registry.clone()).stop(id, ExitReason::Normal);
        Ok(true)
    }

    /// `CleanupConsumer`: ends the streams of `group` (only those of `consumer_id` when given)
    /// and returns their unacked deliveries to the broker at once; answers when they are gone
    /// (or after 5 s).
    ///
    /// # Errors
    /// [`MessagingError::Invalid`] for bad names.
    pub async fn cleanup_consumer(
        &self,
        tenant: &Arc<str>,
        group: &str,
        consumer_id: Option<&str>,
    ) -> Result<CleanupReport, MessagingError> {
        names::check_name("group", group)?;
        if let Some(id) = consumer_id {
            names::check_id("consumer_id", id)?;
        }
        let doomed: Vec<_> = self
            .inner
            .directory
            .all()
            .into_iter()
            .filter(|e| {
                e.tenant == *tenant
                    && &*e.group == group
                    && consumer_id.is_none_or(|id| &*e.consumer_id == id)
            })
            .collect();
        let mut report = CleanupReport::default();
        let deadline = Instant::now() + CLEANUP_WAIT;
        let control = Control::new(self.inner.registry.clone());
        for entry in &doomed {
            entry.cleaned_up.store(true, Ordering::Release);
            report.returned += entry.held() as u64;
            let _ = control.stop(entry.resource, ExitReason::Normal);
        }
        for entry in &doomed {
            if self.inner.registry.wait_gone(entry.resource, deadline).await {
                report.streams += 1;
            }
        }
        Ok(report)
    }

    /// `Heartbeat`: records activity of the tenant's producers `producer_ids` (so the idle sweep
    /// keeps them) and answers how many of them are live.
    ///
    /// # Errors
    /// [`MessagingError::Invalid`] for a bad id or more than `max_batch` ids.
    pub fn heartbeat(
        &self,
        tenant: &Arc<str>,
        producer_ids: &[String],
    ) -> Result<u32, MessagingError> {
        if producer_ids.len() > self.inner.config.max_batch as usize {
            return Err(invalid(
                "producer_ids",
                format!("more than {} ids", self.inner.config.max_batch),
            ));
        }
        let mut keys = Vec::with_capacity(producer_ids.len());
        for (i, id) in producer_ids.iter().enumerate() {
            names::check_id(&format!("producer_ids[{i}]"), id)?;
            keys.push((tenant.clone(), Arc::from(id.as_str())));
        }
        Ok(self.inner.producers.touch(&keys))
    }

    /// Live producers and consumers on this node.
    #[must_use]
    pub fn live(&self) -> (u64, u64) {
        (self.inner.producers.len() as u64, self.inner.directory.len() as u64)
    }

    /// Resolves once the deliveries of every stopped consumer are back in the broker (on NATS,
    /// their nacks are sent; the embedded broker returns them at once). The shutdown waits on it
    /// at the end of its `drain_messaging` phase, so that a restart finds them deliverable.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only waits.
    pub async fn returned(&self) {
        // not `broker()`: that one refuses new work once the shutdown began
        let broker =
            self.inner.broker.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        if let Some(broker) = broker {
            broker.returned().await;
        }
    }

    /// The tenant was deleted: drops its topics and groups from the broker (its producers and
    /// consumers are stopped through the registry like every resource it owns). Answers the
    /// number of topics removed.
    ///
    /// # Errors
    /// [`MessagingError::Unavailable`] when the broker cannot be reached.
    pub async fn remove_tenant(&self, tenant: &str) -> Result<u64, MessagingError> {
        let broker = self.broker()?;
        Ok(broker.remove_tenant(tenant).await?)
    }
}

fn start_error(e: &steward_core::Error, what: &str, max: u32) -> MessagingError {
    match e {
        steward_core::Error::MaxChildren { .. } => MessagingError::Exhausted {
            message: format!("this node holds its maximum of {max} {what}"),
            retry_after: Duration::from_secs(1),
        },
        steward_core::Error::ShuttingDown => {
            MessagingError::Unavailable("the server is shutting down".into())
        }
        other => MessagingError::Unavailable(format!("{what} are unavailable: {other}")),
    }
}

#[cfg(test)]
mod tests;
