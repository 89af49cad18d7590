//! The admin token's check on gRPC (constant time, one answer for every refusal, failures
//! limited per client IP).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use steward_tenancy::AuthFailures;
use tonic::{Request, Status};

use crate::error::status_from_tenancy;

/// Checks `authorization: Bearer <token>` metadata in constant time; anything else is
/// `UNAUTHENTICATED` with no hint why, and counts against the caller's IP in `failures`
/// (`[admin] max_auth_failures_per_ip`): beyond the limit every call from that IP is
/// `RESOURCE_EXHAUSTED` "too_many_failed_authentications" with `retry-after`, token or not.
#[derive(Clone)]
pub struct BearerInterceptor {
    token: Arc<str>,
    failures: AuthFailures,
}

impl BearerInterceptor {
    /// An interceptor accepting `token`, counting failures in `failures`.
    #[must_use]
    pub fn new(token: Arc<str>, failures: AuthFailures) -> Self {
        Self { token, failures }
    }
}

impl tonic::service::Interceptor for BearerInterceptor {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let ip = client_ip(&req);
        if let Err(retry_after) = self.failures.check(ip) {
            return Err(status_from_tenancy(&steward_tenancy::Error::Throttled { retry_after }));
        }
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match given {
            Some(given)
                if constant_time_eq::constant_time_eq(given.as_bytes(), self.token.as_bytes()) =>
            {
                Ok(req)
            }
            _ => {
                self.failures.record(ip);
                Err(Status::unauthenticated("missing or invalid bearer token"))
            }
        }
    }
}

/// The TCP peer of a request (the gRPC listeners take no proxy headers); loopback when tonic
/// did not record one (an in-process test server).
pub(crate) fn client_ip<T>(req: &Request<T>) -> IpAddr {
    req.remote_addr().map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |a| a.ip())
}
