//! Consumers: one actor per `ReceiveMessages` stream, whose life is its stream's life.
//!
//! The actor owns:
//! - its member handle on the broker group (a [`Pull`]), moved into its **pump**, a tracked
//!   task that fetches only what the stream's credit allows (max outstanding messages and
//!   bytes minus what it holds unacked), records the leases and hands the deliveries to the
//!   stream's channel; a send to the channel stalled past `write_stall_timeout` takes those
//!   leases back and returns them to the broker (`channel_full_events`);
//! - its [`LeaseTable`]: the deliveries it holds unacked, keyed by the sequence number in their
//!   receipt handles, shared with the ack path through the consumer directory;
//! - a tick timer that forgets leases the broker has taken back (expired) and, with
//!   `auto_renew`, extends leases before they expire;
//! - a watch on the stream: when the client goes (cancel, disconnect, HTTP/2 keepalive
//!   failure) the actor stops.
//!
//! However it ends — client gone, `CleanupConsumer`, shutdown, crash, kill — its `Drop` closes
//! the lease table and returns every lease to the broker at once ([`Broker::release`]), and
//! leaves the directory: one release path.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use futures_util::Stream;
use futures_util::future::LocalBoxFuture;
use steward_core::{ExitReason, Resource, ResourceCtx, ResourceId, StopResource, stop_resource};
use tokio::sync::{Notify, mpsc};

use crate::broker::{Broker, Delivery, Lease, Pull};
use crate::error::MessagingError;
use crate::service::{ConsumerEvent, Delivered};
use crate::stats::MessagingStats;

/// Events buffered between a consumer and its stream; more waits (and counts toward the stall
/// deadline). Small on purpose: flow control is the broker's credit, not this buffer.
pub const STREAM_BUFFER: usize = 2;

/// How long a stopping consumer waits to tell its stream why it ends.
const END_TIMEOUT: Duration = Duration::from_millis(500);

/// Pause after a broker error before the pump fetches again.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// The event stream of one consumer, handed to the edge by [`crate::Messaging::receive`].
/// Dropping it ends the consumer: it stops and returns every unacked delivery to the broker.
pub struct ConsumerStream {
    pub(crate) rx: mpsc::Receiver<ConsumerEvent>,
    pub(crate) consumer_id: Arc<str>,
    pub(crate) settings: StreamSettings,
}

impl std::fmt::Debug for ConsumerStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerStream")
            .field("consumer_id", &self.consumer_id)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl ConsumerStream {
    /// The stream's consumer id (the client's, or a generated one).
    #[must_use]
    pub fn consumer_id(&self) -> &str {
        &self.consumer_id
    }

    /// The settings in effect (the request's, defaults filled in).
    #[must_use]
    pub fn settings(&self) -> &StreamSettings {
        &self.settings
    }
}

impl Stream for ConsumerStream {
    type Item = ConsumerEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// A receive stream's settings after defaults and limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSettings {
    /// Most unacked deliveries held.
    pub max_outstanding_messages: u32,
    /// Most unacked bytes held (message weights).
    pub max_outstanding_bytes: u64,
    /// Lease length of each delivery.
    pub invisible_duration: Duration,
    /// Whether leases are extended until acked or nacked.
    pub auto_renew: bool,
}

/// A lease the consumer holds, with its local deadline.
#[derive(Debug)]
pub(crate) struct Held {
    pub(crate) lease: Lease,
    pub(crate) deadline: Instant,
    bytes: usize,
}

#[derive(Default)]
struct LeaseState {
    closed: bool,
    next: u64,
    held: HashMap<u64, Held>,
    bytes: usize,
}

/// The deliveries one consumer holds unacked. Shared by the consumer (pump, tick, drop) and
/// the ack path; every lease leaves it exactly once (ack, nack, expiry, stall, release).
pub(crate) struct LeaseTable {
    state: Mutex<LeaseState>,
    credit: Notify,
    stats: Arc<MessagingStats>,
}

