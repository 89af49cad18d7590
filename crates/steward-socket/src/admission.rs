//! Admission helpers of the socket front door: the client IP behind trusted proxies, and the
//! per-IP connection cap.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use ipnet::IpNet;

/// The client IP of a request that reached us from `peer`: the right-most address of
/// `X-Forwarded-For` that is not one of `trusted` proxies, when `peer` itself is trusted;
/// otherwise `peer`. An unparsable entry stops the walk (the entry left of it was written by
/// someone we cannot vouch for), so the last trusted hop's view wins.
#[must_use]
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let Some(header) = forwarded_for else { return peer };
    let mut client = peer;
    for hop in header.rsplit(',') {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

/// Open sockets per client IP, capped. An entry exists only while its IP holds a socket (seed
/// 002 kept its per-IP maps forever).
#[derive(Debug)]
pub struct IpLimiter {
    counts: Mutex<HashMap<IpAddr, u32>>,
    max: u32,
}

/// One socket's place in the per-IP count; dropping it gives the place back.
#[derive(Debug)]
pub struct IpSlot {
    limiter: Arc<IpLimiter>,
    ip: IpAddr,
}

impl IpLimiter {
    /// A limiter allowing `max` sockets per IP.
    #[must_use]
    pub fn new(max: u32) -> Arc<Self> {
        Arc::new(Self { counts: Mutex::new(HashMap::new()), max })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, u32>> {
        self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a place for `ip`, or `None` when it holds `max` already.
    #[must_use]
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let mut counts = self.lock();
        let n = counts.entry(ip).or_insert(0);
        if *n >= self.max {
            if *n == 0 {
                counts.remove(&ip);
            }
            return None;
        }
        *n += 1;
        Some(IpSlot { limiter: self.clone(), ip })
    }

    /// IPs holding at least one socket.
    #[must_use]
    pub fn tracked_ips(&self) -> usize {
        self.lock().len()
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut counts = self.limiter.lock();
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> =
            vec!["10.0.0.0/8".parse().unwrap(), "127.0.0.1/32".parse().unwrap()];
        let xff = Some("203.0.113.9, 198.51.100.7, 10.1.2.3");
        assert_eq!(client_ip(ip("192.0.2.1"), xff, &trusted), ip("192.0.2.1"), "untrusted peer");
        assert_eq!(
            client_ip(ip("10.9.9.9"), xff, &trusted),
            ip("198.51.100.7"),
            "right-most untrusted hop"
        );
        assert_eq!(client_ip(ip("127.0.0.1"), None, &trusted), ip("127.0.0.1"));
        assert_eq!(client_ip(ip("10.9.9.9"), Some("garbage, 10.1.1.1"), &trusted), ip("10.1.1.1"));
        assert_eq!(client_ip(ip("10.9.9.9"), Some("10.1.1.1"), &trusted), ip("10.1.1.1"));
    }

    #[test]
    fn the_per_ip_table_holds_entries_only_while_sockets_are_open() {
        let limiter = IpLimiter::new(2);
        let a = limiter.try_acquire(ip("192.0.2.1")).unwrap();
        let b = limiter.try_acquire(ip("192.0.2.1")).unwrap();
        assert!(limiter.try_acquire(ip("192.0.2.1")).is_none());
        let c = limiter.try_acquire(ip("192.0.2.2")).unwrap();
        assert_eq!(limiter.tracked_ips(), 2);
        drop((a, b, c));
        assert_eq!(limiter.tracked_ips(), 0);
    }
}
