//! The gRPC listener services: tonic on its own multi-thread runtime, each listener owned by a
//! supervised `service` resource. `grpc` serves the tenant services on the public address;
//! `grpc-admin` serves `steward.admin.v1.Admin` on `[grpc] admin_listen` (loopback by default),
//! so nothing administrative answers on a public port.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::future::LocalBoxFuture;
use steward_config::GrpcConfig;
use steward_core::shutdown::{Readiness, ReadinessState};
use steward_core::{
    ChildSpec, ExitReason, Registry, Resource, ResourceCtx, ResourceKind, StopResource,
    stop_resource,
};
use steward_proto::admin::v1::admin_server::{AdminServer, SERVICE_NAME as ADMIN_SERVICE};
use steward_proto::browser::v1::browser_server::SERVICE_NAME as BROWSER_SERVICE;
use steward_proto::jobs::v1::jobs_server::{JobsServer, SERVICE_NAME as JOBS_SERVICE};
use steward_proto::messaging::v1::messaging_server::SERVICE_NAME as MESSAGING_SERVICE;
use steward_proto::rtc::v1::rooms_server::{RoomsServer, SERVICE_NAME as ROOMS_SERVICE};
use steward_proto::streams::v1::streams_server::{SERVICE_NAME as STREAMS_SERVICE, StreamsServer};
use steward_proto::tenancy::v1::tenancy_server::{SERVICE_NAME as TENANCY_SERVICE, TenancyServer};
use steward_tenancy::DoorStats;
use steward_tenancy::Tenancy;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tonic::service::{Routes, RoutesBuilder};
use tonic_health::ServingStatus;
use tower::Layer as _;

use steward_socket::jobs::JobHubHandle;

use crate::deadline::DeadlineLayer;
use crate::incoming::{AcceptOptions, accept_stream};
use crate::{
    AdminService, BearerInterceptor, BrowserService, JobsService, MessagingService, RoomsService,
    StreamsService, TenancyService, TenantAuth, TenantAuthLayer,
};

/// How long a stopping listener waits for tonic's graceful stop (open streams were cancelled
/// before, see tonic #1820) before its task is aborted.
const SERVE_STOP: Duration = Duration::from_secs(2);

/// Everything the gRPC listener needs; cheap to clone (one per restart).
#[derive(Clone)]
pub struct GrpcSpec {
    /// `[grpc]` config.
    pub config: GrpcConfig,
    /// tonic's runtime.
    pub runtime: tokio::runtime::Handle,
    /// The registry.
    pub registry: Registry,
    /// Readiness, mirrored to `grpc.health.v1` (NOT_SERVING unless ready).
    pub readiness: Readiness,
    /// Admin token for `steward.admin.v1`.
    pub token: Arc<str>,
    /// The front doors' counters: refused connections, and `admin`, the failed admin
    /// authentications per client IP (shared with the admin HTTP listener).
    pub doors: DoorStats,
    /// Cancelled in shutdown phase `notify_clients`: every open stream ends `UNAVAILABLE`.
    pub streams: CancellationToken,
    /// Tenants and API tokens: the admin service's tenant calls and `steward.tenancy.v1`
    /// (whose calls [`TenantAuth`] authenticates with tenant tokens).
    pub tenancy: Tenancy,
    /// The job hub, served as `steward.jobs.v1.Jobs`.
    pub jobs: JobHubHandle,
    /// Updates buffered per `WatchJob` stream (`[jobs] watch_buffer`).
    pub watch_buffer: usize,
    /// The messaging proxy, served as `steward.messaging.v1.Messaging`.
    pub messaging: steward_messaging::Messaging,
    /// The browser pool, served as `steward.browser.v1.Browser` (its capture jobs go to
    /// `jobs`).
    pub browsers: steward_browser::Browsers,
    /// The streams, served as `steward.streams.v1.Streams`.
    pub stream_cache: steward_streams::Streams,
    /// The WebRTC rooms, served as `steward.rtc.v1.Rooms` (room admin).
    pub rtc: steward_rtc::Rtc,
    /// TLS (`[tls]`) on both listeners, or `None` for plain TCP (h2c). With it, every accepted
    /// connection completes its handshake under `[tls] handshake_timeout` before tonic sees it.
    pub tls: Option<steward_tls::Tls>,
}