impl LeaseTable {
    fn new(stats: Arc<MessagingStats>) -> Self {
        Self { state: Mutex::default(), credit: Notify::new(), stats }
    }

    fn lock(&self) -> MutexGuard<'_, LeaseState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn gone(&self, n: usize) {
        if n > 0 {
            self.stats.leases_in_flight.fetch_sub(n as i64, Ordering::Relaxed);
            self.credit.notify_one();
        }
    }

    /// Room left under the stream's limits: (messages, bytes).
    fn credit(&self, settings: &StreamSettings) -> (usize, usize) {
        let s = self.lock();
        let msgs = (settings.max_outstanding_messages as usize).saturating_sub(s.held.len());
        let bytes = usize::try_from(settings.max_outstanding_bytes)
            .unwrap_or(usize::MAX)
            .saturating_sub(s.bytes);
        (msgs, bytes)
    }

    /// Records `deliveries`; answers their sequence numbers, or gives them back when the table
    /// is closed (the consumer is gone: the caller releases them).
    fn insert(
        &self,
        deliveries: Vec<Delivery>,
        invisible: Duration,
    ) -> Result<Vec<(u64, Delivery)>, Vec<Delivery>> {
        let mut s = self.lock();
        if s.closed {
            return Err(deliveries);
        }
        let deadline = Instant::now() + invisible;
        let n = deliveries.len();
        let out = deliveries
            .into_iter()
            .map(|d| {
                s.next += 1;
                let seq = s.next;
                let bytes = d.message.weight();
                s.bytes += bytes;
                s.held.insert(seq, Held { lease: d.lease.clone(), deadline, bytes });
                (seq, d)
            })
            .collect();
        self.stats.leases_in_flight.fetch_add(n as i64, Ordering::Relaxed);
        Ok(out)
    }

    /// Takes the lease `seq` out (ack, nack, stall).
    pub(crate) fn take(&self, seq: u64) -> Option<Held> {
        let held = {
            let mut s = self.lock();
            let held = s.held.remove(&seq)?;
            s.bytes -= held.bytes;
            held
        };
        self.gone(1);
        Some(held)
    }

    /// The lease `seq`, left in place (ChangeInvisibleDuration).
    pub(crate) fn lease(&self, seq: u64) -> Option<Lease> {
        self.lock().held.get(&seq).map(|h| h.lease.clone())
    }

    /// Moves the local deadline of `seq` (after the broker accepted the change).
    pub(crate) fn set_deadline(&self, seq: u64, deadline: Instant) {
        if let Some(h) = self.lock().held.get_mut(&seq) {
            h.deadline = deadline;
        }
    }

    /// Forgets leases past their deadline (the broker redelivers them by itself) and answers
    /// those due for renewal within `renew_within` (when `renew` is set), with new deadlines
    /// already recorded.
    fn tick(&self, renew: Option<(Duration, Duration)>) -> Vec<Lease> {
        let now = Instant::now();
        let mut s = self.lock();
        let mut renewed = Vec::new();
        let mut expired = 0;
        let mut freed = 0;
        s.held.retain(|_, h| {
            if let Some((within, invisible)) = renew
                && h.deadline <= now + within
            {
                h.deadline = now + invisible;
                renewed.push(h.lease.clone());
                return true;
            }
            if h.deadline <= now {
                expired += 1;
                freed += h.bytes;
                return false;
            }
            true
        });
        s.bytes -= freed;
        drop(s);
        self.gone(expired);
        renewed
    }

    /// Closes the table for good and answers every lease it held (to be released).
    fn close(&self) -> Vec<Lease> {
        let held: Vec<Lease> = {
            let mut s = self.lock();
            s.closed = true;
            s.bytes = 0;
            s.held.drain().map(|(_, h)| h.lease).collect()
        };
        self.gone(held.len());
        self.credit.notify_one();
        held
    }

    fn len(&self) -> usize {
        self.lock().held.len()
    }
}

