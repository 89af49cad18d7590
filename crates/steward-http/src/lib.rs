//! Steward's actix-web edge: the admin API (health, readiness, metrics, resources, supervisors,
//! watchdog, browsers, shutdown, tenants and tokens, OpenAPI document) and the public listener,
//! each run by a supervised [`HttpListener`] service resource.
//!
//! It authenticates tenants ([`Tenant`] extractor) and turns core and tenancy errors into HTTP statuses and `{"error":{"code","message"}}` bodies; it reaches
//! resources only through the core's registry and handles. It must not know tonic.
// `unsafe` once, in `conn::ConnFd::abort` (borrowing a connection's descriptor), explained there
#![deny(unsafe_code)]

mod admin;
mod auth;
mod conn;
mod error;
mod json;
mod listener;
mod metrics;
mod public;
mod rtc_port;
mod streams_port;
mod tenants;
mod ws;

pub use admin::{AdminState, ApiDoc, admin_app_config};
pub use auth::Tenant;
pub use error::ApiError;
pub use json::{MAX_JSON_BODY, ValidJson};
pub use listener::{HttpListener, ListenerSpec};
pub use metrics::{
    BrowserMetrics, DoorMetrics, MessagingMetrics, RtcMetrics, SocketMetrics, StreamMetrics,
    render_metrics,
};
pub use public::public_app_config;
