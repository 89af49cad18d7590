//! The supervision kernel of Steward.
//!
//! It owns resource identity ([`ResourceId`], [`ResourceKind`], the lifecycle state machine and
//! [`ExitReason`]), supervisors with OTP-style restart policy ([`supervisor`]), the [`Registry`] of
//! every live resource, tracked spawning of tasks, timers and child processes ([`Tracker`]), per-kind
//! idle timeouts, the ordered [`shutdown`] coordinator and the leak [`watchdog`].
//!
//! It must not know HTTP, gRPC, WebSocket, JSON, Chromium or WebRTC: those live in the edge and
//! resource crates, which reach this one through the types exported here (checked by the
//! architecture test in `tests/integration/architecture.rs`).
//!
//! Unsafe code is denied; the single exception is the `pre_exec` hook that sets the parent-death
//! signal of tracked child processes (`tracker/process.rs`), documented there.
#![deny(unsafe_code)]

mod context;
mod error;
mod events;
pub mod registry;
mod resource;
pub mod shutdown;
pub mod supervisor;
#[cfg(test)]
mod testing;
pub mod tracker;
pub mod watchdog;

pub use context::{Resource, ResourceCtx, StopResource, start_unsupervised, stop_resource};
pub use error::{Error, Result};
pub use events::{EventKind, ResourceEvent};
pub use registry::{Registry, ResourceFilter, ResourceInfo};
pub use resource::{ExitReason, LifecycleState, ResourceId, ResourceKind};
pub use supervisor::{
    ChildSpec, RestartType, Strategy, SupervisorCell, SupervisorHandle, SupervisorSpec,
};
pub use tracker::Tracker;
