//! Headless browsers and browser sessions as supervised resources (seed 000's multi-tenant
//! browser pool, done so that nothing outlives its owner).
//!
//! It owns the `Browser` resource (one actor per Chromium process that Steward spawns in its own
//! process group with its own profile directory, or per remote CDP endpoint it connects to), the
//! `Session` resource (one actor per client session: one incognito browser context and its
//! pages), the `browser-pool` service (placement, recycling, the wait queue), the URL policy and
//! the browser counters.
//!
//! It must not know transports (actix-web, tonic, prost), tenancy (the edge admits and hands in
//! a [`TenantScope`]) or the other resource crates; the architecture test checks this.

mod browser;
mod cdp;
mod egress;
mod error;
mod launch;
mod model;
pub mod policy;

pub use error::{Error, Result};
pub use model::{
    Clip, CloseReason, EvaluateRequest, ImageFormat, NavigateRequest, NavigateResult, PdfRequest,
    ScreenshotRequest, SessionInfo, SessionOptions, TenantScope, WaitUntil,
};
mod service;
mod session;
mod shared;
pub mod stats;

pub use service::{Admit, AdmitGuard, Browsers, Capture, JobReport};