/// What the directory knows of a live consumer (the ack path's way in).
pub(crate) struct ConsumerEntry {
    pub(crate) tenant: Arc<str>,
    pub(crate) group: Arc<str>,
    pub(crate) consumer_id: Arc<str>,
    pub(crate) resource: ResourceId,
    pub(crate) leases: Arc<LeaseTable>,
    pub(crate) settings: StreamSettings,
    /// Set by `CleanupConsumer` before it stops the consumer, so the stream says why it ended.
    pub(crate) cleaned_up: AtomicBool,
    out: mpsc::WeakSender<ConsumerEvent>,
}

impl ConsumerEntry {
    /// Whether the client side of the stream is gone.
    pub(crate) fn stream_gone(&self) -> bool {
        self.out.upgrade().is_none_or(|tx| tx.is_closed())
    }

    /// Deliveries held unacked.
    pub(crate) fn held(&self) -> usize {
        self.leases.len()
    }
}

/// Live consumers by resource id (the first part of a receipt handle).
#[derive(Default)]
pub(crate) struct Directory {
    entries: Mutex<HashMap<ResourceId, Arc<ConsumerEntry>>>,
}

impl Directory {
    fn lock(&self) -> MutexGuard<'_, HashMap<ResourceId, Arc<ConsumerEntry>>> {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn get(&self, id: ResourceId) -> Option<Arc<ConsumerEntry>> {
        self.lock().get(&id).cloned()
    }

    pub(crate) fn all(&self) -> Vec<Arc<ConsumerEntry>> {
        self.lock().values().cloned().collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn insert(&self, entry: Arc<ConsumerEntry>) {
        self.lock().insert(entry.resource, entry);
    }

    fn remove(&self, entry: &Arc<ConsumerEntry>) {
        let mut map = self.lock();
        if map.get(&entry.resource).is_some_and(|e| Arc::ptr_eq(e, entry)) {
            map.remove(&entry.resource);
        }
    }
}

/// A receipt handle: `<consumer resource id, 16 hex>.<lease sequence, hex>`.
#[must_use]
pub(crate) fn receipt(consumer: ResourceId, seq: u64) -> String {
    format!("{consumer}.{seq:x}")
}

/// Parses a receipt handle.
pub(crate) fn parse_receipt(handle: &str) -> Option<(ResourceId, u64)> {
    let (c, s) = handle.split_once('.')?;
    if s.is_empty() || s.len() > 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some((c.parse().ok()?, u64::from_str_radix(s, 16).ok()?))
}

/// Everything a consumer is built from (moved into the actor once).
pub(crate) struct ConsumerParts {
    pub(crate) tenant: Arc<str>,
    pub(crate) group: Arc<str>,
    pub(crate) consumer_id: Arc<str>,
    pub(crate) settings: StreamSettings,
    pub(crate) pull: Box<dyn Pull>,
    pub(crate) out: mpsc::Sender<ConsumerEvent>,
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) directory: Arc<Directory>,
    pub(crate) stats: Arc<MessagingStats>,
    pub(crate) heartbeat: Duration,
    pub(crate) write_stall: Duration,
}

/// One receive stream's consumer (kind `consumer`, a temporary child of `consumers`).
pub struct Consumer {
    rcx: ResourceCtx,
    entry: Arc<ConsumerEntry>,
    broker: Arc<dyn Broker>,
    directory: Arc<Directory>,
    stats: Arc<MessagingStats>,
    out: mpsc::Sender<ConsumerEvent>,
    pump: Option<Pump>,
}

