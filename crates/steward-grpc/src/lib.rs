//! Steward's tonic edge: `grpc.health.v1`, server reflection, `steward.admin.v1.Admin` (behind
//! the admin token), and `steward.tenancy.v1.Tenancy`, `steward.jobs.v1.Jobs`,
//! `steward.messaging.v1.Messaging`, `steward.browser.v1.Browser`, `steward.streams.v1.Streams`
//! and `steward.rtc.v1.Rooms` (behind tenant API tokens,
//! checked by [`TenantAuth`]), served by a supervised [`GrpcListener`] service resource on
//! tonic's own multi-thread tokio runtime. Services reach resources through the core's registry
//! and handles (`Addr::send` works across runtimes), tenants through the
//! [`steward_tenancy::Tenancy`] handle, jobs through the [`steward_socket::jobs::JobHubHandle`],
//! messaging through the [`steward_messaging::Messaging`] handle and browser sessions through the
//! [`steward_browser::Browsers`] handle, streams through the [`steward_streams::Streams`] handle,
//! rooms through the [`steward_rtc::Rtc`] façade; nothing here starts an actor.
//!
//! It turns core, tenancy, job hub, messaging, browser, streams and RTC errors into gRPC status
//! codes. It must
//! not know actix-web.
#![forbid(unsafe_code)]

mod admin;
mod auth;
mod browser;
mod deadline;
mod error;
mod incoming;
mod jobs;
mod listener;
mod messaging;
mod rtc;
mod streams;
mod tenancy;
mod tenant_admin;
#[cfg(test)]
mod tests;
mod wkt;

pub use admin::AdminService;
pub use auth::BearerInterceptor;
pub use browser::{BrowserService, CaptureJanitor, PDF_JOB_KIND, SCREENSHOT_JOB_KIND};
pub use deadline::{Deadline, DeadlineLayer};
pub use error::{
    status_from, status_from_browser, status_from_jobs, status_from_messaging, status_from_rtc,
    status_from_streams, status_from_tenancy,
};
pub use incoming::{AcceptOptions, Conn, accept_stream};
pub use jobs::JobsService;
pub use listener::{GrpcListener, GrpcSpec};
pub use messaging::{DELIVERIES_FRAME_BUDGET, MessagingService};
pub use rtc::RoomsService;
pub use streams::StreamsService;
pub use tenancy::{TenancyService, TenantAuth, TenantAuthLayer, tenant_of};
