//! The embedded broker (`[messaging] backend = "embedded"`, the default): in process and **in
//! memory only** — nothing survives a restart (Steward says so at start and reports the unacked
//! deliveries it drops at shutdown).
//!
//! Shape: per tenant topic, a dedup table and its groups; per group, four queues of shared
//! (`Arc`) messages:
//! - `retry`: due redeliveries (expired or released leases, nacks whose delay passed, due
//!   delayed messages), by message sequence, drained first;
//! - `ready`: first deliveries, FIFO (first deliveries to a group come in publish order);
//! - `delayed`: not visible before an instant (deliver-at, nack delay);
//! - `leased`: the lease table, with its expiry deadlines in an ordered set.
//!
//! Deadlines need no timer task: a member waiting in [`Pull::fetch`] sleeps until the earlier
//! of its wait and the group's next deadline, and every operation on a group first moves what
//! is due. A group whose deliveries nobody fetches keeps them leased or delayed until a member
//! comes, which changes nothing a client can observe.
//!
//! Bounds (a full group makes `send` answer `RetryLater`; nothing is ever dropped):
//! `[messaging] topic_max_messages` waiting deliveries and `topic_max_bytes` body bytes per
//! group; the dedup table keeps the ids of the last `dedup_window`, at most
//! `topic_max_messages` of them per topic.
//!
//! Per tenant ([`TenantLimits`], its quotas): topics and groups that exist, and messages stored
//! with their bytes, counted over all its topics in an `Account`. The counts are kept by guards,
//! not by bookkeeping at each removal: a topic and a group hold a `Slot`, and every queue entry of
//! a stored message holds the message's one `Charge`, so a message counts until the last group
//! let go of it (acked, dead-lettered, its group or topic removed), wherever that happens. A new
//! topic past `topics`, a new group past `groups`, or a message past `stored_messages` or
//! `stored_bytes` is refused (`QuotaExceeded`); nothing is dropped. Topics and groups that hold
//! nothing and saw no use for `[messaging] topic_idle_ttl` are removed by [`Broker::sweep_idle`].

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use steward_config::BrokerBackend;
use tokio::sync::Notify;

use crate::broker::{
    Broker, BrokerError, BrokerSettings, Delivery, GroupKey, Lease, LeaseInner, Message,
    OutMessage, Pull, QuotaRefusal, SendOutcome, TagFilter, TenantLimits, TenantUsage, TopicKey,
};
use crate::stats::MessagingStats;

/// An embedded lease: where it lives and its id.
#[derive(Debug, Clone)]
pub(crate) struct LeaseRef {
    topic: TopicKey,
    group: Arc<str>,
    id: u64,
}

/// The in-process broker. Create one per node with [`EmbeddedBroker::new`].
pub struct EmbeddedBroker {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Per tenant: its limits and usage. A lock of its own, so that handing in a tenant's limits
    /// before each send does not take the state lock; when both are held, `state` is first.
    accounts: Mutex<HashMap<Arc<str>, Arc<Account>>>,
    settings: BrokerSettings,
    stats: Arc<MessagingStats>,
    closed: AtomicBool,
}

#[derive(Default)]
struct State {
    topics: HashMap<TopicKey, Topic>,
    next_seq: u64,
    next_lease: u64,
}

/// One tenant's limits and usage. The usage counters move only through [`Slot`] and
/// [`Charge`] (taken under the state lock, given back on drop, from wherever that happens).
struct Account {
    limits: Mutex<TenantLimits>,
    topics: AtomicU64,
    groups: AtomicU64,
    messages: AtomicU64,
    bytes: AtomicU64,
}

