//! The admin API (admin listener): health, readiness, metrics, resources, supervisors, watchdog,
//! browsers, shutdown, tenants and tokens (`tenants.rs`), and the OpenAPI document. `/v1/*`
//! requires `Authorization: Bearer <admin token>`.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::SystemTime;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{StatusCode, header};
use actix_web::middleware::{Next, from_fn};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use steward_core::shutdown::{Readiness, ReadinessState, ShutdownCoordinator, ShutdownTrigger};
use steward_core::watchdog::WatchdogHandle;
use steward_core::{
    Control, ExitReason, LifecycleState, Registry, ResourceFilter, ResourceId, ResourceInfo,
    ResourceKind,
};
use steward_tenancy::Tenancy;
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::error::{ErrorBody, ErrorDetail};
use crate::{ApiError, tenants};

/// Largest page of `GET /v1/resources`.
const MAX_PAGE: usize = 1000;
/// Default page of `GET /v1/resources`.
const DEFAULT_PAGE: usize = 100;

/// What the admin handlers reach: the core's shared handles. Cheap to clone.
#[derive(Clone)]
pub struct AdminState {
    /// The resource registry.
    pub registry: Registry,
    /// Readiness flag.
    pub readiness: Readiness,
    /// Pulled by `POST /v1/shutdown`.
    pub trigger: ShutdownTrigger,
    /// The watchdog's report.
    pub watchdog: WatchdogHandle,
    /// For shutdown phase durations in `/metrics`.
    pub coordinator: Arc<ShutdownCoordinator>,
    /// The admin bearer token.
    pub token: Arc<str>,
    /// The front doors' counters; `doors.admin` limits failed admin-token attempts per IP.
    pub doors: steward_tenancy::DoorStats,
    /// TLS, when `[tls]` is on (for its counters on `/metrics`).
    pub tls: Option<steward_tls::Tls>,
    /// Tenants, tokens and quotas.
    pub tenancy: Tenancy,
    /// The socket front door and its job hub (for `/metrics`).
    pub sockets: steward_socket::SocketService,
    /// The socket memory monitor's report (for `/metrics`).
    pub monitor: steward_socket::monitor::MonitorHandle,
    /// The messaging proxy (for `/metrics` and tenant deletion).
    pub messaging: steward_messaging::Messaging,
    /// The browser pool (for `GET /v1/browsers` and `/metrics`).
    pub browsers: steward_browser::Browsers,
    /// The streams (for `/metrics`).
    pub streams: steward_streams::Streams,
    /// The rooms and peers (for `/metrics`).
    pub rtc: steward_rtc::Rtc,
}

/// Configures the admin routes with `state`.
pub fn admin_app_config(
    state: AdminState,
) -> impl Fn(&mut web::ServiceConfig) + Send + Sync + 'static {
    move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(web::Data::new(state.clone()))
            .app_data(web::Data::new(state.tenancy.clone()))
            .app_data(web::PayloadConfig::new(crate::MAX_JSON_BODY))
            .app_data(
                web::QueryConfig::default()
                    .error_handler(|e, _| ApiError::bad_request(e.to_string()).into()),
            )
            .app_data(
                web::PathConfig::default()
                    .error_handler(|e, _| ApiError::bad_request(e.to_string()).into()),
            )
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(metrics))
            .route("/openapi.json", web::get().to(openapi))
            .service(
                web::scope("/v1")
                    .wrap(from_fn(require_admin_token))
                    .configure(tenants::admin_routes)
                    .route("/resources", web::get().to(list_resources))
                    .route("/resources/{id}", web::get().to(get_resource))
                    .route("/resources/{id}", web::delete().to(stop_resource))
                    .route("/resources/{id}/restart", web::post().to(restart_resource))
                    .route("/supervisors", web::get().to(supervisors))
                    .route("/watchdog", web::get().to(watchdog))
                    .route("/browsers", web::get().to(browsers))
                    .route("/browsers/{id}/targets", web::get().to(browser_targets))
                    .route("/shutdown", web::post().to(shutdown))
                    .default_service(web::to(not_found)),
            )
            .default_service(web::to(not_found));
    }
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found(format!("no route for {} {}", req.method(), req.path())))
}

