//! Routes of the public listener.

use actix_web::{HttpResponse, web};
use steward_core::Registry;
use steward_socket::SocketService;
use steward_tenancy::Tenancy;

use crate::ApiError;

/// Configures the public listener's routes: `GET /healthz`, `GET /v1/whoami` (tenant token;
/// the HTTP twin of gRPC `WhoAmI`) and `GET /v1/ws` (the WebSocket front door, served by
/// `sockets`; see `docs/protocol/websocket.md`) and `GET /v1/rtc` (WebRTC signaling, a peer
/// per socket; `docs/protocol/rtc.md`). Unknown paths get a JSON 404.
pub fn public_app_config(
    tenancy: Tenancy,
    sockets: SocketService,
    registry: Registry,
    streams: steward_streams::Streams,
    rtc: steward_rtc::Rtc,
) -> impl Fn(&mut web::ServiceConfig) + Send + Sync + Clone + 'static {
    move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(web::Data::new(tenancy.clone()))
            .app_data(web::Data::new(sockets.clone()))
            .app_data(web::Data::new(registry.clone()))
            .app_data(web::Data::new(streams.clone()))
            .app_data(web::Data::new(rtc.clone()))
            .route("/v1/ws", web::get().to(crate::ws::upgrade))
            .route("/v1/rtc", web::get().to(crate::ws::upgrade_rtc))
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
