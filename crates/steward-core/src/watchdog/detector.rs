//! The watchdog's arithmetic, kept free of actors so it can be tested directly.

use std::fmt;
use std::time::{Duration, SystemTime};

use steward_config::WatchdogConfig;

use crate::{Registry, ResourceKind};

/// One watched count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Watched {
    /// Live resources of a kind.
    Resources(ResourceKind),
    /// Tracked tasks and timers.
    Tasks,
    /// Tracked child processes.
    Processes,
    /// Open file descriptors of the process.
    Fds,
    /// Resident set size of the process, bytes.
    RssBytes,
}

impl Watched {
    /// Metric-style name: `resources{kind=socket}`, `tasks`, `processes`, `fds`, `rss_bytes`.
    #[must_use]
    pub fn name(self) -> String {
        match self {
            Self::Resources(k) => format!("resources{{kind={k}}}"),
            Self::Tasks => "tasks".into(),
            Self::Processes => "processes".into(),
            Self::Fds => "fds".into(),
            Self::RssBytes => "rss_bytes".into(),
        }
    }

    /// The label value used in `steward_potential_leak{kind=...}`: the resource kind, or
    /// `tasks`, `processes`, `fds`, `rss`.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Resources(k) => k.as_str(),
            Self::Tasks => "tasks",
            Self::Processes => "processes",
            Self::Fds => "fds",
            Self::RssBytes => "rss",
        }
    }

    fn all() -> Vec<Self> {
        let mut v: Vec<Self> = ResourceKind::ALL.iter().map(|k| Self::Resources(*k)).collect();
        v.extend([Self::Tasks, Self::Processes, Self::Fds, Self::RssBytes]);
        v
    }
}

impl fmt::Display for Watched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// One sample of every watched count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sample {
    /// Live resources per kind, in [`ResourceKind::ALL`] order.
    pub resources: [u64; ResourceKind::COUNT],
    /// Tracked tasks and timers.
    pub tasks: u64,
    /// Tracked processes.
    pub processes: u64,
    /// Open file descriptors (entries of `/proc/self/fd`).
    pub fds: u64,
    /// Resident set size in bytes (`/proc/self/statm` × page size).
    pub rss_bytes: u64,
    /// Tracked handles whose owner is no longer live.
    pub orphans: u64,
}

impl Sample {
    /// Reads the registry and `/proc/self`.
    #[must_use]
    pub fn take(registry: &Registry) -> Self {
        let stats = registry.kind_stats();
        let handles = registry.handle_counts();
        Self {
            resources: stats.map(|(_, s)| s.live),
            tasks: handles.tasks + handles.timers,
            processes: handles.processes,
            fds: open_fds(),
            rss_bytes: rss_bytes(),
            orphans: handles.orphans,
        }
    }

    fn get(&self, w: Watched) -> u64 {
        match w {
            Watched::Resources(k) => self.resources[k.index()],
            Watched::Tasks => self.tasks,
            Watched::Processes => self.processes,
            Watched::Fds => self.fds,
            Watched::RssBytes => self.rss_bytes,
        }
    }
}

/// Open file descriptors of this process.
#[must_use]
pub fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count() as u64).unwrap_or(0)
}

/// Resident set size of this process in bytes.
#[must_use]
pub fn rss_bytes() -> u64 {
    let page =
        nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().unwrap_or(4096);
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        .map_or(0, |pages| pages * u64::try_from(page).unwrap_or(4096))
}

/// One watched count in a report.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchedValue {
    /// What.
    pub watched: Watched,
    /// Latest value.
    pub current: u64,
    /// Baseline (mean of the first samples), once taken.
    pub baseline: Option<f64>,
    /// Below this nothing alarms.
    pub floor: u64,
    /// Whether it is above `leak_factor` × baseline and above the floor now.
    pub potential_leak: bool,
}

/// The watchdog's state, as shown by `GET /v1/watchdog` and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WatchdogReport {
    /// Samples taken.
    pub samples: u64,
    /// Samples needed for the baseline.
    pub baseline_samples: u32,
    /// The leak factor.
    pub leak_factor: f64,
    /// Sampling interval.
    pub interval: Duration,
    /// Every watched count.
    pub values: Vec<WatchedValue>,
    /// Orphans in the latest sample.
    pub orphans: u64,
    /// When the latest sample was taken.
    pub sampled_at: Option<SystemTime>,
}

/// Baseline and threshold logic.
#[derive(Debug, Clone)]
pub struct LeakDetector {
    config: WatchdogConfig,
    samples: u64,
    sums: Vec<(Watched, u64)>,
    baseline: Option<Vec<f64>>,
    latest: Sample,
    leaking: Vec<bool>,
}

impl LeakDetector {
    /// A detector with no samples.
    #[must_use]
    pub fn new(config: WatchdogConfig) -> Self {
        let watched = Watched::all();
        let n = watched.len();
        Self {
            config,
            samples: 0,
            sums: watched.into_iter().map(|w| (w, 0)).collect(),
            baseline: None,
            latest: Sample::default(),
            leaking: vec![false; n],
        }
    }

    /// Sampling interval.
    #[must_use]
    pub fn interval(&self) -> Duration {
        self.config.interval
    }

    fn floor(&self, w: Watched) -> u64 {
        match w {
            Watched::Fds => self.config.fd_floor,
            Watched::RssBytes => self.config.rss_floor.as_u64(),
            Watched::Resources(_) | Watched::Tasks | Watched::Processes => self.config.count_floor,
        }
    }

    /// Takes one sample into account; returns the counts that became potential leaks with it.
    pub fn observe(&mut self, sample: &Sample) -> Vec<WatchedValue> {
        self.samples += 1;
        self.latest = sample.clone();
        if self.baseline.is_none() {
            for (w, sum) in &mut self.sums {
                *sum += sample.get(*w);
            }
            if self.samples >= u64::from(self.config.baseline_samples) {
                let n = self.samples as f64;
                self.baseline = Some(self.sums.iter().map(|(_, s)| *s as f64 / n).collect());
            }
        }
        let values = self.values();
        let mut newly = Vec::new();
        for (i, v) in values.into_iter().enumerate() {
            if v.potential_leak && !self.leaking[i] {
                newly.push(v.clone());
            }
            self.leaking[i] = v.potential_leak;
        }
        newly
    }

    fn values(&self) -> Vec<WatchedValue> {
        self.sums
            .iter()
            .enumerate()
            .map(|(i, (w, _))| {
                let current = self.latest.get(*w);
                let baseline = self.baseline.as_ref().map(|b| b[i]);
                let floor = self.floor(*w);
                let potential_leak = baseline.is_some_and(|b| {
                    current as f64 > self.config.leak_factor * b && current > floor
                });
                WatchedValue { watched: *w, current, baseline, floor, potential_leak }
            })
            .collect()
    }

    /// The report as of the latest sample.
    #[must_use]
    pub fn report(&self) -> WatchdogReport {
        WatchdogReport {
            samples: self.samples,
            baseline_samples: self.config.baseline_samples,
            leak_factor: self.config.leak_factor,
            interval: self.config.interval,
            values: self.values(),
            orphans: self.latest.orphans,
            sampled_at: Some(SystemTime::now()),
        }
    }
}