impl GrpcSpec {
    /// The child specs of both listeners, in start order: `grpc` (the public listener, tenant
    /// services) and `grpc-admin` (`steward.admin.v1.Admin`, on `[grpc] admin_listen`). Each is a
    /// permanent `service`; binding happens in its factory.
    #[must_use]
    pub fn child_specs(self) -> Vec<ChildSpec> {
        let admin = self.clone();
        vec![
            ChildSpec::new("grpc", ResourceKind::Service, move |rcx: ResourceCtx| {
                self.start_public(rcx)
            })
            .shutdown(SERVE_STOP + Duration::from_secs(1)),
            ChildSpec::new("grpc-admin", ResourceKind::Service, move |rcx: ResourceCtx| {
                admin.start_admin(rcx)
            })
            .shutdown(SERVE_STOP + Duration::from_secs(1)),
        ]
    }

    fn start_public(&self, rcx: ResourceCtx) -> std::io::Result<GrpcListener> {
        let (listener, addr) = self.bind("grpc", self.config.listen)?;
        self.browsers.wall_off_listener("grpc", &[addr]);

        let tenancy = TenantAuth::new(
            TenancyServer::new(TenancyService::new(self.tenancy.clone())),
            self.tenancy.clone(),
        );
        let jobs = TenantAuthLayer::new(self.tenancy.clone()).layer(JobsServer::new(
            JobsService::new(self.jobs.clone(), self.streams.clone(), self.watch_buffer)
                .with_quotas(self.tenancy.clone()),
        ));
        // requests over `[messaging] max_request` fail OUT_OF_RANGE in tonic's decoder
        let messaging = TenantAuthLayer::new(self.tenancy.clone()).layer(
            MessagingService::new(
                self.messaging.clone(),
                self.tenancy.clone(),
                self.streams.clone(),
            )
            .into_server(),
        );

        // requests over `[browser] max_request` fail OUT_OF_RANGE in tonic's decoder; the
        // janitor marks failed the capture jobs of sessions that stopped, for as long as the
        // listener lives
        let (browser, janitor) =
            BrowserService::new(self.browsers.clone(), self.tenancy.clone(), self.jobs.clone());
        let browser = TenantAuthLayer::new(self.tenancy.clone()).layer(browser.into_server());
        rcx.tracker().spawn_on(&self.runtime, janitor.run()).map_err(std::io::Error::other)?;

        let streams = TenantAuthLayer::new(self.tenancy.clone()).layer(StreamsServer::new(
            StreamsService::new(
                self.stream_cache.clone(),
                self.tenancy.clone(),
                self.streams.clone(),
            ),
        ));

        let rooms = TenantAuthLayer::new(self.tenancy.clone())
            .layer(RoomsServer::new(RoomsService::new(self.rtc.clone())));

        let health = self.health(
            &rcx,
            &[
                TENANCY_SERVICE,
                JOBS_SERVICE,
                MESSAGING_SERVICE,
                BROWSER_SERVICE,
                STREAMS_SERVICE,
                ROOMS_SERVICE,
            ],
        )?;
        let mut routes = RoutesBuilder::default();
        routes
            .add_service(health)
            .add_service(Self::reflection()?)
            .add_service(tenancy)
            .add_service(jobs)
            .add_service(messaging)
            .add_service(browser)
            .add_service(streams)
            .add_service(rooms);
        self.serve(rcx, "grpc", listener, routes.routes())
    }

    fn start_admin(&self, rcx: ResourceCtx) -> std::io::Result<GrpcListener> {
        let (listener, addr) = self.bind("grpc-admin", self.config.admin_listen)?;
        self.browsers.wall_off_listener("grpc-admin", &[addr]);
        if !addr.ip().is_loopback() {
            tracing::warn!(
                listener = "grpc-admin",
                addr = %addr,
                "the admin gRPC listener is bound beyond loopback: anyone who reaches it may try the admin token"
            );
        }
        let admin = AdminServer::with_interceptor(
            AdminService::new(self.registry.clone(), self.streams.clone(), self.tenancy.clone())
                .with_jobs(self.jobs.clone()),
            BearerInterceptor::new(self.token.clone(), self.doors.admin.clone()),
        );
        let health = self.health(&rcx, &[ADMIN_SERVICE])?;
        let mut routes = RoutesBuilder::default();
        routes.add_service(health).add_service(Self::reflection()?).add_service(admin);
        self.serve(rcx, "grpc-admin", listener, routes.routes())
    }

    /// Binds `listen` on tonic's runtime.
    fn bind(
        &self,
        name: &'static str,
        listen: SocketAddr,
    ) -> std::io::Result<(tokio::net::TcpListener, SocketAddr)> {
        let std_listener = std::net::TcpListener::bind(listen)?;
        std_listener.set_nonblocking(true)?;
        let addr: SocketAddr = std_listener.local_addr()?;
        let listener = {
            let _enter = self.runtime.enter();
            tokio::net::TcpListener::from_std(std_listener)?
        };
        tracing::info!(listener = name, addr = %addr, tls = self.tls.is_some(), "listener bound");
        Ok((listener, addr))
    }

