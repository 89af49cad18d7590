//! The tenant and token calls of `steward.admin.v1.Admin`: wire types to [`Tenancy`] calls and
//! back. [`crate::AdminService`] delegates to these.

use std::collections::BTreeMap;
use std::time::Duration;

use steward_proto::admin::v1 as pb;
use steward_tenancy::{
    Error, IssuedToken, NewTenant, NewToken, QuotaKind, QuotaOverrides, QuotaPatch, Tenancy,
    TenantDeleted, TenantId, TenantPatch, TenantView, TokenId, TokenInfo,
};
use tonic::Status;

use crate::error::status_from_tenancy;

const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

/// `INVALID_ARGUMENT` "bad_request: invalid `<field>`: <reason>".
fn invalid(field: &str, reason: &str) -> Status {
    status_from_tenancy(&Error::InvalidArgument {
        field: field.to_owned(),
        reason: reason.to_owned(),
    })
}

/// The status for `e`, with the field of an `InvalidArgument` renamed from `from` (or a dotted
/// path under it) to `to`, so the message names the request field (`tenant_id`, not `id`).
fn status_renamed(e: Error, from: &str, to: &str) -> Status {
    let e = match e {
        Error::InvalidArgument { field, reason } => {
            let field = match field.strip_prefix(from) {
                Some(rest) if rest.is_empty() || rest.starts_with('.') => format!("{to}{rest}"),
                _ => field,
            };
            Error::InvalidArgument { field, reason }
        }
        other => other,
    };
    status_from_tenancy(&e)
}

fn status(e: &Error) -> Status {
    status_from_tenancy(e)
}

/// Validates a tenant id that the request carries in `field`.
fn tenant_id(field: &str, id: &str) -> Result<TenantId, Status> {
    TenantId::new(id).map_err(|e| status_renamed(e, "id", field))
}

/// Validates a token id that the request carries in `field`.
fn token_id(field: &str, id: &str) -> Result<TokenId, Status> {
    TokenId::new(id).map_err(|e| status_renamed(e, "token_id", field))
}

fn overrides_to_pb(o: &QuotaOverrides) -> pb::QuotaOverrides {
    pb::QuotaOverrides {
        sessions: o.sessions,
        pages_per_session: o.pages_per_session,
        session_rate: o.session_rate,
        producers: o.producers,
        consumers: o.consumers,
        sockets: o.sockets,
        peers: o.peers,
        topics: o.topics,
        groups: o.groups,
        stored_messages: o.stored_messages,
        stored_bytes: o.stored_bytes,
        jobs: o.jobs,
        watch_streams: o.watch_streams,
        streams: o.streams,
        stream_keys: o.stream_keys,
        stream_bytes: o.stream_bytes,
    }
}

fn overrides_from_pb(o: Option<pb::QuotaOverrides>) -> QuotaOverrides {
    let o = o.unwrap_or_default();
    QuotaOverrides {
        sessions: o.sessions,
        pages_per_session: o.pages_per_session,
        session_rate: o.session_rate,
        producers: o.producers,
        consumers: o.consumers,
        sockets: o.sockets,
        peers: o.peers,
        topics: o.topics,
        groups: o.groups,
        stored_messages: o.stored_messages,
        stored_bytes: o.stored_bytes,
        jobs: o.jobs,
        watch_streams: o.watch_streams,
        streams: o.streams,
        stream_keys: o.stream_keys,
        stream_bytes: o.stream_bytes,
    }
}

fn tenant_to_pb(v: TenantView) -> pb::Tenant {
    let TenantView { tenant, quotas, usage } = v;
    pb::Tenant {
        id: tenant.id.to_string(),
        display_name: tenant.display_name,
        created_at: Some(tenant.created_at.into()),
        updated_at: Some(tenant.updated_at.into()),
        quotas: Some(crate::tenancy::quotas_to_pb(&quotas)),
        quota_overrides: Some(overrides_to_pb(&tenant.quota_overrides)),
        browser_endpoint: tenant.browser_endpoint,
        browser_allow: tenant.browser_allow,
        labels: tenant.labels.into_iter().collect(),
        usage: usage.into_iter().map(|(kind, n)| (kind.to_string(), n)).collect(),
    }
}

