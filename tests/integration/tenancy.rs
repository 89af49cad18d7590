//! Tenants, tokens and quotas on the real binary: the admin API creates them, the public
//! listener (`GET /v1/whoami`) and gRPC (`steward.tenancy.v1.Tenancy/WhoAmI`) authenticate with
//! them. Store-dependent scenarios run on SQLite and on PostgreSQL.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use nix::sys::signal::Signal;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use steward_tenancy::testing::PgTestDb;

use steward_proto::admin::v1 as admin;
use steward_proto::admin::v1::admin_client::AdminClient;
use steward_proto::tenancy::v1::tenancy_client::TenancyClient;
use steward_proto::tenancy::v1::{WhoAmIRequest, WhoAmIResponse};
use tonic::Code;
use tonic::metadata::MetadataValue;

use crate::support::{Steward, TOKEN, WITHIN, eventually};

fn bearer<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert("authorization", MetadataValue::try_from(format!("Bearer {token}")).unwrap());
    req
}

/// Which store a scenario runs on; keeps the database alive for the scenario.
enum Store {
    Sqlite(tempfile::TempDir),
    Postgres(PgTestDb),
}

impl Store {
    async fn new(postgres: bool) -> Self {
        if postgres {
            Self::Postgres(PgTestDb::create().await)
        } else {
            Self::Sqlite(tempfile::tempdir().unwrap())
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        match self {
            Self::Sqlite(dir) => {
                vec![("STEWARD__STORE__DATA_DIR", dir.path().display().to_string())]
            }
            Self::Postgres(db) => vec![("STEWARD__STORE__URL", db.url().to_owned())],
        }
    }

    async fn start(&self) -> Steward {
        let env = self.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Steward::start(&env).await
    }
}

impl Steward {
    /// `POST /v1/tenants` with `body`; the response.
    pub(crate) async fn create_tenant(&self, body: Value) -> reqwest::Response {
        self.request(Method::POST, "/v1/tenants").json(&body).send().await.unwrap()
    }

