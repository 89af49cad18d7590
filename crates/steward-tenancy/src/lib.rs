//! Tenants, API tokens, quotas and their store.
//!
//! Every resource Steward holds belongs to a tenant, and every client request is made with a
//! tenant's API token. This crate owns:
//! - the [`Store`] (sqlx: embedded SQLite by default, PostgreSQL to share tenants between nodes)
//!   with compiled-in migrations;
//! - tenants ([`Tenant`]: slug id, display name, quota overrides, remote browser endpoint,
//!   browser allow-list, labels), created exactly once per id (the primary key decides
//!   concurrent registrations);
//! - API tokens: `stw_<id>_<secret>`, 256-bit secrets shown once and stored only as SHA-256,
//!   resolved through a cache of at most 1 s into a [`TenantContext`]; expired tokens are
//!   refused at once and purged by a deadline-queue timer (`token-purge` service);
//! - atomic admission ([`QuotaLedger`]): a slot is reserved per tenant and kind before a
//!   resource starts and released when it is gone.
//!
//! [`Tenancy`] is the one handle the edges use. This crate must not know any transport: HTTP
//! statuses and gRPC codes are chosen in steward-http and steward-grpc.
#![forbid(unsafe_code)]

mod auth;
mod error;
mod guard;
pub mod model;
mod purge;
mod quota;
mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;
pub mod token;

pub use auth::TenantContext;
pub use error::{Error, Result};
pub use guard::{AUTH_FAILURE_CAPACITY, AuthFailures, DoorStats};
pub use model::{
    Labels, NewTenant, NewToken, QuotaKind, QuotaOverrides, QuotaPatch, Quotas, Tenant, TenantId,
    TenantPatch, TokenId, TokenInfo,
};
pub use quota::{QuotaCount, QuotaLedger, QuotaStats, Reservation};
pub use store::{Backend, Store, TokenRecord, private_dir};

use std::sync::Arc;
use std::time::Duration;

use steward_config::{QuotaDefaults, StoreConfig, TenancyConfig};
use steward_core::{ChildSpec, Control, ExitReason, Registry, ResourceKind};

use crate::auth::{Cached, TokenCache};

/// How long after the stop deadline deleting a tenant still waits: the supervisors kill what
/// has not stopped at the deadline, and a killed actor is dropped within moments.
const KILL_MARGIN: Duration = Duration::from_millis(250);
use crate::model::{
    MAX_DISPLAY_NAME, MAX_TOKEN_NAME, validate_browser_allow, validate_endpoint, validate_labels,
    validate_name,
};
use crate::purge::{PurgeLink, PurgeSpec};

/// How many times an update tries before giving up with `Conflict`: more than any realistic
/// number of concurrent patches of one tenant (each lost race is another patch succeeding).
const UPDATE_RETRIES: u64 = 32;

/// A tenant with its effective quotas and live usage.
#[derive(Debug, Clone)]
pub struct TenantView {
    /// The stored tenant.
    pub tenant: Tenant,
    /// Effective quotas (overrides over the node's defaults).
    pub quotas: Quotas,
    /// Live resources per kind on this node, from the registry.
    pub usage: Vec<(ResourceKind, u64)>,
}

/// A freshly issued token: its metadata and the bearer string, which is shown only now.
pub struct IssuedToken {
    /// Metadata, as listed later.
    pub info: TokenInfo,
    /// `stw_<id>_<secret>`: the only time it exists outside the client.
    pub bearer: String,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken").field("info", &self.info).finish_non_exhaustive()
    }
}

/// What deleting a tenant did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantDeleted {
    /// Tokens revoked with it.
    pub tokens_revoked: usize,
    /// Resources it owned that were asked to stop.
    pub resources_stopped: usize,
    /// Of those, how many were still live at the deadline.
    pub resources_left: usize,
}

/// The tenancy service: store, token cache, admission ledger and the purge's link. Cheap to
/// clone; every front door shares one.
#[derive(Clone)]
pub struct Tenancy {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    cache: TokenCache,
    failures: AuthFailures,
    ledger: QuotaLedger,
    registry: Registry,
    config: TenancyConfig,
    purge: PurgeLink,
    /// How long `delete_tenant` waits for the tenant's resources to stop.
    stop_deadline: Duration,
}