fn token_to_pb(t: TokenInfo) -> pb::Token {
    pb::Token {
        id: t.id.to_string(),
        tenant_id: t.tenant.to_string(),
        name: t.name,
        created_at: Some(t.created_at.into()),
        expires_at: t.expires_at.map(Into::into),
    }
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// `Admin.CreateTenant`.
pub(crate) async fn create_tenant(
    tenancy: &Tenancy,
    r: pb::CreateTenantRequest,
) -> Result<pb::Tenant, Status> {
    let new = NewTenant {
        id: r.id,
        display_name: r.display_name,
        quotas: overrides_from_pb(r.quotas),
        browser_endpoint: r.browser_endpoint,
        browser_allow: r.browser_allow,
        labels: r.labels.into_iter().collect(),
    };
    tenancy.create_tenant(new).await.map(tenant_to_pb).map_err(|e| status(&e))
}

/// `Admin.ListTenants`: one page after `page_token`; the next page token is the last id of a
/// full page that has more after it.
pub(crate) async fn list_tenants(
    tenancy: &Tenancy,
    r: pb::ListTenantsRequest,
) -> Result<pb::ListTenantsResponse, Status> {
    let size = match r.page_size {
        0 => DEFAULT_PAGE,
        n if n <= MAX_PAGE => n,
        _ => return Err(invalid("page_size", &format!("must be at most {MAX_PAGE}"))),
    };
    let after = match r.page_token.as_str() {
        "" => None,
        token => Some(tenant_id("page_token", token)?),
    };
    // one more than asked tells whether there is a next page
    let mut tenants = tenancy.tenants(after.as_ref(), size + 1).await.map_err(|e| status(&e))?;
    let more = tenants.len() > size as usize;
    tenants.truncate(size as usize);
    let next_page_token = match tenants.last() {
        Some(last) if more => last.tenant.id.to_string(),
        _ => String::new(),
    };
    Ok(pb::ListTenantsResponse {
        tenants: tenants.into_iter().map(tenant_to_pb).collect(),
        next_page_token,
    })
}

/// `Admin.GetTenant`.
pub(crate) async fn get_tenant(
    tenancy: &Tenancy,
    r: pb::GetTenantRequest,
) -> Result<pb::Tenant, Status> {
    let id = tenant_id("id", &r.id)?;
    tenancy.tenant(&id).await.map(tenant_to_pb).map_err(|e| status(&e))
}

/// The slot of quota `q` in a patch.
#[allow(clippy::option_option)] // absent, reset and a value mean three different things
fn patch_slot(p: &mut QuotaPatch, q: QuotaKind) -> &mut Option<Option<u64>> {
    match q {
        QuotaKind::Sessions => &mut p.sessions,
        QuotaKind::PagesPerSession => &mut p.pages_per_session,
        QuotaKind::SessionRate => &mut p.session_rate,
        QuotaKind::Producers => &mut p.producers,
        QuotaKind::Consumers => &mut p.consumers,
        QuotaKind::Sockets => &mut p.sockets,
        QuotaKind::Peers => &mut p.peers,
        QuotaKind::Topics => &mut p.topics,
        QuotaKind::Groups => &mut p.groups,
        QuotaKind::StoredMessages => &mut p.stored_messages,
        QuotaKind::StoredBytes => &mut p.stored_bytes,
        QuotaKind::Jobs => &mut p.jobs,
        QuotaKind::WatchStreams => &mut p.watch_streams,
        QuotaKind::Streams => &mut p.streams,
        QuotaKind::StreamKeys => &mut p.stream_keys,
        QuotaKind::StreamBytes => &mut p.stream_bytes,
    }
}

/// The override of quota `q`, if set.
fn override_of(o: &QuotaOverrides, q: QuotaKind) -> Option<u64> {
    match q {
        QuotaKind::Sessions => o.sessions,
        QuotaKind::PagesPerSession => o.pages_per_session,
        QuotaKind::SessionRate => o.session_rate,
        QuotaKind::Producers => o.producers,
        QuotaKind::Consumers => o.consumers,
        QuotaKind::Sockets => o.sockets,
        QuotaKind::Peers => o.peers,
        QuotaKind::Topics => o.topics,
        QuotaKind::Groups => o.groups,
        QuotaKind::StoredMessages => o.stored_messages,
        QuotaKind::StoredBytes => o.stored_bytes,
        QuotaKind::Jobs => o.jobs,
        QuotaKind::WatchStreams => o.watch_streams,
        QuotaKind::Streams => o.streams,
        QuotaKind::StreamKeys => o.stream_keys,
        QuotaKind::StreamBytes => o.stream_bytes,
    }
}

/// `set_quotas` and `reset_quotas` as one patch, if they change anything.
fn quota_patch(
    set: Option<pb::QuotaOverrides>,
    reset: &[String],
) -> Result<Option<QuotaPatch>, Status> {
    let set = overrides_from_pb(set);
    let mut patch = QuotaPatch::default();
    let mut touched = false;
    for q in QuotaKind::ALL {
        if let Some(v) = override_of(&set, q) {
            *patch_slot(&mut patch, q) = Some(Some(v));
            touched = true;
        }
    }
    for name in reset {
        let Some(q) = QuotaKind::ALL.into_iter().find(|q| q.as_str() == name) else {
            return Err(invalid(
                "reset_quotas",
                &format!(
                    "unknown quota {name:?}: expected one of {}",
                    QuotaKind::ALL.map(QuotaKind::as_str).join(", ")
                ),
            ));
        };
        let slot = patch_slot(&mut patch, q);
        if matches!(slot, Some(Some(_))) {
            return Err(invalid(
                "reset_quotas",
                &format!("quota {name:?} is also set in `set_quotas`"),
            ));
        }
        *slot = Some(None);
        touched = true;
    }
    Ok(touched.then_some(patch))
}

/// `set_labels` and `remove_labels` as one patch (`Some(v)` sets, `None` removes), if they
/// change anything.
fn label_patch(
    set: std::collections::HashMap<String, String>,
    remove: Vec<String>,
) -> Result<Option<BTreeMap<String, Option<String>>>, Status> {
    let mut patch: BTreeMap<String, Option<String>> =
        set.into_iter().map(|(k, v)| (k, Some(v))).collect();
    for key in remove {
        if patch.contains_key(&key) {
            return Err(invalid(
                "remove_labels",
                &format!("label {key:?} is also set in `set_labels`"),
            ));
        }
        patch.insert(key, None);
    }
    Ok((!patch.is_empty()).then_some(patch))
}

/// `browser_allow` and `clear_browser_allow` as a merge patch of the list: a non-empty list
/// replaces it (`Some(Some(list))`), `clear_browser_allow` empties it (`Some(None)`), neither
/// leaves it (`None`); both at once is refused.
#[allow(clippy::option_option)] // absent, clear and a value mean three different things
fn browser_allow_patch(
    allow: Vec<String>,
    clear: bool,
) -> Result<Option<Option<Vec<String>>>, Status> {
    match (allow.is_empty(), clear) {
        (false, true) => {
            Err(invalid("clear_browser_allow", "must not be true when `browser_allow` is set"))
        }
        (false, false) => Ok(Some(Some(allow))),
        (true, true) => Ok(Some(None)),
        (true, false) => Ok(None),
    }
}

/// `Admin.UpdateTenant`: the request's set fields as a merge patch.
pub(crate) async fn update_tenant(
    tenancy: &Tenancy,
    r: pb::UpdateTenantRequest,
) -> Result<pb::Tenant, Status> {
    let id = tenant_id("id", &r.id)?;
    let browser_endpoint = match (r.browser_endpoint, r.clear_browser_endpoint) {
        (Some(_), true) => {
            return Err(invalid(
                "clear_browser_endpoint",
                "must not be true when `browser_endpoint` is set",
            ));
        }
        (Some(endpoint), false) => Some(Some(endpoint)),
        (None, true) => Some(None),
        (None, false) => None,
    };
    let browser_allow = browser_allow_patch(r.browser_allow, r.clear_browser_allow)?;
    let patch = TenantPatch {
        display_name: r.display_name,
        quotas: quota_patch(r.set_quotas, &r.reset_quotas)?,
        browser_endpoint,
        browser_allow,
        labels: label_patch(r.set_labels, r.remove_labels)?,
    };
    tenancy.update_tenant(&id, patch).await.map(tenant_to_pb).map_err(|e| match e {
        // the tenancy names fields after the HTTP patch; name the request's
        Error::InvalidArgument { ref field, .. } if field.starts_with("quotas") => {
            status_renamed(e, "quotas", "set_quotas")
        }
        Error::InvalidArgument { ref field, .. } if field.starts_with("labels") => {
            status_renamed(e, "labels", "set_labels")
        }
        e => status(&e),
    })
}

/// `Admin.DeleteTenant`.
pub(crate) async fn delete_tenant(
    tenancy: &Tenancy,
    r: pb::DeleteTenantRequest,
) -> Result<pb::DeleteTenantResponse, Status> {
    let id = tenant_id("id", &r.id)?;
    let TenantDeleted { tokens_revoked, resources_stopped, resources_left } =
        tenancy.delete_tenant(&id).await.map_err(|e| status(&e))?;
    Ok(pb::DeleteTenantResponse {
        id: id.to_string(),
        tokens_revoked: count(tokens_revoked),
        resources_stopped: count(resources_stopped),
        resources_left: count(resources_left),
    })
}

/// `expires_in` in the human form the tenancy parses (`"3600s"`, `"1s 500000000ns"`).
fn lifetime(d: prost_types::Duration) -> Result<String, Status> {
    let d =
        Duration::try_from(d).map_err(|_| invalid("expires_in", "must be a positive duration"))?;
    Ok(match d.subsec_nanos() {
        0 => format!("{}s", d.as_secs()),
        nanos => format!("{}s {nanos}ns", d.as_secs()),
    })
}

/// `Admin.CreateToken`.
pub(crate) async fn create_token(
    tenancy: &Tenancy,
    r: pb::CreateTokenRequest,
) -> Result<pb::CreateTokenResponse, Status> {
    let tenant = tenant_id("tenant_id", &r.tenant_id)?;
    let new = NewToken { name: r.name, expires_in: r.expires_in.map(lifetime).transpose()? };
    let IssuedToken { info, bearer } =
        tenancy.issue_token(&tenant, new).await.map_err(|e| status(&e))?;
    Ok(pb::CreateTokenResponse { token: Some(token_to_pb(info)), secret: bearer })
}

/// `Admin.ListTokens`.
pub(crate) async fn list_tokens(
    tenancy: &Tenancy,
    r: pb::ListTokensRequest,
) -> Result<pb::ListTokensResponse, Status> {
    let tenant = tenant_id("tenant_id", &r.tenant_id)?;
    let tokens = tenancy.tokens(&tenant).await.map_err(|e| status(&e))?;
    Ok(pb::ListTokensResponse { tokens: tokens.into_iter().map(token_to_pb).collect() })
}

/// `Admin.RevokeToken`.
pub(crate) async fn revoke_token(
    tenancy: &Tenancy,
    r: pb::RevokeTokenRequest,
) -> Result<pb::RevokeTokenResponse, Status> {
    let id = token_id("id", &r.id)?;
    let tenant = tenancy.revoke_token(&id).await.map_err(|e| status(&e))?;
    Ok(pb::RevokeTokenResponse { id: id.to_string(), tenant_id: tenant.to_string() })
}