async fn require_admin_token(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<AdminState>>().cloned() else {
        return Err(ApiError::unauthenticated().into());
    };
    // the TCP peer: the admin listener takes no proxy headers
    let ip = req.peer_addr().map_or(std::net::Ipv4Addr::LOCALHOST.into(), |a| a.ip());
    let failures = &state.doors.admin;
    if let Err(retry_after) = failures.check(ip) {
        return Err(ApiError::from(steward_tenancy::Error::Throttled { retry_after }).into());
    }
    let expected = &state.token;
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(given)
            if constant_time_eq::constant_time_eq(expected.as_bytes(), given.as_bytes()) =>
        {
            next.call(req).await
        }
        _ => {
            failures.record(ip);
            Err(ApiError::unauthenticated().into())
        }
    }
}

/// Process liveness.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "alive", body = Status)))]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Status { status: "ok".into() })
}

/// Readiness: 200 when serving, 503 with the reason while starting or draining.
#[utoipa::path(get, path = "/readyz", responses(
    (status = 200, description = "ready", body = Status),
    (status = 503, description = "starting or draining", body = ErrorBody)))]
async fn readyz(state: web::Data<AdminState>) -> Result<HttpResponse, ApiError> {
    match state.readiness.state() {
        ReadinessState::Ready => Ok(HttpResponse::Ok().json(Status { status: "ready".into() })),
        other => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", other.as_str())
            .retry_after(1)),
    }
}

/// Prometheus text format.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain")))]
async fn metrics(state: web::Data<AdminState>) -> HttpResponse {
    let body = crate::render_metrics(
        &state.registry,
        &state.watchdog.report(),
        &state.coordinator.progress(),
        &state.tenancy.ledger().stats(),
        &crate::SocketMetrics {
            sockets: state.sockets.stats(),
            tracked_ips: state.sockets.tracked_ips(),
            jobs: state.sockets.jobs().stats(),
            monitor: state.monitor.report(),
        },
        &crate::MessagingMetrics::of(&state.messaging),
        &crate::BrowserMetrics::of(&state.browsers),
        &crate::DoorMetrics::of(&state.doors, &state.tenancy, state.tls.as_ref()),
        &crate::StreamMetrics::of(&state.streams),
        &crate::RtcMetrics::of(&state.rtc),
    );
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(body)
}

async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}

/// `{"status": …}`.
#[derive(Serialize, ToSchema)]
struct Status {
    status: String,
}

/// Query of `GET /v1/resources`.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// browser, session, producer, consumer, socket, peer, stream or service.
    kind: Option<String>,
    /// Tenant id.
    tenant: Option<String>,
    /// starting, running, restarting, stopping or stopped (recently stopped entries).
    state: Option<String>,
    /// Page size, 1..=1000, default 100.
    limit: Option<usize>,
    /// The `next` of the previous page.
    after: Option<String>,
}

/// One resource.
#[derive(Serialize, ToSchema)]
struct ResourceJson {
    /// 16 hex digits.
    id: String,
    kind: String,
    name: String,
    tenant: Option<String>,
    parent: Option<String>,
    state: String,
    /// RFC 3339.
    started_at: String,
    /// RFC 3339.
    last_activity_at: String,
    restarts: u32,
    last_exit_reason: Option<String>,
    tasks: u32,
    timers: u32,
    processes: u32,
    is_supervisor: bool,
    /// RFC 3339, stopped entries only.
    stopped_at: Option<String>,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

impl From<ResourceInfo> for ResourceJson {
    fn from(i: ResourceInfo) -> Self {
        Self {
            id: i.id.to_string(),
            kind: i.kind.to_string(),
            name: i.name.to_string(),
            tenant: i.tenant.map(|t| t.to_string()),
            parent: i.parent.map(|p| p.to_string()),
            state: i.state.to_string(),
            started_at: rfc3339(i.started_at),
            last_activity_at: rfc3339(i.last_activity_at),
            restarts: i.restarts,
            last_exit_reason: i.last_exit.map(|r| r.to_string()),
            tasks: i.tasks,
            timers: i.timers,
            processes: i.processes,
            is_supervisor: i.is_supervisor,
            stopped_at: i.stopped_at.map(rfc3339),
        }
    }
}

/// A page of resources.
#[derive(Serialize, ToSchema)]
struct ResourceList {
    resources: Vec<ResourceJson>,
    /// Pass as `after` for the next page; absent on the last page.
    next: Option<String>,
}

fn parse<T: FromStr>(name: &str, value: Option<&str>) -> Result<Option<T>, ApiError>
where
    T::Err: std::fmt::Display,
{
    value
        .map(|v| {
            v.parse::<T>().map_err(|e| ApiError::bad_request(format!("invalid `{name}`: {e}")))
        })
        .transpose()
}

/// Lists live (or recently stopped) resources, ordered by id, paged.
#[utoipa::path(get, path = "/v1/resources", params(ListQuery), security(("admin_token" = [])), responses(
    (status = 200, body = ResourceList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn list_resources(
    state: web::Data<AdminState>,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let filter = ResourceFilter {
        kind: parse::<ResourceKind>("kind", q.kind.as_deref())?,
        tenant: q.tenant.clone(),
        state: parse::<LifecycleState>("state", q.state.as_deref())?,
    };
    let after = parse::<ResourceId>("after", q.after.as_deref())?;
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "invalid `limit`: must be between 1 and {MAX_PAGE}"
        )));
    }
    let (items, next) = state.registry.list(&filter, after, limit);
    Ok(HttpResponse::Ok().json(ResourceList {
        resources: items.into_iter().map(ResourceJson::from).collect(),
        next: next.map(|n| n.to_string()),
    }))
}

