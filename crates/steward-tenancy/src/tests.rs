//! The same scenarios against SQLite and PostgreSQL (`both!`), on a real actix system with real
//! supervisors and the real registry.

use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::future::join_all;
use steward_config::{Config, StoreConfig, TenancyConfig};
use steward_core::supervisor::Supervisor;
use steward_core::{
    ChildSpec, Registry, Resource, ResourceCtx, ResourceKind, RestartType, StopResource, Strategy,
    SupervisorSpec, stop_resource,
};

use crate::testing::PgTestDb;
use crate::{Backend, Error, NewTenant, NewToken, Tenancy, TenantId, TenantPatch};

/// A tenancy over a fresh database of one backend; the database goes with it.
struct Fixture {
    tenancy: Tenancy,
    registry: Registry,
    store_config: StoreConfig,
    _dir: tempfile::TempDir,
    _pg: Option<PgTestDb>,
}

fn tenancy_config() -> TenancyConfig {
    let mut c = Config::defaults().tenancy;
    c.purge_max_sleep = Duration::from_millis(200);
    c
}

/// A fresh, empty database of one backend that nothing has opened yet; it goes with this.
struct FreshDb {
    store_config: StoreConfig,
    dir: tempfile::TempDir,
    pg: Option<PgTestDb>,
}

async fn fresh_db(backend: Backend) -> FreshDb {
    let dir = tempfile::tempdir().unwrap();
    let (pg, url) = match backend {
        Backend::Sqlite => (None, String::new()),
        Backend::Postgres => {
            let db = PgTestDb::create().await;
            let url = db.url().to_owned();
            (Some(db), url)
        }
    };
    let mut store_config = Config::defaults().store;
    store_config.url = url;
    store_config.data_dir = dir.path().join("data");
    FreshDb { store_config, dir, pg }
}

async fn fixture(backend: Backend) -> Fixture {
    let FreshDb { store_config, dir, pg } = fresh_db(backend).await;
    let registry = Registry::with_defaults();
    let tenancy =
        Tenancy::open(&store_config, &tenancy_config(), registry.clone(), Duration::from_secs(5))
            .await
            .unwrap();
    assert_eq!(tenancy.store().backend(), backend);
    Fixture { tenancy, registry, store_config, _dir: dir, _pg: pg }
}

fn new_tenant(id: &str) -> NewTenant {
    serde_json::from_value(serde_json::json!({ "id": id })).unwrap()
}

fn new_token(name: &str, expires_in: Option<&str>) -> NewToken {
    NewToken { name: name.into(), expires_in: expires_in.map(Into::into) }
}

async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tick.tick().await;
    }
}

macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[actix_rt::test]
            async fn sqlite() {
                super::$name(super::fixture(crate::Backend::Sqlite).await).await;
            }
            #[actix_rt::test]
            async fn postgres() {
                super::$name(super::fixture(crate::Backend::Postgres).await).await;
            }
        }
    };
}

both!(concurrent_registration_admits_exactly_one);
async fn concurrent_registration_admits_exactly_one(f: Fixture) {
    let results = join_all((0..100).map(|_| f.tenancy.create_tenant(new_tenant("acme")))).await;
    let created = results.iter().filter(|r| r.is_ok()).count();
    let conflicts = results.iter().filter(|r| matches!(r, Err(Error::AlreadyExists(_)))).count();
    assert_eq!((created, conflicts), (1, 99), "{:?}", results.iter().find(|r| r.is_err()));
}

both!(token_lifecycle_issue_authenticate_revoke);
async fn token_lifecycle_issue_authenticate_revoke(f: Fixture) {
    let t = &f.tenancy;
    let id = t.create_tenant(new_tenant("acme")).await.unwrap().tenant.id;
    let issued = t.issue_token(&id, new_token("ci", None)).await.unwrap();
    assert!(issued.bearer.starts_with("stw_"));
    let ctx = t.authenticate(&issued.bearer).await.unwrap();
    assert_eq!(ctx.tenant_id(), &id);
    assert_eq!(ctx.token().id, issued.info.id);

    // a wrong secret for a real id, a malformed token and an unknown id: the same error
    let mut wrong = issued.bearer.clone();
    wrong.replace_range(wrong.len() - 4.., "0000");
    for bad in [wrong.as_str(), "nonsense", "stw_0000000000000000_00"] {
        assert!(matches!(t.authenticate(bad).await, Err(Error::Unauthenticated)), "{bad}");
    }

    let listed = t.tokens(&id).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "ci");

    t.revoke_token(&issued.info.id).await.unwrap();
    assert!(matches!(t.authenticate(&issued.bearer).await, Err(Error::Unauthenticated)));
    assert!(matches!(t.revoke_token(&issued.info.id).await, Err(Error::NotFound(_))));
    assert!(t.tokens(&id).await.unwrap().is_empty());
}

