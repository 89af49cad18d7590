//! A short client of Steward's browser API, `steward.browser.v1.Browser`
//! (`docs/protocol/browser.md`): it opens a session (an incognito browser context on Steward's
//! Chromium), loads a URL, saves a PNG screenshot, prints the page's title and HTTP status, and
//! closes the session.
//!
//! Run it against a running Steward with one of a tenant's API tokens:
//!
//! ```sh
//! STEWARD_TOKEN=stw_… cargo run --example browser -- https://example.com shot.png
//! ```
//!
//! The URL defaults to a small `data:` page, the file to `screenshot.png`. `STEWARD_GRPC` points
//! it at another gRPC listener (default `http://127.0.0.1:50051`). A loopback or private address
//! is refused (`PERMISSION_DENIED`, `url_not_allowed`) unless the tenant's `browser_allow` list
//! permits it. It exits 0 once the session is closed, 1 on any error.
#![allow(clippy::print_stdout)]

use std::error::Error;

use steward_proto::browser::v1::browser_client::BrowserClient;
use steward_proto::browser::v1::{
    CloseSessionRequest, CreateSessionRequest, ImageFormat, NavigateRequest, ScreenshotRequest,
    Viewport,
};
use tonic::Request;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

const DEFAULT_URL: &str = "data:text/html,<h1>Hello from Steward</h1>";

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let token = std::env::var("STEWARD_TOKEN").map_err(|_| "set STEWARD_TOKEN to an API token")?;
    let grpc = std::env::var("STEWARD_GRPC").unwrap_or_else(|_| "http://127.0.0.1:50051".into());
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| DEFAULT_URL.into());
    let path = args.next().unwrap_or_else(|| "screenshot.png".into());

    // every call carries `authorization: Bearer <token>`
    let bearer: MetadataValue<_> = format!("Bearer {token}").parse()?;
    let channel = Channel::from_shared(grpc)?.connect().await?;
    let mut client = BrowserClient::with_interceptor(channel, move |mut req: Request<()>| {
        req.metadata_mut().insert("authorization", bearer.clone());
        Ok(req)
    })
    // a capture may be up to `[browser] max_result` (16 MiB), above tonic's 4 MiB default
    .max_decoding_message_size(16 * 1024 * 1024);

    // 1. open a session: a fresh incognito context with one page, 1280×720
    let viewport = Viewport { width: 1280, height: 720, device_scale_factor: 1.0 };
    let request = CreateSessionRequest { viewport: Some(viewport), ..Default::default() };
    let session = client.create_session(request).await.map_err(|s| refused(&s))?.into_inner();
    println!("session  {}", session.id);

    // 2. navigate, screenshot; the session is closed whatever happens (else it would stay until
    //    its idle TTL, 5 min by default, and count against the tenant's `sessions` quota)
    let id = session.id.clone();
    let result = async {
        let request = NavigateRequest { session_id: id.clone(), url, ..Default::default() };
        let page = client.navigate(request).await.map_err(|s| refused(&s))?.into_inner();
        println!("loaded   {} (status {}, title {:?})", page.url, page.status, page.title);

        let request = ScreenshotRequest {
            session_id: id.clone(),
            format: ImageFormat::Png.into(),
            ..Default::default()
        };
        let shot = client.screenshot(request).await.map_err(|s| refused(&s))?.into_inner();
        std::fs::write(&path, &shot.data)?;
        println!("saved    {path} ({} bytes, {})", shot.data.len(), shot.content_type);
        Ok::<_, Box<dyn Error>>(())
    }
    .await;

    // 3. close it: its page, then its browser context
    client.close_session(CloseSessionRequest { session_id: id }).await.map_err(|s| refused(&s))?;
    println!("closed");
    result
}

/// A refused call as its gRPC code and Steward's message, which starts with a snake_case code
/// (`PermissionDenied: url_not_allowed: …`; `docs/protocol/browser.md` lists them).
fn refused(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}
