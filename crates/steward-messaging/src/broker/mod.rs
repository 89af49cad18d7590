//! The broker seam: what Steward needs from a message store, behind one trait with two real
//! backends ([`embedded`](crate::embedded) and [`nats`](crate::nats)).
//!
//! The model is Pub/Sub's and JetStream's: a tenant's **topic** holds messages; a **group**
//! (JetStream: a durable pull consumer; RocketMQ: a consumer group) sees every message published
//! to the topic after the group was first opened, filtered by tag; the streams of one group
//! compete for its messages. A delivery is **leased** ("invisible") for an invisible duration;
//! acked, it is gone for the group; not acked in time, or nacked, it is delivered again with its
//! attempt count raised; after `max_delivery_attempts` it moves to the dead-letter topic
//! `<topic>.dlq`. Delivery is at-least-once; first deliveries to a group come in publish order.
//!
//! Every operation is bounded: a full topic answers [`SendOutcome::RetryLater`], never a silent
//! drop; a broker that cannot be reached answers [`SendOutcome::Unavailable`] /
//! [`BrokerError::Unavailable`] within `[messaging] send_timeout`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use steward_config::BrokerBackend;

#[cfg(test)]
pub(crate) mod conformance;

/// Suffix of a topic's dead-letter topic.
pub const DEAD_LETTER_SUFFIX: &str = ".dlq";

/// A tenant's topic. Names are validated by [`crate::names`] before they get here.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicKey {
    /// The owning tenant.
    pub tenant: Arc<str>,
    /// The topic name within the tenant.
    pub topic: Arc<str>,
}

impl TopicKey {
    /// A key for `tenant`'s `topic`.
    #[must_use]
    pub fn new(tenant: impl Into<Arc<str>>, topic: impl Into<Arc<str>>) -> Self {
        Self { tenant: tenant.into(), topic: topic.into() }
    }

    /// This topic's dead-letter topic, `<topic>.dlq`.
    #[must_use]
    pub fn dead_letter(&self) -> Self {
        Self::new(self.tenant.clone(), format!("{}{DEAD_LETTER_SUFFIX}", self.topic))
    }

    /// Whether this is a dead-letter topic (its messages are never dead-lettered again).
    #[must_use]
    pub fn is_dead_letter(&self) -> bool {
        self.topic.ends_with(DEAD_LETTER_SUFFIX)
    }
}

impl fmt::Display for TopicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.topic)
    }
}

/// Which messages of a topic a group sees.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TagFilter {
    /// Every message.
    All,
    /// Only messages carrying this tag.
    Tag(Arc<str>),
}

impl TagFilter {
    /// Whether a message with `tag` passes.
    #[must_use]
    pub fn matches(&self, tag: Option<&str>) -> bool {
        match self {
            Self::All => true,
            Self::Tag(want) => tag == Some(&**want),
        }
    }
}

impl fmt::Display for TagFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => f.write_str("*"),
            Self::Tag(t) => f.write_str(t),
        }
    }
}

/// A consumer group of a topic, with the tag filter its streams use.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupKey {
    /// The topic.
    pub topic: TopicKey,
    /// The group name within the tenant.
    pub group: Arc<str>,
    /// The group's filter. A group has one filter: opening it with another one while its state
    /// exists is [`BrokerError::Conflict`].
    pub filter: TagFilter,
}

/// Body, tag, keys and properties, in bytes: what a message weighs against size limits and
/// flow control.
fn weight(
    body: &Bytes,
    tag: Option<&str>,
    keys: &[String],
    props: &BTreeMap<String, String>,
) -> usize {
    body.len()
        + tag.map_or(0, str::len)
        + keys.iter().map(String::len).sum::<usize>()
        + props.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
}

/// A message as a producer sends it (validated by [`crate::names`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutMessage {
    /// The client's message id: a repeat within `[messaging] dedup_window` is a duplicate,
    /// stored once.
    pub client_id: String,
    /// The payload.
    pub body: Bytes,
    /// Optional tag (groups may filter on it).
    pub tag: Option<String>,
    /// Business keys (ordering and lookup hints; carried, not interpreted).
    pub keys: Vec<String>,
    /// User properties.
    pub properties: BTreeMap<String, String>,
    /// Not delivered before this time (RocketMQ's delay/timed message). `None`: at once.
    pub deliver_at: Option<SystemTime>,
}

impl OutMessage {
    /// Bytes the message weighs against size limits and flow control: body, tag, keys and
    /// properties.
    #[must_use]
    pub fn weight(&self) -> usize {
        weight(&self.body, self.tag.as_deref(), &self.keys, &self.properties)
    }
}

