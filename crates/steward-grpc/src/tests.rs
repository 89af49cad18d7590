//! A real tonic server on a loopback port chosen by the OS, serving the [`TenantAuth`]-wrapped
//! [`TenancyService`] and the admin-token-guarded [`AdminService`] over a real [`Tenancy`]
//! (SQLite under a temporary directory), driven by the generated clients.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use steward_config::Config;
use steward_core::{Registry, ResourceKind};
use steward_proto::admin::v1 as admin_pb;
use steward_proto::admin::v1::admin_client::AdminClient;
use steward_proto::admin::v1::admin_server::AdminServer;
use steward_proto::tenancy::v1 as tenancy_pb;
use steward_proto::tenancy::v1::tenancy_client::TenancyClient;
use steward_proto::tenancy::v1::tenancy_server::TenancyServer;
use steward_tenancy::{NewTenant, NewToken, QuotaKind, Tenancy, TenantId};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tower::Layer as _;

use crate::{
    AdminService, BearerInterceptor, TenancyService, TenantAuth, TenantAuthLayer, status_from_rtc,
    status_from_tenancy,
};

const ADMIN_TOKEN: &str = "admin-secret";
const UNAUTHENTICATED: &str = "unauthenticated: missing or invalid bearer token";

/// A tenancy over a fresh SQLite store and a server in front of it; both go with it.
struct Fixture {
    tenancy: Tenancy,
    addr: SocketAddr,
    server: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Fixture {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::defaults();
        let mut store = config.store;
        store.data_dir = dir.path().join("data");
        let registry = Registry::with_defaults();
        let tenancy =
            Tenancy::open(&store, &config.tenancy, registry.clone(), Duration::from_secs(5))
                .await
                .unwrap();

        let tenant_api = TenantAuthLayer::new(tenancy.clone())
            .layer(TenancyServer::new(TenancyService::new(tenancy.clone())));
        let admin = AdminServer::with_interceptor(
            AdminService::new(registry, CancellationToken::new(), tenancy.clone()),
            BearerInterceptor::new(
                ADMIN_TOKEN.into(),
                steward_tenancy::AuthFailures::new("admin", 1000, Duration::from_secs(60)),
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tonic::transport::Server::builder()
            .add_service(tenant_api)
            .add_service(admin)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        #[allow(clippy::disallowed_methods)] // test scaffolding: aborted when the fixture drops
        let server = tokio::spawn(async move { server.await.unwrap() });
        Self { tenancy, addr, server, _dir: dir }
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr)).unwrap().connect().await.unwrap()
    }

    async fn tenancy_client(&self) -> TenancyClient<Channel> {
        TenancyClient::new(self.channel().await)
    }

    async fn admin_client(&self) -> AdminClient<Channel> {
        AdminClient::new(self.channel().await)
    }

    /// Creates tenant `id` and returns a bearer token of it.
    async fn tenant_with_token(&self, id: &str) -> String {
        let new = NewTenant {
            id: id.into(),
            display_name: Some(format!("{id} inc")),
            quotas: steward_tenancy::QuotaOverrides { sockets: Some(7), ..Default::default() },
            browser_endpoint: None,
            browser_allow: Vec::new(),
            labels: [("team".to_owned(), "core".to_owned())].into(),
        };
        self.tenancy.create_tenant(new).await.unwrap();
        let tenant = TenantId::new(id).unwrap();
        let new = NewToken { name: "ci".into(), expires_in: None };
        self.tenancy.issue_token(&tenant, new).await.unwrap().bearer
    }
}

/// `msg` with `authorization: <value>` metadata.
fn with_auth<T>(msg: T, value: &str) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut().insert("authorization", value.parse().unwrap());
    req
}

fn admin<T>(msg: T) -> Request<T> {
    with_auth(msg, &format!("Bearer {ADMIN_TOKEN}"))
}

