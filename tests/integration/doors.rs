//! The front doors as a hostile client and a careless operator would try them (issue 15): the
//! admin API only on the admin side, failed authentications limited per IP, unknown tokens
//! cheap, the per-IP cap before the token, secrets kept out of logs, config errors and
//! world-readable files, and the gRPC connection limits.

use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use steward_proto::admin::v1::ListResourcesRequest;
use steward_proto::admin::v1::admin_client::AdminClient;
use steward_proto::jobs::v1::jobs_client::JobsClient;
use steward_proto::jobs::v1::{CreateJobRequest, WatchJobRequest};
use steward_proto::tenancy::v1::WhoAmIRequest;
use steward_proto::tenancy::v1::tenancy_client::TenancyClient;
use tonic::Code;
use tonic::metadata::MetadataValue;

use crate::sockets::{connect, connect_with, metric, refusal};
use crate::support::{Steward, TOKEN, WITHIN, eventually, run};

fn bearer<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert("authorization", MetadataValue::try_from(format!("Bearer {token}")).unwrap());
    req
}

#[tokio::test]
async fn failed_admin_authentications_are_limited_per_ip_on_both_admin_listeners() {
    let s = Steward::start(&[
        ("STEWARD__ADMIN__MAX_AUTH_FAILURES_PER_IP", "5"),
        ("STEWARD__ADMIN__AUTH_FAILURE_WINDOW", "3s"),
    ])
    .await;
    let wrong = "wrong-admin-token-wrong-admin-token";
    for _ in 0..3 {
        let r = s.http.get(format!("{}/v1/resources", s.admin)).bearer_auth(wrong).send().await;
        assert_eq!(r.unwrap().status(), StatusCode::UNAUTHORIZED);
    }
    // the admin gRPC listener shares the count
    let mut admin = AdminClient::connect(s.grpc_admin.clone()).await.unwrap();
    for _ in 0..2 {
        let err = admin.list_resources(bearer(ListResourcesRequest::default(), wrong)).await;
        assert_eq!(err.unwrap_err().code(), Code::Unauthenticated);
    }
    // over the limit: refused at once, even with the right token, until the window ends
    let r = s.get("/v1/resources").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().get("retry-after").is_some());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_failed_authentications");
    let err = admin.list_resources(bearer(ListResourcesRequest::default(), TOKEN)).await;
    let err = err.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().starts_with("too_many_failed_authentications"), "{err:?}");
    assert!(err.metadata().get("retry-after").is_some());
    assert_eq!(metric(&s, "steward_auth_failures_total{credential=\"admin\"}").await, 5.0);
    assert!(metric(&s, "steward_auth_throttled_total{credential=\"admin\"}").await >= 2.0);
    // tenant doors are not affected by the admin table
    let r = s.http.get(format!("{}/healthz", s.public)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // the window ends: the right token works again
    let back = eventually(Duration::from_secs(10), || async {
        s.get("/v1/resources").send().await.is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
    assert!(back, "the admin API never answered again after the window");
}

#[tokio::test]
async fn unknown_tokens_are_cheap_and_failing_ips_are_throttled_on_the_tenant_doors() {
    let s = Steward::start(&[("STEWARD__TENANCY__MAX_AUTH_FAILURES_PER_IP", "4")]).await;
    let (_, good) = s.tenant_with_token("acme", None).await;
    let mut tenancy = TenancyClient::connect(s.grpc.clone()).await.unwrap();
    tenancy.who_am_i(bearer(WhoAmIRequest {}, &good)).await.expect("a good token works");
    // well-formed tokens with an id the store does not know: the negative cache keeps them
    let unknown = format!("stw_{}_{}", "e".repeat(16), "a".repeat(64));
    for _ in 0..2 {
        let err = tenancy.who_am_i(bearer(WhoAmIRequest {}, &unknown)).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
    }
    assert!(metric(&s, "steward_auth_unknown_tokens_cached").await >= 1.0);
    // two more failures on HTTP make four from this IP: the next request is throttled on
    // every tenant door, the good token included
    for _ in 0..2 {
        let r = s.http.get(format!("{}/v1/whoami", s.public)).bearer_auth(&unknown).send().await;
        assert_eq!(r.unwrap().status(), StatusCode::UNAUTHORIZED);
    }
    let err = tenancy.who_am_i(bearer(WhoAmIRequest {}, &good)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    let r = s.http.get(format!("{}/v1/whoami", s.public)).bearer_auth(&good).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let (status, retry, body) = refusal(connect_with(&s, Some(&good), &[]).await);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("too_many_failed_authentications"))
    );
    assert!(retry.is_some());
    assert_eq!(metric(&s, "steward_auth_failures_total{credential=\"tenant\"}").await, 4.0);
    assert!(metric(&s, "steward_auth_throttled_total{credential=\"tenant\"}").await >= 3.0);
    // the admin side is a separate table
    assert_eq!(s.get("/v1/tenants").send().await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn the_websocket_door_checks_the_per_ip_cap_before_the_token() {
    let s = Steward::start(&[("STEWARD__SOCKET__MAX_PER_IP", "1")]).await;
    let (_, good) = s.tenant_with_token("acme", None).await;
    let _held = connect(&s, &good).await;
    let (status, _, body) = refusal(connect_with(&s, Some("stw_garbage"), &[]).await);
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("too_many_connections")));
    assert_eq!(metric(&s, "steward_auth_failures_total{credential=\"tenant\"}").await, 0.0);
}

/// The mode bits of `path`.
fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn a_generated_admin_token_is_written_to_a_private_file_and_never_logged() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("state");
    let dir_str = dir.to_str().unwrap();
    let s = Steward::start(&[("STEWARD__ADMIN__TOKEN", ""), ("STEWARD__STORE__DATA_DIR", dir_str)])
        .await;
    let path = dir.join("admin-token");
    let token = std::fs::read_to_string(&path).expect("the generated admin token's file");
    assert_eq!(token.len(), 64, "256 bits, hex");
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("steward.db")), 0o600);
    let r = s.http.get(format!("{}/v1/resources", s.admin)).bearer_auth(&token).send().await;
    assert_eq!(r.unwrap().status(), StatusCode::OK);
    // a tenant's secret never reaches the log either
    let (_, bearer_token) = s.tenant_with_token_as(&token, "acme").await;
    let said = s.find_message("no admin token configured").expect("the log says where");
    assert_eq!(said["path"], path.to_str().unwrap());
    // the whole run, shutdown included
    let mut s = s;
    s.signal(nix::sys::signal::Signal::SIGTERM);
    let status = s.wait_exit(Duration::from_secs(30)).await.expect("exited within the grace");
    assert!(status.success(), "{status:?}");
    let log = s.dump();
    assert!(s.find_message("shutdown complete").is_some(), "the whole run's log:\n{log}");
    assert!(!log.contains(&token), "the admin token is in the log");
    let secret = bearer_token.rsplit('_').next().unwrap();
    assert!(!log.contains(secret), "a tenant secret is in the log");
}

