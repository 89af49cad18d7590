//! Why a configuration could not be loaded.

use std::path::PathBuf;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file given with `--config` does not exist.
    #[error("config file {0} not found")]
    Missing(PathBuf),
    /// A layer could not be read or parsed, a key is unknown, or a value has the wrong type.
    /// figment's message names the key and the layer it came from.
    #[error("{0}")]
    Load(#[source] Box<figment::Error>),
    /// A value parsed but breaks a rule; `key` is its dotted path (`shutdown.deadlines`).
    #[error("invalid value for `{key}`: {reason}")]
    Invalid {
        /// Dotted path of the offending key.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl Error {
    pub(crate) fn invalid(key: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid { key, reason: reason.into() }
    }
}

/// Result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