impl Account {
    fn new() -> Self {
        Self {
            limits: Mutex::new(TenantLimits::UNLIMITED),
            topics: AtomicU64::new(0),
            groups: AtomicU64::new(0),
            messages: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }

    fn limits(&self) -> TenantLimits {
        *self.limits.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn usage(&self) -> TenantUsage {
        TenantUsage {
            topics: self.topics.load(Ordering::Acquire),
            groups: self.groups.load(Ordering::Acquire),
            stored_messages: self.messages.load(Ordering::Acquire),
            stored_bytes: self.bytes.load(Ordering::Acquire),
        }
    }

    /// Takes a topic (`topic`) or group place, or refuses at the limit.
    fn slot(self: &Arc<Self>, topic: bool) -> Result<Slot, QuotaRefusal> {
        let limits = self.limits();
        let (counter, limit, quota) = if topic {
            (&self.topics, limits.topics, "topics")
        } else {
            (&self.groups, limits.groups, "groups")
        };
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < limit).then_some(n + 1))
            .map_err(|_| QuotaRefusal { quota, limit })?;
        Ok(Slot { account: self.clone(), topic })
    }

    /// Charges one message of `bytes`, or refuses at the stored limits.
    fn charge(self: &Arc<Self>, bytes: u64) -> Result<Charge, QuotaRefusal> {
        let limits = self.limits();
        let messages = self.messages.load(Ordering::Acquire);
        if messages >= limits.stored_messages {
            return Err(QuotaRefusal { quota: "stored_messages", limit: limits.stored_messages });
        }
        let held = self.bytes.load(Ordering::Acquire);
        if held.saturating_add(bytes) > limits.stored_bytes {
            return Err(QuotaRefusal { quota: "stored_bytes", limit: limits.stored_bytes });
        }
        // checked and taken under the state lock, so no other charge of this tenant races it
        self.messages.fetch_add(1, Ordering::AcqRel);
        self.bytes.fetch_add(bytes, Ordering::AcqRel);
        Ok(Charge { account: self.clone(), bytes })
    }
}

/// A topic's or group's place in its tenant's count; given back on drop.
struct Slot {
    account: Arc<Account>,
    topic: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let counter = if self.topic { &self.account.topics } else { &self.account.groups };
        counter.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A stored message's weight in its tenant's count, shared by every queue entry of it; given
/// back when the last entry goes.
struct Charge {
    account: Arc<Account>,
    bytes: u64,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.account.messages.fetch_sub(1, Ordering::AcqRel);
        self.account.bytes.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

struct Topic {
    groups: HashMap<Arc<str>, Group>,
    dedup: HashMap<String, String>,
    dedup_order: VecDeque<(Instant, String)>,
    /// A dead-letter topic without groups keeps its messages here for the first group.
    unclaimed: Option<Group>,
    /// The last send to it or receive from it.
    last_used: Instant,
    /// Its place in the tenant's `topics` count (none for a dead-letter topic).
    _slot: Option<Slot>,
}

impl Topic {
    fn new(slot: Option<Slot>) -> Self {
        Self {
            groups: HashMap::new(),
            dedup: HashMap::new(),
            dedup_order: VecDeque::new(),
            unclaimed: None,
            last_used: Instant::now(),
            _slot: slot,
        }
    }

    /// Whether it holds nothing: no group with a message or a member.
    fn is_empty(&self) -> bool {
        self.unclaimed.as_ref().is_none_or(|g| g.len() == 0)
            && self.groups.values().all(|g| g.len() == 0 && g.members == 0)
    }
}

#[derive(Clone)]
struct Entry {
    seq: u64,
    msg: Arc<Message>,
    /// Deliveries made so far.
    attempts: u32,
    /// The message's weight in its tenant's stored count.
    _charge: Arc<Charge>,
}

struct Leased {
    entry: Entry,
    deadline: Instant,
}

struct Group {
    /// Its place in the tenant's `groups` count (none for a group of a dead-letter topic).
    _slot: Option<Slot>,
    filter: TagFilter,
    retry: BTreeMap<u64, Entry>,
    ready: VecDeque<Entry>,
    delayed: BTreeMap<(Instant, u64), Entry>,
    leased: HashMap<u64, Leased>,
    expiry: BTreeSet<(Instant, u64)>,
    bytes: u64,
    members: usize,
    idle_since: Option<Instant>,
    notify: Arc<Notify>,
}

impl Group {
    fn new(filter: TagFilter, slot: Option<Slot>) -> Self {
        Self {
            _slot: slot,
            filter,
            retry: BTreeMap::new(),
            ready: VecDeque::new(),
            delayed: BTreeMap::new(),
            leased: HashMap::new(),
            expiry: BTreeSet::new(),
            bytes: 0,
            members: 0,
            idle_since: None,
            notify: Arc::new(Notify::new()),
        }
    }