fn path_id(id: &str) -> Result<ResourceId, ApiError> {
    id.parse::<ResourceId>().map_err(|e| ApiError::bad_request(format!("invalid resource id: {e}")))
}

/// One resource, live or recently stopped.
#[utoipa::path(get, path = "/v1/resources/{id}", params(("id" = String, Path, description = "16 hex digits")),
    security(("admin_token" = [])), responses((status = 200, body = ResourceJson), (status = 404, body = ErrorBody)))]
async fn get_resource(
    state: web::Data<AdminState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&id)?;
    let info = state
        .registry
        .get(id)
        .ok_or_else(|| ApiError::not_found(format!("resource {id} not found")))?;
    Ok(HttpResponse::Ok().json(ResourceJson::from(info)))
}

/// Accepted stop or restart.
#[derive(Serialize, ToSchema)]
struct Accepted {
    id: String,
    status: String,
}

/// Stops a resource gracefully (its supervisor does not restart it, and kills it at its
/// `shutdown` deadline); 202, then it is gone.
#[utoipa::path(delete, path = "/v1/resources/{id}", params(("id" = String, Path, description = "16 hex digits")),
    security(("admin_token" = [])), responses((status = 202, body = Accepted), (status = 404, body = ErrorBody),
    (status = 409, description = "a supervisor (stop the system instead)", body = ErrorBody)))]
async fn stop_resource(
    state: web::Data<AdminState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&id)?;
    Control::new(state.registry.clone()).stop(id, ExitReason::Shutdown)?;
    Ok(HttpResponse::Accepted().json(Accepted { id: id.to_string(), status: "stopping".into() }))
}

/// Restarts a resource now with a fresh actor (through its supervisor).
#[utoipa::path(post, path = "/v1/resources/{id}/restart", params(("id" = String, Path, description = "16 hex digits")),
    security(("admin_token" = [])), responses((status = 202, body = Accepted), (status = 404, body = ErrorBody),
    (status = 409, body = ErrorBody)))]
async fn restart_resource(
    state: web::Data<AdminState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&id)?;
    Control::new(state.registry.clone()).restart(id).await?;
    Ok(HttpResponse::Accepted().json(Accepted { id: id.to_string(), status: "restarting".into() }))
}

/// A supervisor and what it supervises.
#[derive(Serialize, ToSchema)]
#[schema(no_recursion)]
struct SupervisorNode {
    id: String,
    name: String,
    state: String,
    restarts: u32,
    /// Non-supervisor children, counted per kind.
    children: BTreeMap<String, u64>,
    /// Child supervisors and services, by name.
    members: Vec<Member>,
    supervisors: Vec<SupervisorNode>,
}

/// A named non-supervisor child of kind `service`.
#[derive(Serialize, ToSchema)]
struct Member {
    id: String,
    name: String,
    state: String,
    restarts: u32,
}

/// The supervision tree: supervisors nested, services listed, other children counted per kind.
#[utoipa::path(get, path = "/v1/supervisors", security(("admin_token" = [])), responses((status = 200, body = [SupervisorNode])))]
async fn supervisors(state: web::Data<AdminState>) -> HttpResponse {
    let (all, _) = state.registry.list(&ResourceFilter::default(), None, usize::MAX);
    fn node(s: &ResourceInfo, all: &[ResourceInfo]) -> SupervisorNode {
        let mut children = BTreeMap::new();
        let mut members = Vec::new();
        let mut supervisors = Vec::new();
        for c in all.iter().filter(|c| c.parent == Some(s.id)) {
            if c.is_supervisor {
                supervisors.push(node(c, all));
            } else if c.kind == ResourceKind::Service {
                members.push(Member {
                    id: c.id.to_string(),
                    name: c.name.to_string(),
                    state: c.state.to_string(),
                    restarts: c.restarts,
                });
            } else {
                *children.entry(c.kind.to_string()).or_insert(0) += 1;
            }
        }
        SupervisorNode {
            id: s.id.to_string(),
            name: s.name.to_string(),
            state: s.state.to_string(),
            restarts: s.restarts,
            children,
            members,
            supervisors,
        }
    }
    let roots: Vec<SupervisorNode> = all
        .iter()
        .filter(|i| i.is_supervisor && i.parent.is_none())
        .map(|r| node(r, &all))
        .collect();
    HttpResponse::Ok().json(roots)
}

