//! The rustls `ServerConfig` of one listener: the ring provider, the protocol versions from
//! `[tls] min_version`, the client verifier (mutual TLS or none), the shared resolver and ALPN.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};
use steward_config::TlsVersion;

use crate::error::{Error, Result};
use crate::resolver::{CertResolver, read_certificates};

/// The versions rustls may negotiate from `min`: TLS 1.3 always (RFC 8446), TLS 1.2 unless the
/// minimum is 1.3. Nothing older: rustls has no TLS 1.1 or 1.0.
pub(crate) fn versions(min: TlsVersion) -> &'static [&'static SupportedProtocolVersion] {
    static FROM_12: [&SupportedProtocolVersion; 2] =
        [&rustls::version::TLS13, &rustls::version::TLS12];
    static FROM_13: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    match min {
        TlsVersion::Tls12 => &FROM_12,
        TlsVersion::Tls13 => &FROM_13,
    }
}

/// The client verifier: none when `client_ca_file` is empty; otherwise clients must present a
/// certificate chaining to one of its CAs (webpki; rustls' default signature algorithms of the
/// provider).
pub(crate) fn client_verifier(
    client_ca_file: &Path,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>> {
    if client_ca_file.as_os_str().is_empty() {
        return Ok(WebPkiClientVerifier::no_client_auth());
    }
    let ca_error = |source: Box<dyn std::error::Error + Send + Sync>| Error::ClientCa {
        path: client_ca_file.to_path_buf(),
        source,
    };
    let mut roots = RootCertStore::empty();
    for cert in read_certificates("client CA", client_ca_file)? {
        roots.add(cert).map_err(|e| ca_error(Box::new(e)))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| ca_error(Box::new(e)))
}

/// A server config over the shared `resolver`, offering `alpn` (most preferred first).
pub(crate) fn build(
    provider: &Arc<CryptoProvider>,
    min: TlsVersion,
    verifier: Arc<dyn ClientCertVerifier>,
    resolver: Arc<CertResolver>,
    alpn: &[&[u8]],
) -> Result<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions(min))
        .map_err(Error::Config)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(resolver);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}
