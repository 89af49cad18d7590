//! Plumbing shared by the benches that load the real `steward` binary: start it on loopback
//! port-0 listeners with a fresh SQLite store and read its JSON log, create the bench tenant and
//! a token through the admin API, stop it with SIGTERM; and the figures' small helpers
//! (percentiles, MiB, RSS, load average, CPU clocks), and a gRPC channel carrying the tenant's
//! token ([`connect`]). Each bench includes it with `mod support;`, so an item
//! one of them does not use is not dead code.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write as _};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, SysconfVar, sysconf};
use serde_json::{Value, json};

/// The admin bearer token of the benchmarked servers.
pub(crate) const ADMIN_TOKEN: &str = "bench-admin-token-0123456789abcdef";
/// The tenant the bench's resources belong to.
pub(crate) const TENANT: &str = "bench";
/// Deadline of the server's start-up.
const START: Duration = Duration::from_secs(30);
/// Log lines of the server kept for a failure message.
const LOG_TAIL: usize = 40;
/// Distinct WARN/ERROR messages kept, with their counts.
const WARNED: usize = 10;

/// What is kept of the server's JSON log: the lines the setup needs, and the last few.
#[derive(Default)]
struct Log {
    /// `listener bound` and `steward ready` lines.
    marks: Vec<Value>,
    /// The last [`LOG_TAIL`] lines.
    tail: VecDeque<String>,
    /// Lines at WARN or ERROR.
    warnings: u64,
    /// The distinct messages of those lines, the other fields of the first, and their counts.
    warned: Vec<(String, String, u64)>,
}

/// A running `steward serve` (the binary of the profile being built: release under
/// `cargo bench`) on loopback port-0 listeners with a fresh SQLite store.
pub(crate) struct Server {
    child: Child,
    log: Arc<Mutex<Log>>,
    /// `http://<admin addr>`.
    pub(crate) admin: String,
    /// `<public addr>` (host:port).
    pub(crate) public: String,
    /// `http://<grpc addr>`.
    pub(crate) grpc: String,
    http: reqwest::Client,
    _data: tempfile::TempDir,
}