/// One watched count.
#[derive(Serialize, ToSchema)]
struct WatchedJson {
    watched: String,
    current: u64,
    baseline: Option<f64>,
    floor: u64,
    potential_leak: bool,
}

/// The watchdog's latest report.
#[derive(Serialize, ToSchema)]
struct WatchdogJson {
    samples: u64,
    baseline_samples: u32,
    leak_factor: f64,
    interval_ms: u64,
    orphans: u64,
    sampled_at: Option<String>,
    values: Vec<WatchedJson>,
}

/// The leak watchdog's baseline, latest sample and potential leaks.
#[utoipa::path(get, path = "/v1/watchdog", security(("admin_token" = [])), responses((status = 200, body = WatchdogJson)))]
async fn watchdog(state: web::Data<AdminState>) -> HttpResponse {
    let r = state.watchdog.report();
    HttpResponse::Ok().json(WatchdogJson {
        samples: r.samples,
        baseline_samples: r.baseline_samples,
        leak_factor: r.leak_factor,
        interval_ms: u64::try_from(r.interval.as_millis()).unwrap_or(u64::MAX),
        orphans: r.orphans,
        sampled_at: r.sampled_at.map(rfc3339),
        values: r
            .values
            .into_iter()
            .map(|v| WatchedJson {
                watched: v.watched.name(),
                current: v.current,
                baseline: v.baseline,
                floor: v.floor,
                potential_leak: v.potential_leak,
            })
            .collect(),
    })
}

/// One browser: a Chromium process Steward runs (`local`) or a tenant's remote CDP endpoint
/// (`remote`).
#[derive(Serialize, ToSchema)]
struct BrowserJson {
    /// Its resource id (16 hex digits): `DELETE /v1/resources/{id}` stops it for good.
    id: String,
    /// `local` or `remote`.
    origin: String,
    /// The tenant whose remote endpoint it is (remote only).
    tenant: Option<String>,
    /// `launching`, `ready`, `draining` (recycling) or `down`.
    state: String,
    /// Chromium's process id, also its process group id (local only).
    pid: Option<u32>,
    /// The remote DevTools WebSocket URL Steward is connected to; `pipe` for a local Chromium
    /// (the DevTools protocol on a pipe: it opens no port).
    endpoint: Option<String>,
    /// Live browser contexts (one per session).
    contexts: usize,
    /// Open pages of those sessions.
    pages: usize,
    /// Contexts created over its life (recycling counts these).
    contexts_created: u64,
    /// Processes in its process group now (local only; 0 for remote).
    processes: usize,
    /// Their resident memory, bytes.
    rss_bytes: u64,
    /// RFC 3339: when it came up.
    started_at: String,
}

impl From<steward_browser::stats::BrowserInfo> for BrowserJson {
    fn from(b: steward_browser::stats::BrowserInfo) -> Self {
        Self {
            id: b.id,
            origin: b.origin.to_owned(),
            tenant: b.tenant,
            state: b.state.as_str().to_owned(),
            pid: b.pid,
            endpoint: b.endpoint,
            contexts: b.contexts,
            pages: b.pages,
            contexts_created: b.contexts_created,
            processes: b.processes,
            rss_bytes: b.rss_bytes,
            started_at: rfc3339(b.started_at),
        }
    }
}

/// Every browser of this node.
#[derive(Serialize, ToSchema)]
struct BrowserList {
    /// Oldest first.
    browsers: Vec<BrowserJson>,
}

/// Every browser now: state, contexts, pages, Chromium processes and their memory (read from
/// `/proc`). Local browsers start on demand, so the list is empty until the first session.
#[utoipa::path(get, path = "/v1/browsers", security(("admin_token" = [])), responses(
    (status = 200, body = BrowserList), (status = 401, body = ErrorBody),
    (status = 503, description = "the server is stopping", body = ErrorBody)))]
