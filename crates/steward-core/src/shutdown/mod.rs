//! The ordered graceful shutdown.
//!
//! SIGTERM or `POST /v1/shutdown` pulls the [`ShutdownTrigger`]; the server then runs the
//! [`ShutdownCoordinator`], which turns restarts off and walks the [`Phase`]s in a fixed order,
//! each bounded by its deadline from `[shutdown.deadlines]` (their sum fits `shutdown.grace`).
//! A phase runs the hooks edges registered for it and stops the resource kinds it owns; what is
//! still alive near its deadline is killed and counted as forced. The [`ShutdownReport`] says
//! what was closed and what was forced, phase by phase, naming the forced.
//!
//! The bound is strict: no phase runs past its deadline (the kills happen inside it, a
//! [`KILL_RESERVE`] before it ends), no phase runs past `shutdown.grace` counted from the start,
//! and nothing the coordinator awaits is without a deadline.

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, join_all};
use steward_config::{PhaseDeadlines, ShutdownConfig};
use tokio::sync::watch;

use crate::supervisor::{Control, SupervisorHandle};
use crate::{ExitReason, Registry, ResourceId, ResourceKind};

/// The end of every phase kept for its kills: what is still alive this long before the phase's
/// deadline (or a quarter of the phase, when that is shorter) is killed, and gets the rest of the
/// phase to be dropped.
pub const KILL_RESERVE: Duration = Duration::from_millis(250);

/// The end of [`Phase::Flush`] kept for its hooks (flushing stores and telemetry), which run
/// after the services have stopped: an eighth of the phase, at most this.
const FLUSH_HOOKS_RESERVE: Duration = Duration::from_millis(250);

/// When a hook runs in its phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum When {
    /// Before the phase's resources are stopped.
    Before,
    /// After.
    After,
}

/// At most this many forced resources or hooks are named per phase in the report.
const NAMED_PER_PHASE: usize = 16;

/// The shutdown phases, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Readiness turns 503 and gRPC health NOT_SERVING; the phase then lasts its whole deadline,
    /// the time load balancers get to notice before listeners stop accepting.
    ReadinessOff,
    /// No new connections, upgrades, streams or sessions.
    StopAccepting,
    /// Clients are told: WebSocket Close 1001, gRPC streams end `UNAVAILABLE`, peers signalled.
    NotifyClients,
    /// Consumers return in-flight messages, producers flush.
    DrainMessaging,
    /// Browser sessions close.
    Sessions,
    /// WebRTC peers close.
    Peers,
    /// WebSocket sockets close.
    Sockets,
    /// Browsers close, their processes are reaped, profiles removed.
    Browsers,
    /// Steward's services stop; stores and telemetry flush.
    Flush,
}

impl Phase {
    /// Every phase in running order.
    pub const ALL: [Self; 9] = [
        Self::ReadinessOff,
        Self::StopAccepting,
        Self::NotifyClients,
        Self::DrainMessaging,
        Self::Sessions,
        Self::Peers,
        Self::Sockets,
        Self::Browsers,
        Self::Flush,
    ];