    fn len(&self) -> usize {
        self.retry.len() + self.ready.len() + self.delayed.len() + self.leased.len()
    }

    /// The earliest instant something changes by itself.
    fn next_deadline(&self) -> Option<Instant> {
        let delayed = self.delayed.keys().next().map(|(t, _)| *t);
        let expiry = self.expiry.iter().next().map(|(t, _)| *t);
        match (delayed, expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Moves what is due at `now`; answers the entries whose last attempt was the final one
    /// (to dead-letter), removed from the group.
    fn advance(&mut self, now: Instant, max_attempts: Option<u32>) -> Vec<Entry> {
        let mut dead = Vec::new();
        while let Some(&(t, seq)) = self.delayed.keys().next() {
            if t > now {
                break;
            }
            if let Some(entry) = self.delayed.remove(&(t, seq)) {
                self.requeue(entry, max_attempts, &mut dead);
            }
        }
        while let Some(&(t, id)) = self.expiry.iter().next() {
            if t > now {
                break;
            }
            self.expiry.remove(&(t, id));
            if let Some(leased) = self.leased.remove(&id) {
                self.requeue(leased.entry, max_attempts, &mut dead);
            }
        }
        dead
    }

    fn requeue(&mut self, entry: Entry, max_attempts: Option<u32>, dead: &mut Vec<Entry>) {
        if max_attempts.is_some_and(|max| entry.attempts >= max) {
            self.bytes -= entry.msg.body.len() as u64;
            dead.push(entry);
        } else {
            self.retry.insert(entry.seq, entry);
        }
    }

    fn remove_lease(&mut self, id: u64) -> Option<Leased> {
        let leased = self.leased.remove(&id)?;
        self.expiry.remove(&(leased.deadline, id));
        Some(leased)
    }
}

/// `key`'s topic, created (taking a place in the tenant's `topics` count, unless it is a
/// dead-letter topic) when it does not exist yet.
fn topic_entry<'a>(
    topics: &'a mut HashMap<TopicKey, Topic>,
    account: &Arc<Account>,
    key: &TopicKey,
) -> Result<&'a mut Topic, QuotaRefusal> {
    match topics.entry(key.clone()) {
        std::collections::hash_map::Entry::Occupied(t) => Ok(t.into_mut()),
        std::collections::hash_map::Entry::Vacant(v) => {
            let slot = if key.is_dead_letter() { None } else { Some(account.slot(true)?) };
            Ok(v.insert(Topic::new(slot)))
        }
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn instant_of(at: SystemTime, now: Instant) -> Instant {
    at.duration_since(SystemTime::now()).map_or(now, |ahead| now + ahead)
}

impl EmbeddedBroker {
    /// A broker with `settings`; it bumps `stats.dead_lettered`.
    #[must_use]
    pub fn new(settings: BrokerSettings, stats: Arc<MessagingStats>) -> Arc<Self> {
        Arc::new(Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                accounts: Mutex::default(),
                settings,
                stats,
                closed: AtomicBool::new(false),
            }),
        })
    }
}

impl Shared {
    fn accounts(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<Account>>> {
        self.accounts.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `tenant`'s account, created (unlimited) on first use.
    fn account(&self, tenant: &Arc<str>) -> Arc<Account> {
        self.accounts().entry(tenant.clone()).or_insert_with(|| Arc::new(Account::new())).clone()
    }

    fn check_open(&self) -> Result<(), BrokerError> {
        if self.closed.load(Ordering::Acquire) {
            Err(BrokerError::Unavailable("the embedded broker is stopped".into()))
        } else {
            Ok(())
        }
    }

    fn max_attempts(&self, topic: &TopicKey) -> Option<u32> {
        (!topic.is_dead_letter()).then_some(self.settings.max_delivery_attempts)
    }

    /// Stores one message in every matching group of `topic` (the caller holds the lock).
    fn store(&self, state: &mut State, topic: &TopicKey, msg: &OutMessage) -> SendOutcome {
        let now = Instant::now();
        let window = self.settings.dedup_window;
        let cap = self.settings.topic_max_messages;
        let max_bytes = self.settings.topic_max_bytes;
        let grace = self.settings.group_grace;
        let State { topics, next_seq, .. } = state;
        let account = self.account(&topic.tenant);
        let t = match topic_entry(topics, &account, topic) {
            Ok(t) => t,
            Err(refusal) => return SendOutcome::QuotaExceeded(refusal),
        };
        t.last_used = now;
        // forget dedup ids past the window, and group state past its grace
        while let Some((at, _)) = t.dedup_order.front() {
            if now.duration_since(*at) < window && t.dedup_order.len() <= cap as usize {
                break;
            }
            if let Some((_, id)) = t.dedup_order.pop_front() {
                t.dedup.remove(&id);
            }
        }
        t.groups.retain(|_, g| {
            g.members > 0 || g.idle_since.is_none_or(|since| now.duration_since(since) < grace)
        });
        if let Some(id) = t.dedup.get(&msg.client_id) {
            return SendOutcome::Stored { message_id: id.clone(), duplicate: true };
        }
        if topic.is_dead_letter() && t.groups.is_empty() && t.unclaimed.is_none() {
            t.unclaimed = Some(Group::new(TagFilter::All, None));
        }
        let body = msg.body.len() as u64;
        let tag = msg.tag.as_deref();
        let groups = t.groups.iter().map(|(name, g)| (&**name, g));
        for (name, g) in groups.chain(t.unclaimed.as_ref().map(|g| ("(none yet)", g))) {
            if !g.filter.matches(tag) {
                continue;
            }
            if g.len() as u64 >= cap || g.bytes + body > max_bytes {
                return SendOutcome::RetryLater(format!(
                    "topic {} is full for group {name} ({} messages, {} bytes waiting)",
                    topic.topic,
                    g.len(),
                    g.bytes
                ));
            }
        }
        // a message no group takes is not stored, so it costs nothing
        let stored = t.groups.values().chain(t.unclaimed.as_ref()).any(|g| g.filter.matches(tag));
        let charge = if stored {
            match account.charge(msg.weight() as u64) {
                Ok(charge) => Some(Arc::new(charge)),
                Err(refusal) => return SendOutcome::QuotaExceeded(refusal),
            }
        } else {
            None
        };
        *next_seq += 1;
        let seq = *next_seq;
        let message_id = format!("{seq:016x}");
        let message = Arc::new(Message {
            message_id: message_id.clone(),
            client_id: msg.client_id.clone(),
            topic: topic.topic.clone(),
            // a copy: the request's body is a slice of the transport's receive buffer, which a
            // stored message would otherwise keep alive whole (8 KiB for a small message)
            body: bytes::Bytes::copy_from_slice(&msg.body),
            tag: msg.tag.clone(),
            keys: msg.keys.clone(),
            properties: msg.properties.clone(),
            published_at: SystemTime::now(),
            deliver_at: msg.deliver_at,
        });
        let due = msg.deliver_at.map(|at| instant_of(at, now)).filter(|at| *at > now);
        for g in t.groups.values_mut().chain(t.unclaimed.as_mut()).filter(|g| g.filter.matches(tag))
        {
            let Some(charge) = &charge else { break };
            let entry = Entry { seq, msg: message.clone(), attempts: 0, _charge: charge.clone() };
            g.bytes += body;
            match due {
                Some(at) => {
                    g.delayed.insert((at, seq), entry);
                }
                None => g.ready.push_back(entry),
            }
            g.notify.notify_waiters();
        }
        t.dedup.insert(msg.client_id.clone(), message_id.clone());
        t.dedup_order.push_back((now, msg.client_id.clone()));
        SendOutcome::Stored { message_id, duplicate: false }
    }

    /// Moves `dead` (taken from `group` of `topic`) to the dead-letter topic (the caller holds
    /// the lock).
    fn dead_letter(&self, state: &mut State, topic: &TopicKey, group: &str, dead: Vec<Entry>) {
        if dead.is_empty() {
            return;
        }
        let dlq = topic.dead_letter();
        for entry in dead {
            let m = &entry.msg;
            let out = OutMessage {
                client_id: format!("{}:{}", topic.topic, m.message_id),
                body: m.body.clone(),
                tag: m.tag.clone(),
                keys: m.keys.clone(),
                properties: m.properties.clone(),
                deliver_at: None,
            };
            // a dead-letter topic without room keeps the message where it was, due again
            if let SendOutcome::Stored { .. } = self.store(state, &dlq, &out) {
                MessagingStats::add(&self.stats.dead_lettered, 1);
            } else if let Some(g) =
                state.topics.get_mut(topic).and_then(|t| t.groups.get_mut(group))
            {
                g.bytes += m.body.len() as u64;
                g.retry.insert(entry.seq, entry);
            }
        }
    }

    /// Applies `f` to the group of `lease` after moving what is due.
    fn with_lease<T>(
        &self,
        lease: &Lease,
        f: impl FnOnce(&mut Group, u64, Instant, Option<u32>, &mut Vec<Entry>) -> Result<T, BrokerError>,
    ) -> Result<T, BrokerError> {
        self.check_open()?;
        let LeaseInner::Embedded(r) = &lease.0 else {
            return Err(BrokerError::LeaseNotFound("not an embedded lease".into()));
        };
        let now = Instant::now();
        let mut state = lock(&self.state);
        let max = self.max_attempts(&r.topic);
        let group = state
            .topics
            .get_mut(&r.topic)
            .and_then(|t| t.groups.get_mut(&r.group))
            .ok_or_else(|| BrokerError::LeaseNotFound(format!("group {} is gone", r.group)))?;
        let mut dead = group.advance(now, max);
        let out = f(group, r.id, now, max, &mut dead);
        self.dead_letter(&mut state, &r.topic, &r.group, dead);
        out
    }
}

impl Broker for EmbeddedBroker {
    fn backend(&self) -> BrokerBackend {
        BrokerBackend::Embedded
    }

    fn send<'a>(
        &'a self,
        topic: &'a TopicKey,
        messages: Vec<OutMessage>,
    ) -> BoxFuture<'a, Vec<SendOutcome>> {
        let shared = &self.shared;
        let out = if let Err(e) = shared.check_open() {
            messages.iter().map(|_| SendOutcome::Unavailable(e.to_string())).collect()
        } else {
            let mut state = lock(&shared.state);
            messages.iter().map(|m| shared.store(&mut state, topic, m)).collect()
        };
        std::future::ready(out).boxed()
    }

