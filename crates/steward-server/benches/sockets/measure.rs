//! The three measurements, the same for every server ([`measure`]): memory per idle subscribed
//! socket, fan-out of one update to all of them, and connect+auth+subscribe+close cycles. Each
//! figure is printed as a `sockets/<server>/<figure>:` line and kept in [`Figures`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::Params;
use crate::client::{Shared, cycle, hold, open_subscribed};
use crate::servers::Target;
use crate::support::{mib, round2, spread};

/// Sockets opening (connect + auth + subscribe) at once while the N idle sockets are opened.
pub(crate) const OPEN_CONCURRENCY: usize = 200;
/// Deadline of a step over all N sockets (every socket open, closed, counted).
const ALL: Duration = Duration::from_secs(120);

/// The headline figures of one server, and all of them for the JSON line.
#[derive(Debug, Clone)]
pub(crate) struct Figures {
    /// RSS growth per idle subscribed socket, KiB.
    pub(crate) kib_per_socket: f64,
    /// Fan-out latency over every delivery, ms.
    pub(crate) fanout_p50: f64,
    pub(crate) fanout_p99: f64,
    /// Per update, until the last socket had it: p99, ms.
    pub(crate) last_p99: f64,
    /// Connect+auth+subscribe+close cycles per second.
    pub(crate) cycles_per_s: f64,
    /// One cycle's p99, ms.
    pub(crate) cycle_p99: f64,
    /// Every figure, under the JSON line's names.
    pub(crate) json: Map<String, Value>,
}

