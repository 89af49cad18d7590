//! The `messaging` service: owns the broker connection (NATS) or puts the node's embedded
//! broker in service, runs the idle-producer sweep and the consumer leak check, and at its stop
//! closes the broker and reports what the embedded broker drops.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix::prelude::*;
use futures_util::future::LocalBoxFuture;
use steward_config::BrokerBackend;
use steward_core::{
    Control, ExitReason, Resource, ResourceCtx, ResourceId, StopResource, stop_resource,
};

use crate::broker::{Broker, BrokerSettings};
use crate::service::Messaging;
use crate::stats::MessagingStats;

/// First pause between attempts to connect to NATS; doubles up to [`CONNECT_PAUSE_MAX`].
const CONNECT_PAUSE: Duration = Duration::from_millis(500);
const CONNECT_PAUSE_MAX: Duration = Duration::from_secs(10);

/// The `messaging` service actor.
pub(crate) struct MessagingHub {
    rcx: ResourceCtx,
    messaging: Messaging,
    /// Consumers seen without a live stream at the last check.
    suspects: HashSet<ResourceId>,
    /// Set while an idle-topic sweep runs.
    sweeping: Arc<AtomicBool>,
}

impl MessagingHub {
    pub(crate) fn new(rcx: ResourceCtx, messaging: Messaging) -> Self {
        Self { rcx, messaging, suspects: HashSet::new(), sweeping: Arc::default() }
    }

    fn install(&self, broker: Arc<dyn Broker>) {
        *self.messaging.inner().broker.write().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(broker);
    }

    /// Stops idle producers; stops (and counts) consumers whose stream has been gone since the
    /// last check — a consumer must stop with its stream, so each one is a leak found.
    fn sweep(&mut self) {
        let inner = self.messaging.inner();
        let idle = inner.producers.sweep(inner.config.producer_cleanup_timeout);
        if !idle.is_empty() {
            MessagingStats::add(&inner.stats.producer_leak_detections, idle.len() as u64);
            tracing::info!(producers = idle.len(), "idle producers stopped");
        }
        let control = Control::new(inner.registry.clone());
        for id in idle {
            // gone already (the tenant's deletion, CleanupProducer) is as good
            let _ = control.stop(id, ExitReason::Idle);
        }
        let mut gone = HashSet::new();
        for entry in inner.directory.all() {
            if entry.stream_gone() {
                if self.suspects.contains(&entry.resource) {
                    MessagingStats::add(&inner.stats.consumer_leak_detections, 1);
                    tracing::error!(consumer = %entry.resource, "consumer outlived its stream; stopping it");
                    let _ = control.stop(entry.resource, ExitReason::error("stream gone"));
                } else {
                    gone.insert(entry.resource);
                }
            }
        }
        self.suspects = gone;
        self.sweep_idle_topics();
    }

    /// Removes topics and groups idle for `[messaging] topic_idle_ttl` (and, on NATS, recounts
    /// the tenants' usage), on a tracked task: one at a time, a NATS listing can take a while.
    fn sweep_idle_topics(&self) {
        let inner = self.messaging.inner();
        let broker = inner.broker.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let Some(broker) = broker else { return };
        if self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let sweeping = self.sweeping.clone();
        let ttl = inner.config.topic_idle_ttl;
        let task = async move {
            let removed = broker.sweep_idle(ttl).await;
            if removed > 0 {
                tracing::info!(removed, "idle topics and groups removed");
            }
            sweeping.store(false, Ordering::Release);
        };
        let spawned = match &inner.io {
            Some(rt) => self.rcx.tracker().spawn_on(rt, task),
            None => self.rcx.tracker().spawn(task),
        };
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the idle-topic sweep");
            self.sweeping.store(false, Ordering::Release);
        }
    }

    fn connect(&self, ctx: &mut Context<Self>) {
        let config = self.messaging.config().clone();
        let settings = BrokerSettings::from_config(&config);
        let stats = self.messaging.stats().clone();
        let tracker = self.rcx.tracker().clone();
        let io = self.messaging.inner().io.clone();
        let attempt = async move {
            let mut pause = CONNECT_PAUSE;
            loop {
                let url = config.url.clone();
                match connect_nats(url, settings.clone(), stats.clone(), &tracker, io.as_ref())
                    .await
                {
                    Ok(broker) => break broker,
                    Err(e) => {
                        tracing::warn!(url = %steward_config::redact_url(&config.url), error = %e, retry_in_ms = pause.as_millis() as u64, "cannot reach NATS");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(CONNECT_PAUSE_MAX);
                    }
                }
            }
        };
        // an actor future: owned by this service's context
        ctx.spawn(attempt.into_actor(self).map(|broker, act, _| {
            tracing::info!(url = %steward_config::redact_url(&act.messaging.config().url), "messaging: NATS JetStream connected");
            act.install(broker);
            // the first tally at once: tenants' usage is known from the start
            act.sweep_idle_topics();
        }));
    }
}