    fn open<'a>(
        &'a self,
        group: &'a GroupKey,
        invisible: Duration,
    ) -> BoxFuture<'a, Result<Box<dyn Pull>, BrokerError>> {
        let opened = (|| {
            self.shared.check_open()?;
            let mut state = lock(&self.shared.state);
            let account = self.shared.account(&group.topic.tenant);
            let topic = topic_entry(&mut state.topics, &account, &group.topic)
                .map_err(BrokerError::QuotaExceeded)?;
            topic.last_used = Instant::now();
            let g = match topic.groups.entry(group.group.clone()) {
                std::collections::hash_map::Entry::Occupied(g) => g.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    // groups of a dead-letter topic follow their topic: not counted
                    let slot = if group.topic.is_dead_letter() {
                        None
                    } else {
                        Some(account.slot(false).map_err(BrokerError::QuotaExceeded)?)
                    };
                    // the first group of a dead-letter topic takes what waited for one
                    let mut g = match topic.unclaimed.take() {
                        Some(mut g) => {
                            g._slot = slot;
                            g
                        }
                        None => Group::new(TagFilter::All, slot),
                    };
                    g.filter = group.filter.clone();
                    v.insert(g)
                }
            };
            if g.filter != group.filter {
                return Err(BrokerError::Conflict(format!(
                    "group {} of topic {} filters on tag {}, not {}",
                    group.group, group.topic.topic, g.filter, group.filter
                )));
            }
            g.members += 1;
            g.idle_since = None;
            let member: Box<dyn Pull> = Box::new(Member {
                shared: self.shared.clone(),
                key: group.clone(),
                invisible,
                notify: g.notify.clone(),
            });
            Ok(member)
        })();
        std::future::ready(opened).boxed()
    }

    fn ack(&self, leases: Vec<Lease>) -> BoxFuture<'_, Vec<Result<(), BrokerError>>> {
        let out = leases
            .iter()
            .map(|lease| {
                self.shared.with_lease(lease, |g, id, _, _, _| {
                    let leased = g.remove_lease(id).ok_or_else(|| {
                        BrokerError::LeaseNotFound("acked already or expired".into())
                    })?;
                    g.bytes -= leased.entry.msg.body.len() as u64;
                    Ok(())
                })
            })
            .collect();
        std::future::ready(out).boxed()
    }

    fn set_visibility(
        &self,
        leases: Vec<(Lease, Duration)>,
    ) -> BoxFuture<'_, Vec<Result<(), BrokerError>>> {
        let out = leases
            .iter()
            .map(|(lease, delay)| {
                self.shared.with_lease(lease, |g, id, now, max, dead| {
                    let mut leased = g.remove_lease(id).ok_or_else(|| {
                        BrokerError::LeaseNotFound("acked already or expired".into())
                    })?;
                    if delay.is_zero() {
                        g.requeue(leased.entry, max, dead);
                        g.notify.notify_waiters();
                    } else {
                        leased.deadline = now + *delay;
                        g.expiry.insert((leased.deadline, id));
                        g.leased.insert(id, leased);
                    }
                    Ok(())
                })
            })
            .collect();
        std::future::ready(out).boxed()
    }

    fn release(&self, leases: Vec<Lease>) {
        for lease in &leases {
            // a lease that is gone was acked or expired: nothing to return
            let _ = self.shared.with_lease(lease, |g, id, _, max, dead| {
                if let Some(leased) = g.remove_lease(id) {
                    g.requeue(leased.entry, max, dead);
                    g.notify.notify_waiters();
                }
                Ok(())
            });
        }
    }

    fn set_limits(&self, tenant: &Arc<str>, limits: TenantLimits) {
        let account = self.shared.account(tenant);
        *account.limits.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = limits;
    }

    fn usage(&self) -> Vec<(Arc<str>, TenantUsage)> {
        let accounts = self.shared.accounts();
        let mut usage: Vec<_> =
            accounts.iter().map(|(tenant, a)| (tenant.clone(), a.usage())).collect();
        usage.sort_by(|a, b| a.0.cmp(&b.0));
        usage
    }

    fn sweep_idle(&self, ttl: Duration) -> BoxFuture<'_, u64> {
        let now = Instant::now();
        let idle = |since: Option<Instant>| since.is_some_and(|at| now.duration_since(at) >= ttl);
        let mut state = lock(&self.shared.state);
        let mut removed = 0;
        state.topics.retain(|_, topic| {
            let before = topic.groups.len();
            topic.groups.retain(|_, g| !(g.members == 0 && g.len() == 0 && idle(g.idle_since)));
            removed += (before - topic.groups.len()) as u64;
            let keep =
                !(topic.groups.is_empty() && topic.is_empty() && idle(Some(topic.last_used)));
            removed += u64::from(!keep);
            keep
        });
        std::future::ready(removed).boxed()
    }

    fn remove_tenant<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, Result<u64, BrokerError>> {
        let mut state = lock(&self.shared.state);
        let before = state.topics.len();
        state.topics.retain(|key, topic| {
            let keep = &*key.tenant != tenant;
            if !keep {
                topic.groups.values().for_each(|g| g.notify.notify_waiters());
            }
            keep
        });
        let removed = (before - state.topics.len()) as u64;
        self.shared.accounts().remove(tenant);
        std::future::ready(Ok(removed)).boxed()
    }

    fn unacked(&self) -> Option<u64> {
        let state = lock(&self.shared.state);
        Some(state.topics.values().flat_map(|t| t.groups.values()).map(|g| g.len() as u64).sum())
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        self.shared.closed.store(true, Ordering::Release);
        let state = lock(&self.shared.state);
        for g in state.topics.values().flat_map(|t| t.groups.values()) {
            g.notify.notify_waiters();
        }
        std::future::ready(()).boxed()
    }
}

