//! The supervision kernel of Steward.
//!
//! It owns resource identity ([`ResourceId`], [`ResourceKind`], the lifecycle state machine and
//! [`ExitReason`]), the [`Resource`] contract, supervisors with OTP-style restart policy and the
//! [`Control`] of resources by id ([`supervisor`]), the [`Registry`] of every live resource,
//! tracked spawning of tasks, timers and child processes ([`Tracker`]), lifelines and panic
//! containment ([`lifeline`]), per-kind idle timeouts, the ordered [`shutdown`] coordinator and
//! the leak [`watchdog`].
//!
//! Its modules form a DAG: `identity` and `messages` are leaves; `registry` is data and knows no
//! supervisor; `lifeline` and `tracker` build on it; `resource` on those; `supervisor` on all of
//! them; `shutdown` and `watchdog` on top (see docs/ARCHITECTURE.md, "Code map").
//!
//! It must not know HTTP, gRPC, WebSocket, JSON, Chromium or WebRTC: those live in the edge and
//! resource crates, which reach this one through the types exported here (checked by the
//! architecture test in `tests/integration/architecture.rs`).
//!
//! Unsafe code is denied; the single exception is the `pre_exec` hook that sets the parent-death
//! signal of tracked child processes (`tracker/process.rs`), documented there.
#![deny(unsafe_code)]

mod arbiters;
mod error;
mod events;
mod identity;
pub mod lifeline;
mod messages;
pub mod registry;
mod resource;
pub mod shutdown;
pub mod supervisor;
#[cfg(test)]
mod testing;
pub mod tracker;
pub mod watchdog;

pub use arbiters::ArbiterPool;
pub use error::{Error, Result};
pub use events::{EventKind, ResourceEvent};
pub use identity::{ExitReason, LifecycleState, ParseError, ResourceId, ResourceKind};
pub use messages::StopResource;
pub use registry::{Registry, ResourceFilter, ResourceInfo};
pub use resource::{Resource, ResourceCtx, start_unsupervised, stop_resource};
pub use supervisor::{
    ChildSpec, Control, RestartType, Strategy, SupervisorCell, SupervisorHandle, SupervisorSpec,
};
pub use tracker::Tracker;
