//! Browser and session counters, read by `/metrics` at scrape time. Counters are plain atomics;
//! latencies are `prometheus-client` histograms (seconds) so the edge encodes them as they are.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::histogram::Histogram;

use crate::CloseReason;

/// A CDP operation, the `op` label of `steward_browser_cdp_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Spawning Chromium until it answers `Browser.getVersion` on its pipe (its bridge ready).
    Launch,
    /// chromiumoxide's CDP connect (to the pipe's one-shot bridge, or a remote endpoint).
    Connect,
    /// `Browser.getVersion`, the heartbeat.
    Heartbeat,
    /// `Target.createBrowserContext`.
    CreateContext,
    /// `Target.disposeBrowserContext`.
    DisposeContext,
    /// `Target.createTarget` (a page).
    NewPage,
    /// `Target.closeTarget`.
    ClosePage,
    /// Emulation set-up of a new page (viewport, user agent, locale, time zone).
    Emulate,
    /// `Page.navigate` and the wait.
    Navigate,
    /// `Page.captureScreenshot`.
    Screenshot,
    /// `Page.printToPDF`.
    Pdf,
    /// `Runtime.evaluate`.
    Evaluate,
    /// The page's HTML.
    Content,
    /// The reconciler's `Target.getBrowserContexts` / `Target.getTargets`.
    Reconcile,
}

impl Op {
    /// Every op, in label order.
    pub const ALL: [Self; 14] = [
        Self::Launch,
        Self::Connect,
        Self::Heartbeat,
        Self::CreateContext,
        Self::DisposeContext,
        Self::NewPage,
        Self::ClosePage,
        Self::Emulate,
        Self::Navigate,
        Self::Screenshot,
        Self::Pdf,
        Self::Evaluate,
        Self::Content,
        Self::Reconcile,
    ];

    /// snake_case label; also the stage named by `DEADLINE_EXCEEDED`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Launch => "launch",
            Self::Connect => "connect",
            Self::Heartbeat => "heartbeat",
            Self::CreateContext => "create_context",
            Self::DisposeContext => "dispose_context",
            Self::NewPage => "new_page",
            Self::ClosePage => "close_page",
            Self::Emulate => "emulate",
            Self::Navigate => "navigate",
            Self::Screenshot => "screenshot",
            Self::Pdf => "pdf",
            Self::Evaluate => "evaluate",
            Self::Content => "content",
            Self::Reconcile => "reconcile",
        }
    }
}

/// Why the egress proxy refused a connection: the `reason` label of
/// `steward_browser_egress_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EgressRefusal {
    /// A loopback address (or a `localhost` name) the tenant may not reach.
    Loopback,
    /// A link-local address (the cloud metadata service included).
    LinkLocal,
    /// A private address (RFC 1918, unique local, site-local).
    Private,
    /// Another special-purpose address (unspecified, shared, multicast, broadcast).
    Special,
    /// One of Steward's own proxies (another tenant's) or listeners (admin, public, gRPC),
    /// refused even where the tenant's `browser_allow` permits the address.
    Steward,
    /// The name does not resolve.
    Dns,
    /// Traffic outside any session's context (the browser's own proxy refuses everything).
    NoSession,
    /// Not a request the proxy serves (malformed, too large, too slow, an `https:` URL without
    /// `CONNECT`, too many connections).
    BadRequest,
}

impl EgressRefusal {
    /// Every reason, in label order.
    pub const ALL: [Self; 8] = [
        Self::Loopback,
        Self::LinkLocal,
        Self::Private,
        Self::Special,
        Self::Steward,
        Self::Dns,
        Self::NoSession,
        Self::BadRequest,
    ];

    /// snake_case label.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Loopback => "loopback",
            Self::LinkLocal => "link_local",
            Self::Private => "private",
            Self::Special => "special",
            Self::Steward => "steward",
            Self::Dns => "dns",
            Self::NoSession => "no_session",
            Self::BadRequest => "bad_request",
        }
    }
}

/// Latency buckets in seconds: 1 ms to 60 s.
const BUCKETS: [f64; 14] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0];

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// The pool's counters. Shared (`Arc`) by the service, browsers and sessions.
#[derive(Debug)]
pub struct BrowserStats {
    /// Browsers that came up (spawned and connected, or connected to a remote endpoint).
    pub launched: AtomicU64,
    /// Browsers brought up again after an unexpected disconnect.
    pub relaunched: AtomicU64,
    /// Unexpected disconnects (first handler error or a missed heartbeat).
    pub disconnects: AtomicU64,
    /// Launches or connects that failed.
    pub launch_failures: AtomicU64,
    /// Browsers retired by recycling.
    pub recycled: AtomicU64,
    /// Sessions created.
    pub sessions_created: AtomicU64,
    /// Sessions closed, by [`CloseReason`] (index: `reason as usize`, the order of
    /// [`CloseReason::ALL`]).
    pub sessions_closed: [AtomicU64; 7],
    /// `CreateSession` calls waiting in a queue now.
    pub queue_waiting: AtomicU64,
    /// Queued calls refused: queue full.
    pub queue_full: AtomicU64,
    /// Queued calls refused: waited `queue_timeout`.
    pub queue_timeouts: AtomicU64,
    /// How long queued calls waited for a slot, seconds.
    pub queue_wait: Histogram,
    /// Contexts and pages the reconciler disposed of (no live session owned them).
    pub reconciled: AtomicU64,
    /// URLs refused by the URL policy.
    pub urls_refused: AtomicU64,
    /// Connections the egress proxies refused, by [`EgressRefusal`] (index: `reason as usize`,
    /// the order of [`EgressRefusal::ALL`]).
    pub egress_refused: [AtomicU64; 8],
    /// Connections the egress proxies made.
    pub egress_connections: AtomicU64,
    /// Latency of each CDP op, seconds (index: `op as usize`, the order of [`Op::ALL`]).
    pub cdp_latency: [Histogram; 14],
    /// CDP ops that missed their deadline (index of [`Op::ALL`]).
    pub cdp_timeouts: [AtomicU64; 14],
}

