//! The servers the bench measures, behind one face ([`Target`]): Steward (the release `steward`
//! binary through `support::Server`, with a tenant token and a job made over gRPC, updated with
//! `UpdateJob`), and two child processes updated with `POST /bench/update`: the plain actix-web +
//! actix-ws server (this executable re-run as `BENCH_ROLE=plain-ws`) and socket.io
//! (`node server.js` in `benches/socketio` after `npm ci`). Every child is killed and reaped when
//! its [`Target`] drops, on every path out of the bench, panics included; and each exits on its
//! own when its stdin (a pipe from the bench) ends.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use steward_proto::jobs::v1::jobs_client::JobsClient;
use steward_proto::jobs::v1::{CreateJobRequest, JobStatus, UpdateJobRequest};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::client::{Endpoint, Protocol, STEP};
use crate::plain;
use crate::support::{Bearer, Server, connect, rss};

/// The bearer the child servers get (they accept any).
const CHILD_TOKEN: &str = "bench-token";
/// The job the child servers' sockets subscribe to (any 32 hex digits).
const CHILD_JOB: &str = "5f0c3a9e2b7d4c1a8e6f0b3d2c1a9e8f";
/// A job nobody subscribes to, updated once to open a child's HTTP connection.
const UNWATCHED_JOB: &str = "00000000000000000000000000000000";

/// One server under measurement.
pub(crate) struct Target {
    /// For the report: `steward (arbiters 1)`, `socket.io`, `plain actix-ws`.
    pub(crate) name: String,
    /// For the JSON line: `steward_arbiters_1`, `socketio`, `plain`.
    pub(crate) key: String,
    pub(crate) endpoint: Endpoint,
    backend: Backend,
}

enum Backend {
    Steward {
        server: Box<Server>,
        jobs: JobsClient<InterceptedService<Channel, Bearer>>,
        job: String,
    },
    Child {
        child: ChildServer,
        http: reqwest::Client,
        update: String,
    },
}

impl Target {
    /// Starts Steward with room for `sockets` sockets from one address and, unless `None`,
    /// `STEWARD__SOCKET__ARBITERS=<arbiters>`; creates the tenant, its token and the job.
    pub(crate) async fn steward(arbiters: Option<u32>, sockets: usize) -> Self {
        let room = sockets.max(20_000).to_string();
        let mut env = vec![
            ("STEWARD__SOCKET__MAX_CONNECTIONS", room.clone()),
            ("STEWARD__SOCKET__MAX_PER_IP", room),
        ];
        if let Some(a) = arbiters {
            env.push(("STEWARD__SOCKET__ARBITERS", a.to_string()));
        }
        let server = Server::start(&env, None).await;
        let token = server.tenant_token(json!({"sockets": sockets.max(20_000)})).await;
        let (channel, bearer) = connect(&server.grpc, &token).await;
        let mut jobs = JobsClient::with_interceptor(channel, bearer);
        let created = CreateJobRequest { kind: "bench".into(), data: None };
        let job = jobs.create_job(created).await.expect("CreateJob").into_inner().id;
        let (name, key) = match arbiters {
            Some(a) => (format!("steward (arbiters {a})"), format!("steward_arbiters_{a}")),
            None => ("steward".to_owned(), "steward".to_owned()),
        };
        let endpoint = Endpoint::new(Protocol::Steward, &server.public, &token, &job);
        let server = Box::new(server);
        Self { name, key, endpoint, backend: Backend::Steward { server, jobs, job } }
    }

    /// Starts the plain actix-web + actix-ws server.
    pub(crate) async fn plain() -> Self {
        let exe = std::env::current_exe().expect("the bench's own executable");
        let mut command = Command::new(exe);
        command.env("BENCH_ROLE", plain::ROLE);
        let child = ChildServer::start(command, "plain actix-ws server").await;
        Self::child("plain actix-ws".to_owned(), "plain", Protocol::Steward, child).await
    }

