//! [`Messaging`]: what the gRPC edge holds to send, receive, ack and clean up, and what the
//! server wires into the supervision tree.

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use steward_config::MessagingConfig;

use crate::broker::{Message, OutMessage};
use crate::error::{EntryError, MessagingError};
use crate::stats::MessagingStats;

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

struct Inner {
    config: MessagingConfig,
    stats: Arc<MessagingStats>,
}

impl Messaging {
    /// A front door over `config`'s broker; resources register in `registry`. Nothing runs
    /// until the specs of [`Messaging::child_specs`] are started by a supervisor.
    #[must_use]
    pub fn new(config: MessagingConfig, registry: steward_core::Registry) -> Self {
        let _ = registry;
        Self { inner: Arc::new(Inner { config, stats: Arc::default() }) }
    }

    /// The children to start under the root supervisor, in order: the `messaging` service
    /// (owns the broker and the idle-producer sweep), and the `producers` and `consumers`
    /// dynamic supervisors.
    #[must_use]
    pub fn child_specs(
        &self,
        supervisor: &steward_config::SupervisorConfig,
    ) -> Vec<steward_core::ChildSpec> {
        let _ = supervisor;
        Vec::new()
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
}

#[allow(clippy::unused_async, unused_variables, clippy::needless_pass_by_value)]
impl Messaging {
    /// `SendMessage`: validates each entry, finds or starts the producer (`producer_id`, else
    /// one per topic; `admit` is asked for each new one), stores the valid entries and answers
    /// one [`SendResult`] per entry, in order.
    ///
    /// # Errors
    /// [`MessagingError::Invalid`] for an empty batch, more than `max_batch` entries or a bad
    /// `producer_id`; [`MessagingError::Exhausted`] when a new producer is over quota or the
    /// node cap; [`MessagingError::Unavailable`] while shutting down.
    pub async fn send(
        &self,
        tenant: &Arc<str>,
        producer_id: Option<&str>,
        entries: Vec<SendEntry>,
        admit: Admit<'_>,
    ) -> Result<Vec<SendResult>, MessagingError> {
        unimplemented!("in progress")
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
    ) -> Result<crate::consumer::ConsumerStream, MessagingError> {
        unimplemented!("in progress")
    }

    /// `AckMessages`: one result per receipt, in order.
    ///
    /// # Errors
    /// [`MessagingError::Invalid`] for an empty list or more than `max_batch` receipts.
    pub async fn ack(
        &self,
        tenant: &Arc<str>,
        receipts: Vec<String>,
    ) -> Result<Vec<Result<(), EntryError>>, MessagingError> {
        unimplemented!("in progress")
    }

    /// `NackMessages`: each delivery is returned for redelivery after its delay (capped at
    /// `max_invisible_duration`); the receipt is spent. One result per receipt, in order.
    ///
    /// # Errors
    /// As [`Messaging::ack`].
    pub async fn nack(
        &self,
        tenant: &Arc<str>,
        receipts: Vec<(String, Duration)>,
    ) -> Result<Vec<Result<(), EntryError>>, MessagingError> {
        unimplemented!("in progress")
    }

    /// `ChangeInvisibleDuration`: each delivery becomes visible again `duration` from now
    /// unless acked; the receipt stays valid. Answers the new deadline per receipt.
    ///
    /// # Errors
    /// As [`Messaging::ack`]; a duration over `max_invisible_duration` is an entry error.
    pub async fn change_invisible_duration(
        &self,
        tenant: &Arc<str>,
        receipts: Vec<(String, Duration)>,
    ) -> Result<Vec<Result<SystemTime, EntryError>>, MessagingError> {
        unimplemented!("in progress")
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
        unimplemented!("in progress")
    }

    /// `CleanupConsumer`: ends the streams of `group` (only those of `consumer_id` when given)
    /// and returns their unacked deliveries to the broker at once.
    ///
    /// # Errors
    /// [`MessagingError::Invalid`] for bad names.
    pub async fn cleanup_consumer(
        &self,
        tenant: &Arc<str>,
        group: &str,
        consumer_id: Option<&str>,
    ) -> Result<CleanupReport, MessagingError> {
        unimplemented!("in progress")
    }

    /// `Heartbeat`: records activity of the tenant's producers `producer_ids` (so the idle sweep
    /// keeps them) and answers how many of them are live.
    ///
    /// # Errors
    /// [`MessagingError::Invalid`] for a bad id.
    pub fn heartbeat(
        &self,
        tenant: &Arc<str>,
        producer_ids: &[String],
    ) -> Result<u32, MessagingError> {
        unimplemented!("in progress")
    }

    /// Live producers and consumers on this node.
    #[must_use]
    pub fn live(&self) -> (u64, u64) {
        unimplemented!("in progress")
    }

    /// The tenant was deleted: drops its topics and groups from the broker (its producers and
    /// consumers are stopped through the registry like every resource it owns). Answers the
    /// number of topics removed.
    ///
    /// # Errors
    /// [`MessagingError::Unavailable`] when the broker cannot be reached.
    pub async fn remove_tenant(&self, tenant: &str) -> Result<u64, MessagingError> {
        unimplemented!("in progress")
    }
}
