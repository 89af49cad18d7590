//! The NATS JetStream backend (`[messaging] backend = "nats"`).

/// A JetStream lease: what acking, nacking or extending one delivery needs.
#[derive(Debug, Clone)]
pub(crate) struct NatsLease {}
