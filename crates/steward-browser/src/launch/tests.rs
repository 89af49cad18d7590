//! Tests of the launch rules that need no Chromium: who it runs as, its sandbox, its flags.

use std::collections::HashMap;
use std::path::Path;

use steward_config::Config;

use super::{args, run_as, sandbox_support_from};

fn sysctls(values: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> =
        values.iter().map(|(k, v)| ((*k).to_owned(), format!("{v}\n"))).collect();
    move |path| map.get(path).cloned()
}

#[test]
fn the_sandbox_is_available_unless_a_sysctl_forbids_user_namespaces() {
    assert_eq!(sandbox_support_from(sysctls(&[])), Ok(()), "nothing forbids them");
    let ok = [
        ("/proc/sys/kernel/unprivileged_userns_clone", "1"),
        ("/proc/sys/user/max_user_namespaces", "96368"),
        ("/proc/sys/kernel/apparmor_restrict_unprivileged_userns", "0"),
    ];
    assert_eq!(sandbox_support_from(sysctls(&ok)), Ok(()));
    for (path, value) in [
        ("/proc/sys/kernel/unprivileged_userns_clone", "0"),
        ("/proc/sys/user/max_user_namespaces", "0"),
        ("/proc/sys/kernel/apparmor_restrict_unprivileged_userns", "1"),
    ] {
        let why = sandbox_support_from(sysctls(&[(path, value)])).unwrap_err();
        let name = path.trim_start_matches("/proc/sys/").replace('/', ".");
        assert!(why.contains(&name), "{why} names {name}");
    }
}

#[test]
fn chromium_never_runs_as_root_and_keeps_its_sandbox_unless_waived() {
    let config = Config::defaults().browser;
    if nix::unistd::geteuid().is_root() {
        let who = run_as(&config).expect("as root, Chromium gets another user");
        assert_ne!(who.uid, 0);
        assert_ne!(who.gid, 0);
    } else {
        assert_eq!(run_as(&config), None, "not root: Chromium runs as Steward's user");
    }
    let with = args(&config, Path::new("/tmp/x"), "http://127.0.0.1:1", true);
    assert!(!with.iter().any(|a| a == "--no-sandbox"), "{with:?}");
    assert!(with.iter().any(|a| a == "--proxy-server=http://127.0.0.1:1"), "{with:?}");
    assert!(with.iter().any(|a| a == "--proxy-bypass-list=<-loopback>"), "{with:?}");
    let without = args(&config, Path::new("/tmp/x"), "http://127.0.0.1:1", false);
    assert!(without.iter().any(|a| a == "--no-sandbox"), "{without:?}");
}