    /// snake_case name, as in config keys and metrics labels.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReadinessOff => "readiness_off",
            Self::StopAccepting => "stop_accepting",
            Self::NotifyClients => "notify_clients",
            Self::DrainMessaging => "drain_messaging",
            Self::Sessions => "sessions",
            Self::Peers => "peers",
            Self::Sockets => "sockets",
            Self::Browsers => "browsers",
            Self::Flush => "flush",
        }
    }

    /// The resource kinds this phase stops (services are stopped by [`Phase::Flush`] through the
    /// root supervisor).
    #[must_use]
    pub fn kinds(self) -> &'static [ResourceKind] {
        match self {
            Self::DrainMessaging => &[ResourceKind::Producer, ResourceKind::Consumer],
            Self::Sessions => &[ResourceKind::Session],
            Self::Peers => &[ResourceKind::Peer],
            Self::Sockets => &[ResourceKind::Socket, ResourceKind::Stream],
            Self::Browsers => &[ResourceKind::Browser],
            Self::ReadinessOff | Self::StopAccepting | Self::NotifyClients | Self::Flush => &[],
        }
    }

    /// This phase's deadline in `d`.
    #[must_use]
    pub fn deadline(self, d: &PhaseDeadlines) -> Duration {
        match self {
            Self::ReadinessOff => d.readiness_off,
            Self::StopAccepting => d.stop_accepting,
            Self::NotifyClients => d.notify_clients,
            Self::DrainMessaging => d.drain_messaging,
            Self::Sessions => d.sessions,
            Self::Peers => d.peers,
            Self::Sockets => d.sockets,
            Self::Browsers => d.browsers,
            Self::Flush => d.flush,
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the process takes traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadinessState {
    /// Still starting; not ready.
    Starting,
    /// Ready.
    Ready,
    /// Shutting down; not ready.
    Draining,
}

impl ReadinessState {
    /// `starting`, `ready` or `draining`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::Draining => "draining",
        }
    }
}

/// The readiness flag `/readyz` and gRPC health report. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Readiness {
    tx: Arc<watch::Sender<ReadinessState>>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self { tx: Arc::new(watch::channel(ReadinessState::Starting).0) }
    }
}

impl Readiness {
    /// Starts in [`ReadinessState::Starting`].
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks ready, unless draining already began.
    pub fn set_ready(&self) {
        self.tx.send_if_modified(|s| {
            let change = *s == ReadinessState::Starting;
            if change {
                *s = ReadinessState::Ready;
            }
            change
        });
    }

    /// Marks draining (final).
    pub fn set_draining(&self) {
        self.tx.send_replace(ReadinessState::Draining);
    }

    /// Current state.
    #[must_use]
    pub fn state(&self) -> ReadinessState {
        *self.tx.borrow()
    }

    /// Follows changes.
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<ReadinessState> {
        self.tx.subscribe()
    }
}

/// Pulled once by SIGTERM or `POST /v1/shutdown`; awaited by the server. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ShutdownTrigger {
    tx: Arc<watch::Sender<Option<&'static str>>>,
}

impl Default for ShutdownTrigger {
    fn default() -> Self {
        Self { tx: Arc::new(watch::channel(None).0) }
    }
}

impl ShutdownTrigger {
    /// Not yet pulled.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Pulls it, naming the source (`"SIGTERM"`, `"admin api"`). Returns whether this was the
    /// first pull.
    pub fn trigger(&self, source: &'static str) -> bool {
        self.tx.send_if_modified(|s| {
            let first = s.is_none();
            if first {
                *s = Some(source);
            }
            first
        })
    }

    /// Whether it was pulled.
    #[must_use]
    pub fn is_triggered(&self) -> bool {
        self.tx.borrow().is_some()
    }

    /// Waits until it is pulled; returns the source.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only waits.
    pub async fn triggered(&self) -> &'static str {
        let mut rx = self.tx.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(source) => source.unwrap_or("unknown"),
            Err(_) => "unknown",
        }
    }
}

/// An async action run in a phase (stop accepting, cancel streams, flush a store).
pub type Hook = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// What one phase did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseReport {
    /// The phase.
    pub phase: Phase,
    /// How long it took.
    pub duration: Duration,
    /// Its deadline.
    pub deadline: Duration,
    /// Resources that stopped gracefully.
    pub closed: u64,
    /// Resources killed past the deadline, plus hooks that missed it.
    pub forced: u64,
    /// What was forced: `<kind> <name> <id>` of each killed resource, `hook <name>` of each hook
    /// cut at the deadline; at most 16, then `+N more`.
    pub forced_what: Vec<String>,
}

/// What the whole shutdown did; its `Display` is the one log line Steward ends with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShutdownReport {
    /// Per phase, in order.
    pub phases: Vec<PhaseReport>,
    /// Total time.
    pub total: Duration,
}