impl Consumer {
    pub(crate) fn new(rcx: ResourceCtx, parts: ConsumerParts) -> Self {
        let leases = Arc::new(LeaseTable::new(parts.stats.clone()));
        let entry = Arc::new(ConsumerEntry {
            tenant: parts.tenant,
            group: parts.group,
            consumer_id: parts.consumer_id,
            resource: rcx.id(),
            leases: leases.clone(),
            settings: parts.settings,
            cleaned_up: AtomicBool::new(false),
            out: parts.out.downgrade(),
        });
        parts.directory.insert(entry.clone());
        let pump = Pump {
            id: rcx.id(),
            pull: parts.pull,
            leases,
            out: parts.out.clone(),
            broker: parts.broker.clone(),
            stats: parts.stats.clone(),
            settings: parts.settings,
            heartbeat: parts.heartbeat,
            write_stall: parts.write_stall,
        };
        Self {
            rcx,
            entry,
            broker: parts.broker,
            directory: parts.directory,
            stats: parts.stats,
            out: parts.out,
            pump: Some(pump),
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        let s = self.entry.settings;
        let renew = s.auto_renew.then(|| (s.invisible_duration / 3, s.invisible_duration));
        let renewed = self.entry.leases.tick(renew);
        if renewed.is_empty() {
            return;
        }
        let broker = self.broker.clone();
        let batch: Vec<(Lease, Duration)> =
            renewed.into_iter().map(|l| (l, s.invisible_duration)).collect();
        // an actor future: owned by this consumer's context, gone with it
        ctx.spawn(
            async move {
                let results = broker.set_visibility(batch).await;
                let failed = results.iter().filter(|r| r.is_err()).count();
                if failed > 0 {
                    tracing::debug!(failed, "auto-renew: some leases were already gone");
                }
            }
            .into_actor(self),
        );
    }
}

impl Actor for Consumer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(pump) = self.pump.take()
            && let Err(e) = self.rcx.tracker().spawn(pump.run())
        {
            stop_resource(self, ctx, ExitReason::error(format!("cannot start its pump: {e}")));
            return;
        }
        // the stream's life is the consumer's: the client going away stops it
        let out = self.out.clone();
        ctx.spawn(async move { out.closed().await }.into_actor(self).map(|(), act, ctx| {
            stop_resource(act, ctx, ExitReason::Normal);
        }));
        let invisible = self.entry.settings.invisible_duration;
        let period = (invisible / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        self.rcx.run_interval(ctx, period, Self::tick);
    }
}

impl Handler<StopResource> for Consumer {
    type Result = ();

    fn handle(&mut self, msg: StopResource, ctx: &mut Self::Context) {
        stop_resource(self, ctx, msg.reason);
    }
}

impl Resource for Consumer {
    fn resource_ctx(&self) -> &ResourceCtx {
        &self.rcx
    }

    fn resource_ctx_mut(&mut self) -> &mut ResourceCtx {
        &mut self.rcx
    }

    fn cleanup(&mut self, reason: &ExitReason) -> LocalBoxFuture<'static, ()> {
        // tell the client why, when it is still there; the leases go back in Drop
        let why = if self.entry.cleaned_up.load(Ordering::Acquire) {
            Some("the consumer was cleaned up (CleanupConsumer)".to_owned())
        } else {
            match reason {
                ExitReason::Shutdown if self.rcx.registry().is_shutting_down() => {
                    Some("the server is shutting down".to_owned())
                }
                ExitReason::Normal => None,
                other => Some(format!("the consumer stopped: {other}")),
            }
        };
        let out = self.out.clone();
        Box::pin(async move {
            if let Some(why) = why {
                // behind at most STREAM_BUFFER events; a client that does not read them in time
                // sees its stream just end
                let end = ConsumerEvent::End(MessagingError::Unavailable(why));
                let _ = tokio::time::timeout(END_TIMEOUT, out.send(end)).await;
            }
        })
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.directory.remove(&self.entry);
        let held = self.entry.leases.close();
        if !held.is_empty() {
            MessagingStats::add(&self.stats.returned, held.len() as u64);
            tracing::debug!(returned = held.len(), "consumer gone: unacked deliveries returned");
            self.broker.release(held);
        }
    }
}

/// The consumer's fetch loop (a tracked task).
struct Pump {
    id: ResourceId,
    pull: Box<dyn Pull>,
    leases: Arc<LeaseTable>,
    out: mpsc::Sender<ConsumerEvent>,
    broker: Arc<dyn Broker>,
    stats: Arc<MessagingStats>,
    settings: StreamSettings,
    heartbeat: Duration,
    write_stall: Duration,
}

