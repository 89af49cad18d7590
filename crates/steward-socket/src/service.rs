//! [`SocketService`]: what the edge holds to admit and open sockets, and what the server wires
//! into the supervision tree and the shutdown.

use std::any::Any;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::future::join_all;
use ipnet::IpNet;
use steward_config::{SocketConfig, SupervisorConfig};
use steward_core::{
    ArbiterPool, ChildSpec, Control, ExitReason, Registry, ResourceId, ResourceKind, RestartType,
    Strategy, SupervisorCell, SupervisorSpec,
};
use tokio::sync::oneshot;

use crate::admission::{IpLimiter, IpSlot, client_ip};
use crate::jobs::JobHubHandle;
use crate::port::Protocol;

/// The name prefix of a signaling socket (`GET /v1/rtc`) in the registry: `rtc <client ip>`.
pub const RTC_PREFIX: &str = "rtc ";
use crate::socket::{Connection, InboundTx, Socket, Wire};
use crate::stats::{SocketStats, SocketStatsSnapshot};

/// Why a socket could not be opened after admission.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The node holds `max_connections` sockets (503).
    #[error("this node holds its maximum of {0} sockets")]
    NodeCap(usize),
    /// The server is shutting down (503).
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The sockets supervisor is not running (503).
    #[error("sockets are unavailable: {0}")]
    Unavailable(String),
}

/// The socket front door's shared state: config, the `sockets` supervisor, the arbiters its
/// socket actors run on, the job hub, the per-IP limiter and the counters. Cheap to clone.
#[derive(Clone)]
pub struct SocketService {
    config: Arc<SocketConfig>,
    trusted: Arc<Vec<IpNet>>,
    supervisor: SupervisorCell,
    /// `[socket] arbiters` event loops; each socket actor runs on one of them (round-robin).
    arbiters: ArbiterPool,
    jobs: JobHubHandle,
    ips: Arc<IpLimiter>,
    stats: Arc<SocketStats>,
}

impl SocketService {
    /// A service with `config`, subscribing sockets to `jobs`; starts the `[socket] arbiters`
    /// event loops the socket actors will run on.
    ///
    /// # Panics
    /// Outside a running actix `System` (the arbiters need one).
    #[must_use]
    pub fn new(config: SocketConfig, jobs: JobHubHandle) -> Self {
        Self {
            arbiters: ArbiterPool::new("socket", config.arbiters as usize),
            trusted: Arc::new(config.trusted_proxy_ranges()),
            ips: IpLimiter::new(config.max_per_ip),
            config: Arc::new(config),
            supervisor: SupervisorCell::new(),
            jobs,
            stats: Arc::default(),
        }
    }

    /// The config.
    #[must_use]
    pub fn config(&self) -> &SocketConfig {
        &self.config
    }