impl ShutdownReport {
    /// Resources closed gracefully, over all phases.
    #[must_use]
    pub fn closed(&self) -> u64 {
        self.phases.iter().map(|p| p.closed).sum()
    }

    /// Resources (and hooks) forced, over all phases.
    #[must_use]
    pub fn forced(&self) -> u64 {
        self.phases.iter().map(|p| p.forced).sum()
    }
}

impl fmt::Display for ShutdownReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "closed {} forced {} in {}ms [",
            self.closed(),
            self.forced(),
            self.total.as_millis()
        )?;
        for (i, p) in self.phases.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(
                f,
                "{} {}ms closed {} forced {}",
                p.phase,
                p.duration.as_millis(),
                p.closed,
                p.forced
            )?;
            if !p.forced_what.is_empty() {
                write!(f, " ({})", p.forced_what.join(", "))?;
            }
        }
        f.write_str("]")
    }
}

/// Runs the ordered shutdown. Edges register their hooks with [`ShutdownCoordinator::on`]
/// before it runs.
pub struct ShutdownCoordinator {
    registry: Registry,
    readiness: Readiness,
    config: ShutdownConfig,
    hooks: Mutex<Vec<(Phase, When, String, Hook)>>,
    progress: Mutex<Vec<PhaseReport>>,
}

impl ShutdownCoordinator {
    /// A coordinator over `registry`, flipping `readiness`, with phase deadlines from `config`.
    #[must_use]
    pub fn new(registry: Registry, readiness: Readiness, config: ShutdownConfig) -> Self {
        Self {
            registry,
            readiness,
            config,
            hooks: Mutex::new(Vec::new()),
            progress: Mutex::new(Vec::new()),
        }
    }

    /// Registers `hook` to run at the start of `phase`, before its resources are stopped; hooks
    /// of one phase run concurrently, bounded by the phase's deadline (a hook cut there is
    /// counted as forced).
    pub fn on(&self, phase: Phase, name: impl Into<String>, hook: Hook) {
        lock(&self.hooks).push((phase, When::Before, name.into(), hook));
    }

    /// Registers `hook` to run at the end of `phase`, once its resources have stopped (or been
    /// killed), within what is left of its deadline: for work that must follow them, such as
    /// waiting for stopped consumers' messages to reach the broker. In [`Phase::Flush`] every
    /// hook already runs after the services stopped.
    pub fn after(&self, phase: Phase, name: impl Into<String>, hook: Hook) {
        lock(&self.hooks).push((phase, When::After, name.into(), hook));
    }

    /// Phases completed so far (all of them after [`ShutdownCoordinator::run`]).
    #[must_use]
    pub fn progress(&self) -> Vec<PhaseReport> {
        lock(&self.progress).clone()
    }

