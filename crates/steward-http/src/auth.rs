//! [`Tenant`]: the actix-web extractor that authenticates a tenant's API token.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use steward_tenancy::{Tenancy, TenantContext};

use crate::ApiError;

/// The authenticated caller of a public endpoint: `Authorization: Bearer <token>`, or for a
/// WebSocket upgrade only (browsers cannot set headers on one) `?token=<token>`. The token is
/// resolved through [`Tenancy::authenticate`] (cached for at most 1 s; revocations on this node
/// apply at once). Needs `web::Data<Tenancy>` in the app.
///
/// Refusals are 401 `unauthenticated` with the same message whatever was wrong, so a caller
/// learns nothing about which tenants or tokens exist; 503 `store_unavailable` (details logged,
/// not sent) when the store cannot be asked.
/// Query strings never reach the access log (see the listener), so `?token=` is not logged.
#[derive(Debug, Clone)]
pub struct Tenant(pub TenantContext);

impl FromRequest for Tenant {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let ip = req.peer_addr().map_or(std::net::Ipv4Addr::LOCALHOST.into(), |a| a.ip());
        Box::pin(Self::authenticate(req, ip))
    }
}

impl Tenant {
    /// Authenticates `req`'s token for client `ip` (the TCP peer, or the client behind trusted
    /// proxies), through [`Tenancy::authenticate_from`]: while `ip` is over `[tenancy]
    /// max_auth_failures_per_ip` the answer is 429 `too_many_failed_authentications` without
    /// looking at the token.
    ///
    /// # Errors
    /// 401 `unauthenticated`, 429 `too_many_failed_authentications`, 503 `store_unavailable`.
    pub fn authenticate(
        req: &HttpRequest,
        ip: std::net::IpAddr,
    ) -> impl Future<Output = Result<Self, ApiError>> + 'static {
        let tenancy = req.app_data::<web::Data<Tenancy>>().cloned();
        let token = bearer(req);
        async move {
            let Some(tenancy) = tenancy else { return Err(ApiError::unauthenticated()) };
            tenancy.authenticate_from(ip, token.as_deref()).await.map(Tenant).map_err(refusal)
        }
    }
}

/// What an unauthenticated caller is told: store details are logged, not sent (as on gRPC).
fn refusal(e: steward_tenancy::Error) -> ApiError {
    match e {
        steward_tenancy::Error::Unauthenticated => ApiError::unauthenticated(),
        e @ steward_tenancy::Error::Throttled { .. } => ApiError::from(e),
        steward_tenancy::Error::Store(_) | steward_tenancy::Error::Migrate(_) => {
            tracing::warn!(error = %e, "tenant store unavailable while authenticating a token");
            ApiError::new(
                actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the tenant store is unavailable; retry",
            )
            .retry_after(1)
        }
        other => {
            tracing::error!(error = %other, "authenticating a token failed");
            ApiError::new(
                actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "authenticating the token failed",
            )
        }
    }
}

/// The presented token: the `Authorization: Bearer` header, else `token` from the query
/// string of a WebSocket upgrade request.
fn bearer(req: &HttpRequest) -> Option<String> {
    if let Some(value) = req.headers().get(header::AUTHORIZATION) {
        // the scheme is case-insensitive (RFC 9110 §11.1), as on the gRPC door
        let (scheme, token) = value.to_str().ok()?.trim().split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned());
    }
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !upgrade {
        return None;
    }
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
}
