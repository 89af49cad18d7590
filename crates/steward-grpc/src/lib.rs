//! Steward's tonic edge: `grpc.health.v1`, server reflection and `steward.admin.v1.Admin`,
//! served by a supervised [`GrpcListener`] service resource on tonic's own multi-thread tokio
//! runtime. Services reach resources through the core's registry and handles (`Addr::send`
//! works across runtimes); nothing here starts an actor.
//!
//! It turns core errors into gRPC status codes. It must not know actix-web.
#![forbid(unsafe_code)]

mod admin;
mod auth;
mod error;
mod listener;

pub use admin::AdminService;
pub use auth::BearerInterceptor;
pub use error::status_from;
pub use listener::{GrpcListener, GrpcSpec};