    /// Runs every phase in order and returns the report. `root` is the supervisor of Steward's
    /// services, stopped in [`Phase::Flush`]. Returns within `shutdown.grace` (each phase within
    /// its deadline), whatever the resources and hooks do, as long as actors do not block their
    /// threads.
    ///
    /// # Cancel safety
    /// Not cancel-safe: dropped midway, the remaining phases do not run (restarts stay off).
    pub async fn run(&self, root: Option<&SupervisorHandle>) -> ShutdownReport {
        let started = Instant::now();
        let end = started + self.config.grace;
        self.registry.begin_shutdown();
        lock(&self.progress).clear();
        for phase in Phase::ALL {
            let budget = phase.deadline(&self.config.deadlines);
            let t0 = Instant::now();
            let deadline = (t0 + budget).min(end);
            if phase == Phase::ReadinessOff {
                self.readiness.set_draining();
            }
            let mut outcome = Outcome::default();
            if phase == Phase::Flush {
                // services stop first, in their order, while the store they use is still open;
                // then stores and telemetry flush
                let hooks_from =
                    deadline - flush_hooks_reserve(deadline.saturating_duration_since(t0));
                outcome.add(self.stop_root(root, t0, hooks_from).await);
                outcome.add(self.run_hooks(phase, When::Before, deadline).await);
            } else {
                outcome.add(self.run_hooks(phase, When::Before, deadline).await);
                if phase == Phase::ReadinessOff {
                    // hold 503 for the whole phase so load balancers and Kubernetes endpoints see
                    // it before anything stops accepting
                    tokio::time::sleep_until(deadline.into()).await;
                }
                outcome.add(self.stop_kinds(phase.kinds(), t0, deadline).await);
            }
            outcome.add(self.run_hooks(phase, When::After, deadline).await);
            let report = outcome.report(phase, t0.elapsed(), budget);
            if report.forced > 0 {
                tracing::warn!(phase = %phase, closed = report.closed, forced = report.forced, what = %report.forced_what.join(", "), "shutdown phase forced");
            } else {
                tracing::info!(phase = %phase, closed = report.closed, duration_ms = report.duration.as_millis() as u64, "shutdown phase done");
            }
            lock(&self.progress).push(report);
        }
        ShutdownReport { phases: self.progress(), total: started.elapsed() }
    }

    async fn run_hooks(&self, phase: Phase, when: When, deadline: Instant) -> Outcome {
        let hooks: Vec<(String, Hook)> = lock(&self.hooks)
            .iter()
            .filter(|(p, w, _, _)| *p == phase && *w == when)
            .map(|(_, _, n, h)| (n.clone(), h.clone()))
            .collect();
        let runs = hooks.iter().map(|(name, hook)| {
            let fut = hook();
            async move {
                let done = tokio::time::timeout_at(deadline.into(), fut).await.is_ok();
                if !done {
                    tracing::warn!(phase = %phase, hook = %name, "shutdown hook missed its deadline");
                }
                (!done).then(|| format!("hook {name}"))
            }
        });
        let mut outcome = Outcome::default();
        for missed in join_all(runs).await.into_iter().flatten() {
            outcome.forced(missed);
        }
        outcome
    }

    /// Stops every live resource of `kinds` for good through its supervisor (each also bounded
    /// by its own deadline); kills what is left a [`KILL_RESERVE`] before `deadline`.
    async fn stop_kinds(&self, kinds: &[ResourceKind], t0: Instant, deadline: Instant) -> Outcome {
        if kinds.is_empty() {
            return Outcome::default();
        }
        let control = Control::new(self.registry.clone());
        let killed_before = self.killed(kinds);
        let ids = self.registry.ids_of(kinds);
        for id in &ids {
            // a slot waiting out a restart backoff has no actor: its supervisor forgets it
            if let Err(e) = control.stop(*id, ExitReason::Shutdown) {
                tracing::debug!(resource.id = %id, error = %e, "shutdown stop not sent");
            }
        }
        let mut ours = Vec::new();
        if !self.registry.wait_none_of(kinds, kill_point(t0, deadline)).await {
            for id in self.registry.ids_of(kinds) {
                ours.push(self.describe(id));
                let _ = control.kill(id);
            }
            self.registry.wait_none_of(kinds, deadline).await;
        }
        self.outcome(kinds, killed_before, &ids, ours)
    }

