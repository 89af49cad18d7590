//! `/metrics`: Prometheus text format, encoded by `prometheus-client` from the core's live
//! counters at scrape time (nothing is double-booked in a second metrics store).

use std::borrow::Cow;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry as PromRegistry;
use steward_core::Registry;
use steward_core::shutdown::PhaseReport;
use steward_core::watchdog::{WatchdogReport, open_fds, rss_bytes};
use steward_tenancy::{QuotaCount, QuotaStats};

/// Renders every Steward metric in the Prometheus text exposition format:
/// per kind `steward_resources_live`, `steward_resources_started_total`, `…_stopped_total`,
/// `…_restarted_total`, `…_failed_total`, `steward_restart_backoff_pending`; tracked handles
/// (`steward_tracked_handles{type}`, `steward_orphaned_handles`); shutdown phase durations;
/// the watchdog's `steward_watchdog_baseline{watched}`, `steward_watchdog_current{watched}` and
/// `steward_potential_leak{kind}`; `steward_process_resident_memory_bytes` and
/// `steward_process_open_fds`; per tenant `steward_tenant_resources_live{tenant,kind}` (from the
/// registry), `steward_tenant_quota_reserved{tenant,quota}`,
/// `steward_tenant_admissions_total{tenant,quota}` and
/// `steward_tenant_admissions_refused_total{tenant,quota}` (from the admission ledger).
#[must_use]
pub fn render_metrics(
    registry: &Registry,
    watchdog: &WatchdogReport,
    phases: &[PhaseReport],
    quotas: &[QuotaStats],
) -> String {
    let mut prom = PromRegistry::default();
    prom.register_collector(Box::new(Snapshot {
        registry: registry.clone(),
        watchdog: watchdog.clone(),
        phases: phases.to_vec(),
        quotas: quotas.to_vec(),
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
            tenant_rows(&|q| u64::from(q.reserved))
                .into_iter()
                .map(|(l, v)| (l, v as i64))
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
        Ok(())
    }
}