impl Steward {
    /// Creates tenant `id` and a token with admin token `admin`; (token id, bearer).
    async fn tenant_with_token_as(&self, admin: &str, id: &str) -> (String, String) {
        let url = format!("{}/v1/tenants", self.admin);
        let r = self.http.post(url).bearer_auth(admin).json(&serde_json::json!({"id": id})).send();
        assert_eq!(r.await.unwrap().status(), StatusCode::CREATED);
        let url = format!("{}/v1/tenants/{id}/tokens", self.admin);
        let r = self.http.post(url).bearer_auth(admin).json(&serde_json::json!({"name": "ci"}));
        let token: Value = r.send().await.unwrap().json().await.unwrap();
        (token["id"].as_str().unwrap().to_owned(), token["token"].as_str().unwrap().to_owned())
    }
}

#[tokio::test]
async fn a_short_admin_token_is_refused_at_start_without_being_echoed() {
    let value = "tooshort-but-secret";
    let out = run(&["serve"], &[("STEWARD__ADMIN__TOKEN", value)]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("admin.token") && stderr.contains("at least 32"), "{stderr}");
    assert!(!stderr.contains(value), "{stderr}");
    // a wrong type on a secret key: figment would quote the value
    let out = run(&["serve"], &[("STEWARD__ADMIN__TOKEN", "[\"s3cr3t-in-a-list\"]")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let named = stderr.to_ascii_lowercase().contains("admin.token");
    assert!(!out.status.success() && named, "{stderr}");
    assert!(!stderr.contains("s3cr3t-in-a-list"), "{stderr}");
}

#[tokio::test]
async fn grpc_connections_are_capped_per_ip_and_streams_per_connection() {
    // [grpc] max_concurrent_streams stays at its default, 100
    let s = Steward::start(&[("STEWARD__GRPC__MAX_CONNECTIONS_PER_IP", "3")]).await;
    let (_, token) = s.tenant_with_token("acme", None).await;
    // the tenant's own quota on watch streams (100 by default) must not be what refuses here
    let r = s
        .request(reqwest::Method::PATCH, "/v1/tenants/acme")
        .json(&serde_json::json!({ "quotas": { "watch_streams": 1000 } }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let endpoint = tonic::transport::Endpoint::from_shared(s.grpc.clone()).unwrap();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(endpoint.connect().await.expect("within the per-IP cap"));
    }
    // the fourth connection is closed at accept: no call gets through it
    let fourth = async {
        let channel = endpoint.connect().await?;
        TenancyClient::new(channel)
            .who_am_i(bearer(WhoAmIRequest {}, &token))
            .await
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error>)?;
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    assert!(tokio::time::timeout(WITHIN, fourth).await.unwrap().is_err(), "a fourth connection");
    assert!(metric(&s, "steward_grpc_connections_refused_total{listener=\"grpc\"}").await >= 1.0);
    // the first three still work, and a place freed is a place taken again
    let mut client = TenancyClient::new(held.pop().unwrap());
    client.who_am_i(bearer(WhoAmIRequest {}, &token)).await.expect("a held connection works");
    drop(client);
    let again = eventually(WITHIN, || async {
        match endpoint.connect().await {
            Ok(c) => TenancyClient::new(c).who_am_i(bearer(WhoAmIRequest {}, &token)).await.is_ok(),
            Err(_) => false,
        }
    })
    .await;
    assert!(again, "a freed place was never given to a new connection");

    // streams: 100 on one connection, the 101st does not start while they are open
    let channel = held.pop().unwrap();
    let mut jobs = JobsClient::new(channel.clone());
    let job = jobs
        .create_job(bearer(CreateJobRequest { kind: "k".into(), ..Default::default() }, &token))
        .await
        .unwrap()
        .into_inner()
        .id;
    let mut open = Vec::new();
    for _ in 0..100 {
        let watch = WatchJobRequest { id: job.clone() };
        open.push(jobs.watch_job(bearer(watch, &token)).await.expect("within the stream cap"));
    }
    let mut extra = bearer(WatchJobRequest { id: job.clone() }, &token);
    extra.set_timeout(Duration::from_millis(500));
    let began = Instant::now();
    let refused = tokio::time::timeout(Duration::from_secs(2), jobs.watch_job(extra)).await;
    assert!(
        refused.is_err() || refused.as_ref().is_ok_and(Result::is_err),
        "a 101st stream opened on one connection"
    );
    assert!(began.elapsed() >= Duration::from_millis(400));
    drop(open.pop());
    let watch = WatchJobRequest { id: job.clone() };
    let opened = tokio::time::timeout(WITHIN, jobs.watch_job(bearer(watch, &token))).await;
    assert!(opened.is_ok_and(|r| r.is_ok()), "a freed stream slot was never reused");
}