impl Server {
    /// Starts a server with `env` on top of the bench's own settings; returns once it is ready.
    /// With `log_copy`, every log line also goes to that file.
    pub(crate) async fn start(env: &[(&str, String)], log_copy: Option<String>) -> Self {
        let data = tempfile::tempdir().expect("temporary data directory");
        let mut command = Command::new(env!("CARGO_BIN_EXE_steward"));
        command
            .arg("serve")
            .env_remove("RUST_LOG")
            .env("STEWARD__ADMIN__LISTEN", "127.0.0.1:0")
            .env("STEWARD__HTTP__LISTEN", "127.0.0.1:0")
            .env("STEWARD__GRPC__LISTEN", "127.0.0.1:0")
            .env("STEWARD__ADMIN__TOKEN", ADMIN_TOKEN)
            .env("STEWARD__LOG__FORMAT", "json")
            .env("STEWARD__LOG__LEVEL", "info")
            .env("STEWARD__STORE__DATA_DIR", data.path());
        for (key, value) in env {
            command.env(key, value);
        }
        #[allow(clippy::disallowed_methods)]
        // the bench runs the real binary; `Server`'s drop kills and reaps it
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn steward");
        let stderr = child.stderr.take().expect("steward's stderr");
        let log = Arc::new(Mutex::new(Log::default()));
        let sink = log.clone();
        let mut copy = log_copy.map(|path| {
            std::fs::File::create(&path)
                .unwrap_or_else(|e| panic!("copying the log to {path}: {e}"))
        });
        // drains stderr for the server's whole life, so that it never blocks on a full pipe
        #[allow(clippy::disallowed_methods)] // ends when the child's stderr closes
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(file) = copy.as_mut() {
                    let _ = writeln!(file, "{line}");
                }
                let value: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                let mut log = sink.lock().expect("log lock");
                if matches!(value["message"].as_str(), Some("listener bound" | "steward ready")) {
                    log.marks.push(value.clone());
                }
                if matches!(value["level"].as_str(), Some("WARN" | "ERROR")) {
                    log.warnings += 1;
                    let message = value["message"].as_str().unwrap_or(&line).to_owned();
                    let known = log.warned.len();
                    match log.warned.iter_mut().find(|(m, _, _)| *m == message) {
                        Some((_, _, n)) => *n += 1,
                        None if known < WARNED => {
                            // the fields of its first line
                            let mut fields = value.clone();
                            if let Some(v) = fields.as_object_mut() {
                                v.retain(|k, _| !matches!(k.as_str(), "message" | "timestamp"));
                            }
                            let fields = fields.to_string().chars().take(400).collect();
                            log.warned.push((message, fields, 1));
                        }
                        None => {}
                    }
                }
                if log.tail.len() == LOG_TAIL {
                    log.tail.pop_front();
                }
                log.tail.push_back(line);
            }
        });
        let mut server = Self {
            child,
            log,
            admin: String::new(),
            public: String::new(),
            grpc: String::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
            _data: data,
        };
        let deadline = Instant::now() + START;
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        loop {
            if server.mark("steward ready", None).is_some() {
                break;
            }
            let exited = server.child.try_wait().expect("try_wait");
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "steward did not become ready (exit: {exited:?}); log tail:\n{}",
                server.tail()
            );
            tick.tick().await;
        }
        let bound = |listener| {
            server
                .mark("listener bound", Some(listener))
                .and_then(|v| v["addr"].as_str().map(str::to_owned))
                .unwrap_or_else(|| panic!("no `listener bound` line for {listener}"))
        };
        let (admin, public, grpc) = (bound("admin"), bound("public"), bound("grpc"));
        server.admin = format!("http://{admin}");
        server.public = public;
        server.grpc = format!("http://{grpc}");
        server
    }

    /// The last kept line with `message` (and `listener`, when given).
    fn mark(&self, message: &str, listener: Option<&str>) -> Option<Value> {
        let log = self.log.lock().expect("log lock");
        log.marks
            .iter()
            .rev()
            .find(|v| v["message"] == message && listener.is_none_or(|l| v["listener"] == l))
            .cloned()
    }

    /// The last [`LOG_TAIL`] log lines.
    pub(crate) fn tail(&self) -> String {
        let log = self.log.lock().expect("log lock");
        log.tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// How many WARN/ERROR lines so far.
    pub(crate) fn warning_count(&self) -> u64 {
        self.log.lock().expect("log lock").warnings
    }

    /// How many WARN/ERROR lines, and their distinct messages with counts.
    pub(crate) fn warnings(&self) -> String {
        let log = self.log.lock().expect("log lock");
        let what: Vec<String> =
            log.warned.iter().map(|(m, f, n)| format!("{n}× {m:?} (first: {f})")).collect();
        format!("{} WARN/ERROR log lines: {}", log.warnings, what.join(", "))
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's resident set in bytes.
    pub(crate) fn rss(&self) -> u64 {
        rss(self.pid())
    }

    /// A request to the admin API with the admin token.
    pub(crate) fn admin_request(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.admin)).bearer_auth(ADMIN_TOKEN)
    }

    /// Creates the tenant [`TENANT`] with `quotas` (set with a merge patch when creation did not
    /// take them all) and a token; the bearer.
    pub(crate) async fn tenant_token(&self, quotas: Value) -> String {
        let r = self
            .admin_request(reqwest::Method::POST, "/v1/tenants")
            .json(&json!({"id": TENANT, "quotas": quotas}))
            .send()
            .await
            .expect("POST /v1/tenants");
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        assert_eq!(status, reqwest::StatusCode::CREATED, "POST /v1/tenants: {body}");
        let created: Value = serde_json::from_str(&body).expect("tenant JSON");
        let taken =
            quotas.as_object().is_none_or(|q| q.iter().all(|(k, v)| created["quotas"][k] == *v));
        if !taken {
            self.patch_tenant(&json!({ "quotas": quotas })).await;
        }
        let r = self
            .admin_request(reqwest::Method::POST, &format!("/v1/tenants/{TENANT}/tokens"))
            .json(&json!({"name": "bench"}))
            .send()
            .await
            .expect("POST /v1/tenants/bench/tokens");
        assert_eq!(r.status(), reqwest::StatusCode::CREATED, "POST /v1/tenants/bench/tokens");
        let token: Value = r.json().await.expect("token JSON");
        token["token"].as_str().expect("`token` in the response").to_owned()
    }

    /// `PATCH /v1/tenants/bench` with `patch` (a JSON merge patch); the tenant after it.
    pub(crate) async fn patch_tenant(&self, patch: &Value) -> Value {
        let r = self
            .admin_request(reqwest::Method::PATCH, &format!("/v1/tenants/{TENANT}"))
            .json(patch)
            .send()
            .await
            .expect("PATCH /v1/tenants/bench");
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        assert!(status.is_success(), "PATCH /v1/tenants/bench {patch}: {status} {body}");
        serde_json::from_str(&body).unwrap_or(Value::Null)
    }

    /// SIGTERM, then waits for the exit (at most 60 s; `None` after that).
    pub(crate) async fn terminate(&mut self) -> Option<ExitStatus> {
        let pid = i32::try_from(self.pid()).expect("pid fits i32");
        kill(Pid::from_raw(pid), Signal::SIGTERM).expect("SIGTERM steward");
        wait_exit(&mut self.child, Duration::from_secs(60)).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits for `child` to exit, at most `within` (`None` after that).
pub(crate) async fn wait_exit(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tick.tick().await;
    }
}

// ---- figures ----------------------------------------------------------------------------------