/// One member of a group; leaving (drop) starts the group's grace when it was the last.
struct Member {
    shared: Arc<Shared>,
    key: GroupKey,
    invisible: Duration,
    notify: Arc<Notify>,
}

impl Member {
    /// Leases what is deliverable now, or answers the group's next deadline.
    fn take(&self, max_messages: usize, max_bytes: usize) -> Result<Taken, BrokerError> {
        self.shared.check_open()?;
        let now = Instant::now();
        let max = self.shared.max_attempts(&self.key.topic);
        let mut state = lock(&self.shared.state);
        let State { topics, next_lease, .. } = &mut *state;
        let group = topics
            .get_mut(&self.key.topic)
            .and_then(|t| t.groups.get_mut(&self.key.group))
            .ok_or_else(|| BrokerError::Unavailable(format!("group {} is gone", self.key.group)))?;
        let dead = group.advance(now, max);
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while out.len() < max_messages {
            let next = match group.retry.first_key_value() {
                Some((_, e)) => e.msg.weight(),
                None => match group.ready.front() {
                    Some(e) => e.msg.weight(),
                    None => break,
                },
            };
            if !out.is_empty() && bytes + next > max_bytes {
                break;
            }
            let Some(mut entry) =
                group.retry.pop_first().map(|(_, e)| e).or_else(|| group.ready.pop_front())
            else {
                break;
            };
            bytes += next;
            entry.attempts += 1;
            *next_lease += 1;
            let id = *next_lease;
            let deadline = now + self.invisible;
            group.expiry.insert((deadline, id));
            out.push(Delivery {
                message: entry.msg.clone(),
                attempt: entry.attempts,
                lease: Lease(LeaseInner::Embedded(LeaseRef {
                    topic: self.key.topic.clone(),
                    group: self.key.group.clone(),
                    id,
                })),
            });
            group.leased.insert(id, Leased { entry, deadline });
        }
        let next = group.next_deadline();
        self.shared.dead_letter(&mut state, &self.key.topic, &self.key.group, dead);
        Ok(if out.is_empty() { Taken::Nothing(next) } else { Taken::Some(out) })
    }
}