async fn browsers(state: web::Data<AdminState>) -> Result<HttpResponse, ApiError> {
    // `browsers()` scans /proc for each local browser's process group: off the worker thread
    let pool = state.browsers.clone();
    let list = web::block(move || pool.browsers()).await.map_err(|_| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the server is stopping")
    })?;
    Ok(HttpResponse::Ok()
        .json(BrowserList { browsers: list.into_iter().map(BrowserJson::from).collect() }))
}

/// What a Chromium itself holds.
#[derive(Serialize, ToSchema)]
struct ChromiumJson {
    /// Its browser contexts besides the default one (one per session).
    contexts: Vec<String>,
    /// Its targets.
    targets: Vec<TargetJson>,
}

/// One target of a Chromium.
#[derive(Serialize, ToSchema)]
struct TargetJson {
    /// Target id.
    id: String,
    /// `page`, `iframe`, `service_worker`, `browser`, …
    #[serde(rename = "type")]
    kind: String,
    /// Its browser context; absent for the default one.
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<String>,
    /// Its URL.
    url: String,
}

/// What browser `id` itself lists — its contexts and targets (`Target.getBrowserContexts`,
/// `Target.getTargets`) — asked over Steward's own connection, which is the only one a local
/// Chromium has.
#[utoipa::path(get, path = "/v1/browsers/{id}/targets", params(("id" = String, Path, description = "the browser's resource id")),
    security(("admin_token" = [])), responses((status = 200, body = ChromiumJson),
    (status = 404, body = ErrorBody), (status = 503, description = "the browser is not up", body = ErrorBody),
    (status = 504, description = "Chromium did not answer in time", body = ErrorBody)))]
async fn browser_targets(
    state: web::Data<AdminState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let view = state.browsers.chromium_view(&id).await.map_err(|e| {
        use steward_browser::Error as E;
        let message = e.to_string();
        match e {
            E::NotFound(_) => ApiError::not_found(message),
            E::DeadlineExceeded { .. } => {
                ApiError::new(StatusCode::GATEWAY_TIMEOUT, "deadline_exceeded", message)
            }
            _ => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "browser_unavailable", message)
                .retry_after(1),
        }
    })?;
    Ok(HttpResponse::Ok().json(ChromiumJson {
        contexts: view.contexts,
        targets: view
            .targets
            .into_iter()
            .map(|t| TargetJson { id: t.id, kind: t.kind, context: t.context, url: t.url })
            .collect(),
    }))
}

/// Optional body of `POST /v1/shutdown`.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
struct ShutdownRequest {
    /// Logged with the shutdown.
    reason: Option<String>,
}

/// Starts the ordered graceful shutdown, exactly as SIGTERM does; 202.
#[utoipa::path(post, path = "/v1/shutdown", request_body(content = Option<ShutdownRequest>, content_type = "application/json"),
    security(("admin_token" = [])), responses((status = 202, body = Status), (status = 400, body = ErrorBody)))]
async fn shutdown(
    state: web::Data<AdminState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let req: ShutdownRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ShutdownRequest::default()
    } else {
        crate::json::parse(&body)?
    };
    let first = state.trigger.trigger("admin api");
    tracing::info!(
        reason = req.reason.as_deref().unwrap_or("-"),
        first,
        "shutdown requested through the admin api"
    );
    Ok(HttpResponse::Accepted().json(Status { status: "shutting_down".into() }))
}

/// The OpenAPI 3 document of the admin API, generated from the handlers above.
#[derive(OpenApi)]
#[openapi(
    info(title = "Steward admin API", description = "Health, readiness, metrics, resources, supervisors, watchdog, browsers, shutdown, tenants and API tokens. `/v1/*` needs `Authorization: Bearer <admin token>`."),
    paths(healthz, readyz, metrics, list_resources, get_resource, stop_resource, restart_resource, supervisors, watchdog, browsers, browser_targets, shutdown),
    components(schemas(Status, ErrorBody, ErrorDetail, ResourceJson, ResourceList, Accepted, SupervisorNode, Member, WatchdogJson, WatchedJson, BrowserJson, BrowserList, ChromiumJson, TargetJson, ShutdownRequest)),
    modifiers(&BearerAuth, &TenantPaths)
)]
pub struct ApiDoc;

struct BearerAuth;

/// Adds the tenant and token paths (`tenants.rs`).
struct TenantPaths;

impl utoipa::Modify for TenantPaths {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi.merge(<crate::tenants::TenantsDoc as OpenApi>::openapi());
    }
}

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}
