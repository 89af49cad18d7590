//! Atomic admission: a slot per tenant and quota is reserved before a resource starts and
//! released when its [`Reservation`] drops (the supervisor holds it in the child's slot, see
//! `ChildSpec::hold`). The reservation is one compare-and-swap on the tenant's live counter, so
//! there is no window between checking and taking a slot: N concurrent admissions against a quota
//! of Q admit exactly min(N, Q).
//!
//! Rates (session creations per minute) use a GCRA limiter from `governor` per tenant, rebuilt
//! when the tenant's quota changes.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota as Gcra, RateLimiter};
use steward_core::ResourceKind;

use crate::model::{QuotaKind, Quotas, TenantId};
use crate::{Error, Result};

const QUOTAS: usize = QuotaKind::ALL.len();

fn index(q: QuotaKind) -> usize {
    QuotaKind::ALL.iter().position(|k| *k == q).unwrap_or(0)
}

/// One tenant's counters.
struct TenantCounters {
    tenant: TenantId,
    /// Reserved slots per quota (live-resource quotas only).
    live: [AtomicU64; QUOTAS],
    /// The tenant's limits as last seen by an admission (for `/metrics`; `u64::MAX` = never seen).
    limits: [AtomicU64; QUOTAS],
    /// Admissions granted since boot.
    admitted: [AtomicU64; QUOTAS],
    /// Admissions refused since boot.
    refused: [AtomicU64; QUOTAS],
    /// Set while the tenant is being deleted: nothing more is admitted.
    closed: AtomicBool,
    /// Session-creation limiter and the per-minute limit it was built for.
    rate: Mutex<Option<(u64, DefaultDirectRateLimiter)>>,
}

impl TenantCounters {
    fn new(tenant: TenantId) -> Self {
        Self {
            tenant,
            live: Default::default(),
            limits: std::array::from_fn(|_| AtomicU64::new(u64::MAX)),
            admitted: Default::default(),
            refused: Default::default(),
            closed: AtomicBool::new(false),
            rate: Mutex::new(None),
        }
    }

    fn refuse(&self, quota: QuotaKind, limit: u64, retry_after: Option<Duration>) -> Error {
        self.refused[index(quota)].fetch_add(1, Ordering::Relaxed);
        Error::QuotaExceeded {
            tenant: self.tenant.to_string(),
            quota,
            limit,
            retry_after: retry_after.filter(|_| limit > 0),
        }
    }
}

/// A reserved slot; dropping it releases the slot. Hand it to `ChildSpec::hold` so it lives
/// exactly as long as the resource's supervisor slot.
pub struct Reservation {
    counters: Arc<TenantCounters>,
    quota: Option<QuotaKind>,
}

impl Reservation {
    /// The tenant it counts against.
    #[must_use]
    pub fn tenant(&self) -> &TenantId {
        &self.counters.tenant
    }
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation")
            .field("tenant", &self.counters.tenant)
            .field("quota", &self.quota)
            .finish()
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(q) = self.quota {
            self.counters.live[index(q)].fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// One tenant's quota counters, as read at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaStats {
    /// The tenant.
    pub tenant: TenantId,
    /// One entry per quota, in [`QuotaKind::ALL`] order.
    pub quotas: Vec<QuotaCount>,
}

/// The counters of one quota of one tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaCount {
    /// The quota.
    pub quota: QuotaKind,
    /// Slots reserved now (live-resource quotas; 0 for rates and for the quotas the broker
    /// counts: topics, groups, stored messages and bytes).
    pub reserved: u64,
    /// The tenant's limit as last seen by an admission (`None` before the first).
    pub limit: Option<u64>,
    /// Admissions granted since boot.
    pub admitted: u64,
    /// Admissions refused since boot.
    pub refused: u64,
}

/// The per-node admission ledger. Cheap to clone.
#[derive(Clone)]
pub struct QuotaLedger {
    tenants: Arc<Mutex<HashMap<TenantId, Arc<TenantCounters>>>>,
    retry_after: Duration,
}

impl QuotaLedger {
    /// An empty ledger; refusals of live-resource quotas advise `retry_after`.
    #[must_use]
    pub fn new(retry_after: Duration) -> Self {
        Self { tenants: Arc::default(), retry_after }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<TenantId, Arc<TenantCounters>>> {
        self.tenants.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn counters(&self, tenant: &TenantId) -> Arc<TenantCounters> {
        self.lock()
            .entry(tenant.clone())
            .or_insert_with(|| Arc::new(TenantCounters::new(tenant.clone())))
            .clone()
    }

    /// Reserves one live `kind` resource for `tenant` under `quotas`. Kinds without a quota
    /// (browsers, services) are admitted without a limit.
    ///
    /// # Errors
    /// [`Error::QuotaExceeded`] naming the quota when the tenant is at its limit (with
    /// `retry_after` unless the limit is 0); [`Error::NotFound`] while the tenant is being
    /// deleted.
    pub fn admit(
        &self,
        tenant: &TenantId,
        quotas: &Quotas,
        kind: ResourceKind,
    ) -> Result<Reservation> {
        match QuotaKind::for_resource(kind) {
            Some(quota) => self.reserve(tenant, quotas, quota),
            None => Ok(Reservation { counters: self.open_counters(tenant)?, quota: None }),
        }
    }

    /// `tenant`'s counters, unless it is being deleted.
    fn open_counters(&self, tenant: &TenantId) -> Result<Arc<TenantCounters>> {
        let counters = self.counters(tenant);
        if counters.closed.load(Ordering::Acquire) {
            return Err(Error::NotFound(format!("tenant {tenant}")));
        }
        Ok(counters)
    }

    /// Reserves one slot of `quota` for `tenant` under `quotas`, for what is not a resource of
    /// its own: a job (`jobs`), a `WatchJob` stream (`watch_streams`). Released when the
    /// [`Reservation`] drops.
    ///
    /// # Errors
    /// As [`QuotaLedger::admit`].
    pub fn reserve(
        &self,
        tenant: &TenantId,
        quotas: &Quotas,
        quota: QuotaKind,
    ) -> Result<Reservation> {
        let counters = self.open_counters(tenant)?;
        Self::take(&counters, quotas, quota, self.retry_after)
    }

    fn take(
        counters: &Arc<TenantCounters>,
        quotas: &Quotas,
        quota: QuotaKind,
        retry_after: Duration,
    ) -> Result<Reservation> {
        Self::note(counters, quotas);
        let limit = quotas.get(quota);
        let i = index(quota);
        let taken = counters.live[i]
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < limit).then_some(n + 1));
        if taken.is_err() {
            return Err(counters.refuse(quota, limit, Some(retry_after)));
        }
        counters.admitted[i].fetch_add(1, Ordering::Relaxed);
        Ok(Reservation { counters: counters.clone(), quota: Some(quota) })
    }

