//! Test support: a configurable resource actor and polling helpers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use futures_util::future::LocalBoxFuture;

use crate::{ExitReason, Resource, ResourceCtx, StopResource, stop_resource};

/// Shared log of what test resources did, in order.
#[derive(Clone, Default)]
pub(crate) struct Log(
    Arc<Mutex<Vec<String>>>,
    Arc<Mutex<std::collections::HashMap<String, Addr<TestResource>>>>,
);

impl Log {
    pub(crate) fn push(&self, s: impl Into<String>) {
        self.0.lock().unwrap().push(s.into());
    }

    /// Forgets the address of `name` (so only the caller's addresses keep it alive).
    pub(crate) fn forget_addr(&self, name: &str) {
        self.1.lock().unwrap().remove(name);
    }

    /// The address of the latest incarnation of `name`.
    pub(crate) fn addr(&self, name: &str) -> Addr<TestResource> {
        self.1.lock().unwrap().get(name).cloned().expect("started")
    }

    pub(crate) fn entries(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    pub(crate) fn count(&self, s: &str) -> usize {
        self.0.lock().unwrap().iter().filter(|e| *e == s).count()
    }
}

/// What a test resource does when it starts.
#[derive(Clone, Default)]
pub(crate) struct Behaviour {
    /// Tracked tasks that never finish.
    pub(crate) tasks: usize,
    /// Tracked timers far in the future.
    pub(crate) timers: usize,
    /// Crash with an error right after starting.
    pub(crate) crash_on_start: bool,
    /// Ignore `StopResource` (to test kill after deadline).
    pub(crate) ignore_stop: bool,
    /// Its async cleanup never finishes.
    pub(crate) hang_cleanup: bool,
    /// Its async cleanup takes this long.
    pub(crate) slow_cleanup: Option<Duration>,
    /// Its async cleanup panics.
    pub(crate) panic_in_cleanup: bool,
    /// Its `stopped` panics.
    pub(crate) panic_in_stopped: bool,
}

/// A resource that logs `start:<name>:<generation>` and `stop:<name>`.
pub(crate) struct TestResource {
    pub(crate) rcx: ResourceCtx,
    pub(crate) name: String,
    pub(crate) log: Log,
    pub(crate) behaviour: Behaviour,
    /// Fresh per incarnation: proves a restart does not reuse state.
    pub(crate) handled: u32,
}

impl TestResource {
    pub(crate) fn spec(name: &str, log: &Log, behaviour: Behaviour) -> crate::ChildSpec {
        Self::spec_of(crate::ResourceKind::Session, name, log, behaviour)
    }

    /// A child (kind `session`) placed on an arbiter of `pool`.
    pub(crate) fn spec_in(
        name: &str,
        log: &Log,
        behaviour: Behaviour,
        pool: &crate::ArbiterPool,
    ) -> crate::ChildSpec {
        let kind = crate::ResourceKind::Session;
        crate::ChildSpec::new_in(name, kind, pool, Self::factory(name, log, behaviour))
    }

    /// A child of `kind`.
    pub(crate) fn spec_of(
        kind: crate::ResourceKind,
        name: &str,
        log: &Log,
        behaviour: Behaviour,
    ) -> crate::ChildSpec {
        crate::ChildSpec::new(name, kind, Self::factory(name, log, behaviour))
    }

    /// Builds a fresh `TestResource` named `name` at every start.
    fn factory(
        name: &str,
        log: &Log,
        behaviour: Behaviour,
    ) -> impl Fn(ResourceCtx) -> Result<Self, String> + Send + Sync + 'static {
        let (name, log) = (name.to_string(), log.clone());
        move |rcx| {
            Ok(TestResource {
                rcx,
                name: name.clone(),
                log: log.clone(),
                behaviour: behaviour.clone(),
                handled: 0,
            })
        }
    }
}

impl Actor for TestResource {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.log.push(format!("start:{}", self.name));
        self.log.1.lock().unwrap().insert(self.name.clone(), ctx.address());
        for _ in 0..self.behaviour.tasks {
            self.rcx.tracker().spawn(std::future::pending()).unwrap();
        }
        for _ in 0..self.behaviour.timers {
            self.rcx.tracker().timer(Duration::from_secs(3600), async {}).unwrap();
        }
        if self.behaviour.crash_on_start {
            stop_resource(self, ctx, ExitReason::error("crash on start"));
        }
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.log.push(format!("stopped:{}", self.name));
        if self.behaviour.panic_in_stopped {
            panic!("test resource panicked in stopped on purpose");
        }
    }
}

impl Resource for TestResource {
    fn resource_ctx(&self) -> &ResourceCtx {
        &self.rcx
    }

