//! The bearer token format and its secret.
//!
//! A token reads `stw_<id>_<secret>`: `stw_` marks it as Steward's (so secret scanners can find
//! leaked ones, as GitHub's `ghp_` prefix does), `<id>` is the public [`TokenId`] (16 hex
//! digits) that finds its row, and `<secret>` is 256 random bits from the OS as 64 hex digits.
//! The store keeps only the SHA-256 of the secret; a presented secret is hashed and compared with
//! the stored hash in constant time.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::model::TokenId;
use crate::{Error, Result};

/// Prefix of every Steward API token.
pub const PREFIX: &str = "stw_";
/// Length of a whole token: prefix, 16-digit id, `_`, 64-digit secret.
pub const TOKEN_LEN: usize = PREFIX.len() + 16 + 1 + 64;

/// A token's secret part (as presented or just generated). Its `Debug` prints nothing of it.
pub struct Secret(String);

impl Secret {
    /// Hex SHA-256 of the secret: what the store keeps.
    #[must_use]
    pub fn sha256_hex(&self) -> String {
        hex(&Sha256::digest(self.0.as_bytes()))
    }

    /// Whether this secret hashes to `stored` (hex SHA-256), compared in constant time.
    #[must_use]
    pub fn matches(&self, stored: &str) -> bool {
        constant_time_eq::constant_time_eq(self.sha256_hex().as_bytes(), stored.as_bytes())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// A freshly generated token: its id, its secret, and the whole bearer string (shown once).
pub struct Generated {
    /// The public id.
    pub id: TokenId,
    /// The secret.
    pub secret: Secret,
    /// `stw_<id>_<secret>`, the string a client presents.
    pub bearer: String,
}

/// Generates a token: 64 random bits for the id and 256 for the secret, from the OS.
///
/// # Errors
/// [`Error::Internal`] when the OS random source fails.
pub fn generate() -> Result<Generated> {
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    getrandom::fill(&mut id)
        .and_then(|()| getrandom::fill(&mut secret))
        .map_err(|e| Error::Internal(format!("random source failed: {e}")))?;
    let id = TokenId::new(&hex(&id))?;
    let secret = Secret(hex(&secret));
    let bearer = format!("{PREFIX}{id}_{}", secret.0);
    Ok(Generated { id, secret, bearer })
}

/// Splits a presented bearer string into id and secret.
///
/// # Errors
/// [`Error::Unauthenticated`] unless it has the exact shape of a Steward token.
pub fn parse(bearer: &str) -> Result<(TokenId, Secret)> {
    let rest = bearer.strip_prefix(PREFIX).ok_or(Error::Unauthenticated)?;
    if bearer.len() != TOKEN_LEN {
        return Err(Error::Unauthenticated);
    }
    let (id, secret) = rest.split_once('_').ok_or(Error::Unauthenticated)?;
    let id = TokenId::new(id).map_err(|_| Error::Unauthenticated)?;
    if secret.len() != 64 || !secret.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::Unauthenticated);
    }
    Ok((id, Secret(secret.to_ascii_lowercase())))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