    /// Remembers `quotas` as the tenant's limits, for `/metrics`.
    fn note(counters: &TenantCounters, quotas: &Quotas) {
        for q in QuotaKind::ALL {
            counters.limits[index(q)].store(quotas.get(q), Ordering::Relaxed);
        }
    }

    /// Records what another component decided for `tenant` under `quotas` (the broker counts
    /// topics, groups and stored messages itself): an admission when `refused` is false, else
    /// a refusal. Keeps `/metrics` complete.
    pub fn record(&self, tenant: &TenantId, quotas: &Quotas, quota: QuotaKind, refused: bool) {
        let counters = self.counters(tenant);
        Self::note(&counters, quotas);
        let i = index(quota);
        if refused {
            counters.refused[i].fetch_add(1, Ordering::Relaxed);
        } else {
            counters.admitted[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Takes one session creation from `tenant`'s per-minute budget (`session_rate`), GCRA:
    /// bursts up to the limit, refilled evenly over the minute.
    ///
    /// # Errors
    /// [`Error::QuotaExceeded`] for quota `session_rate`, with the exact wait until the next
    /// creation is allowed (none when the limit is 0); [`Error::NotFound`] while the tenant is
    /// being deleted.
    pub fn take_session_rate(&self, tenant: &TenantId, quotas: &Quotas) -> Result<()> {
        let counters = self.counters(tenant);
        if counters.closed.load(Ordering::Acquire) {
            return Err(Error::NotFound(format!("tenant {tenant}")));
        }
        let q = QuotaKind::SessionRate;
        Self::note(&counters, quotas);
        let limit = quotas.session_rate;
        let Some(per_minute) = NonZeroU32::new(u32::try_from(limit).unwrap_or(u32::MAX)) else {
            return Err(counters.refuse(q, 0, None));
        };
        let mut rate = counters.rate.lock().unwrap_or_else(PoisonError::into_inner);
        if rate.as_ref().is_none_or(|(l, _)| *l != limit) {
            *rate = Some((limit, RateLimiter::direct(Gcra::per_minute(per_minute))));
        }
        let Some((_, limiter)) = rate.as_ref() else { return Ok(()) };
        match limiter.check() {
            Ok(()) => {
                counters.admitted[index(q)].fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Err(counters.refuse(q, limit, Some(wait)))
            }
        }
    }

    /// Opens (or reopens) `tenant` for admissions with fresh counters; reservations of an
    /// earlier tenant of the same id keep counting against the old counters.
    pub fn open(&self, tenant: &TenantId) {
        self.lock().insert(tenant.clone(), Arc::new(TenantCounters::new(tenant.clone())));
    }

    /// Refuses every further admission of `tenant` (it is being deleted).
    pub fn close(&self, tenant: &TenantId) {
        self.counters(tenant).closed.store(true, Ordering::Release);
    }

    /// Forgets `tenant`'s counters (after its deletion completed).
    pub fn forget(&self, tenant: &TenantId) {
        self.lock().remove(tenant);
    }

    /// Slots reserved now by `tenant`, per quota.
    #[must_use]
    pub fn reserved(&self, tenant: &TenantId) -> Vec<(QuotaKind, u64)> {
        let counters = self.lock().get(tenant).cloned();
        QuotaKind::ALL
            .iter()
            .map(|q| {
                (*q, counters.as_ref().map_or(0, |c| c.live[index(*q)].load(Ordering::Acquire)))
            })
            .collect()
    }

    /// Every tenant's counters, sorted by tenant (for `/metrics`).
    #[must_use]
    pub fn stats(&self) -> Vec<QuotaStats> {
        let all: Vec<Arc<TenantCounters>> = self.lock().values().cloned().collect();
        let mut stats: Vec<QuotaStats> = all
            .iter()
            .map(|c| QuotaStats {
                tenant: c.tenant.clone(),
                quotas: QuotaKind::ALL
                    .iter()
                    .map(|q| {
                        let i = index(*q);
                        QuotaCount {
                            quota: *q,
                            reserved: c.live[i].load(Ordering::Acquire),
                            limit: Some(c.limits[i].load(Ordering::Relaxed))
                                .filter(|l| *l != u64::MAX),
                            admitted: c.admitted[i].load(Ordering::Relaxed),
                            refused: c.refused[i].load(Ordering::Relaxed),
                        }
                    })
                    .collect(),
            })
            .collect();
        stats.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        stats
    }
}
