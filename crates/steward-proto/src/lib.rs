//! The .proto files of Steward's gRPC API and the code tonic generates from
//! them; no logic. Servers implement the generated traits (for example
//! [`admin::v1::admin_server::Admin`], [`browser::v1::browser_server::Browser`],
//! [`jobs::v1::jobs_server::Jobs`],
//! [`messaging::v1::messaging_server::Messaging`],
//! [`rtc::v1::rooms_server::Rooms`],
//! [`streams::v1::streams_server::Streams`] and
//! [`tenancy::v1::tenancy_server::Tenancy`]) and clients use the generated
//! clients (for example [`admin::v1::admin_client::AdminClient`],
//! [`browser::v1::browser_client::BrowserClient`],
//! [`jobs::v1::jobs_client::JobsClient`],
//! [`messaging::v1::messaging_client::MessagingClient`],
//! [`rtc::v1::rooms_client::RoomsClient`] and
//! [`tenancy::v1::tenancy_client::TenancyClient`]).
//!
//! The .proto files live in this crate's `proto/` directory;
//! [`FILE_DESCRIPTOR_SET`] describes all of them (for gRPC server reflection).

#![forbid(unsafe_code)]

/// The `steward.admin` protobuf packages.
pub mod admin {
    /// The `steward.admin.v1` protobuf package: the `Admin` service.
    #[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("steward.admin.v1");
    }
}

/// The `steward.browser` protobuf packages.
pub mod browser {
    /// The `steward.browser.v1` protobuf package: the `Browser` service (headless-browser
    /// sessions: navigate, screenshot, PDF, evaluate), called with a tenant's API token. Its
    /// `bytes` fields (captures) are `bytes::Bytes`.
    #[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("steward.browser.v1");
    }
}

/// The `steward.jobs` protobuf packages.
pub mod jobs {
    /// The `steward.jobs.v1` protobuf package: the `Jobs` service, called with a tenant's API
    /// token.
    #[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("steward.jobs.v1");
    }
}

/// The `steward.messaging` protobuf packages.
pub mod messaging {
    /// The `steward.messaging.v1` protobuf package: the `Messaging` service (producers and
    /// consumers over a broker), called with a tenant's API token. Its `bytes` fields are
    /// `bytes::Bytes` and its maps `BTreeMap`s.
    #[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("steward.messaging.v1");
    }
}

/// The `steward.rtc` protobuf packages.
pub mod rtc {
    /// The `steward.rtc.v1` protobuf package: the `Rooms` service (room admin: list rooms and
    /// participants, remove a participant, close a room, send a data message), called with a
    /// tenant's API token. Its `bytes` fields are `bytes::Bytes`.
    #[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("steward.rtc.v1");
    }
}

/// The `steward.streams` protobuf packages.
pub mod streams {
    /// The `steward.streams.v1` protobuf package: the `Streams` service (a last-value cache
    /// with history and recovery), called with a tenant's API token. Its `bytes` fields are
    /// `bytes::Bytes`.
    #[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("steward.streams.v1");
    }
}

/// The `steward.tenancy` protobuf packages.
pub mod tenancy {
    /// The `steward.tenancy.v1` protobuf package: the `Tenancy` service, called with a
    /// tenant's API token.
    #[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("steward.tenancy.v1");
    }
}

/// The prost the generated types are built with, so users can name [`prost::Message`] (for
/// `encoded_len`, `encode`, `decode`) without a dependency of their own that could drift.
pub use prost;

/// The encoded `google.protobuf.FileDescriptorSet` of all of Steward's .proto
/// files (and the well-known types they import), for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("steward_descriptor");

#[cfg(test)]
mod tests;
