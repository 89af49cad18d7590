//! The UDP ports of `[rtc] udp_ports`: one per live peer, leased at the peer's first offer and
//! given back by the lease's drop, so the range caps live peer connections too.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// The free ports of the range.
#[derive(Debug)]
pub(crate) struct UdpPorts {
    free: Mutex<BTreeSet<u16>>,
}

impl UdpPorts {
    pub(crate) fn new((first, last): (u16, u16)) -> Arc<Self> {
        Arc::new(Self { free: Mutex::new((first..=last).collect()) })
    }

    /// The lowest free port, leased until the lease is dropped; `None` when all are taken.
    pub(crate) fn lease(self: &Arc<Self>) -> Option<PortLease> {
        let mut free = self.free.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let port = free.pop_first()?;
        Some(PortLease { port, pool: self.clone() })
    }

    /// Ports not leased.
    pub(crate) fn available(&self) -> usize {
        self.free.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }
}

/// One leased port; dropping it returns the port.
#[derive(Debug)]
pub(crate) struct PortLease {
    pub(crate) port: u16,
    pool: Arc<UdpPorts>,
}

impl Drop for PortLease {
    fn drop(&mut self) {
        self.pool.free.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(self.port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_come_back_when_dropped_and_the_range_caps_them() {
        let pool = UdpPorts::new((5000, 5001));
        let a = pool.lease().unwrap();
        let b = pool.lease().unwrap();
        assert_eq!((a.port, b.port), (5000, 5001));
        assert!(pool.lease().is_none());
        drop(a);
        assert_eq!(pool.available(), 1);
        assert_eq!(pool.lease().unwrap().port, 5000);
        drop(b);
        assert_eq!(pool.available(), 2);
    }
}
