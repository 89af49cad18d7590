//! Steward's TLS: rustls 0.23 with the ring provider, for the public HTTP listener (and so
//! `wss://` on `GET /v1/ws`) and both gRPC listeners.
//!
//! It owns the one [`CertResolver`] every TLS listener shares (loaded from `[tls] cert_file` and
//! `key_file`, reloaded without a restart), the rustls `ServerConfig` of each kind of listener
//! (protocol versions from `[tls] min_version`, mutual TLS from `[tls] client_ca_file`, ALPN),
//! the handshake deadline for listeners that accept connections themselves ([`Acceptor`]), and
//! the `tls-reload` service that looks at the certificate files every `[tls] reload_interval`.
//! [`Tls`] is the façade the binary builds once and hands to the edges.
//!
//! It must not know the transports: no actix-web, no tonic. The edges (steward-http,
//! steward-grpc) put its `ServerConfig`s and [`Acceptor`] on their listeners.
//!
//! Only the ring provider is compiled in (aws-lc-rs stays out of the tree), and
//! [`install_default_provider`] installs it as the process default, because rustls panics when
//! it must pick a provider by itself and finds none or two (field-notes.md, "TLS").
#![forbid(unsafe_code)]

mod error;
mod handshake;
mod reload;
mod resolver;
mod server_config;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use steward_config::{TlsConfig, TlsVersion};
use steward_core::ChildSpec;

pub use error::{Error, Result};
pub use handshake::{Acceptor, Incoming};
pub use resolver::{CertResolver, Reload};
/// The rustls server configuration type the edges hand to their servers (rustls 0.23).
pub use rustls::ServerConfig;
/// The server side of a TLS connection, as [`Acceptor`] returns it (tokio-rustls).
pub use tokio_rustls::server::TlsStream;

/// ALPN id of HTTP/2 (RFC 9113 §3.2), the only protocol the gRPC listeners offer.
pub const ALPN_H2: &[u8] = b"h2";