async fn who_am_i(
    client: &mut TenancyClient<Channel>,
    authorization: Option<&str>,
) -> Result<tenancy_pb::WhoAmIResponse, Status> {
    let req = match authorization {
        Some(value) => with_auth(tenancy_pb::WhoAmIRequest {}, value),
        None => Request::new(tenancy_pb::WhoAmIRequest {}),
    };
    client.who_am_i(req).await.map(tonic::Response::into_inner)
}

fn assert_unauthenticated(result: Result<tenancy_pb::WhoAmIResponse, Status>, case: &str) {
    let status = result.expect_err(case);
    assert_eq!(status.code(), Code::Unauthenticated, "{case}: {status:?}");
    assert_eq!(status.message(), UNAUTHENTICATED, "{case}");
}

fn assert_invalid(status: &Status, field: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let prefix = format!("bad_request: invalid `{field}`: ");
    assert!(status.message().starts_with(&prefix), "{status:?} does not start with {prefix:?}");
}

#[test]
fn tenant_auth_keeps_the_service_name() {
    assert_eq!(
        <TenantAuth<TenancyServer<TenancyService>> as NamedService>::NAME,
        "steward.tenancy.v1.Tenancy"
    );
}

#[tokio::test]
async fn who_am_i_with_a_valid_token() {
    let fx = Fixture::start().await;
    let bearer = fx.tenant_with_token("acme").await;
    let mut client = fx.tenancy_client().await;

    for authorization in [format!("Bearer {bearer}"), format!("bearer  {bearer} ")] {
        let me = who_am_i(&mut client, Some(&authorization)).await.unwrap();
        assert_eq!(me.tenant_id, "acme");
        assert_eq!(me.display_name, "acme inc");
        assert_eq!(me.token_name, "ci");
        assert_eq!(bearer.split('_').nth(1), Some(me.token_id.as_str()));
        assert_eq!(me.token_expires_at, None);
        assert_eq!(me.labels.get("team").map(String::as_str), Some("core"));

        let defaults = Config::defaults().tenancy.default_quotas;
        let quotas = me.quotas.expect("quotas");
        assert_eq!(quotas.sockets, 7, "the tenant's override");
        assert_eq!(quotas.sessions, u64::from(defaults.sessions));
        assert_eq!(quotas.session_rate, u64::from(defaults.session_rate));
        assert_eq!(quotas.peers, u64::from(defaults.peers));
        assert_eq!(quotas.stored_bytes, defaults.stored_bytes.as_u64());

        assert_eq!(me.usage.len(), ResourceKind::COUNT, "every kind: {:?}", me.usage);
        assert!(me.usage.values().all(|&n| n == 0), "{:?}", me.usage);
        assert_eq!(me.usage.get("socket"), Some(&0));
    }
}

