//! State shared by the service, the browsers and the sessions: config, counters, the pool table
//! (every browser's published state, for placement), the session directory and the wait queue.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use actix::Addr;
use steward_config::BrowserConfig;
use steward_core::{Registry, ResourceId, SupervisorCell};
use tokio::sync::Notify;

use crate::CloseReason;
use crate::browser::BrowserActor;
use crate::service::AdmitGuard;
use crate::session::SessionHandle;
use crate::stats::{BrowserState, BrowserStats};

pub(crate) struct Shared {
    pub(crate) config: BrowserConfig,
    pub(crate) registry: Registry,
    /// Where browsers run their CDP connection (tonic's runtime), if not on their arbiter.
    pub(crate) io: Option<tokio::runtime::Handle>,
    pub(crate) stats: Arc<BrowserStats>,
    /// The `browsers` supervisor.
    pub(crate) browsers: SupervisorCell,
    /// The `sessions` supervisor.
    pub(crate) sessions: SupervisorCell,
    /// Every browser actor's published state, by its resource id.
    pub(crate) pool: Mutex<HashMap<ResourceId, PoolEntry>>,
    /// Every live session, by id.
    pub(crate) directory: Mutex<HashMap<ResourceId, SessionHandle>>,
    /// Sessions closed lately, so a call on one learns why it went.
    pub(crate) recent: Mutex<Recent>,
    /// The wait queue.
    pub(crate) queue: Queue,
    /// Serialises placement decisions that may start a browser, so concurrent first sessions
    /// share one instead of each starting its own.
    pub(crate) placement: tokio::sync::Mutex<()>,
    /// The loopback ports of every egress proxy running now.
    pub(crate) walls: Arc<crate::egress::Walls>,
    /// `[browser] egress_hosts`, as the proxies' resolver reads it.
    pub(crate) egress_hosts: Arc<crate::egress::Hosts>,
}

/// A browser as placement sees it; written by the browser actor, removed when it goes.
#[derive(Clone)]
pub(crate) struct PoolEntry {
    pub(crate) addr: Addr<BrowserActor>,
    /// The tenant whose remote endpoint this is; `None` for a local Chromium.
    pub(crate) tenant: Option<Arc<str>>,
    /// The one tenant a local Chromium serves (`isolation = "tenant"`); `None` when shared.
    pub(crate) serves: Option<Arc<str>>,
    pub(crate) endpoint: Option<String>,
    pub(crate) state: BrowserState,
    pub(crate) pid: Option<u32>,
    pub(crate) contexts: usize,
    /// The page sets of its sessions, counted when read (sessions open and close pages
    /// without telling the browser).
    pub(crate) pages: Vec<Pages>,
    pub(crate) contexts_created: u64,
    pub(crate) started_at: SystemTime,
}

/// Per-tenant waiting counts and one wake-up for every slot released anywhere.
#[derive(Default)]
pub(crate) struct Queue {
    waiting: Mutex<HashMap<Arc<str>, u32>>,
    pub(crate) released: Arc<Notify>,
}

/// One place in a tenant's queue; leaving it (drop) frees the place.
pub(crate) struct QueuePlace<'a> {
    queue: &'a Queue,
    tenant: Arc<str>,
    stats: &'a BrowserStats,
    since: Instant,
}

impl Queue {
    /// Takes a place in `tenant`'s queue if it has fewer than `max` waiting.
    pub(crate) fn enter<'a>(
        &'a self,
        tenant: &Arc<str>,
        max: u32,
        stats: &'a BrowserStats,
    ) -> Option<QueuePlace<'a>> {
        let mut waiting = lock(&self.waiting);
        let n = waiting.entry(tenant.clone()).or_insert(0);
        if *n >= max {
            if *n == 0 {
                waiting.remove(tenant);
            }
            return None;
        }
        *n += 1;
        BrowserStats::inc(&stats.queue_waiting);
        Some(QueuePlace { queue: self, tenant: tenant.clone(), stats, since: Instant::now() })
    }

    /// Calls waiting now, per tenant.
    pub(crate) fn waiting(&self) -> Vec<(Arc<str>, u32)> {
        lock(&self.waiting).iter().map(|(t, n)| (t.clone(), *n)).collect()
    }
}

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        let mut waiting = lock(&self.queue.waiting);
        if let Some(n) = waiting.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                waiting.remove(&self.tenant);
            }
        }
        self.stats.queue_waiting.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        self.stats.queue_wait.observe(self.since.elapsed().as_secs_f64());
    }
}

/// A session's admission, held by its child spec: releases the tenant's slot, then wakes the
/// queue (in that order, so a woken call finds the slot free).
pub(crate) struct SlotGuard {
    admit: Option<AdmitGuard>,
    released: Arc<Notify>,
}

impl SlotGuard {
    pub(crate) fn new(admit: AdmitGuard, released: Arc<Notify>) -> Self {
        Self { admit: Some(admit), released }
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        drop(self.admit.take());
        self.released.notify_waiters();
    }
}

/// A session's page target ids, shared with its browser's reconciler, and how many pages it is
/// opening now (their ids are not known yet, so the reconciler leaves that context's pages
/// alone meanwhile).
#[derive(Debug, Default)]
pub(crate) struct PageSet {
    pub(crate) ids: Vec<String>,
    pub(crate) opening: u32,
}

/// See [`PageSet`].
pub(crate) type Pages = Arc<Mutex<PageSet>>;

/// How long a closed session's reason is remembered (as the registry's `stopped_retention`).
const RECENT_TTL: Duration = Duration::from_secs(60);
/// Most closed sessions remembered; the oldest go first.
const RECENT_CAP: usize = 4096;

/// Sessions closed for a reason their client did not choose (browser lost, page crashed, idle,
/// …), for [`RECENT_TTL`] and at most [`RECENT_CAP`]: a later call on one answers that reason
/// (`browser_unavailable`, `page_crashed`, …) instead of a bare `not_found`.
#[derive(Default)]
pub(crate) struct Recent {
    order: VecDeque<(Instant, ResourceId)>,
    by_id: HashMap<ResourceId, (Arc<str>, CloseReason)>,
}

impl Recent {
    pub(crate) fn insert(&mut self, id: ResourceId, tenant: Arc<str>, reason: CloseReason) {
        let now = Instant::now();
        self.prune(now);
        if self.order.len() >= RECENT_CAP
            && let Some((_, old)) = self.order.pop_front()
        {
            self.by_id.remove(&old);
        }
        self.order.push_back((now, id));
        self.by_id.insert(id, (tenant, reason));
    }

    pub(crate) fn get(&mut self, id: ResourceId) -> Option<(Arc<str>, CloseReason)> {
        self.prune(Instant::now());
        self.by_id.get(&id).cloned()
    }

    fn prune(&mut self, now: Instant) {
        while let Some((at, id)) = self.order.front().copied() {
            if now.duration_since(at) < RECENT_TTL {
                break;
            }
            self.order.pop_front();
            self.by_id.remove(&id);
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
