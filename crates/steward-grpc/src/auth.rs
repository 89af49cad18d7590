//! The admin token's check on gRPC (constant time, one answer for every refusal).

use std::sync::Arc;

use tonic::{Request, Status};

/// Checks `authorization: Bearer <token>` metadata in constant time; anything else is
/// `UNAUTHENTICATED` with no hint why.
#[derive(Clone)]
pub struct BearerInterceptor {
    token: Arc<str>,
}

impl BearerInterceptor {
    /// An interceptor accepting `token`.
    #[must_use]
    pub fn new(token: Arc<str>) -> Self {
        Self { token }
    }
}

impl tonic::service::Interceptor for BearerInterceptor {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
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
            _ => Err(Status::unauthenticated("missing or invalid bearer token")),
        }
    }
}
