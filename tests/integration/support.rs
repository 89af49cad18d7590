//! Starting and observing a real `steward` process.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

pub const TOKEN: &str = "integration-test-admin-token-0123456789";
pub const WITHIN: Duration = Duration::from_secs(20);

/// A running `steward serve` with its parsed JSON log.
pub struct Steward {
    child: Child,
    /// The data directory, when the caller did not choose the store (removed on drop).
    _data: Option<tempfile::TempDir>,
    logs: Arc<Mutex<Vec<Value>>>,
    pub admin: String,
    pub public: String,
    pub grpc: String,
    /// The admin gRPC listener (`steward.admin.v1.Admin`).
    pub grpc_admin: String,
    pub http: reqwest::Client,
}

/// Held for the whole of a test that must not share the 2 cores with another one: the minutes
/// of Chromium churn, and the tests whose assertion is a deadline of the product (a slow
/// socket's 1 s write deadline). An async lock: it works across the tests' runtimes and is held
/// across their awaits.
pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static CPU: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    CPU.lock().await
}

/// Polls `cond` every 10 ms until it holds or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    loop {
        if cond().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tick.tick().await;
    }
}

/// Runs `steward ARGS` with `env` to its end (a CLI command, or a start that fails): its output.
pub fn run(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    #[allow(clippy::disallowed_methods)]
    // the test drives the binary from outside and waits for it; nothing of Steward's owns it
    command(args, env).output().expect("run steward")
}

pub fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_steward"));
    cmd.args(args)
        .env_remove("RUST_LOG")
        .env("STEWARD__ADMIN__LISTEN", "127.0.0.1:0")
        .env("STEWARD__HTTP__LISTEN", "127.0.0.1:0")
        .env("STEWARD__GRPC__LISTEN", "127.0.0.1:0")
        .env("STEWARD__GRPC__ADMIN_LISTEN", "127.0.0.1:0")
        .env("STEWARD__ADMIN__TOKEN", TOKEN)
        .env("STEWARD__LOG__FORMAT", "json")
        .env("STEWARD__LOG__LEVEL", "info");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

impl Steward {
    /// Starts `steward serve` with loopback port-0 listeners plus `env`, and waits until ready.
    /// Unless `env` chooses the store (`STEWARD__STORE__URL` / `__DATA_DIR`), it gets a fresh
    /// SQLite database in a temp directory that goes with it.
    pub async fn start(env: &[(&str, &str)]) -> Self {
        let chosen = env.iter().any(|(k, _)| k.starts_with("STEWARD__STORE__"));
        let data = (!chosen).then(|| tempfile::tempdir().expect("temp data dir"));
        let mut cmd = command(&["serve"], env);
        if let Some(dir) = &data {
            cmd.env("STEWARD__STORE__DATA_DIR", dir.path());
        }
        #[allow(clippy::disallowed_methods)]
        // the test runs the real binary; `Steward`'s drop kills and reaps it
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn steward");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        #[allow(clippy::disallowed_methods)]
        // reads the child's stderr until it closes, i.e. until the child is gone
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let value = serde_json::from_str(&line).unwrap_or(Value::String(line));
                sink.lock().unwrap().push(value);
            }
        });
        let mut s = Self {
            child,
            _data: data,
            logs,
            admin: String::new(),
            public: String::new(),
            grpc: String::new(),
            grpc_admin: String::new(),
            http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap(),
        };
        let ready = eventually(WITHIN, || {
            let found = s.find_message("steward ready").is_some();
            let exited = matches!(s.child.try_wait(), Ok(Some(_)));
            async move { found || exited }
        })
        .await;
        assert!(
            ready && s.find_message("steward ready").is_some(),
            "steward did not become ready; log:\n{}",
            s.dump()
        );
        s.admin = format!("http://{}", s.bound("admin"));
        s.public = format!("http://{}", s.bound("public"));
        s.grpc = format!("http://{}", s.bound("grpc"));
        s.grpc_admin = format!("http://{}", s.bound("grpc-admin"));
        s
    }

    fn bound(&self, listener: &str) -> String {
        let logs = self.logs.lock().unwrap();
        logs.iter()
            .rev()
            .find(|v| v["message"] == "listener bound" && v["listener"] == listener)
            .and_then(|v| v["addr"].as_str().map(str::to_owned))
            .unwrap_or_else(|| panic!("no `listener bound` line for {listener}"))
    }

    /// The first log line with this message.
    pub fn find_message(&self, message: &str) -> Option<Value> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .find(|v| v["message"].as_str().is_some_and(|m| m.starts_with(message)))
            .cloned()
    }

    /// The whole log, for assertion messages.
    pub fn dump(&self) -> String {
        self.logs.lock().unwrap().iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).unwrap())
    }

    pub fn signal(&self, sig: Signal) {
        kill(self.pid(), sig).expect("signal steward");
    }

    /// Waits for the process to exit, at most `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tick.tick().await;
        }
    }

    /// Polls `/readyz` until it answers `status`, at most [`WITHIN`]; returns whether it did.
    pub async fn wait_readyz(&self, status: reqwest::StatusCode) -> bool {
        eventually(WITHIN, || async {
            self.http
                .get(format!("{}/readyz", self.admin))
                .send()
                .await
                .is_ok_and(|r| r.status() == status)
        })
        .await
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(format!("{}{path}", self.admin)).bearer_auth(TOKEN)
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.admin)).bearer_auth(TOKEN)
    }

    /// `GET /v1/resources` items.
    pub async fn resources(&self, query: &str) -> Vec<Value> {
        let body: Value =
            self.get(&format!("/v1/resources{query}")).send().await.unwrap().json().await.unwrap();
        body["resources"].as_array().cloned().unwrap_or_default()
    }

    /// The id of the live service named `name`.
    pub async fn service_id(&self, name: &str) -> String {
        self.resources("?kind=service")
            .await
            .into_iter()
            .find(|r| r["name"] == name)
            .and_then(|r| r["id"].as_str().map(str::to_owned))
            .unwrap_or_else(|| panic!("no service {name}"))
    }
}

impl Drop for Steward {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
