//! The one certificate resolver every TLS listener shares: it serves the current certificate and
//! swaps in a new one when the files change, keeping the old one when the new files are broken.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Error, Result, chain};

/// What one [`CertResolver::reload`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// The files hold what was looked at last time: nothing to do.
    Unchanged,
    /// The files changed and the new pair is served to new connections from now on.
    Reloaded,
    /// The files cannot be read, or hold a broken pair: the previous certificate is kept. Said
    /// once (a `warn` log line, one count) per distinct failure, not at every look.
    Refused,
}

/// The shared, reloading certificate resolver (rustls [`ResolvesServerCert`]).
///
/// One per process, behind an `Arc`, in the `ServerConfig` of every TLS listener, so one reload
/// reaches them all. It holds the current [`CertifiedKey`] behind a `RwLock` (a handshake takes
/// the read lock for one `Arc` clone). [`reload`](Self::reload) reads `cert_file` and `key_file`
/// again and compares their bytes with what it looked at last; changed files are parsed, checked
/// (the key must belong to the leaf certificate) and swapped in; broken ones are logged with the
/// reason (never key material) and the old certificate stays. Connections already open keep the
/// certificate they were made with.
///
/// `cert_file` and `key_file` may name the same file (chain and key in one PEM): replacing that
/// file with a rename swaps both at once. With two files, a reload that sees a new certificate
/// beside the old key refuses the mismatched pair and takes the new pair at the next look.
pub struct CertResolver {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    seen: Mutex<Seen>,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
}

/// What the last look at the files found.
struct Seen {
    /// The bytes of the files last parsed (served or refused).
    cert: Vec<u8>,
    key: Vec<u8>,
    /// Whether those bytes were refused.
    refused: bool,
    /// The read error of the last look, if it failed (so it is said once).
    read_error: Option<String>,
}

impl std::fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never the key: only where it comes from and the counters
        f.debug_struct("CertResolver")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("reloads_ok", &self.reloads_ok())
            .field("reloads_failed", &self.reloads_failed())
            .finish_non_exhaustive()
    }
}

impl CertResolver {
    /// Loads the certificate chain (PEM `CERTIFICATE` blocks, leaf first) from `cert_file` and
    /// its private key (the first PEM `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`
    /// block) from `key_file`, with `provider`'s key loader (ring's: RSA, ECDSA P-256/P-384,
    /// Ed25519).
    ///
    /// # Errors
    /// [`Error::Read`] when a file cannot be read; [`Error::Pem`] when it is not PEM or holds no
    /// key; [`Error::NoCertificate`] when `cert_file` holds no certificate; [`Error::Key`] when the
    /// key type is unsupported or the key does not belong to the leaf certificate.
    pub fn load(cert_file: &Path, key_file: &Path, provider: Arc<CryptoProvider>) -> Result<Self> {
        let (cert, key) = read_pair(cert_file, key_file)?;
        let certified = parse_pair(cert_file, key_file, &cert, &key, &provider)?;
        Ok(Self {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            provider,
            current: RwLock::new(Arc::new(certified)),
            seen: Mutex::new(Seen { cert, key, refused: false, read_error: None }),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
        })
    }

    /// The certificate and key served to new connections now.
    #[must_use]
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Reads `cert_file` and `key_file` again; when their bytes changed since the last look,
    /// parses them and serves the new pair from now on, or keeps the current one and logs
    /// (`warn`) why the new one was refused. Blocking file I/O of two small files; the
    /// `tls-reload` service calls it every `[tls] reload_interval`.
    pub fn reload(&self) -> Reload {
        let read = read_pair(&self.cert_file, &self.key_file);
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let (cert, key) = match read {
            Ok(pair) => pair,
            Err(e) => {
                let why = chain(&e);
                if seen.read_error.as_deref() != Some(why.as_str()) {
                    self.reloads_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %why, "cannot reload the tls certificate; keeping the one served");
                    seen.read_error = Some(why);
                }
                return Reload::Refused;
            }
        };
        seen.read_error = None;
        if cert == seen.cert && key == seen.key {
            return if seen.refused { Reload::Refused } else { Reload::Unchanged };
        }
        let parsed = parse_pair(&self.cert_file, &self.key_file, &cert, &key, &self.provider);
        seen.cert = cert;
        seen.key = key;
        match parsed {
            Ok(certified) => {
                seen.refused = false;
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(certified);
                self.reloads_ok.fetch_add(1, Ordering::Relaxed);
                tracing::info!(cert_file = %self.cert_file.display(), "tls certificate reloaded");
                Reload::Reloaded
            }
            Err(e) => {
                seen.refused = true;
                self.reloads_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %chain(&e), "refused the changed tls certificate; keeping the one served");
                Reload::Refused
            }
        }
    }

    /// Changed certificate files served since start.
    #[must_use]
    pub fn reloads_ok(&self) -> u64 {
        self.reloads_ok.load(Ordering::Relaxed)
    }

    /// Changed certificate files refused (unreadable or broken; each distinct failure once)
    /// since start.
    #[must_use]
    pub fn reloads_failed(&self) -> u64 {
        self.reloads_failed.load(Ordering::Relaxed)
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The bytes of both files (one read when they are the same file, so a rename swaps both).
fn read_pair(cert_file: &Path, key_file: &Path) -> Result<(Vec<u8>, Vec<u8>)> {
    let read = |what, path: &Path| {
        std::fs::read(path).map_err(|source| Error::Read { what, path: path.to_path_buf(), source })
    };
    let cert = read("certificate", cert_file)?;
    let key = if key_file == cert_file { cert.clone() } else { read("private key", key_file)? };
    Ok((cert, key))
}

/// Parses a chain and its key and checks that the key belongs to the leaf.
fn parse_pair(
    cert_file: &Path,
    key_file: &Path,
    cert: &[u8],
    key: &[u8],
    provider: &CryptoProvider,
) -> Result<CertifiedKey> {
    let chain =
        CertificateDer::pem_slice_iter(cert).collect::<Result<Vec<_>, _>>().map_err(|source| {
            Error::Pem { what: "certificate", path: cert_file.to_path_buf(), source }
        })?;
    if chain.is_empty() {
        return Err(Error::NoCertificate(cert_file.to_path_buf()));
    }
    let key_der = PrivateKeyDer::from_pem_slice(key).map_err(|source| Error::Pem {
        what: "private key",
        path: key_file.to_path_buf(),
        source,
    })?;
    CertifiedKey::from_der(chain, key_der, provider).map_err(|source| Error::Key {
        cert: cert_file.to_path_buf(),
        key: key_file.to_path_buf(),
        source,
    })
}

/// Reads the CA certificates of `path` (PEM `CERTIFICATE` blocks).
pub(crate) fn read_certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>> {
    let bytes = std::fs::read(path).map_err(|source| Error::Read {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| Error::Pem { what, path: path.to_path_buf(), source })?;
    if certs.is_empty() {
        return Err(Error::NoCertificate(path.to_path_buf()));
    }
    Ok(certs)
}
