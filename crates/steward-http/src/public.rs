//! Routes of the public listener.

use actix_web::{HttpResponse, web};
use steward_tenancy::Tenancy;

use crate::ApiError;

/// Configures the public listener's routes: `GET /healthz`, and `GET /v1/whoami` (tenant token;
/// the HTTP twin of gRPC `WhoAmI`). The WebSocket and WebRTC signaling endpoints come with their
/// resource kinds. Unknown paths get a JSON 404.
pub fn public_app_config(
    tenancy: Tenancy,
) -> impl Fn(&mut web::ServiceConfig) + Send + Sync + Clone + 'static {
    move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(web::Data::new(tenancy.clone()))
            .route(
                "/healthz",
                web::get()
                    .to(|| async { HttpResponse::Ok().json(serde_json::json!({"status": "ok"})) }),
            )
            .route("/v1/whoami", web::get().to(crate::tenants::whoami))
            .default_service(web::to(|| async {
                Err::<HttpResponse, _>(ApiError::not_found("no such route"))
            }));
    }
}
