//! Spawning a local Chromium: its own temp directory (profile and `TMPDIR`), its own process
//! group with SIGKILL as parent-death signal (both from the owner's [`Tracker`]), never as root
//! and with its sandbox, the flags of `field-notes.md`, and the DevTools protocol on a pipe
//! bridged to chromiumoxide ([`pipe`]).
//!
//! chromiumoxide's own `launch()` is not used: it shares one profile directory between browsers
//! and leaves Chromium in Steward's process group (mattsse/chromiumoxide #251).

mod pipe;

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use steward_config::BrowserConfig;
use steward_core::Tracker;
use steward_core::tracker::TrackedProcess;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{ChildStderr, Command};
use tokio::sync::oneshot;

use crate::{Error, Result};

/// Longest stderr line kept for an error message, in bytes.
const MAX_LOGGED_LINE: usize = 512;

/// A spawned Chromium that answered on its CDP pipe.
pub(crate) struct Launched {
    /// The process (its pid is its process group id); reaped by the tracker.
    pub(crate) process: TrackedProcess,
    /// The bridge's one-shot `ws://127.0.0.1:<port>/devtools/browser/<128 random bits>`.
    pub(crate) ws_url: String,
}

/// Prefix of a browser's directory in the temp dir; the Steward's pid follows it.
const DIR_PREFIX: &str = "steward-chromium-";

/// The unprivileged user a local Chromium runs as when Steward is root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RunAs {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// `nobody` on Debian, when even its entry cannot be read.
const NOBODY: RunAs = RunAs { uid: 65534, gid: 65534 };

/// Who Chromium runs as: `[browser] user` (else `nobody`) when Steward is root, so Chromium
/// never does; `None` (Steward's own user) otherwise.
pub(crate) fn run_as(config: &BrowserConfig) -> Option<RunAs> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let of = |name: &str| {
        nix::unistd::User::from_name(name)
            .ok()
            .flatten()
            .map(|u| RunAs { uid: u.uid.as_raw(), gid: u.gid.as_raw() })
    };
    Some(of(&config.user).or_else(|| of("nobody")).unwrap_or(NOBODY))
}

/// Whether the kernel can give Chromium its sandbox: unprivileged user namespaces (Chromium's
/// namespace sandbox; Debian's package has no setuid helper). `Err` says what forbids them.
pub(crate) fn sandbox_support() -> std::result::Result<(), String> {
    sandbox_support_from(|path| std::fs::read_to_string(path).ok())
}

/// [`sandbox_support`] over the sysctl files `read` returns (`None`: absent).
pub(crate) fn sandbox_support_from(
    read: impl Fn(&str) -> Option<String>,
) -> std::result::Result<(), String> {
    let value = |path: &str| read(path).map(|v| v.trim().to_owned());
    // Debian's switch, and Ubuntu's AppArmor restriction (24.04)
    if value("/proc/sys/kernel/unprivileged_userns_clone").is_some_and(|v| v == "0") {
        return Err("kernel.unprivileged_userns_clone is 0".into());
    }
    if value("/proc/sys/user/max_user_namespaces").is_some_and(|v| v == "0") {
        return Err("user.max_user_namespaces is 0".into());
    }
    if value("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").is_some_and(|v| v == "1") {
        return Err("kernel.apparmor_restrict_unprivileged_userns is 1".into());
    }
    Ok(())
}

/// Whether Chromium keeps its sandbox: yes where the kernel can give it one; where it cannot,
/// no if `allow_no_sandbox` (warned once), else an error naming the remedy.
///
/// # Errors
/// [`Error::BrowserUnavailable`] when the sandbox is unavailable and not waived.
pub(crate) fn sandboxed(config: &BrowserConfig) -> Result<bool> {
    static WARNED: std::sync::Once = std::sync::Once::new();
    match sandbox_support() {
        Ok(()) => Ok(true),
        Err(why) if config.allow_no_sandbox => {
            WARNED.call_once(|| {
                tracing::warn!(
                    why,
                    "Chromium runs without its sandbox ([browser] allow_no_sandbox = true)"
                );
            });
            Ok(false)
        }
        Err(why) => Err(Error::BrowserUnavailable(format!(
            "Chromium's sandbox is not available ({why}); local browsers are off unless \
             [browser] allow_no_sandbox = true"
        ))),
    }
}

