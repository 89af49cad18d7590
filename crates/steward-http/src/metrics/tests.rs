//! `/metrics` rendering: the browser pool's families, encoded from the pool's own counters and
//! histograms at scrape time.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use steward_browser::stats::{BrowserInfo, BrowserState, BrowserStats, Op};
use steward_browser::{Browsers, CloseReason};
use steward_core::Registry;
use steward_core::watchdog::WatchdogReport;

use super::{
    BrowserMetrics, DoorMetrics, MessagingMetrics, SocketMetrics, StreamMetrics, render_metrics,
};

fn registry() -> Registry {
    let config = steward_config::Config::defaults();
    Registry::new(config.registry.clone(), &config.idle)
}

fn render(browsers: &BrowserMetrics) -> String {
    render_metrics(
        &registry(),
        &WatchdogReport::default(),
        &[],
        &[],
        &SocketMetrics::default(),
        &MessagingMetrics::default(),
        browsers,
        &DoorMetrics::default(),
        &StreamMetrics::default(),
        &crate::RtcMetrics::default(),
    )
}

/// The value of the sample named exactly `series` (name and labels as rendered).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, v) = l.rsplit_once(' ')?;
        (name == series).then(|| v.parse().ok())?
    })
}

/// A series without labels renders as `name value`, never with empty braces (issue 18: some
/// scrapers and humans read `name{}` as a parse error).
#[test]
fn label_less_series_render_without_empty_braces() {
    let text = render(&BrowserMetrics::default());
    let braces: Vec<&str> = text.lines().filter(|l| l.contains("{}")).collect();
    assert!(braces.is_empty(), "empty braces: {braces:#?}");
    assert_eq!(sample(&text, "steward_socket_accepted_total"), 0.0);
    assert!(value(&text, "steward_process_open_fds").is_some());
    assert!(text.lines().any(|l| l.starts_with("steward_browser_queue_wait_seconds_count ")));
}