    /// Starts socket.io (`node server.js`) in `dir`, where `npm ci` has run.
    pub(crate) async fn socketio(dir: &Path, label: String) -> Self {
        let mut command = Command::new("node");
        command.arg("server.js").current_dir(dir);
        let child = ChildServer::start(command, "socket.io server").await;
        Self::child(label, "socketio", Protocol::SocketIo, child).await
    }

    /// A child server's [`Target`], with its HTTP connection open (as Steward's gRPC one is):
    /// one update of a job nobody subscribes to.
    async fn child(name: String, key: &str, protocol: Protocol, child: ChildServer) -> Self {
        let endpoint = Endpoint::new(protocol, &child.addr, CHILD_TOKEN, CHILD_JOB);
        let http = reqwest::Client::builder().timeout(STEP).build().expect("http client");
        let update = format!("http://{}/bench/update", child.addr);
        post_update(&http, &update, UNWATCHED_JOB, 0).await;
        let backend = Backend::Child { child, http, update };
        Self { name, key: key.to_owned(), endpoint, backend }
    }

    /// The server's process id (for socket.io, the node process).
    pub(crate) fn pid(&self) -> u32 {
        match &self.backend {
            Backend::Steward { server, .. } => server.pid(),
            Backend::Child { child, .. } => child.child.id(),
        }
    }

    /// The server's resident set in bytes.
    pub(crate) fn rss(&self) -> u64 {
        rss(self.pid())
    }

    /// Sets the job running at `progress`; returns once the server took it (Steward: the
    /// `UpdateJob` answer; the others: the 204 of `POST /bench/update`).
    pub(crate) async fn publish(&mut self, progress: u32) {
        match &mut self.backend {
            Backend::Steward { server, jobs, job } => {
                let update = UpdateJobRequest {
                    id: job.clone(),
                    status: Some(JobStatus::Running as i32),
                    progress: Some(progress),
                    data: None,
                };
                if let Err(e) = jobs.update_job(update).await {
                    panic!("UpdateJob: {e}; log tail:\n{}", server.tail());
                }
            }
            Backend::Child { http, update, .. } => {
                post_update(http, update, CHILD_JOB, progress).await;
            }
        }
    }

    /// Polls Steward's `/metrics` until `want` sockets are live, at most `within`; the last value
    /// seen. `None` for the other servers, which do not count their sockets.
    pub(crate) async fn until_live(&self, want: u64, within: Duration) -> Option<u64> {
        let Backend::Steward { server, .. } = &self.backend else {
            return None;
        };
        let deadline = Instant::now() + within;
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let mut last = None;
        loop {
            tick.tick().await;
            last = live_sockets(server).await.or(last);
            if last == Some(want) || Instant::now() >= deadline {
                return last;
            }
        }
    }

    /// Stops the server: Steward with SIGTERM, the children killed. How it went, as a sentence
    /// for the report and as figures for the JSON line: `exit` (Steward's exit code), `warnings`
    /// (Steward's WARN/ERROR log lines).
    pub(crate) async fn stop(self) -> (String, Value) {
        match self.backend {
            Backend::Steward { mut server, .. } => {
                let warnings = server.warning_count();
                let warned = if warnings > 0 { server.warnings() } else { "none".to_owned() };
                let started = Instant::now();
                let status = server.terminate().await;
                let exit =
                    status.map_or_else(|| "still running after 60 s".to_owned(), |s| s.to_string());
                let shutdown = format!(
                    "SIGTERM -> {exit} in {:.2} s (during the run: {warned})",
                    started.elapsed().as_secs_f64()
                );
                (shutdown, json!({"exit": status.and_then(|s| s.code()), "warnings": warnings}))
            }
            Backend::Child { child, .. } => {
                drop(child);
                ("killed".to_owned(), json!({}))
            }
        }
    }
}

