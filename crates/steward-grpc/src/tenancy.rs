//! Tenant-token authentication for tonic services ([`TenantAuthLayer`] / [`TenantAuth`]) and
//! `steward.tenancy.v1.Tenancy` ([`TenancyService`]).

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::task::{Context, Poll};

use steward_proto::tenancy::v1 as pb;
use steward_proto::tenancy::v1::tenancy_server::Tenancy as TenancyRpc;
use steward_tenancy::{Error, Tenancy, TenantContext};
use tonic::codegen::http;
use tonic::server::NamedService;
use tonic::transport::server::TcpConnectInfo;
use tonic::{Request, Response, Status};

use crate::error::status_from_tenancy;

/// A [`tower::Layer`] that puts [`TenantAuth`] in front of a tonic service: every call must carry
/// `authorization: Bearer <tenant API token>`.
///
/// ```no_run
/// # fn serve(tenancy: steward_tenancy::Tenancy) {
/// use steward_grpc::{TenancyService, TenantAuthLayer};
/// use steward_proto::tenancy::v1::tenancy_server::TenancyServer;
/// use tower::Layer as _;
///
/// let service = TenantAuthLayer::new(tenancy.clone())
///     .layer(TenancyServer::new(TenancyService::new(tenancy)));
/// let router = tonic::transport::Server::builder().add_service(service);
/// # drop(router);
/// # }
/// ```
#[derive(Clone)]
pub struct TenantAuthLayer {
    tenancy: Tenancy,
}

impl TenantAuthLayer {
    /// A layer that resolves tokens through `tenancy`.
    #[must_use]
    pub fn new(tenancy: Tenancy) -> Self {
        Self { tenancy }
    }
}

impl<S> tower::Layer<S> for TenantAuthLayer {
    type Service = TenantAuth<S>;

    fn layer(&self, inner: S) -> TenantAuth<S> {
        TenantAuth { inner, tenancy: self.tenancy.clone() }
    }
}

/// Steward's one tonic interceptor for tenant API tokens, as a tower service around a generated
/// tonic server (`TenancyServer<TenancyService>`, and any later tenant-facing service).
///
/// For each call it reads the `authorization` metadata (`Bearer <token>`, the scheme matched
/// case-insensitively as RFC 9110 §11.1 says), awaits [`Tenancy::authenticate`], inserts the
/// resulting [`TenantContext`] into the request's extensions — handlers get it with
/// [`tenant_of`] — and calls the inner service. Otherwise it answers itself, without calling
/// the inner service:
/// - `UNAUTHENTICATED` "unauthenticated: missing or invalid bearer token" for a missing header
///   or a malformed, unknown, revoked or expired token, the same in every case;
/// - `UNAVAILABLE` "store_unavailable: …" when the tenant store cannot be asked (the details are
///   logged, not sent to the unauthenticated caller);
/// - `INTERNAL` "internal: …" for anything else (logged likewise).
///
/// It is a tower service rather than a [`tonic::service::Interceptor`] because tonic's
/// `Interceptor` trait is synchronous (`fn call(&mut self, Request<()>) -> Result<…>`) and cannot
/// await the store; the admin token, which needs no store, is still checked by
/// [`BearerInterceptor`](crate::BearerInterceptor).
///
/// It forwards [`NamedService::NAME`] of the inner service, so it can be passed to
/// `tonic::transport::Server::add_service` directly.
#[derive(Clone)]
pub struct TenantAuth<S> {
    inner: S,
    tenancy: Tenancy,
}

impl<S> TenantAuth<S> {
    /// `inner` behind tenant-token authentication through `tenancy`.
    #[must_use]
    pub fn new(inner: S, tenancy: Tenancy) -> Self {
        Self { inner, tenancy }
    }
}

