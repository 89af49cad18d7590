//! `steward stream`: a small gRPC client of `steward.streams.v1.Streams` for the tenant whose
//! API token is in `$STEWARD_TOKEN` — publish, read the latest values and the history, watch —
//! enough to try streams by hand, for people without grpcurl.
//!
//! Output is meant for shell scripts: `publish` prints `<offset> <epoch>` (plus ` duplicate`
//! when an idempotency key repeated), and every publication is printed as one JSON line
//! `{"offset":…,"key":…,"data":…}` (JSON data inline, bytes as base64 with
//! `"encoding":"base64"`, like the WebSocket API).

use std::process::ExitCode;

use base64::Engine as _;
use clap::Subcommand;
use steward_proto::streams::v1 as pb;
use steward_proto::streams::v1::streams_client::StreamsClient;

use crate::client;

/// The operations of `steward stream`.
#[derive(Subcommand)]
pub(crate) enum StreamCommand {
    /// Publish to a stream and print `<offset> <epoch>`.
    Publish {
        /// The stream (1–128 bytes of `[A-Za-z0-9_.:-]`).
        stream: String,
        /// The data: JSON text (validated), unless --bytes.
        data: String,
        /// The key whose latest value this becomes.
        #[arg(long, value_name = "KEY")]
        key: Option<String>,
        /// Send the data as opaque bytes, not JSON.
        #[arg(long)]
        bytes: bool,
        /// An idempotency key: a repeat within the window stores nothing.
        #[arg(long, value_name = "KEY")]
        idempotency_key: Option<String>,
    },
    /// Print the latest value of a key, or of every key (most recent first), one JSON line each.
    Latest {
        /// The stream.
        stream: String,
        /// One key; every key when absent.
        #[arg(long, value_name = "KEY")]
        key: Option<String>,
    },
    /// Print the history, one JSON line per publication, after `--since-offset` of
    /// `--epoch` when given.
    History {
        /// The stream.
        stream: String,
        /// Only publications after this offset (needs --epoch).
        #[arg(long, value_name = "OFFSET", requires = "epoch")]
        since_offset: Option<u64>,
        /// The epoch of --since-offset.
        #[arg(long, value_name = "EPOCH")]
        epoch: Option<String>,
        /// At most this many (0: the history size).
        #[arg(long, default_value_t = 0)]
        limit: u32,
    },
    /// Print `subscribed <offset> <epoch> recovered=<bool>`, then one JSON line per publication
    /// until interrupted or the watch ends.
    Watch {
        /// The stream.
        stream: String,
        /// Recover every publication after this offset (needs --epoch).
        #[arg(long, value_name = "OFFSET", requires = "epoch")]
        since_offset: Option<u64>,
        /// The epoch of --since-offset.
        #[arg(long, value_name = "EPOCH")]
        epoch: Option<String>,
    },
}

/// Runs `command` against the gRPC address `addr` with `$STEWARD_TOKEN`; exit 0 when the call
/// succeeded, 1 when the server refused it (`refused: <message> (<code>)`) or a watch ended
/// with an error (`ended: <message> (<code>)`).
///
/// # Errors
/// As [`client::with_tenant`]: no token, no runtime, a bad address or no connection.
#[allow(clippy::print_stdout)]
pub(crate) fn run(addr: &str, command: StreamCommand) -> anyhow::Result<ExitCode> {
    client::with_tenant(addr, |tenant| async move {
        let mut streams = StreamsClient::new(tenant.channel.clone());
        let since = |offset: Option<u64>, epoch: Option<String>| {
            offset.map(|offset| pb::Position { offset, epoch: epoch.unwrap_or_default() })
        };
        let lines: Result<Vec<String>, tonic::Status> = match command {
            StreamCommand::Publish { stream, data, key, bytes, idempotency_key } => {
                let payload = if bytes {
                    pb::publish_request::Payload::Data(data.into_bytes().into())
                } else {
                    pb::publish_request::Payload::Json(data)
                };
                let req =
                    pb::PublishRequest { stream, key, payload: Some(payload), idempotency_key };
                streams.publish(tenant.authed(req)).await.map(|r| {
                    let r = r.into_inner();
                    let p = r.position.unwrap_or_default();
                    let dup = if r.duplicate { " duplicate" } else { "" };
                    vec![format!("{} {}{dup}", p.offset, p.epoch)]
                })
            }
            StreamCommand::Latest { stream, key } => streams
                .latest(tenant.authed(pb::LatestRequest { stream, key }))
                .await
                .map(|r| r.into_inner().publications.iter().map(to_json).collect()),
            StreamCommand::History { stream, since_offset, epoch, limit } => {
                let req = pb::HistoryRequest {
                    stream,
                    since: since(since_offset, epoch),
                    limit,
                    reverse: false,
                };
                streams
                    .history(tenant.authed(req))
                    .await
                    .map(|r| r.into_inner().publications.iter().map(to_json).collect())
            }
            StreamCommand::Watch { stream, since_offset, epoch } => {
                let req =
                    pb::WatchRequest { stream, since: since(since_offset, epoch), latest: false };
                return Ok(watch(&mut streams, tenant.authed(req)).await);
            }
        };
        Ok(match lines {
            Ok(lines) => {
                for line in lines {
                    println!("{line}");
                }
                ExitCode::SUCCESS
            }
            Err(status) => client::refused(&status),
        })
    })
}

/// `Watch`: prints each message until the stream ends; the exit status.
#[allow(clippy::print_stdout)]
async fn watch(
    streams: &mut StreamsClient<tonic::transport::Channel>,
    req: tonic::Request<pb::WatchRequest>,
) -> ExitCode {
    let mut events = match streams.watch(req).await {
        Ok(r) => r.into_inner(),
        Err(status) => return client::refused(&status),
    };
    loop {
        match events.message().await {
            Ok(Some(pb::WatchEvent { event: Some(pb::watch_event::Event::Subscribed(s)) })) => {
                let p = s.position.unwrap_or_default();
                println!("subscribed {} {} recovered={}", p.offset, p.epoch, s.recovered);
                for p in &s.publications {
                    println!("{}", to_json(p));
                }
            }
            Ok(Some(pb::WatchEvent { event: Some(pb::watch_event::Event::Publication(p)) })) => {
                println!("{}", to_json(&p));
            }
            Ok(Some(_)) => {}
            Ok(None) => return ExitCode::SUCCESS,
            Err(status) => {
                println!("ended: {} ({})", status.message(), status.code());
                return ExitCode::FAILURE;
            }
        }
    }
}

/// A publication as one compact JSON line, shaped like the WebSocket API's.
fn to_json(p: &pb::Publication) -> String {
    let mut out = serde_json::json!({ "offset": p.offset });
    if let Some(key) = &p.key {
        out["key"] = key.clone().into();
    }
    match &p.payload {
        Some(pb::publication::Payload::Json(text)) => {
            out["data"] = serde_json::from_str(text).unwrap_or_else(|_| text.clone().into());
        }
        Some(pb::publication::Payload::Data(bytes)) => {
            out["data"] = base64::engine::general_purpose::STANDARD.encode(bytes).into();
            out["encoding"] = "base64".into();
        }
        None => {}
    }
    out["time"] = p.time_ms.into();
    out.to_string()
}
