//! The Redis engine (`[streams] engine = "redis"`, Redis 7.0 or later): streams live in Redis,
//! shared by every node that points at it.
//!
//! **Keys.** Every key of a stream `tenant/name` carries the hash tag `{tenant/name}`, so each
//! script touches one Redis Cluster slot (stream names have no `/`, so the tag is unambiguous):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `steward:{t/n}:meta` | hash | `epoch`, `top` (last offset) |
//! | `steward:{t/n}:history` | stream | publications, field `p`; `XADD … MAXLEN history_size`, trimmed by `MINID` after `history_ttl` |
//! | `steward:{t/n}:latest` | hash | key → its latest publication; the key-less one under `"\0"` (no key has control characters) |
//! | `steward:{t/n}:order` | zset | key → offset of its latest value (most recent first) |
//! | `steward:{t/n}:expiry` | zset | key → when its latest value expires, ms (`key_ttl`; Redis 7.0 has no per-field hash TTL) |
//! | `steward:{t/n}:idem:<key>` | string | `epoch,offset` of a publish with that idempotency key, `PX idempotency_window` |
//! | `steward:{t/n}:live` | channel | `epoch,publication` per publish |
//!
//! The encoding of a publication is in `codec.rs`. All times are Redis time (`TIME`), one
//! clock for every node.
//!
//! **Scripts.** Each operation is one Lua script (`scripts.rs`, `lua/`): publish (meta with a fresh
//! epoch when missing, idempotency, the `stream_keys` quota, offset, history, latest value, key
//! expiry, `PUBLISH`), snapshot (a consistent top and history), history, latest, remove key,
//! info. Expired latest values are purged 100 at a time per call and skipped by reads.
//!
//! **Expiry of abandoned streams.** The history expires `history_ttl` after its last
//! publication (Centrifugo's way); meta and the latest values after the longest of
//! `history_ttl`, `key_ttl` and `idempotency_window`, or never when `key_ttl` is unset. Meta
//! created by a read (no publication yet) expires after that same time.
//!
//! **Order.** A store's operations run one at a time in call order (`sequence.rs`); each starts
//! when called if it is its turn. Every operation is bounded by the engine's timeout
//! (`Unavailable` past it), waiting for earlier ones included. A caller must poll (or drop)
//! every future it got: a later operation waits for the earlier ones.
//!
//! **Availability.** Nothing connects until the first operation: Steward starts while Redis is
//! down. Commands go through redis-rs's `ConnectionManager`, which reconnects in the background
//! with backoff; meanwhile operations answer `Unavailable`.
//!
//! **Live feed.** `dispatcher.rs`: one pub/sub connection per node, run by [`Engine::run`].
//!
//! What this engine does not do: the tenant's `stream_bytes` budget of this node (the bytes
//! live in Redis, not here; [`StoreInfo::bytes`] is 0).

mod codec;
mod dispatcher;
mod scripts;
mod sequence;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::FutureExt as _;
use futures_util::future::LocalBoxFuture;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, ScriptInvocation, Value};
use tokio::sync::{mpsc, oneshot};

use self::codec::{array, int, item, key_field, publications, text};
use self::dispatcher::{Command, Dispatcher};
use self::sequence::Sequencer;
use super::{Engine, LiveEvent, StoreFuture, StreamLimits, StreamStore};
use crate::model::{
    HistoryPage, HistoryQuery, NewPublication, Position, Publication, Published, Snapshot,
    StoreInfo, StreamRef,
};
use crate::{Error, Result};

/// Room of one live receiver, in events. A receiver that falls this far behind misses
/// publications and gets a `Lost` (see `dispatcher.rs`).
pub const LIVE_CAPACITY: usize = 256;

/// Largest count sent to a script (limits beyond it mean "all").
const MAX_COUNT: u64 = 1 << 31;

/// The Redis engine, shared by the node: one command connection (multiplexed) and one pub/sub
/// connection.
pub struct RedisEngine {
    shared: Arc<Shared>,
}

/// What the engine and its stores share.
struct Shared {
    /// Where Redis is (opened, not connected).
    client: redis::Client,
    /// The command connection, made on first use (it needs a Tokio runtime).
    manager: OnceLock<ConnectionManager>,
    /// Bound of every operation.
    timeout: Duration,
    /// Registrations toward the dispatcher.
    commands: mpsc::UnboundedSender<Command>,
    /// The dispatcher's state; locked by the one dispatcher that runs.
    dispatcher: Arc<tokio::sync::Mutex<Dispatcher>>,
}

