//! The façade the edges call ([`Streams`]): validation, finding or starting a stream's actor
//! (admitted against the tenant's `streams` quota and the node's `max_streams`), the tenants'
//! `stream_bytes` budgets, and the `stream-engine` service that runs a shared engine's
//! background work.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use actix::prelude::*;
use steward_config::{StreamEngineKind, StreamsConfig, SupervisorConfig};
use steward_core::{
    ChildSpec, ExitReason, Registry, Resource, ResourceCtx, ResourceId, ResourceKind, RestartType,
    StopResource, Strategy, SupervisorCell, SupervisorSpec, stop_resource,
};

use crate::engine::memory::MemoryEngine;
use crate::engine::{Budget, Engine, StreamLimits};
use crate::model::{
    self, HistoryPage, HistoryQuery, NewPublication, Position, Publication, Published, StreamInfo,
    StreamQuotas, StreamRef, SubscribeOptions,
};
use crate::stats::StreamStats;
use crate::stream::{
    GetHistory, GetInfo, GetLatest, Publish, RemoveKey, StreamActor, StreamEnv, Subscribe,
    Subscriber, Subscription,
};
use crate::{Error, Result};

/// What an admission hands back: the tenant's `streams` quota slot, held by the stream's child
/// spec and released when the stream is gone.
pub type AdmitGuard = Box<dyn std::any::Any + Send + Sync>;

/// The edge's quota check, called once per new stream. The streams crate knows no tenancy; the
/// edge maps its refusal to [`Error::QuotaExceeded`].
pub type Admit<'a> = &'a (dyn Fn() -> Result<AdmitGuard> + Sync);

/// The live streams by (tenant, name): the actors register when started and leave in their
/// `Drop`.
#[derive(Default)]
pub(crate) struct StreamTable {
    entries: Mutex<HashMap<StreamRef, (ResourceId, Addr<StreamActor>)>>,
}

