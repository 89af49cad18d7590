//! No panic escapes its owner, on the real binary: a tenant whose registered remote CDP
//! endpoint answers `Target.createTarget` with a target it never announced makes chromiumoxide
//! 0.9.1's handler panic ("Created target not present", `src/handler/mod.rs:208`). The panic
//! stays with the tenant's browser actor: that tenant's `CreateSession` gets a typed error, the
//! process keeps serving, and another tenant's session on the local Chromium keeps working.

use std::net::SocketAddr;

use futures_util::{SinkExt as _, StreamExt as _};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tonic::Code;

use crate::browser::{
    PageServer, browser_tenant, browsers, client, create, create_ok, evaluate, navigate, series,
    viewport,
};
use crate::support::{Steward, WITHIN, eventually};

/// The target id the poisoned endpoint names in its `Target.createTarget` answers, and never
/// announces with `Target.targetCreated`.
const UNANNOUNCED: &str = "UNANNOUNCED-TARGET";

/// A WebSocket CDP endpoint on loopback that answers just enough for chromiumoxide to connect
/// and for Steward to create a browser context, then poisons `Target.createTarget`. Stops on
/// drop.
struct PoisonedCdp {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl PoisonedCdp {
    // a test-side server, not resource code: its tasks belong to the test and go with it
    #[allow(clippy::disallowed_methods)]
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the CDP endpoint");
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else { return };
                    while let Some(Ok(frame)) = ws.next().await {
                        let Message::Text(text) = frame else { continue };
                        let Ok(command) = serde_json::from_str::<Value>(&text) else { continue };
                        let mut answer =
                            json!({ "id": command["id"], "result": result_of(&command) });
                        if let Some(session) = command.get("sessionId") {
                            answer["sessionId"] = session.clone();
                        }
                        if ws.send(Message::text(answer.to_string())).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { addr, task }
    }

    fn endpoint(&self) -> String {
        format!("ws://{}/devtools/browser/poisoned", self.addr)
    }
}

impl Drop for PoisonedCdp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The answer to one CDP command.
fn result_of(command: &Value) -> Value {
    match command["method"].as_str().unwrap_or_default() {
        "Browser.getVersion" => json!({
            "protocolVersion": "1.3",
            "product": "Poisoned/1.0",
            "revision": "0",
            "userAgent": "poisoned",
            "jsVersion": "0"
        }),
        "Target.createBrowserContext" => json!({ "browserContextId": "POISONED-CONTEXT" }),
        "Target.createTarget" => json!({ "targetId": UNANNOUNCED }),
        "Target.getBrowserContexts" => json!({ "browserContextIds": [] }),
        "Target.getTargets" => json!({ "targetInfos": [] }),
        _ => json!({}),
    }
}

/// Creates tenant `id` whose browser is the remote CDP `endpoint`; its bearer token.
async fn remote_tenant(s: &Steward, id: &str, endpoint: &str) -> String {
    let r = s.create_tenant(json!({ "id": id, "browser_endpoint": endpoint })).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap());
    let r = s
        .request(Method::POST, &format!("/v1/tenants/{id}/tokens"))
        .json(&json!({ "name": "ci" }))
        .send()
        .await
        .unwrap();
    r.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_endpoint_that_makes_the_cdp_client_panic_fails_only_its_tenant() {
    let pages = PageServer::start().await;
    let poisoned = PoisonedCdp::start().await;
    let mut s = Steward::start(&[]).await;
    let good = browser_tenant(&s, "good", &["127.0.0.1"]).await;
    let evil = remote_tenant(&s, "evil", &poisoned.endpoint()).await;
    let mut c = client(&s).await;

    // another tenant's session on the local Chromium, before and after
    let session = create_ok(&mut c, &good, 640, 480).await;
    navigate(&mut c, &good, &session.id, &pages.url("/before")).await.expect("Navigate");

    for attempt in 1..=2 {
        let status = create(&mut c, &evil, viewport(640, 480))
            .await
            .expect_err("a session on the poisoned endpoint cannot open");
        eprintln!("CreateSession #{attempt} on the poisoned endpoint: {status:?}");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(status.message().starts_with("browser_unavailable"), "{status:?}");
    }

    // the process lives and serves everyone else
    assert!(s.is_running(), "steward exited:\n{}", s.dump());
    assert!(s.find_message("panic outside supervision; exiting").is_none());
    navigate(&mut c, &good, &session.id, &pages.url("/after")).await.expect("Navigate after");
    let title = evaluate(&mut c, &good, &session.id, "document.title").await.unwrap();
    assert!(title.contains("Steward browser test"), "{title}");

    // the panic was caught at the remote browser's boundary and reported there
    let caught = s.find_message("panic caught at the owner's boundary").unwrap_or_else(|| {
        panic!("no caught panic in the log:\n{}", s.dump());
    });
    assert!(caught["panic"].as_str().unwrap().contains("Created target not present"), "{caught}");
    assert_eq!(caught["span"]["resource.kind"], "browser", "logged in its owner's span: {caught}");
    assert_eq!(caught["span"]["tenant"], "evil", "{caught}");
    let stopped: Vec<Value> = s
        .resources("?kind=browser&state=stopped")
        .await
        .into_iter()
        .filter(|b| b["name"] == "remote:evil")
        .collect();
    assert!(!stopped.is_empty(), "the remote browser is in the stopped list");
    assert!(stopped.iter().all(|b| b["last_exit_reason"] == "panic"), "{stopped:?}");

    // nothing of the poisoned tenant is left; the good tenant's browser is the only one
    let clean = eventually(WITHIN, || async {
        s.resources("?kind=session&tenant=evil").await.is_empty()
            && browsers(&s).await.iter().all(|b| b["origin"] == "local")
    })
    .await;
    assert!(clean, "left behind: {:?}", browsers(&s).await);
    let reserved = "steward_tenant_quota_reserved{tenant=\"evil\",quota=\"sessions\"}";
    assert_eq!(series(&s, reserved).await, 0.0, "the session's quota slot is released");
}
