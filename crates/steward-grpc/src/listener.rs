//! The gRPC listener service: tonic on its own multi-thread runtime, owned by a supervised
//! `service` resource.

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
use steward_proto::tenancy::v1::tenancy_server::{SERVICE_NAME as TENANCY_SERVICE, TenancyServer};
use steward_tenancy::Tenancy;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tower::Layer as _;

use steward_socket::jobs::JobHubHandle;

use crate::{
    AdminService, BearerInterceptor, BrowserService, JobsService, MessagingService, TenancyService,
    TenantAuth, TenantAuthLayer,
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
}

impl GrpcSpec {
    /// The listener's child spec: permanent, kind `service`. Binding happens in the factory.
    #[must_use]
    pub fn child_spec(self) -> ChildSpec {
        ChildSpec::new("grpc", ResourceKind::Service, move |rcx: ResourceCtx| self.start(rcx))
            .shutdown(SERVE_STOP + Duration::from_secs(1))
    }

    fn start(&self, rcx: ResourceCtx) -> std::io::Result<GrpcListener> {
        let std_listener = std::net::TcpListener::bind(self.config.listen)?;
        std_listener.set_nonblocking(true)?;
        let addr: SocketAddr = std_listener.local_addr()?;
        let listener = {
            let _enter = self.runtime.enter();
            tokio::net::TcpListener::from_std(std_listener)?
        };
        tracing::info!(listener = "grpc", addr = %addr, "listener bound");
        self.browsers.wall_off_listener("grpc", &[addr]);

        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(steward_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(std::io::Error::other)?;
        let admin = AdminServer::with_interceptor(
            AdminService::new(self.registry.clone(), self.streams.clone(), self.tenancy.clone())
                .with_jobs(self.jobs.clone()),
            BearerInterceptor::new(self.token.clone()),
        );
        let tenancy = TenantAuth::new(
            TenancyServer::new(TenancyService::new(self.tenancy.clone())),
            self.tenancy.clone(),
        );
        let jobs = TenantAuthLayer::new(self.tenancy.clone()).layer(JobsServer::new(
            JobsService::new(self.jobs.clone(), self.streams.clone(), self.watch_buffer),
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

        // grpc.health.v1 follows readiness: SERVING only while ready
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
                    health_reporter.set_service_status(ADMIN_SERVICE, status).await;
                    health_reporter.set_service_status(TENANCY_SERVICE, status).await;
                    health_reporter.set_service_status(JOBS_SERVICE, status).await;
                    health_reporter.set_service_status(MESSAGING_SERVICE, status).await;
                    health_reporter.set_service_status(BROWSER_SERVICE, status).await;
                    if readiness.changed().await.is_err() {
                        return;
                    }
                }
            })
            .map_err(std::io::Error::other)?;

        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let c = &self.config;
        let server = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(c.http2_keepalive_interval))
            .http2_keepalive_timeout(Some(c.http2_keepalive_timeout))
            .add_service(health_service)
            .add_service(reflection)
            .add_service(admin)
            .add_service(tenancy)
            .add_service(jobs)
            .add_service(messaging)
            .add_service(browser);
        // tonic applies its builder's TCP options only to listeners it binds itself: set them on
        // ours (keepalive so dead stream clients are noticed; no Nagle delay on small replies)
        let incoming = tonic::transport::server::TcpIncoming::from(listener)
            .with_nodelay(Some(true))
            .with_keepalive(Some(c.tcp_keepalive));
        rcx.tracker()
            .spawn_on(&self.runtime, async move {
                let shutdown = async {
                    let _ = stop_rx.await;
                };
                if let Err(e) = server.serve_with_incoming_shutdown(incoming, shutdown).await {
                    tracing::error!(listener = "grpc", error = %e, "grpc server ended with an error");
                }
                let _ = done_tx.send(());
            })
            .map_err(std::io::Error::other)?;
        Ok(GrpcListener {
            rcx,
            stop: Some(stop_tx),
            done: Some(done_rx),
            streams: self.streams.clone(),
        })
    }
}

/// The running tonic server as a supervised resource.
pub struct GrpcListener {
    rcx: ResourceCtx,
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
        tracing::info!(listener = "grpc", exit_reason = %reason, "stopping listener");
        // streams first: tonic's graceful stop would otherwise wait for them forever (#1820)
        if *reason == ExitReason::Shutdown && self.rcx.registry().is_shutting_down() {
            self.streams.cancel();
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let done = self.done.take();
        Box::pin(async move {
            if let Some(done) = done
                && tokio::time::timeout(SERVE_STOP, done).await.is_err()
            {
                tracing::warn!(listener = "grpc", "grpc server did not stop in time; aborting it");
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