impl StreamTable {
    fn lock(&self) -> MutexGuard<'_, HashMap<StreamRef, (ResourceId, Addr<StreamActor>)>> {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, stream: &StreamRef) -> Option<Addr<StreamActor>> {
        self.lock().get(stream).map(|(_, addr)| addr.clone())
    }

    /// Removes `stream`'s entry if it is still the one of actor `id`.
    pub(crate) fn forget(&self, stream: &StreamRef, id: ResourceId) {
        let mut entries = self.lock();
        if entries.get(stream).is_some_and(|(held, _)| *held == id) {
            entries.remove(stream);
        }
    }

    /// Live streams.
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Handle to the streams of this node. Cheap to clone; usable from any thread (tonic's runtime
/// included).
#[derive(Clone)]
pub struct Streams {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<StreamsConfig>,
    registry: Registry,
    engine: Arc<dyn Engine>,
    stats: Arc<StreamStats>,
    table: Arc<StreamTable>,
    budgets: Mutex<HashMap<Arc<str>, Weak<Budget>>>,
    /// Serializes starting streams, so one name never gets two actors.
    starting: tokio::sync::Mutex<()>,
    supervisor: SupervisorCell,
}

impl Streams {
    /// The streams of `config`, on the engine it names.
    ///
    /// # Errors
    /// [`Error::Invalid`] when the Redis URL cannot be parsed (nothing is connected yet: Redis
    /// may be down at start).
    pub fn new(config: StreamsConfig, registry: Registry) -> Result<Self> {
        let engine: Arc<dyn Engine> = match config.engine {
            StreamEngineKind::Memory => Arc::new(MemoryEngine),
            StreamEngineKind::Redis => {
                Arc::new(crate::engine::redis::RedisEngine::new(&config.url, config.timeout)?)
            }
        };
        Ok(Self::with_engine(config, registry, engine))
    }

    /// The streams of `config` on `engine` (tests hand in their own).
    #[must_use]
    pub fn with_engine(config: StreamsConfig, registry: Registry, engine: Arc<dyn Engine>) -> Self {
        Self {
            inner: Arc::new(Inner {
                config: Arc::new(config),
                registry,
                engine,
                stats: Arc::default(),
                table: Arc::default(),
                budgets: Mutex::default(),
                starting: tokio::sync::Mutex::new(()),
                supervisor: SupervisorCell::new(),
            }),
        }
    }

    /// The children to start under the root supervisor: the `stream-engine` service (a shared
    /// engine's background work; none for memory) and the `streams` dynamic supervisor
    /// (`max_children = [streams] max_streams`).
    #[must_use]
    pub fn child_specs(&self, supervisor: &SupervisorConfig) -> Vec<ChildSpec> {
        let mut specs = Vec::new();
        if self.inner.engine.is_shared() {
            let engine = self.inner.engine.clone();
            specs.push(ChildSpec::new("stream-engine", ResourceKind::Service, move |rcx| {
                Ok::<_, std::convert::Infallible>(EngineRunner { rcx, engine: engine.clone() })
            }));
        }
        specs.push(ChildSpec::supervisor_in(
            SupervisorSpec::from_config("streams", Strategy::Dynamic, supervisor)
                .max_children(self.inner.config.max_streams as usize),
            self.inner.supervisor.clone(),
        ));
        specs
    }

    /// The config.
    #[must_use]
    pub fn config(&self) -> &StreamsConfig {
        &self.inner.config
    }

    /// The node's stream counters.
    #[must_use]
    pub fn stats(&self) -> &Arc<StreamStats> {
        &self.inner.stats
    }

    /// Live streams on this node.
    #[must_use]
    pub fn live(&self) -> usize {
        self.inner.table.len()
    }

    /// Bytes each tenant's streams hold on this node (`stream_bytes` use), for `/metrics`.
    #[must_use]
    pub fn tenant_bytes(&self) -> Vec<(Arc<str>, u64, u64)> {
        let budgets = self.budgets();
        let mut all: Vec<_> = budgets
            .iter()
            .filter_map(|(t, b)| b.upgrade().map(|b| (t.clone(), b.used(), b.limit())))
            .collect();
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Bytes held by all streams on this node.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.tenant_bytes().iter().map(|(_, used, _)| used).sum()
    }

    /// `Publish`: validates, finds or starts the stream (`admit` is asked for a new one),
    /// stores the publication and fans it out; answers its position.
    ///
    /// # Errors
    /// [`Error::Invalid`] (stream name, key, idempotency key, data over `max_data` or not
    /// JSON when said to be), [`Error::QuotaExceeded`] (`streams`, `stream_keys`,
    /// `stream_bytes`, `max_streams`), [`Error::Unavailable`] (engine down, shutting down).
    pub async fn publish(
        &self,
        tenant: &Arc<str>,
        stream: &str,
        publication: NewPublication,
        quotas: StreamQuotas,
        admit: Admit<'_>,
    ) -> Result<Published> {
        self.check_publication(&publication)?;
        let stream = stream_ref(tenant, stream)?;
        let addr = self.stream(&stream, quotas, Some(admit)).await?;
        self.ask(&addr, Publish { publication, quotas }).await
    }

    /// Subscribes `subscriber` to a stream (started if needed: a subscriber may wait for the
    /// first publication). The subscriber is offered the snapshot — recovery from
    /// `options.since` (all or nothing) and the latest values when `options.latest` — then live
    /// publications. Dropping
    /// the returned guard ends the subscription.
    ///
    /// # Errors
    /// As [`Streams::publish`].
    pub async fn subscribe(
        &self,
        tenant: &Arc<str>,
        stream: &str,
        options: SubscribeOptions,
        subscriber: Arc<dyn Subscriber>,
        quotas: StreamQuotas,
        admit: Admit<'_>,
    ) -> Result<Subscription> {
        if let Some(p) = &options.since {
            check_position(p)?;
        }
        let stream = stream_ref(tenant, stream)?;
        let addr = self.stream(&stream, quotas, Some(admit)).await?;
        let SubscribeOptions { since, latest } = options;
        self.ask(&addr, Subscribe { since, latest, subscriber, quotas }).await
    }

    /// `History`: a page of the stream's history (at most `history_size` publications).
    ///
    /// # Errors
    /// [`Error::Invalid`], [`Error::NotFound`] (no such stream on a memory node),
    /// [`Error::Unrecoverable`] (`since` of another epoch or past the top),
    /// [`Error::Unavailable`].
    pub async fn history(
        &self,
        tenant: &Arc<str>,
        stream: &str,
        mut query: HistoryQuery,
        quotas: StreamQuotas,
        admit: Admit<'_>,
    ) -> Result<HistoryPage> {
        if let Some(p) = &query.since {
            check_position(p)?;
        }
        let max = self.inner.config.history_size as usize;
        query.limit = if query.limit == 0 { max } else { query.limit.min(max) };
        let addr = self.existing(tenant, stream, quotas, admit).await?;
        self.ask(&addr, GetHistory(query)).await
    }

    /// `Latest`: the latest value of `key`, or of every key (most recent first, at most
    /// `max_latest`).
    ///
    /// # Errors
    /// [`Error::Invalid`], [`Error::NotFound`] (no such stream, or no value for the key),
    /// [`Error::Unavailable`].
    pub async fn latest(
        &self,
        tenant: &Arc<str>,
        stream: &str,
        key: Option<&str>,
        quotas: StreamQuotas,
        admit: Admit<'_>,
    ) -> Result<(Position, Vec<Publication>)> {
        if let Some(k) = key {
            model::check_key(k)?;
        }
        let addr = self.existing(tenant, stream, quotas, admit).await?;
        self.ask(&addr, GetLatest(key.map(Arc::from))).await
    }

    /// `RemoveKey`: removes a key's latest value; answers whether it had one.
    ///
    /// # Errors
    /// As [`Streams::latest`].
    pub async fn remove_key(
        &self,
        tenant: &Arc<str>,
        stream: &str,
        key: &str,
        quotas: StreamQuotas,
        admit: Admit<'_>,
    ) -> Result<bool> {
        model::check_key(key)?;
        let addr = self.existing(tenant, stream, quotas, admit).await?;
        self.ask(&addr, RemoveKey(key.into())).await
    }

    /// `Info`: what the stream holds and how many subscribe to it here.
    ///
    /// # Errors
    /// As [`Streams::latest`].
    pub async fn info(
        &self,
        tenant: &Arc<str>,
        stream: &str,
        quotas: StreamQuotas,
        admit: Admit<'_>,
    ) -> Result<StreamInfo> {
        let addr = self.existing(tenant, stream, quotas, admit).await?;
        self.ask(&addr, GetInfo).await
    }

    fn check_publication(&self, p: &NewPublication) -> Result<()> {
        if let Some(key) = &p.key {
            model::check_key(key)?;
        }
        if let Some(key) = &p.idempotency_key {
            model::check_idempotency_key(key)?;
        }
        let max = self.inner.config.max_data.as_u64();
        if p.data.len() as u64 > max {
            return Err(Error::invalid(
                "data",
                format!("{} bytes, more than the {max} allowed", p.data.len()),
            ));
        }
        if p.json {
            serde_json::from_slice::<serde::de::IgnoredAny>(&p.data)
                .map_err(|e| Error::invalid("json", format!("not valid JSON: {e}")))?;
        }
        Ok(())
    }

    /// A read of a stream: on a shared engine any node may have published to it, so it is
    /// opened; in memory only a live stream has anything.
    async fn existing(
        &self,
        tenant: &Arc<str>,
        stream: &str,
        quotas: StreamQuotas,
        admit: Admit<'_>,
    ) -> Result<Addr<StreamActor>> {
        let stream = stream_ref(tenant, stream)?;
        let admit = self.inner.engine.is_shared().then_some(admit);
        self.stream(&stream, quotas, admit).await
    }

    /// The live actor of `stream`, started when `admit` is given.
    async fn stream(
        &self,
        stream: &StreamRef,
        quotas: StreamQuotas,
        admit: Option<Admit<'_>>,
    ) -> Result<Addr<StreamActor>> {
        if self.inner.registry.is_shutting_down() {
            return Err(Error::Unavailable("the server is shutting down".into()));
        }
        let inner = &self.inner;
        if let Some(addr) = inner.table.get(stream).filter(Addr::connected) {
            return Ok(addr);
        }
        let Some(admit) = admit else {
            return Err(Error::NotFound(format!("no stream `{}`", stream.name)));
        };
        let _starting = inner.starting.lock().await;
        if let Some(addr) = inner.table.get(stream).filter(Addr::connected) {
            return Ok(addr);
        }
        let hold = admit()?;
        let limits = StreamLimits {
            history_size: inner.config.history_size,
            history_ttl: inner.config.history_ttl,
            key_ttl: (!inner.config.key_ttl.is_zero()).then_some(inner.config.key_ttl),
            idempotency_window: inner.config.idempotency_window,
            max_keys: quotas.stream_keys,
            max_latest: inner.config.max_latest as usize,
            budget: self.budget(&stream.tenant, quotas.stream_bytes),
        };
        let env = Arc::new(StreamEnv {
            config: inner.config.clone(),
            stats: inner.stats.clone(),
            table: inner.table.clone(),
            shared: inner.engine.is_shared(),
            engine: inner.engine.name(),
        });
        let (engine, spec_stream) = (inner.engine.clone(), stream.clone());
        let spec = ChildSpec::new(stream.name.clone(), ResourceKind::Stream, move |rcx| {
            let store = engine.open(&spec_stream, limits.clone());
            Ok::<_, std::convert::Infallible>(StreamActor::new(
                rcx,
                spec_stream.clone(),
                store,
                &env,
                limits.budget.clone(),
            ))
        })
        .restart(RestartType::Temporary)
        .tenant(stream.tenant.clone())
        .hold(hold);
        match inner.supervisor.start_child::<StreamActor>(spec).await {
            Ok((id, addr)) => {
                inner.table.lock().insert(stream.clone(), (id, addr.clone()));
                Ok(addr)
            }
            Err(steward_core::Error::MaxChildren { max, .. }) => {
                Err(Error::QuotaExceeded { quota: "max_streams", limit: max as u64 })
            }
            Err(e) => Err(Error::Unavailable(format!("cannot start the stream: {e}"))),
        }
    }

    /// The tenant's budget, created at `limit` when it has none on this node.
    fn budget(&self, tenant: &Arc<str>, limit: u64) -> Arc<Budget> {
        let mut budgets = self.budgets();
        if let Some(budget) = budgets.get(tenant).and_then(Weak::upgrade) {
            budget.set_limit(limit);
            return budget;
        }
        budgets.retain(|_, b| b.strong_count() > 0);
        let budget = Arc::new(Budget::new(limit));
        budgets.insert(tenant.clone(), Arc::downgrade(&budget));
        budget
    }

    fn budgets(&self) -> MutexGuard<'_, HashMap<Arc<str>, Weak<Budget>>> {
        self.inner.budgets.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sends `msg` to a stream under `[streams] timeout` (plus a second for the actor's turn).
    async fn ask<M, T>(&self, addr: &Addr<StreamActor>, msg: M) -> Result<T>
    where
        M: Message<Result = Result<T>> + Send + 'static,
        T: Send + 'static,
        StreamActor: Handler<M>,
    {
        let deadline = self.inner.config.timeout + Duration::from_secs(1);
        match tokio::time::timeout(deadline, addr.send(msg)).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(Error::Unavailable("the stream stopped; try again".into())),
            Err(_) => Err(Error::Unavailable("the stream did not answer in time".into())),
        }
    }
}

fn stream_ref(tenant: &Arc<str>, name: &str) -> Result<StreamRef> {
    model::check_stream_name(name)?;
    Ok(StreamRef { tenant: tenant.clone(), name: name.into() })
}

/// A recovery position from a client: an epoch of at most 64 bytes.
fn check_position(p: &Position) -> Result<()> {
    if p.epoch.len() > 64 {
        return Err(Error::invalid("since.epoch", "longer than 64 bytes"));
    }
    Ok(())
}

/// Runs a shared engine's background work (the `stream-engine` service); when the work ends,
/// the service stops with an error and its supervisor restarts it with backoff.
struct EngineRunner {
    rcx: ResourceCtx,
    engine: Arc<dyn Engine>,
}

impl Actor for EngineRunner {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(work) = self.engine.run() {
            ctx.spawn(work.into_actor(self).map(|(), act, ctx| {
                stop_resource(act, ctx, ExitReason::error("the engine's background work ended"));
            }));
        }
    }
}

impl Handler<StopResource> for EngineRunner {
    type Result = ();

    fn handle(&mut self, msg: StopResource, ctx: &mut Self::Context) {
        stop_resource(self, ctx, msg.reason);
    }
}

impl Resource for EngineRunner {
    fn resource_ctx(&self) -> &ResourceCtx {
        &self.rcx
    }

    fn resource_ctx_mut(&mut self) -> &mut ResourceCtx {
        &mut self.rcx
    }
}
