//! Load benchmark of the WebSocket front door (`GET /v1/ws`) on the real `steward` binary, side
//! by side with socket.io and a plain actix-web + actix-ws server driven by the same client.
//!
//! Starts each server in turn as a child process on loopback ports chosen by the OS and drives
//! it with tokio-tungstenite clients on the same machine:
//!
//! - Steward: the `steward` of the profile being built (release under `cargo bench`), once per
//!   value of `BENCH_ARBITERS` (a comma list, default `1,2`) with
//!   `STEWARD__SOCKET__ARBITERS=<value>`; `BENCH_ARBITERS=default` runs it once without it.
//! - socket.io 4 on Node (`benches/socketio/server.js`; the bench runs
//!   `npm ci --no-audit --no-fund` in that directory, whose `node_modules` is git-ignored) when
//!   `node` and `npm` are on PATH; otherwise, or with `BENCH_SOCKETIO=0`, it prints why
//!   socket.io is skipped and goes on.
//! - plain actix-web + actix-ws with one tokio task per socket (`sockets/plain.rs`: this
//!   executable re-run with `BENCH_ROLE=plain-ws`), serving the part of Steward's protocol the
//!   client uses.
//!
//! The client (`sockets/client.rs`) is one code path for all three: open a socket, authenticate
//! (Steward and plain: the bearer in the upgrade's `Authorization` header, then `ping` → `pong`;
//! socket.io: its open packet, then CONNECT with the token in `auth`), subscribe to one job and
//! wait for the acknowledgement; only the wire format differs. For each server it measures
//! (`sockets/measure.rs`):
//!
//! 1. `rss_per_socket`: the server's resident memory per idle authenticated socket subscribed
//!    to one job, at N sockets (`BENCH_SOCKETS`, default 10000): `(RSS after − RSS before) / N`
//!    from `/proc/<pid>/statm` of the server process (for socket.io, the node process), read
//!    before the first socket and once all N are acknowledged (on Steward, also once `/metrics`
//!    shows N live sockets). Targets for Steward: ≤ 10 KiB, and ≤ 0.66× socket.io.
//! 2. `fanout`: `BENCH_UPDATES` (default 20) updates of the job one at a time, each once every
//!    socket has the previous one (Steward: `UpdateJob` over gRPC; the others:
//!    `POST /bench/update`). Latency from just before the call to a socket's receipt of the
//!    update: p50/p99/max over the N×K deliveries, and per update the time until the last socket
//!    had it. Target for Steward p99 ≤ 50 ms, throughput scaling with arbiters.
//! 3. `cycles`: connect + authenticate + subscribe + close cycles per second, `BENCH_CYCLES`
//!    (default 2000) cycles `BENCH_CONCURRENCY` (default 50) at a time; then the live sockets
//!    left (Steward: 0 expected) and the server's RSS. Target for Steward ≥ 15 000 cycles/s.
//!
//! Steward is stopped with SIGTERM (its exit status is reported); the other two are killed, and
//! every child is killed on every path out of the bench, panics included. Then a table of the
//! headline figures per server, the ratios Steward/socket.io and Steward/plain, the Steward runs
//! side by side, and all figures as one JSON line (`{"bench":"sockets",…}`: the first Steward
//! run's figures at the top level as before, each server's under `servers`, the ratios under
//! `ratios`). It asserts only that the setup worked (each server started, every socket opened
//! and was subscribed); everything else is reported.
//!
//! Run with `cargo bench -p steward-server --bench sockets`; a quick run:
//! `BENCH_SOCKETS=1000 BENCH_CYCLES=200 cargo bench -p steward-server --bench sockets`.
//! Without `--bench` among its arguments (`cargo test --benches`) it is a smoke run of 100
//! sockets, 3 updates and 50 cycles unless the variables say otherwise. The bench and each
//! server hold N descriptors at once: `ulimit -n` must be above N plus a few hundred.
#![allow(missing_docs, clippy::print_stdout, clippy::print_stderr)]

mod support;

#[path = "sockets/client.rs"]
mod client;
#[path = "sockets/measure.rs"]
mod measure;
#[path = "sockets/plain.rs"]
mod plain;
#[path = "sockets/servers.rs"]
mod servers;

use serde_json::{Map, Value, json};

use crate::measure::{Figures, OPEN_CONCURRENCY, measure};
use crate::servers::Target;
use crate::support::round2;

