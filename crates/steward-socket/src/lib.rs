//! Sockets and jobs: the WebSocket socket resource, the job hub, and the socket memory monitor.
//!
//! It owns the [`socket`] actor (one per WebSocket connection, kind `socket`, under the
//! `sockets` dynamic supervisor), its JSON protocol, outbound queue and limits; the [`jobs`] hub
//! (a supervised actor owning the job table, eviction and fan-out to watchers); the per-IP
//! admission table and the client-IP rule behind trusted proxies ([`admission`]); the
//! [`monitor`] (seed 002's memory alarms with remediation); the [`port`] through which a socket
//! subscribes to streams without knowing the streams crate; and the counters behind the
//! `steward_socket_*` and `steward_jobs_*` metrics ([`stats`]).
//!
//! It must not know gRPC, Chromium or WebRTC, and not actix-web either: the edge (steward-http)
//! upgrades the connection (actix-http's WebSocket handshake and codec) and hands the actor a
//! [`socket::Wire`] and its [`socket::Inbound`] frames; steward-grpc serves the jobs API through [`jobs::JobHubHandle`].

pub mod admission;
mod error;
pub mod jobs;
pub mod monitor;
pub mod port;
mod service;
pub mod socket;
pub mod stats;

pub use error::{Error, Result};
pub use service::{OpenError, RTC_PREFIX, SocketService};
