//! The memory engine: a stream's data is plain state of its actor, lost when it stops (the
//! next incarnation starts a new epoch, so no client mistakes it for the old history).
//!
//! One deadline queue covers everything that expires: the history ring is in publication order,
//! so its front is its next expiry; key values and idempotency keys are entries of an ordered
//! map by deadline, moved when a key is published again and removed with the key, so the queue
//! holds exactly what is live. Nothing scans all keys. Every held publication and idempotency key carries a [`Charge`] against the
//! tenant's `stream_bytes` budget, given back when the last reference goes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use futures_util::FutureExt as _;

use super::{Charge, Engine, Expired, StoreFuture, StreamLimits, StreamStore};
use crate::model::{
    HistoryPage, HistoryQuery, NewPublication, Position, Publication, Published, Snapshot,
    StoreInfo, StreamRef, now_ms,
};
use crate::{Error, Result};

/// Bytes an idempotency key holds besides its text.
const IDEMPOTENCY_OVERHEAD: u64 = 48;

/// The memory engine (`[streams] engine = "memory"`).
#[derive(Debug, Default, Clone, Copy)]
pub struct MemoryEngine;

impl Engine for MemoryEngine {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn open(&self, _stream: &StreamRef, limits: StreamLimits) -> Box<dyn StreamStore> {
        Box::new(MemoryStore::new(limits))
    }
}

/// A publication held, with its charge.
#[derive(Debug)]
struct Held {
    publication: Publication,
    at: Instant,
    _charge: Charge,
}

/// A key's latest value and its entry in the deadline queue.
#[derive(Debug)]
struct Latest {
    held: Arc<Held>,
    due: Option<DueAt>,
}

/// An entry of the deadline queue: when, and a sequence number that makes it unique.
type DueAt = (Instant, u64);

/// Something in the deadline queue.
#[derive(Debug)]
enum Due {
    /// The latest value of this key (`None`: the key-less one) expires.
    Key(Option<Arc<str>>),
    /// This idempotency key is forgotten.
    Idempotency(Arc<str>),
}

/// One stream's data in memory.
#[derive(Debug)]
pub struct MemoryStore {
    limits: StreamLimits,
    epoch: String,
    top: u64,
    history: VecDeque<Arc<Held>>,
    latest: HashMap<Option<Arc<str>>, Latest>,
    idempotency: HashMap<Arc<str>, (u64, DueAt, Charge)>,
    deadlines: BTreeMap<DueAt, Due>,
    seq: u64,
}

impl MemoryStore {
    /// An empty stream with a fresh epoch.
    #[must_use]
    pub fn new(limits: StreamLimits) -> Self {
        Self {
            limits,
            epoch: format!("{:016x}", fastrand::u64(..)),
            top: 0,
            history: VecDeque::new(),
            latest: HashMap::new(),
            idempotency: HashMap::new(),
            deadlines: BTreeMap::new(),
            seq: 0,
        }
    }

    fn schedule(&mut self, at: Instant, due: Due) -> DueAt {
        self.seq += 1;
        self.deadlines.insert((at, self.seq), due);
        (at, self.seq)
    }

    fn position(&self) -> Position {
        Position { offset: self.top, epoch: self.epoch.clone() }
    }

    fn publish_now(&mut self, p: NewPublication) -> Result<Published> {
        let now = Instant::now();
        if let Some(key) = &p.idempotency_key
            && let Some((offset, (until, _), _)) = self.idempotency.get(key)
            && *until > now
        {
            let position = Position { offset: *offset, epoch: self.epoch.clone() };
            return Ok(Published { position, duplicate: true, publication: None });
        }
        let new_key = !self.latest.contains_key(&p.key);
        if new_key && self.latest.len() as u64 >= self.limits.max_keys {
            return Err(Error::QuotaExceeded { quota: "stream_keys", limit: self.limits.max_keys });
        }
        let publication = Publication {
            offset: self.top + 1,
            key: p.key,
            data: p.data,
            json: p.json,
            time_ms: now_ms(),
        };
        let over =
            || Error::QuotaExceeded { quota: "stream_bytes", limit: self.limits.budget.limit() };
        let charge = self.limits.budget.charge(publication.weight()).ok_or_else(over)?;
        let idempotency = match p.idempotency_key {
            Some(key) => {
                let weight = key.len() as u64 + IDEMPOTENCY_OVERHEAD;
                Some((key, self.limits.budget.charge(weight).ok_or_else(over)?))
            }
            None => None,
        };
        // accepted: nothing below fails
        self.top += 1;
        let held = Arc::new(Held { publication, at: now, _charge: charge });
        if self.limits.history_size > 0 {
            self.history.push_back(held.clone());
            while self.history.len() > self.limits.history_size as usize {
                self.history.pop_front();
            }
        }
        let key = held.publication.key.clone();
        if let Some(old) = self.latest.remove(&key).and_then(|l| l.due) {
            self.deadlines.remove(&old);
        }
        let due = self.limits.key_ttl.map(|ttl| self.schedule(now + ttl, Due::Key(key.clone())));
        self.latest.insert(key, Latest { held: held.clone(), due });
        if let Some((key, charge)) = idempotency {
            if let Some((_, old, _)) = self.idempotency.remove(&key) {
                self.deadlines.remove(&old);
            }
            let due =
                self.schedule(now + self.limits.idempotency_window, Due::Idempotency(key.clone()));
            self.idempotency.insert(key, (self.top, due, charge));
        }
        Ok(Published {
            position: self.position(),
            duplicate: false,
            publication: Some(held.publication.clone()),
        })
    }

