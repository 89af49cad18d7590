//! Steward's tonic edge: `grpc.health.v1`, server reflection, `steward.admin.v1.Admin` (behind
//! the admin token), and `steward.tenancy.v1.Tenancy` and `steward.jobs.v1.Jobs` (behind tenant
//! API tokens, checked by [`TenantAuth`]), served by a supervised [`GrpcListener`] service
//! resource on tonic's own multi-thread tokio runtime. Services reach resources through the
//! core's registry and handles (`Addr::send` works across runtimes), tenants through the
//! [`steward_tenancy::Tenancy`] handle and jobs through the
//! [`steward_socket::jobs::JobHubHandle`]; nothing here starts an actor.
//!
//! It turns core, tenancy and job hub errors into gRPC status codes. It must not know actix-web.
#![forbid(unsafe_code)]

mod admin;
mod auth;
mod error;
mod jobs;
mod listener;
mod tenancy;
mod tenant_admin;
#[cfg(test)]
mod tests;

pub use admin::AdminService;
pub use auth::BearerInterceptor;
pub use error::{status_from, status_from_jobs, status_from_tenancy};
pub use jobs::JobsService;
pub use listener::{GrpcListener, GrpcSpec};
pub use tenancy::{TenancyService, TenantAuth, TenantAuthLayer, tenant_of};