impl std::fmt::Debug for RedisEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisEngine")
            .field("redis", &self.shared.client.get_connection_info().addr())
            .field("timeout", &self.shared.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisEngine {
    /// An engine for the Redis at `url` (`redis://[user:password@]host[:port][/db]`, or
    /// `rediss://` with TLS when redis-rs is built with it). Does not connect: the first
    /// operation does, so Steward starts while Redis is down. Every operation is bounded by
    /// `timeout`, which also bounds each connection attempt.
    ///
    /// # Errors
    /// [`Error::Invalid`] (field `streams.url`) when `url` is not a Redis URL.
    pub fn new(url: &str, timeout: Duration) -> Result<Self> {
        let client =
            redis::Client::open(url).map_err(|e| Error::invalid("streams.url", e.to_string()))?;
        let (commands, receiver) = mpsc::unbounded_channel();
        let dispatcher = Arc::new(tokio::sync::Mutex::new(Dispatcher::new(receiver)));
        let shared = Shared { client, manager: OnceLock::new(), timeout, commands, dispatcher };
        Ok(Self { shared: Arc::new(shared) })
    }
}

impl Engine for RedisEngine {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn open(&self, stream: &StreamRef, limits: StreamLimits) -> Box<dyn StreamStore> {
        Box::new(RedisStore::new(self.shared.clone(), stream, limits))
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn run(&self) -> Option<LocalBoxFuture<'static, ()>> {
        let shared = self.shared.clone();
        Some(
            async move {
                let state = shared.dispatcher.clone().lock_owned().await;
                Dispatcher::run(state, shared.client.clone(), shared.timeout).await;
            }
            .boxed_local(),
        )
    }
}

impl Shared {
    /// The command connection (made lazily, in the caller's runtime).
    fn manager(&self) -> Result<ConnectionManager> {
        if let Some(manager) = self.manager.get() {
            return Ok(manager.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_min_delay(Duration::from_millis(100))
            .set_max_delay(Duration::from_secs(1));
        let manager = ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            .map_err(|e| Error::Internal(format!("redis connection manager: {e}")))?;
        Ok(self.manager.get_or_init(|| manager).clone())
    }
}

/// A Redis error as the streams API answers it: script and protocol failures are `Internal`,
/// everything else (connection, timeout, a Redis loading or out of memory) `Unavailable`.
fn redis_error(e: &RedisError) -> Error {
    use redis::{ErrorKind, ServerErrorKind};
    match e.kind() {
        ErrorKind::Server(
            ServerErrorKind::ResponseError
            | ServerErrorKind::ExecAbort
            | ServerErrorKind::NoScript
            | ServerErrorKind::CrossSlot,
        )
        | ErrorKind::Parse
        | ErrorKind::UnexpectedReturnType => Error::Internal(format!("redis script failed: {e}")),
        _ => Error::Unavailable(format!("redis: {e}")),
    }
}

/// Milliseconds of a duration, at least 1 (Redis refuses a zero expiry).
fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The Redis keys and channel of one stream.
#[derive(Debug)]
struct Keys {
    meta: String,
    history: String,
    latest: String,
    order: String,
    expiry: String,
    /// Prefix of the idempotency keys.
    idempotency: String,
    channel: Arc<str>,
}

impl Keys {
    fn new(stream: &StreamRef) -> Self {
        let prefix = format!("steward:{{{}/{}}}:", stream.tenant, stream.name);
        Self {
            meta: format!("{prefix}meta"),
            history: format!("{prefix}history"),
            latest: format!("{prefix}latest"),
            order: format!("{prefix}order"),
            expiry: format!("{prefix}expiry"),
            idempotency: format!("{prefix}idem:"),
            channel: Arc::from(format!("{prefix}live")),
        }
    }
}

/// One stream's store on Redis; holds nothing but names and limits.
#[derive(Debug)]
pub struct RedisStore {
    shared: Arc<Shared>,
    keys: Keys,
    limits: StreamLimits,
    sequencer: Rc<Sequencer>,
    /// Fires once the live feed's channel is subscribed (see [`StreamStore::live`]).
    ready: Rc<RefCell<Option<oneshot::Receiver<()>>>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl RedisStore {
    fn new(shared: Arc<Shared>, stream: &StreamRef, limits: StreamLimits) -> Self {
        Self {
            shared,
            keys: Keys::new(stream),
            limits,
            sequencer: Rc::default(),
            ready: Rc::default(),
        }
    }

    /// An invocation of `script` with the five keys every script takes.
    fn invocation(&self, script: &'static redis::Script) -> ScriptInvocation<'static> {
        let mut invocation = script.prepare_invoke();
        let k = &self.keys;
        invocation.key(&k.meta).key(&k.history).key(&k.latest).key(&k.order).key(&k.expiry);
        invocation
    }

    /// A fresh epoch, used by a script only when the stream has no meta.
    fn epoch_candidate() -> String {
        format!("{:016x}", fastrand::u64(..))
    }

    /// How long meta and latest values outlive their last publication.
    fn meta_ttl(&self) -> u64 {
        let l = &self.limits;
        ms(l.history_ttl).max(l.key_ttl.map_or(0, ms)).max(ms(l.idempotency_window))
    }

    /// Runs `invocation` in this store's order, within the timeout, and reads its answer.
    fn run<T: 'static>(
        &self,
        invocation: ScriptInvocation<'static>,
        answer: impl FnOnce(&Value) -> Result<T> + 'static,
    ) -> StoreFuture<T> {
        let ticket = self.sequencer.ticket();
        let ready = self.ready.clone();
        let shared = self.shared.clone();
        sequence::eager(async move {
            let timeout = shared.timeout;
            let deadline = tokio::time::Instant::now() + timeout;
            let late = |what: &str| Error::Unavailable(format!("{what} within {timeout:?}"));
            tokio::time::timeout_at(deadline, ticket.turn())
                .await
                .map_err(|_| late("an earlier operation of the stream did not finish"))?;
            tokio::time::timeout_at(deadline, subscribed(&ready))
                .await
                .map_err(|_| late("the stream's redis live feed was not subscribed"))?;
            let mut conn = shared.manager()?;
            let value: Value =
                tokio::time::timeout_at(deadline, invocation.invoke_async(&mut conn))
                    .await
                    .map_err(|_| late("redis did not answer"))?
                    .map_err(|e| redis_error(&e))?;
            let answer = answer(&value);
            drop(ticket);
            answer
        })
    }
}

/// Waits until the live feed registered last is subscribed (at once when none is pending);
/// the signal stays for the next operation when this one gives up.
async fn subscribed(ready: &RefCell<Option<oneshot::Receiver<()>>>) {
    std::future::poll_fn(|cx| {
        let mut slot = ready.borrow_mut();
        let Some(receiver) = slot.as_mut() else { return std::task::Poll::Ready(()) };
        match std::pin::Pin::new(receiver).poll(cx) {
            std::task::Poll::Ready(_) => {
                *slot = None;
                std::task::Poll::Ready(())
            }
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    })
    .await;
}

/// The position a script answered (`epoch`, `top` at `items[at]`, `items[at + 1]`).
fn position(items: &[Value], at: usize) -> Result<Position> {
    Ok(Position {
        epoch: text(item(items, at, "epoch")?, "epoch")?,
        offset: int(item(items, at + 1, "top")?, "top")?,
    })
}

/// A script's status word (`ok`, `duplicate`, …).
fn status(items: &[Value]) -> Result<String> {
    text(item(items, 0, "status")?, "status")
}

impl StreamStore for RedisStore {
    fn publish(&mut self, p: NewPublication) -> StoreFuture<Published> {
        let l = &self.limits;
        let mut invocation = self.invocation(&scripts::PUBLISH);
        if let Some(key) = &p.idempotency_key {
            invocation.key(format!("{}{key}", self.keys.idempotency));
        }
        invocation
            .arg(Self::epoch_candidate())
            .arg(key_field(p.key.as_deref()))
            .arg(&p.data[..])
            .arg(u8::from(p.json))
            .arg(l.history_size)
            .arg(ms(l.history_ttl))
            .arg(l.key_ttl.map_or(0, ms))
            .arg(ms(l.idempotency_window))
            .arg(l.max_keys)
            .arg(self.meta_ttl())
            .arg(&*self.keys.channel);
        self.run(invocation, move |value| {
            let items = array(value, "publish answer")?;
            match status(items)?.as_str() {
                "ok" => {
                    let position = position(items, 1)?;
                    let publication = Publication {
                        offset: position.offset,
                        key: p.key,
                        data: p.data,
                        json: p.json,
                        time_ms: int(item(items, 3, "time")?, "time")?,
                    };
                    Ok(Published { position, duplicate: false, publication: Some(publication) })
                }
                "duplicate" => Ok(Published {
                    position: position(items, 1)?,
                    duplicate: true,
                    publication: None,
                }),
                "quota" => Err(Error::QuotaExceeded {
                    quota: "stream_keys",
                    limit: int(item(items, 1, "limit")?, "limit")?,
                }),
                other => Err(Error::Internal(format!("publish script answered `{other}`"))),
            }
        })
    }

    fn snapshot(&mut self, since: Option<Position>, latest: bool) -> StoreFuture<Snapshot> {
        let mut invocation = self.invocation(&scripts::SNAPSHOT);
        let max_latest = if latest { (self.limits.max_latest as u64).min(MAX_COUNT) } else { 0 };
        invocation
            .arg(Self::epoch_candidate())
            .arg(self.meta_ttl())
            .arg(ms(self.limits.history_ttl))
            .arg(u8::from(since.is_some()))
            .arg(since.as_ref().map_or("", |p| p.epoch.as_str()))
            .arg(since.as_ref().map_or(0, |p| p.offset))
            .arg(max_latest);
        let was_recovering = since.is_some();
        self.run(invocation, move |value| {
            let items = array(value, "snapshot answer")?;
            let recovered = int(item(items, 2, "recovered")?, "recovered")? == 1;
            Ok(Snapshot {
                position: position(items, 0)?,
                was_recovering,
                recovered,
                publications: publications(item(items, 3, "publications")?, "recovered")?,
                latest: publications(item(items, 4, "latest values")?, "latest")?,
            })
        })
    }

    fn history(&mut self, query: HistoryQuery) -> StoreFuture<HistoryPage> {
        let mut invocation = self.invocation(&scripts::HISTORY);
        let since = query.since.as_ref();
        invocation
            .arg(Self::epoch_candidate())
            .arg(self.meta_ttl())
            .arg(ms(self.limits.history_ttl))
            .arg(u8::from(since.is_some()))
            .arg(since.map_or("", |p| p.epoch.as_str()))
            .arg(since.map_or(0, |p| p.offset))
            .arg((query.limit as u64).min(MAX_COUNT))
            .arg(u8::from(query.reverse));
        self.run(invocation, move |value| {
            let items = array(value, "history answer")?;
            match status(items)?.as_str() {
                "ok" => Ok(HistoryPage {
                    position: position(items, 1)?,
                    publications: publications(item(items, 3, "publications")?, "history")?,
                }),
                "epoch" => Err(Error::Unrecoverable(format!(
                    "epoch `{}` is not the stream's (`{}`): its history was lost",
                    query.since.map(|p| p.epoch).unwrap_or_default(),
                    text(item(items, 1, "epoch")?, "epoch")?,
                ))),
                "offset" => Err(Error::Unrecoverable(format!(
                    "offset {} is past the stream's top {}",
                    query.since.map_or(0, |p| p.offset),
                    int(item(items, 2, "top")?, "top")?,
                ))),
                other => Err(Error::Internal(format!("history script answered `{other}`"))),
            }
        })
    }

    fn latest(&mut self, key: Option<Arc<str>>) -> StoreFuture<(Position, Vec<Publication>)> {
        let mut invocation = self.invocation(&scripts::LATEST);
        invocation
            .arg(Self::epoch_candidate())
            .arg(self.meta_ttl())
            .arg(key.as_deref().unwrap_or(""))
            .arg((self.limits.max_latest as u64).min(MAX_COUNT));
        self.run(invocation, move |value| {
            let items = array(value, "latest answer")?;
            match status(items)?.as_str() {
                "ok" => {
                    Ok((position(items, 1)?, publications(item(items, 3, "values")?, "latest")?))
                }
                "not_found" => Err(Error::NotFound(format!(
                    "key `{}` has no latest value",
                    key.as_deref().unwrap_or_default()
                ))),
                other => Err(Error::Internal(format!("latest script answered `{other}`"))),
            }
        })
    }

    fn remove_key(&mut self, key: Arc<str>) -> StoreFuture<bool> {
        let mut invocation = self.invocation(&scripts::REMOVE_KEY);
        invocation.arg(&*key);
        self.run(invocation, |value| Ok(int(value, "remove answer")? == 1))
    }

    fn info(&mut self) -> StoreFuture<StoreInfo> {
        let mut invocation = self.invocation(&scripts::INFO);
        invocation
            .arg(Self::epoch_candidate())
            .arg(self.meta_ttl())
            .arg(ms(self.limits.history_ttl));
        self.run(invocation, |value| {
            let items = array(value, "info answer")?;
            Ok(StoreInfo {
                position: position(items, 0)?,
                history: int(item(items, 2, "history")?, "history")?,
                keys: int(item(items, 3, "keys")?, "keys")?,
                bytes: 0,
            })
        })
    }

    fn set_max_keys(&mut self, max_keys: u64) {
        self.limits.max_keys = max_keys;
    }

    fn is_empty(&self) -> bool {
        true
    }

    /// Registers a receiver with the engine's dispatcher (it starts receiving once the
    /// dispatcher runs and the channel is subscribed). The store's next operation waits for
    /// the subscription (within the timeout), so it misses no publication.
    fn live(&mut self) -> Option<mpsc::Receiver<LiveEvent>> {
        let (sender, receiver) = mpsc::channel(LIVE_CAPACITY);
        let (ready, subscribed) = oneshot::channel();
        let channel = self.keys.channel.clone();
        // the dispatcher state holds the receiving end for the engine's whole life
        let _ = self.shared.commands.send(Command::Register { channel, sender, ready });
        *self.ready.borrow_mut() = Some(subscribed);
        Some(receiver)
    }
}

#[cfg(test)]
mod tests;
