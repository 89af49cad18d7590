//! Test support (feature `testing`, and this crate's own tests): a throwaway `nats-server` with
//! JetStream.
//!
//! Needs the `nats-server` binary (Debian package `nats-server`, installed as
//! `/usr/sbin/nats-server`; `scripts/test` installs it). Uses `std::process`: this is test
//! support, not a resource.

use std::io;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a start waits for the server to listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`NatsServer::stop`] waits for a graceful exit before it kills.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Log lines a failed test shows.
const LOG_TAIL: usize = 40;

/// A `nats-server -js` on a loopback port with its store in a temporary directory. Dropping it
/// kills the server and removes the directory.
///
/// The first start lets the server pick a free port itself (`-p -1`), so parallel tests never
/// share one; readiness is the ports file the server writes once it listens
/// (`--ports_file_dir`), so a start never mistakes another process on the port for its server.
#[derive(Debug)]
pub struct NatsServer {
    binary: PathBuf,
    /// `0` until the first start learned it.
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server on a loopback port it picks and waits until it listens.
    ///
    /// # Errors
    /// When `nats-server` is not installed, exits, or does not listen within 30 s.
    pub fn start() -> io::Result<Self> {
        let binary = find_binary()?;
        let dir = tempfile::Builder::new().prefix("steward-nats-").tempdir()?;
        let mut server = Self { binary, port: 0, dir, child: None };
        server.start_again()?;
        Ok(server)
    }

    /// The client URL, `nats://127.0.0.1:<port>`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The loopback port the server listens on.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The JetStream store directory (kept across [`stop`](Self::stop) and
    /// [`kill`](Self::kill)).
    #[must_use]
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// Whether the server process is running (started and not stopped).
    #[must_use]
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Stops the server gracefully (SIGTERM: JetStream flushes its store) and reaps it, killing
    /// it after 10 s; the store directory stays. Does nothing when it is not running.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        if let Ok(pid) = i32::try_from(child.id()) {
            let pid = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + STOP_TIMEOUT;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Kills the server (SIGKILL, as a crash: what JetStream had not written yet is lost) and
    /// reaps it; the store directory stays. Does nothing when it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and store directory and waits until it
    /// listens. Does nothing when it is running.
    ///
    /// # Errors
    /// When the server exits (for example because another process took the port meanwhile) or
    /// does not listen within 30 s.
    pub fn start_again(&mut self) -> io::Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let ports_dir = self.dir.path().join("ports");
        std::fs::create_dir_all(&ports_dir)?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path())?;
        let port = if self.port == 0 { "-1".to_owned() } else { self.port.to_string() };
        #[allow(clippy::disallowed_methods)]
        // test support: the throwaway nats-server is this guard's child, killed and reaped on drop
        let mut child = Command::new(&self.binary)
            .args(["-a", "127.0.0.1", "-p", &port, "-js", "-sd"])
            .arg(self.store_dir())
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let ports_file = ports_dir.join(format!("nats-server_{}.ports", child.id()));
        let deadline = Instant::now() + START_TIMEOUT;
        let port = loop {
            if let Some(status) = child.try_wait()? {
                return Err(io::Error::other(format!(
                    "nats-server exited with {status}:\n{}",
                    self.log_tail()
                )));
            }
            if let Some(port) =
                std::fs::read_to_string(&ports_file).ok().and_then(|s| nats_port(&s))
            {
                break port;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("nats-server did not listen within {START_TIMEOUT:?}"),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.port = port;
        self.child = Some(child);
        Ok(())
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats-server.log")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let mut tail: Vec<&str> = log.lines().rev().take(LOG_TAIL).collect();
        tail.reverse();
        tail.join("\n")
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            #[allow(clippy::print_stderr)] // test support: a failed test shows its server's log
            {
                eprintln!(
                    "--- nats-server on port {} (log tail) ---\n{}",
                    self.port,
                    self.log_tail()
                );
            }
        }
    }
}

/// The client port in a ports file (`{"nats":["nats://127.0.0.1:4222"],...}`).
fn nats_port(ports_file: &str) -> Option<u16> {
    let url = &ports_file[ports_file.find("nats://")? + "nats://".len()..];
    let end = url.find('"')?;
    url[..end].rsplit(':').next()?.parse().ok()
}

/// `nats-server` on `PATH`, else `/usr/sbin/nats-server` (Debian's place, often not on a
/// non-root `PATH`).
fn find_binary() -> io::Result<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file());
    on_path
        .or_else(|| Some(PathBuf::from("/usr/sbin/nats-server")).filter(|p| p.is_file()))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "nats-server not found on PATH or in /usr/sbin (apt-get install nats-server)",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_port_is_read_from_a_nats_ports_file() {
        let file = r#"{"nats":["nats://127.0.0.1:40123"],"monitoring":["http://127.0.0.1:8222"]}"#;
        assert_eq!(nats_port(file), Some(40123));
        assert_eq!(nats_port("{}"), None);
    }

    #[test]
    fn a_nats_server_starts_stops_and_starts_again_on_its_port() {
        let mut server = NatsServer::start().expect("start");
        let port = server.port();
        assert_ne!(port, 0);
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        server.stop();
        assert!(!server.is_running());
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
        server.start_again().expect("start again");
        assert_eq!(server.port(), port);
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        let dir = server.store_dir();
        drop(server);
        assert!(!dir.exists(), "the store goes with the server");
    }
}
