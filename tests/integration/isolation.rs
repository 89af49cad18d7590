//! Browser isolation outside the network: Chromium never runs as root and keeps its sandbox,
//! its directories are its own, no process of it listens on a TCP port, and tenants do not share
//! a Chromium.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt as _;

use crate::browser::{
    PageServer, browser_tenant, browsers, client, create, create_ok, group, navigate, pid_of,
    profile_dirs, ready_browser, viewport,
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

/// Inodes of the TCP sockets listening now (`/proc/net/tcp` and `tcp6`, state `0A`).
fn listening_inodes() -> BTreeSet<u64> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    (fields.get(3) == Some(&"0A")).then(|| fields.get(9)?.parse().ok()).flatten()
                })
                .collect::<Vec<u64>>()
        })
        .collect()
}

/// Inodes of the sockets `pid` holds.
fn socket_inodes(pid: i32) -> BTreeSet<u64> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return BTreeSet::new() };
    fds.filter_map(|fd| {
        let link = std::fs::read_link(fd.ok()?.path()).ok()?;
        link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_chromium_process_listens_and_no_devtools_bridge_is_left_open() {
    let pages = PageServer::start().await;
    let s = Steward::start(&[]).await;
    // the most a tenant can be given: loopback
    let token = browser_tenant(&s, "acme", &["127.0.0.1"]).await;
    let mut c = client(&s).await;
    let session = create_ok(&mut c, &token, 640, 480).await.id;
    navigate(&mut c, &token, &session, &pages.url("/")).await.expect("an allowed page");
    let browser = ready_browser(&s).await;
    assert_eq!(browser["endpoint"], "pipe");
    let leader = pid_of(&browser);

    let listening = listening_inodes();
    for pid in group(leader) {
        let open: Vec<u64> = socket_inodes(pid).intersection(&listening).copied().collect();
        assert!(open.is_empty(), "Chromium process {pid} listens on a TCP port: {open:?}");
    }
    // Steward's own listening sockets: its four listeners (admin, public, grpc, grpc-admin),
    // the browser's egress proxy and the session's — the CDP bridge closed its port once
    // chromiumoxide connected
    let steward: Vec<u64> =
        socket_inodes(s.pid().as_raw()).intersection(&listening).copied().collect();
    assert_eq!(steward.len(), 4 + 1 + 1, "Steward listens on {steward:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_do_not_share_a_chromium_none_takes_all_and_an_idle_ones_stops() {
    let s = Steward::start(&[
        ("STEWARD__BROWSER__TENANT_BROWSER_IDLE", "1s"),
        ("STEWARD__BROWSER__BROWSERS", "2"),
    ])
    .await;
    let alpha = browser_tenant(&s, "alpha", &[]).await;
    let beta = browser_tenant(&s, "beta", &[]).await;
    let gamma = browser_tenant(&s, "gamma", &[]).await;
    let mut c = client(&s).await;
    // a tenant's sessions share its one Chromium: three of them do not take the node's two
    let mut a = Vec::new();
    for _ in 0..3 {
        a.push(create_ok(&mut c, &alpha, 640, 480).await);
    }
    let b = create_ok(&mut c, &beta, 640, 480).await;
    let listed = browsers(&s).await;
    assert_eq!(listed.len(), 2, "one Chromium per tenant: {listed:?}");
    let of = |tenant: &str| {
        listed
            .iter()
            .find(|x| x["tenant"] == tenant)
            .unwrap_or_else(|| panic!("{tenant}: {listed:?}"))
            .clone()
    };
    let (chromium_a, chromium_b) = (of("alpha"), of("beta"));
    assert_eq!(
        (chromium_a["origin"].as_str(), chromium_b["origin"].as_str()),
        (Some("local"), Some("local"))
    );
    assert_ne!(pid_of(&chromium_a), pid_of(&chromium_b), "two tenants, two Chromium processes");
    let groups_overlap =
        group(pid_of(&chromium_a)).iter().any(|p| group(pid_of(&chromium_b)).contains(p));
    assert!(!groups_overlap);
    // at the limit with no idle Chromium, a third tenant is refused, and nobody loses anything
    let full = create(&mut c, &gamma, viewport(640, 480)).await.unwrap_err();
    assert_eq!(full.code(), tonic::Code::ResourceExhausted, "{full:?}");
    assert!(full.message().contains("browsers"), "{full:?}");
    assert_eq!(browsers(&s).await.len(), 2);
    // each Chromium holds its own tenant's contexts only
    for (chromium, sessions) in
        [(&chromium_a, a.iter().collect::<Vec<_>>()), (&chromium_b, vec![&b])]
    {
        let id = chromium["id"].as_str().unwrap();
        let view: serde_json::Value = s
            .get(&format!("/v1/browsers/{id}/targets"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let contexts = view["contexts"].as_array().unwrap();
        assert_eq!(contexts.len(), sessions.len(), "{view}");
        let pages: BTreeSet<&str> = view["targets"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["type"] == "page" && contexts.contains(&t["context"]))
            .map(|t| t["id"].as_str().unwrap())
            .collect();
        let expected: BTreeSet<&str> =
            sessions.iter().flat_map(|x| x.pages.iter().map(String::as_str)).collect();
        assert_eq!(pages, expected, "{view}");
    }
    // a tenant's browser is the tenant's in the registry too
    assert_eq!(s.resources("?kind=browser&tenant=alpha").await.len(), 1);
    // and no call of one tenant reaches the other's session
    let theirs = crate::browser::get_session(&mut c, &alpha, &b.id).await.unwrap_err();
    assert_eq!(theirs.code(), tonic::Code::NotFound, "{theirs:?}");
    let theirs = navigate(&mut c, &alpha, &b.id, "about:blank").await.unwrap_err();
    assert_eq!(theirs.code(), tonic::Code::NotFound, "{theirs:?}");

    // beta's last session goes: its Chromium follows after tenant_browser_idle
    crate::browser::close(&mut c, &beta, &b.id).await.unwrap();
    let stopped = crate::support::eventually(crate::support::WITHIN, || async {
        browsers(&s).await.iter().all(|x| x["tenant"] != "beta")
    })
    .await;
    assert!(stopped, "beta's idle Chromium still runs: {:?}", browsers(&s).await);
    let gone = crate::support::eventually(crate::support::WITHIN, || async {
        group(pid_of(&chromium_b)).is_empty()
    })
    .await;
    assert!(gone, "its processes are gone");
    assert_eq!(browsers(&s).await.len(), 1, "alpha's, with a session, stays");
    // the slot it freed is the refused tenant's now
    create_ok(&mut c, &gamma, 640, 480).await;
    let tenants: BTreeSet<String> =
        browsers(&s).await.iter().map(|x| x["tenant"].as_str().unwrap().to_owned()).collect();
    assert_eq!(tenants, BTreeSet::from(["alpha".to_owned(), "gamma".to_owned()]));
}
