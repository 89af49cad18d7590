//! Cheap refusals at the front doors: failed authentications counted and limited per client IP
//! ([`AuthFailures`]), and the doors' counters ([`DoorStats`]) that `/metrics` renders.
//!
//! A client that keeps presenting wrong tokens gets the same `unauthenticated` answer until it
//! has failed `max_per_ip` times within `window`; then every request from its IP is refused at
//! once (429 / `RESOURCE_EXHAUSTED` with `Retry-After`) without looking at the token, until the
//! window that began with its first failure ends. The table is a bounded moka cache, so a scan
//! from many addresses costs at most `capacity` entries.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Most client IPs whose failures are remembered at once, per door.
pub const AUTH_FAILURE_CAPACITY: u64 = 100_000;

/// One IP's failures in its current window.
#[derive(Debug)]
struct Window {
    since: Instant,
    failures: AtomicU32,
}

/// Failed authentications per client IP for one kind of credential (the admin token, or tenant
/// tokens), limited to `max_per_ip` within `window`. Cheap to clone.
#[derive(Clone)]
pub struct AuthFailures {
    name: &'static str,
    max_per_ip: u32,
    window: Duration,
    table: moka::sync::Cache<IpAddr, Arc<Window>>,
    failed: Arc<AtomicU64>,
    throttled: Arc<AtomicU64>,
}

impl std::fmt::Debug for AuthFailures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthFailures")
            .field("name", &self.name)
            .field("max_per_ip", &self.max_per_ip)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl AuthFailures {
    /// A table for credential `name` (`admin`, `tenant`: the label on `/metrics`) allowing
    /// `max_per_ip` failures per IP within `window` (a window starts with an IP's first failure).
    #[must_use]
    pub fn new(name: &'static str, max_per_ip: u32, window: Duration) -> Self {
        Self {
            name,
            max_per_ip,
            window,
            table: moka::sync::Cache::builder()
                .max_capacity(AUTH_FAILURE_CAPACITY)
                .time_to_live(window.max(Duration::from_millis(1)))
                .build(),
            failed: Arc::default(),
            throttled: Arc::default(),
        }
    }

    /// The credential's name (the `credential` label on `/metrics`).
    #[must_use]
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether `ip` may try to authenticate now.
    ///
    /// # Errors
    /// The time until its window ends (for `Retry-After`, at least 1 s) when `ip` has failed
    /// `max_per_ip` times in it; counted as throttled.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        let Some(w) = self.table.get(&ip) else { return Ok(()) };
        if w.failures.load(Ordering::Acquire) < self.max_per_ip {
            return Ok(());
        }
        self.throttled.fetch_add(1, Ordering::Relaxed);
        let left = self.window.saturating_sub(w.since.elapsed());
        Err(left.max(Duration::from_secs(1)))
    }

    /// Records one failed authentication from `ip`.
    pub fn record(&self, ip: IpAddr) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let w = self.table.get_with(ip, || {
            Arc::new(Window { since: Instant::now(), failures: AtomicU32::new(0) })
        });
        w.failures.fetch_add(1, Ordering::AcqRel);
    }

    /// Failed authentications since boot.
    #[must_use]
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Requests refused since boot because their IP was over the limit.
    #[must_use]
    pub fn throttled(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }

    /// IPs with failures in their current window (after pending evictions ran).
    #[must_use]
    pub fn tracked_ips(&self) -> u64 {
        self.table.run_pending_tasks();
        self.table.entry_count()
    }
}

/// The front doors' counters: both failed-authentication tables and the gRPC listeners'
/// refused connections. Cheap to clone; `/metrics` renders them.
#[derive(Debug, Clone)]
pub struct DoorStats {
    /// Failed admin-token authentications (admin HTTP and admin gRPC listeners).
    pub admin: AuthFailures,
    /// Failed tenant-token authentications (public HTTP, WebSocket and public gRPC).
    pub tenant: AuthFailures,
    refused: Arc<Mutex<BTreeMap<&'static str, Arc<AtomicU64>>>>,
}

impl DoorStats {
    /// Counters over the two failure tables.
    #[must_use]
    pub fn new(admin: AuthFailures, tenant: AuthFailures) -> Self {
        Self { admin, tenant, refused: Arc::default() }
    }

    /// The counter of connections `listener` refused at its per-IP cap (created on first use).
    #[must_use]
    pub fn grpc_connections_refused(&self, listener: &'static str) -> Arc<AtomicU64> {
        self.refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(listener)
            .or_default()
            .clone()
    }

    /// Refused connections per gRPC listener, sorted by listener.
    #[must_use]
    pub fn refused_connections(&self) -> Vec<(&'static str, u64)> {
        self.refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (*k, v.load(Ordering::Relaxed)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ip_is_refused_after_its_failures_and_others_are_not() {
        let t = AuthFailures::new("tenant", 3, Duration::from_secs(60));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert!(t.check(a).is_ok());
            t.record(a);
        }
        let wait = t.check(a).unwrap_err();
        assert!(wait > Duration::from_secs(50) && wait <= Duration::from_secs(60), "{wait:?}");
        assert!(t.check(b).is_ok());
        assert_eq!((t.failed(), t.throttled(), t.tracked_ips()), (3, 1, 1));
    }

    #[test]
    fn the_window_ends_and_the_ip_may_try_again() {
        let t = AuthFailures::new("admin", 1, Duration::from_millis(50));
        let a: IpAddr = "::1".parse().unwrap();
        t.record(a);
        assert!(t.check(a).is_err());
        std::thread::sleep(Duration::from_millis(80));
        assert!(t.check(a).is_ok());
        assert_eq!(t.tracked_ips(), 0);
    }
}