    /// The job hub.
    #[must_use]
    pub fn jobs(&self) -> &JobHubHandle {
        &self.jobs
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> SocketStatsSnapshot {
        self.stats.snapshot()
    }

    /// The shared counters (the edge counts refusals in them).
    #[must_use]
    pub fn counters(&self) -> &Arc<SocketStats> {
        &self.stats
    }

    /// IPs holding at least one socket now (the per-IP table's size).
    #[must_use]
    pub fn tracked_ips(&self) -> usize {
        self.ips.tracked_ips()
    }

    /// The `sockets` dynamic supervisor (kind `service`), capped at `max_connections`, whose
    /// children are the socket actors (temporary: a closed socket is never restarted).
    #[must_use]
    pub fn supervisor_spec(&self, config: &SupervisorConfig) -> ChildSpec {
        let spec = SupervisorSpec::from_config("sockets", Strategy::Dynamic, config)
            .max_children(self.config.max_connections as usize);
        ChildSpec::supervisor_in(spec, self.supervisor.clone())
    }

    /// The client IP of a request from `peer` with this `X-Forwarded-For` (believed only from a
    /// trusted proxy).
    #[must_use]
    pub fn client_ip(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        client_ip(peer, forwarded_for, &self.trusted)
    }

    /// Takes a per-IP place for `ip`, or `None` at `max_per_ip`.
    #[must_use]
    pub fn admit_ip(&self, ip: IpAddr) -> Option<IpSlot> {
        self.ips.try_acquire(ip)
    }

    /// Opens a socket: starts its actor under the `sockets` supervisor, on the next of the
    /// service's arbiters; returns its id and the [`InboundTx`] the edge hands the client's
    /// frames to. `hold` (the per-IP place and the tenant's quota reservation) is released
    /// exactly when the socket is gone.
    ///
    /// # Errors
    /// [`OpenError::NodeCap`] at `max_connections`, [`OpenError::ShuttingDown`], or
    /// [`OpenError::Unavailable`] when the supervisor is down.
    pub async fn open(
        &self,
        tenant: Arc<str>,
        ip: IpAddr,
        wire: Box<dyn Wire>,
        protocol: Protocol,
        hold: impl Any + Send + Sync,
    ) -> Result<(ResourceId, InboundTx), OpenError> {
        let (alive, alive_rx) = oneshot::channel();
        // a signaling socket is named apart: its peer closes it at shutdown, after `closing`
        let name = match protocol {
            Protocol::Rtc(_) => format!("{RTC_PREFIX}{ip}"),
            Protocol::Jobs(_) => ip.to_string(),
        };
        let conn =
            Mutex::new(Some(Connection { tenant: tenant.clone(), ip, alive, wire, protocol }));
        let (config, jobs, stats) = (self.config.clone(), self.jobs.clone(), self.stats.clone());
        let spec = ChildSpec::new_in(name, ResourceKind::Socket, &self.arbiters, move |rcx| {
            let conn = conn
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take()
                .ok_or("a socket cannot be restarted: its connection is gone")?;
            Ok::<_, &str>(Socket::new(rcx, conn, config.clone(), jobs.clone(), stats.clone()))
        })
        .restart(RestartType::Temporary)
        .tenant(tenant)
        .hold(hold);
        match self.supervisor.start_child::<Socket>(spec).await {
            Ok((id, addr)) => {
                self.stats.accepted();
                Ok((id, InboundTx::new(addr.recipient(), alive_rx)))
            }
            Err(steward_core::Error::MaxChildren { max, .. }) => Err(OpenError::NodeCap(max)),
            Err(steward_core::Error::ShuttingDown) => Err(OpenError::ShuttingDown),
            Err(e) => Err(OpenError::Unavailable(e.to_string())),
        }
    }

    /// Closes every socket but the signaling ones (their peers close them in the `peers`
    /// phase, after telling them `closing`) with 1001 "server shutting down", `shutdown_batch` at a time: the
    /// next batch is asked once the current one is gone (or `deadline` passed). Returns how
    /// many were asked. For the shutdown's `notify_clients` phase.
    pub async fn close_all(&self, registry: &Registry, deadline: Instant) -> usize {
        // signaling sockets are closed by their peers, in the `peers` phase, after `closing`
        let ids: Vec<_> = registry
            .ids_of(&[ResourceKind::Socket])
            .into_iter()
            .filter(|id| registry.get(*id).is_some_and(|r| !r.name.starts_with(RTC_PREFIX)))
            .collect();
        let control = Control::new(registry.clone());
        let batch = (self.config.shutdown_batch as usize).max(1);
        for chunk in ids.chunks(batch) {
            if Instant::now() >= deadline {
                break;
            }
            for id in chunk {
                // one that is already going is as good
                let _ = control.stop(*id, ExitReason::Shutdown);
            }
            join_all(chunk.iter().map(|id| registry.wait_gone(*id, deadline))).await;
        }
        ids.len()
    }
}

impl std::fmt::Debug for SocketService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketService").field("config", &self.config).finish_non_exhaustive()
    }
}
