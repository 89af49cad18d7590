//! `steward whoami`: a small gRPC client that checks a tenant API token against a running
//! Steward (`steward.tenancy.v1.Tenancy/WhoAmI`), for people without grpcurl.

use std::process::ExitCode;
use std::time::SystemTime;

use steward_proto::tenancy::v1::WhoAmIRequest;
use steward_proto::tenancy::v1::tenancy_client::TenancyClient;

use crate::client;

/// Calls `WhoAmI` on `addr` with `$STEWARD_TOKEN` and prints the answer; exit 0 when the token
/// is accepted, 1 when it is refused or the call fails.
///
/// # Errors
///
/// As [`client::with_tenant`]: no token, no runtime, a bad address or no connection.
#[allow(clippy::print_stdout)]
pub(crate) fn run(addr: &str) -> anyhow::Result<ExitCode> {
    client::with_tenant(addr, |tenant| async move {
        let req = tenant.authed(WhoAmIRequest {});
        let me = match TenancyClient::new(tenant.channel).who_am_i(req).await {
            Ok(r) => r.into_inner(),
            Err(status) => return Ok(client::refused(&status)),
        };
        let expires = me.token_expires_at.and_then(|t| SystemTime::try_from(t).ok()).map_or_else(
            || "never".to_owned(),
            |t| humantime::format_rfc3339_seconds(t).to_string(),
        );
        println!("tenant:  {} ({})", me.tenant_id, me.display_name);
        println!("token:   {} ({}), expires {expires}", me.token_id, me.token_name);
        if let Some(q) = me.quotas {
            println!(
                "quotas:  sessions {}, pages/session {}, sessions/min {}, producers {}, \
                 consumers {}, sockets {}, peers {}, topics {}, groups {}, stored messages {}, \
                 stored bytes {}, jobs {}, watch streams {}, streams {}, stream keys {}, \
                 stream bytes {}",
                q.sessions,
                q.pages_per_session,
                q.session_rate,
                q.producers,
                q.consumers,
                q.sockets,
                q.peers,
                q.topics,
                q.groups,
                q.stored_messages,
                q.stored_bytes,
                q.jobs,
                q.watch_streams,
                q.streams,
                q.stream_keys,
                q.stream_bytes
            );
        }
        let mut usage: Vec<_> = me.usage.into_iter().filter(|(k, _)| k != "service").collect();
        usage.sort();
        let usage: Vec<String> = usage.iter().map(|(k, n)| format!("{k} {n}")).collect();
        println!("usage:   {}", usage.join(", "));
        Ok(ExitCode::SUCCESS)
    })
}
