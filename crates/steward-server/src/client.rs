//! What the gRPC client subcommands (`steward whoami`, `steward job`) share: the tenant API token
//! from `$STEWARD_TOKEN`, a current-thread runtime, the channel to a running Steward, the
//! `authorization` metadata on every request, and how a refused call is reported.

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

/// The variable the token is read from (not an argument: arguments show in `ps`).
pub(crate) const TOKEN_ENV: &str = "STEWARD_TOKEN";

/// The variable naming the PEM file of the CA that signed the server's certificate, for an
/// `https://` address (Steward with `[tls]` on).
pub(crate) const CA_ENV: &str = "STEWARD_CA_FILE";

/// How long connecting to the gRPC address may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one call may take until its response (for a stream: until its first message
/// header, not the whole stream).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to a running Steward on behalf of one tenant API token.
pub(crate) struct Tenant {
    /// The gRPC channel; cheap to clone into a generated client.
    pub(crate) channel: Channel,
    /// `Bearer <token>`, the value of the `authorization` metadata.
    bearer: MetadataValue<Ascii>,
}

impl Tenant {
    /// Wraps `msg` in a request that carries the tenant's token.
    pub(crate) fn authed<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        req.metadata_mut().insert("authorization", self.bearer.clone());
        req
    }
}

/// Reads `$STEWARD_TOKEN`, starts a current-thread runtime, connects to `addr` and runs `call`
/// on it; returns what `call` returns.
///
/// # Errors
///
/// When `$STEWARD_TOKEN` is unset or not valid metadata, the runtime cannot start, `addr` is
/// not a URL, the connection fails, or `call` fails.
pub(crate) fn with_tenant<F, Fut>(addr: &str, call: F) -> anyhow::Result<ExitCode>
where
    F: FnOnce(Tenant) -> Fut,
    Fut: Future<Output = anyhow::Result<ExitCode>>,
{
    let token = std::env::var(TOKEN_ENV)
        .with_context(|| format!("set {TOKEN_ENV} to a tenant API token"))?;
    let bearer = MetadataValue::try_from(format!("Bearer {}", token.trim()))
        .context("the token is not valid metadata")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a runtime")?;
    runtime.block_on(async {
        let mut endpoint = tonic::transport::Endpoint::from_shared(addr.to_owned())
            .with_context(|| format!("invalid address {addr}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT);
        if addr.starts_with("https://") {
            endpoint = endpoint.tls_config(tls_config()?).context("TLS settings")?;
        }
        let channel =
            endpoint.connect().await.with_context(|| format!("cannot connect to {addr}"))?;
        call(Tenant { channel, bearer }).await
    })
}

/// The client TLS settings of an `https://` address: the CA of `$STEWARD_CA_FILE`.
///
/// # Errors
/// When `$STEWARD_CA_FILE` is unset or cannot be read.
fn tls_config() -> anyhow::Result<tonic::transport::ClientTlsConfig> {
    let path = std::env::var(CA_ENV)
        .with_context(|| format!("set {CA_ENV} to the PEM file of the server's CA"))?;
    let pem = std::fs::read(&path).with_context(|| format!("cannot read {CA_ENV}={path}"))?;
    Ok(tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(pem)))
}

/// Prints `refused: <message> (<code>)` on stdout for a call the server refused; returns the
/// exit status for it (1).
#[allow(clippy::print_stdout)]
pub(crate) fn refused(status: &tonic::Status) -> ExitCode {
    println!("refused: {} ({})", status.message(), status.code());
    ExitCode::FAILURE
}
