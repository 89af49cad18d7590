//! The HTTP listener service: one supervised `service` resource per actix-web server, serving
//! plain HTTP or, with [`ListenerSpec::tls`], HTTPS (rustls, the shared reloading certificate).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::dev::{ServerHandle, Service};
use actix_web::{App, HttpServer, web};
use futures_util::FutureExt;
use futures_util::future::LocalBoxFuture;
use steward_core::{
    ChildSpec, ExitReason, Resource, ResourceCtx, ResourceKind, StopResource, stop_resource,
};

type Configure = Arc<dyn Fn(&mut web::ServiceConfig) + Send + Sync>;
type OnBound = Arc<dyn Fn(&[SocketAddr]) + Send + Sync>;

/// How to run one HTTP listener.
#[derive(Clone)]
pub struct ListenerSpec {
    /// Listener name (`admin`, `public`): the resource name and the `listener` log field.
    pub name: &'static str,
    /// Address to bind; port 0 picks a free port (logged as `listener bound`).
    pub listen: SocketAddr,
    /// actix-web workers; 0 = one per core.
    pub workers: usize,
    /// Routes and app data.
    pub configure: Configure,
    /// Graceful stop budget for open connections (actix-web `shutdown_timeout`).
    pub shutdown_timeout: Duration,
    /// The running server's handle, for shutdown hooks (pause accepting).
    pub handle: Arc<Mutex<Option<ServerHandle>>>,
    /// `SO_SNDBUF` of accepted connections; `None` leaves the kernel's autotuning.
    pub send_buffer: Option<usize>,
    /// Told the bound addresses each time the listener binds (a restart may bind anew).
    pub on_bound: Option<OnBound>,
    /// TLS (`[tls]`), when this listener serves HTTPS; `None` serves plain HTTP.
    pub tls: Option<steward_tls::Tls>,
    /// actix-http's `client_disconnect_timeout` (how long a finished connection "lingers",
    /// reading, before it is shut down); `None` keeps actix-web's default (1 s).
    pub linger: Option<Duration>,
}

impl ListenerSpec {
    /// A listener named `name` on `listen` serving what `configure` sets up.
    pub fn new(
        name: &'static str,
        listen: SocketAddr,
        workers: usize,
        shutdown_timeout: Duration,
        configure: impl Fn(&mut web::ServiceConfig) + Send + Sync + 'static,
    ) -> Self {
        Self {
            name,
            listen,
            workers,
            configure: Arc::new(configure),
            shutdown_timeout,
            handle: Arc::default(),
            send_buffer: None,
            on_bound: None,
            tls: None,
            linger: None,
        }
    }

    /// Sets how long a finished connection lingers before it is shut down (actix-http's
    /// `client_disconnect_timeout`; zero: at once). The public listener sets zero: a WebSocket
    /// ends only after the closing handshake, and the client waits for the server to close the
    /// TCP connection (RFC 6455 §7.1.1), so a linger would delay every clean close by its length.
    #[must_use]
    pub fn linger(mut self, linger: Option<Duration>) -> Self {
        self.linger = linger;
        self
    }

    /// Serves HTTPS with `tls` (rustls through actix-web's `rustls-0_23`: HTTP/1.1 and h2 by
    /// ALPN, the shared reloading certificate, `[tls] handshake_timeout`), or plain HTTP with
    /// `None` (the default).
    #[must_use]
    pub fn tls(mut self, tls: Option<steward_tls::Tls>) -> Self {
        self.tls = tls;
        self
    }

    /// Calls `f` with the bound addresses each time the listener binds, before it serves (the
    /// browsers wall them off from tenants' pages).
    #[must_use]
    pub fn on_bound(mut self, f: impl Fn(&[SocketAddr]) + Send + Sync + 'static) -> Self {
        self.on_bound = Some(Arc::new(f));
        self
    }

    /// Sets `SO_SNDBUF` on every accepted connection (Linux doubles it for bookkeeping). A
    /// bounded kernel buffer bounds what a client that stopped reading holds in the kernel, so
    /// the writer's deadline notices it early instead of after megabytes of autotuned buffer.
    #[must_use]
    pub fn send_buffer(mut self, bytes: Option<usize>) -> Self {
        self.send_buffer = bytes;
        self
    }