/// Runs the three measurements against `target`; asserts only that every socket opened and was
/// subscribed (and, on Steward, that `/metrics` counted them).
#[allow(clippy::too_many_lines)] // one linear script: three measurements
pub(crate) async fn measure(target: &mut Target, p: &Params) -> Figures {
    let n = p.sockets;
    let name = target.name.clone();
    let endpoint = Arc::new(target.endpoint.clone());

    // 1. RSS per idle subscribed socket
    let rss_before = target.rss();
    let (close_tx, close_rx) = watch::channel(false);
    let shared = Arc::new(Shared::new(endpoint.protocol, n, p.updates));
    let mut held = JoinSet::new();
    let started = Instant::now();
    {
        let mut opening = futures_util::stream::iter(0..n)
            .map(|_| open_subscribed(&endpoint))
            .buffer_unordered(OPEN_CONCURRENCY);
        while let Some(opened) = opening.next().await {
            let ws = opened.unwrap_or_else(|e| {
                panic!("{name}: socket {} of {n} did not open and subscribe: {e}", held.len() + 1)
            });
            held.spawn(hold(ws, close_rx.clone(), shared.clone()));
        }
    }
    let open_time = started.elapsed();
    let live = target.until_live(n as u64, ALL).await;
    assert!(
        live.is_none_or(|l| l == n as u64),
        "{name}: /metrics shows {live:?} live sockets, not {n}"
    );
    let rss_held = target.rss();
    let kib_per_socket = round2(rss_held.saturating_sub(rss_before) as f64 / n as f64 / 1024.0);
    println!(
        "sockets/{name}/open: {n} authenticated subscribed sockets in {:.2} s ({:.0}/s)",
        open_time.as_secs_f64(),
        n as f64 / open_time.as_secs_f64()
    );
    println!(
        "sockets/{name}/rss_per_socket: {kib_per_socket} KiB per idle subscribed socket (RSS {} \
         MiB before, {} MiB at {n} sockets, pid {})",
        mib(rss_before),
        mib(rss_held),
        target.pid(),
    );

    // 2. fan-out latency: one update at a time, each once every socket has the previous one
    let mut sent_at = Vec::with_capacity(p.updates as usize);
    let mut calls = Vec::with_capacity(p.updates as usize);
    let mut incomplete = 0;
    for i in 1..=p.updates {
        let t0 = Instant::now();
        target.publish(i).await;
        calls.push(t0.elapsed());
        sent_at.push(t0);
        let count = &shared.received[i as usize - 1];
        let deadline = t0 + crate::client::STEP;
        while count.load(Ordering::Acquire) < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, shared.all_in.notified()).await.is_err() {
                incomplete += 1;
                break;
            }
        }
    }

    // close the held sockets: each sends a Close and ends with the server's
    let started = Instant::now();
    close_tx.send(true).expect("held sockets listen");
    let collected = crate::support::collect_deliveries(&mut held, &sent_at, ALL).await;
    let (mut deliveries, mut last) = collected
        .unwrap_or_else(|left| panic!("{name}: {left} held sockets did not end within {ALL:?}"));
    let close_time = started.elapsed();
    let after_close = target.until_live(0, ALL).await;
    let rss_closed = target.rss();
    let expected = n * p.updates as usize;
    let (d50, d99, dmax) = spread(&mut deliveries);
    let (l50, l99, lmax) = spread(&mut last);
    let (c50, c99, cmax) = spread(&mut calls);
    let held_failures = shared.failures.load(Ordering::Acquire);
    println!(
        "sockets/{name}/fanout_latency: p50 {d50} ms, p99 {d99} ms, max {dmax} ms over {} of \
         {expected} deliveries",
        deliveries.len()
    );
    println!(
        "sockets/{name}/fanout_last_socket: p50 {l50} ms, p99 {l99} ms, max {lmax} ms per update \
         until the last of {n} sockets had it ({incomplete} of {} updates incomplete after 30 s)",
        p.updates
    );
    println!("sockets/{name}/update_call: p50 {c50} ms, p99 {c99} ms, max {cmax} ms");
    println!(
        "sockets/{name}/held_close: {n} sockets closed in {:.2} s; live afterwards {}; RSS {} \
         MiB; failures {held_failures}{}",
        close_time.as_secs_f64(),
        after_close.map_or_else(|| "not counted".to_owned(), |v| v.to_string()),
        mib(rss_closed),
        shared.first_failure(),
    );

    // 3. connect + auth + subscribe + close cycles
    let started = Instant::now();
    let mut cycle_times = Vec::with_capacity(p.cycles);
    let mut cycle_failures = 0usize;
    let mut first_cycle_failure = None;
    {
        let mut cycles = futures_util::stream::iter(0..p.cycles)
            .map(|_| cycle(&endpoint))
            .buffer_unordered(p.concurrency);
        while let Some(done) = cycles.next().await {
            match done {
                Ok(d) => cycle_times.push(d),
                Err(e) => {
                    cycle_failures += 1;
                    first_cycle_failure.get_or_insert(e);
                }
            }
        }
    }
    let cycles_time = started.elapsed();
    let cycles_per_s = (cycle_times.len() as f64 / cycles_time.as_secs_f64()).round();
    let (y50, y99, ymax) = spread(&mut cycle_times);
    let live_after = target.until_live(0, ALL).await;
    let rss_end = target.rss();
    println!(
        "sockets/{name}/cycles: {cycles_per_s} connect+auth+subscribe+close cycles/s ({} done, \
         {cycle_failures} failed{} in {:.2} s; cycle p50 {y50} ms, p99 {y99} ms, max {ymax} ms)",
        cycle_times.len(),
        first_cycle_failure.as_ref().map(|f| format!(", first: {f}")).unwrap_or_default(),
        cycles_time.as_secs_f64(),
    );
    println!(
        "sockets/{name}/after_cycles: live sockets {}; RSS {} MiB",
        live_after.map_or_else(|| "not counted".to_owned(), |v| v.to_string()),
        mib(rss_end)
    );

    let json = json!({
        "open_s": round2(open_time.as_secs_f64()),
        "rss_before_mib": mib(rss_before),
        "rss_held_mib": mib(rss_held),
        "rss_per_socket_kib": kib_per_socket,
        "fanout_p50_ms": d50,
        "fanout_p99_ms": d99,
        "fanout_max_ms": dmax,
        "fanout_deliveries": deliveries.len(),
        "fanout_expected": expected,
        "fanout_last_p50_ms": l50,
        "fanout_last_p99_ms": l99,
        "fanout_last_max_ms": lmax,
        "update_call_p99_ms": c99,
        "held_failures": held_failures,
        "rss_after_close_mib": mib(rss_closed),
        "cycles_per_s": cycles_per_s,
        "cycles_failed": cycle_failures,
        "cycle_p99_ms": y99,
        "live_after_cycles": live_after,
        "rss_end_mib": mib(rss_end),
    });
    Figures {
        kib_per_socket,
        fanout_p50: d50,
        fanout_p99: d99,
        last_p99: l99,
        cycles_per_s,
        cycle_p99: y99,
        json: if let Value::Object(all) = json { all } else { Map::new() },
    }
}
