//! Tests of the schema, the embedded defaults, layering and validation.

use std::time::Duration;

use super::*;

#[test]
fn embedded_defaults_parse_and_validate() {
    let c = Config::defaults();
    assert_eq!(c.admin.listen.to_string(), "127.0.0.1:9090");
    assert_eq!(c.http.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(c.grpc.listen.to_string(), "0.0.0.0:50051");
    assert_eq!(c.shutdown.grace, Duration::from_secs(30));
    assert!(c.shutdown.deadlines.sum() <= c.shutdown.grace);
    assert_eq!(c.watchdog.rss_floor.as_u64(), 256 * 1024 * 1024);
    assert_eq!(c.log.format, LogFormat::Text);
}

#[test]
fn every_key_of_the_documented_file_is_in_the_schema() {
    // The embedded file is the defaults layer; parsing it alone (no serde defaults exist) proves
    // that the file documents every field and the schema knows every key of the file.
    let direct: Config = toml::from_str(DEFAULT_TOML).expect("steward.toml matches the schema");
    assert_eq!(direct, Config::defaults());
}

#[test]
fn partial_file_overrides_only_its_keys() {
    let c = Config::from_toml_str("[admin]\nlisten = \"127.0.0.1:19090\"\n").unwrap();
    assert_eq!(c.admin.listen.port(), 19090);
    assert_eq!(c.http, Config::defaults().http);
}

#[test]
fn unknown_key_is_named() {
    let err = Config::from_toml_str("[admin]\nlisten_on = \"x\"\n").unwrap_err().to_string();
    assert!(err.contains("listen_on"), "{err}");
}

#[test]
fn wrong_type_is_named() {
    let err = Config::from_toml_str("[shutdown]\ngrace = \"soon\"\n").unwrap_err().to_string();
    assert!(err.contains("grace"), "{err}");
}

#[test]
fn deadlines_must_fit_the_grace() {
    let err = Config::from_toml_str("[shutdown]\ngrace = \"10s\"\n").unwrap_err();
    match err {
        Error::Invalid { key, reason } => {
            assert_eq!(key, "shutdown.deadlines");
            assert!(reason.contains("28s"), "{reason}");
        }
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn range_rules_name_their_key() {
    for (toml, key) in [
        ("[supervisor]\nbackoff_factor = 0.5\n", "supervisor.backoff_factor"),
        ("[supervisor]\nbackoff_jitter = 1.5\n", "supervisor.backoff_jitter"),
        ("[supervisor]\nperiod = \"0s\"\n", "supervisor.period"),
        ("[watchdog]\nleak_factor = 1.0\n", "watchdog.leak_factor"),
        ("[watchdog]\nbaseline_samples = 0\n", "watchdog.baseline_samples"),
        ("[log]\nlevel = \" \"\n", "log.level"),
    ] {
        match Config::from_toml_str(toml) {
            Err(Error::Invalid { key: k, .. }) => assert_eq!(k, key, "{toml}"),
            other => panic!("{toml}: expected Invalid({key}), got {other:?}"),
        }
    }
}

#[test]
fn sizes_and_durations_take_units() {
    let c =
        Config::from_toml_str("[watchdog]\nrss_floor = \"1MiB\"\ninterval = \"250ms\"\n").unwrap();
    assert_eq!(c.watchdog.rss_floor.as_u64(), 1024 * 1024);
    assert_eq!(c.watchdog.interval, Duration::from_millis(250));
}

#[test]
fn missing_file_is_an_error() {
    let err = Config::load(Some(std::path::Path::new("/nonexistent/steward.toml"))).unwrap_err();
    assert!(matches!(err, Error::Missing(_)));
}

#[test]
fn tls_is_off_by_default_and_its_rules_name_their_key() {
    let c = Config::defaults();
    assert!(!c.tls.enabled());
    assert_eq!(c.tls.min_version, TlsVersion::Tls12);
    assert_eq!(c.tls.handshake_timeout, Duration::from_secs(3));
    assert_eq!(c.tls.reload_interval, Duration::from_secs(30));
    let on = Config::from_toml_str(
        "[tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\nmin_version = \"1.3\"\n",
    )
    .unwrap();
    assert!(on.tls.enabled());
    assert_eq!(on.tls.min_version, TlsVersion::Tls13);
    for (toml, key) in [
        ("[tls]\ncert_file = \"c.pem\"\n", "tls.key_file"),
        ("[tls]\nkey_file = \"k.pem\"\n", "tls.cert_file"),
        ("[tls]\nclient_ca_file = \"ca.pem\"\n", "tls.client_ca_file"),
        ("[tls]\nhandshake_timeout = \"0s\"\n", "tls.handshake_timeout"),
        ("[tls]\nreload_interval = \"0s\"\n", "tls.reload_interval"),
    ] {
        match Config::from_toml_str(toml) {
            Err(Error::Invalid { key: k, .. }) => assert_eq!(k, key, "{toml}"),
            other => panic!("{toml}: expected Invalid({key}), got {other:?}"),
        }
    }
    let err = Config::from_toml_str("[tls]\nmin_version = \"1.1\"\n").unwrap_err().to_string();
    assert!(err.contains("min_version"), "{err}");
}

#[test]
fn tls_min_version_reads_a_bare_number_from_the_environment() {
    let figment = figment::Figment::from(figment::providers::Toml::string(DEFAULT_TOML))
        .merge(figment::providers::Serialized::default("tls.min_version", 1.3));
    let c: Config = figment.extract().unwrap();
    assert_eq!(c.tls.min_version, TlsVersion::Tls13);
}