enum Taken {
    Some(Vec<Delivery>),
    Nothing(Option<Instant>),
}

impl Pull for Member {
    fn fetch(
        &mut self,
        max_messages: usize,
        max_bytes: usize,
        wait: Duration,
    ) -> BoxFuture<'_, Result<Vec<Delivery>, BrokerError>> {
        async move {
            let until = Instant::now() + wait;
            loop {
                let notified = self.notify.notified();
                tokio::pin!(notified);
                // registered before looking, so a send in between is not missed
                notified.as_mut().enable();
                let next = match self.take(max_messages.max(1), max_bytes)? {
                    Taken::Some(out) => return Ok(out),
                    Taken::Nothing(next) => next,
                };
                let now = Instant::now();
                if now >= until {
                    return Ok(Vec::new());
                }
                let wake = next.map_or(until, |n| n.min(until));
                tokio::select! {
                    () = &mut notified => {}
                    () = tokio::time::sleep_until(wake.into()) => {}
                }
            }
        }
        .boxed()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let mut state = lock(&self.shared.state);
        if let Some(g) =
            state.topics.get_mut(&self.key.topic).and_then(|t| t.groups.get_mut(&self.key.group))
        {
            g.members = g.members.saturating_sub(1);
            if g.members == 0 {
                g.idle_since = Some(Instant::now());
            }
        }
    }
}

#[cfg(test)]
mod tests;