#[tokio::test]
async fn who_am_i_without_a_valid_token_is_unauthenticated() {
    let fx = Fixture::start().await;
    let bearer = fx.tenant_with_token("acme").await;
    let mut client = fx.tenancy_client().await;

    assert_unauthenticated(who_am_i(&mut client, None).await, "no authorization");
    assert_unauthenticated(who_am_i(&mut client, Some("Bearer")).await, "no token");
    assert_unauthenticated(who_am_i(&mut client, Some(&format!("Basic {bearer}"))).await, "basic");
    assert_unauthenticated(who_am_i(&mut client, Some("Bearer stw_nope")).await, "malformed");
    assert_unauthenticated(
        who_am_i(&mut client, Some(&format!("Bearer {ADMIN_TOKEN}"))).await,
        "the admin token",
    );

    // the right id with a wrong secret
    let last = bearer.chars().last().unwrap();
    let wrong = format!("{}{}", &bearer[..bearer.len() - 1], if last == '0' { '1' } else { '0' });
    assert_unauthenticated(
        who_am_i(&mut client, Some(&format!("Bearer {wrong}"))).await,
        "wrong secret",
    );

    // a well-formed token of an id that was never issued
    let unknown = format!("stw_{}_{}", "0".repeat(16), "0".repeat(64));
    assert_eq!(unknown.len(), bearer.len());
    assert_unauthenticated(
        who_am_i(&mut client, Some(&format!("Bearer {unknown}"))).await,
        "unknown token",
    );

    // works, then revoked through the admin API: refused at once
    who_am_i(&mut client, Some(&format!("Bearer {bearer}"))).await.unwrap();
    let token_id = bearer.split('_').nth(1).unwrap().to_owned();
    let revoked = fx
        .admin_client()
        .await
        .revoke_token(admin(admin_pb::RevokeTokenRequest { id: token_id.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((revoked.id.as_str(), revoked.tenant_id.as_str()), (token_id.as_str(), "acme"));
    assert_unauthenticated(
        who_am_i(&mut client, Some(&format!("Bearer {bearer}"))).await,
        "revoked token",
    );
}

#[tokio::test]
async fn tokens_of_a_deleted_tenant_and_expired_tokens_are_unauthenticated() {
    let fx = Fixture::start().await;
    let bearer = fx.tenant_with_token("doomed").await;
    let mut client = fx.tenancy_client().await;
    let mut admin_client = fx.admin_client().await;
    let auth = format!("Bearer {bearer}");
    who_am_i(&mut client, Some(&auth)).await.unwrap();

    // a token with a 1 ms lifetime, through the admin API's Duration
    let short = admin_client
        .create_token(admin(admin_pb::CreateTokenRequest {
            tenant_id: "doomed".into(),
            name: "short".into(),
            expires_in: Some(prost_types::Duration { seconds: 0, nanos: 1_000_000 }),
        }))
        .await
        .unwrap()
        .into_inner();
    let short_auth = format!("Bearer {}", short.secret);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    loop {
        match who_am_i(&mut client, Some(&short_auth)).await {
            Ok(_) => assert!(Instant::now() < deadline, "the 1 ms token never expired"),
            result => {
                assert_unauthenticated(result, "expired token");
                break;
            }
        }
        tick.tick().await;
    }

    let deleted = admin_client
        .delete_tenant(admin(admin_pb::DeleteTenantRequest { id: "doomed".into() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.tokens_revoked, 2);
    assert_eq!((deleted.resources_stopped, deleted.resources_left), (0, 0));
    assert_unauthenticated(who_am_i(&mut client, Some(&auth)).await, "deleted tenant");
}

#[tokio::test]
async fn admin_tenant_and_token_calls() {
    let fx = Fixture::start().await;
    let mut c = fx.admin_client().await;

    // the admin token guards the tenant calls too
    let refused = c
        .get_tenant(Request::new(admin_pb::GetTenantRequest { id: "a".into() }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);

    let created = c
        .create_tenant(admin(admin_pb::CreateTenantRequest {
            id: "acme".into(),
            display_name: None,
            quotas: Some(admin_pb::QuotaOverrides { sessions: Some(2), ..Default::default() }),
            browser_endpoint: Some("ws://browser.acme.test:9222".into()),
            browser_allow: Vec::new(),
            labels: [("team".to_owned(), "core".to_owned())].into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.id, "acme");
    assert_eq!(created.display_name, "acme", "the id when unset");
    assert_eq!(created.quotas.unwrap().sessions, 2);
    assert_eq!(created.quota_overrides.unwrap().sessions, Some(2));
    assert_eq!(created.browser_endpoint.as_deref(), Some("ws://browser.acme.test:9222"));
    assert_eq!(created.usage.len(), ResourceKind::COUNT);

    let again = c
        .create_tenant(admin(admin_pb::CreateTenantRequest {
            id: "acme".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists);
    assert!(again.message().starts_with("already_exists: "), "{again:?}");

    let bad = c
        .create_tenant(admin(admin_pb::CreateTenantRequest {
            id: "Acme".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_invalid(&bad, "id");
    let bad = c
        .create_tenant(admin(admin_pb::CreateTenantRequest {
            id: "big".into(),
            quotas: Some(admin_pb::QuotaOverrides {
                sockets: Some(2_000_000),
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_invalid(&bad, "quotas.sockets");

    // update: merge semantics
    let updated = c
        .update_tenant(admin(admin_pb::UpdateTenantRequest {
            id: "acme".into(),
            display_name: Some("Acme".into()),
            set_quotas: Some(admin_pb::QuotaOverrides { peers: Some(3), ..Default::default() }),
            reset_quotas: vec!["sessions".into()],
            clear_browser_endpoint: true,
            set_labels: [("tier".to_owned(), "gold".to_owned())].into(),
            remove_labels: vec!["team".into()],
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let defaults = Config::defaults().tenancy.default_quotas;
    assert_eq!(updated.display_name, "Acme");
    assert_eq!(
        updated.quotas.unwrap().sessions,
        u64::from(defaults.sessions),
        "reset to the default"
    );
    assert_eq!(updated.quotas.unwrap().peers, 3);
    assert_eq!(
        updated.quota_overrides.unwrap(),
        admin_pb::QuotaOverrides { peers: Some(3), ..Default::default() }
    );
    assert_eq!(updated.browser_endpoint, None);
    assert_eq!(updated.labels, HashMap::from([("tier".to_owned(), "gold".to_owned())]));

    let unchanged = c
        .update_tenant(admin(admin_pb::UpdateTenantRequest {
            id: "acme".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((unchanged.display_name, unchanged.labels), (updated.display_name, updated.labels));

    for (req, field) in [
        (
            admin_pb::UpdateTenantRequest {
                reset_quotas: vec!["bogus".into()],
                ..Default::default()
            },
            "reset_quotas",
        ),
        (
            admin_pb::UpdateTenantRequest {
                set_quotas: Some(admin_pb::QuotaOverrides { peers: Some(1), ..Default::default() }),
                reset_quotas: vec!["peers".into()],
                ..Default::default()
            },
            "reset_quotas",
        ),
        (
            admin_pb::UpdateTenantRequest {
                set_quotas: Some(admin_pb::QuotaOverrides {
                    peers: Some(2_000_000),
                    ..Default::default()
                }),
                ..Default::default()
            },
            "set_quotas.peers",
        ),
        (
            admin_pb::UpdateTenantRequest {
                set_labels: [("Bad Key".to_owned(), "v".to_owned())].into(),
                ..Default::default()
            },
            "set_labels",
        ),
        (
            admin_pb::UpdateTenantRequest {
                set_labels: [("k".to_owned(), "v".to_owned())].into(),
                remove_labels: vec!["k".into()],
                ..Default::default()
            },
            "remove_labels",
        ),
        (
            admin_pb::UpdateTenantRequest {
                browser_endpoint: Some("ws://b.test".into()),
                clear_browser_endpoint: true,
                ..Default::default()
            },
            "clear_browser_endpoint",
        ),
        (
            admin_pb::UpdateTenantRequest {
                browser_endpoint: Some("ftp://b.test".into()),
                ..Default::default()
            },
            "browser_endpoint",
        ),
    ] {
        let req = admin_pb::UpdateTenantRequest { id: "acme".into(), ..req };
        let status = c.update_tenant(admin(req)).await.unwrap_err();
        assert_invalid(&status, field);
    }

    let missing =
        c.get_tenant(admin(admin_pb::GetTenantRequest { id: "nobody".into() })).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(missing.message(), "not_found: tenant nobody not found");

    // list: pages of 2 over 5 tenants, the token is the last id of a page
    for id in ["b", "c", "d", "e"] {
        c.create_tenant(admin(admin_pb::CreateTenantRequest {
            id: id.into(),
            ..Default::default()
        }))
        .await
        .unwrap();
    }
    let mut ids = Vec::new();
    let mut page_token = String::new();
    let mut pages = 0;
    loop {
        let page = c
            .list_tenants(admin(admin_pb::ListTenantsRequest { page_size: 2, page_token }))
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        ids.extend(page.tenants.into_iter().map(|t| t.id));
        if page.next_page_token.is_empty() {
            break;
        }
        assert_eq!(Some(&page.next_page_token), ids.last());
        page_token = page.next_page_token;
    }
    assert_eq!(ids, ["acme", "b", "c", "d", "e"]);
    assert_eq!(pages, 3);
    let all =
        c.list_tenants(admin(admin_pb::ListTenantsRequest::default())).await.unwrap().into_inner();
    assert_eq!((all.tenants.len(), all.next_page_token.as_str()), (5, ""));
    let bad = c
        .list_tenants(admin(admin_pb::ListTenantsRequest { page_size: 1001, ..Default::default() }))
        .await
        .unwrap_err();
    assert_invalid(&bad, "page_size");
    let bad = c
        .list_tenants(admin(admin_pb::ListTenantsRequest {
            page_token: "-x".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_invalid(&bad, "page_token");

    // tokens
    let issued = c
        .create_token(admin(admin_pb::CreateTokenRequest {
            tenant_id: "acme".into(),
            name: "deploy".into(),
            expires_in: Some(prost_types::Duration { seconds: 3600, nanos: 0 }),
        }))
        .await
        .unwrap()
        .into_inner();
    let token = issued.token.unwrap();
    assert!(issued.secret.starts_with(&format!("stw_{}_", token.id)), "{}", issued.secret);
    assert_eq!((token.tenant_id.as_str(), token.name.as_str()), ("acme", "deploy"));
    let lifetime = token.expires_at.unwrap().seconds - token.created_at.unwrap().seconds;
    assert!((3599..=3601).contains(&lifetime), "{lifetime}");

    let me = fx
        .tenancy_client()
        .await
        .who_am_i(with_auth(tenancy_pb::WhoAmIRequest {}, &format!("Bearer {}", issued.secret)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((me.tenant_id.as_str(), me.token_id.as_str()), ("acme", token.id.as_str()));
    assert!(me.token_expires_at.is_some());
    assert_eq!(me.quotas.unwrap().peers, 3);

    let listed = c
        .list_tokens(admin(admin_pb::ListTokensRequest { tenant_id: "acme".into() }))
        .await
        .unwrap()
        .into_inner();
    // the store keeps milliseconds; compare what survives it
    let [listed] = listed.tokens.as_slice() else { panic!("one token: {listed:?}") };
    assert_eq!(
        (&listed.id, &listed.tenant_id, &listed.name),
        (&token.id, &token.tenant_id, &token.name)
    );
    assert_eq!(listed.created_at.unwrap().seconds, token.created_at.unwrap().seconds);
    assert_eq!(listed.expires_at.unwrap().seconds, token.expires_at.unwrap().seconds);

    for (req, field) in [
        (
            admin_pb::CreateTokenRequest { tenant_id: "ACME".into(), ..Default::default() },
            "tenant_id",
        ),
        (admin_pb::CreateTokenRequest { tenant_id: "acme".into(), ..Default::default() }, "name"),
        (
            admin_pb::CreateTokenRequest {
                tenant_id: "acme".into(),
                name: "n".into(),
                expires_in: Some(prost_types::Duration { seconds: -1, nanos: 0 }),
            },
            "expires_in",
        ),
        (
            admin_pb::CreateTokenRequest {
                tenant_id: "acme".into(),
                name: "n".into(),
                expires_in: Some(prost_types::Duration::default()),
            },
            "expires_in",
        ),
    ] {
        let status = c.create_token(admin(req)).await.unwrap_err();
        assert_invalid(&status, field);
    }
    let bad = c
        .list_tokens(admin(admin_pb::ListTokensRequest { tenant_id: String::new() }))
        .await
        .unwrap_err();
    assert_invalid(&bad, "tenant_id");
    let bad =
        c.revoke_token(admin(admin_pb::RevokeTokenRequest { id: "xyz".into() })).await.unwrap_err();
    assert_invalid(&bad, "id");
    let gone = c
        .revoke_token(admin(admin_pb::RevokeTokenRequest { id: "0".repeat(16) }))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);

    c.revoke_token(admin(admin_pb::RevokeTokenRequest { id: token.id.clone() })).await.unwrap();
    let listed = c
        .list_tokens(admin(admin_pb::ListTokensRequest { tenant_id: "acme".into() }))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.tokens.is_empty(), "{listed:?}");

    let missing = c
        .delete_tenant(admin(admin_pb::DeleteTenantRequest { id: "nobody".into() }))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
}

#[test]
fn tenancy_errors_map_to_codes_and_messages() {
    use steward_tenancy::Error as E;

    let exceeded = |retry_after| E::QuotaExceeded {
        tenant: "acme".into(),
        quota: QuotaKind::Sockets,
        limit: 7,
        retry_after,
    };
    let status = status_from_tenancy(&exceeded(Some(Duration::from_millis(1200))));
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.message().starts_with("quota_exceeded: "), "{status:?}");
    assert!(status.message().contains("`sockets`"), "names the quota: {status:?}");
    assert_eq!(status.metadata().get("retry-after").unwrap(), "2", "rounded up");
    let status = status_from_tenancy(&exceeded(Some(Duration::from_secs(1))));
    assert_eq!(status.metadata().get("retry-after").unwrap(), "1");
    let status = status_from_tenancy(&exceeded(None));
    assert!(status.metadata().get("retry-after").is_none());

    let cases = [
        (
            E::InvalidArgument { field: "labels.team".into(), reason: "too long".into() },
            Code::InvalidArgument,
            "bad_request: invalid `labels.team`: too long",
        ),
        (E::NotFound("tenant acme".into()), Code::NotFound, "not_found: tenant acme not found"),
        (
            E::AlreadyExists("tenant acme".into()),
            Code::AlreadyExists,
            "already_exists: tenant acme already exists",
        ),
        (E::Unauthenticated, Code::Unauthenticated, UNAUTHENTICATED),
        (
            E::LimitReached("at most 1 tenants (tenancy.max_tenants)".into()),
            Code::ResourceExhausted,
            "limit_reached: at most 1 tenants (tenancy.max_tenants)",
        ),
        (
            E::Conflict("tenant acme".into()),
            Code::Aborted,
            "conflict: tenant acme was changed concurrently; retry",
        ),
        (
            E::Store(sqlx::Error::PoolTimedOut),
            Code::Unavailable,
            "store_unavailable: pool timed out while waiting for an open connection",
        ),
        (E::Internal("corrupt row".into()), Code::Internal, "internal: corrupt row"),
    ];
    for (error, code, message) in cases {
        let status = status_from_tenancy(&error);
        assert_eq!((status.code(), status.message()), (code, message), "{error:?}");
    }
}

#[test]
fn rtc_errors_map_to_codes_and_messages() {
    use steward_rtc::Error as E;

    let cases = [
        (
            E::Invalid("`room` must be 1 to 64 characters".into()),
            Code::InvalidArgument,
            "bad_request: `room` must be 1 to 64 characters",
        ),
        (E::NotFound("no room `standup`".into()), Code::NotFound, "not_found: no room `standup`"),
        (
            E::NodeFull { what: "rooms", max: 3 },
            Code::ResourceExhausted,
            "resource_exhausted: this node holds its maximum of 3 rooms",
        ),
        (E::ShuttingDown, Code::Unavailable, "shutting_down: the server is shutting down"),
        (
            E::Unavailable("the room did not answer in time".into()),
            Code::Unavailable,
            "unavailable: the room did not answer in time",
        ),
    ];
    for (error, code, message) in cases {
        let status = status_from_rtc(&error);
        assert_eq!((status.code(), status.message()), (code, message), "{error:?}");
    }
}
