//! Tenants and API tokens on the admin API (admin token), and `GET /v1/whoami` on the public
//! listener (tenant token).

use std::collections::BTreeMap;
use std::time::SystemTime;

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use steward_core::ResourceKind;
use steward_tenancy::{
    NewTenant, NewToken, QuotaOverrides, Quotas, Tenancy, TenantId, TenantPatch, TenantView,
    TokenId, TokenInfo,
};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Tenant;
use crate::error::ErrorBody;
use crate::{ApiError, ValidJson};

/// Largest page of `GET /v1/tenants`.
const MAX_PAGE: u32 = 1000;
/// Default page of `GET /v1/tenants`.
const DEFAULT_PAGE: u32 = 100;

/// Adds the tenant and token routes to the admin `/v1` scope.
pub(crate) fn admin_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/tenants", web::post().to(create_tenant))
        .route("/tenants", web::get().to(list_tenants))
        .route("/tenants/{id}", web::get().to(get_tenant))
        .route("/tenants/{id}", web::patch().to(update_tenant))
        .route("/tenants/{id}", web::delete().to(delete_tenant))
        .route("/tenants/{id}/tokens", web::post().to(create_token))
        .route("/tenants/{id}/tokens", web::get().to(list_tokens))
        .route("/tokens/{token_id}", web::delete().to(revoke_token));
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn tenant_id(id: &str) -> Result<TenantId, ApiError> {
    TenantId::new(id).map_err(ApiError::from)
}

/// Live resources per kind (services excluded), by kind name.
fn usage_json(usage: &[(ResourceKind, u64)]) -> BTreeMap<String, u64> {
    usage
        .iter()
        .filter(|(k, _)| *k != ResourceKind::Service)
        .map(|(k, n)| (k.as_str().to_owned(), *n))
        .collect()
}

/// A tenant.
#[derive(Serialize, ToSchema)]
pub(crate) struct TenantJson {
    /// Slug, 1..=63 characters of a-z, 0-9 and '-'.
    id: String,
    display_name: String,
    /// RFC 3339.
    created_at: String,
    /// RFC 3339.
    updated_at: String,
    /// Effective quotas: the overrides over the node's `[tenancy.default_quotas]`.
    quotas: Quotas,
    /// The quotas this tenant sets; the others follow the defaults.
    quota_overrides: QuotaOverrides,
    /// CDP endpoint its browser sessions use instead of a local Chromium.
    browser_endpoint: Option<String>,
    /// What its browser sessions may reach beyond the public internet: CIDRs (`10.0.0.0/8`),
    /// IP addresses (`127.0.0.1`), host names (`intranet.example`) and `*.` wildcards
    /// (`*.corp.example`); empty when they reach only public addresses.
    browser_allow: Vec<String>,
    labels: BTreeMap<String, String>,
    /// Live resources per kind on this node.
    usage: BTreeMap<String, u64>,
}

impl From<TenantView> for TenantJson {
    fn from(v: TenantView) -> Self {
        Self {
            id: v.tenant.id.to_string(),
            display_name: v.tenant.display_name,
            created_at: rfc3339(v.tenant.created_at),
            updated_at: rfc3339(v.tenant.updated_at),
            quotas: v.quotas,
            quota_overrides: v.tenant.quota_overrides,
            browser_endpoint: v.tenant.browser_endpoint,
            browser_allow: v.tenant.browser_allow,
            labels: v.tenant.labels,
            usage: usage_json(&v.usage),
        }
    }
}

/// A page of tenants.
#[derive(Serialize, ToSchema)]
struct TenantList {
    tenants: Vec<TenantJson>,
    /// Pass as `after` for the next page; absent on the last page.
    next: Option<String>,
}

/// Query of `GET /v1/tenants`.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct TenantQuery {
    /// Page size, 1..=1000, default 100.
    limit: Option<u32>,
    /// The `next` of the previous page.
    after: Option<String>,
}

/// An API token's metadata (never its secret).
#[derive(Serialize, ToSchema)]
struct TokenJson {
    /// 16 hex digits.
    id: String,
    tenant: String,
    name: String,
    /// RFC 3339.
    created_at: String,
    /// RFC 3339; absent when it never expires.
    expires_at: Option<String>,
}

impl From<TokenInfo> for TokenJson {
    fn from(i: TokenInfo) -> Self {
        Self {
            id: i.id.to_string(),
            tenant: i.tenant.to_string(),
            name: i.name,
            created_at: rfc3339(i.created_at),
            expires_at: i.expires_at.map(rfc3339),
        }
    }
}

