//! The TLS handshake under a deadline, for listeners that accept connections themselves (the
//! gRPC listeners): one connection ([`Acceptor::accept`]) or a stream of them, handshaking many
//! at once ([`Acceptor::incoming`]).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;

use crate::error::{Error, Result};

/// Completes TLS handshakes with one listener's `ServerConfig` under `[tls] handshake_timeout`:
/// a client that has not finished its handshake by then is dropped (its socket closed) and
/// counted. Cheap to clone; clones share the counters.
#[derive(Clone)]
pub struct Acceptor {
    inner: tokio_rustls::TlsAcceptor,
    timeout: Duration,
    stats: Arc<Stats>,
}

#[derive(Default)]
struct Stats {
    timed_out: AtomicU64,
    failed: AtomicU64,
}

impl Acceptor {
    /// An acceptor for `config` (see [`crate::Tls::grpc_server_config`]) with a handshake
    /// deadline of `timeout`.
    #[must_use]
    pub fn new(config: Arc<ServerConfig>, timeout: Duration) -> Self {
        Self { inner: tokio_rustls::TlsAcceptor::from(config), timeout, stats: Arc::default() }
    }

    /// The handshake deadline.
    #[must_use]
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Performs the server side of the handshake on `io` (an accepted `TcpStream`, or anything
    /// that reads and writes) within the deadline. Needs a tokio runtime with its time driver.
    ///
    /// # Errors
    /// [`Error::HandshakeTimeout`] when the client has not finished within the deadline;
    /// [`Error::Handshake`] when the handshake fails (not TLS, no common version or cipher
    /// suite, a missing or refused client certificate, the connection closed). Either way `io`
    /// is dropped, which closes it, and the failure is counted.
    ///
    /// # Cancel safety
    /// Not cancel safe: dropping the future drops `io` and so closes the connection.
    pub async fn accept<IO>(&self, io: IO) -> Result<TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        match tokio::time::timeout(self.timeout, self.inner.accept(io)).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                Err(Error::Handshake(e))
            }
            Err(_) => {
                self.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                Err(Error::HandshakeTimeout(self.timeout))
            }
        }
    }

    /// Wraps a stream of accepted connections (`Ok(io)`, or `Err` for an accept error) into a
    /// stream of TLS connections: up to `max_pending` handshakes run at once, each under the
    /// deadline, so a client that never finishes holds one place for at most the deadline and
    /// never delays the others. Established connections come out in the order their handshakes
    /// finish; failed handshakes are dropped (counted, logged at `debug`: clients cause them);
    /// accept errors pass through unchanged. It ends when `incoming` has ended and every
    /// handshake in flight has finished.
    ///
    /// While `max_pending` handshakes are in flight, `incoming` is not polled, so new
    /// connections wait in the kernel's backlog. `max_pending` of 0 is taken as 1.
    #[must_use]
    pub fn incoming<S, IO, E>(&self, incoming: S, max_pending: usize) -> Incoming<S, IO>
    where
        S: Stream<Item = Result<IO, E>>,
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        Incoming {
            incoming: Some(Box::pin(incoming)),
            acceptor: self.clone(),
            pending: FuturesUnordered::new(),
            max_pending: max_pending.max(1),
        }
    }

    /// Handshakes dropped at the deadline since this acceptor was made.
    #[must_use]
    pub fn handshakes_timed_out(&self) -> u64 {
        self.stats.timed_out.load(Ordering::Relaxed)
    }

    /// Handshakes that failed otherwise since this acceptor was made.
    #[must_use]
    pub fn handshakes_failed(&self) -> u64 {
        self.stats.failed.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

/// The stream of [`Acceptor::incoming`]: TLS connections whose handshakes completed.
pub struct Incoming<S, IO> {
    /// `None` once it ended.
    incoming: Option<Pin<Box<S>>>,
    acceptor: Acceptor,
    pending: FuturesUnordered<BoxFuture<'static, Result<TlsStream<IO>>>>,
    max_pending: usize,
}

impl<S, IO, E> Stream for Incoming<S, IO>
where
    S: Stream<Item = Result<IO, E>>,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Item = Result<TlsStream<IO>, E>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            // take new connections while there is room; each `Pending` registers the waker
            while this.pending.len() < this.max_pending {
                let Some(incoming) = this.incoming.as_mut() else { break };
                match incoming.as_mut().poll_next(cx) {
                    Poll::Ready(Some(Ok(io))) => {
                        let acceptor = this.acceptor.clone();
                        this.pending.push(Box::pin(async move { acceptor.accept(io).await }));
                    }
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                    Poll::Ready(None) => this.incoming = None,
                    Poll::Pending => break,
                }
            }
            match Pin::new(&mut this.pending).poll_next(cx) {
                Poll::Ready(Some(Ok(stream))) => return Poll::Ready(Some(Ok(stream))),
                // a place freed up: look at `incoming` again
                Poll::Ready(Some(Err(e))) => {
                    tracing::debug!(error = %crate::error::chain(&e), "tls handshake dropped");
                }
                // nothing in flight: `incoming` was polled to `Pending` (its waker is set) or ended
                Poll::Ready(None) => {
                    return if this.incoming.is_none() { Poll::Ready(None) } else { Poll::Pending };
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<S, IO> std::fmt::Debug for Incoming<S, IO> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("pending", &self.pending.len())
            .field("ended", &self.incoming.is_none())
            .finish_non_exhaustive()
    }
}