both!(revocation_on_another_node_takes_effect_within_the_cache_ttl);
async fn revocation_on_another_node_takes_effect_within_the_cache_ttl(f: Fixture) {
    // a second Tenancy over the same database is a second node
    let other = Tenancy::open(
        &f.store_config,
        &tenancy_config(),
        Registry::with_defaults(),
        Duration::from_secs(1),
    )
    .await
    .unwrap();
    let id = f.tenancy.create_tenant(new_tenant("acme")).await.unwrap().tenant.id;
    let issued = f.tenancy.issue_token(&id, new_token("ci", None)).await.unwrap();
    f.tenancy.authenticate(&issued.bearer).await.unwrap(); // now cached on this node
    other.revoke_token(&issued.info.id).await.unwrap();
    let revoked = Instant::now();
    eventually("revocation to reach the first node", async || {
        f.tenancy.authenticate(&issued.bearer).await.is_err()
    })
    .await;
    assert!(revoked.elapsed() <= Duration::from_millis(1100), "took {:?}", revoked.elapsed());
}

both!(expired_tokens_are_refused_and_purged);
async fn expired_tokens_are_refused_and_purged(f: Fixture) {
    let root = Supervisor::start_root(
        &f.registry,
        SupervisorSpec::from_config("root", Strategy::OneForOne, &Config::defaults().supervisor)
            .child(f.tenancy.purge_spec()),
    )
    .await
    .unwrap();
    let t = &f.tenancy;
    let id = t.create_tenant(new_tenant("acme")).await.unwrap().tenant.id;
    let short = t.issue_token(&id, new_token("short", Some("300ms"))).await.unwrap();
    let long = t.issue_token(&id, new_token("long", Some("1h"))).await.unwrap();
    let forever = t.issue_token(&id, new_token("forever", None)).await.unwrap();
    t.authenticate(&short.bearer).await.unwrap();

    eventually("the short token to be purged", async || t.purged_tokens() == 1).await;
    assert!(matches!(t.authenticate(&short.bearer).await, Err(Error::Unauthenticated)));
    assert!(t.store().token(&short.info.id).await.unwrap().is_none());
    let mut names: Vec<String> = t.tokens(&id).await.unwrap().into_iter().map(|i| i.name).collect();
    // listed by creation time in milliseconds, then by (random) id: two tokens issued within
    // the same millisecond may come in either order
    names.sort_unstable();
    assert_eq!(names, ["forever", "long"]);
    t.authenticate(&long.bearer).await.unwrap();
    t.authenticate(&forever.bearer).await.unwrap();
    root.handle.stop(steward_core::ExitReason::Shutdown).await.unwrap();
}

both!(secrets_never_reach_the_store);
async fn secrets_never_reach_the_store(f: Fixture) {
    let t = &f.tenancy;
    let id = t.create_tenant(new_tenant("acme")).await.unwrap().tenant.id;
    let issued = t.issue_token(&id, new_token("ci", None)).await.unwrap();
    let secret = issued.bearer.rsplit('_').next().unwrap().to_owned();
    assert_eq!(secret.len(), 64);
    let rows: Vec<(String, String, String, String)> =
        sqlx::query_as("SELECT id, tenant_id, name, secret_sha256 FROM tokens")
            .fetch_all(&f.pool())
            .await
            .unwrap();
    assert_eq!(rows.len(), 1);
    let dump = format!("{rows:?}");
    assert!(!dump.contains(&secret) && !dump.contains(&issued.bearer), "{dump}");
    assert_eq!(rows[0].3.len(), 64, "hex SHA-256");
    if let Some(path) = f.sqlite_file() {
        f.tenancy.close().await;
        let bytes = std::fs::read(&path).unwrap();
        let wal = std::fs::read(path.with_extension("db-wal")).unwrap_or_default();
        for haystack in [bytes, wal] {
            assert!(!haystack.windows(secret.len()).any(|w| w == secret.as_bytes()));
        }
    }
}

