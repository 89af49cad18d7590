//! The dependency invariants of docs/ARCHITECTURE.md, checked on every crate's Cargo.toml.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

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
            "steward-streams",
            "steward-rtc",
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
            "steward-streams",
            "steward-rtc",
            "steward-server",
        ],
        // streams know Redis (the redis crate) but no front door, no tenancy and no socket: the
        // edges admit and hand in a `Subscriber`; resource crates do not depend on each other
        "steward-streams" => &[
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
            "steward-messaging",
            "steward-browser",
            "steward-rtc",
            "steward-server",
        ],
        // browsers know Chromium (chromiumoxide) but no front door and no tenancy: the edge
        // admits and hands in a `TenantScope`; resource crates do not depend on each other.
        // hyper is allowed here and only here: the egress proxy each Chromium is pointed at
        // speaks HTTP/1.1 through it on loopback (`steward-browser/src/egress`); it is no front door, and
        // actix-web, actix-ws and tonic stay out
        "steward-browser" => &[
            "actix-web",
            "actix-ws",
            "tonic",
            "prost",
            "webrtc",
            "steward-http",
            "steward-grpc",
            "steward-proto",
            "steward-tenancy",
            "steward-socket",
            "steward-messaging",
            "steward-streams",
            "steward-rtc",
            "steward-server",
        ],
        // rooms know WebRTC (webrtc-rs) but no front door and no tenancy: the edge admits, owns
        // the signaling socket (a `Signaling`) and hands in the quota slot; resource crates do
        // not depend on each other
        "steward-rtc" => &[
            "actix-web",
            "actix-ws",
            "actix-http",
            "tonic",
            "prost",
            "hyper",
            "chromiumoxide",
            "steward-http",
            "steward-grpc",
            "steward-proto",
            "steward-tenancy",
            "steward-socket",
            "steward-messaging",
            "steward-browser",
            "steward-streams",
            "steward-server",
        ],
        // TLS holds certificates and handshakes for the edges; it knows none of them
        "steward-tls" => &[
            "actix-web",
            "actix-ws",
            "tonic",
            "prost",
            "chromiumoxide",
            "webrtc",
            "steward-http",
            "steward-grpc",
            "steward-proto",
            "steward-tenancy",
            "steward-socket",
            "steward-messaging",
            "steward-browser",
            "steward-streams",
            "steward-rtc",
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

/// The workspace root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// `path` relative to the workspace root, with `/` separators.
fn relative(path: &Path) -> String {
    path.strip_prefix(root()).unwrap_or(path).to_string_lossy().replace('\\', "/")
}

/// Test code (unit test modules, test support, benches, integration tests, examples).
fn is_test_code(rel: &str) -> bool {
    rel.ends_with("/tests.rs")
        || rel.contains("/tests/")
        || rel.ends_with("/testing.rs")
        || rel.contains("/benches/")
        || rel.starts_with("tests/")
        || rel.starts_with("examples/")
}

/// The lines of `text` that are code, not comments.
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .map(|(n, l)| (n + 1, l))
}

#[test]
fn spawns_outside_the_tracker_are_few_named_and_explained() {
    // the only product files that may start a task or an actor themselves, by exact path, each
    // for the reason its allow comment gives: the tracker (tasks, timers, process waiters), the
    // resource context (an actor's own task, which its supervisor holds, on its own arbiter or
    // on a pool's), the HTTP worker's socket pump (!Send, counted as the socket's task) and the
    // binary's signal watcher
    let allowed = [
        "crates/steward-core/src/tracker/mod.rs",
        "crates/steward-core/src/tracker/process.rs",
        "crates/steward-core/src/resource.rs",
        "crates/steward-http/src/ws/mod.rs",
        "crates/steward-server/src/app.rs",
    ];
    let spawns =
        ["tokio::spawn(", "actix_rt::spawn(", "rt::spawn(", "spawn_local(", "spawn_blocking("];
    let mut offenders = Vec::new();
    let mut unexplained = Vec::new();
    visit(&root().join("crates"), &mut |path, text| {
        let rel = relative(path);
        if is_test_code(&rel) {
            return;
        }
        let lines: Vec<&str> = text.lines().collect();
        for (n, line) in code_lines(text) {
            if spawns.iter().any(|s| line.contains(s)) && !allowed.contains(&rel.as_str()) {
                offenders.push(format!("{rel}:{n}"));
            }
            if line.contains("allow(clippy::disallowed_methods)") {
                // the reason is a comment on this line or on the next one
                let next = lines.get(n).copied().unwrap_or_default();
                if !line.contains("//") && !next.trim_start().starts_with("//") {
                    unexplained.push(format!("{rel}:{n}"));
                }
            }
        }
    });
    assert!(offenders.is_empty(), "bare spawns outside the allowed files: {offenders:?}");
    assert!(unexplained.is_empty(), "allowed spawns without a reason: {unexplained:?}");
}

