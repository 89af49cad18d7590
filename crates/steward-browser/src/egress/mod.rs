//! The egress proxy: every connection a session's Chromium context makes goes through a proxy
//! its session owns, which decides on the address it will actually connect to.
//!
//! Checking URLs cannot contain a page: a renderer-initiated navigation, a redirect, an
//! iframe, `fetch`, XHR, WebSocket, EventSource or a worker reach wherever the page asks, and a
//! name can resolve to one address when checked and another when Chromium connects (DNS
//! rebinding). So each session's browser context is created with `proxyServer` set to its own
//! proxy on `127.0.0.1` and `proxyBypassList = "<-loopback>"` (Chromium otherwise sends
//! loopback directly), and the browser itself starts with a proxy that refuses everything, for
//! anything outside a session's context. The proxy:
//!
//! - serves HTTP/1.1 with hyper (`CONNECT host:port` for `https:`, `wss:` and `ws:`;
//!   absolute-form `GET http://host/…` for `http:`), each request head at most [`MAX_HEAD`]
//!   bytes within [`HEAD_TIMEOUT`], and decides every request on a kept-alive connection on its
//!   own;
//! - resolves the name itself (static `[browser] egress_hosts` entries first, `localhost` as
//!   loopback), checks every address against the tenant's [`UrlPolicy`] — the same rules and
//!   `browser_allow` list as the up-front URL check — and never one of Steward's own proxies
//!   (the walls between tenants) or listeners ([`Walls`]);
//! - connects to exactly the address it checked, and relays: a tunnel, or a plain-HTTP
//!   request sent in origin form, without hop-by-hop headers, on an upstream connection of its
//!   own (never reused, so no later request rides on an address decided for another);
//! - refuses with `403` and `X-Steward-Egress: refused; reason=<reason>`, counted in
//!   `steward_browser_egress_refused_total{reason}` and recorded for the session, so a
//!   navigation it refused answers `url_not_allowed` with the reason.
//!
//! The proxy's tasks belong to the session's tracker: they go when the session goes.

mod gate;
mod proxy;
#[cfg(test)]
mod tests;

pub(crate) use gate::{Gate, Hosts, Refusal};

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use steward_core::Tracker;

use crate::shared::lock;
use crate::{Error, Result};

/// Longest request head the proxy reads, in bytes.
pub(crate) const MAX_HEAD: usize = 16 * 1024;
/// How long the proxy waits for a request head.
pub(crate) const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long it waits to connect upstream.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most connections one proxy serves at once (Chromium opens at most 32 per proxy).
pub(crate) const MAX_CONNECTIONS: usize = 64;
/// Refusals a session remembers (for the error of the navigation they stopped).
const REMEMBERED: usize = 32;

/// What no proxy connects to, whatever a tenant's policy allows:
///
/// - the loopback ports Steward's own proxies listen on, so no tenant reaches another tenant's
///   proxy (and its policy) through its own;
/// - Steward's own listeners (admin, public HTTP, gRPC), so a tenant allowed loopback or this
///   machine's addresses (`browser_allow`) still cannot read the admin listener's `/metrics` or
///   call Steward from a page: a listener's port is refused on loopback, on the unspecified
///   address, on the listener's own address, and — for a listener on the unspecified address —
///   on every address of this machine.
#[derive(Debug, Default)]
pub(crate) struct Walls {
    proxies: Mutex<HashSet<u16>>,
    /// Listener name → the addresses it is bound to (replaced when it binds again).
    listeners: Mutex<HashMap<String, Vec<SocketAddr>>>,
}

impl Walls {
    fn raise(self: &Arc<Self>, port: u16) -> Wall {
        lock(&self.proxies).insert(port);
        Wall { walls: self.clone(), port }
    }

    #[cfg(test)]
    pub(crate) fn contains(&self, port: u16) -> bool {
        lock(&self.proxies).contains(&port)
    }

    /// Walls off the listener `name`, bound to `addrs` (its earlier addresses are forgotten).
    pub(crate) fn listener(&self, name: &str, addrs: &[SocketAddr]) {
        lock(&self.listeners).insert(name.to_owned(), addrs.to_vec());
    }