impl<S: NamedService> NamedService for TenantAuth<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, R> tower::Service<http::Request<B>> for TenantAuth<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    R: Default,
{
    type Response = http::Response<R>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<R>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        // the clone that was driven to readiness serves this call; a fresh clone stays behind
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let tenancy = self.tenancy.clone();
        Box::pin(async move {
            let ip = req
                .extensions()
                .get::<TcpConnectInfo>()
                .and_then(TcpConnectInfo::remote_addr)
                .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |a| a.ip());
            match tenancy.authenticate_from(ip, bearer(req.headers())).await {
                Ok(ctx) => {
                    req.extensions_mut().insert(ctx);
                    inner.call(req).await
                }
                Err(e) => Ok(refusal(&e).into_http()),
            }
        })
    }
}

/// The token of an `authorization: Bearer <token>` header, if there is one.
fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// What an unauthenticated caller is told when authentication fails with `e`.
fn refusal(e: &Error) -> Status {
    match e {
        Error::Unauthenticated | Error::Throttled { .. } => status_from_tenancy(e),
        Error::Store(_) | Error::Migrate(_) => {
            tracing::warn!(error = %e, "tenant store unavailable while authenticating a token");
            Status::unavailable("store_unavailable: the tenant store is unavailable; retry")
        }
        _ => {
            tracing::error!(error = %e, "authenticating a token failed");
            Status::internal("internal: authenticating the token failed")
        }
    }
}

/// The caller of a request that went through [`TenantAuth`].
///
/// # Errors
/// `UNAUTHENTICATED` "unauthenticated: missing or invalid bearer token" when the request carries
/// no [`TenantContext`] (the service was registered without [`TenantAuth`] in front of it).
pub fn tenant_of<T>(req: &Request<T>) -> Result<&TenantContext, Status> {
    req.extensions().get::<TenantContext>().ok_or_else(|| {
        tracing::error!("a tenant service was called without TenantAuth in front of it");
        status_from_tenancy(&Error::Unauthenticated)
    })
}

/// `steward.tenancy.v1.Tenancy`: what a tenant's API token grants. Serve it behind
/// [`TenantAuth`], which supplies the caller.
#[derive(Clone)]
pub struct TenancyService {
    tenancy: Tenancy,
}

impl TenancyService {
    /// The service over `tenancy` (for live usage).
    #[must_use]
    pub fn new(tenancy: Tenancy) -> Self {
        Self { tenancy }
    }
}

/// Effective quotas on the wire (`steward.tenancy.v1.Quotas`, which the admin package uses too).
pub(crate) fn quotas_to_pb(q: &steward_tenancy::Quotas) -> pb::Quotas {
    pb::Quotas {
        sessions: q.sessions,
        pages_per_session: q.pages_per_session,
        session_rate: q.session_rate,
        producers: q.producers,
        consumers: q.consumers,
        sockets: q.sockets,
        peers: q.peers,
        topics: q.topics,
        groups: q.groups,
        stored_messages: q.stored_messages,
        stored_bytes: q.stored_bytes,
        jobs: q.jobs,
        watch_streams: q.watch_streams,
        streams: q.streams,
        stream_keys: q.stream_keys,
        stream_bytes: q.stream_bytes,
    }
}

#[tonic::async_trait]
impl TenancyRpc for TenancyService {
    async fn who_am_i(
        &self,
        req: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let ctx = tenant_of(&req)?;
        let tenant = ctx.tenant();
        let token = ctx.token();
        let usage = self.tenancy.usage(ctx.tenant_id());
        Ok(Response::new(pb::WhoAmIResponse {
            tenant_id: tenant.id.to_string(),
            display_name: tenant.display_name.clone(),
            token_id: token.id.to_string(),
            token_name: token.name.clone(),
            token_expires_at: token.expires_at.map(Into::into),
            quotas: Some(quotas_to_pb(ctx.quotas())),
            usage: usage.into_iter().map(|(kind, n)| (kind.to_string(), n)).collect(),
            labels: tenant.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        }))
    }
}