#[test]
fn every_source_file_starts_with_a_doc_line() {
    let mut undocumented = Vec::new();
    for dir in ["crates", "tests", "examples"] {
        visit(&root().join(dir), &mut |path, text| {
            if !text.starts_with("//!") {
                undocumented.push(relative(path));
            }
        });
    }
    assert!(undocumented.is_empty(), "files without a `//!` first line: {undocumented:?}");
}

/// The kernel's modules in dependency order: each may use the ones before it, never one after.
const CORE_MODULES: [&str; 12] = [
    "arbiters",
    "identity",
    "error",
    "events",
    "messages",
    "registry",
    "lifeline",
    "tracker",
    "resource",
    "supervisor",
    "shutdown",
    "watchdog",
];

/// The module that defines a name re-exported at the kernel's root.
fn core_module_of(name: &str) -> Option<&'static str> {
    Some(match name {
        "Error" | "Result" => "error",
        "ExitReason" | "LifecycleState" | "ParseError" | "ResourceId" | "ResourceKind" => {
            "identity"
        }
        "EventKind" | "ResourceEvent" => "events",
        "StopResource" => "messages",
        "Registry" | "ResourceFilter" | "ResourceInfo" => "registry",
        "Resource" | "ResourceCtx" | "start_unsupervised" | "stop_resource" => "resource",
        "ChildSpec" | "Control" | "RestartType" | "Strategy" | "SupervisorCell"
        | "SupervisorHandle" | "SupervisorSpec" => "supervisor",
        "Tracker" => "tracker",
        "ArbiterPool" => "arbiters",
        other => return CORE_MODULES.iter().copied().find(|m| *m == other),
    })
}

/// The kernel modules `text` names through `crate::…` paths (`use crate::{a, b::c}` included).
fn core_modules_used(text: &str) -> std::collections::BTreeSet<&'static str> {
    let code: String = code_lines(text).map(|(_, l)| format!("{l}\n")).collect();
    let mut used = std::collections::BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let names: Vec<&str> = if let Some(inner) = rest.strip_prefix('{') {
            let mut depth = 1;
            let end = inner
                .char_indices()
                .find(|(_, c)| {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map_or(inner.len(), |(i, _)| i);
            inner[..end].split(',').map(str::trim).collect()
        } else {
            vec![rest]
        };
        for name in names {
            let ident: String =
                name.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if let Some(module) = core_module_of(&ident) {
                used.insert(module);
            }
        }
    }
    used
}

#[test]
fn the_kernels_modules_form_a_dag_and_the_registry_does_not_know_the_supervisor() {
    let src = root().join("crates/steward-core/src");
    let mut violations = Vec::new();
    visit(&src, &mut |path, text| {
        let rel = relative(path);
        if is_test_code(&rel) {
            return;
        }
        let inside = path.strip_prefix(&src).unwrap();
        let first = inside.components().next().unwrap().as_os_str().to_string_lossy();
        let module = first.trim_end_matches(".rs");
        let Some(rank) = CORE_MODULES.iter().position(|m| *m == module) else { return };
        for used in core_modules_used(text) {
            let used_rank = CORE_MODULES.iter().position(|m| *m == used).unwrap();
            if used_rank > rank {
                violations.push(format!("{rel} ({module}) uses {used}"));
            }
        }
    });
    assert!(violations.is_empty(), "imports against the kernel's module order: {violations:?}");
    // the absence the issue names, checked on its own so a failure says it plainly
    let registry = src.join("registry");
    visit(&registry, &mut |path, text| {
        let rel = relative(path);
        if !is_test_code(&rel) {
            assert!(!core_modules_used(text).contains("supervisor"), "{rel} knows the supervisor");
        }
    });
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