    /// What of Steward's `ip:port` is, if it is behind a wall.
    pub(crate) fn guarded(&self, ip: IpAddr, port: u16) -> Option<&'static str> {
        let anywhere = ip.is_loopback() || ip.is_unspecified();
        if anywhere && lock(&self.proxies).contains(&port) {
            return Some("one of Steward's own proxies");
        }
        let listeners = lock(&self.listeners);
        let mut bound = listeners.values().flatten().filter(|l| l.port() == port);
        bound
            .any(|l| anywhere || l.ip() == ip || (l.ip().is_unspecified() && is_local(ip)))
            .then_some("one of Steward's own listeners")
    }
}

/// Whether `ip` is an address of this machine (it can be bound to).
fn is_local(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// A proxy's port in [`Walls`] while it lives.
#[derive(Debug)]
struct Wall {
    walls: Arc<Walls>,
    port: u16,
}

impl Drop for Wall {
    fn drop(&mut self) {
        lock(&self.walls.proxies).remove(&self.port);
    }
}

/// What a proxy refused lately, and which permitted destinations it could not reach (so a
/// navigation reports Chromium's usual network error rather than the proxy's error page).
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    refused: Mutex<VecDeque<(Instant, Refusal)>>,
    /// Host and Chromium's name for the failure (`net::ERR_CONNECTION_REFUSED`).
    unreachable: Mutex<VecDeque<(Instant, (String, &'static str))>>,
}

impl Refusals {
    pub(crate) fn record(&self, refusal: Refusal) {
        push(&self.refused, refusal);
    }

    /// The latest refusal since `since` of a connection to `host` (as Chromium named it).
    pub(crate) fn of(&self, host: &str, since: Instant) -> Option<Refusal> {
        latest(&self.refused, since, |r| r.host.eq_ignore_ascii_case(host))
    }

    pub(crate) fn record_unreachable(&self, host: &str, error: &'static str) {
        push(&self.unreachable, (host.to_owned(), error));
    }

    /// Chromium's name for the latest failure since `since` to connect to `host`.
    pub(crate) fn unreachable(&self, host: &str, since: Instant) -> Option<&'static str> {
        latest(&self.unreachable, since, |(h, _): &(String, _)| h.eq_ignore_ascii_case(host))
            .map(|(_, e)| e)
    }
}

fn push<T>(log: &Mutex<VecDeque<(Instant, T)>>, item: T) {
    let mut log = lock(log);
    if log.len() == REMEMBERED {
        log.pop_front();
    }
    log.push_back((Instant::now(), item));
}

fn latest<T: Clone>(
    log: &Mutex<VecDeque<(Instant, T)>>,
    since: Instant,
    mut matches: impl FnMut(&T) -> bool,
) -> Option<T> {
    lock(log).iter().rev().find(|(at, item)| *at >= since && matches(item)).map(|(_, i)| i.clone())
}

/// A session's (or a browser's) running egress proxy. Dropping it does not stop the proxy: its
/// tasks belong to the owner's tracker and end with the owner.
#[derive(Debug)]
pub(crate) struct Egress {
    addr: SocketAddr,
    refusals: Arc<Refusals>,
    _wall: Wall,
}

impl Egress {
    /// Starts a proxy on `127.0.0.1:<free port>` deciding with `gate`, its tasks owned by
    /// `tracker` (on `io` when given).
    ///
    /// # Errors
    /// [`Error::BrowserUnavailable`] when no port can be bound or the owner is stopping.
    pub(crate) fn start(
        tracker: &Tracker,
        io: Option<&tokio::runtime::Handle>,
        gate: Arc<Gate>,
        walls: &Arc<Walls>,
    ) -> Result<Self> {
        let unavailable = |e: &dyn std::fmt::Display| {
            Error::BrowserUnavailable(format!("cannot start the egress proxy: {e}"))
        };
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| unavailable(&e))?;
        let addr = listener.local_addr().map_err(|e| unavailable(&e))?;
        let wall = walls.raise(addr.port());
        let refusals = gate.refusals().clone();
        let accept = proxy::accept(listener, gate, tracker.clone(), io.cloned());
        match io {
            Some(io) => tracker.spawn_on(io, accept),
            None => tracker.spawn(accept),
        }
        .map_err(|e| unavailable(&e))?;
        Ok(Self { addr, refusals, _wall: wall })
    }

    /// `http://127.0.0.1:<port>`, for `--proxy-server` and `Target.createBrowserContext`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What it refused lately.
    pub(crate) fn refusals(&self) -> &Arc<Refusals> {
        &self.refusals
    }
}
