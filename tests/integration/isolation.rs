//! Browser isolation outside the network: Chromium never runs as root and keeps its sandbox,
//! its directories are its own, no process of it listens on a TCP port, and tenants do not share
//! a Chromium.

use std::os::unix::fs::MetadataExt as _;

use crate::browser::{
    browser_tenant, client, create_ok, group, pid_of, profile_dirs, ready_browser,
};
use crate::support::Steward;

/// The real user id of `pid` (`Uid:` in `/proc/<pid>/status`).
fn uid_of(pid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().next()?.parse().ok()
}

/// The user namespace of `pid` (the target of `/proc/<pid>/ns/user`).
fn user_ns(pid: &str) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/user")).ok().map(|p| p.display().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_runs_unprivileged_with_its_sandbox_in_directories_of_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let tmpdir = tmp.path().display().to_string();
    let s = Steward::start(&[("TMPDIR", &tmpdir)]).await;
    let token = browser_tenant(&s, "acme", &[]).await;
    let mut c = client(&s).await;
    create_ok(&mut c, &token, 640, 480).await;
    let leader = pid_of(&ready_browser(&s).await);
    let pids = group(leader);
    assert!(pids.len() > 1, "Chromium and its helpers: {pids:?}");
    let uids: Vec<Option<u32>> = pids.iter().map(|p| uid_of(*p)).collect();
    assert!(
        uids.iter().all(|u| u.is_some_and(|u| u != 0)),
        "a Chromium process runs as root: {pids:?} {uids:?}"
    );

    let cmdline = std::fs::read_to_string(format!("/proc/{leader}/cmdline")).unwrap();
    assert!(!cmdline.split('\0').any(|a| a == "--no-sandbox"), "{cmdline:?}");
    // the sandbox puts renderers in user namespaces of their own
    let ours = user_ns("self").unwrap();
    let sandboxed =
        pids.iter().filter(|p| user_ns(&p.to_string()).is_some_and(|ns| ns != ours)).count();
    assert!(sandboxed > 0, "no Chromium process is in a sandbox's user namespace");

    let dirs = profile_dirs(tmp.path());
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let dir = tmp.path().join(dirs.first().unwrap());
    let chromium_uid = uid_of(leader).unwrap();
    for path in [dir.clone(), dir.join("profile"), dir.join("tmp")] {
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o700, "{}", path.display());
        assert_eq!(meta.uid(), chromium_uid, "{} belongs to Chromium's user", path.display());
    }
}
