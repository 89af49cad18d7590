//! The caller's deadline on every gRPC call ([`DeadlineLayer`]).
//!
//! A gRPC client sends its deadline as the `grpc-timeout` header (gRPC over HTTP/2, "Requests").
//! tonic's server drops a handler at that deadline too, but answers `CANCELLED`; the gRPC status
//! code for "the deadline expired before the operation could complete" is `DEADLINE_EXCEEDED`
//! (grpc/doc/statuscodes.md), which clients retry or report differently. This layer ends the call
//! first, with that code, and drops the handler's future, so nothing a call started outlives its
//! deadline unless a resource owns it. For a server-streaming call the deadline bounds the time
//! to the response headers (the stream itself ends with the caller's own deadline or cancel).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tonic::Status;
use tonic::codegen::http;

/// How much earlier than tonic's own guard this layer answers, so the caller gets
/// `DEADLINE_EXCEEDED` rather than tonic's `CANCELLED` (both timers fire on the same millisecond
/// tick otherwise).
const AHEAD: Duration = Duration::from_millis(1);

/// A [`tower::Layer`] that applies each request's `grpc-timeout` (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct DeadlineLayer;

impl<S> tower::Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline { inner }
    }
}

/// The service [`DeadlineLayer`] builds.
#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for Deadline<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let deadline = req.headers().get("grpc-timeout").and_then(|v| parse(v.as_bytes()));
        let call = self.inner.call(req);
        Box::pin(async move {
            let Some(timeout) = deadline else { return call.await };
            match tokio::time::timeout(timeout.saturating_sub(AHEAD), call).await {
                Ok(answer) => answer,
                Err(_) => Ok(Status::deadline_exceeded(format!(
                    "deadline_exceeded: the call's deadline ({} ms) passed",
                    timeout.as_millis()
                ))
                .into_http()),
            }
        })
    }
}

/// Parses a `grpc-timeout` value: at most 8 ASCII digits and a unit (`H`, `M`, `S`, `m`, `u`,
/// `n`). Anything else is ignored (no deadline), as tonic does.
fn parse(value: &[u8]) -> Option<Duration> {
    let (digits, unit) = value.split_at_checked(value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b"H" => Duration::from_secs(n * 3600),
        b"M" => Duration::from_secs(n * 60),
        b"S" => Duration::from_secs(n),
        b"m" => Duration::from_millis(n),
        b"u" => Duration::from_micros(n),
        b"n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests;
