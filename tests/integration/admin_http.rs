//! The admin HTTP API, through a real HTTP client.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::support::{Steward, WITHIN, eventually};

#[tokio::test]
async fn health_readiness_and_auth() {
    let s = Steward::start(&[]).await;
    let r = s.http.get(format!("{}/healthz", s.admin)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = s.http.get(format!("{}/readyz", s.admin)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = s.http.get(format!("{}/healthz", s.public)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    for auth in [None, Some("Bearer wrong"), Some("Basic abc")] {
        let mut req = s.http.get(format!("{}/v1/resources", s.admin));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthenticated");
    }
}

#[tokio::test]
async fn lists_its_own_supervised_services() {
    let s = Steward::start(&[]).await;
    let services = s.resources("?kind=service").await;
    let mut names: Vec<&str> = services.iter().map(|r| r["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "browsers",
            "consumers",
            "grpc",
            "grpc-admin",
            "http-admin",
            "http-public",
            "job-hub",
            "messaging",
            "peers",
            "producers",
            "rooms",
            "sessions",
            "socket-monitor",
            "sockets",
            "steward",
            "streams",
            "token-purge",
            "watchdog"
        ]
    );
    assert!(services.iter().all(|r| r["state"] == "running"));
    let root = services.iter().find(|r| r["name"] == "steward").unwrap();
    assert_eq!(root["is_supervisor"], true);
    assert!(services.iter().filter(|r| r["name"] != "steward").all(|r| r["parent"] == root["id"]));

    let tree: Value = s.get("/v1/supervisors").send().await.unwrap().json().await.unwrap();
    assert_eq!(tree[0]["name"], "steward");
    // the eight supervisors (seven dynamic, and `browsers`) are listed under `supervisors`, the
    // other nine services as members
    assert_eq!(tree[0]["members"].as_array().unwrap().len(), 9);
    let subs: Vec<&str> = tree[0]["supervisors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        subs,
        ["sockets", "producers", "consumers", "browsers", "sessions", "streams", "peers", "rooms"]
    );

    let one: Value = s
        .get(&format!("/v1/resources/{}", root["id"].as_str().unwrap()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["name"], "steward");

    let page: Value = s.get("/v1/resources?limit=2").send().await.unwrap().json().await.unwrap();
    assert_eq!(page["resources"].as_array().unwrap().len(), 2);
    let next = page["next"].as_str().expect("a next page");
    let rest: Value = s
        .get(&format!("/v1/resources?limit=20&after={next}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        rest["resources"].as_array().unwrap().len(),
        16,
        "18 resources, 2 on the first page"
    );
    assert!(rest["next"].is_null());
}

#[tokio::test]
async fn bad_input_gets_a_typed_400_and_disturbs_nothing() {
    let s = Steward::start(&[]).await;
    let cases: Vec<(Method, &str, Option<&str>, StatusCode, &str)> = vec![
        (Method::POST, "/v1/shutdown", Some("{not json"), StatusCode::BAD_REQUEST, "bad_request"),
        (
            Method::POST,
            "/v1/shutdown",
            Some("{\"unknown\":1}"),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (Method::GET, "/v1/resources?kind=teapot", None, StatusCode::BAD_REQUEST, "bad_request"),
        (Method::GET, "/v1/resources?state=zombie", None, StatusCode::BAD_REQUEST, "bad_request"),
        (Method::GET, "/v1/resources?limit=0", None, StatusCode::BAD_REQUEST, "bad_request"),
        (Method::GET, "/v1/resources?limit=abc", None, StatusCode::BAD_REQUEST, "bad_request"),
        (Method::GET, "/v1/resources?bogus=1", None, StatusCode::BAD_REQUEST, "bad_request"),
        (Method::GET, "/v1/resources/not-an-id", None, StatusCode::BAD_REQUEST, "bad_request"),
        (Method::GET, "/v1/resources/00000000000000ff", None, StatusCode::NOT_FOUND, "not_found"),
        (
            Method::DELETE,
            "/v1/resources/00000000000000ff",
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (Method::GET, "/v1/nowhere", None, StatusCode::NOT_FOUND, "not_found"),
    ];
    for (method, path, body, status, code) in cases {
        let mut req = s.request(method.clone(), path);
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_owned());
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), status, "{method} {path}");
        let json: Value =
            r.json().await.unwrap_or_else(|e| panic!("{method} {path}: body is not JSON: {e}"));
        assert_eq!(json["error"]["code"], code, "{method} {path}: {json}");
        assert!(json["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // nothing else was disturbed
    assert_eq!(s.resources("?kind=service").await.len(), 18);
    let r = s.http.get(format!("{}/readyz", s.admin)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn supervisors_cannot_be_deleted_through_the_api() {
    let s = Steward::start(&[]).await;
    let root = s.service_id("steward").await;
    let r = s.request(Method::DELETE, &format!("/v1/resources/{root}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "is_supervisor");
}

#[tokio::test]
async fn a_resource_stopped_through_the_api_disappears_from_the_registry() {
    let s = Steward::start(&[]).await;
    let id = s.service_id("http-public").await;
    let r = s.request(Method::DELETE, &format!("/v1/resources/{id}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let gone = eventually(WITHIN, || async {
        !s.resources("?kind=service").await.iter().any(|r| r["id"] == id.as_str())
    })
    .await;
    assert!(gone, "the public listener left the registry");
    // recently stopped entries stay visible, with their exit reason
    let stopped = s.resources("?state=stopped").await;
    let entry = stopped.iter().find(|r| r["id"] == id.as_str()).expect("in the stopped list");
    assert_eq!(entry["last_exit_reason"], "shutdown");
    // it really stopped serving, and it was not restarted
    assert!(s.http.get(format!("{}/healthz", s.public)).send().await.is_err());
    assert_eq!(s.resources("?kind=service").await.len(), 17);
}

#[tokio::test]
async fn a_resource_restarted_through_the_api_is_rebuilt() {
    let s = Steward::start(&[]).await;
    let id = s.service_id("watchdog").await;
    let r = s.request(Method::POST, &format!("/v1/resources/{id}/restart")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let restarted = eventually(WITHIN, || async {
        let r: Value =
            s.get(&format!("/v1/resources/{id}")).send().await.unwrap().json().await.unwrap();
        r["restarts"] == 1 && r["state"] == "running"
    })
    .await;
    assert!(restarted);
}

#[tokio::test]
async fn metrics_watchdog_and_openapi() {
    let s = Steward::start(&[
        ("STEWARD__WATCHDOG__INTERVAL", "50ms"),
        ("STEWARD__WATCHDOG__BASELINE_SAMPLES", "2"),
    ])
    .await;
    let text =
        s.http.get(format!("{}/metrics", s.admin)).send().await.unwrap().text().await.unwrap();
    for needle in [
        "steward_resources_live{kind=\"service\"} 18",
        "steward_resources_started_total{kind=\"service\"} 18",
        "steward_restart_backoff_pending{kind=\"session\"} 0",
        "steward_resources_killed_total{kind=\"session\"} 0",
        "steward_process_resident_memory_bytes",
        "steward_process_open_fds",
        "steward_potential_leak{kind=\"socket\"} 0",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    let baseline = eventually(WITHIN, || async {
        let w: Value = s.get("/v1/watchdog").send().await.unwrap().json().await.unwrap();
        w["samples"].as_u64().unwrap_or(0) >= 3
            && w["values"].as_array().unwrap().iter().all(|v| !v["baseline"].is_null())
    })
    .await;
    assert!(baseline, "the watchdog took its baseline");
    let w: Value = s.get("/v1/watchdog").send().await.unwrap().json().await.unwrap();
    assert_eq!(w["orphans"], 0);
    assert!(w["values"].as_array().unwrap().iter().all(|v| v["potential_leak"] == false));

    let doc: Value =
        s.http.get(format!("{}/openapi.json", s.admin)).send().await.unwrap().json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/resources",
        "/v1/resources/{id}",
        "/v1/resources/{id}/restart",
        "/v1/supervisors",
        "/v1/watchdog",
        "/v1/shutdown",
        "/readyz",
        "/metrics",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} documented");
    }
}