    /// Publications after `offset`, if the history still reaches back to it.
    fn since(&self, offset: u64) -> Option<Vec<Publication>> {
        if offset > self.top {
            return None;
        }
        if offset == self.top {
            return Some(Vec::new());
        }
        let first = self.history.front()?.publication.offset;
        if first > offset + 1 {
            return None;
        }
        Some(
            self.history
                .iter()
                .filter(|h| h.publication.offset > offset)
                .map(|h| h.publication.clone())
                .collect(),
        )
    }

    fn latest_values(&self) -> Vec<Publication> {
        let mut all: Vec<&Publication> =
            self.latest.values().map(|l| &l.held.publication).collect();
        all.sort_unstable_by_key(|p| std::cmp::Reverse(p.offset));
        all.into_iter().take(self.limits.max_latest).cloned().collect()
    }

    fn snapshot_now(&self, since: Option<&Position>, latest: bool) -> Snapshot {
        let recovered = since.filter(|p| p.epoch == self.epoch).and_then(|p| self.since(p.offset));
        Snapshot {
            position: self.position(),
            was_recovering: since.is_some(),
            recovered: recovered.is_some(),
            publications: recovered.unwrap_or_default(),
            latest: if latest { self.latest_values() } else { Vec::new() },
        }
    }

    fn history_now(&self, q: &HistoryQuery) -> Result<HistoryPage> {
        let after = match &q.since {
            Some(p) if p.epoch != self.epoch => {
                return Err(Error::Unrecoverable(format!(
                    "epoch `{}` is not the stream's (`{}`): its history was lost",
                    p.epoch, self.epoch
                )));
            }
            Some(p) if p.offset > self.top => {
                return Err(Error::Unrecoverable(format!(
                    "offset {} is past the stream's top {}",
                    p.offset, self.top
                )));
            }
            Some(p) => p.offset,
            None => 0,
        };
        let kept = self.history.iter().filter(|h| h.publication.offset > after);
        let publications: Vec<Publication> = if q.reverse {
            kept.rev().take(q.limit).map(|h| h.publication.clone()).collect()
        } else {
            kept.take(q.limit).map(|h| h.publication.clone()).collect()
        };
        Ok(HistoryPage { position: self.position(), publications })
    }
}

impl StreamStore for MemoryStore {
    fn publish(&mut self, publication: NewPublication) -> StoreFuture<Published> {
        std::future::ready(self.publish_now(publication)).boxed_local()
    }

    fn snapshot(&mut self, since: Option<Position>, latest: bool) -> StoreFuture<Snapshot> {
        std::future::ready(Ok(self.snapshot_now(since.as_ref(), latest))).boxed_local()
    }

    fn history(&mut self, query: HistoryQuery) -> StoreFuture<HistoryPage> {
        std::future::ready(self.history_now(&query)).boxed_local()
    }

    fn latest(&mut self, key: Option<Arc<str>>) -> StoreFuture<(Position, Vec<Publication>)> {
        let answer = match key {
            None => Ok((self.position(), self.latest_values())),
            Some(key) => match self.latest.get(&Some(key.clone())) {
                Some(l) => Ok((self.position(), vec![l.held.publication.clone()])),
                None => Err(Error::NotFound(format!("key `{key}` has no latest value"))),
            },
        };
        std::future::ready(answer).boxed_local()
    }

    fn remove_key(&mut self, key: Arc<str>) -> StoreFuture<bool> {
        let removed = self.latest.remove(&Some(key));
        if let Some(due) = removed.as_ref().and_then(|l| l.due) {
            self.deadlines.remove(&due);
        }
        std::future::ready(Ok(removed.is_some())).boxed_local()
    }

    fn info(&mut self) -> StoreFuture<StoreInfo> {
        let mut bytes: u64 = self.history.iter().map(|h| h.publication.weight()).sum();
        // a value only the latest map holds (no longer in the history): one reference
        bytes += self
            .latest
            .values()
            .filter(|l| Arc::strong_count(&l.held) == 1)
            .map(|l| l.held.publication.weight())
            .sum::<u64>();
        bytes +=
            self.idempotency.keys().map(|k| k.len() as u64 + IDEMPOTENCY_OVERHEAD).sum::<u64>();
        std::future::ready(Ok(StoreInfo {
            position: self.position(),
            history: self.history.len() as u64,
            keys: self.latest.len() as u64,
            bytes,
        }))
        .boxed_local()
    }

    fn set_max_keys(&mut self, max_keys: u64) {
        self.limits.max_keys = max_keys;
    }

    fn next_deadline(&self) -> Option<Instant> {
        let history = self.history.front().map(|h| h.at + self.limits.history_ttl);
        let due = self.deadlines.first_key_value().map(|((at, _), _)| *at);
        match (history, due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn expire(&mut self, now: Instant) -> Expired {
        let mut expired = Expired::default();
        while self.history.front().is_some_and(|h| h.at + self.limits.history_ttl <= now) {
            self.history.pop_front();
            expired.publications += 1;
        }
        while self.deadlines.first_key_value().is_some_and(|((at, _), _)| *at <= now) {
            let Some((_, due)) = self.deadlines.pop_first() else { break };
            match due {
                Due::Key(key) => {
                    self.latest.remove(&key);
                    expired.keys += 1;
                }
                Due::Idempotency(key) => {
                    self.idempotency.remove(&key);
                }
            }
        }
        expired
    }

    fn keys(&self) -> Option<u64> {
        Some(self.latest.len() as u64)
    }

    fn is_empty(&self) -> bool {
        self.history.is_empty() && self.latest.is_empty() && self.idempotency.is_empty()
    }
}
