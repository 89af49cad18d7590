//! `steward.admin.v1.Admin`: the gRPC mirror of the admin HTTP API's resource, tenant and token
//! endpoints.

use std::pin::Pin;
use std::str::FromStr;

use futures_util::Stream;
use steward_core::{
    Control, EventKind, ExitReason, LifecycleState, Registry, ResourceFilter, ResourceId,
    ResourceInfo, ResourceKind,
};
use steward_proto::admin::v1 as pb;
use steward_proto::admin::v1::admin_server::Admin;
use steward_tenancy::Tenancy;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::{status_from, tenant_admin};

const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

/// The admin service: resources through the core's registry, tenants and tokens through the
/// tenancy. Serve it behind [`BearerInterceptor`](crate::BearerInterceptor) with the admin token.
/// Its `WatchResources` streams end with `UNAVAILABLE` when `streams` is cancelled (shutdown
/// phase `notify_clients`), so tonic's graceful stop never waits on them.
#[derive(Clone)]
pub struct AdminService {
    registry: Registry,
    streams: CancellationToken,
    tenancy: Tenancy,
    jobs: Option<steward_socket::jobs::JobHubHandle>,
}

impl AdminService {
    /// A service over `registry` and `tenancy`; `streams` ends every open stream when cancelled.
    #[must_use]
    pub fn new(registry: Registry, streams: CancellationToken, tenancy: Tenancy) -> Self {
        Self { registry, streams, tenancy, jobs: None }
    }

    /// Also removes a deleted tenant's jobs from `jobs`.
    #[must_use]
    pub fn with_jobs(mut self, jobs: steward_socket::jobs::JobHubHandle) -> Self {
        self.jobs = Some(jobs);
        self
    }
}

fn parse<T: FromStr>(name: &str, v: Option<&str>) -> Result<Option<T>, Status>
where
    T::Err: std::fmt::Display,
{
    v.filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<T>().map_err(|e| {
                Status::invalid_argument(format!("bad_request: invalid `{name}`: {e}"))
            })
        })
        .transpose()
}

fn parse_id(id: &str) -> Result<ResourceId, Status> {
    id.parse()
        .map_err(|e| Status::invalid_argument(format!("bad_request: invalid resource id: {e}")))
}

fn to_pb(i: ResourceInfo) -> pb::Resource {
    pb::Resource {
        id: i.id.to_string(),
        kind: i.kind.to_string(),
        name: i.name.to_string(),
        tenant: i.tenant.map(|t| t.to_string()),
        parent: i.parent.map(|p| p.to_string()),
        state: i.state.to_string(),
        started_at: Some(i.started_at.into()),
        last_activity_at: Some(i.last_activity_at.into()),
        restarts: i.restarts,
        last_exit_reason: i.last_exit.map(|r| r.to_string()),
        tasks: i.tasks,
        timers: i.timers,
        processes: i.processes,
        stopped_at: i.stopped_at.map(Into::into),
    }
}