/// A stored message as consumers receive it. Shared (`Arc`) between the deliveries of groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The broker's id of the message, unique within its topic (embedded: a sequence number in
    /// hex; NATS: the stream sequence).
    pub message_id: String,
    /// The producer's client message id.
    pub client_id: String,
    /// The topic name (without the tenant).
    pub topic: Arc<str>,
    /// The payload.
    pub body: Bytes,
    /// Its tag.
    pub tag: Option<String>,
    /// Its keys.
    pub keys: Vec<String>,
    /// Its properties.
    pub properties: BTreeMap<String, String>,
    /// When the broker stored it.
    pub published_at: SystemTime,
    /// When it became (or becomes) deliverable.
    pub deliver_at: Option<SystemTime>,
}

impl Message {
    /// Bytes it weighs against flow control: as [`OutMessage::weight`].
    #[must_use]
    pub fn weight(&self) -> usize {
        weight(&self.body, self.tag.as_deref(), &self.keys, &self.properties)
    }
}

/// A tenant's messaging quotas, as the broker enforces them (the edge resolves them from the
/// tenant's quotas and hands them in with each call; the broker counts the usage, since only it
/// knows when topics, groups and messages come and go). Counted over all the tenant's topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantLimits {
    /// Topics that may exist (dead-letter topics are not counted: they follow their topic).
    pub topics: u64,
    /// Consumer groups that may exist (groups of dead-letter topics are not counted either).
    pub groups: u64,
    /// Messages stored and not yet acked by every group.
    pub stored_messages: u64,
    /// Bytes of those messages ([`Message::weight`]).
    pub stored_bytes: u64,
}

impl TenantLimits {
    /// No limit at all (tests, and tenants whose limits were never handed in).
    pub const UNLIMITED: Self = Self {
        topics: u64::MAX,
        groups: u64::MAX,
        stored_messages: u64::MAX,
        stored_bytes: u64::MAX,
    };
}

/// A tenant's messaging usage now: what [`TenantLimits`] bounds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantUsage {
    /// Topics that exist.
    pub topics: u64,
    /// Consumer groups that exist.
    pub groups: u64,
    /// Messages stored and not yet acked by every group.
    pub stored_messages: u64,
    /// Their bytes.
    pub stored_bytes: u64,
}

/// A tenant quota the broker refused on: its name in `[tenancy.default_quotas]` and the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaRefusal {
    /// `topics`, `groups`, `stored_messages` or `stored_bytes`.
    pub quota: &'static str,
    /// The tenant's limit.
    pub limit: u64,
}

impl fmt::Display for QuotaRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "quota `{}` of the tenant is exhausted (limit {})", self.quota, self.limit)
    }
}

/// What the broker decided for one sent message, in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// Stored (or, when `duplicate`, already stored within the dedup window: not stored again).
    Stored {
        /// The broker's message id (of the original when a duplicate).
        message_id: String,
        /// Whether this client message id was seen within the dedup window.
        duplicate: bool,
    },
    /// Not stored because the topic is full; send it again later. Nothing was dropped.
    RetryLater(String),
    /// Not stored because the broker cannot be reached (or did not answer within the send
    /// timeout). It may have been stored; a retry with the same client id is de-duplicated.
    Unavailable(String),
    /// Not stored because a tenant quota is exhausted (a new topic past `topics`, or the
    /// tenant's stored messages or bytes at their limit). Nothing was dropped.
    QuotaExceeded(QuotaRefusal),
}

/// One leased delivery handed to a consumer.
#[derive(Debug)]
pub struct Delivery {
    /// The message.
    pub message: Arc<Message>,
    /// Delivery attempt, 1 for the first.
    pub attempt: u32,
    /// The broker's handle of this lease; give it back to ack, nack or extend.
    pub lease: Lease,
}

/// A broker's handle of one leased delivery: opaque outside the backend that made it.
#[derive(Debug, Clone)]
pub struct Lease(pub(crate) LeaseInner);

#[derive(Debug, Clone)]
pub(crate) enum LeaseInner {
    Embedded(crate::embedded::LeaseRef),
    Nats(crate::nats::NatsLease),
}

/// Why a broker operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// The broker cannot be reached or did not answer in time (`UNAVAILABLE`).
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The lease is unknown: acked already, expired and redelivered, or never issued
    /// (`NOT_FOUND` per entry).
    #[error("lease not found: {0}")]
    LeaseNotFound(String),
    /// The group exists with another tag filter (`FAILED_PRECONDITION`).
    #[error("{0}")]
    Conflict(String),
    /// A new topic or group would pass a tenant quota (`RESOURCE_EXHAUSTED`).
    #[error("{0}")]
    QuotaExceeded(QuotaRefusal),
    /// The broker broke a rule of its own (`INTERNAL`).
    #[error("broker error: {0}")]
    Internal(String),
}