impl Fixture {
    fn pool(&self) -> sqlx::AnyPool {
        self.tenancy.store().pool().clone()
    }

    fn sqlite_file(&self) -> Option<std::path::PathBuf> {
        (self.tenancy.store().backend() == Backend::Sqlite)
            .then(|| self.store_config.data_dir.join("steward.db"))
    }
}

both!(persistence_across_reopen);
async fn persistence_across_reopen(f: Fixture) {
    let id = f.tenancy.create_tenant(new_tenant("acme")).await.unwrap().tenant.id;
    let issued = f.tenancy.issue_token(&id, new_token("ci", None)).await.unwrap();
    f.tenancy.close().await;
    let reopened = Tenancy::open(
        &f.store_config,
        &tenancy_config(),
        f.registry.clone(),
        Duration::from_secs(1),
    )
    .await
    .unwrap();
    assert_eq!(reopened.authenticate(&issued.bearer).await.unwrap().tenant_id(), &id);
}

both!(patch_merges_and_validates);
async fn patch_merges_and_validates(f: Fixture) {
    let t = &f.tenancy;
    let id = t.create_tenant(new_tenant("acme")).await.unwrap().tenant.id;
    let patch: TenantPatch = serde_json::from_value(serde_json::json!({
        "quotas": {"sockets": 3, "peers": 0},
        "labels": {"team": "core"},
        "browser_endpoint": "ws://10.0.0.5:9222/devtools/browser/x",
        "browser_allow": ["10.0.0.0/8"],
    }))
    .unwrap();
    let v = t.update_tenant(&id, patch).await.unwrap();
    assert_eq!((v.quotas.sockets, v.quotas.peers), (3, 0));
    assert_eq!(v.quotas.producers, u64::from(t.default_quotas().producers));
    assert_eq!(v.tenant.labels.get("team").map(String::as_str), Some("core"));
    assert_eq!(v.tenant.browser_allow, ["10.0.0.0/8"]);

    let reset: TenantPatch = serde_json::from_value(serde_json::json!({
        "quotas": {"sockets": null}, "labels": {"team": null}, "browser_endpoint": null,
        "browser_allow": null,
    }))
    .unwrap();
    let v = t.update_tenant(&id, reset).await.unwrap();
    assert_eq!(v.quotas.sockets, u64::from(t.default_quotas().sockets));
    assert_eq!(v.quotas.peers, 0, "untouched overrides stay");
    assert!(v.tenant.labels.is_empty() && v.tenant.browser_endpoint.is_none());
    assert!(v.tenant.browser_allow.is_empty());
    assert_eq!(v.tenant.revision, 3);

    let bad: TenantPatch =
        serde_json::from_value(serde_json::json!({"quotas": {"sockets": 2_000_000}})).unwrap();
    let err = t.update_tenant(&id, bad).await.unwrap_err();
    assert!(matches!(&err, Error::InvalidArgument { field, .. } if field == "quotas.sockets"));

    // concurrent patches are serialized by the revision: none is lost
    let patches = (0..10).map(|i| {
        let patch: TenantPatch =
            serde_json::from_value(serde_json::json!({"labels": {format!("k{i}"): "v"}})).unwrap();
        t.update_tenant(&id, patch)
    });
    for r in join_all(patches).await {
        r.unwrap();
    }
    assert_eq!(t.tenant(&id).await.unwrap().tenant.labels.len(), 10);
}