    /// Pauses accepting new connections on the running server, if any (shutdown phase
    /// `stop_accepting`); open connections continue. The future owns what it needs, so it can be
    /// a shutdown hook.
    pub fn pause(&self) -> impl Future<Output = ()> + Send + 'static {
        let handle = self.handle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        async move {
            if let Some(handle) = handle {
                handle.pause().await;
            }
        }
    }

    /// The child spec of this listener: permanent, kind `service`. Binding happens in the factory,
    /// so a taken port is a failed start.
    #[must_use]
    pub fn child_spec(self) -> ChildSpec {
        let name = self.name;
        // actix-web's own graceful stop, plus a margin before the supervisor kills the listener
        let deadline = self.shutdown_timeout + Duration::from_secs(1);
        ChildSpec::new(format!("http-{name}"), ResourceKind::Service, move |rcx: ResourceCtx| {
            self.start(rcx)
        })
        .shutdown(deadline)
    }

    fn start(&self, rcx: ResourceCtx) -> std::io::Result<HttpListener> {
        let configure = self.configure.clone();
        let name = self.name;
        let send_buffer = self.send_buffer;
        let mut server = HttpServer::new(move || {
            let configure = configure.clone();
            App::new()
                .wrap_fn(move |req, srv| {
                    // access log without the query string: tokens may travel there
                    let (method, path, t0) = (req.method().clone(), req.path().to_owned(), Instant::now());
                    srv.call(req).map(move |res| {
                        if let Ok(res) = &res {
                            tracing::debug!(listener = name, %method, %path, status = res.status().as_u16(), elapsed_us = t0.elapsed().as_micros() as u64, "request");
                        }
                        res
                    })
                })
                .configure(|cfg| configure(cfg))
        })
        .workers(if self.workers == 0 { std::thread::available_parallelism().map_or(1, usize::from) } else { self.workers })
        .on_connect(move |conn, ext| {
            // a WebSocket's pump may have to abort its connection (crate::conn)
            if let Some(fd) = crate::conn::ConnFd::of(conn) {
                ext.insert(fd);
            }
            let Some(bytes) = send_buffer else { return };
            if let Some(tcp) = crate::conn::ConnFd::tcp(conn)
                && let Err(e) = socket2::SockRef::from(tcp).set_send_buffer_size(bytes)
            {
                tracing::warn!(listener = name, error = %e, "cannot set SO_SNDBUF");
            }
        })
        .disable_signals()
        .shutdown_timeout(self.shutdown_timeout.as_secs().max(1));
        if let Some(linger) = self.linger {
            server = server.client_disconnect_timeout(linger);
        }
        let server = match &self.tls {
            Some(tls) => server
                .tls_handshake_timeout(tls.handshake_timeout())
                .bind_rustls_0_23(self.listen, (*tls.http_server_config()).clone())?,
            None => server.bind(self.listen)?,
        };
        let addrs = server.addrs();
        if let Some(on_bound) = &self.on_bound {
            on_bound(&addrs);
        }
        let server = server.run();
        let handle = server.handle();
        for addr in &addrs {
            tracing::info!(listener = name, addr = %addr, tls = self.tls.is_some(), "listener bound");
        }
        rcx.tracker()
            .spawn(async move {
                if let Err(e) = server.await {
                    tracing::error!(listener = name, error = %e, "http server ended with an error");
                }
            })
            .map_err(std::io::Error::other)?;
        *self.handle.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(handle.clone());
        Ok(HttpListener { rcx, handle, name })
    }
}

/// A running actix-web server as a supervised resource.
pub struct HttpListener {
    rcx: ResourceCtx,
    handle: ServerHandle,
    name: &'static str,
}

impl Actor for HttpListener {
    type Context = Context<Self>;
}

impl Resource for HttpListener {
    fn resource_ctx(&self) -> &ResourceCtx {
        &self.rcx
    }

    fn resource_ctx_mut(&mut self) -> &mut ResourceCtx {
        &mut self.rcx
    }

    fn cleanup(&mut self, reason: &ExitReason) -> LocalBoxFuture<'static, ()> {
        let (handle, name) = (self.handle.clone(), self.name);
        tracing::info!(listener = name, exit_reason = %reason, "stopping listener");
        Box::pin(async move { handle.stop(true).await })
    }
}

impl Handler<StopResource> for HttpListener {
    type Result = ();

    fn handle(&mut self, msg: StopResource, ctx: &mut Context<Self>) {
        stop_resource(self, ctx, msg.reason);
    }
}
