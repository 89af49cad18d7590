//! Why TLS could not be set up, a certificate not (re)loaded, or a handshake not completed.

use std::path::PathBuf;
use std::time::Duration;

/// Why TLS could not be set up, a certificate not (re)loaded, or a handshake not completed.
///
/// Messages name the file and the rule, never key material.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `[tls] cert_file` is empty: TLS is off, there is nothing to load.
    #[error("tls is off: tls.cert_file is empty")]
    Disabled,
    /// A file could not be read.
    #[error("cannot read the {what} file {path}")]
    Read {
        /// Which file: `certificate`, `private key`, `client CA`.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file is not the PEM it should be (or holds no item of the expected kind).
    #[error("cannot parse the {what} file {path} as PEM")]
    Pem {
        /// Which file: `certificate`, `private key`, `client CA`.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// What the PEM parser said.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// The certificate file (or the client CA file) holds no certificate.
    #[error("{0} holds no CERTIFICATE block")]
    NoCertificate(PathBuf),
    /// The key is unsupported, or does not belong to the leaf certificate (the first one of
    /// `cert_file`).
    #[error("the private key in {key} cannot be used with the certificate in {cert}")]
    Key {
        /// `cert_file`.
        cert: PathBuf,
        /// `key_file`.
        key: PathBuf,
        /// rustls' reason (unsupported key type, keys do not match, …).
        #[source]
        source: rustls::Error,
    },
    /// A client CA certificate was refused, or the client verifier could not be built.
    #[error("cannot use the client CA file {path}")]
    ClientCa {
        /// `client_ca_file`.
        path: PathBuf,
        /// rustls' reason.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// rustls refused the protocol versions (none of them is supported by the provider).
    #[error("cannot build the rustls server config")]
    Config(#[source] rustls::Error),
    /// A client did not complete its handshake within `[tls] handshake_timeout`.
    #[error("tls handshake not completed within {0:?}")]
    HandshakeTimeout(Duration),
    /// A handshake failed (bad client hello, no shared version or cipher suite, refused client
    /// certificate, connection closed).
    #[error("tls handshake failed")]
    Handshake(#[source] std::io::Error),
}

/// Result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `err` and its sources, `: `-separated, for a log line that says why.
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
