//! The accept path of both gRPC listeners: TCP options, the per-IP connection cap, and the
//! connection type tonic serves ([`Conn`], which keeps its per-IP place until it closes).
//!
//! tonic's own `TcpIncoming` has no per-IP cap; a client that opens connections without limit
//! would hold file descriptors and HTTP/2 state for each. Here the cap is checked right after
//! `accept`, before any byte is read, and a refused connection is closed at once.
//!
//! With `[tls]` on, the TLS handshake follows the cap (so a refused client never costs a
//! handshake): up to [`MAX_HANDSHAKES`] handshakes run at once inside the stream
//! ([`steward_tls::Acceptor::incoming`]), each under `[tls] handshake_timeout`, so a client that
//! never finishes its handshake delays no one and is dropped (its place given back) at the
//! deadline.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Stream, StreamExt as _};
use steward_socket::admission::{IpLimiter, IpSlot};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// How the accept path treats each connection.
#[derive(Debug, Clone)]
pub struct AcceptOptions {
    /// The listener's name in logs (`grpc`, `grpc-admin`).
    pub listener: &'static str,
    /// Most open connections per client IP (`[grpc] max_connections_per_ip`).
    pub max_per_ip: u32,
    /// TCP keepalive on accepted connections (`[grpc] tcp_keepalive`).
    pub tcp_keepalive: Duration,
    /// Counts connections refused by the per-IP cap.
    pub refused: Arc<AtomicU64>,
    /// TLS handshakes (`[tls]` on) with their deadline; `None` serves plain TCP.
    pub tls: Option<steward_tls::Acceptor>,
}

/// Most TLS handshakes in flight on one listener; beyond, new connections wait in the kernel's
/// backlog until one finishes (each finishes within `[tls] handshake_timeout`).
pub(crate) const MAX_HANDSHAKES: usize = 1024;

/// One accepted connection: the byte stream tonic serves (plain TCP or TLS over it) and the
/// connection's place in the per-IP count, given back when tonic drops it.
pub struct Conn(Io);

enum Io {
    Plain(TcpConn),
    // boxed: a TLS connection's state is ~1 KiB beside the plain one's few words
    Tls(Box<steward_tls::TlsStream<TcpConn>>),
}

impl Conn {
    /// The TCP connection under it, and its addresses.
    fn tcp(&self) -> &TcpConn {
        match &self.0 {
            Io::Plain(tcp) => tcp,
            Io::Tls(tls) => tls.get_ref().0,
        }
    }
}

impl Connected for Conn {
    // the TCP addresses also under TLS: TenantAuth and the admin interceptor read the client IP
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.tcp().info.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.0 {
            Io::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Io::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.0 {
            Io::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Io::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.0 {
            Io::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Io::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.0 {
            Io::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Io::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.0 {
            Io::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Io::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.0 {
            Io::Plain(tcp) => tcp.is_write_vectored(),
            Io::Tls(tls) => tls.is_write_vectored(),
        }
    }
}

/// An admitted TCP connection: the socket, its addresses and its per-IP place.
struct TcpConn {
    io: TcpStream,
    info: TcpConnectInfo,
    _slot: IpSlot,
}

impl AsyncRead for TcpConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for TcpConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The connections `listener` accepts, each admitted against the per-IP cap and, with
/// `opts.tls`, through its TLS handshake, as the stream `Server::serve_with_incoming_shutdown`
/// takes. An `accept` error (EMFILE, say) is logged and retried after a short pause rather than
/// ending the server; a failed or timed-out handshake drops that connection only.
pub fn accept_stream(
    listener: TcpListener,
    opts: AcceptOptions,
) -> impl Stream<Item = io::Result<Conn>> + Send + 'static {
    match opts.tls.clone() {
        None => admitted(listener, opts).map(|r| r.map(|tcp| Conn(Io::Plain(tcp)))).left_stream(),
        Some(tls) => tls
            .incoming(admitted(listener, opts), MAX_HANDSHAKES)
            .map(|r| r.map(|tls| Conn(Io::Tls(Box::new(tls)))))
            .right_stream(),
    }
}

/// The TCP connections `listener` accepts that the per-IP cap admits.
fn admitted(
    listener: TcpListener,
    opts: AcceptOptions,
) -> impl Stream<Item = io::Result<TcpConn>> + Send + 'static {
    let limiter = IpLimiter::new(opts.max_per_ip);
    let state = (listener, limiter, opts);
    futures_util::stream::unfold(state, |(listener, limiter, opts)| async move {
        loop {
            let (io, remote) = match listener.accept().await {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(listener = opts.listener, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(slot) = limiter.try_acquire(remote.ip()) else {
                opts.refused.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    listener = opts.listener,
                    client_ip = %remote.ip(),
                    "connection refused: per-IP cap"
                );
                drop(io);
                continue;
            };
            let conn = configure(io, remote, &opts, slot);
            return Some((Ok(conn), (listener, limiter, opts)));
        }
    })
}

fn configure(io: TcpStream, remote: SocketAddr, opts: &AcceptOptions, slot: IpSlot) -> TcpConn {
    // tonic applies its builder's TCP options only to listeners it binds itself: set them here
    // (keepalive so dead stream clients are noticed; no Nagle delay on small replies)
    let _ = io.set_nodelay(true);
    let sock = socket2::SockRef::from(&io);
    let keepalive = socket2::TcpKeepalive::new().with_time(opts.tcp_keepalive);
    let _ = sock.set_tcp_keepalive(&keepalive);
    let info = TcpConnectInfo { local_addr: io.local_addr().ok(), remote_addr: Some(remote) };
    TcpConn { io, info, _slot: slot }
}