/// The run's parameters.
#[derive(Debug, Clone)]
struct Params {
    /// Idle sockets held open (N).
    sockets: usize,
    /// Updates fanned out to them (K).
    updates: u32,
    /// Connect+subscribe+close cycles (M).
    cycles: usize,
    /// Cycles in flight (C).
    concurrency: usize,
    /// One Steward run per entry: `STEWARD__SOCKET__ARBITERS`, or `None` to leave it unset.
    arbiters: Vec<Option<u32>>,
    /// `--bench` was not passed: smaller defaults.
    smoke: bool,
}

impl Params {
    fn from_env() -> Self {
        let smoke = !std::env::args().any(|a| a == "--bench");
        let var = |name: &str, bench: usize, smoke_default: usize| -> usize {
            match std::env::var(name) {
                Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("{name}={v} is not a number")),
                Err(_) if smoke => smoke_default,
                Err(_) => bench,
            }
        };
        let arbiters = std::env::var("BENCH_ARBITERS").unwrap_or_else(|_| "1,2".to_owned());
        let arbiters = if arbiters.trim() == "default" {
            vec![None]
        } else {
            let parse = |v: &str| {
                let a = v.trim().parse().unwrap_or_else(|_| {
                    panic!("BENCH_ARBITERS={arbiters}: {v:?} is not a number (or say `default`)")
                });
                Some(a)
            };
            arbiters.split(',').map(parse).collect()
        };
        Self {
            sockets: var("BENCH_SOCKETS", 10_000, 100).max(1),
            updates: u32::try_from(var("BENCH_UPDATES", 20, 3).clamp(1, 100)).unwrap_or(20),
            cycles: var("BENCH_CYCLES", 2000, 50).max(1),
            concurrency: var("BENCH_CONCURRENCY", 50, 50).max(1),
            arbiters,
            smoke,
        }
    }
}

fn main() {
    if std::env::var("BENCH_ROLE").is_ok_and(|r| r == plain::ROLE) {
        plain::serve();
        return;
    }
    // `cargo bench` passes `--bench` (and a filter, when given); other arguments are ignored
    let params = Params::from_env();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime builds");
    rt.block_on(run(params));
}

/// One server's run.
struct Run {
    name: String,
    key: String,
    /// `Some` for a Steward run: its `STEWARD__SOCKET__ARBITERS` (`None` inside: left unset).
    steward: Option<Option<u32>>,
    figures: Figures,
}

async fn run(p: Params) {
    println!(
        "sockets: N={} sockets, K={} updates, M={} cycles, C={} concurrent cycles, \
         {OPEN_CONCURRENCY} concurrent opens, {} cores, clients on the same machine{}",
        p.sockets,
        p.updates,
        p.cycles,
        p.concurrency,
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        if p.smoke { " (smoke run: no --bench argument)" } else { "" },
    );
    let socketio = servers::prepare_socketio();
    if let Err(why) = &socketio {
        println!("sockets/socket.io: skipped: {why}");
    }
    let mut runs = Vec::new();
    for &arbiters in &p.arbiters {
        if let Some(a) = arbiters {
            println!(
                "sockets: steward with STEWARD__SOCKET__ARBITERS={a} (a Steward without \
                 `[socket] arbiters` refuses it: BENCH_ARBITERS=default runs without)"
            );
        }
        let target = Target::steward(arbiters, p.sockets).await;
        runs.push(run_one(target, &p, Some(arbiters)).await);
    }
    if let Ok(label) = &socketio {
        let target = Target::socketio(&servers::socketio_dir(), label.clone()).await;
        runs.push(run_one(target, &p, None).await);
    }
    runs.push(run_one(Target::plain().await, &p, None).await);
    report(&p, &runs, socketio.as_ref().err().map(String::as_str));
}

/// Measures `target`, then stops it.
async fn run_one(mut target: Target, p: &Params, steward: Option<Option<u32>>) -> Run {
    let mut figures = measure(&mut target, p).await;
    let (name, key) = (target.name.clone(), target.key.clone());
    let (shutdown, stopped) = target.stop().await;
    println!("sockets/{name}/shutdown: {shutdown}");
    if let Value::Object(stop) = stopped {
        figures.json.extend(stop);
    }
    figures.json.insert("name".to_owned(), json!(name));
    Run { name, key, steward, figures }
}