/// A token just issued: its metadata and, this once only, the bearer string.
#[derive(Serialize, ToSchema)]
struct CreatedToken {
    #[serde(flatten)]
    info: TokenJson,
    /// `stw_<id>_<secret>`: send as `Authorization: Bearer …` (gRPC metadata `authorization`).
    /// Shown only in this response; Steward keeps only its SHA-256.
    token: String,
}

/// The tokens of a tenant.
#[derive(Serialize, ToSchema)]
struct TokenList {
    tokens: Vec<TokenJson>,
}

/// What deleting a tenant did.
#[derive(Serialize, ToSchema)]
struct TenantDeletedJson {
    id: String,
    tokens_revoked: usize,
    /// Resources it owned that were asked to stop (graceful path, through their supervisors).
    resources_stopped: usize,
    /// Of those, still live when the stop deadline passed.
    resources_left: usize,
    /// Its jobs removed from the job hub (their watchers get nothing more).
    jobs_removed: usize,
    /// Its message topics removed from the broker (with their groups and messages).
    topics_removed: u64,
}

/// Creates a tenant; 201 with `Location`. Of concurrent creations of one id exactly one wins;
/// the others get 409.
#[utoipa::path(post, path = "/v1/tenants", request_body = NewTenant, security(("admin_token" = [])),
    responses((status = 201, body = TenantJson), (status = 400, body = ErrorBody),
    (status = 409, description = "the id exists", body = ErrorBody),
    (status = 429, description = "tenancy.max_tenants reached", body = ErrorBody)))]
async fn create_tenant(
    tenancy: web::Data<Tenancy>,
    body: ValidJson<NewTenant>,
) -> Result<HttpResponse, ApiError> {
    let view = tenancy.create_tenant(body.0).await?;
    let location = format!("/v1/tenants/{}", view.tenant.id);
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, location))
        .json(TenantJson::from(view)))
}

/// Lists tenants ordered by id, paged.
#[utoipa::path(get, path = "/v1/tenants", params(TenantQuery), security(("admin_token" = [])),
    responses((status = 200, body = TenantList), (status = 400, body = ErrorBody)))]
async fn list_tenants(
    tenancy: web::Data<Tenancy>,
    q: web::Query<TenantQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "invalid `limit`: must be between 1 and {MAX_PAGE}"
        )));
    }
    let after = q.after.as_deref().map(tenant_id).transpose()?;
    let mut page = tenancy.tenants(after.as_ref(), limit + 1).await?;
    let next = (page.len() > limit as usize).then(|| {
        page.truncate(limit as usize);
        page.last().map(|v| v.tenant.id.to_string())
    });
    Ok(HttpResponse::Ok().json(TenantList {
        tenants: page.into_iter().map(TenantJson::from).collect(),
        next: next.flatten(),
    }))
}

/// One tenant, with its effective quotas and live usage per kind.
#[utoipa::path(get, path = "/v1/tenants/{id}", params(("id" = String, Path)), security(("admin_token" = [])),
    responses((status = 200, body = TenantJson), (status = 404, body = ErrorBody)))]
async fn get_tenant(
    tenancy: web::Data<Tenancy>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let view = tenancy.tenant(&tenant_id(&id)?).await?;
    Ok(HttpResponse::Ok().json(TenantJson::from(view)))
}

/// Changes a tenant: a JSON merge patch (RFC 7396) of `display_name`, `quotas` (a number sets
/// an override, `null` returns to the default), `browser_endpoint` (`null` removes it),
/// `browser_allow` (an array replaces the list, `null` empties it) and `labels` (`null` removes
/// one). New quotas apply to the next admission.
#[utoipa::path(patch, path = "/v1/tenants/{id}", params(("id" = String, Path)), request_body = TenantPatch,
    security(("admin_token" = [])), responses((status = 200, body = TenantJson),
    (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn update_tenant(
    tenancy: web::Data<Tenancy>,
    id: web::Path<String>,
    body: ValidJson<TenantPatch>,
) -> Result<HttpResponse, ApiError> {
    let view = tenancy.update_tenant(&tenant_id(&id)?, body.0).await?;
    Ok(HttpResponse::Ok().json(TenantJson::from(view)))
}

/// Deletes a tenant: its tokens are revoked, then every resource it owns is stopped through
/// its supervisor (the graceful path); answers when they are gone or the stop deadline passed.
#[utoipa::path(delete, path = "/v1/tenants/{id}", params(("id" = String, Path)), security(("admin_token" = [])),
    responses((status = 200, body = TenantDeletedJson), (status = 404, body = ErrorBody)))]