/// Nearest-rank percentile of sorted `values` (`q` in 0..=1).
/// Collects what the held subscriber tasks saw, as they end, within `within`: every delivery's
/// latency (from `sent_at[n - 1]`, the instant update `n` was sent) and, per update, the latency
/// of its last delivery. `Err` with the tasks still running when `within` passed.
///
/// # Panics
/// When a task panicked, or reports an update number outside `1..=sent_at.len()`.
pub(crate) async fn collect_deliveries<N: Copy + TryInto<usize> + Send + 'static>(
    held: &mut tokio::task::JoinSet<Vec<(N, Instant)>>,
    sent_at: &[Instant],
    within: Duration,
) -> Result<(Vec<Duration>, Vec<Duration>), usize> {
    let mut deliveries = Vec::new();
    let mut last = vec![Duration::ZERO; sent_at.len()];
    let collect = async {
        while let Some(got) = held.join_next().await {
            for (number, at) in got.expect("subscriber task") {
                let i = number.try_into().ok().expect("an update number") - 1;
                let d = at.saturating_duration_since(sent_at[i]);
                deliveries.push(d);
                last[i] = last[i].max(d);
            }
        }
    };
    match tokio::time::timeout(within, collect).await {
        Ok(()) => Ok((deliveries, last)),
        Err(_) => Err(held.len()),
    }
}

pub(crate) fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Milliseconds, to the microsecond.
pub(crate) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

pub(crate) fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// p50/p99/max of `values` in milliseconds, sorting them.
pub(crate) fn spread(values: &mut [Duration]) -> (f64, f64, f64) {
    values.sort_unstable();
    let max = values.last().copied().unwrap_or_default();
    (ms(percentile(values, 0.5)), ms(percentile(values, 0.99)), ms(max))
}

/// Bytes as MiB, to a tenth.
pub(crate) fn mib(bytes: u64) -> f64 {
    (bytes as f64 / (1024.0 * 1024.0) * 10.0).round() / 10.0
}

pub(crate) fn page_size() -> u64 {
    sysconf(SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| u64::try_from(p).ok())
        .unwrap_or(4096)
}

/// Resident memory of `pid` in bytes (`/proc/<pid>/statm` resident pages × page size); 0 when
/// it cannot be read.
pub(crate) fn rss(pid: u32) -> u64 {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * page_size()
}

/// The 1-, 5- and 15-minute load averages of `/proc/loadavg`.
pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub(crate) struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

/// A gRPC connection of its own to `url` (no Nagle delay) and the interceptor that sends
/// `token`: hand both to a generated client's `with_interceptor`.
pub(crate) async fn connect(url: &str, token: &str) -> (tonic::transport::Channel, Bearer) {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .expect("gRPC URL")
        .tcp_nodelay(true)
        .connect()
        .await
        .expect("gRPC connect");
    let bearer = tonic::metadata::MetadataValue::try_from(format!("Bearer {token}"))
        .expect("ascii metadata");
    (channel, Bearer(bearer))
}

/// CPU seconds (user + system) process `pid` (a number, or `self`) has spent: `/proc/<pid>/stat`
/// fields 14 and 15; 0 when it cannot be read.
pub(crate) fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // the fields after the command name, which is in parentheses and may hold spaces
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
    let hz = sysconf(SysconfVar::CLK_TCK).ok().flatten().filter(|&h| h > 0).unwrap_or(100);
    ticks as f64 / hz as f64
}

/// The CPU clocks of the processes of one measurement: the bench itself and the named others.
pub(crate) struct Cpu {
    pids: Vec<(&'static str, String)>,
    start: Vec<f64>,
    at: Instant,
}

impl Cpu {
    /// Starts the clocks of the bench and of `pids`.
    pub(crate) fn start(pids: &[(&'static str, u32)]) -> Self {
        let mut all = vec![("bench", "self".to_owned())];
        all.extend(pids.iter().map(|(name, pid)| (*name, pid.to_string())));
        let start = all.iter().map(|(_, p)| cpu_seconds(p)).collect();
        Self { pids: all, start, at: Instant::now() }
    }

    /// CPU seconds each spent since [`Cpu::start`] (`<name>_cpu_s`), and as cores over the wall
    /// time (`<name>_cores`).
    pub(crate) fn stop(&self) -> Value {
        let wall = self.at.elapsed().as_secs_f64().max(1e-9);
        let mut out = serde_json::Map::new();
        for ((name, pid), start) in self.pids.iter().zip(&self.start) {
            let used = cpu_seconds(pid) - start;
            out.insert(format!("{name}_cpu_s"), json!(round2(used)));
            out.insert(format!("{name}_cores"), json!(round2(used / wall)));
        }
        Value::Object(out)
    }
}

/// `bench 0.9 cores, steward 1.1 cores` from what [`Cpu::stop`] answered.
pub(crate) fn describe_cpu(cpu: &Value) -> String {
    let Some(map) = cpu.as_object() else {
        return String::new();
    };
    map.iter()
        .filter_map(|(k, v)| Some(format!("{} {v} cores", k.strip_suffix("_cores")?)))
        .collect::<Vec<_>>()
        .join(", ")
}
