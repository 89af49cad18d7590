//! Every CDP call goes through [`timed`]: Steward's own deadline (chromiumoxide's is a fixed
//! 30 s, #333), recorded in the latency histogram and the timeout counter of its [`Op`].

use std::future::Future;
use std::time::{Duration, Instant};

use chromiumoxide::error::CdpError;

use crate::stats::{BrowserStats, Op};
use crate::{Error, Result};

/// Runs `fut` within `after`, recording it as `op`.
///
/// # Errors
/// What `fut` returns (converted by [`from_cdp`]), or [`Error::DeadlineExceeded`] naming `op`.
pub(crate) async fn timed<T, F>(stats: &BrowserStats, op: Op, after: Duration, fut: F) -> Result<T>
where
    F: Future<Output = std::result::Result<T, CdpError>>,
{
    let started = Instant::now();
    let out = tokio::time::timeout(after, fut).await;
    stats.cdp(op, started.elapsed(), out.is_err());
    match out {
        Ok(r) => r.map_err(|e| from_cdp(op, e)),
        Err(_) => Err(Error::DeadlineExceeded { stage: op.as_str(), after }),
    }
}

/// Like [`timed`] but not recorded: a sub-step of an op that is recorded as a whole (the
/// page-state read after a navigation, the check after a disposal).
///
/// # Errors
/// As [`timed`].
pub(crate) async fn bounded<T, F>(op: Op, after: Duration, fut: F) -> Result<T>
where
    F: Future<Output = std::result::Result<T, CdpError>>,
{
    match tokio::time::timeout(after, fut).await {
        Ok(r) => r.map_err(|e| from_cdp(op, e)),
        Err(_) => Err(Error::DeadlineExceeded { stage: op.as_str(), after }),
    }
}

/// A chromiumoxide error as this crate's: a lost connection is `browser_unavailable`, a
/// navigation error carries Chromium's text, a thrown exception is `evaluation_failed`, the rest
/// are protocol errors.
pub(crate) fn from_cdp(op: Op, e: CdpError) -> Error {
    match e {
        CdpError::Ws(_)
        | CdpError::Io(_)
        | CdpError::ChannelSendError(_)
        | CdpError::NoResponse => Error::BrowserUnavailable(e.to_string()),
        CdpError::ChromeMessage(text) if op == Op::Navigate => Error::NavigationFailed(text),
        CdpError::JavascriptException(details) => Error::EvaluationFailed(
            details.exception.as_ref().and_then(|o| o.description.clone()).unwrap_or(details.text),
        ),
        // chromiumoxide's own request timeout (set above every Steward deadline)
        CdpError::Timeout => Error::DeadlineExceeded { stage: op.as_str(), after: Duration::ZERO },
        other => Error::Protocol(format!("{}: {other}", op.as_str())),
    }
}
