//! The streams' series: `steward_stream_*`, emitted by the streams themselves as plain counters
//! (seed 003's bug — metrics from deferred callbacks — cannot happen: this reads atomics at
//! scrape time, and nothing is scheduled to update them).

use std::sync::Arc;

use prometheus_client::encoding::DescriptorEncoder;
use steward_streams::Streams;
use steward_streams::stats::StreamCounts;

use super::{Labels, counter, gauge, label, one};

/// The streams' readings, for [`render_metrics`](crate::render_metrics).
#[derive(Debug, Clone, Default)]
pub struct StreamMetrics {
    /// The counters.
    pub counts: StreamCounts,
    /// Live streams on this node.
    pub live: u64,
    /// Bytes held by all streams on this node.
    pub bytes: u64,
    /// Per tenant: bytes its streams hold, and its `stream_bytes` limit.
    pub tenants: Vec<(Arc<str>, u64, u64)>,
}

impl StreamMetrics {
    /// The readings of `streams` now.
    #[must_use]
    pub fn of(streams: &Streams) -> Self {
        let tenants = streams.tenant_bytes();
        Self {
            counts: streams.stats().read(),
            live: streams.live() as u64,
            bytes: tenants.iter().map(|(_, used, _)| used).sum(),
            tenants,
        }
    }

    /// Bytes `tenant`'s streams hold, if it has any.
    pub(crate) fn tenant_bytes(&self, tenant: &str) -> Option<u64> {
        self.tenants.iter().find(|(t, _, _)| &**t == tenant).map(|(_, used, _)| *used)
    }
}

/// One counter row per `(value, count)`, labelled `key="value"`.
fn by<const N: usize>(key: &'static str, rows: [(&'static str, u64); N]) -> Vec<(Labels, u64)> {
    rows.into_iter().map(|(value, n)| (label(key, value), n)).collect()
}

pub(super) fn encode_streams(
    enc: &mut DescriptorEncoder<'_>,
    m: &StreamMetrics,
) -> Result<(), std::fmt::Error> {
    let c = &m.counts;
    gauge(enc, "steward_stream_streams", "Live streams on this node.", one(m.live as i64))?;
    gauge(
        enc,
        "steward_stream_subscribers",
        "Live stream subscriptions (WebSocket and Watch).",
        one(c.subscribers as i64),
    )?;
    gauge(
        enc,
        "steward_stream_keys",
        "Keys with a latest value (memory engine).",
        one(c.keys as i64),
    )?;
    gauge(
        enc,
        "steward_stream_bytes",
        "Bytes streams hold in this node's memory (history, latest values, idempotency keys).",
        one(m.bytes as i64),
    )?;
    counter(
        enc,
        "steward_stream_publications",
        "Publishes, per result.",
        by(
            "result",
            [
                ("stored", c.publications),
                ("duplicate", c.duplicates),
                ("quota_exceeded", c.refused),
            ],
        ),
    )?;
    counter(
        enc,
        "steward_stream_latest_lookups",
        "Latest-value reads, per outcome (hit: a value was found; miss: the key had none).",
        by("outcome", [("hit", c.hits), ("miss", c.misses)]),
    )?;
    counter(
        enc,
        "steward_stream_recoveries",
        "Subscriptions that asked to recover from a position, per outcome.",
        by("outcome", [("recovered", c.recovered), ("failed", c.recovery_failed)]),
    )?;
    counter(
        enc,
        "steward_stream_expirations",
        "What expired: latest values at key_ttl, publications at history_ttl.",
        by("kind", [("key", c.expired_keys), ("publication", c.expired_publications)]),
    )?;
    counter(
        enc,
        "steward_stream_slow_subscribers",
        "Subscribers dropped because their queue was full.",
        one(c.overflows),
    )?;
    counter(
        enc,
        "steward_stream_live_feed_lost",
        "Interruptions of a shared engine's live feed (subscribers were told to recover).",
        one(c.live_lost),
    )?;
    counter(
        enc,
        "steward_stream_gap_fills",
        "Gaps in a shared engine's live feed filled from the history.",
        one(c.gap_fills),
    )?;
    counter(enc, "steward_stream_timer_fires", "Stream timers that ran.", one(c.timer_fires))
}
