//! Routes of the public listener.

use actix_web::{HttpResponse, web};

use crate::ApiError;

/// Configures the public listener's routes: `GET /healthz` for now (the WebSocket and WebRTC
/// signaling endpoints come with their resource kinds). Unknown paths get a JSON 404.
pub fn public_app_config(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/healthz",
        web::get().to(|| async { HttpResponse::Ok().json(serde_json::json!({"status": "ok"})) }),
    )
    .default_service(web::to(|| async {
        Err::<HttpResponse, _>(ApiError::not_found("no such route"))
    }));
}