/// The ring crypto provider, the only one compiled in.
#[must_use]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs the ring provider as the process-wide default of rustls, so code that asks rustls
/// for the default (clients built without an explicit provider) never panics for want of one.
/// Idempotent: a provider already installed (ring, by an earlier call) is left in place.
pub fn install_default_provider() {
    // Err means one is installed already: nothing to do
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// TLS as configured by `[tls]`: the shared resolver and the server configs built over it.
/// Built once at start; cheap to clone (the clones share everything).
#[derive(Clone)]
pub struct Tls {
    inner: Arc<Inner>,
}

struct Inner {
    resolver: Arc<CertResolver>,
    http: Arc<ServerConfig>,
    grpc: Arc<ServerConfig>,
    acceptor: Acceptor,
    min_version: TlsVersion,
    handshake_timeout: Duration,
    reload_interval: Duration,
}

impl Tls {
    /// TLS from `[tls]`, or `None` when it is off (`cert_file` empty: plain TCP).
    ///
    /// # Errors
    /// As [`Tls::new`].
    pub fn from_config(config: &TlsConfig) -> Result<Option<Self>> {
        if config.enabled() { Self::new(config).map(Some) } else { Ok(None) }
    }

    /// Installs the ring provider as the default ([`install_default_provider`]), loads the
    /// certificate and key, reads the client CAs (if `client_ca_file` is set; read once, at
    /// start) and builds the server configs.
    ///
    /// # Errors
    /// [`Error::Disabled`] when `cert_file` is empty; the errors of [`CertResolver::load`] for
    /// the certificate and key; [`Error::Read`], [`Error::Pem`], [`Error::NoCertificate`] or
    /// [`Error::ClientCa`] for `client_ca_file`; [`Error::Config`] if rustls refuses the
    /// versions.
    pub fn new(config: &TlsConfig) -> Result<Self> {
        if !config.enabled() {
            return Err(Error::Disabled);
        }
        install_default_provider();
        let provider = provider();
        let resolver =
            Arc::new(CertResolver::load(&config.cert_file, &config.key_file, provider.clone())?);
        let verifier = server_config::client_verifier(&config.client_ca_file, &provider)?;
        let min = config.min_version;
        // actix-web puts `h2` and `http/1.1` in front of what the config offers: nothing here
        let http = server_config::build(&provider, min, verifier.clone(), resolver.clone(), &[])?;
        let grpc =
            Arc::new(server_config::build(&provider, min, verifier, resolver.clone(), &[ALPN_H2])?);
        let acceptor = Acceptor::new(grpc.clone(), config.handshake_timeout);
        Ok(Self {
            inner: Arc::new(Inner {
                resolver,
                http: Arc::new(http),
                grpc,
                acceptor,
                min_version: min,
                handshake_timeout: config.handshake_timeout,
                reload_interval: config.reload_interval,
            }),
        })
    }

    /// The resolver every listener's config shares.
    #[must_use]
    pub fn resolver(&self) -> &Arc<CertResolver> {
        &self.inner.resolver
    }

    /// The server config of the public HTTP listener: no ALPN of its own (actix-web offers `h2`
    /// and `http/1.1` itself), the shared resolver, the configured versions and client verifier.
    /// Give it to actix-web's `bind_rustls_0_23` with `tls_handshake_timeout` set to
    /// [`handshake_timeout`](Self::handshake_timeout).
    #[must_use]
    pub fn http_server_config(&self) -> Arc<ServerConfig> {
        self.inner.http.clone()
    }

    /// The server config of the gRPC listeners: ALPN `h2` only (gRPC is HTTP/2; a client that
    /// offers ALPN without `h2` is refused), the shared resolver, versions and verifier.
    #[must_use]
    pub fn grpc_server_config(&self) -> Arc<ServerConfig> {
        self.inner.grpc.clone()
    }

    /// The handshake acceptor of the gRPC listeners, over
    /// [`grpc_server_config`](Self::grpc_server_config) with the configured deadline. Every
    /// call returns a clone sharing one set of counters.
    #[must_use]
    pub fn acceptor(&self) -> Acceptor {
        self.inner.acceptor.clone()
    }

    /// `[tls] min_version`.
    #[must_use]
    pub fn min_version(&self) -> TlsVersion {
        self.inner.min_version
    }

    /// `[tls] handshake_timeout`: a client that has not finished its handshake this long after
    /// connecting is disconnected. Default 3 s, actix-web's own default.
    #[must_use]
    pub fn handshake_timeout(&self) -> Duration {
        self.inner.handshake_timeout
    }

    /// `[tls] reload_interval`: how often the `tls-reload` service looks at the files.
    #[must_use]
    pub fn reload_interval(&self) -> Duration {
        self.inner.reload_interval
    }

    /// The child spec of the `tls-reload` service (permanent, kind `service`): every
    /// `reload_interval` it calls [`CertResolver::reload`]. Put it under the root supervisor
    /// when TLS is on.
    #[must_use]
    pub fn child_spec(&self) -> ChildSpec {
        reload::child_spec(self.inner.resolver.clone(), self.inner.reload_interval)
    }

    /// Changed certificate files served since start ([`CertResolver::reloads_ok`]).
    #[must_use]
    pub fn reloads_ok(&self) -> u64 {
        self.inner.resolver.reloads_ok()
    }

    /// Changed certificate files refused since start ([`CertResolver::reloads_failed`]).
    #[must_use]
    pub fn reloads_failed(&self) -> u64 {
        self.inner.resolver.reloads_failed()
    }

    /// gRPC handshakes dropped at the deadline since start ([`Acceptor::handshakes_timed_out`];
    /// the HTTP listener's are actix-web's and not counted here).
    #[must_use]
    pub fn handshakes_timed_out(&self) -> u64 {
        self.inner.acceptor.handshakes_timed_out()
    }

    /// gRPC handshakes that failed otherwise since start ([`Acceptor::handshakes_failed`]).
    #[must_use]
    pub fn handshakes_failed(&self) -> u64 {
        self.inner.acceptor.handshakes_failed()
    }
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("resolver", &self.inner.resolver)
            .field("min_version", &self.inner.min_version)
            .field("handshake_timeout", &self.inner.handshake_timeout)
            .field("reload_interval", &self.inner.reload_interval)
            .finish_non_exhaustive()
    }
}
