//! The proxy's decision: the one address a connection to `host:port` may go to, or why not.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use url::{Host, Url};

use super::{Refusals, Walls};
use crate::policy::{self, UrlPolicy};
use crate::shared::lock;
use crate::stats::{BrowserStats, EgressRefusal};

/// Static answers of the proxy's resolver (`[browser] egress_hosts`): lowercase name → addresses.
pub(crate) type Hosts = HashMap<String, Vec<IpAddr>>;

/// A refused connection: the host as Chromium named it, why (the metric's label) and the
/// message for the client.
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    pub(crate) host: String,
    pub(crate) reason: EgressRefusal,
    pub(crate) message: String,
}

/// Everything a proxy decides with. The policy is the tenant's, refreshed by every call of its
/// session (a `PATCH` of the tenant's `browser_allow` applies from the next call on); `None`
/// refuses everything (a browser's own proxy: no page loads outside a session's context).
#[derive(Debug)]
pub(crate) struct Gate {
    policy: Mutex<Option<Arc<UrlPolicy>>>,
    hosts: Arc<Hosts>,
    walls: Arc<Walls>,
    stats: Arc<BrowserStats>,
    refusals: Arc<Refusals>,
}

impl Gate {
    pub(crate) fn new(
        policy: Option<Arc<UrlPolicy>>,
        hosts: Arc<Hosts>,
        walls: Arc<Walls>,
        stats: Arc<BrowserStats>,
    ) -> Self {
        Self { policy: Mutex::new(policy), hosts, walls, stats, refusals: Arc::default() }
    }

    /// Decides with `policy` from now on.
    pub(crate) fn set_policy(&self, policy: Arc<UrlPolicy>) {
        *lock(&self.policy) = Some(policy);
    }

    pub(crate) fn refusals(&self) -> &Arc<Refusals> {
        &self.refusals
    }

    /// Where a connection to `host:port` goes: the address checked, or the refusal (counted,
    /// logged and remembered).
    pub(crate) async fn decide(&self, host: &str, port: u16) -> Result<SocketAddr, Refusal> {
        let refusal = match self.judge(host, port).await {
            Ok(addr) => return Ok(addr),
            Err(refusal) => refusal,
        };
        self.stats.egress_refused(refusal.reason);
        tracing::info!(host, port, reason = refusal.reason.as_str(), "egress refused");
        self.refusals.record(refusal.clone());
        Err(refusal)
    }

    /// Counts a connection made.
    pub(crate) fn connected(&self) {
        BrowserStats::inc(&self.stats.egress_connections);
    }

    /// A refusal of `host` for `reason` (counted like the others).
    pub(crate) fn refuse(&self, host: &str, reason: EgressRefusal, message: &str) -> Refusal {
        let refusal = Refusal { host: host.to_owned(), reason, message: message.to_owned() };
        self.stats.egress_refused(reason);
        self.refusals.record(refusal.clone());
        refusal
    }

    async fn judge(&self, host: &str, port: u16) -> Result<SocketAddr, Refusal> {
        let no = |reason, message: String| Refusal { host: host.to_owned(), reason, message };
        let Some(policy) = lock(&self.policy).clone() else {
            return Err(no(
                EgressRefusal::NoSession,
                "the browser's own traffic goes nowhere: pages load only in sessions".into(),
            ));
        };
        if port == 0 {
            return Err(no(EgressRefusal::BadRequest, format!("{host}:0 is not a destination")));
        }
        let shown = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        // the URL Standard's host parser: numeric forms (`2130706433`, `0x7f.1`) become the
        // addresses they are, names are lowercased and IDNA-mapped, as the policy expects
        let Ok(url) = Url::parse(&format!("http://{shown}:{port}/")) else {
            return Err(no(EgressRefusal::BadRequest, format!("{host} is not a host")));
        };
        let (name, addrs) = match url.host() {
            Some(Host::Ipv4(ip)) => (None, vec![IpAddr::V4(ip)]),
            Some(Host::Ipv6(ip)) => (None, vec![IpAddr::V6(ip)]),
            Some(Host::Domain(d)) => {
                let d = d.trim_end_matches('.').to_ascii_lowercase();
                let addrs = if let Some(fixed) = self.hosts.get(&d) {
                    fixed.clone()
                } else if policy::is_localhost(&d) {
                    vec![IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)]
                } else {
                    policy::resolve(&d, port).await
                };
                (Some(d), addrs)
            }
            None => return Err(no(EgressRefusal::BadRequest, format!("{host} is not a host"))),
        };
        let Some(&ip) = addrs.first() else {
            return Err(no(EgressRefusal::Dns, format!("{host} does not resolve")));
        };
        if let Err(e) = policy.check_resolved(&url, &addrs) {
            let reason = policy.refusal_reason(name.as_deref(), &addrs);
            let message = match e {
                crate::Error::PermissionDenied(m) => m,
                other => other.to_string(),
            };
            return Err(no(reason, message));
        }
        if let Some(what) = self.walls.guarded(ip, port) {
            return Err(no(EgressRefusal::Steward, format!("{host}:{port} is {what}")));
        }
        Ok(SocketAddr::new(ip, port))
    }
}
