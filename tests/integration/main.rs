//! Steward's integration tests: the real `steward` binary on OS-chosen loopback ports, driven by
//! real clients (reqwest for HTTP, tonic for gRPC). One test binary for the whole workspace.
#![allow(missing_docs, clippy::print_stderr, unreachable_pub)]

mod admin_http;
mod architecture;
mod browser;
mod config;
mod doors;
mod egress;
mod grpc;
mod isolation;
mod jobs;
mod lifecycle;
mod messaging;
mod panics;
mod rtc;
mod rtc_chromium;
mod rtc_client;
mod rtc_rooms;
mod socket_cores;
mod sockets;
mod streams;
mod support;
mod tenancy;
mod tls;