/// A message store. One instance serves the whole node; every method is safe to call from any
/// thread and bounded in time.
pub trait Broker: Send + Sync + 'static {
    /// Which backend this is.
    fn backend(&self) -> BrokerBackend;

    /// Stores `messages` in `topic`, in order, and answers one outcome per message (same
    /// order). Returns only when each message is stored, refused, or past the send timeout.
    fn send<'a>(
        &'a self,
        topic: &'a TopicKey,
        messages: Vec<OutMessage>,
    ) -> BoxFuture<'a, Vec<SendOutcome>>;

    /// Joins `group` (creating its state when it has none) as one competing member whose
    /// deliveries are leased for `invisible`. The member leaves when the [`Pull`] drops; the
    /// group's state outlives its last member by `[messaging] consumer_cleanup_timeout`.
    ///
    /// # Errors
    /// [`BrokerError::Conflict`] when the group exists with another filter;
    /// [`BrokerError::Unavailable`] when the broker cannot be reached.
    fn open<'a>(
        &'a self,
        group: &'a GroupKey,
        invisible: Duration,
    ) -> BoxFuture<'a, Result<Box<dyn Pull>, BrokerError>>;

    /// Acks leased deliveries: each is gone for its group. One result per lease, in order.
    fn ack(&self, leases: Vec<Lease>) -> BoxFuture<'_, Vec<Result<(), BrokerError>>>;

    /// Makes each leased delivery visible again `delay` from now unless it is acked before
    /// (ChangeInvisibleDuration, nack with delay, auto-renew; `Duration::ZERO` = at once). The
    /// lease stays valid for an ack until the message is delivered again. One result per lease.
    fn set_visibility(
        &self,
        leases: Vec<(Lease, Duration)>,
    ) -> BoxFuture<'_, Vec<Result<(), BrokerError>>>;

    /// Returns leased deliveries to the broker for immediate redelivery, without waiting and
    /// without failing: callable from `Drop` (a consumer that crashed) and from any thread.
    /// Backends that need I/O queue the work on a task the broker owns; what cannot be returned
    /// is redelivered when its lease expires anyway.
    fn release(&self, leases: Vec<Lease>);

    /// Sets `tenant`'s quotas; the edge calls it before each send and receive with the limits
    /// the caller's token resolved to. A tenant never set is unlimited.
    fn set_limits(&self, tenant: &Arc<str>, limits: TenantLimits);

    /// Every tenant's usage now (for `/metrics`), sorted by tenant.
    fn usage(&self) -> Vec<(Arc<str>, TenantUsage)>;

    /// Removes the topics and groups that hold no message and saw no use for `ttl`
    /// (`[messaging] topic_idle_ttl`); answers how many topics and groups went. Called by the
    /// messaging service's sweep.
    fn sweep_idle(&self, ttl: Duration) -> BoxFuture<'_, u64>;

    /// Deletes every topic and group of `tenant` (the tenant was deleted). Answers how many
    /// topics went.
    fn remove_tenant<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, Result<u64, BrokerError>>;

    /// Messages stored and not yet acked by every group, when the backend can tell cheaply
    /// (the embedded broker reports it at shutdown: those messages are lost with the process).
    fn unacked(&self) -> Option<u64>;

    /// Resolves once every lease handed to [`Broker::release`] so far has been returned to the
    /// broker (or dropped because it was unreachable). The shutdown waits on it after the
    /// consumers stopped. Default: at once (backends that return synchronously).
    fn returned(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }

    /// Stops background work and drops connections. Called once by the owning service when it
    /// stops; later calls to other methods answer [`BrokerError::Unavailable`].
    fn close(&self) -> BoxFuture<'_, ()>;
}

/// One member's pull handle on a group (see [`Broker::open`]).
pub trait Pull: Send {
    /// Waits up to `wait` for deliverable messages and leases at most `max_messages` of them
    /// whose weights total at most `max_bytes` (always at least one message when any is
    /// deliverable, so a message heavier than `max_bytes` is not stuck). An empty vector means
    /// nothing arrived within `wait`.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when the broker cannot be reached (the caller retries after
    /// a pause; the backend re-creates what it lost, nats.rs #1584).
    fn fetch(
        &mut self,
        max_messages: usize,
        max_bytes: usize,
        wait: Duration,
    ) -> BoxFuture<'_, Result<Vec<Delivery>, BrokerError>>;
}

/// Settings every backend shares, from `[messaging]`.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// `send_timeout`.
    pub send_timeout: Duration,
    /// `max_delivery_attempts`.
    pub max_delivery_attempts: u32,
    /// `dedup_window`.
    pub dedup_window: Duration,
    /// `consumer_cleanup_timeout`: group state's grace after its last member.
    pub group_grace: Duration,
    /// `topic_max_messages`.
    pub topic_max_messages: u64,
    /// `topic_max_bytes`.
    pub topic_max_bytes: u64,
}

impl BrokerSettings {
    /// The settings in `config`.
    #[must_use]
    pub fn from_config(config: &steward_config::MessagingConfig) -> Self {
        Self {
            send_timeout: config.send_timeout,
            max_delivery_attempts: config.max_delivery_attempts,
            dedup_window: config.dedup_window,
            group_grace: config.consumer_cleanup_timeout,
            topic_max_messages: u64::from(config.topic_max_messages),
            topic_max_bytes: config.topic_max_bytes.as_u64(),
        }
    }
}
