//! Who receives a stream's publications: the [`Subscriber`] an edge offers (a socket's
//! outbound queue, a `Watch` stream), the shared [`Delivery`] of one publication, and the
//! [`Subscription`] guard whose drop is the one place a subscription ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use actix::WeakRecipient;
use bytestring::ByteString;

use super::messages::SubscribersLeft;
use crate::model::{Publication, Snapshot};
use crate::stats::StreamStats;

/// What became of an offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Queued for the subscriber.
    Queued,
    /// The subscriber's queue is full: it is too slow and is being closed (WebSocket 4008,
    /// `Watch` ends `RESOURCE_EXHAUSTED`); it gets nothing more.
    Overflow,
    /// The subscriber is gone.
    Closed,
}

/// A subscriber of one stream. Offers never wait: a stream must not block on a slow
/// subscriber (`try_send`, never an unbounded send).
pub trait Subscriber: Send + Sync {
    /// Offers the snapshot (the `subscribed` answer). Called in the stream's turn before any
    /// publication is offered to this subscriber.
    fn subscribed(&self, stream: &Arc<str>, snapshot: &Snapshot) -> Offer;

    /// Offers one live publication (offsets grow by one from the snapshot's position).
    fn publication(&self, delivery: &Arc<Delivery>) -> Offer;

    /// The stream ended this subscription with `code` and `message` (`unavailable`,
    /// `insufficient_state`, `stream_closed`); nothing follows. The client subscribes again
    /// with its last position to recover.
    fn ended(&self, stream: &Arc<str>, code: &'static str, message: &str);

    /// Whether the subscriber is gone.
    fn is_closed(&self) -> bool;
}

/// One live publication, shared by every subscriber it is offered to; its WebSocket frame is
/// rendered once, by the first socket that needs it.
#[derive(Debug)]
pub struct Delivery {
    /// The stream's name.
    pub stream: Arc<str>,
    /// The history's epoch.
    pub epoch: Arc<str>,
    /// The publication.
    pub publication: Publication,
    frame: OnceLock<ByteString>,
}

impl Delivery {
    pub(crate) fn new(stream: Arc<str>, epoch: Arc<str>, publication: Publication) -> Self {
        Self { stream, epoch, publication, frame: OnceLock::new() }
    }

    /// The `publication` WebSocket frame (rendered on first use).
    pub fn frame(&self) -> &ByteString {
        self.frame.get_or_init(|| crate::frames::publication(&self.stream, &self.publication))
    }
}

/// A subscriber in the set, with the offset its snapshot reached (live publications up to it
/// are skipped: the snapshot had them).
struct Entry {
    subscriber: Arc<dyn Subscriber>,
    from: u64,
}

/// The subscribers of one stream, shared by the actor (which fans out) and the guards (which
/// remove themselves).
pub(crate) struct SubscriberSet {
    entries: Mutex<HashMap<u64, Entry>>,
    next: AtomicU64,
    stats: Arc<StreamStats>,
}

impl SubscriberSet {
    pub(crate) fn new(stats: Arc<StreamStats>) -> Self {
        Self { entries: Mutex::default(), next: AtomicU64::new(0), stats }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds `subscriber`, which already holds everything up to offset `from`.
    pub(crate) fn add(
        self: &Arc<Self>,
        subscriber: Arc<dyn Subscriber>,
        from: u64,
        notify: WeakRecipient<SubscribersLeft>,
    ) -> Subscription {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, Entry { subscriber, from });
        self.stats.subscribers_changed(1);
        Subscription { set: Arc::downgrade(self), id, notify }
    }

    /// Offers `delivery` to every subscriber whose snapshot did not have it; drops those that
    /// overflowed or went away.
    pub(crate) fn fan_out(&self, delivery: &Arc<Delivery>) {
        let offset = delivery.publication.offset;
        let mut overflowed = 0;
        let mut entries = self.lock();
        let before = entries.len();
        entries.retain(|_, e| {
            if offset <= e.from {
                return true;
            }
            match e.subscriber.publication(delivery) {
                Offer::Queued => true,
                Offer::Overflow => {
                    overflowed += 1;
                    false
                }
                Offer::Closed => false,
            }
        });
        let gone = before - entries.len();
        drop(entries);
        if gone > 0 {
            self.stats.subscribers_changed(-(gone as i64));
            self.stats.overflowed(overflowed);
        }
    }

    /// Ends every subscription with `code` (the stream stops, or its feed was interrupted).
    pub(crate) fn end_all(&self, stream: &Arc<str>, code: &'static str, message: &str) {
        let ended: Vec<Entry> = self.lock().drain().map(|(_, e)| e).collect();
        if !ended.is_empty() {
            self.stats.subscribers_changed(-(ended.len() as i64));
        }
        for e in ended {
            e.subscriber.ended(stream, code, message);
        }
    }

    /// Subscribers now.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn remove(&self, id: u64) -> Option<bool> {
        let mut entries = self.lock();
        entries.remove(&id)?;
        self.stats.subscribers_changed(-1);
        Some(entries.is_empty())
    }

    fn contains(&self, id: u64) -> bool {
        self.lock().contains_key(&id)
    }
}

/// One subscriber's subscription to one stream. Dropping it removes the subscriber at once:
/// the one place a subscription ends, whether the client unsubscribed, closed, crashed or was
/// killed. It holds the stream weakly, so it keeps nothing of the stream alive.
pub struct Subscription {
    set: Weak<SubscriberSet>,
    id: u64,
    notify: WeakRecipient<SubscribersLeft>,
}

impl Subscription {
    /// Whether the stream still delivers to it (false after the stream ended it, the
    /// subscriber overflowed, or the stream stopped).
    #[must_use]
    pub fn is_active(&self) -> bool {
        self.set.upgrade().is_some_and(|s| s.contains(self.id))
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let Some(set) = self.set.upgrade() else { return };
        // the last one out tells the stream (a shared engine stops listening; idle counts)
        if set.remove(self.id) == Some(true)
            && let Some(stream) = self.notify.upgrade()
        {
            // a wake-up only: a full mailbox means requests are queued, and each of them
            // re-checks the subscribers when it is handled
            let _ = stream.try_send(SubscribersLeft);
        }
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").field("id", &self.id).finish_non_exhaustive()
    }
}