impl Pump {
    async fn run(mut self) {
        // the broker being down is logged once per outage, not once per retry
        let mut failing = false;
        loop {
            let (msgs, bytes) = self.leases.credit(&self.settings);
            if msgs == 0 || bytes == 0 {
                // no credit: wait for an ack, nack or expiry (or the stream to go)
                tokio::select! {
                    () = self.leases.credit.notified() => {}
                    () = self.out.closed() => return,
                    () = tokio::time::sleep(self.heartbeat) => self.heartbeat(),
                }
                continue;
            }
            let fetched = tokio::select! {
                r = self.pull.fetch(msgs, bytes, self.heartbeat) => r,
                () = self.out.closed() => return,
            };
            if failing && fetched.is_ok() {
                failing = false;
                tracing::info!("consumer: the broker answers again");
            }
            match fetched {
                Ok(batch) if batch.is_empty() => self.heartbeat(),
                Ok(batch) => {
                    if !self.deliver(batch).await {
                        return;
                    }
                }
                Err(e) => {
                    if failing {
                        tracing::debug!(error = %e, "consumer: fetch failed again; retrying");
                    } else {
                        failing = true;
                        tracing::warn!(error = %e, "consumer: fetch failed; retrying every second");
                    }
                    // the server is alive even when the broker is not
                    self.heartbeat();
                    tokio::select! {
                        () = tokio::time::sleep(RETRY_PAUSE) => {}
                        () = self.out.closed() => return,
                    }
                }
            }
        }
    }

    fn heartbeat(&self) {
        // a full channel means the client has data to read anyway
        let _ = self.out.try_send(ConsumerEvent::Heartbeat);
    }

    /// Leases `batch` and hands it to the stream; answers whether the stream is still there.
    async fn deliver(&mut self, batch: Vec<Delivery>) -> bool {
        let invisible = self.settings.invisible_duration;
        let held = match self.leases.insert(batch, invisible) {
            Ok(held) => held,
            Err(batch) => {
                self.broker.release(batch.into_iter().map(|d| d.lease).collect());
                return false;
            }
        };
        let until = SystemTime::now() + invisible;
        let seqs: Vec<u64> = held.iter().map(|(seq, _)| *seq).collect();
        let n = held.len() as u64;
        let redelivered = held.iter().filter(|(_, d)| d.attempt > 1).count() as u64;
        let event = ConsumerEvent::Deliveries(
            held.into_iter()
                .map(|(seq, d)| Delivered {
                    message: d.message,
                    attempt: d.attempt,
                    receipt: receipt(self.id, seq),
                    invisible_until: until,
                })
                .collect(),
        );
        match tokio::time::timeout(self.write_stall, self.out.send(event)).await {
            Ok(Ok(())) => {
                MessagingStats::add(&self.stats.deliveries, n);
                MessagingStats::add(&self.stats.redeliveries, redelivered);
                true
            }
            outcome => {
                // stalled (or gone): take these back and return them to the broker now
                let back: Vec<Lease> =
                    seqs.into_iter().filter_map(|s| self.leases.take(s)).map(|h| h.lease).collect();
                MessagingStats::add(&self.stats.returned, back.len() as u64);
                self.broker.release(back);
                if outcome.is_err() {
                    MessagingStats::add(&self.stats.channel_full_events, 1);
                    tracing::warn!(
                        stall_ms = self.write_stall.as_millis() as u64,
                        "consumer: the client did not take a delivery in time; returned to the broker"
                    );
                    true
                } else {
                    false
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_round_trip_and_junk_does_not_parse() {
        let id = ResourceId::next();
        let r = receipt(id, 42);
        assert_eq!(parse_receipt(&r), Some((id, 42)));
        for junk in
            ["", ".", "a.", ".1", "zz.1", "1.2", "3fa2c10000000007.2.3", "x", "3fa2c10000000007.+1"]
        {
            assert_eq!(parse_receipt(junk), None, "{junk}");
        }
    }
}
