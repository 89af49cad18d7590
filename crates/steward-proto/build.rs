//! Generates the Rust code of Steward's gRPC API from the .proto files, with
//! the vendored `protoc` so that no system `protoc` is needed.

use std::env;
use std::error::Error;
use std::path::PathBuf;

const PROTO_ROOT: &str = "proto";
const PROTOS: &[&str] = &[
    "proto/steward/admin/v1/admin.proto",
    "proto/steward/browser/v1/browser.proto",
    "proto/steward/jobs/v1/jobs.proto",
    "proto/steward/messaging/v1/messaging.proto",
    "proto/steward/rtc/v1/rtc.proto",
    "proto/steward/streams/v1/streams.proto",
    "proto/steward/tenancy/v1/tenancy.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);

    // Pass the vendored protoc (and its bundled well-known types) explicitly
    // instead of through the PROTOC / PROTOC_INCLUDE environment variables.
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let protoc_include = protoc_bin_vendored::include_path()?;

    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);

    let includes = [PathBuf::from(PROTO_ROOT), protoc_include];
    let protos: Vec<PathBuf> = PROTOS.iter().map(PathBuf::from).collect();

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(true)
        // message bodies as `bytes::Bytes` (shared with the broker's messages, not copied) and
        // properties as `BTreeMap` (the domain's type; deterministic encoding)
        .bytes(".steward.messaging.v1")
        .btree_map(".steward.messaging.v1")
        // screenshots and PDFs as `bytes::Bytes`: the captured `Vec<u8>` is moved, not copied
        .bytes(".steward.browser.v1")
        // publication data as `bytes::Bytes`, shared with the stream's store
        .bytes(".steward.streams.v1")
        // data messages as `bytes::Bytes`, handed to the room's data plane without a copy
        .bytes(".steward.rtc.v1")
        .file_descriptor_set_path(out_dir.join("steward_descriptor.bin"))
        .compile_with_config(config, &protos, &includes)?;

    // prost-build already emits rerun-if-changed for each .proto; also rerun
    // when a new file appears under proto/.
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    Ok(())
}