async fn delete_tenant(
    tenancy: web::Data<Tenancy>,
    state: web::Data<crate::AdminState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = tenant_id(&id)?;
    let d = tenancy.delete_tenant(&id).await?;
    let jobs_removed = remove_jobs(state.sockets.jobs(), id.as_str()).await;
    let topics_removed = state.messaging.remove_tenant(id.as_str()).await.unwrap_or_else(|e| {
        tracing::warn!(tenant = %id, error = %e, "cannot remove a deleted tenant's topics");
        0
    });
    Ok(HttpResponse::Ok().json(TenantDeletedJson {
        id: id.to_string(),
        tokens_revoked: d.tokens_revoked,
        resources_stopped: d.resources_stopped,
        resources_left: d.resources_left,
        jobs_removed,
        topics_removed,
    }))
}

/// Removes a deleted tenant's jobs from the job hub; a hub that cannot answer is logged (its
/// table is in memory: a restarted hub holds none of them anyway).
async fn remove_jobs(jobs: &steward_socket::jobs::JobHubHandle, tenant: &str) -> usize {
    match jobs.remove_tenant(tenant.into()).await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(tenant, error = %e, "cannot remove a deleted tenant's jobs");
            0
        }
    }
}

/// Issues an API token for a tenant; 201. The response carries the token itself, once.
#[utoipa::path(post, path = "/v1/tenants/{id}/tokens", params(("id" = String, Path)), request_body = NewToken,
    security(("admin_token" = [])), responses((status = 201, body = CreatedToken),
    (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 429, description = "tenancy.max_tokens_per_tenant reached", body = ErrorBody)))]
async fn create_token(
    tenancy: web::Data<Tenancy>,
    id: web::Path<String>,
    body: ValidJson<NewToken>,
) -> Result<HttpResponse, ApiError> {
    let issued = tenancy.issue_token(&tenant_id(&id)?, body.0).await?;
    Ok(HttpResponse::Created()
        .json(CreatedToken { info: TokenJson::from(issued.info), token: issued.bearer }))
}

/// The tokens of a tenant, without secrets.
#[utoipa::path(get, path = "/v1/tenants/{id}/tokens", params(("id" = String, Path)), security(("admin_token" = [])),
    responses((status = 200, body = TokenList), (status = 404, body = ErrorBody)))]
async fn list_tokens(
    tenancy: web::Data<Tenancy>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let tokens = tenancy.tokens(&tenant_id(&id)?).await?;
    Ok(HttpResponse::Ok().json(TokenList { tokens: tokens.into_iter().map(Into::into).collect() }))
}

/// Revokes a token; 204. The next request with it is refused on every front door (within 1 s
/// on other nodes sharing the store).
#[utoipa::path(delete, path = "/v1/tokens/{token_id}", params(("token_id" = String, Path, description = "16 hex digits")),
    security(("admin_token" = [])), responses((status = 204), (status = 404, body = ErrorBody)))]
async fn revoke_token(
    tenancy: web::Data<Tenancy>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = TokenId::new(&id)?;
    tenancy.revoke_token(&id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Who the caller is (public listener).
#[derive(Serialize, ToSchema)]
pub(crate) struct WhoAmI {
    tenant: String,
    display_name: String,
    token: TokenJson,
    quotas: Quotas,
    usage: BTreeMap<String, u64>,
    labels: BTreeMap<String, String>,
}

/// `GET /v1/whoami` on the public listener: the tenant, quotas and live usage behind the
/// caller's token (the HTTP twin of gRPC `steward.tenancy.v1.Tenancy/WhoAmI`).
pub(crate) async fn whoami(tenancy: web::Data<Tenancy>, caller: Tenant) -> HttpResponse {
    let ctx = caller.0;
    let usage = tenancy.usage(ctx.tenant_id());
    HttpResponse::Ok().json(WhoAmI {
        tenant: ctx.tenant_id().to_string(),
        display_name: ctx.tenant().display_name.clone(),
        token: TokenJson::from(ctx.token().clone()),
        quotas: *ctx.quotas(),
        usage: usage_json(&usage),
        labels: ctx.tenant().labels.clone(),
    })
}

/// Paths and schemas for the admin API's OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        create_tenant,
        list_tenants,
        get_tenant,
        update_tenant,
        delete_tenant,
        create_token,
        list_tokens,
        revoke_token
    ),
    components(schemas(
        TenantJson,
        TenantList,
        TokenJson,
        CreatedToken,
        TokenList,
        TenantDeletedJson,
        NewTenant,
        TenantPatch,
        NewToken,
        Quotas,
        QuotaOverrides,
        steward_tenancy::QuotaPatch
    ))
)]
pub(crate) struct TenantsDoc;