/// `a / b` to two decimals; `None` when `b` is 0.
fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| round2(a / b))
}

fn times(r: Option<f64>) -> String {
    r.map_or_else(|| "n/a".to_owned(), |r| format!("{r}×"))
}

/// The table, the ratios, the Steward runs side by side, and the JSON line.
fn report(p: &Params, runs: &[Run], socketio_skipped: Option<&str>) {
    println!(
        "sockets/compare: N={} idle subscribed sockets, K={} updates, M={} cycles \
         (targets: steward <= 10 KiB/socket and <= 0.66× socket.io; fanout p99 <= 50 ms; cycles >= 15000/s)",
        p.sockets, p.updates, p.cycles
    );
    println!(
        "  {:<36} {:>10} {:>11} {:>11} {:>11} {:>9} {:>10}",
        "server", "KiB/socket", "fanout p50", "fanout p99", "last p99", "cycles/s", "cycle p99"
    );
    for r in runs {
        let f = &r.figures;
        println!(
            "  {:<36} {:>10} {:>8} ms {:>8} ms {:>8} ms {:>9} {:>7} ms",
            r.name,
            f.kib_per_socket,
            f.fanout_p50,
            f.fanout_p99,
            f.last_p99,
            f.cycles_per_s,
            f.cycle_p99
        );
    }
    let stewards: Vec<&Run> = runs.iter().filter(|r| r.steward.is_some()).collect();
    let others: Vec<&Run> = runs.iter().filter(|r| r.steward.is_none()).collect();
    let mut ratios = Map::new();
    for s in &stewards {
        let mut against = Map::new();
        for o in &others {
            let (a, b) = (&s.figures, &o.figures);
            let kib = ratio(a.kib_per_socket, b.kib_per_socket);
            let fanout = ratio(a.fanout_p99, b.fanout_p99);
            let cycles = ratio(a.cycles_per_s, b.cycles_per_s);
            let target = if o.key == "socketio" { " (target <= 0.66×)" } else { "" };
            println!(
                "sockets/ratio: {} / {}: KiB/socket {}{target}, fanout p99 {}, cycles/s {}",
                s.name,
                o.name,
                times(kib),
                times(fanout),
                times(cycles)
            );
            against.insert(
                o.key.clone(),
                json!({"kib_per_socket": kib, "fanout_p99": fanout, "cycles_per_s": cycles}),
            );
        }
        ratios.insert(s.key.clone(), Value::Object(against));
    }
    if stewards.len() > 1 {
        let side = |f: fn(&Figures) -> f64| {
            stewards.iter().map(|s| f(&s.figures).to_string()).collect::<Vec<_>>().join(" | ")
        };
        let arbiters: Vec<String> = stewards
            .iter()
            .map(|s| s.steward.flatten().map_or_else(|| "default".to_owned(), |a| a.to_string()))
            .collect();
        println!(
            "sockets/arbiters: {}: KiB/socket {}; fanout p50 {} ms; fanout p99 {} ms; last p99 \
             {} ms; cycles/s {}; cycle p99 {} ms",
            arbiters.join(" | "),
            side(|f| f.kib_per_socket),
            side(|f| f.fanout_p50),
            side(|f| f.fanout_p99),
            side(|f| f.last_p99),
            side(|f| f.cycles_per_s),
            side(|f| f.cycle_p99),
        );
    }

    let mut summary = Map::new();
    summary.insert("bench".to_owned(), json!("sockets"));
    summary.insert("sockets".to_owned(), json!(p.sockets));
    summary.insert("updates".to_owned(), json!(p.updates));
    summary.insert("cycles".to_owned(), json!(p.cycles));
    summary.insert("concurrency".to_owned(), json!(p.concurrency));
    // the first Steward run's figures at the top level, as before the comparison existed
    if let Some(first) = stewards.first() {
        summary.extend(first.figures.json.clone());
    }
    let servers: Map<String, Value> =
        runs.iter().map(|r| (r.key.clone(), Value::Object(r.figures.json.clone()))).collect();
    summary.insert("arbiters".to_owned(), json!(p.arbiters));
    summary.insert("servers".to_owned(), Value::Object(servers));
    summary.insert("ratios".to_owned(), Value::Object(ratios));
    summary.insert("socketio_skipped".to_owned(), json!(socketio_skipped));
    summary.insert("smoke".to_owned(), json!(p.smoke));
    println!("{}", Value::Object(summary));
}
