//! `steward whoami`: a small gRPC client that checks a tenant API token against a running
//! Steward (`steward.tenancy.v1.Tenancy/WhoAmI`), for people without grpcurl.

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use steward_proto::tenancy::v1::WhoAmIRequest;
use steward_proto::tenancy::v1::tenancy_client::TenancyClient;
use tonic::metadata::MetadataValue;

/// The variable the token is read from (not an argument: arguments show in `ps`).
pub(crate) const TOKEN_ENV: &str = "STEWARD_TOKEN";

/// Calls `WhoAmI` on `addr` with `$STEWARD_TOKEN` and prints the answer; exit 0 when the token
/// is accepted, 1 when it is refused or the call fails.
#[allow(clippy::print_stdout)]
pub(crate) fn run(addr: &str) -> anyhow::Result<ExitCode> {
    let token = std::env::var(TOKEN_ENV)
        .with_context(|| format!("set {TOKEN_ENV} to the tenant API token to check"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a runtime")?;
    runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(addr.to_owned())
            .with_context(|| format!("invalid address {addr}"))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .connect()
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        let mut req = tonic::Request::new(WhoAmIRequest {});
        let value = MetadataValue::try_from(format!("Bearer {}", token.trim()))
            .context("the token is not valid metadata")?;
        req.metadata_mut().insert("authorization", value);
        let me = match TenancyClient::new(channel).who_am_i(req).await {
            Ok(r) => r.into_inner(),
            Err(status) => {
                println!("refused: {} ({})", status.message(), status.code());
                return Ok(ExitCode::FAILURE);
            }
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
                 consumers {}, sockets {}, peers {}",
                q.sessions,
                q.pages_per_session,
                q.session_rate,
                q.producers,
                q.consumers,
                q.sockets,
                q.peers
            );
        }
        let mut usage: Vec<_> = me.usage.into_iter().filter(|(k, _)| k != "service").collect();
        usage.sort();
        let usage: Vec<String> = usage.iter().map(|(k, n)| format!("{k} {n}")).collect();
        println!("usage:   {}", usage.join(", "));
        Ok(ExitCode::SUCCESS)
    })
}