/// Creates the browser's own directory, `steward-chromium-<steward pid>-<random>` in the temp
/// dir, 0700 and owned by `owner` when given: `profile/` (`--user-data-dir`) and `tmp/`
/// (`TMPDIR`); Chromium's `HOME` is the directory itself.
///
/// # Errors
/// [`Error::BrowserUnavailable`] when the directory cannot be created or given away.
pub(crate) fn make_dir(owner: Option<RunAs>) -> Result<TempDir> {
    use std::os::unix::fs::PermissionsExt as _;
    let fail = |e: &dyn std::fmt::Display| {
        Error::BrowserUnavailable(format!("cannot create a profile directory: {e}"))
    };
    let prefix = format!("{DIR_PREFIX}{}-", std::process::id());
    let dir = tempfile::Builder::new().prefix(&prefix).tempdir().map_err(|e| fail(&e))?;
    let paths = [dir.path().to_owned(), dir.path().join("profile"), dir.path().join("tmp")];
    for (i, path) in paths.iter().enumerate() {
        if i > 0 {
            std::fs::create_dir(path).map_err(|e| fail(&e))?;
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| fail(&e))?;
        if let Some(owner) = owner {
            std::os::unix::fs::chown(path, Some(owner.uid), Some(owner.gid))
                .map_err(|e| fail(&e))?;
        }
    }
    Ok(dir)
}

/// Removes the browser directories a Steward that is gone left behind (it was killed: nothing
/// ran its cleanup), and returns how many. A directory whose Steward pid is alive — this one,
/// or another Steward on the machine — is left alone.
pub(crate) fn sweep_stale_dirs() -> usize {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(DIR_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        match std::fs::remove_dir_all(entry.path()) {
            Ok(()) => removed += 1,
            Err(e) => {
                tracing::warn!(path = %entry.path().display(), error = %e, "could not remove a stale browser directory");
            }
        }
    }
    removed
}

