//! `/metrics`: Prometheus text format, encoded by `prometheus-client` from the core's live
//! counters at scrape time (nothing is double-booked in a second metrics store).

use std::borrow::Cow;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry as PromRegistry;
use steward_browser::stats::{BrowserInfo, BrowserState, BrowserStats, EgressRefusal, Op};
use steward_browser::{Browsers, CloseReason};
use steward_core::Registry;
use steward_core::shutdown::PhaseReport;
use steward_core::watchdog::{WatchdogReport, open_fds, rss_bytes};
use steward_socket::jobs::JobStats;
use steward_socket::monitor::{Alarm, MonitorReport};
use steward_socket::stats::SocketStatsSnapshot;
use steward_tenancy::{QuotaCount, QuotaKind, QuotaStats};

/// The socket front door's and the job hub's readings, for [`render_metrics`].
#[derive(Debug, Clone, Default)]
pub struct SocketMetrics {
    /// Socket counters.
    pub sockets: SocketStatsSnapshot,
    /// IPs holding a socket now.
    pub tracked_ips: usize,
    /// Job hub counters.
    pub jobs: JobStats,
    /// The memory monitor's latest report.
    pub monitor: MonitorReport,
}

/// The front doors' readings, for [`render_metrics`].
#[derive(Debug, Clone, Default)]
pub struct DoorMetrics {
    /// Per credential (`admin`, `tenant`): failed authentications, requests throttled, IPs with
    /// failures in their window.
    pub auth: Vec<(&'static str, u64, u64, u64)>,
    /// Connections refused at the per-IP cap, per gRPC listener.
    pub grpc_refused: Vec<(&'static str, u64)>,
    /// Unknown token ids in the negative cache.
    pub unknown_tokens_cached: u64,
    /// With `[tls]` on: certificate reloads that took and that were refused, and gRPC
    /// handshakes that timed out and that failed.
    pub tls: Option<[u64; 4]>,
}

impl DoorMetrics {
    /// The readings of `doors` and `tenancy` now.
    #[must_use]
    pub fn of(
        doors: &steward_tenancy::DoorStats,
        tenancy: &steward_tenancy::Tenancy,
        tls: Option<&steward_tls::Tls>,
    ) -> Self {
        Self {
            auth: [&doors.admin, &doors.tenant]
                .iter()
                .map(|f| (f.name(), f.failed(), f.throttled(), f.tracked_ips()))
                .collect(),
            grpc_refused: doors.refused_connections(),
            unknown_tokens_cached: tenancy.cached_unknown_tokens(),
            tls: tls.map(|t| {
                [
                    t.reloads_ok(),
                    t.reloads_failed(),
                    t.handshakes_timed_out(),
                    t.handshakes_failed(),
                ]
            }),
        }
    }
}

/// The messaging proxy's readings, for [`render_metrics`].
#[derive(Debug, Clone, Default)]
pub struct MessagingMetrics {
    /// Messaging counters.
    pub stats: steward_messaging::MessagingStatsSnapshot,
    /// Live producers.
    pub producers: u64,
    /// Live consumers.
    pub consumers: u64,
    /// Per tenant: what the broker counts against its quotas (topics, groups, stored messages
    /// and bytes).
    pub tenants: Vec<(Arc<str>, steward_messaging::TenantUsage)>,
}

impl MessagingMetrics {
    /// The readings of `messaging` now.
    #[must_use]
    pub fn of(messaging: &steward_messaging::Messaging) -> Self {
        let (producers, consumers) = messaging.live();
        Self {
            stats: messaging.stats().snapshot(),
            producers,
            consumers,
            tenants: messaging.tenant_usage(),
        }
    }
}

/// The browser pool's readings, for [`render_metrics`]: its live counters and histograms
/// (shared, not copied: they are encoded as they are at scrape time) and what the pool holds
/// now.
#[derive(Debug, Clone, Default)]
pub struct BrowserMetrics {
    /// The pool's counters and latency histograms.
    pub stats: Arc<BrowserStats>,
    /// Every browser now (state, contexts, pages, Chromium processes and memory).
    pub browsers: Vec<BrowserInfo>,
    /// Live sessions.
    pub sessions: usize,
    /// `CreateSession` calls waiting in the queue, per tenant.
    pub queued: Vec<(Arc<str>, u32)>,
}

impl BrowserMetrics {
    /// The readings of `browsers` now.
    #[must_use]
    pub fn of(browsers: &Browsers) -> Self {
        Self {
            stats: browsers.stats().clone(),
            browsers: browsers.browsers(),
            sessions: browsers.live_sessions(),
            queued: browsers.queued(),
        }
    }
}

/// Renders every Steward metric in the Prometheus text exposition format:
/// per kind `steward_resources_live`, `steward_resources_started_total`, `…_stopped_total`,
/// `…_restarted_total`, `…_failed_total`, `steward_restart_backoff_pending`; tracked handles
/// (`steward_tracked_handles{type}`, `steward_orphaned_handles`); shutdown phase durations;
/// the watchdog's `steward_watchdog_baseline{watched}`, `steward_watchdog_current{watched}` and
/// `steward_potential_leak{kind}`; `steward_process_resident_memory_bytes` and
/// `steward_process_open_fds`; per tenant `steward_tenant_resources_live{tenant,kind}` (from the
/// registry), `steward_tenant_quota_reserved{tenant,quota}`,
/// `steward_tenant_admissions_total{tenant,quota}` and
/// `steward_tenant_admissions_refused_total{tenant,quota}` (from the admission ledger); the socket
/// front door's `steward_socket_accepted_total`, `steward_socket_rejected_total{reason}`,
/// `steward_socket_closes_total{code}`, `steward_socket_messages_{in,out}_total`,
/// `steward_socket_bytes_{in,out}_total`, `steward_socket_rate_limited_total`,
/// `steward_socket_slow_consumer_total`, `steward_socket_queue_depth`,
/// `steward_socket_queue_bytes`, `steward_socket_tracked_ips`,
/// `steward_socket_monitor_alarm{alarm}`, `steward_socket_inactive`,
/// `steward_socket_remediated_total`; and the job hub's `steward_jobs{state}`,
/// `steward_jobs_subscriptions`, `steward_jobs_created_total`, `steward_jobs_updates_total`,
/// `steward_jobs_evicted_total`, `steward_jobs_refused_total` and
/// `steward_jobs_watcher_overflows_total`, `steward_jobs_expired_total`; the front doors'
/// `steward_auth_failures_total{credential}`, `steward_auth_throttled_total{credential}`,
/// `steward_auth_failing_ips{credential}`, `steward_auth_unknown_tokens_cached` and
/// `steward_grpc_connections_refused_total{listener}`, with `[tls]` on
/// `steward_tls_reloads_total{result}` and `steward_tls_handshakes_failed_total{reason}`; per tenant and quota
/// `steward_tenant_quota_used` and `steward_tenant_quota_limit`; the messaging proxy's `steward_messaging_producers`,
/// `steward_messaging_consumers`, `steward_messaging_sent_total{result}`,
/// `steward_messaging_deliveries_total`, `steward_messaging_redeliveries_total`,
/// `steward_messaging_acks_total`, `steward_messaging_nacks_total`,
/// `steward_messaging_dead_lettered_total`, `steward_messaging_leases_in_flight`,
/// `steward_messaging_returned_total`, and seed 001's `steward_messaging_channel_full_events_total`,
/// `steward_messaging_producer_leak_detections_total` and
/// `steward_messaging_consumer_leak_detections_total` (must stay 0); and the browser pool's
/// `steward_browser_browsers{state,origin}`, `steward_browser_launched_total`,
/// `steward_browser_relaunched_total`, `steward_browser_disconnects_total`,
/// `steward_browser_launch_failures_total`, `steward_browser_recycled_total`,
/// `steward_browser_sessions`, `steward_browser_sessions_created_total`,
/// `steward_browser_sessions_closed_total{reason}`, `steward_browser_contexts{browser}`,
/// `steward_browser_pages{browser}`, `steward_browser_queue_waiting{tenant}`,
/// `steward_browser_queue_wait_seconds` (histogram), `steward_browser_queue_refused_total{reason}`,
/// `steward_browser_cdp_seconds{op}` (histograms), `steward_browser_cdp_timeouts_total{op}`,
/// `steward_browser_reconciled_total`, `steward_browser_urls_refused_total`,
/// `steward_browser_egress_refused_total{reason}`, `steward_browser_egress_connections_total`,
/// `steward_browser_chromium_processes{browser}` and
/// `steward_browser_chromium_resident_memory_bytes{browser}` (local browsers); and the streams'
/// `steward_stream_streams`, `steward_stream_subscribers`, `steward_stream_keys`,
/// `steward_stream_bytes`, `steward_stream_publications_total{result}`,
/// `steward_stream_latest_lookups_total{outcome}`, `steward_stream_recoveries_total{outcome}`,
/// `steward_stream_expirations_total{kind}`, `steward_stream_slow_subscribers_total`,
/// `steward_stream_live_feed_lost_total`, `steward_stream_gap_fills_total` and
/// `steward_stream_timer_fires_total`; and WebRTC's `steward_rtc_peer_connections_live`,
/// `steward_rtc_tasks_live`, `steward_rtc_rooms`, `steward_rtc_free_udp_ports`,
/// `steward_rtc_peer_closes_total{reason}`, `steward_rtc_candidates_refused_total{why}`,
/// `steward_rtc_data_messages_total{outcome}`, `steward_rtc_rtp_packets_total{outcome}` and
/// `steward_rtc_forced_closes_total`.
#[must_use]
#[allow(clippy::too_many_arguments)] // one reading per subsystem, each owned by its own crate
pub fn render_metrics(
    registry: &Registry,
    watchdog: &WatchdogReport,
    phases: &[PhaseReport],
    quotas: &[QuotaStats],
    sockets: &SocketMetrics,
    messaging: &MessagingMetrics,
    browsers: &BrowserMetrics,
    doors: &DoorMetrics,
    streams: &StreamMetrics,
    rtc: &RtcMetrics,
) -> String {
    let mut prom = PromRegistry::default();
    prom.register_collector(Box::new(Snapshot {
        registry: registry.clone(),
        watchdog: watchdog.clone(),
        phases: phases.to_vec(),
        quotas: quotas.to_vec(),
        sockets: sockets.clone(),
        messaging: messaging.clone(),
        browsers: browsers.clone(),
        doors: doors.clone(),
        streams: streams.clone(),
        rtc: rtc.clone(),
    }));
    let mut out = String::new();
    // encoding into a String cannot fail
    let _ = prometheus_client::encoding::text::encode(&mut out, &prom);
    out
}

#[derive(Debug)]
struct Snapshot {
    registry: Registry,
    watchdog: WatchdogReport,
    phases: Vec<PhaseReport>,
    quotas: Vec<QuotaStats>,
    sockets: SocketMetrics,
    messaging: MessagingMetrics,
    browsers: BrowserMetrics,
    doors: DoorMetrics,
    streams: StreamMetrics,
    rtc: RtcMetrics,
}

type Labels = Vec<(Cow<'static, str>, Cow<'static, str>)>;

fn gauge<N: prometheus_client::encoding::EncodeGaugeValue + std::fmt::Debug + Send + Sync>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: Vec<(Labels, N)>,
) -> Result<(), std::fmt::Error>
where
    ConstGauge<N>: EncodeMetric,
{
    let mut m =
        enc.encode_descriptor(name, help, None, prometheus_client::metrics::MetricType::Gauge)?;
    for (labels, v) in rows {
        if labels.is_empty() {
            // a series without labels renders as `name value`, not `name{} value`
            return ConstGauge::new(v).encode(m);
        }
        ConstGauge::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: Vec<(Labels, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut m =
        enc.encode_descriptor(name, help, None, prometheus_client::metrics::MetricType::Counter)?;
    for (labels, v) in rows {
        if labels.is_empty() {
            // a series without labels renders as `name_total value`, not `name_total{} value`
            return ConstCounter::new(v).encode(m);
        }
        ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn label(k: &'static str, v: impl Into<Cow<'static, str>>) -> Labels {
    vec![(Cow::Borrowed(k), v.into())]
}

fn two(
    k1: &'static str,
    v1: impl Into<Cow<'static, str>>,
    k2: &'static str,
    v2: impl Into<Cow<'static, str>>,
) -> Labels {
    vec![(Cow::Borrowed(k1), v1.into()), (Cow::Borrowed(k2), v2.into())]
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let stats = self.registry.kind_stats();
        let per_kind =
            |f: &dyn Fn(&steward_core::registry::KindStats) -> u64| -> Vec<(Labels, u64)> {
                stats.iter().map(|(k, s)| (label("kind", k.as_str()), f(s))).collect()
            };
        gauge(
            &mut enc,
            "steward_resources_live",
            "Live resources per kind.",
            per_kind(&|s| s.live).into_iter().map(|(l, v)| (l, v as i64)).collect(),
        )?;
        counter(
            &mut enc,
            "steward_resources_started",
            "Resources started per kind (restarts included).",
            per_kind(&|s| s.started),
        )?;
        counter(
            &mut enc,
            "steward_resources_stopped",
            "Resources that left the registry per kind.",
            per_kind(&|s| s.stopped),
        )?;
        counter(
            &mut enc,
            "steward_resources_restarted",
            "Restarts scheduled per kind.",
            per_kind(&|s| s.restarted),
        )?;
        counter(
            &mut enc,
            "steward_resources_failed",
            "Abnormal exits per kind.",
            per_kind(&|s| s.failed),
        )?;
        counter(
            &mut enc,
            "steward_resources_killed",
            "Resources killed per kind: not stopped by their deadline (a child's shutdown, a \
             shutdown phase's), or killed by an operator.",
            per_kind(&|s| s.killed),
        )?;
        gauge(
            &mut enc,
            "steward_restart_backoff_pending",
            "Restarts waiting out their backoff delay, per kind.",
            per_kind(&|s| s.restart_pending).into_iter().map(|(l, v)| (l, v as i64)).collect(),
        )?;
        let handles = self.registry.handle_counts();
        gauge(
            &mut enc,
            "steward_tracked_handles",
            "Tracked tasks, timers and processes owned by resources.",
            vec![
                (label("type", "task"), handles.tasks as i64),
                (label("type", "timer"), handles.timers as i64),
                (label("type", "process"), handles.processes as i64),
            ],
        )?;
        gauge(
            &mut enc,
            "steward_orphaned_handles",
            "Tracked handles whose owner is gone.",
            vec![(Labels::new(), handles.orphans as i64)],
        )?;
        gauge(
            &mut enc,
            "steward_shutdown_phase_duration_seconds",
            "Duration of each completed shutdown phase.",
            self.phases
                .iter()
                .map(|p| (label("phase", p.phase.as_str()), p.duration.as_secs_f64()))
                .collect(),
        )?;
        let values = &self.watchdog.values;
        gauge(
            &mut enc,
            "steward_watchdog_baseline",
            "Watchdog baseline per watched count (absent until taken).",
            values
                .iter()
                .filter_map(|v| v.baseline.map(|b| (label("watched", v.watched.label()), b)))
                .collect(),
        )?;
        gauge(
            &mut enc,
            "steward_watchdog_current",
            "Watchdog's latest sample per watched count.",
            values
                .iter()
                .map(|v| (label("watched", v.watched.label()), v.current as i64))
                .collect(),
        )?;
        gauge(
            &mut enc,
            "steward_potential_leak",
            "1 when a count is above leak_factor x baseline and above its floor.",
            values
                .iter()
                .map(|v| (label("kind", v.watched.label()), i64::from(v.potential_leak)))
                .collect(),
        )?;
        let tenant_rows = |f: &dyn Fn(&QuotaCount) -> u64| -> Vec<(Labels, u64)> {
            self.quotas
                .iter()
                .flat_map(|t| {
                    t.quotas.iter().map(move |q| {
                        (two("tenant", t.tenant.to_string(), "quota", q.quota.as_str()), f(q))
                    })
                })
                .collect()
        };
        gauge(
            &mut enc,
            "steward_tenant_resources_live",
            "Live resources per tenant and kind (tenants owning at least one).",
            self.registry
                .tenants_usage()
                .into_iter()
                .flat_map(|(tenant, usage)| {
                    usage.into_iter().filter(|(_, n)| *n > 0).map(move |(k, n)| {
                        (two("tenant", tenant.to_string(), "kind", k.as_str()), n as i64)
                    })
                })
                .collect(),
        )?;
        gauge(
            &mut enc,
            "steward_tenant_quota_reserved",
            "Admission slots held now per tenant and quota.",
            tenant_rows(&|q| q.reserved).into_iter().map(|(l, v)| (l, v as i64)).collect(),
        )?;
        // usage against each quota: the ledger's slots, and what the broker counts
        let broker_usage = |tenant: &str, q: QuotaKind| -> Option<u64> {
            let (_, u) = self.messaging.tenants.iter().find(|(t, _)| &**t == tenant)?;
            match q {
                QuotaKind::Topics => Some(u.topics),
                QuotaKind::Groups => Some(u.groups),
                QuotaKind::StoredMessages => Some(u.stored_messages),
                QuotaKind::StoredBytes => Some(u.stored_bytes),
                _ => None,
            }
        };
        let counted_usage = |tenant: &str, q: QuotaKind| -> Option<u64> {
            match q {
                // what the tenant's streams hold on this node (or nothing yet)
                QuotaKind::StreamBytes => Some(self.streams.tenant_bytes(tenant).unwrap_or(0)),
                _ => broker_usage(tenant, q),
            }
        };
        gauge(
            &mut enc,
            "steward_tenant_quota_used",
            "Usage against each quota per tenant (live slots, or what the broker counts).",
            self.quotas
                .iter()
                .flat_map(|t| {
                    // a rate and a per-stream limit have no single usage per tenant
                    let counted = |q: &&QuotaCount| {
                        !matches!(q.quota, QuotaKind::SessionRate | QuotaKind::StreamKeys)
                    };
                    t.quotas.iter().filter(counted).map(move |q| {
                        let used = counted_usage(t.tenant.as_str(), q.quota).unwrap_or(q.reserved);
                        (
                            two("tenant", t.tenant.to_string(), "quota", q.quota.as_str()),
                            used as i64,
                        )
                    })
                })
                .collect(),
        )?;
        gauge(
            &mut enc,
            "steward_tenant_quota_limit",
            "Each quota's limit per tenant, as last seen by an admission.",
            self.quotas
                .iter()
                .flat_map(|t| {
                    t.quotas.iter().filter_map(move |q| {
                        let limit = i64::try_from(q.limit?).unwrap_or(i64::MAX);
                        Some((
                            two("tenant", t.tenant.to_string(), "quota", q.quota.as_str()),
                            limit,
                        ))
                    })
                })
                .collect(),
        )?;
        counter(
            &mut enc,
            "steward_tenant_admissions",
            "Admissions granted per tenant and quota.",
            tenant_rows(&|q| q.admitted),
        )?;
        counter(
            &mut enc,
            "steward_tenant_admissions_refused",
            "Admissions refused (quota exhausted) per tenant and quota.",
            tenant_rows(&|q| q.refused),
        )?;
        counter(
            &mut enc,
            "steward_auth_failures",
            "Failed authentications per credential (admin token, tenant tokens).",
            self.doors
                .auth
                .iter()
                .map(|(c, failed, _, _)| (label("credential", *c), *failed))
                .collect(),
        )?;
        counter(
            &mut enc,
            "steward_auth_throttled",
            "Requests refused at once because their IP failed to authenticate too often.",
            self.doors.auth.iter().map(|(c, _, n, _)| (label("credential", *c), *n)).collect(),
        )?;
        gauge(
            &mut enc,
            "steward_auth_failing_ips",
            "Client IPs with failed authentications in their current window.",
            self.doors
                .auth
                .iter()
                .map(|(c, _, _, n)| (label("credential", *c), *n as i64))
                .collect(),
        )?;
        gauge(
            &mut enc,
            "steward_auth_unknown_tokens_cached",
            "Unknown token ids in the negative cache (each costs one store query per TTL).",
            vec![(Labels::new(), self.doors.unknown_tokens_cached as i64)],
        )?;
        counter(
            &mut enc,
            "steward_grpc_connections_refused",
            "gRPC connections closed at accept: the client IP held [grpc] max_connections_per_ip.",
            self.doors.grpc_refused.iter().map(|(l, n)| (label("listener", *l), *n)).collect(),
        )?;
        if let Some([ok, refused, timed_out, failed]) = self.doors.tls {
            counter(
                &mut enc,
                "steward_tls_reloads",
                "Certificate reloads by result ([tls] reload_interval; refused = kept the old one).",
                vec![(label("result", "ok"), ok), (label("result", "refused"), refused)],
            )?;
            counter(
                &mut enc,
                "steward_tls_handshakes_failed",
                "gRPC TLS handshakes that failed, by reason (timeout = [tls] handshake_timeout).",
                vec![(label("reason", "timeout"), timed_out), (label("reason", "error"), failed)],
            )?;
        }
        gauge(
            &mut enc,
            "steward_process_resident_memory_bytes",
            "Resident set size.",
            vec![(Labels::new(), rss_bytes() as i64)],
        )?;
        gauge(
            &mut enc,
            "steward_process_open_fds",
            "Open file descriptors.",
            vec![(Labels::new(), open_fds() as i64)],
        )?;
        encode_sockets(&mut enc, &self.sockets)?;
        encode_messaging(&mut enc, &self.messaging)?;
        streams::encode_streams(&mut enc, &self.streams)?;
        rtc::encode_rtc(&mut enc, &self.rtc)?;
        encode_browsers(&mut enc, &self.browsers)
    }
}

fn one<N>(v: N) -> Vec<(Labels, N)> {
    vec![(Labels::new(), v)]
}

fn encode_messaging(
    enc: &mut DescriptorEncoder<'_>,
    m: &MessagingMetrics,
) -> Result<(), std::fmt::Error> {
    let s = &m.stats;
    gauge(enc, "steward_messaging_producers", "Live producers.", one(m.producers as i64))?;
    gauge(
        enc,
        "steward_messaging_consumers",
        "Live consumers (receive streams).",
        one(m.consumers as i64),
    )?;
    counter(
        enc,
        "steward_messaging_sent",
        "Messages of SendMessage, per result.",
        [
            ("ok", s.sent_ok),
            ("duplicate", s.sent_duplicate),
            ("retry_later", s.sent_retry_later),
            ("quota_exceeded", s.sent_quota_exceeded),
            ("unavailable", s.sent_unavailable),
            ("invalid_argument", s.sent_invalid),
        ]
        .into_iter()
        .map(|(r, n)| (label("result", r), n))
        .collect(),
    )?;
    counter(
        enc,
        "steward_messaging_deliveries",
        "Deliveries handed to streams.",
        one(s.deliveries),
    )?;
    counter(
        enc,
        "steward_messaging_redeliveries",
        "Deliveries with attempt > 1.",
        one(s.redeliveries),
    )?;
    counter(enc, "steward_messaging_acks", "Deliveries acked.", one(s.acks))?;
    counter(enc, "steward_messaging_nacks", "Deliveries nacked by clients.", one(s.nacks))?;
    counter(
        enc,
        "steward_messaging_dead_lettered",
        "Messages moved to a dead-letter topic after their last attempt.",
        one(s.dead_lettered),
    )?;
    gauge(
        enc,
        "steward_messaging_leases_in_flight",
        "Deliveries held unacked by live consumers.",
        one(s.leases_in_flight),
    )?;
    counter(
        enc,
        "steward_messaging_returned",
        "Unacked deliveries returned to the broker because their stream ended or stalled.",
        one(s.returned),
    )?;
    counter(
        enc,
        "steward_messaging_channel_full_events",
        "Writes to a stream stalled past write_stall_timeout; their messages went back to the broker.",
        one(s.channel_full_events),
    )?;
    counter(
        enc,
        "steward_messaging_producer_leak_detections",
        "Producers stopped by the idle sweep.",
        one(s.producer_leak_detections),
    )?;
    counter(
        enc,
        "steward_messaging_consumer_leak_detections",
        "Consumers found alive without a stream (must stay 0).",
        one(s.consumer_leak_detections),
    )
}

fn encode_sockets(
    enc: &mut DescriptorEncoder<'_>,
    m: &SocketMetrics,
) -> Result<(), std::fmt::Error> {
    let s = &m.sockets;
    counter(enc, "steward_socket_accepted", "WebSocket upgrades accepted.", one(s.accepted))?;
    counter(
        enc,
        "steward_socket_rejected",
        "WebSocket upgrades refused, per reason.",
        s.rejected.iter().map(|(r, n)| (label("reason", r.as_str()), *n)).collect(),
    )?;
    counter(
        enc,
        "steward_socket_closes",
        "Sockets closed, per close code (1006: the connection vanished without a Close frame).",
        s.closes.iter().map(|(c, n)| (label("code", c.as_u16().to_string()), *n)).collect(),
    )?;
    let slow = s
        .closes
        .iter()
        .find(|(c, _)| *c == steward_socket::socket::CloseCode::SlowConsumer)
        .map_or(0, |(_, n)| *n);
    counter(enc, "steward_socket_slow_consumer", "Sockets closed 4008 slow consumer.", one(slow))?;
    counter(enc, "steward_socket_messages_in", "Client messages received.", one(s.messages_in))?;
    counter(enc, "steward_socket_bytes_in", "Bytes of client messages received.", one(s.bytes_in))?;
    counter(enc, "steward_socket_messages_out", "Frames written to clients.", one(s.messages_out))?;
    counter(
        enc,
        "steward_socket_bytes_out",
        "Bytes of frames written to clients.",
        one(s.bytes_out),
    )?;
    counter(
        enc,
        "steward_socket_rate_limited",
        "Client events refused by a socket's token bucket.",
        one(s.rate_limited),
    )?;
    counter(
        enc,
        "steward_socket_remediated",
        "Inactive sockets closed by the memory monitor's remediation.",
        one(s.remediated),
    )?;
    gauge(
        enc,
        "steward_socket_queue_depth",
        "Frames waiting in outbound queues.",
        one(s.queue_depth as i64),
    )?;
    gauge(
        enc,
        "steward_socket_queue_bytes",
        "Bytes waiting in outbound queues.",
        one(s.queue_bytes as i64),
    )?;
    gauge(
        enc,
        "steward_socket_tracked_ips",
        "Client IPs holding a socket.",
        one(m.tracked_ips as i64),
    )?;
    gauge(
        enc,
        "steward_socket_inactive",
        "Sockets without an application message for socket.monitor.inactive_after (last sample).",
        one(m.monitor.inactive as i64),
    )?;
    gauge(
        enc,
        "steward_socket_monitor_alarm",
        "1 while a memory monitor alarm is raised.",
        Alarm::ALL
            .iter()
            .map(|a| (label("alarm", a.as_str()), i64::from(m.monitor.alarms.contains(a))))
            .collect(),
    )?;
    let j = &m.jobs;
    gauge(
        enc,
        "steward_jobs",
        "Jobs held by the job hub: running, and all (live and finished-not-yet-evicted).",
        vec![(label("state", "running"), j.running as i64), (label("state", "all"), j.jobs as i64)],
    )?;
    gauge(
        enc,
        "steward_jobs_subscriptions",
        "Live job subscriptions.",
        one(j.subscriptions as i64),
    )?;
    counter(enc, "steward_jobs_created", "Jobs created.", one(j.created))?;
    counter(enc, "steward_jobs_updates", "Job updates applied.", one(j.updates))?;
    counter(enc, "steward_jobs_evicted", "Finished jobs evicted.", one(j.evicted))?;
    counter(
        enc,
        "steward_jobs_refused",
        "Job creations refused at the jobs.max_jobs cap.",
        one(j.refused_cap),
    )?;
    counter(
        enc,
        "steward_jobs_watcher_overflows",
        "Watchers dropped because their queue was full.",
        one(j.watcher_overflows),
    )?;
    counter(enc, "steward_jobs_expired", "Queued jobs failed at [jobs] queued_ttl.", one(j.expired))
}

/// Encodes one histogram family: the pool's own `Histogram` instances, one per label set.
fn histograms<'h>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels, &'h Histogram)>,
) -> Result<(), std::fmt::Error> {
    let mut m =
        enc.encode_descriptor(name, help, None, prometheus_client::metrics::MetricType::Histogram)?;
    for (labels, h) in rows {
        if labels.is_empty() {
            // as in `gauge`: no empty braces on a series without labels
            return h.encode(m);
        }
        h.encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn encode_browsers(
    enc: &mut DescriptorEncoder<'_>,
    m: &BrowserMetrics,
) -> Result<(), std::fmt::Error> {
    let s = &*m.stats;
    let get = BrowserStats::get;
    let states =
        [BrowserState::Launching, BrowserState::Ready, BrowserState::Draining, BrowserState::Down];
    gauge(
        enc,
        "steward_browser_browsers",
        "Live browsers per state and origin (local: Steward's Chromium; remote: a tenant's endpoint).",
        states
            .iter()
            .flat_map(|state| {
                ["local", "remote"].into_iter().map(move |origin| {
                    let n = m
                        .browsers
                        .iter()
                        .filter(|b| b.state == *state && b.origin == origin)
                        .count();
                    (two("state", state.as_str(), "origin", origin), n as i64)
                })
            })
            .collect(),
    )?;
    counter(
        enc,
        "steward_browser_launched",
        "Browsers that came up (spawned and connected, or connected to a remote endpoint).",
        one(get(&s.launched)),
    )?;
    counter(
        enc,
        "steward_browser_relaunched",
        "Browsers brought up again by their supervisor after a crash or disconnect.",
        one(get(&s.relaunched)),
    )?;
    counter(
        enc,
        "steward_browser_disconnects",
        "Unexpected browser disconnects (CDP connection lost or a missed heartbeat).",
        one(get(&s.disconnects)),
    )?;
    counter(
        enc,
        "steward_browser_launch_failures",
        "Browser launches or connects that failed.",
        one(get(&s.launch_failures)),
    )?;
    counter(
        enc,
        "steward_browser_recycled",
        "Browsers retired by recycling (recycle_after_contexts, recycle_after).",
        one(get(&s.recycled)),
    )?;
    gauge(enc, "steward_browser_sessions", "Live browser sessions.", one(m.sessions as i64))?;
    counter(
        enc,
        "steward_browser_sessions_created",
        "Browser sessions created.",
        one(get(&s.sessions_created)),
    )?;
    counter(
        enc,
        "steward_browser_sessions_closed",
        "Browser sessions closed, per reason.",
        CloseReason::ALL
            .iter()
            .zip(&s.sessions_closed)
            .map(|(r, n)| (label("reason", r.as_str()), get(n)))
            .collect(),
    )?;
    gauge(
        enc,
        "steward_browser_contexts",
        "Live browser contexts (sessions) per browser.",
        m.browsers.iter().map(|b| (label("browser", b.id.clone()), b.contexts as i64)).collect(),
    )?;
    gauge(
        enc,
        "steward_browser_pages",
        "Open pages of live sessions per browser.",
        m.browsers.iter().map(|b| (label("browser", b.id.clone()), b.pages as i64)).collect(),
    )?;
    gauge(
        enc,
        "steward_browser_queue_waiting",
        "CreateSession calls waiting for a slot, per tenant (tenants with at least one).",
        m.queued.iter().map(|(t, n)| (label("tenant", t.to_string()), i64::from(*n))).collect(),
    )?;
    histograms(
        enc,
        "steward_browser_queue_wait_seconds",
        "How long queued CreateSession calls waited, whatever the outcome.",
        [(Labels::new(), &s.queue_wait)],
    )?;
    counter(
        enc,
        "steward_browser_queue_refused",
        "Queued CreateSession calls refused: the tenant's queue was full, or queue_timeout passed.",
        vec![
            (label("reason", "queue_full"), get(&s.queue_full)),
            (label("reason", "queue_timeout"), get(&s.queue_timeouts)),
        ],
    )?;
    histograms(
        enc,
        "steward_browser_cdp_seconds",
        "Latency of DevTools protocol operations, per op.",
        Op::ALL.iter().zip(&s.cdp_latency).map(|(op, h)| (label("op", op.as_str()), h)),
    )?;
    counter(
        enc,
        "steward_browser_cdp_timeouts",
        "DevTools protocol operations that missed their deadline, per op.",
        Op::ALL
            .iter()
            .zip(&s.cdp_timeouts)
            .map(|(op, n)| (label("op", op.as_str()), get(n)))
            .collect(),
    )?;
    counter(
        enc,
        "steward_browser_reconciled",
        "Contexts and pages the reconciler disposed of because no live session owned them.",
        one(get(&s.reconciled)),
    )?;
    counter(
        enc,
        "steward_browser_urls_refused",
        "URLs refused by the URL policy.",
        one(get(&s.urls_refused)),
    )?;
    counter(
        enc,
        "steward_browser_egress_refused",
        "Connections of sessions' pages the egress proxies refused, per reason.",
        EgressRefusal::ALL
            .iter()
            .zip(&s.egress_refused)
            .map(|(r, n)| (label("reason", r.as_str()), get(n)))
            .collect(),
    )?;
    counter(
        enc,
        "steward_browser_egress_connections",
        "Connections the egress proxies made for sessions' pages.",
        one(get(&s.egress_connections)),
    )?;
    let local: Vec<&BrowserInfo> = m.browsers.iter().filter(|b| b.pid.is_some()).collect();
    gauge(
        enc,
        "steward_browser_chromium_processes",
        "Processes in each local browser's process group.",
        local.iter().map(|b| (label("browser", b.id.clone()), b.processes as i64)).collect(),
    )?;
    gauge(
        enc,
        "steward_browser_chromium_resident_memory_bytes",
        "Resident memory of each local browser's processes, bytes.",
        local
            .iter()
            .map(|b| {
                (label("browser", b.id.clone()), i64::try_from(b.rss_bytes).unwrap_or(i64::MAX))
            })
            .collect(),
    )
}

mod rtc;
mod streams;
#[cfg(test)]
mod tests;

pub use rtc::RtcMetrics;
pub use streams::StreamMetrics;