impl Tenancy {
    /// Opens the store (running migrations) and builds the service. Resources are counted and
    /// stopped through `registry`; `stop_deadline` bounds how long deleting a tenant waits for
    /// its resources.
    ///
    /// # Errors
    /// As [`Store::open`].
    pub async fn open(
        store: &StoreConfig,
        config: &TenancyConfig,
        registry: Registry,
        stop_deadline: Duration,
    ) -> Result<Self> {
        let store = Store::open(store).await?;
        Ok(Self::with_store(store, config, registry, stop_deadline))
    }

    /// The service over an open `store`.
    #[must_use]
    pub fn with_store(
        store: Store,
        config: &TenancyConfig,
        registry: Registry,
        stop_deadline: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                cache: TokenCache::new(config.token_cache_ttl, config.token_cache_capacity),
                failures: AuthFailures::new(
                    "tenant",
                    config.max_auth_failures_per_ip,
                    config.auth_failure_window,
                ),
                ledger: QuotaLedger::new(config.quota_retry_after),
                registry,
                config: config.clone(),
                purge: PurgeLink::default(),
                stop_deadline,
            }),
        }
    }

    /// The child spec of the `token-purge` service (permanent); put it under a supervisor.
    #[must_use]
    pub fn purge_spec(&self) -> ChildSpec {
        PurgeSpec {
            store: self.inner.store.clone(),
            cache: self.inner.cache.clone(),
            link: self.inner.purge.clone(),
            batch: self.inner.config.purge_batch,
            max_sleep: self.inner.config.purge_max_sleep,
        }
        .child_spec()
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The admission ledger.
    #[must_use]
    pub fn ledger(&self) -> &QuotaLedger {
        &self.inner.ledger
    }

    /// The node's default quotas.
    #[must_use]
    pub fn default_quotas(&self) -> &QuotaDefaults {
        &self.inner.config.default_quotas
    }

    /// Tokens in this node's authentication cache (after pending evictions ran).
    #[must_use]
    pub fn cached_tokens(&self) -> u64 {
        self.inner.cache.len()
    }

    /// Tokens the purge deleted since boot.
    #[must_use]
    pub fn purged_tokens(&self) -> u64 {
        self.inner.purge.purged()
    }

    fn view(&self, tenant: Tenant) -> TenantView {
        let quotas = Quotas::resolve(self.default_quotas(), &tenant.quota_overrides);
        let usage = self.usage(&tenant.id);
        TenantView { tenant, quotas, usage }
    }

    /// Creates a tenant.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the field; [`Error::AlreadyExists`] when the id is
    /// taken (of concurrent creations of one id exactly one succeeds);
    /// [`Error::LimitReached`] at `tenancy.max_tenants` (checked before the insert, so
    /// concurrent creations may pass it by their number); [`Error::Store`].
    pub async fn create_tenant(&self, new: NewTenant) -> Result<TenantView> {
        let id = TenantId::new(&new.id)?;
        let display_name = new.display_name.unwrap_or_else(|| id.to_string());
        validate_name("display_name", &display_name, MAX_DISPLAY_NAME)?;
        let quota_overrides = new.quotas.validate()?;
        if let Some(e) = &new.browser_endpoint {
            validate_endpoint(e)?;
        }
        validate_browser_allow(&new.browser_allow)?;
        validate_labels(&new.labels)?;
        let max = self.inner.config.max_tenants;
        if self.inner.store.count_tenants().await? >= u64::from(max) {
            return Err(Error::LimitReached(format!(
                "at most {max} tenants (tenancy.max_tenants)"
            )));
        }
        let now = store::now_millis();
        let tenant = Tenant {
            id,
            display_name,
            created_at: now,
            updated_at: now,
            quota_overrides,
            browser_endpoint: new.browser_endpoint,
            browser_allow: new.browser_allow,
            labels: new.labels,
            revision: 1,
        };
        self.inner.store.insert_tenant(&tenant).await?;
        self.inner.ledger.open(&tenant.id);
        tracing::info!(tenant = %tenant.id, "tenant created");
        Ok(self.view(tenant))
    }

    /// The tenant `id` with quotas and usage.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::Store`].
    pub async fn tenant(&self, id: &TenantId) -> Result<TenantView> {
        let tenant = self
            .inner
            .store
            .tenant(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("tenant {id}")))?;
        Ok(self.view(tenant))
    }

    /// A page of tenants ordered by id, after `after`.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub async fn tenants(&self, after: Option<&TenantId>, limit: u32) -> Result<Vec<TenantView>> {
        let tenants = self.inner.store.tenants(after, limit).await?;
        Ok(tenants.into_iter().map(|t| self.view(t)).collect())
    }

    /// Applies `patch` to tenant `id` (a merge patch; concurrent patches are serialized by
    /// the tenant's revision and retried). Cached tokens of the tenant are dropped, so new
    /// quotas apply to the next request on this node and within 1 s elsewhere.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the field; [`Error::NotFound`]; [`Error::Conflict`]
    /// after repeated lost races; [`Error::Store`].
    pub async fn update_tenant(&self, id: &TenantId, patch: TenantPatch) -> Result<TenantView> {
        if let Some(name) = &patch.display_name {
            validate_name("display_name", name, MAX_DISPLAY_NAME)?;
        }
        if let Some(Some(e)) = &patch.browser_endpoint {
            validate_endpoint(e)?;
        }
        if let Some(Some(allow)) = &patch.browser_allow {
            validate_browser_allow(allow)?;
        }
        for attempt in 0..UPDATE_RETRIES {
            if attempt > 0 {
                // a lost race means another patch made progress; back off a little so N
                // concurrent patches do not keep colliding (each one wins within N attempts)
                tokio::time::sleep(std::time::Duration::from_millis(attempt)).await;
            }
            let mut t = self
                .inner
                .store
                .tenant(id)
                .await?
                .ok_or_else(|| Error::NotFound(format!("tenant {id}")))?;
            if let Some(name) = &patch.display_name {
                t.display_name.clone_from(name);
            }
            if let Some(q) = &patch.quotas {
                t.quota_overrides = t.quota_overrides.merge(q)?;
            }
            if let Some(e) = &patch.browser_endpoint {
                t.browser_endpoint.clone_from(e);
            }
            if let Some(allow) = &patch.browser_allow {
                t.browser_allow = allow.clone().unwrap_or_default();
            }
            if let Some(labels) = &patch.labels {
                for (k, v) in labels {
                    match v {
                        Some(v) => t.labels.insert(k.clone(), v.clone()),
                        None => t.labels.remove(k),
                    };
                }
                validate_labels(&t.labels)?;
            }
            t.updated_at = store::now_millis();
            t.revision += 1;
            if self.inner.store.update_tenant(&t).await? {
                self.inner.cache.invalidate_tenant(id);
                tracing::info!(tenant = %id, revision = t.revision, "tenant updated");
                return Ok(self.view(t));
            }
        }
        Err(Error::Conflict(format!("tenant {id}")))
    }

    /// Deletes tenant `id`: no further admissions, its tokens revoked (in the store and in this
    /// node's cache), then every resource it owns asked to stop through the core (the normal
    /// graceful path), waiting up to the stop deadline for them to be gone.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::Store`].
    pub async fn delete_tenant(&self, id: &TenantId) -> Result<TenantDeleted> {
        self.inner.ledger.close(id);
        let tokens = match self.inner.store.delete_tenant(id).await {
            Ok(Some(tokens)) => tokens,
            Ok(None) => {
                self.inner.ledger.forget(id);
                return Err(Error::NotFound(format!("tenant {id}")));
            }
            Err(e) => {
                self.inner.ledger.open(id);
                return Err(e);
            }
        };
        for t in &tokens {
            self.inner.cache.invalidate(t);
        }
        self.inner.cache.invalidate_tenant(id);
        let registry = &self.inner.registry;
        let control = Control::new(registry.clone());
        let ids = registry.ids_of_tenant(id.as_str());
        for rid in &ids {
            if let Err(e) = control.stop(*rid, ExitReason::Shutdown) {
                tracing::debug!(tenant = %id, resource.id = %rid, error = %e, "resource already gone");
            }
        }
        // each supervisor kills what has not stopped by its deadline; the margin lets the kill
        // land before this one counts what is left
        let deadline = std::time::Instant::now() + self.inner.stop_deadline + KILL_MARGIN;
        let mut left = 0;
        for rid in &ids {
            if !registry.wait_gone(*rid, deadline).await {
                left += 1;
            }
        }
        self.inner.ledger.forget(id);
        tracing::info!(
            tenant = %id,
            tokens_revoked = tokens.len(),
            resources_stopped = ids.len(),
            resources_left = left,
            "tenant deleted"
        );
        Ok(TenantDeleted {
            tokens_revoked: tokens.len(),
            resources_stopped: ids.len(),
            resources_left: left,
        })
    }

    /// Issues a token for `tenant`. The returned bearer string is the only copy of the secret.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for `name` or `expires_in` (not a positive human duration,
    /// or longer than `tenancy.max_token_lifetime`); [`Error::NotFound`] when the tenant does
    /// not exist; [`Error::LimitReached`] at `tenancy.max_tokens_per_tenant`; [`Error::Store`].
    pub async fn issue_token(&self, tenant: &TenantId, new: NewToken) -> Result<IssuedToken> {
        validate_name("name", &new.name, MAX_TOKEN_NAME)?;
        let lifetime = new.expires_in.as_deref().map(|s| self.lifetime(s)).transpose()?;
        // an unknown tenant counts 0 tokens; the insert's foreign key then answers NotFound
        let max = self.inner.config.max_tokens_per_tenant;
        if self.inner.store.count_tokens(tenant).await? >= u64::from(max) {
            return Err(Error::LimitReached(format!(
                "at most {max} tokens per tenant (tenancy.max_tokens_per_tenant)"
            )));
        }
        let generated = token::generate()?;
        let now = store::now_millis();
        let info = TokenInfo {
            id: generated.id,
            tenant: tenant.clone(),
            name: new.name,
            created_at: now,
            expires_at: lifetime.map(|d| now + d),
        };
        self.inner.store.insert_token(&info, &generated.secret.sha256_hex()).await?;
        if let Some(at) = info.expires_at {
            self.inner.purge.issued(info.id.clone(), at);
        }
        tracing::info!(tenant = %tenant, token_id = %info.id, "token issued");
        Ok(IssuedToken { info, bearer: generated.bearer })
    }

    fn lifetime(&self, s: &str) -> Result<Duration> {
        let d = humantime::parse_duration(s).map_err(|e| {
            Error::invalid("expires_in", &format!("not a duration like \"30d\" or \"1h\": {e}"))
        })?;
        if d.is_zero() {
            return Err(Error::invalid("expires_in", "must be greater than 0s"));
        }
        let max = self.inner.config.max_token_lifetime;
        if !max.is_zero() && d > max {
            return Err(Error::invalid(
                "expires_in",
                &format!(
                    "must be at most {} (tenancy.max_token_lifetime)",
                    humantime::format_duration(max)
                ),
            ));
        }
        Ok(d)
    }

    /// The tokens of `tenant`, without secrets.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the tenant does not exist; [`Error::Store`].
    pub async fn tokens(&self, tenant: &TenantId) -> Result<Vec<TokenInfo>> {
        if self.inner.store.tenant(tenant).await?.is_none() {
            return Err(Error::NotFound(format!("tenant {tenant}")));
        }
        self.inner.store.tokens(tenant).await
    }

    /// Revokes token `id`: deleted from the store and this node's cache, so the next request
    /// with it is refused (within `tenancy.token_cache_ttl` on other nodes).
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::Store`].
    pub async fn revoke_token(&self, id: &TokenId) -> Result<TenantId> {
        let tenant = self
            .inner
            .store
            .delete_token(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("token {id}")))?;
        self.inner.cache.invalidate(id);
        tracing::info!(tenant = %tenant, token_id = %id, "token revoked");
        Ok(tenant)
    }

    /// Failed tenant-token authentications per client IP (`[tenancy] max_auth_failures_per_ip`).
    #[must_use]
    pub fn auth_failures(&self) -> &AuthFailures {
        &self.inner.failures
    }

    /// Unknown token ids in this node's negative cache (after pending evictions ran).
    #[must_use]
    pub fn cached_unknown_tokens(&self) -> u64 {
        self.inner.cache.unknown_len()
    }

    /// [`Tenancy::authenticate`] for a request from client `ip`: refused at once while `ip` is
    /// over `[tenancy] max_auth_failures_per_ip`, and a failure is counted against it.
    ///
    /// # Errors
    /// [`Error::Throttled`] while `ip` is over its limit; else as [`Tenancy::authenticate`].
    pub async fn authenticate_from(
        &self,
        ip: std::net::IpAddr,
        bearer: Option<&str>,
    ) -> Result<TenantContext> {
        let failures = &self.inner.failures;
        failures.check(ip).map_err(|retry_after| Error::Throttled { retry_after })?;
        let result = match bearer {
            Some(bearer) => self.authenticate(bearer).await,
            None => Err(Error::Unauthenticated),
        };
        if matches!(result, Err(Error::Unauthenticated)) {
            failures.record(ip);
        }
        result
    }

    /// Resolves a presented bearer token to its tenant.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] for a malformed, unknown, revoked or expired token, or a
    /// wrong secret — the same error in every case, so a caller learns nothing about which
    /// tenants or tokens exist; [`Error::Store`] when the store cannot be asked.
    pub async fn authenticate(&self, bearer: &str) -> Result<TenantContext> {
        let (id, secret) = token::parse(bearer.trim())?;
        let now = store::now_millis();
        let cached = match self.inner.cache.get(&id) {
            Some(c) => c,
            None => {
                if self.inner.cache.known_unknown(&id) {
                    return Err(Error::Unauthenticated);
                }
                let Some((record, tenant)) = self.inner.store.token_with_tenant(&id).await? else {
                    self.inner.cache.insert_unknown(id);
                    return Err(Error::Unauthenticated);
                };
                let quotas = Quotas::resolve(self.default_quotas(), &tenant.quota_overrides);
                let cached = Arc::new(Cached {
                    secret_sha256: record.secret_sha256,
                    context: TenantContext::new(tenant, quotas, record.info),
                });
                self.inner.cache.insert(id, cached.clone());
                cached
            }
        };
        if !secret.matches(&cached.secret_sha256) || !TokenCache::live(&cached, now) {
            return Err(Error::Unauthenticated);
        }
        Ok(cached.context.clone())
    }

    /// Reserves a live `kind` slot for the caller's tenant (see [`QuotaLedger::admit`]); hold
    /// the reservation in the resource's child spec (`ChildSpec::hold`).
    ///
    /// # Errors
    /// As [`QuotaLedger::admit`].
    pub fn admit(&self, ctx: &TenantContext, kind: ResourceKind) -> Result<Reservation> {
        self.inner.ledger.admit(ctx.tenant_id(), ctx.quotas(), kind)
    }

    /// Reserves one slot of `quota` (`jobs`, `watch_streams`) for the caller's tenant (see
    /// [`QuotaLedger::reserve`]); the slot is released when the reservation drops.
    ///
    /// # Errors
    /// As [`QuotaLedger::reserve`].
    pub fn reserve(&self, ctx: &TenantContext, quota: QuotaKind) -> Result<Reservation> {
        self.inner.ledger.reserve(ctx.tenant_id(), ctx.quotas(), quota)
    }

    /// Live usage of `tenant` per kind on this node, from the registry.
    #[must_use]
    pub fn usage(&self, tenant: &TenantId) -> Vec<(ResourceKind, u64)> {
        self.inner.registry.tenant_usage(tenant.as_str()).to_vec()
    }

    /// Closes the store's connections (shutdown phase `flush`).
    pub async fn close(&self) {
        self.inner.store.close().await;
    }
}
