//! Secrets in config errors and logs (issue 15, "secrets stay secret").

use super::*;

#[test]
fn a_short_admin_token_is_refused_naming_the_rule_not_the_value() {
    let value = "short-but-secret-value";
    let err = Config::from_toml_str(&format!("[admin]\ntoken = \"{value}\"\n")).unwrap_err();
    match &err {
        Error::Invalid { key, reason } => {
            assert_eq!(*key, "admin.token");
            assert!(reason.contains("at least 32 characters"), "{reason}");
        }
        other => panic!("expected Invalid(admin.token), got {other:?}"),
    }
    assert!(!err.to_string().contains(value), "{err}");
    let long = "x".repeat(MIN_ADMIN_TOKEN);
    Config::from_toml_str(&format!("[admin]\ntoken = \"{long}\"\n")).unwrap();
    Config::from_toml_str("[admin]\ntoken = \"\"\n").unwrap();
}

#[test]
fn no_config_error_echoes_the_value_of_a_secret_key() {
    // a wrong type on a secret key: figment would quote the value
    for toml in
        ["[admin]\ntoken = 12345678901234567\n", "[admin]\ntoken = [\"s3cr3t-in-a-list\"]\n"]
    {
        let err = Config::from_toml_str(toml).unwrap_err().to_string();
        assert!(err.contains("admin.token"), "the key is named: {err}");
        for leak in ["12345678901234567", "s3cr3t-in-a-list"] {
            assert!(!err.contains(leak), "{err}");
        }
    }
    // a non-secret key keeps figment's full message
    let err = Config::from_toml_str("[http]\nworkers = \"many\"\n").unwrap_err().to_string();
    assert!(err.contains("many"), "{err}");
}

#[test]
fn urls_with_credentials_are_logged_redacted() {
    for (url, want) in [
        ("nats://alice:pa55@nats.local:4222", "nats://alice:***@nats.local:4222"),
        ("nats://s3cr3ttoken@127.0.0.1:4222", "nats://***@127.0.0.1:4222"),
        (
            "postgres://app:pw@db:5432/steward?sslmode=require",
            "postgres://app:***@db:5432/steward?sslmode=require",
        ),
        ("wss://cdp.example/devtools?token=abc&x=1", "wss://cdp.example/devtools?token=***&x=1"),
        ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
        ("user:pw@host", "<redacted>"),
        ("", ""),
    ] {
        assert_eq!(redact_url(url), want, "{url}");
    }
}