    /// Creates tenant `id` and a token for it; returns the bearer string.
    pub(crate) async fn tenant_with_token(
        &self,
        id: &str,
        expires_in: Option<&str>,
    ) -> (String, String) {
        let r = self.create_tenant(json!({"id": id})).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap());
        let mut body = json!({"name": "ci"});
        if let Some(e) = expires_in {
            body["expires_in"] = json!(e);
        }
        let r = self
            .request(Method::POST, &format!("/v1/tenants/{id}/tokens"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let token: Value = r.json().await.unwrap();
        (token["id"].as_str().unwrap().to_owned(), token["token"].as_str().unwrap().to_owned())
    }

    /// `steward.tenancy.v1.Tenancy/WhoAmI` with `token`.
    async fn grpc_whoami(&self, token: &str) -> Result<WhoAmIResponse, tonic::Status> {
        let mut client = TenancyClient::connect(self.grpc.clone()).await.unwrap();
        client.who_am_i(bearer(WhoAmIRequest {}, token)).await.map(tonic::Response::into_inner)
    }

    /// `GET /v1/whoami` on the public listener with `bearer`.
    async fn whoami(&self, bearer: &str) -> reqwest::Response {
        self.http
            .get(format!("{}/v1/whoami", self.public))
            .bearer_auth(bearer)
            .send()
            .await
            .unwrap()
    }
}

async fn error_of(r: reqwest::Response) -> (StatusCode, String, String) {
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    let e = &body["error"];
    (status, e["code"].as_str().unwrap().to_owned(), e["message"].as_str().unwrap().to_owned())
}

async fn concurrent_registrations(postgres: bool) {
    let store = Store::new(postgres).await;
    let s = store.start().await;
    let attempts = (0..100).map(|_| s.create_tenant(json!({"id": "acme"})));
    let statuses: Vec<StatusCode> =
        join_all(attempts).await.iter().map(reqwest::Response::status).collect();
    let created = statuses.iter().filter(|c| **c == StatusCode::CREATED).count();
    let conflicts = statuses.iter().filter(|c| **c == StatusCode::CONFLICT).count();
    assert_eq!((created, conflicts), (1, 99), "{statuses:?}");
    let list: Value = s.get("/v1/tenants").send().await.unwrap().json().await.unwrap();
    assert_eq!(list["tenants"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn concurrent_registrations_of_one_id_yield_exactly_one_201_on_sqlite() {
    concurrent_registrations(false).await;
}

#[tokio::test]
async fn concurrent_registrations_of_one_id_yield_exactly_one_201_on_postgres() {
    concurrent_registrations(true).await;
}

#[tokio::test]
async fn a_token_works_until_revoked_and_its_secret_is_never_shown_again() {
    let s = Steward::start(&[]).await;
    let (token_id, bearer) = s.tenant_with_token("acme", None).await;
    let r = s.whoami(&bearer).await;
    assert_eq!(r.status(), StatusCode::OK);
    let me: Value = r.json().await.unwrap();
    assert_eq!(me["tenant"], "acme");
    assert_eq!(me["token"]["id"], token_id.as_str());
    assert_eq!(me["quotas"]["sessions"], 5);
    let me = s.grpc_whoami(&bearer).await.unwrap();
    assert_eq!((me.tenant_id.as_str(), me.token_id.as_str()), ("acme", token_id.as_str()));
    assert_eq!(me.quotas.unwrap().sessions, 5);
    assert_eq!(me.usage.get("socket"), Some(&0));

    let secret = bearer.rsplit('_').next().unwrap().to_owned();
    for path in ["/v1/tenants", "/v1/tenants/acme", "/v1/tenants/acme/tokens"] {
        let body = s.get(path).send().await.unwrap().text().await.unwrap();
        assert!(!body.contains(&secret), "{path} shows the secret: {body}");
    }

    let r = s.request(Method::DELETE, &format!("/v1/tokens/{token_id}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let revoked = Instant::now();
    let refused = eventually(Duration::from_secs(1), || async {
        s.whoami(&bearer).await.status() == StatusCode::UNAUTHORIZED
    })
    .await;
    assert!(refused, "revoked token still accepted after {:?}", revoked.elapsed());
    let refused = eventually(Duration::from_secs(1), || async {
        s.grpc_whoami(&bearer).await.is_err_and(|e| e.code() == Code::Unauthenticated)
    })
    .await;
    assert!(refused, "revoked token still accepted over gRPC after {:?}", revoked.elapsed());
    let r = s.request(Method::DELETE, &format!("/v1/tokens/{token_id}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(!s.dump().contains(&secret), "the secret reached the log");
}

#[tokio::test]
async fn an_expired_token_is_refused_and_purged() {
    let s = Steward::start(&[]).await;
    let (token_id, bearer) = s.tenant_with_token("acme", Some("1s")).await;
    assert_eq!(s.whoami(&bearer).await.status(), StatusCode::OK);
    let refused = eventually(WITHIN, || async {
        s.whoami(&bearer).await.status() == StatusCode::UNAUTHORIZED
    })
    .await;
    assert!(refused);
    let purged = eventually(WITHIN, || async {
        let list: Value =
            s.get("/v1/tenants/acme/tokens").send().await.unwrap().json().await.unwrap();
        list["tokens"].as_array().unwrap().is_empty()
    })
    .await;
    assert!(purged, "the expired token is still listed");
    // the listing may stop showing it (expired) a moment before the purge's log line is read
    let logged =
        eventually(WITHIN, || async { s.find_message("expired token purged").is_some() }).await;
    assert!(logged, "purge not logged:\n{}", s.dump());
    let line = s.find_message("expired token purged").expect("purge logged");
    assert_eq!(line["token_id"], token_id.as_str());
}

async fn survives_restart(postgres: bool) {
    let store = Store::new(postgres).await;
    let mut s = store.start().await;
    let (_, bearer) = s.tenant_with_token("acme", None).await;
    assert_eq!(s.whoami(&bearer).await.status(), StatusCode::OK);
    s.signal(Signal::SIGTERM);
    let status = s.wait_exit(Duration::from_secs(40)).await.expect("exited");
    assert!(status.success(), "{status:?}");

    let s = store.start().await;
    let r = s.whoami(&bearer).await;
    assert_eq!(r.status(), StatusCode::OK, "token lost across the restart");
    let me: Value = r.json().await.unwrap();
    assert_eq!(me["tenant"], "acme");
    assert_eq!(s.grpc_whoami(&bearer).await.unwrap().tenant_id, "acme");
}

#[tokio::test]
async fn tenants_and_tokens_survive_sigterm_and_restart_on_sqlite() {
    survives_restart(false).await;
}

#[tokio::test]
async fn tenants_and_tokens_survive_sigterm_and_restart_on_postgres() {
    survives_restart(true).await;
}

#[tokio::test]
async fn bad_input_is_a_400_naming_the_field_and_changes_nothing() {
    let s = Steward::start(&[]).await;
    let raw = |body: &'static str| {
        s.request(Method::POST, "/v1/tenants")
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let (status, code, msg) = error_of(raw("{\"id\": ").await.unwrap()).await;
    assert_eq!((status, code.as_str()), (StatusCode::BAD_REQUEST, "bad_request"));
    assert!(msg.contains("invalid JSON body"), "{msg}");

    for (body, field) in [
        (json!({"id": "acme", "colour": "red"}), "colour"),
        (json!({"id": "a".repeat(64)}), "`id`"),
        (json!({"id": "Not A Slug"}), "`id`"),
        (json!({"id": 7}), "`id`"),
        (json!({"id": "acme", "quotas": {"sockets": "many"}}), "quotas.sockets"),
        (json!({"id": "acme", "quotas": {"sockets": -1}}), "quotas.sockets"),
        (json!({"id": "acme", "quotas": {"sockets": 2_000_000}}), "quotas.sockets"),
        (json!({"id": "acme", "quotas": {"socket": 1}}), "socket"),
        (json!({"id": "acme", "labels": {"Bad Key": "v"}}), "labels"),
        (json!({"id": "acme", "browser_endpoint": "file:///etc/passwd"}), "browser_endpoint"),
        (json!({"id": "acme", "display_name": ""}), "display_name"),
    ] {
        let r = s.create_tenant(body.clone()).await;
        let (status, code, msg) = error_of(r).await;
        assert_eq!((status, code.as_str()), (StatusCode::BAD_REQUEST, "bad_request"), "{body}");
        assert!(msg.contains(field), "{body}: {msg:?} does not name {field}");
    }
    let r = s.request(Method::POST, "/v1/tenants").body("{\"id\":\"acme\"}").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let big = json!({"id": "acme", "display_name": "x".repeat(70 * 1024)});
    assert_eq!(s.create_tenant(big).await.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // token and patch bodies too
    assert_eq!(s.create_tenant(json!({"id": "acme"})).await.status(), StatusCode::CREATED);
    for (method, path, body, field) in [
        (
            Method::POST,
            "/v1/tenants/acme/tokens",
            json!({"name": "ci", "expires_in": "soon"}),
            "expires_in",
        ),
        (Method::POST, "/v1/tenants/acme/tokens", json!({"name": 5}), "name"),
        (Method::PATCH, "/v1/tenants/acme", json!({"quotas": {"peers": true}}), "quotas.peers"),
        (Method::PATCH, "/v1/tenants/acme", json!({"id": "other"}), "id"),
        (Method::GET, "/v1/tenants?limit=0", Value::Null, "limit"),
        (Method::DELETE, "/v1/tokens/xyz", Value::Null, "token_id"),
    ] {
        let mut req = s.request(method.clone(), path);
        if !body.is_null() {
            req = req.json(&body);
        }
        let (status, _, msg) = error_of(req.send().await.unwrap()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {path} {body}");
        assert!(msg.contains(field), "{method} {path}: {msg:?} does not name {field}");
    }

    // nothing else changed: one tenant, unchanged, no tokens, the server healthy
    let list: Value = s.get("/v1/tenants").send().await.unwrap().json().await.unwrap();
    let tenants = list["tenants"].as_array().unwrap();
    assert_eq!(tenants.len(), 1);
    assert_eq!(tenants[0]["quotas"]["peers"], 50);
    let tokens: Value =
        s.get("/v1/tenants/acme/tokens").send().await.unwrap().json().await.unwrap();
    assert!(tokens["tokens"].as_array().unwrap().is_empty());
    assert!(s.wait_readyz(StatusCode::OK).await);
}

#[tokio::test]
async fn wrong_or_missing_tokens_get_the_same_401_with_no_hint() {
    let s = Steward::start(&[]).await;
    let (_, bearer) = s.tenant_with_token("acme", None).await;
    let mut wrong_secret = bearer.clone();
    wrong_secret.replace_range(bearer.len() - 8.., "00000000");
    let unknown_id = format!("stw_{}_{}", "0".repeat(16), "a".repeat(64));
    let mut answers = Vec::new();
    for presented in [Some(wrong_secret.as_str()), Some(unknown_id.as_str()), Some("garbage"), None]
    {
        let mut req = s.http.get(format!("{}/v1/whoami", s.public));
        if let Some(t) = presented {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.header_value("www-authenticate").as_deref(), Some("Bearer"));
        answers.push(error_of(r).await);
    }
    // `?token=` is only for WebSocket upgrades
    let r = s.http.get(format!("{}/v1/whoami?token={bearer}", s.public)).send().await.unwrap();
    answers.push(error_of(r).await);
    assert!(answers.iter().all(|a| a == &answers[0]), "{answers:?}");
    assert_eq!(answers[0].0, StatusCode::UNAUTHORIZED);
    assert_eq!(answers[0].1, "unauthenticated");
    // a tenant token is not an admin token
    let r =
        s.http.get(format!("{}/v1/tenants", s.admin)).bearer_auth(&bearer).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

trait HeaderValue {
    fn header_value(&self, name: &str) -> Option<String>;
}

impl HeaderValue for reqwest::Response {
    fn header_value(&self, name: &str) -> Option<String> {
        self.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
    }
}

#[tokio::test]
async fn tenants_are_read_patched_and_deleted_with_their_tokens() {
    let s = Steward::start(&[]).await;
    let (_, bearer) = s.tenant_with_token("acme", None).await;
    let r = s
        .request(Method::PATCH, "/v1/tenants/acme")
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"display_name":"Acme Corp","quotas":{"sockets":3},"labels":{"tier":"gold"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let t: Value = s.get("/v1/tenants/acme").send().await.unwrap().json().await.unwrap();
    assert_eq!(t["display_name"], "Acme Corp");
    assert_eq!(t["quotas"]["sockets"], 3);
    assert_eq!(t["quota_overrides"], json!({"sockets": 3}));
    assert_eq!(t["labels"]["tier"], "gold");
    assert_eq!(t["usage"]["socket"], 0);
    // the new quota reaches the token's context at once on this node
    let me: Value = s.whoami(&bearer).await.json().await.unwrap();
    assert_eq!(me["quotas"]["sockets"], 3);

    let metrics = s.http.get(format!("{}/metrics", s.admin)).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.contains(r#"steward_tenant_quota_reserved{tenant="acme",quota="sockets"} 0"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"steward_tenant_admissions_refused_total{tenant="acme",quota="sockets"} 0"#
        )
    );

    let r = s.request(Method::DELETE, "/v1/tenants/acme").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let d: Value = r.json().await.unwrap();
    assert_eq!(
        d,
        json!({
            "id": "acme",
            "tokens_revoked": 1,
            "resources_stopped": 0,
            "resources_left": 0,
            "jobs_removed": 0,
            "topics_removed": 0
        })
    );
    assert_eq!(s.whoami(&bearer).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(s.get("/v1/tenants/acme").send().await.unwrap().status(), StatusCode::NOT_FOUND);
    assert_eq!(
        s.request(Method::DELETE, "/v1/tenants/acme").send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert!(s.resources("?tenant=acme").await.is_empty());
}

#[tokio::test]
async fn the_openapi_document_describes_tenants_and_tokens() {
    let s = Steward::start(&[]).await;
    let doc: Value =
        s.http.get(format!("{}/openapi.json", s.admin)).send().await.unwrap().json().await.unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for p in ["/v1/tenants", "/v1/tenants/{id}", "/v1/tenants/{id}/tokens", "/v1/tokens/{token_id}"]
    {
        assert!(paths.contains_key(p), "{p} missing");
    }
    for m in ["post", "get"] {
        assert!(paths["/v1/tenants"].get(m).is_some());
    }
    for m in ["get", "patch", "delete"] {
        assert!(paths["/v1/tenants/{id}"].get(m).is_some());
    }
    assert!(doc["components"]["schemas"].get("NewTenant").is_some());
}

#[tokio::test]
async fn the_grpc_admin_mirror_manages_tenants_and_tokens() {
    let s = Steward::start(&[]).await;
    let mut client = AdminClient::connect(s.grpc_admin.clone()).await.unwrap();
    let create =
        admin::CreateTenantRequest { id: "acme".into(), ..admin::CreateTenantRequest::default() };
    let tenant = client.create_tenant(bearer(create.clone(), TOKEN)).await.unwrap().into_inner();
    assert_eq!(tenant.id, "acme");
    let again = client.create_tenant(bearer(create, TOKEN)).await.unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists);
    let bad = admin::CreateTenantRequest { id: "x".repeat(64), ..Default::default() };
    let err = client.create_tenant(bearer(bad, TOKEN)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("id"), "{}", err.message());

    let issued = client
        .create_token(bearer(
            admin::CreateTokenRequest {
                tenant_id: "acme".into(),
                name: "ci".into(),
                expires_in: None,
            },
            TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    let token = issued.token.unwrap();
    // the token made over gRPC works over HTTP too
    assert_eq!(s.whoami(&issued.secret).await.status(), StatusCode::OK);
    let listed = client
        .list_tokens(bearer(admin::ListTokensRequest { tenant_id: "acme".into() }, TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.tokens.len(), 1);
    assert!(!format!("{listed:?}").contains(&issued.secret));
    client
        .revoke_token(bearer(admin::RevokeTokenRequest { id: token.id.clone() }, TOKEN))
        .await
        .unwrap();
    let err = s.grpc_whoami(&issued.secret).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    // the admin mirror needs the admin token, not a tenant's
    let err = client
        .list_tenants(bearer(admin::ListTenantsRequest::default(), &issued.secret))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn steward_whoami_checks_a_token_over_grpc() {
    let s = Steward::start(&[]).await;
    let (token_id, bearer) = s.tenant_with_token("acme", None).await;
    let run = |token: String| {
        let grpc = s.grpc.clone();
        async move {
            tokio::process::Command::from(crate::support::command(
                &["whoami", "--grpc", &grpc],
                &[("STEWARD_TOKEN", &token)],
            ))
            .output()
            .await
            .unwrap()
        }
    };
    let out = run(bearer.clone()).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("tenant:  acme"), "{stdout}");
    assert!(stdout.contains(&token_id), "{stdout}");
    s.request(Method::DELETE, &format!("/v1/tokens/{token_id}")).send().await.unwrap();
    let out = run(bearer).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("refused: unauthenticated"));
}

#[tokio::test]
async fn a_store_outage_is_a_503_that_tells_the_caller_nothing_and_harms_nothing_else() {
    let store = Store::new(true).await;
    let s = store.start().await;
    let (_, used) = s.tenant_with_token("acme", None).await;
    let (_, unused) = s.tenant_with_token("other", None).await;
    assert_eq!(s.whoami(&used).await.status(), StatusCode::OK); // now cached on this node
    let Store::Postgres(db) = &store else { unreachable!() };
    db.drop_database().await;

    // a token that must be looked up: 503 without the database's error text, on both doors
    let (status, code, message) = error_of(s.whoami(&unused).await).await;
    assert_eq!((status, code.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"));
    assert_eq!(message, "the tenant store is unavailable; retry");
    let err = s.grpc_whoami(&unused).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(!err.message().contains("database"), "{}", err.message());
    // the admin API says what failed (it is the operator's)
    let r = s.get("/v1/tenants").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    // nothing else is disturbed: liveness, readiness, resources
    assert!(s.wait_readyz(StatusCode::OK).await);
    assert_eq!(s.resources("?kind=service").await.len(), 18);
}