both!(browser_allow_is_validated_stored_and_merge_patched);
async fn browser_allow_is_validated_stored_and_merge_patched(f: Fixture) {
    let t = &f.tenancy;
    let allow =
        ["127.0.0.1", "10.0.0.0/8", "fd00::/8", "::1", "intranet.example", "*.corp.example"];
    let new: NewTenant =
        serde_json::from_value(serde_json::json!({"id": "acme", "browser_allow": allow})).unwrap();
    let v = t.create_tenant(new).await.unwrap();
    assert_eq!(v.tenant.browser_allow, allow);
    let id = v.tenant.id;
    assert_eq!(t.tenant(&id).await.unwrap().tenant.browser_allow, allow, "stored");
    // it reaches the context a token resolves to (the join of tokens and tenants)
    let issued = t.issue_token(&id, new_token("ci", None)).await.unwrap();
    assert_eq!(t.authenticate(&issued.bearer).await.unwrap().tenant().browser_allow, allow);
    // absent on creation: empty
    assert!(t.create_tenant(new_tenant("plain")).await.unwrap().tenant.browser_allow.is_empty());

    let patch = |v: serde_json::Value| serde_json::from_value::<TenantPatch>(v).unwrap();
    // absent: unchanged
    let v = t.update_tenant(&id, patch(serde_json::json!({"display_name": "Acme"}))).await;
    assert_eq!(v.unwrap().tenant.browser_allow, allow);
    // an array replaces the list
    let v = t.update_tenant(&id, patch(serde_json::json!({"browser_allow": ["localhost"]}))).await;
    assert_eq!(v.unwrap().tenant.browser_allow, ["localhost"]);
    assert_eq!(t.tenant(&id).await.unwrap().tenant.browser_allow, ["localhost"], "stored");
    // an invalid list is refused, naming the entry, and nothing changes
    let bad = patch(serde_json::json!({"browser_allow": ["10.0.0.0/8", "not a host"]}));
    let err = t.update_tenant(&id, bad).await.unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument { field, .. } if field == "browser_allow[1]"),
        "{err}"
    );
    assert_eq!(t.tenant(&id).await.unwrap().tenant.browser_allow, ["localhost"]);
    // `[]` and `null` both empty it
    let v = t.update_tenant(&id, patch(serde_json::json!({"browser_allow": []}))).await;
    assert!(v.unwrap().tenant.browser_allow.is_empty());
    t.update_tenant(&id, patch(serde_json::json!({"browser_allow": ["::1"]}))).await.unwrap();
    let v = t.update_tenant(&id, patch(serde_json::json!({"browser_allow": null}))).await;
    assert!(v.unwrap().tenant.browser_allow.is_empty());
    assert!(t.tenant(&id).await.unwrap().tenant.browser_allow.is_empty(), "stored");

    // an invalid list on creation creates nothing
    let new: NewTenant =
        serde_json::from_value(serde_json::json!({"id": "bad", "browser_allow": ["10.0.0.0/33"]}))
            .unwrap();
    let err = t.create_tenant(new).await.unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument { field, .. } if field == "browser_allow[0]"),
        "{err}"
    );
    let bad = TenantId::new("bad").unwrap();
    assert!(matches!(t.tenant(&bad).await, Err(Error::NotFound(_))));
}

/// The schema as migration 1 left it.
#[derive(Debug)]
struct FirstMigrationOnly;

impl<'s> sqlx::migrate::MigrationSource<'s> for FirstMigrationOnly {
    fn resolve(
        self,
    ) -> futures_util::future::BoxFuture<
        's,
        Result<Vec<sqlx::migrate::Migration>, sqlx::error::BoxDynError>,
    > {
        Box::pin(async {
            Ok(vec![sqlx::migrate::Migration::new(
                1,
                "tenants and tokens".into(),
                sqlx::migrate::MigrationType::Simple,
                include_str!("../migrations/0001_tenants_and_tokens.sql").into(),
                false,
            )])
        })
    }
}