    /// Stops the services' root supervisor by `until`: it stops its children in reverse start
    /// order, each within a fair share of the time left; what is alive a [`KILL_RESERVE`]
    /// before `until` is killed.
    async fn stop_root(
        &self,
        root: Option<&SupervisorHandle>,
        t0: Instant,
        until: Instant,
    ) -> Outcome {
        let Some(root) = root else { return Outcome::default() };
        let kinds = &[ResourceKind::Service];
        let killed_before = self.killed(kinds);
        let ids = self.registry.ids_of(kinds);
        let kill_at = kill_point(t0, until);
        let asked = root
            .stop_within(ExitReason::Shutdown, kill_at.saturating_duration_since(Instant::now()));
        let mut ours = Vec::new();
        if asked.is_err() || !self.registry.wait_gone(root.id(), kill_at).await {
            let control = Control::new(self.registry.clone());
            // the stubborn services first in the report, then the supervisors that waited
            let mut left = self.registry.ids_of(kinds);
            left.sort_by_key(|id| self.registry.get(*id).is_some_and(|i| i.is_supervisor));
            for id in left {
                ours.push(self.describe(id));
                let _ = control.kill(id);
            }
            self.registry.wait_gone(root.id(), until).await;
        }
        self.outcome(kinds, killed_before, &ids, ours)
    }

    /// Kills of `kinds` so far.
    fn killed(&self, kinds: &[ResourceKind]) -> u64 {
        let stats = self.registry.kind_stats();
        kinds.iter().map(|k| stats[k.index()].1.killed).sum()
    }

    /// What stopping `ids` did: every kill of `kinds` since `killed_before` is forced, whether
    /// the coordinator killed it (`ours`, named) or its supervisor did at its own deadline
    /// (named while its entry is still in the stopped list); the rest closed.
    fn outcome(
        &self,
        kinds: &[ResourceKind],
        killed_before: u64,
        ids: &[ResourceId],
        ours: Vec<String>,
    ) -> Outcome {
        let mut outcome = Outcome::default();
        let killed = self.killed(kinds).saturating_sub(killed_before).max(ours.len() as u64);
        let theirs = ids.iter().filter(|id| {
            self.registry
                .get(**id)
                .is_some_and(|i| i.last_exit == Some(ExitReason::Killed) && i.stopped_at.is_some())
        });
        let mut named: Vec<String> = theirs.map(|id| self.describe(*id)).collect();
        named.retain(|n| !ours.contains(n));
        for what in ours.into_iter().chain(named) {
            if outcome.forced < killed {
                outcome.forced(what);
            }
        }
        outcome.forced = killed;
        outcome.closed = (ids.len() as u64).saturating_sub(killed);
        outcome
    }

    /// `<kind> <name> <id>` of `id`, for the report.
    fn describe(&self, id: ResourceId) -> String {
        match self.registry.get(id) {
            Some(info) => format!("{} {} {id}", info.kind, info.name),
            None => id.to_string(),
        }
    }
}

/// The end of a flush phase of `span` kept for its hooks.
fn flush_hooks_reserve(span: Duration) -> Duration {
    FLUSH_HOOKS_RESERVE.min(span / 8)
}

/// When the kills of a phase that began at `t0` and ends at `deadline` happen.
fn kill_point(t0: Instant, deadline: Instant) -> Instant {
    let span = deadline.saturating_duration_since(t0);
    deadline - KILL_RESERVE.min(span / 4)
}

/// What one phase, or one part of it, did.
#[derive(Default)]
struct Outcome {
    closed: u64,
    forced: u64,
    forced_what: Vec<String>,
}

impl Outcome {
    fn forced(&mut self, what: String) {
        self.forced += 1;
        if self.forced_what.len() < NAMED_PER_PHASE {
            self.forced_what.push(what);
        }
    }

    fn add(&mut self, other: Self) {
        self.closed += other.closed;
        let unnamed = other.forced.saturating_sub(other.forced_what.len() as u64);
        for what in other.forced_what {
            self.forced(what);
        }
        self.forced += unnamed;
    }

    fn report(mut self, phase: Phase, duration: Duration, deadline: Duration) -> PhaseReport {
        let named = self.forced_what.len() as u64;
        if self.forced > named {
            self.forced_what.push(format!("+{} more", self.forced - named));
        }
        PhaseReport {
            phase,
            duration,
            deadline,
            closed: self.closed,
            forced: self.forced,
            forced_what: self.forced_what,
        }
    }
}

impl fmt::Debug for ShutdownCoordinator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownCoordinator").field("config", &self.config).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