/// `steward_resources_live{kind="socket"}` of `/metrics` (0 when the series is absent).
async fn live_sockets(server: &Server) -> Option<u64> {
    let r = server.admin_request(reqwest::Method::GET, "/metrics").send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    let text = r.text().await.ok()?;
    let series = "steward_resources_live{kind=\"socket\"}";
    Some(
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
            .map_or(0, |v| v as u64),
    )
}

/// `POST <update>` (a child's `/bench/update`) setting `job` running at `progress`.
async fn post_update(http: &reqwest::Client, update: &str, job: &str, progress: u32) {
    let body = json!({"job": job, "status": "running", "progress": progress});
    let r = http.post(update).json(&body).send().await;
    let r = r.unwrap_or_else(|e| panic!("POST {update}: {e}"));
    assert!(r.status().is_success(), "POST {update}: {}", r.status());
}

/// A server child process that prints `{"listening":"<addr>"}` on stdout once it listens.
struct ChildServer {
    child: Child,
    /// Its stdin: the child exits when this closes, even if the bench is killed outright.
    _stdin: ChildStdin,
    /// host:port.
    addr: String,
}

impl ChildServer {
    /// Spawns `command` (its stderr goes to the bench's) and waits for its address.
    async fn start(mut command: Command, what: &str) -> Self {
        #[allow(clippy::disallowed_methods)]
        // the bench's own servers; `ChildServer`'s drop kills and reaps them
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn the {what}: {e}"));
        let stdin = child.stdin.take().expect("the child's stdin");
        let stdout = child.stdout.take().expect("the child's stdout");
        let (tx, rx) = tokio::sync::oneshot::channel();
        // reads the address, then drains stdout for the child's whole life
        #[allow(clippy::disallowed_methods)] // ends when the child's stdout closes
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                if let Some(addr) = v["listening"].as_str()
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr.to_owned());
                }
            }
        });
        let mut server = Self { child, _stdin: stdin, addr: String::new() };
        match tokio::time::timeout(STEP, rx).await {
            Ok(Ok(addr)) => server.addr = addr,
            _ => panic!(
                "the {what} did not report its address (exit: {:?})",
                server.child.try_wait()
            ),
        }
        server
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// socket.io's directory, where `npm ci` installs it.
pub(crate) fn socketio_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/socketio")
}

/// Readies socket.io: `node` and `npm` on PATH, then `npm ci --no-audit --no-fund` in
/// [`socketio_dir`]. Its label (`socket.io 4.8.4 (node v20.20.2)`), or why it is skipped.
pub(crate) fn prepare_socketio() -> Result<String, String> {
    if std::env::var("BENCH_SOCKETIO").is_ok_and(|v| v.trim() == "0") {
        return Err("BENCH_SOCKETIO=0".to_owned());
    }
    let dir = socketio_dir();
    let run = |program: &str, args: &[&str]| {
        #[allow(clippy::disallowed_methods)] // node's version, and `npm ci`: waited for here
        let out = Command::new(program).args(args).current_dir(&dir).stdin(Stdio::null()).output();
        match out {
            Ok(out) if out.status.success() => {
                Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
            }
            Ok(out) => {
                let err = String::from_utf8_lossy(&out.stderr);
                let tail: Vec<&str> = err.lines().rev().take(5).collect();
                Err(format!(
                    "`{program} {}` failed ({}): {}",
                    args.join(" "),
                    out.status,
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                ))
            }
            Err(e) => Err(format!("no runnable `{program}` on PATH ({e})")),
        }
    };
    let node = run("node", &["--version"])?;
    run("npm", &["--version"])?;
    run("npm", &["ci", "--no-audit", "--no-fund", "--loglevel=error"])?;
    let package = std::fs::read_to_string(dir.join("node_modules/socket.io/package.json"))
        .map_err(|e| format!("socket.io is not installed after npm ci: {e}"))?;
    let version: Value = serde_json::from_str(&package).unwrap_or(Value::Null);
    Ok(format!("socket.io {} (node {node})", version["version"].as_str().unwrap_or("?")))
}