    fn reflection() -> std::io::Result<
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
    > {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(steward_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(std::io::Error::other)
    }

    /// `grpc.health.v1` for `services` (and ""), following readiness from a tracked task:
    /// SERVING only while ready.
    fn health(
        &self,
        rcx: &ResourceCtx,
        services: &'static [&'static str],
    ) -> std::io::Result<
        tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
    > {
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        let mut readiness = self.readiness.subscribe();
        rcx.tracker()
            .spawn_on(&self.runtime, async move {
                loop {
                    let status = match *readiness.borrow_and_update() {
                        ReadinessState::Ready => ServingStatus::Serving,
                        ReadinessState::Starting | ReadinessState::Draining => {
                            ServingStatus::NotServing
                        }
                    };
                    health_reporter.set_service_status("", status).await;
                    for service in services {
                        health_reporter.set_service_status(*service, status).await;
                    }
                    if readiness.changed().await.is_err() {
                        return;
                    }
                }
            })
            .map_err(std::io::Error::other)?;
        Ok(health_service)
    }

    /// Serves `routes` on `listener` from a tracked task on tonic's runtime: the per-IP
    /// connection cap and TCP options of [`accept_stream`], `[grpc] max_concurrent_streams`, and
    /// the caller's deadline on every call ([`DeadlineLayer`]).
    fn serve(
        &self,
        rcx: ResourceCtx,
        name: &'static str,
        listener: tokio::net::TcpListener,
        routes: Routes,
    ) -> std::io::Result<GrpcListener> {
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let c = &self.config;
        let router = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(c.http2_keepalive_interval))
            .http2_keepalive_timeout(Some(c.http2_keepalive_timeout))
            .max_concurrent_streams(Some(c.max_concurrent_streams))
            .layer(DeadlineLayer)
            .add_routes(routes);
        let incoming = accept_stream(
            listener,
            AcceptOptions {
                listener: name,
                max_per_ip: c.max_connections_per_ip,
                tcp_keepalive: c.tcp_keepalive,
                refused: self.doors.grpc_connections_refused(name),
                tls: self.tls.as_ref().map(steward_tls::Tls::acceptor),
            },
        );
        rcx.tracker()
            .spawn_on(&self.runtime, async move {
                let shutdown = async {
                    let _ = stop_rx.await;
                };
                if let Err(e) = router.serve_with_incoming_shutdown(incoming, shutdown).await {
                    tracing::error!(listener = name, error = %e, "grpc server ended with an error");
                }
                let _ = done_tx.send(());
            })
            .map_err(std::io::Error::other)?;
        Ok(GrpcListener {
            rcx,
            name,
            stop: Some(stop_tx),
            done: Some(done_rx),
            streams: self.streams.clone(),
        })
    }
}

/// The running tonic server as a supervised resource.
pub struct GrpcListener {
    rcx: ResourceCtx,
    name: &'static str,
    stop: Option<oneshot::Sender<()>>,
    done: Option<oneshot::Receiver<()>>,
    streams: CancellationToken,
}

impl Actor for GrpcListener {
    type Context = Context<Self>;
}

impl Resource for GrpcListener {
    fn resource_ctx(&self) -> &ResourceCtx {
        &self.rcx
    }

    fn resource_ctx_mut(&mut self) -> &mut ResourceCtx {
        &mut self.rcx
    }

    fn cleanup(&mut self, reason: &ExitReason) -> LocalBoxFuture<'static, ()> {
        tracing::info!(listener = self.name, exit_reason = %reason, "stopping listener");
        // streams first: tonic's graceful stop would otherwise wait for them forever (#1820)
        if *reason == ExitReason::Shutdown && self.rcx.registry().is_shutting_down() {
            self.streams.cancel();
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let done = self.done.take();
        let name = self.name;
        Box::pin(async move {
            if let Some(done) = done
                && tokio::time::timeout(SERVE_STOP, done).await.is_err()
            {
                tracing::warn!(listener = name, "grpc server did not stop in time; aborting it");
            }
        })
    }
}

impl Handler<StopResource> for GrpcListener {
    type Result = ();

    fn handle(&mut self, msg: StopResource, ctx: &mut Context<Self>) {
        stop_resource(self, ctx, msg.reason);
    }
}
