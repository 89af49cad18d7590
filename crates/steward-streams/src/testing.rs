//! Test support (feature `testing`, and this crate's own tests): a throwaway `redis-server`.
//!
//! Needs the `redis-server` binary (Debian package `redis-server`, installed as
//! `/usr/bin/redis-server`; `scripts/test` installs it). Uses `std::process`: this is test
//! support, not a resource.

use std::io;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a start waits for the server to answer `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`RedisServer::stop`] waits for the server to exit before it kills.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Ports tried by a first start whose server could not listen (another process took the port
/// between the check and the start).
const PORT_ATTEMPTS: usize = 5;
/// Log lines a failed test shows.
const LOG_TAIL: usize = 40;

/// A `redis-server` on a loopback port, without persistence (`--save '' --appendonly no`),
/// working in a temporary directory. Dropping it kills the server and removes the directory.
///
/// Readiness is a `PING` answered by a server whose `INFO` names this child's process id, so a
/// start never mistakes another process on the port for its server.
#[derive(Debug)]
pub struct RedisServer {
    binary: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free loopback port and waits until it answers.
    ///
    /// # Errors
    /// When `redis-server` is not installed, exits, or does not answer within 30 s.
    pub fn start() -> io::Result<Self> {
        let binary = find_binary()?;
        let dir = tempfile::Builder::new().prefix("steward-redis-").tempdir()?;
        let mut server = Self { binary, port: 0, dir, child: None };
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            server.port = free_port()?;
            match server.start_again() {
                Ok(()) => return Ok(server),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("redis-server did not start")))
    }

    /// The client URL, `redis://127.0.0.1:<port>`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The loopback port the server listens on.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the server process is running (started and not stopped).
    #[must_use]
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Stops the server gracefully (`SHUTDOWN NOSAVE`: it closes its clients' connections and
    /// exits) and reaps it, killing it after 10 s. Its data is gone. Does nothing when it is not
    /// running.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        if let Ok(mut conn) = self.connect() {
            // the server exits instead of answering
            let _ = redis::cmd("SHUTDOWN").arg("NOSAVE").exec(&mut conn);
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

    /// Starts the server again on the same port, empty (a restart without persistence), and
    /// waits until it answers. Does nothing when it is running.
    ///
    /// # Errors
    /// When the server exits (for example because another process took the port meanwhile) or
    /// does not answer within 30 s.
    pub fn start_again(&mut self) -> io::Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path())?;
        #[allow(clippy::disallowed_methods)]
        // test support: the throwaway redis-server is this guard's child, killed and reaped on drop
        let mut child = Command::new(&self.binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--dir"])
            .arg(self.dir.path())
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                return Err(io::Error::other(format!(
                    "redis-server exited with {status}:\n{}",
                    self.log_tail()
                )));
            }
            if self.answers_as(child.id()) {
                break;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("redis-server did not answer within {START_TIMEOUT:?}"),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
        Ok(())
    }

    /// A plain connection to the server (for tests that look inside it).
    ///
    /// # Errors
    /// When it does not connect within 1 s.
    pub fn connect(&self) -> redis::RedisResult<redis::Connection> {
        let conn =
            redis::Client::open(self.url())?.get_connection_with_timeout(Duration::from_secs(1))?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        conn.set_write_timeout(Some(Duration::from_secs(5)))?;
        Ok(conn)
    }

    /// Whether the server on the port answers and is process `pid`.
    fn answers_as(&self, pid: u32) -> bool {
        let Ok(mut conn) = self.connect() else { return false };
        let Ok(info) = redis::cmd("INFO").arg("server").query::<String>(&mut conn) else {
            return false;
        };
        info.lines().any(|line| line.trim() == format!("process_id:{pid}"))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis-server.log")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let mut tail: Vec<&str> = log.lines().rev().take(LOG_TAIL).collect();
        tail.reverse();
        tail.join("\n")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            #[allow(clippy::print_stderr)] // test support: a failed test shows its server's log
            {
                eprintln!(
                    "--- redis-server on port {} (log tail) ---\n{}",
                    self.port,
                    self.log_tail()
                );
            }
        }
    }
}

/// A loopback port nothing listens on now (the OS picks it; the server binds it right after).
fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

/// `redis-server` on `PATH`, else `/usr/bin/redis-server` (Debian's place).
fn find_binary() -> io::Result<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("redis-server"))
        .find(|p| p.is_file());
    on_path
        .or_else(|| Some(PathBuf::from("/usr/bin/redis-server")).filter(|p| p.is_file()))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "redis-server not found on PATH or in /usr/bin (apt-get install redis-server)",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redis_server_starts_stops_and_starts_again_empty_on_its_port() {
        let mut server = RedisServer::start().expect("start");
        let port = server.port();
        assert_ne!(port, 0);
        assert_eq!(server.url(), format!("redis://127.0.0.1:{port}"));
        let mut conn = server.connect().expect("connect");
        redis::cmd("SET").arg("k").arg("v").exec(&mut conn).expect("set");
        server.stop();
        assert!(!server.is_running());
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
        server.start_again().expect("start again");
        assert_eq!(server.port(), port);
        let mut conn = server.connect().expect("connect again");
        let value: Option<String> = redis::cmd("GET").arg("k").query(&mut conn).expect("get");
        assert_eq!(value, None, "a restart without persistence is empty");
        let dir = server.dir.path().to_path_buf();
        drop(server);
        assert!(!dir.exists(), "the directory goes with the server");
    }
}