/// Steward's Chromium flags (`field-notes.md`): new headless mode, DevTools on a pipe, the
/// browser's own profile, every connection through `proxy`, and nothing that phones
/// home or runs in the background. `--no-sandbox` only when `sandbox` is off (the kernel
/// cannot give one and the operator waived it).
pub(crate) fn args(config: &BrowserConfig, dir: &Path, proxy: &str, sandbox: bool) -> Vec<String> {
    let mut args: Vec<String> = [
        "--headless=new",
        // the DevTools protocol on fds 3 and 4, no port (see `pipe`)
        "--remote-debugging-pipe",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-default-apps",
        "--disable-crash-reporter",
        "--disable-breakpad",
        "--disable-dev-shm-usage",
        "--mute-audio",
        "--password-store=basic",
        "--use-mock-keychain",
        // nothing leaves outside the egress proxies: no direct UDP for WebRTC, no QUIC (above),
        // no DNS prefetching, no hyperlink-auditing pings
        "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
        "--dns-prefetch-disable",
        "--no-pings",
        "--proxy-bypass-list=<-loopback>",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    if !sandbox {
        args.push("--no-sandbox".into());
    }
    args.push(format!("--proxy-server={proxy}"));
    args.push(format!("--user-data-dir={}", dir.join("profile").display()));
    args.extend(config.extra_args.iter().cloned());
    args.push("about:blank".into());
    args
}

/// Spawns Chromium as `tracker`'s child process (as `owner`, when given) with its CDP pipe,
/// and starts the bridge (on `io` when given) that answers once Chromium spoke on the pipe
/// (at most `launch_timeout`). Its stderr keeps being drained by a task of `tracker`, so
/// Chromium never blocks on a full pipe; its last line goes into launch errors.
///
/// # Errors
/// [`Error::BrowserUnavailable`] when it cannot be spawned, its sandbox is unavailable and not
/// waived, or it exits before answering (with its last stderr line);
/// [`Error::DeadlineExceeded`] (`launch`).
pub(crate) async fn spawn(
    tracker: &Tracker,
    io: Option<&tokio::runtime::Handle>,
    config: &BrowserConfig,
    dir: &Path,
    proxy: &str,
    owner: Option<RunAs>,
) -> Result<Launched> {
    let sandbox = sandboxed(config)?;
    let pipes = pipe::pipes()?;
    let mut cmd = Command::new(&config.executable);
    cmd.args(args(config, dir, proxy, sandbox))
        .env("HOME", dir)
        .env("TMPDIR", dir.join("tmp"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(owner) = owner {
        // never root; std drops the supplementary groups too
        cmd.uid(owner.uid).gid(owner.gid);
    }
    let spawned = tracker.spawn_process_with_fds(&mut cmd, pipes.child);
    drop(cmd); // Chromium holds the only copies of its ends of the pipes now
    let mut process = spawned.map_err(|e| {
        Error::BrowserUnavailable(format!("cannot start {}: {e}", config.executable))
    })?;
    let stderr = process
        .stderr
        .take()
        .ok_or_else(|| Error::BrowserUnavailable("chromium's stderr is not piped".into()))?;
    let last_words = Arc::new(Mutex::new(String::new()));
    drain(tracker, stderr, last_words.clone());
    let (ready, answered) = oneshot::channel();
    let bridge = pipe::run(pipes.commands, pipes.events, ready, config.connect_timeout);
    match io {
        Some(io) => tracker.spawn_on(io, bridge),
        None => tracker.spawn(bridge),
    }
    .map_err(|e| Error::BrowserUnavailable(e.to_string()))?;
    let failed = |why: String| {
        let last = crate::shared::lock(&last_words).clone();
        Error::BrowserUnavailable(format!("{why}; chromium's last words: {last}"))
    };
    let ws_url = match tokio::time::timeout(config.launch_timeout, answered).await {
        Ok(Ok(Ok(url))) => url,
        Ok(Ok(Err(e))) => return Err(failed(e.to_string())),
        Ok(Err(_)) => return Err(failed("the CDP bridge ended".into())),
        Err(_) => {
            return Err(Error::DeadlineExceeded { stage: "launch", after: config.launch_timeout });
        }
    };
    Ok(Launched { process, ws_url })
}

/// Reads Chromium's stderr until it closes: each line logged at `trace`, the last one kept in
/// `last` for launch errors.
fn drain(tracker: &Tracker, stderr: ChildStderr, last: Arc<Mutex<String>>) {
    let mut lines = BufReader::new(stderr).lines();
    let _ = tracker.spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let line = truncate(&line);
            tracing::trace!(line = %line, "chromium stderr");
            *crate::shared::lock(&last) = line;
        }
    });
}

fn truncate(line: &str) -> String {
    let mut end = line.len().min(MAX_LOGGED_LINE);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line[..end].to_owned()
}

/// The processes of process group `pgid` now (from `/proc/<pid>/stat`) and their resident
/// memory in bytes (`/proc/<pid>/statm`).
pub(crate) fn group_usage(pgid: u32) -> (Vec<u32>, u64) {
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| u64::try_from(p).ok())
        .unwrap_or(4096);
    let mut pids = Vec::new();
    let mut rss = 0;
    let Ok(dir) = std::fs::read_dir("/proc") else { return (pids, rss) };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // fields after the parenthesised command: state ppid pgrp …
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { continue };
        if rest.split_whitespace().nth(2).and_then(|g| g.parse::<u32>().ok()) != Some(pgid) {
            continue;
        }
        pids.push(pid);
        rss += std::fs::read_to_string(format!("/proc/{pid}/statm"))
            .ok()
            .and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
            .map_or(0, |pages| pages * page);
    }
    (pids, rss)
}

#[cfg(test)]
mod tests;
