//! Messaging for Steward: message producers and consumers as supervised resources, proxied over
//! gRPC (`steward.messaging.v1.Messaging`, in `steward-grpc`) to a broker behind one trait with
//! two real backends: the in-process [`embedded`] broker and [`nats`] JetStream.
//!
//! Seed 001's proxy leaked producers, let consumer goroutines outlive their stream and dropped
//! messages when a channel filled. Here:
//! - a **producer** is an actor keyed by (tenant, producer id or topic), reference-counted by
//!   in-flight sends and stopped by the idle sweep ([`producer`]);
//! - a **consumer** is an actor per receive stream whose life is its stream's life: when the
//!   stream ends for any reason, every lease it holds goes back to the broker at once
//!   ([`consumer`]);
//! - flow control is by credit (max outstanding messages and bytes), so nothing piles up in
//!   Steward, and no message is ever dropped for lack of room: a full topic answers
//!   `RETRY_LATER`, a stalled client gets its messages returned to the broker.
//!
//! This crate knows no transport: the edge hands it validated requests and renders its events.

pub mod broker;
pub mod consumer;
pub mod embedded;
mod error;
mod hub;
pub mod names;
pub mod nats;
pub mod producer;
pub mod service;
pub mod stats;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use broker::{
    Broker, BrokerError, BrokerSettings, Delivery, GroupKey, Lease, Message, OutMessage, Pull,
    QuotaRefusal, SendOutcome, TagFilter, TenantLimits, TenantUsage, TopicKey,
};
pub use error::{EntryError, MessagingError, QUOTA_RETRY_AFTER};
pub use service::{
    Admit, AdmitGuard, CleanupReport, ConsumerEvent, Delivered, Messaging, ReceiveSpec, SendEntry,
    SendResult,
};
pub use stats::{MessagingStats, MessagingStatsSnapshot};
