//! `steward check-config` and configuration layering.

use std::io::Write;

use crate::support::run;

#[test]
fn check_config_accepts_the_defaults_and_a_partial_file() {
    let out = run(&["check-config"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut file = tempfile();
    writeln!(file.1, "[admin]\nlisten = \"127.0.0.1:19090\"\n[shutdown]\ngrace = \"40s\"").unwrap();
    let out = run(&["check-config", "--config", &file.0], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn check_config_names_the_offending_key() {
    let mut file = tempfile();
    writeln!(file.1, "[admin]\nlisten_address = \"127.0.0.1:1\"").unwrap();
    let out = run(&["check-config", "--config", &file.0], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen_address"));

    let out = run(&["check-config"], &[("STEWARD__SHUTDOWN__GRACE", "5s")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("shutdown.deadlines"));

    let out = run(&["check-config"], &[("STEWARD__WATCHDOG__INTERVAL", "often")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).to_lowercase().contains("interval"));

    let out = run(&["check-config", "--config", "/nonexistent.toml"], &[]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_documented_file_is_the_compiled_in_default() {
    let documented =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/steward.toml"))
            .unwrap();
    assert_eq!(documented, steward_config::DEFAULT_TOML);
}

fn tempfile() -> (String, std::fs::File) {
    let path = std::env::temp_dir().join(format!(
        "steward-it-{}-{}.toml",
        std::process::id(),
        fastrand_like()
    ));
    let file = std::fs::File::create(&path).unwrap();
    (path.to_string_lossy().into_owned(), file)
}

fn fastrand_like() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}