    fn resource_ctx_mut(&mut self) -> &mut ResourceCtx {
        &mut self.rcx
    }

    fn cleanup(&mut self, _reason: &ExitReason) -> LocalBoxFuture<'static, ()> {
        let (log, name) = (self.log.clone(), self.name.clone());
        let b = self.behaviour.clone();
        Box::pin(async move {
            if b.hang_cleanup {
                std::future::pending::<()>().await;
            }
            if let Some(delay) = b.slow_cleanup {
                tokio::time::sleep(delay).await;
            }
            if b.panic_in_cleanup {
                panic!("test resource panicked in its cleanup on purpose");
            }
            log.push(format!("stop:{name}"));
        })
    }
}

impl Handler<StopResource> for TestResource {
    type Result = ();

    fn handle(&mut self, msg: StopResource, ctx: &mut Context<Self>) {
        if !self.behaviour.ignore_stop {
            stop_resource(self, ctx, msg.reason);
        }
    }
}

/// Crash with an error.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Crash;

impl Handler<Crash> for TestResource {
    type Result = ();

    fn handle(&mut self, _: Crash, ctx: &mut Context<Self>) {
        stop_resource(self, ctx, ExitReason::error("crashed"));
    }
}

/// Panic in the handler.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Panic;

impl Handler<Panic> for TestResource {
    type Result = ();

    fn handle(&mut self, _: Panic, _ctx: &mut Context<Self>) {
        panic!("test resource panicked on purpose");
    }
}

/// Spawn a tracked task that panics: on the arbiter, or on the given runtime.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct PanicInTask(pub(crate) Option<tokio::runtime::Handle>);

impl Handler<PanicInTask> for TestResource {
    type Result = ();

    fn handle(&mut self, msg: PanicInTask, _ctx: &mut Context<Self>) {
        let panics = async {
            tokio::task::yield_now().await;
            panic!("tracked task panicked on purpose");
        };
        match msg.0 {
            Some(runtime) => self.rcx.tracker().spawn_on(&runtime, panics).unwrap(),
            None => self.rcx.tracker().spawn(panics).unwrap(),
        }
    }
}

/// Count a handled message; returns the count of this incarnation.
#[derive(Message)]
#[rtype(result = "u32")]
pub(crate) struct Ping;

impl Handler<Ping> for TestResource {
    type Result = u32;

    fn handle(&mut self, _: Ping, _ctx: &mut Context<Self>) -> u32 {
        self.rcx.touch();
        self.handled += 1;
        self.handled
    }
}

/// The thread the actor runs on (its `ThreadId`, debug-formatted).
#[derive(Message)]
#[rtype(result = "String")]
pub(crate) struct WhichThread;

impl Handler<WhichThread> for TestResource {
    type Result = String;

    fn handle(&mut self, _: WhichThread, _ctx: &mut Context<Self>) -> String {
        format!("{:?}", std::thread::current().id())
    }
}

/// Polls `cond` every 2 ms until it holds or `within` passes; returns whether it held.
pub(crate) async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    let mut tick = tokio::time::interval(Duration::from_millis(2));
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return cond();
        }
        tick.tick().await;
    }
}

/// A supervisor policy with tiny, jitter-free backoff, for fast tests.
pub(crate) fn fast_spec(name: &str, strategy: crate::Strategy) -> crate::SupervisorSpec {
    let mut spec = crate::SupervisorSpec::from_config(
        name,
        strategy,
        &steward_config::Config::defaults().supervisor,
    );
    spec.backoff.base = Duration::from_millis(1);
    spec.backoff.max = Duration::from_millis(20);
    spec.backoff.jitter = 0.0;
    spec.child_shutdown = Duration::from_millis(200);
    spec
}

/// A resource that can also stop itself without recording a reason.
pub(crate) struct Quiet {
    pub(crate) rcx: ResourceCtx,
    pub(crate) incarnations: Arc<Mutex<Vec<Addr<Quiet>>>>,
}

impl Actor for Quiet {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.incarnations.lock().unwrap().push(ctx.address());
    }
}

impl Resource for Quiet {
    fn resource_ctx(&self) -> &ResourceCtx {
        &self.rcx
    }

    fn resource_ctx_mut(&mut self) -> &mut ResourceCtx {
        &mut self.rcx
    }
}

impl Handler<StopResource> for Quiet {
    type Result = ();

    fn handle(&mut self, msg: StopResource, ctx: &mut Context<Self>) {
        stop_resource(self, ctx, msg.reason);
    }
}

/// `ctx.stop()` with no exit reason recorded.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct StopWithoutReason;

impl Handler<StopWithoutReason> for Quiet {
    type Result = ();

    fn handle(&mut self, _: StopWithoutReason, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