fn sample(text: &str, series: &str) -> f64 {
    value(text, series).unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

fn browser(id: &str, origin: &'static str, state: BrowserState, pid: Option<u32>) -> BrowserInfo {
    BrowserInfo {
        id: id.to_owned(),
        origin,
        tenant: (origin == "remote").then(|| "acme".to_owned()),
        state,
        pid,
        endpoint: Some("ws://127.0.0.1:9222/devtools/browser/x".to_owned()),
        contexts: 3,
        pages: 4,
        contexts_created: 10,
        processes: 7,
        rss_bytes: 123_456,
        started_at: SystemTime::now(),
    }
}

#[test]
fn a_fresh_pool_renders_every_family_at_zero() {
    let config = steward_config::Config::defaults();
    let pool = Browsers::new(config.browser.clone(), registry());
    let text = render(&BrowserMetrics::of(&pool));
    for series in [
        "steward_browser_launched_total",
        "steward_browser_relaunched_total",
        "steward_browser_disconnects_total",
        "steward_browser_launch_failures_total",
        "steward_browser_recycled_total",
        "steward_browser_sessions",
        "steward_browser_sessions_created_total",
        "steward_browser_queue_wait_seconds_count",
        "steward_browser_reconciled_total",
        "steward_browser_urls_refused_total",
        r#"steward_browser_browsers{state="ready",origin="local"}"#,
        r#"steward_browser_queue_refused_total{reason="queue_full"}"#,
        r#"steward_browser_queue_refused_total{reason="queue_timeout"}"#,
    ] {
        assert_eq!(sample(&text, series), 0.0, "{series}");
    }
    for reason in CloseReason::ALL {
        let series =
            format!(r#"steward_browser_sessions_closed_total{{reason="{}"}}"#, reason.as_str());
        assert_eq!(sample(&text, &series), 0.0, "{series}");
    }
    for op in Op::ALL {
        let count = format!(r#"steward_browser_cdp_seconds_count{{op="{}"}}"#, op.as_str());
        let timeouts = format!(r#"steward_browser_cdp_timeouts_total{{op="{}"}}"#, op.as_str());
        assert_eq!(sample(&text, &count), 0.0, "{count}");
        assert_eq!(sample(&text, &timeouts), 0.0, "{timeouts}");
    }
    // no browser yet: no per-browser series
    assert!(!text.contains("steward_browser_contexts{"), "{text}");
    assert!(!text.contains("steward_browser_chromium_processes{"), "{text}");
    assert!(!text.contains("steward_browser_queue_waiting{"), "{text}");
}

#[test]
fn browser_metrics_encode_the_pools_own_counters_and_histograms_at_scrape_time() {
    let stats = Arc::new(BrowserStats::default());
    BrowserStats::inc(&stats.launched);
    BrowserStats::inc(&stats.launched);
    BrowserStats::inc(&stats.relaunched);
    BrowserStats::inc(&stats.disconnects);
    BrowserStats::inc(&stats.queue_timeouts);
    BrowserStats::inc(&stats.urls_refused);
    stats.closed(CloseReason::Client);
    stats.closed(CloseReason::BrowserUnavailable);
    stats.cdp(Op::Navigate, Duration::from_millis(300), false);
    stats.cdp(Op::Navigate, Duration::from_secs(20), true);
    stats.queue_wait.observe(0.5);
    let m = BrowserMetrics {
        stats: stats.clone(),
        browsers: vec![
            browser("00000000000000a1", "local", BrowserState::Ready, Some(4242)),
            browser("00000000000000b2", "remote", BrowserState::Launching, None),
        ],
        sessions: 2,
        queued: vec![(Arc::from("acme"), 3)],
    };
    let text = render(&m);
    assert_eq!(sample(&text, "steward_browser_launched_total"), 2.0);
    assert_eq!(sample(&text, "steward_browser_relaunched_total"), 1.0);
    assert_eq!(sample(&text, "steward_browser_disconnects_total"), 1.0);
    assert_eq!(sample(&text, "steward_browser_urls_refused_total"), 1.0);
    assert_eq!(sample(&text, "steward_browser_sessions"), 2.0);
    assert_eq!(sample(&text, r#"steward_browser_sessions_closed_total{reason="client"}"#), 1.0);
    assert_eq!(
        sample(&text, r#"steward_browser_sessions_closed_total{reason="browser_unavailable"}"#),
        1.0
    );
    assert_eq!(
        sample(&text, r#"steward_browser_queue_refused_total{reason="queue_timeout"}"#),
        1.0
    );
    assert_eq!(sample(&text, r#"steward_browser_queue_waiting{tenant="acme"}"#), 3.0);
    assert_eq!(sample(&text, "steward_browser_queue_wait_seconds_count"), 1.0);
    assert_eq!(sample(&text, "steward_browser_queue_wait_seconds_sum"), 0.5);
    // the histogram's buckets, as prometheus-client encodes them (cumulative)
    assert_eq!(sample(&text, r#"steward_browser_cdp_seconds_count{op="navigate"}"#), 2.0);
    assert_eq!(
        sample(&text, r#"steward_browser_cdp_seconds_bucket{le="0.25",op="navigate"}"#),
        0.0
    );
    assert_eq!(sample(&text, r#"steward_browser_cdp_seconds_bucket{le="0.5",op="navigate"}"#), 1.0);
    assert_eq!(
        sample(&text, r#"steward_browser_cdp_seconds_bucket{le="+Inf",op="navigate"}"#),
        2.0
    );
    assert_eq!(sample(&text, r#"steward_browser_cdp_timeouts_total{op="navigate"}"#), 1.0);
    assert_eq!(sample(&text, r#"steward_browser_cdp_seconds_count{op="screenshot"}"#), 0.0);
    assert_eq!(sample(&text, r#"steward_browser_browsers{state="ready",origin="local"}"#), 1.0);
    assert_eq!(
        sample(&text, r#"steward_browser_browsers{state="launching",origin="remote"}"#),
        1.0
    );
    assert_eq!(sample(&text, r#"steward_browser_browsers{state="ready",origin="remote"}"#), 0.0);
    for id in ["00000000000000a1", "00000000000000b2"] {
        assert_eq!(sample(&text, &format!(r#"steward_browser_contexts{{browser="{id}"}}"#)), 3.0);
        assert_eq!(sample(&text, &format!(r#"steward_browser_pages{{browser="{id}"}}"#)), 4.0);
    }
    // processes and memory for the local browser only (a remote one is not ours to measure)
    assert_eq!(
        sample(&text, r#"steward_browser_chromium_processes{browser="00000000000000a1"}"#),
        7.0
    );
    assert_eq!(
        sample(
            &text,
            r#"steward_browser_chromium_resident_memory_bytes{browser="00000000000000a1"}"#
        ),
        123_456.0
    );
    assert!(!text.contains(r#"steward_browser_chromium_processes{browser="00000000000000b2"}"#));

    // the same instances, not a copy: what the pool records after the readings were taken shows
    // in the next scrape
    stats.cdp(Op::Navigate, Duration::from_millis(1), false);
    BrowserStats::inc(&stats.launched);
    let text = render(&m);
    assert_eq!(sample(&text, r#"steward_browser_cdp_seconds_count{op="navigate"}"#), 3.0);
    assert_eq!(sample(&text, "steward_browser_launched_total"), 3.0);
}
