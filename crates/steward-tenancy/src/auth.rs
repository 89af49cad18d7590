//! Authentication: a presented bearer token resolved to a [`TenantContext`], through a short-lived
//! cache of token records.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::model::{Quotas, Tenant, TenantId, TokenId, TokenInfo};

/// Who is calling: the tenant (with its effective quotas) and the token used. What handlers of
/// every front door receive once a request is authenticated. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TenantContext(Arc<Resolved>);

#[derive(Debug)]
struct Resolved {
    tenant: Tenant,
    quotas: Quotas,
    token: TokenInfo,
}

impl TenantContext {
    pub(crate) fn new(tenant: Tenant, quotas: Quotas, token: TokenInfo) -> Self {
        Self(Arc::new(Resolved { tenant, quotas, token }))
    }

    /// The tenant's id.
    #[must_use]
    pub fn tenant_id(&self) -> &TenantId {
        &self.0.tenant.id
    }

    /// The tenant as it was when the token was resolved (at most `tenancy.token_cache_ttl` old).
    #[must_use]
    pub fn tenant(&self) -> &Tenant {
        &self.0.tenant
    }

    /// Its effective quotas.
    #[must_use]
    pub fn quotas(&self) -> &Quotas {
        &self.0.quotas
    }

    /// The token the request carried (never its secret).
    #[must_use]
    pub fn token(&self) -> &TokenInfo {
        &self.0.token
    }
}

/// A resolved token: the stored hash and the context it grants.
#[derive(Debug)]
pub(crate) struct Cached {
    pub(crate) secret_sha256: String,
    pub(crate) context: TenantContext,
}

/// Token records cached by token id for at most `tenancy.token_cache_ttl` (<= 1 s), so a
/// revocation on another node takes effect within it; revocations on this node invalidate the
/// entry at once. Token ids the store does not know are remembered as unknown for the same
/// TTL (the negative cache, bounded by the same capacity), so a flood of well-formed made-up
/// tokens costs one store query per id and second, not one per request; a token created on
/// another node is found within the TTL. Cheap to clone.
#[derive(Clone)]
pub(crate) struct TokenCache {
    found: moka::sync::Cache<TokenId, Arc<Cached>>,
    unknown: moka::sync::Cache<TokenId, ()>,
}

impl TokenCache {
    pub(crate) fn new(ttl: Duration, capacity: u64) -> Self {
        let ttl = ttl.max(Duration::from_millis(1));
        Self {
            found: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .support_invalidation_closures()
                .build(),
            unknown: moka::sync::Cache::builder().max_capacity(capacity).time_to_live(ttl).build(),
        }
    }

    pub(crate) fn get(&self, id: &TokenId) -> Option<Arc<Cached>> {
        self.found.get(id)
    }

    pub(crate) fn insert(&self, id: TokenId, cached: Arc<Cached>) {
        self.unknown.invalidate(&id);
        self.found.insert(id, cached);
    }

    /// Whether the store said recently that `id` does not exist.
    pub(crate) fn known_unknown(&self, id: &TokenId) -> bool {
        self.unknown.contains_key(id)
    }

    /// Remembers that the store does not know `id`.
    pub(crate) fn insert_unknown(&self, id: TokenId) {
        self.unknown.insert(id, ());
    }

    /// Unknown ids remembered now, after pending evictions ran.
    pub(crate) fn unknown_len(&self) -> u64 {
        self.unknown.run_pending_tasks();
        self.unknown.entry_count()
    }

    /// Entries now, after pending evictions ran.
    pub(crate) fn len(&self) -> u64 {
        self.found.run_pending_tasks();
        self.found.entry_count()
    }

    pub(crate) fn invalidate(&self, id: &TokenId) {
        self.found.invalidate(id);
    }

    /// Drops every cached token of `tenant` (its quotas changed or it was deleted).
    pub(crate) fn invalidate_tenant(&self, tenant: &TenantId) {
        let tenant = tenant.clone();
        if self.found.invalidate_entries_if(move |_, c| *c.context.tenant_id() == tenant).is_err() {
            self.found.invalidate_all();
        }
    }

    /// Whether `cached` is still usable at `now` (not expired).
    pub(crate) fn live(cached: &Cached, now: SystemTime) -> bool {
        cached.context.token().expires_at.is_none_or(|at| now < at)
    }
}