fn event_to_pb(e: &steward_core::ResourceEvent) -> pb::ResourceEvent {
    let kind = match e.event {
        EventKind::Started => pb::EventKind::Started,
        EventKind::Stopped => pb::EventKind::Stopped,
        EventKind::Restarted => pb::EventKind::Restarted,
        EventKind::Escalated => pb::EventKind::Escalated,
    };
    pb::ResourceEvent {
        event: kind as i32,
        id: e.id.to_string(),
        resource_kind: e.kind.to_string(),
        tenant: e.tenant.as_deref().map(str::to_owned),
        parent: e.parent.map(|p| p.to_string()),
        exit_reason: e.exit_reason.as_ref().map(ToString::to_string),
        restart_attempt: e.restart_attempt,
        restart_delay: prost_types::Duration::try_from(e.restart_delay).ok(),
        at: Some(e.at.into()),
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::ResourceEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Admin for AdminService {
    async fn list_resources(
        &self,
        req: Request<pb::ListResourcesRequest>,
    ) -> Result<Response<pb::ListResourcesResponse>, Status> {
        let r = req.into_inner();
        let filter = ResourceFilter {
            kind: parse::<ResourceKind>("kind", r.kind.as_deref())?,
            tenant: r.tenant.filter(|t| !t.is_empty()),
            state: parse::<LifecycleState>("state", r.state.as_deref())?,
        };
        let after = parse::<ResourceId>("page_token", Some(r.page_token.as_str()))?;
        let size = match r.page_size {
            0 => DEFAULT_PAGE,
            n if n <= MAX_PAGE => n,
            n => {
                return Err(Status::invalid_argument(format!(
                    "bad_request: page_size {n} is above {MAX_PAGE}"
                )));
            }
        };
        let (items, next) = self.registry.list(&filter, after, size as usize);
        Ok(Response::new(pb::ListResourcesResponse {
            resources: items.into_iter().map(to_pb).collect(),
            next_page_token: next.map(|n| n.to_string()).unwrap_or_default(),
        }))
    }

    async fn get_resource(
        &self,
        req: Request<pb::GetResourceRequest>,
    ) -> Result<Response<pb::Resource>, Status> {
        let id = parse_id(&req.into_inner().id)?;
        let info =
            self.registry.get(id).ok_or_else(|| status_from(&steward_core::Error::NotFound(id)))?;
        Ok(Response::new(to_pb(info)))
    }

    async fn stop_resource(
        &self,
        req: Request<pb::StopResourceRequest>,
    ) -> Result<Response<pb::StopResourceResponse>, Status> {
        let id = parse_id(&req.into_inner().id)?;
        Control::new(self.registry.clone())
            .stop(id, ExitReason::Shutdown)
            .map_err(|e| status_from(&e))?;
        let state = self.registry.get(id).map_or(LifecycleState::Stopped, |i| i.state);
        Ok(Response::new(pb::StopResourceResponse { id: id.to_string(), state: state.to_string() }))
    }

    type WatchResourcesStream = EventStream;

    async fn watch_resources(
        &self,
        req: Request<pb::WatchResourcesRequest>,
    ) -> Result<Response<Self::WatchResourcesStream>, Status> {
        let kind = parse::<ResourceKind>("kind", req.into_inner().kind.as_deref())?;
        if self.registry.is_shutting_down() || self.streams.is_cancelled() {
            return Err(Status::unavailable("shutting_down: server shutting down"));
        }
        let mut events = self.registry.subscribe();
        let cancel = self.streams.clone();
        let stream = async_stream(move |tx| async move {
            loop {
                tokio::select! {
                    () = cancel.cancelled() => {
                        let _ = tx.send(Err(Status::unavailable("shutting_down: server shutting down"))).await;
                        return;
                    }
                    () = tx.closed() => return,
                    ev = events.recv() => match ev {
                        Ok(ev) if kind.is_none_or(|k| k == ev.kind) => {
                            if tx.send(Ok(event_to_pb(&ev))).await.is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(RecvError::Lagged(n)) => {
                            let _ = tx.send(Err(Status::data_loss(format!("lagged: {n} events were dropped for this slow subscriber")))).await;
                            return;
                        }
                        Err(RecvError::Closed) => return,
                    }
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn create_tenant(
        &self,
        req: Request<pb::CreateTenantRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        tenant_admin::create_tenant(&self.tenancy, req.into_inner()).await.map(Response::new)
    }

    async fn list_tenants(
        &self,
        req: Request<pb::ListTenantsRequest>,
    ) -> Result<Response<pb::ListTenantsResponse>, Status> {
        tenant_admin::list_tenants(&self.tenancy, req.into_inner()).await.map(Response::new)
    }

    async fn get_tenant(
        &self,
        req: Request<pb::GetTenantRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        tenant_admin::get_tenant(&self.tenancy, req.into_inner()).await.map(Response::new)
    }

    async fn update_tenant(
        &self,
        req: Request<pb::UpdateTenantRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        tenant_admin::update_tenant(&self.tenancy, req.into_inner()).await.map(Response::new)
    }

    async fn delete_tenant(
        &self,
        req: Request<pb::DeleteTenantRequest>,
    ) -> Result<Response<pb::DeleteTenantResponse>, Status> {
        let deleted = tenant_admin::delete_tenant(&self.tenancy, req.into_inner()).await?;
        if let Some(jobs) = &self.jobs
            && let Err(e) = jobs.remove_tenant(deleted.id.as_str().into()).await
        {
            tracing::warn!(tenant = %deleted.id, error = %e, "cannot remove a deleted tenant's jobs");
        }
        Ok(Response::new(deleted))
    }

    async fn create_token(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        tenant_admin::create_token(&self.tenancy, req.into_inner()).await.map(Response::new)
    }

    async fn list_tokens(
        &self,
        req: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        tenant_admin::list_tokens(&self.tenancy, req.into_inner()).await.map(Response::new)
    }

    async fn revoke_token(
        &self,
        req: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        tenant_admin::revoke_token(&self.tenancy, req.into_inner()).await.map(Response::new)
    }
}

/// A stream fed by `body` through a small bounded channel; `body` runs inside the stream (no
/// detached task: dropping the stream drops it).
fn async_stream<F, Fut>(body: F) -> EventStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<pb::ResourceEvent, Status>>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    use futures_util::StreamExt;
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let producer = futures_util::stream::once(body(tx)).filter_map(|()| async { None });
    let consumer = tokio_stream::wrappers::ReceiverStream::new(rx);
    Box::pin(futures_util::stream::select(producer, consumer))
}