/// A store written before the allow-list existed is migrated at open; its tenants get the
/// empty list.
async fn an_upgraded_store_gives_old_tenants_an_empty_allow_list(backend: Backend) {
    let db = fresh_db(backend).await;
    let url = match backend {
        Backend::Sqlite => {
            std::fs::create_dir_all(&db.store_config.data_dir).unwrap();
            let file = std::path::absolute(db.store_config.data_dir.join("steward.db")).unwrap();
            format!("sqlite://{}?mode=rwc", file.display())
        }
        Backend::Postgres => db.store_config.url.clone(),
    };
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    let first = sqlx::migrate::Migrator::new(FirstMigrationOnly).await.unwrap();
    first.run(&pool).await.unwrap();
    sqlx::query(
        "INSERT INTO tenants (id, display_name, created_at, updated_at, quota_overrides, \
         browser_endpoint, labels, revision) VALUES ('old', 'Old', 0, 0, '{}', NULL, '{}', 1)",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let registry = Registry::with_defaults();
    let tenancy =
        Tenancy::open(&db.store_config, &tenancy_config(), registry, Duration::from_secs(1))
            .await
            .unwrap();
    let old = TenantId::new("old").unwrap();
    let v = tenancy.tenant(&old).await.unwrap();
    assert_eq!(v.tenant.display_name, "Old");
    assert!(v.tenant.browser_allow.is_empty());
    let patch: TenantPatch =
        serde_json::from_value(serde_json::json!({"browser_allow": ["*.corp.example"]})).unwrap();
    let v = tenancy.update_tenant(&old, patch).await.unwrap();
    assert_eq!(v.tenant.browser_allow, ["*.corp.example"]);
    tenancy.close().await;
}

mod an_upgraded_store_gives_old_tenants_an_empty_allow_list {
    #[actix_rt::test]
    async fn sqlite() {
        super::an_upgraded_store_gives_old_tenants_an_empty_allow_list(crate::Backend::Sqlite)
            .await;
    }
    #[actix_rt::test]
    async fn postgres() {
        super::an_upgraded_store_gives_old_tenants_an_empty_allow_list(crate::Backend::Postgres)
            .await;
    }
}

#[test]
fn browser_allow_entries_follow_the_url_policy_grammar() {
    use crate::model::{MAX_BROWSER_ALLOW, validate_browser_allow};
    let max_name =
        format!("{}.{}.{}.{}", "a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(61));
    let ok: Vec<String> = [
        "127.0.0.0/8",
        "0.0.0.0/0",
        "10.0.0.1/8",
        "fd00::/8",
        "::/0",
        "127.0.0.1",
        "::1",
        "::ffff:10.0.0.1",
        "localhost",
        "Intranet.EXAMPLE",
        "*.corp.example",
        "*.localhost",
        "xn--bcher-kva.example",
        "a1.b2",
        &max_name,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    validate_browser_allow(&ok).unwrap();
    validate_browser_allow(&[]).unwrap();
    let full: Vec<String> = (0..MAX_BROWSER_ALLOW).map(|i| format!("10.0.{i}.0/24")).collect();
    validate_browser_allow(&full).unwrap();

    let field = |list: &[String]| match validate_browser_allow(list) {
        Err(Error::InvalidArgument { field, .. }) => field,
        other => panic!("{list:?}: {other:?}"),
    };
    let too_many: Vec<String> = (0..=MAX_BROWSER_ALLOW).map(|i| format!("10.0.{i}.0/24")).collect();
    assert_eq!(field(&too_many), "browser_allow");
    let long_label = format!("{}.example", "a".repeat(64));
    let too_long = format!("{}.example", "a.".repeat(123));
    for bad in [
        "",
        " ",
        "10.0.0.0/33",
        "::/129",
        "10/8",
        "localhost/8",
        "not a host",
        "host_name.example",
        "*",
        "*.",
        "*example.com",
        "a.*.example",
        "a..b",
        ".example",
        "example.",
        "[::1]",
        "127.1",
        "10.0.0.256",
        "http://example.com",
        "example.com:8080",
        "bücher.example",
        &long_label,
        &too_long,
    ] {
        let list = vec!["10.0.0.0/8".to_owned(), "ok.example".to_owned(), bad.to_owned()];
        assert_eq!(field(&list), "browser_allow[2]", "{bad:?}");
    }
}

/// A resource of a tenant, for admission and deletion tests.
struct Probe {
    rcx: ResourceCtx,
}

impl Actor for Probe {
    type Context = Context<Self>;
}

impl Resource for Probe {
    fn resource_ctx(&self) -> &ResourceCtx {
        &self.rcx
    }
    fn resource_ctx_mut(&mut self) -> &mut ResourceCtx {
        &mut self.rcx
    }
}

impl Handler<StopResource> for Probe {
    type Result = ();
    fn handle(&mut self, msg: StopResource, ctx: &mut Context<Self>) {
        stop_resource(self, ctx, msg.reason);
    }
}

async fn dynamic_root(registry: &Registry) -> steward_core::supervisor::RootSupervisor {
    Supervisor::start_root(
        registry,
        SupervisorSpec::from_config("sockets", Strategy::Dynamic, &Config::defaults().supervisor),
    )
    .await
    .unwrap()
}

both!(concurrent_admissions_admit_exactly_the_quota);
async fn concurrent_admissions_admit_exactly_the_quota(f: Fixture) {
    let t = &f.tenancy;
    let id = t.create_tenant(new_tenant("acme")).await.unwrap().tenant.id;
    let patch: TenantPatch =
        serde_json::from_value(serde_json::json!({"quotas": {"sockets": 50}})).unwrap();
    t.update_tenant(&id, patch).await.unwrap();
    let token = t.issue_token(&id, new_token("ci", None)).await.unwrap();
    let ctx = t.authenticate(&token.bearer).await.unwrap();
    let root = dynamic_root(&f.registry).await;

    // 200 admissions race; each admitted one starts a socket-kind resource holding its slot
    let attempts = (0..200).map(|i| {
        let (t, ctx, sup) = (t.clone(), ctx.clone(), root.handle.clone());
        async move {
            tokio::task::yield_now().await;
            let reservation = t.admit(&ctx, ResourceKind::Socket)?;
            let spec = ChildSpec::new(format!("probe-{i}"), ResourceKind::Socket, |rcx| {
                Ok::<_, std::convert::Infallible>(Probe { rcx })
            })
            .restart(RestartType::Temporary)
            .tenant(ctx.tenant_id().as_arc().clone())
            .hold(reservation);
            sup.start_child::<Probe>(spec).await.map_err(|e| Error::Internal(e.to_string()))
        }
    });
    let results = join_all(attempts).await;
    let admitted: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(Error::QuotaExceeded { limit: 50, retry_after: Some(_), .. })))
        .count();
    assert_eq!((admitted.len(), refused), (50, 150));
    assert_eq!(t.usage(&id)[ResourceKind::Socket.index()].1, 50);
    let stats = t.ledger().stats();
    let sockets = stats[0].quotas.iter().find(|q| q.quota == crate::QuotaKind::Sockets).unwrap();
    assert_eq!((sockets.reserved, sockets.admitted, sockets.refused), (50, 50, 150));

    for (rid, _) in &admitted {
        root.handle.terminate_child(*rid, steward_core::ExitReason::Normal).await.unwrap();
    }
    eventually("usage to return to 0", async || {
        t.usage(&id).iter().all(|(_, n)| *n == 0)
            && t.ledger().reserved(&id).iter().all(|(_, n)| *n == 0)
    })
    .await;
    // and the freed slots admit again
    drop(t.admit(&ctx, ResourceKind::Socket).unwrap());
    root.handle.stop(steward_core::ExitReason::Shutdown).await.unwrap();
}

both!(zero_quota_and_rate_refusals_say_whether_to_retry);
async fn zero_quota_and_rate_refusals_say_whether_to_retry(f: Fixture) {
    let t = &f.tenancy;
    let id = t.create_tenant(new_tenant("acme")).await.unwrap().tenant.id;
    let patch: TenantPatch =
        serde_json::from_value(serde_json::json!({"quotas": {"peers": 0, "session_rate": 2}}))
            .unwrap();
    let v = t.update_tenant(&id, patch).await.unwrap();
    match t.ledger().admit(&id, &v.quotas, ResourceKind::Peer) {
        Err(Error::QuotaExceeded { quota, limit: 0, retry_after: None, .. }) => {
            assert_eq!(quota, crate::QuotaKind::Peers);
        }
        other => panic!("{other:?}"),
    }
    t.ledger().take_session_rate(&id, &v.quotas).unwrap();
    t.ledger().take_session_rate(&id, &v.quotas).unwrap();
    match t.ledger().take_session_rate(&id, &v.quotas) {
        Err(Error::QuotaExceeded { retry_after: Some(wait), limit: 2, .. }) => {
            assert!(wait > Duration::ZERO && wait <= Duration::from_secs(30), "{wait:?}");
        }
        other => panic!("{other:?}"),
    }
}

both!(deleting_a_tenant_revokes_tokens_and_stops_its_resources);
async fn deleting_a_tenant_revokes_tokens_and_stops_its_resources(f: Fixture) {
    let t = &f.tenancy;
    let acme = t.create_tenant(new_tenant("acme")).await.unwrap().tenant.id;
    let other = t.create_tenant(new_tenant("other")).await.unwrap().tenant.id;
    let acme_token = t.issue_token(&acme, new_token("ci", None)).await.unwrap();
    let other_token = t.issue_token(&other, new_token("ci", None)).await.unwrap();
    let root = dynamic_root(&f.registry).await;
    let start = async |tenant: &TenantId, token: &str, n: usize| {
        let ctx = t.authenticate(token).await.unwrap();
        for i in 0..n {
            let spec = ChildSpec::new(format!("probe-{i}"), ResourceKind::Producer, |rcx| {
                Ok::<_, std::convert::Infallible>(Probe { rcx })
            })
            .restart(RestartType::Permanent) // even permanent children go: the tenant is gone
            .tenant(tenant.as_arc().clone())
            .hold(t.admit(&ctx, ResourceKind::Producer).unwrap());
            root.handle.start_child::<Probe>(spec).await.unwrap();
        }
    };
    start(&acme, &acme_token.bearer, 7).await;
    start(&other, &other_token.bearer, 2).await;
    assert_eq!(f.registry.ids_of_tenant("acme").len(), 7);

    let deleted = t.delete_tenant(&acme).await.unwrap();
    assert_eq!(
        (deleted.tokens_revoked, deleted.resources_stopped, deleted.resources_left),
        (1, 7, 0)
    );
    assert!(f.registry.ids_of_tenant("acme").is_empty(), "registry shows none left");
    assert!(t.usage(&acme).iter().all(|(_, n)| *n == 0));
    assert!(matches!(t.authenticate(&acme_token.bearer).await, Err(Error::Unauthenticated)));
    assert!(matches!(t.tenant(&acme).await, Err(Error::NotFound(_))));
    assert!(matches!(t.delete_tenant(&acme).await, Err(Error::NotFound(_))));
    // the other tenant is untouched
    assert_eq!(f.registry.ids_of_tenant("other").len(), 2);
    t.authenticate(&other_token.bearer).await.unwrap();
    // the id can be registered again, with fresh counters
    t.create_tenant(new_tenant("acme")).await.unwrap();
    assert!(t.ledger().reserved(&acme).iter().all(|(_, n)| *n == 0));
    root.handle.stop(steward_core::ExitReason::Shutdown).await.unwrap();
}

#[test]
fn tenant_ids_are_dns_labels() {
    for ok in ["a", "acme", "acme-2", &"a".repeat(63)] {
        TenantId::new(ok).unwrap();
    }
    for bad in ["", "-a", "a-", "Acme", "a_b", "a.b", "ä", &"a".repeat(64)] {
        let err = TenantId::new(bad).unwrap_err();
        assert!(matches!(&err, Error::InvalidArgument { field, .. } if field == "id"), "{bad}");
    }
}

#[test]
fn bearer_format_round_trips_and_rejects_lookalikes() {
    let g = crate::token::generate().unwrap();
    assert_eq!(g.bearer.len(), crate::token::TOKEN_LEN);
    let (id, secret) = crate::token::parse(&g.bearer).unwrap();
    assert_eq!(id, g.id);
    assert!(secret.matches(&g.secret.sha256_hex()));
    assert_eq!(format!("{secret:?}"), "Secret(…)");
    let mut longer = g.bearer.clone();
    longer.push('0');
    for bad in [&g.bearer[4..], &longer, &g.bearer.replace("stw_", "ghp_")] {
        assert!(crate::token::parse(bad).is_err(), "{bad}");
    }
}

both!(tenant_churn_leaves_nothing_behind);
/// Create a tenant, issue and use a token, admit and run a resource, delete the tenant — many
/// times; then count what is left: store rows, ledger entries, registry entries and per-tenant
/// counts, cached tokens.
async fn tenant_churn_leaves_nothing_behind(f: Fixture) {
    const ROUNDS: usize = 200;
    let t = &f.tenancy;
    let root = dynamic_root(&f.registry).await;
    let baseline = f.registry.len();
    for i in 0..ROUNDS {
        let id = t.create_tenant(new_tenant(&format!("t{i}"))).await.unwrap().tenant.id;
        let token = t.issue_token(&id, new_token("ci", Some("1h"))).await.unwrap();
        let ctx = t.authenticate(&token.bearer).await.unwrap();
        let spec = ChildSpec::new("probe", ResourceKind::Socket, |rcx| {
            Ok::<_, std::convert::Infallible>(Probe { rcx })
        })
        .tenant(id.as_arc().clone())
        .hold(t.admit(&ctx, ResourceKind::Socket).unwrap());
        root.handle.start_child::<Probe>(spec).await.unwrap();
        let deleted = t.delete_tenant(&id).await.unwrap();
        assert_eq!((deleted.resources_stopped, deleted.resources_left), (1, 0));
    }
    let count = |table: &'static str| {
        let pool = f.pool();
        async move {
            sqlx::query_scalar::<_, i64>(&format!("SELECT COUNT(*) FROM {table}"))
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!((count("tenants").await, count("tokens").await), (0, 0));
    assert!(t.ledger().stats().is_empty(), "ledger entries left: {:?}", t.ledger().stats());
    assert!(f.registry.tenants_usage().is_empty());
    assert_eq!(f.registry.len(), baseline, "registry back to its baseline");
    assert_eq!(t.cached_tokens(), 0, "cached tokens left");
    root.handle.stop(steward_core::ExitReason::Shutdown).await.unwrap();
}

/// A well-formed token whose id the store does not know costs one store query per token TTL,
/// not one per request: after the first refusal the store is closed, and the same token is
/// still refused `Unauthenticated` (a query would fail `Store`). A real token issued on this
/// node afterwards is found at once.
#[tokio::test]
async fn unknown_token_ids_are_cached_negatively_within_the_ttl() {
    let f = fixture(Backend::Sqlite).await;
    let t = &f.tenancy;
    let unknown = format!("stw_{}_{}", "ab".repeat(8), "cd".repeat(32));
    assert!(matches!(t.authenticate(&unknown).await, Err(Error::Unauthenticated)));
    assert_eq!(t.cached_unknown_tokens(), 1);
    t.store().close().await;
    assert!(matches!(t.authenticate(&unknown).await, Err(Error::Unauthenticated)));
    // another unknown id does reach the (closed) store
    let other = format!("stw_{}_{}", "ef".repeat(8), "cd".repeat(32));
    assert!(matches!(t.authenticate(&other).await, Err(Error::Store(_))));
}

/// Failed authentications from one IP are limited; the limit answers `Throttled` without
/// looking at the token, other IPs are not affected, and a success does not reset the count.
#[tokio::test]
async fn failed_authentications_are_limited_per_ip() {
    let mut config = tenancy_config();
    config.max_auth_failures_per_ip = 2;
    let FreshDb { store_config, dir: _dir, pg: _pg } = fresh_db(Backend::Sqlite).await;
    let t =
        Tenancy::open(&store_config, &config, Registry::with_defaults(), Duration::from_secs(5))
            .await
            .unwrap();
    t.create_tenant(new_tenant("acme")).await.unwrap();
    let good = t.issue_token(&TenantId::new("acme").unwrap(), new_token("ci", None)).await.unwrap();
    let (a, b): (std::net::IpAddr, std::net::IpAddr) =
        ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
    assert!(t.authenticate_from(a, Some(&good.bearer)).await.is_ok());
    for bad in [None, Some("stw_garbage")] {
        assert!(matches!(t.authenticate_from(a, bad).await, Err(Error::Unauthenticated)));
    }
    assert!(matches!(
        t.authenticate_from(a, Some(&good.bearer)).await,
        Err(Error::Throttled { .. })
    ));
    assert!(t.authenticate_from(b, Some(&good.bearer)).await.is_ok());
    assert_eq!((t.auth_failures().failed(), t.auth_failures().throttled()), (2, 1));
}
