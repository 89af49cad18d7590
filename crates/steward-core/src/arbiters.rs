//! [`ArbiterPool`]: arbiters (an actix event loop on its own thread each) that a supervisor
//! places its children on, round-robin, so that one kind of resource runs on every core instead
//! of on its supervisor's arbiter (see [`crate::ChildSpec::new_in`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix_rt::{Arbiter, ArbiterHandle};

/// A fixed set of arbiters, shared (cheap to clone). Children are placed on them in turn. The
/// arbiters stop (their threads end once their tasks are gone) when the last clone is dropped,
/// or with the actix `System`.
#[derive(Clone)]
pub struct ArbiterPool {
    inner: Arc<Inner>,
}

struct Inner {
    name: &'static str,
    arbiters: Vec<Arbiter>,
    next: AtomicUsize,
}

impl ArbiterPool {
    /// Starts `size` arbiters (at least one; `0` means one per available core, as
    /// `std::thread::available_parallelism` counts them) named `name` in logs.
    ///
    /// # Panics
    /// When called outside a running actix `System` (as `Arbiter::new` does).
    #[must_use]
    pub fn new(name: &'static str, size: usize) -> Self {
        let size = if size == 0 {
            std::thread::available_parallelism().map_or(1, usize::from)
        } else {
            size
        };
        let arbiters: Vec<Arbiter> = (0..size).map(|_| Arbiter::new()).collect();
        tracing::info!(pool = name, arbiters = size, "arbiter pool started");
        Self { inner: Arc::new(Inner { name, arbiters, next: AtomicUsize::new(0) }) }
    }

    /// How many arbiters it has.
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner.arbiters.len()
    }

    /// Never: a pool has at least one arbiter.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.inner.arbiters.is_empty()
    }

    /// The arbiter for the next child (round-robin).
    #[must_use]
    pub fn next(&self) -> ArbiterHandle {
        let i = self.inner.next.fetch_add(1, Ordering::Relaxed) % self.inner.arbiters.len();
        self.inner.arbiters[i].handle()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
        tracing::debug!(pool = self.name, "arbiter pool stopped");
    }
}

impl std::fmt::Debug for ArbiterPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArbiterPool")
            .field("name", &self.inner.name)
            .field("arbiters", &self.inner.arbiters.len())
            .finish()
    }
}
