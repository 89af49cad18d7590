//! Producers: one actor per (tenant, producer id — or topic when the client gives none).
//!
//! Seed 001's proxy created producers and never cleaned them up. Here a producer is a resource
//! (kind `producer`, a temporary child of `producers`) holding its tenant's quota slot, and the
//! [`ProducerTable`] maps its key to it. A send holds an [`InFlight`] guard (the reference
//! count) for as long as the broker takes; the guard records the producer's last activity when
//! it drops. The idle sweep (`[messaging] producer_sweep_interval`) stops every producer with no
//! send in flight and no activity for `producer_cleanup_timeout`, counting
//! `producer_leak_detections`; `CleanupProducer` stops one at once. Both take the entry out of
//! the table under its lock, so a concurrent send starts a fresh producer instead of using a
//! stopping one. The actor's `Drop` removes its own entry if it is still there (crash, kill,
//! tenant deletion): the table holds exactly the live producers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix::prelude::*;
use steward_core::{Resource, ResourceCtx, ResourceId, StopResource, stop_resource};

/// (tenant, producer id or topic).
pub(crate) type ProducerKey = (Arc<str>, Arc<str>);

/// The live producers by key.
pub(crate) struct ProducerTable {
    entries: Mutex<HashMap<ProducerKey, Arc<ProducerShared>>>,
    epoch: Instant,
}

/// What a producer and its sends share.
pub(crate) struct ProducerShared {
    pub(crate) id: ResourceId,
    inflight: AtomicUsize,
    /// Milliseconds since the table's epoch.
    last_active: AtomicU64,
}

impl Default for ProducerTable {
    fn default() -> Self {
        Self { entries: Mutex::default(), epoch: Instant::now() }
    }
}

impl ProducerTable {
    fn lock(&self) -> MutexGuard<'_, HashMap<ProducerKey, Arc<ProducerShared>>> {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A send on the live producer `key`, if there is one.
    pub(crate) fn acquire(self: &Arc<Self>, key: &ProducerKey) -> Option<InFlight> {
        let map = self.lock();
        let shared = map.get(key)?.clone();
        shared.inflight.fetch_add(1, Ordering::AcqRel);
        Some(InFlight { shared, table: self.clone() })
    }

    /// Registers a new producer under `key` (its factory calls this). Answers `None` when a
    /// live one is there already (a concurrent send won the race).
    pub(crate) fn register(&self, key: ProducerKey, id: ResourceId) -> Option<Arc<ProducerShared>> {
        let mut map = self.lock();
        if map.contains_key(&key) {
            return None;
        }
        let shared = Arc::new(ProducerShared {
            id,
            inflight: AtomicUsize::new(0),
            last_active: AtomicU64::new(self.now_ms()),
        });
        map.insert(key, shared.clone());
        Some(shared)
    }

    /// Takes `key` out of the table (CleanupProducer); answers the producer to stop.
    pub(crate) fn remove(&self, key: &ProducerKey) -> Option<ResourceId> {
        self.lock().remove(key).map(|s| s.id)
    }

    /// Takes out every producer with no send in flight and no activity for `timeout`;
    /// answers them to stop.
    pub(crate) fn sweep(&self, timeout: Duration) -> Vec<ResourceId> {
        let now = self.now_ms();
        let timeout = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let mut idle = Vec::new();
        self.lock().retain(|_, s| {
            let quiet = now.saturating_sub(s.last_active.load(Ordering::Acquire)) >= timeout;
            if s.inflight.load(Ordering::Acquire) == 0 && quiet {
                idle.push(s.id);
                false
            } else {
                true
            }
        });
        idle
    }

    /// Records activity on the producers `keys` (Heartbeat); answers how many are live.
    pub(crate) fn touch(&self, keys: &[ProducerKey]) -> u32 {
        let now = self.now_ms();
        let map = self.lock();
        let mut live = 0;
        for key in keys {
            if let Some(s) = map.get(key) {
                s.last_active.store(now, Ordering::Release);
                live += 1;
            }
        }
        live
    }

    /// Live producers.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn forget(&self, key: &ProducerKey, id: ResourceId) {
        let mut map = self.lock();
        if map.get(key).is_some_and(|s| s.id == id) {
            map.remove(key);
        }
    }
}

/// One send in flight on a producer: the producer is not swept while it lives.
pub(crate) struct InFlight {
    shared: Arc<ProducerShared>,
    table: Arc<ProducerTable>,
}

impl InFlight {
    pub(crate) fn producer(&self) -> ResourceId {
        self.shared.id
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.shared.last_active.store(self.table.now_ms(), Ordering::Release);
        self.shared.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One producer (kind `producer`, a temporary child of `producers`). It owns its table entry
/// and, through its child spec, its tenant's quota slot.
pub struct Producer {
    rcx: ResourceCtx,
    key: ProducerKey,
    table: Arc<ProducerTable>,
}

impl Producer {
    /// Registers under `key`; `None` when a live producer has it already.
    pub(crate) fn new(
        rcx: ResourceCtx,
        key: ProducerKey,
        table: Arc<ProducerTable>,
    ) -> Option<Self> {
        table.register(key.clone(), rcx.id())?;
        Some(Self { rcx, key, table })
    }
}

impl Actor for Producer {
    type Context = Context<Self>;
}

impl Handler<StopResource> for Producer {
    type Result = ();

    fn handle(&mut self, msg: StopResource, ctx: &mut Self::Context) {
        stop_resource(self, ctx, msg.reason);
    }
}

impl Resource for Producer {
    fn resource_ctx(&self) -> &ResourceCtx {
        &self.rcx
    }

    fn resource_ctx_mut(&mut self) -> &mut ResourceCtx {
        &mut self.rcx
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.table.forget(&self.key, self.rcx.id());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_takes_only_quiet_producers_without_sends_in_flight() {
        let table = Arc::new(ProducerTable::default());
        let (a, b): (ProducerKey, ProducerKey) =
            (("t".into(), "a".into()), ("t".into(), "b".into()));
        let (ia, ib) = (ResourceId::next(), ResourceId::next());
        table.register(a.clone(), ia).unwrap();
        table.register(b.clone(), ib).unwrap();
        assert!(table.register(a.clone(), ResourceId::next()).is_none(), "one producer per key");
        let busy = table.acquire(&b).unwrap();
        assert_eq!(table.sweep(Duration::ZERO), vec![ia], "b has a send in flight");
        assert!(table.acquire(&a).is_none(), "a swept producer takes no more sends");
        drop(busy);
        assert!(table.sweep(Duration::from_secs(60)).is_empty(), "b was active just now");
        assert_eq!(table.sweep(Duration::ZERO), vec![ib]);
        assert_eq!(table.len(), 0);
    }
}
