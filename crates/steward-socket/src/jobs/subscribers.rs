//! Who watches which job: the subscriber index, the [`JobSink`] a watcher offers updates
//! through, and the [`Subscription`] guard whose drop is the one place a subscription ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use serde_json::Value;

use super::model::{JobId, JobUpdate};

/// What became of an offered update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Queued for the watcher.
    Queued,
    /// The watcher's queue is full: it is too slow and is being closed (WebSocket 4008,
    /// `WatchJob` ends `RESOURCE_EXHAUSTED`); it gets no more updates.
    Overflow,
    /// The watcher is gone.
    Closed,
}

/// A watcher of jobs: a socket's outbound queue or a `WatchJob` stream. Offers never wait:
/// the hub must not block on a slow watcher (`try_send`, never an unbounded send).
pub trait JobSink: Send + Sync {
    /// Offers the `subscribed` acknowledgement with the job's current state; `request` is the
    /// client's request id to echo. Called by the hub while it registers the subscription, so
    /// it comes before any update of the job.
    fn subscribed(&self, snapshot: &Arc<JobUpdate>, request: Option<&Value>) -> Offer;

    /// Offers one update.
    fn offer(&self, update: &Arc<JobUpdate>) -> Offer;

    /// Whether the watcher is gone (its subscription guard should have removed it; the hub's
    /// sweep drops any it finds, as a safety net).
    fn is_closed(&self) -> bool;
}

type SinkRef = Arc<dyn JobSink>;

/// Subscribers per job. Shared by the hub (which fans out) and the [`Subscription`] guards
/// (which remove themselves when dropped).
#[derive(Default)]
pub(crate) struct SubscriberIndex {
    by_job: HashMap<JobId, HashMap<u64, SinkRef>>,
    total: usize,
}

/// The index behind its lock, with the sequence of subscription ids.
#[derive(Default)]
pub(crate) struct Subscribers {
    index: Mutex<SubscriberIndex>,
    next: AtomicU64,
}

impl Subscribers {
    fn lock(&self) -> MutexGuard<'_, SubscriberIndex> {
        self.index.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds `sink` as a watcher of `job` and returns the guard that removes it.
    pub(crate) fn add(self: &Arc<Self>, job: &JobId, sink: SinkRef) -> Subscription {
        let sub = self.next.fetch_add(1, Ordering::Relaxed);
        let mut index = self.lock();
        index.by_job.entry(job.clone()).or_default().insert(sub, sink);
        index.total += 1;
        Subscription { index: Arc::downgrade(self), job: job.clone(), sub }
    }

    /// Offers `update` to every watcher of its job; watchers that overflowed or went away are
    /// dropped from the index. With `last` (the job reached a final state), every watcher is
    /// dropped after the offer: nothing more will come. Returns (queued, overflowed).
    pub(crate) fn fan_out(&self, update: &Arc<JobUpdate>, last: bool) -> (u64, u64) {
        let mut index = self.lock();
        let Some(watchers) = index.by_job.get_mut(&update.job.id) else { return (0, 0) };
        let (mut queued, mut overflowed) = (0, 0);
        let before = watchers.len();
        watchers.retain(|_, sink| match sink.offer(update) {
            Offer::Queued => {
                queued += 1;
                !last
            }
            Offer::Overflow => {
                overflowed += 1;
                false
            }
            Offer::Closed => false,
        });
        let left = watchers.len();
        if left == 0 {
            index.by_job.remove(&update.job.id);
        }
        index.total -= before - left;
        (queued, overflowed)
    }

    /// Drops every watcher of `job` (evicted or removed).
    pub(crate) fn drop_job(&self, job: &JobId) {
        let mut index = self.lock();
        if let Some(watchers) = index.by_job.remove(job) {
            index.total -= watchers.len();
        }
    }

    /// Drops watchers that are gone; returns how many (expected 0: their guards remove them).
    pub(crate) fn drop_closed(&self) -> usize {
        let mut index = self.lock();
        let mut dropped = 0;
        index.by_job.retain(|_, watchers| {
            let before = watchers.len();
            watchers.retain(|_, sink| !sink.is_closed());
            dropped += before - watchers.len();
            !watchers.is_empty()
        });
        index.total -= dropped;
        if dropped > 0 {
            tracing::warn!(dropped, "job watchers found gone without their subscription ending");
        }
        dropped
    }

    /// Drops every watcher (the hub incarnation that fed them is gone).
    pub(crate) fn clear(&self) {
        let mut index = self.lock();
        index.by_job.clear();
        index.total = 0;
    }

    /// Live subscriptions.
    pub(crate) fn len(&self) -> usize {
        self.lock().total
    }

    fn remove(&self, job: &JobId, sub: u64) {
        let mut index = self.lock();
        let Some(watchers) = index.by_job.get_mut(job) else { return };
        if watchers.remove(&sub).is_some() {
            index.total -= 1;
            if index.by_job.get(job).is_some_and(HashMap::is_empty) {
                index.by_job.remove(job);
            }
        }
    }

    fn contains(&self, job: &JobId, sub: u64) -> bool {
        self.lock().by_job.get(job).is_some_and(|w| w.contains_key(&sub))
    }
}

/// One watcher's subscription to one job. Dropping it removes the watcher from the hub's index
/// at once: it is the one place a subscription ends, whether the socket unsubscribed, closed,
/// crashed or was killed. It holds the index weakly, so it keeps nothing of the hub alive.
pub struct Subscription {
    index: Weak<Subscribers>,
    job: JobId,
    sub: u64,
}

impl Subscription {
    /// The job.
    #[must_use]
    pub fn job(&self) -> &JobId {
        &self.job
    }

    /// Whether the hub still delivers to it (false after the job finished or was evicted, the
    /// watcher overflowed, or the hub restarted).
    #[must_use]
    pub fn is_active(&self) -> bool {
        self.index.upgrade().is_some_and(|s| s.contains(&self.job, self.sub))
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(index) = self.index.upgrade() {
            index.remove(&self.job, self.sub);
        }
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").field("job", &self.job).field("sub", &self.sub).finish()
    }
}
