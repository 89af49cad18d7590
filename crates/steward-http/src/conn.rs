//! The TCP connection under a request, for the one thing actix-web cannot do: abort a connection
//! whose response it can no longer write.
//!
//! actix-http polls a response body only while its write buffer has room. A WebSocket client
//! that stops reading fills the kernel's send buffer, then that write buffer; from then on
//! nothing of Steward's is polled on its behalf. Its socket stops (slow consumer, 4008), yet the
//! connection would stay open for as long as the client keeps its receive window shut, holding
//! its descriptor, its buffers and the kernel's send queue, outside every cap (the socket left
//! the registry, and with it its per-IP place and its quota). [`ConnFd::abort`] ends such a
//! connection: reset (`SO_LINGER` 0) and shut down, so the pending write fails and actix-http
//! drops the connection.

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

/// The descriptor of a connection, recorded by the listener's `on_connect` in the connection's
/// data (`HttpRequest::conn_data`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnFd(RawFd);

/// The connection actix-web hands to `on_connect` on an HTTPS listener.
pub(crate) type HttpsStream =
    actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>;

impl ConnFd {
    /// The TCP stream under `conn` (plain or TLS), as `on_connect` sees it.
    pub(crate) fn tcp(conn: &dyn std::any::Any) -> Option<&actix_web::rt::net::TcpStream> {
        conn.downcast_ref::<actix_web::rt::net::TcpStream>()
            .or_else(|| conn.downcast_ref::<HttpsStream>().map(|tls| tls.get_ref().0))
    }

    /// The descriptor of `conn`'s TCP stream.
    pub(crate) fn of(conn: &dyn std::any::Any) -> Option<Self> {
        Self::tcp(conn).map(|tcp| Self(tcp.as_raw_fd()))
    }

    /// Resets and shuts down the connection: its pending and later writes fail (`EPIPE`),
    /// actix-http drops it, and its close sends RST and discards the kernel's send queue.
    ///
    /// The caller must know that the connection is still open: call it only from the
    /// connection's own worker thread, while a value the connection's dispatcher owns (the
    /// WebSocket's response body) is seen alive. The dispatcher closes the descriptor only when
    /// it drops, and drops that value in the same drop, on the same thread; so the number
    /// cannot have been closed and reused by another connection in between.
    #[allow(unsafe_code)]
    pub(crate) fn abort(self) {
        // SAFETY: by the contract above, `self.0` is this connection's open descriptor for the
        // whole of this call (nothing else runs on this thread meanwhile), and it is borrowed
        // only for this call, never closed here.
        let fd = unsafe { BorrowedFd::borrow_raw(self.0) };
        let socket = socket2::SockRef::from(&fd);
        if let Err(e) = socket.set_linger(Some(std::time::Duration::ZERO)) {
            tracing::debug!(error = %e, "cannot set SO_LINGER on a stuck connection");
        }
        if let Err(e) = socket.shutdown(std::net::Shutdown::Both) {
            tracing::debug!(error = %e, "cannot shut down a stuck connection");
        }
    }
}
