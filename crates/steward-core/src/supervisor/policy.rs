//! Restart policy: restart types, restart intensity (OTP) and exponential backoff with jitter.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use steward_config::SupervisorConfig;

/// When a child is restarted, as in OTP's child specification (`restart`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartType {
    /// Always restarted (long-lived services).
    Permanent,
    /// Restarted only after an abnormal exit (see [`crate::ExitReason::is_abnormal`]).
    Transient,
    /// Never restarted (per-client resources: sessions, sockets, peers, consumers).
    Temporary,
}

impl RestartType {
    /// Whether a child of this type that exited with `reason` should be restarted.
    #[must_use]
    pub fn should_restart(self, reason: &crate::ExitReason) -> bool {
        match self {
            Self::Permanent => true,
            Self::Transient => reason.is_abnormal(),
            Self::Temporary => false,
        }
    }
}

/// Restart intensity, as in OTP's supervisor flags (`intensity`, `period`): more than
/// `max_restarts` restarts within `period` means the supervisor gives up and escalates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartIntensity {
    /// Restarts allowed within `period`.
    pub max_restarts: u32,
    /// The sliding window.
    pub period: Duration,
}

impl RestartIntensity {
    /// Records a restart at `now` in `log` (pruning entries older than `period`) and returns
    /// whether the intensity is now exceeded.
    pub fn record(&self, log: &mut VecDeque<Instant>, now: Instant) -> bool {
        while log.front().is_some_and(|t| now.duration_since(*t) > self.period) {
            log.pop_front();
        }
        log.push_back(now);
        log.len() > self.max_restarts as usize
    }
}

/// Exponential backoff between consecutive restarts of one child:
/// `delay(n) = min(max, base * factor^(n-1))`, spread by `+/- jitter` (a fraction), and reset
/// when the child has run for `reset_after`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay before the first restart.
    pub base: Duration,
    /// Growth per consecutive restart (>= 1).
    pub factor: f64,
    /// Cap.
    pub max: Duration,
    /// Random spread, 0..=1.
    pub jitter: f64,
    /// Uptime after which the consecutive count resets.
    pub reset_after: Duration,
}

impl Backoff {
    /// The delay before restart `attempt` (1-based), without jitter.
    #[must_use]
    pub fn nominal(&self, attempt: u32) -> Duration {
        let exp = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let secs = self.base.as_secs_f64() * self.factor.powi(exp);
        if secs.is_finite() && secs < self.max.as_secs_f64() {
            Duration::from_secs_f64(secs)
        } else {
            self.max
        }
    }

    /// The delay before restart `attempt`, with jitter drawn from `unit` (a number in 0..1), never
    /// above `max`.
    #[must_use]
    pub fn delay_with(&self, attempt: u32, unit: f64) -> Duration {
        let nominal = self.nominal(attempt).as_secs_f64();
        let spread = nominal * self.jitter * (2.0 * unit - 1.0);
        Duration::from_secs_f64((nominal + spread).max(0.0)).min(self.max)
    }

    /// The delay before restart `attempt`, with random jitter.
    #[must_use]
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delay_with(attempt, fastrand::f64())
    }
}

impl From<&SupervisorConfig> for RestartIntensity {
    fn from(c: &SupervisorConfig) -> Self {
        Self { max_restarts: c.max_restarts, period: c.period }
    }
}

impl From<&SupervisorConfig> for Backoff {
    fn from(c: &SupervisorConfig) -> Self {
        Self {
            base: c.backoff_base,
            factor: c.backoff_factor,
            max: c.backoff_max,
            jitter: c.backoff_jitter,
            reset_after: c.backoff_reset_after,
        }
    }
}
