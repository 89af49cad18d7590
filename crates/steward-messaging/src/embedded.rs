//! The embedded broker (`[messaging] backend = "embedded"`, the default): in process, in memory.

/// An embedded lease.
#[derive(Debug, Clone)]
pub(crate) struct LeaseRef {}
