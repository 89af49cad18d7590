//! Steward's actix-web edge: the admin API (health, readiness, metrics, resources, supervisors,
//! watchdog, shutdown, OpenAPI document) and the public listener, each run by a supervised
//! [`HttpListener`] service resource.
//!
//! It turns core errors into HTTP statuses and `{"error":{"code","message"}}` bodies; it reaches
//! resources only through the core's registry and handles. It must not know tonic.
#![forbid(unsafe_code)]

mod admin;
mod error;
mod listener;
mod metrics;
mod public;

pub use admin::{AdminState, ApiDoc, admin_app_config};
pub use error::ApiError;
pub use listener::{HttpListener, ListenerSpec};
pub use metrics::render_metrics;
pub use public::public_app_config;