impl Actor for MessagingHub {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let inner = self.messaging.inner();
        match &inner.embedded {
            Some(embedded) => {
                tracing::warn!(
                    "messaging: the embedded broker keeps messages in memory only; they do not \
                     survive a restart (set [messaging] backend = \"nats\" for a durable one)"
                );
                self.install(embedded.clone());
            }
            None => self.connect(ctx),
        }
        let every = inner.config.producer_sweep_interval;
        self.rcx.run_interval(ctx, every, |act, _| act.sweep());
    }
}

impl Handler<StopResource> for MessagingHub {
    type Result = ();

    fn handle(&mut self, msg: StopResource, ctx: &mut Self::Context) {
        stop_resource(self, ctx, msg.reason);
    }
}

impl Resource for MessagingHub {
    fn resource_ctx(&self) -> &ResourceCtx {
        &self.rcx
    }

    fn resource_ctx_mut(&mut self) -> &mut ResourceCtx {
        &mut self.rcx
    }

    fn cleanup(&mut self, _reason: &ExitReason) -> LocalBoxFuture<'static, ()> {
        let broker = self
            .messaging
            .inner()
            .broker
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let stopping = self.rcx.registry().is_shutting_down();
        Box::pin(async move {
            let Some(broker) = broker else { return };
            if let Some(unacked) = broker.unacked() {
                if stopping && unacked > 0 {
                    tracing::warn!(
                        unacked,
                        "messaging: the embedded broker stops with {unacked} unacked deliveries; \
                         they are lost with this process"
                    );
                } else {
                    tracing::info!(unacked, "messaging: broker out of service");
                }
            }
            // the embedded broker stays open for the next incarnation of this service
            if broker.backend() == BrokerBackend::Nats || stopping {
                broker.close().await;
            }
        })
    }
}

/// Connects the NATS backend. Its background work (async-nats's connection tasks and the
/// release task) runs on `io` when given, else on this arbiter; the release task is owned by
/// `tracker` either way.
async fn connect_nats(
    url: String,
    settings: BrokerSettings,
    stats: Arc<MessagingStats>,
    tracker: &steward_core::Tracker,
    io: Option<&tokio::runtime::Handle>,
) -> Result<Arc<dyn Broker>, crate::BrokerError> {
    let unavailable = |e: steward_core::Error| crate::BrokerError::Unavailable(e.to_string());
    let Some(io) = io else {
        let owner = tracker.clone();
        let spawn: crate::nats::Spawner = Arc::new(move |task| {
            if let Err(e) = owner.spawn(task) {
                tracing::warn!(error = %e, "messaging: the service is stopping; NATS task not started");
            }
        });
        let broker = crate::nats::NatsBroker::connect(&url, settings, stats, spawn).await?;
        return Ok(broker);
    };
    let (owner, rt) = (tracker.clone(), io.clone());
    let spawn: crate::nats::Spawner = Arc::new(move |task| {
        if let Err(e) = owner.spawn_on(&rt, task) {
            tracing::warn!(error = %e, "messaging: the service is stopping; NATS task not started");
        }
    });
    // connect there, so async-nats starts its connection tasks on that runtime
    let (tx, rx) = tokio::sync::oneshot::channel();
    tracker
        .spawn_on(io, async move {
            let _ = tx.send(crate::nats::NatsBroker::connect(&url, settings, stats, spawn).await);
        })
        .map_err(unavailable)?;
    let broker = rx
        .await
        .map_err(|_| crate::BrokerError::Unavailable("the connect task ended".into()))??;
    Ok(broker)
}
