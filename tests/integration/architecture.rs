//! The dependency invariants of docs/ARCHITECTURE.md, checked on every crate's Cargo.toml.

use std::collections::BTreeSet;
use std::path::Path;

fn manifest(path: &Path) -> toml::Table {
    std::fs::read_to_string(path).unwrap().parse().unwrap()
}

fn deps(m: &toml::Table) -> BTreeSet<String> {
    ["dependencies", "build-dependencies"]
        .iter()
        .filter_map(|k| m.get(*k).and_then(|d| d.as_table()))
        .flat_map(|t| t.keys().cloned())
        .collect()
}

fn crates() -> Vec<(String, toml::Table)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root.join("crates")).unwrap() {
        let dir = entry.unwrap().path();
        let m = manifest(&dir.join("Cargo.toml"));
        out.push((dir.file_name().unwrap().to_string_lossy().into_owned(), m));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// What each crate may not depend on (directly), from the brief's crate table.
fn forbidden(krate: &str) -> &'static [&'static str] {
    match krate {
        "steward-core" => &[
            "actix-web",
            "actix-ws",
            "tonic",
            "prost",
            "hyper",
            "axum",
            "serde_json",
            "chromiumoxide",
            "webrtc",
            "steward-http",
            "steward-grpc",
            "steward-proto",
            "steward-server",
        ],
        "steward-config" => &["actix", "actix-rt", "actix-web", "tokio", "tonic", "steward-core"],
        "steward-proto" => &["actix", "actix-web", "steward-core", "steward-config"],
        "steward-http" => &["tonic", "prost", "steward-grpc", "steward-proto"],
        "steward-grpc" => &["actix-web", "steward-http"],
        // tenancy knows no transport (brief §1)
        "steward-tenancy" => &[
            "actix-web",
            "actix-ws",
            "tonic",
            "prost",
            "hyper",
            "steward-http",
            "steward-grpc",
            "steward-proto",
            "steward-server",
        ],
        // sockets know WebSocket frames but not the transport that carries them (decision 0006),
        // nor gRPC, Chromium or WebRTC (brief §1)
        "steward-socket" => &[
            "actix-web",
            "actix-ws",
            "tonic",
            "prost",
            "hyper",
            "chromiumoxide",
            "webrtc",
            "steward-http",
            "steward-grpc",
            "steward-proto",
            "steward-tenancy",
            "steward-messaging",
            "steward-browser",
            "steward-server",
        ],
        // messaging knows brokers (async-nats) but no front door: the edge hands it validated
        // requests and renders its events; resource crates do not depend on each other
        "steward-messaging" => &[
            "actix-web",
            "actix-ws",
            "tonic",
            "prost",
            "hyper",
            "chromiumoxide",
            "webrtc",
            "steward-http",
            "steward-grpc",
            "steward-proto",
            "steward-tenancy",
            "steward-socket",
            "steward-browser",
            "steward-server",
        ],
        // browsers know Chromium (chromiumoxide) but no front door and no tenancy: the edge
        // admits and hands in a `TenantScope`; resource crates do not depend on each other
        "steward-browser" => &[
            "actix-web",
            "actix-ws",
            "tonic",
            "prost",
            "hyper",
            "webrtc",
            "steward-http",
            "steward-grpc",
            "steward-proto",
            "steward-tenancy",
            "steward-socket",
            "steward-messaging",
            "steward-server",
        ],
        _ => &[],
    }
}

#[test]
fn crates_are_flat_named_and_inherit_the_workspace() {
    let all = crates();
    assert!(all.len() >= 6);
    for (dir, m) in &all {
        let package = m["package"].as_table().unwrap();
        assert_eq!(package["name"].as_str(), Some(dir.as_str()), "folder name = package name");
        assert!(dir.starts_with("steward-"), "{dir} is named steward-<noun>");
        assert_eq!(
            package["publish"]["workspace"].as_bool(),
            Some(true),
            "{dir}: publish from the workspace (false)"
        );
        assert_eq!(
            package["version"]["workspace"].as_bool(),
            Some(true),
            "{dir}: version from the workspace"
        );
        assert_eq!(
            m["lints"]["workspace"].as_bool(),
            Some(true),
            "{dir}: [lints] workspace = true"
        );
    }
}

#[test]
fn dependency_direction_holds() {
    for (dir, m) in crates() {
        let d = deps(&m);
        for bad in forbidden(&dir) {
            assert!(!d.contains(*bad), "{dir} must not depend on {bad}");
        }
        // resource crates do not depend on each other; edges are not depended on by the core
        if dir != "steward-server" {
            assert!(!d.contains("steward-server"), "{dir} depends on the binary");
        }
    }
}

#[test]
fn the_core_has_no_bare_spawns_outside_the_tracker() {
    // tracked spawning is the only way resource code starts a task; inside the core the tracker,
    // the supervisor (which spawns its children) and the registry's fallback send may spawn
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crates");
    let allowed = [
        "tracker/mod.rs",
        "tracker/process.rs",
        "supervisor/mod.rs",
        "registry/mod.rs",
        "context.rs",
    ];
    let mut offenders = Vec::new();
    visit(&root, &mut |path, text| {
        let p = path.to_string_lossy();
        if p.contains("steward-server")
            || p.ends_with("tests.rs")
            || p.contains("/benches/")
            || p.contains("testing.rs")
        {
            return;
        }
        for (n, line) in text.lines().enumerate() {
            if (line.contains("tokio::spawn(") || line.contains("actix_rt::spawn("))
                && !allowed.iter().any(|a| p.ends_with(a))
            {
                offenders.push(format!("{p}:{}", n + 1));
            }
        }
    });
    assert!(offenders.is_empty(), "bare spawns: {offenders:?}");
}

fn visit(dir: &Path, f: &mut dyn FnMut(&Path, &str)) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if !path.ends_with("target") {
                visit(&path, f);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            f(&path, &std::fs::read_to_string(&path).unwrap());
        }
    }
}