impl Default for BrowserStats {
    fn default() -> Self {
        Self {
            launched: AtomicU64::new(0),
            relaunched: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            launch_failures: AtomicU64::new(0),
            recycled: AtomicU64::new(0),
            sessions_created: AtomicU64::new(0),
            sessions_closed: Default::default(),
            queue_waiting: AtomicU64::new(0),
            queue_full: AtomicU64::new(0),
            queue_timeouts: AtomicU64::new(0),
            queue_wait: histogram(),
            reconciled: AtomicU64::new(0),
            urls_refused: AtomicU64::new(0),
            egress_refused: Default::default(),
            egress_connections: AtomicU64::new(0),
            cdp_latency: std::array::from_fn(|_| histogram()),
            cdp_timeouts: Default::default(),
        }
    }
}

impl BrowserStats {
    /// Adds one to `counter`.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Records one CDP op that took `took`, and whether it missed its deadline.
    pub fn cdp(&self, op: Op, took: Duration, timed_out: bool) {
        let i = op as usize;
        self.cdp_latency[i].observe(took.as_secs_f64());
        if timed_out {
            Self::inc(&self.cdp_timeouts[i]);
        }
    }

    /// Records a connection the egress proxy refused for `reason`.
    pub fn egress_refused(&self, reason: EgressRefusal) {
        Self::inc(&self.egress_refused[reason as usize]);
    }

    /// Records a session closed for `reason`.
    pub fn closed(&self, reason: CloseReason) {
        Self::inc(&self.sessions_closed[reason as usize]);
    }

    /// Reads a counter.
    #[must_use]
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// State of a browser, as `GET /v1/browsers` and metrics show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrowserState {
    /// Spawning or connecting.
    Launching,
    /// Taking sessions.
    Ready,
    /// Recycling: taking no new sessions, replaced once its sessions are gone.
    Draining,
    /// Disconnected or stopping.
    Down,
}

impl BrowserState {
    /// Lowercase name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Launching => "launching",
            Self::Ready => "ready",
            Self::Draining => "draining",
            Self::Down => "down",
        }
    }
}

/// What a Chromium itself lists now (`Target.getBrowserContexts`, `Target.getTargets`), asked
/// over Steward's own connection: nothing else can connect to a local one.
#[derive(Debug, Clone, Default)]
pub struct ChromiumView {
    /// Its browser contexts besides the default one (each a session's).
    pub contexts: Vec<String>,
    /// Its targets.
    pub targets: Vec<TargetView>,
}

/// One target of a [`ChromiumView`].
#[derive(Debug, Clone)]
pub struct TargetView {
    /// Target id.
    pub id: String,
    /// `page`, `iframe`, `service_worker`, `browser`, …
    pub kind: String,
    /// Its browser context, if not the default one.
    pub context: Option<String>,
    /// Its URL.
    pub url: String,
}

/// One browser now.
#[derive(Debug, Clone)]
pub struct BrowserInfo {
    /// Its resource id.
    pub id: String,
    /// `local` (Steward's own Chromium) or `remote` (a tenant's CDP endpoint).
    pub origin: &'static str,
    /// The tenant whose remote endpoint it is, or the one tenant a local browser serves
    /// (`isolation = "tenant"`).
    pub tenant: Option<String>,
    /// State.
    pub state: BrowserState,
    /// Chromium's process id (local only); also its process group id.
    pub pid: Option<u32>,
    /// The remote DevTools WebSocket URL it is connected to; `pipe` for a local Chromium (CDP on
    /// its fds 3 and 4, no port).
    pub endpoint: Option<String>,
    /// Live contexts (sessions) on it.
    pub contexts: usize,
    /// Open pages of those sessions.
    pub pages: usize,
    /// Contexts created over its life (recycling counts these).
    pub contexts_created: u64,
    /// Processes in its process group now (local only).
    pub processes: usize,
    /// Their resident memory, bytes.
    pub rss_bytes: u64,
    /// When it came up.
    pub started_at: SystemTime,
}

#[cfg(test)]
mod tests;
