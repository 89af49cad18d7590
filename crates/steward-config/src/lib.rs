//! Steward's configuration: the schema, the layering of file and environment, and validation.
//!
//! The defaults are `config/steward.toml`, embedded at build time ([`DEFAULT_TOML`]), so the
//! documented file and the compiled-in defaults can never disagree. Layers, lowest first: the
//! embedded defaults, the `--config` file, then `STEWARD__<SECTION>__<KEY>` environment variables.
//! Every struct denies unknown fields, so a typo is an error naming the key.
//!
//! This crate knows no runtime: no actix, no tokio, no network.
#![forbid(unsafe_code)]

mod error;
mod schema;
#[cfg(test)]
mod secret_tests;
#[cfg(test)]
mod tests;

pub use error::{Error, Result};
pub use schema::*;

use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};

/// The documented defaults, `config/steward.toml`, as compiled into the binary.
pub const DEFAULT_TOML: &str = include_str!("../../../config/steward.toml");

/// Prefix of environment overrides; sections and keys are separated by `__`
/// (`STEWARD__ADMIN__LISTEN=127.0.0.1:19090`).
pub const ENV_PREFIX: &str = "STEWARD__";

/// Shortest configured admin token, in characters: 32 (a random token of 32 hex characters holds
/// 128 bits, NIST SP 800-63B's floor for a look-up secret is far below that; guessing is what the
/// per-IP failure limit is for). A generated token is 64 hex characters.
pub const MIN_ADMIN_TOKEN: usize = 32;

/// Environment variables of the services Steward replaces that keep working as aliases of a
/// config key (seed 001's proxy read these), weaker than `STEWARD__*`.
pub const ENV_ALIASES: [(&str, &str); 2] = [
    ("PRODUCER_CLEANUP_TIMEOUT", "messaging.producer_cleanup_timeout"),
    ("CONSUMER_CLEANUP_TIMEOUT", "messaging.consumer_cleanup_timeout"),
];

/// The [`ENV_ALIASES`] as a figment provider.
fn seed_aliases() -> Env {
    Env::raw()
        .filter(|key| ENV_ALIASES.iter().any(|(alias, _)| key.as_str().eq_ignore_ascii_case(alias)))
        .map(|key| {
            ENV_ALIASES
                .iter()
                .find(|(alias, _)| key.as_str().eq_ignore_ascii_case(alias))
                .map_or_else(|| key.into(), |(_, target)| (*target).into())
        })
}

/// Words that mark a key's value as a secret: a config error about such a key never shows the
/// value (`admin.token`, a future `*.password`, `*.secret`).
pub const SECRET_KEY_WORDS: [&str; 3] = ["token", "password", "secret"];

/// Whether the dotted key `path` names a secret (one of its parts contains a
/// [`SECRET_KEY_WORDS`] word, case-insensitively).
#[must_use]
pub fn is_secret_key<S: AsRef<str>>(path: &[S]) -> bool {
    path.iter().any(|part| {
        let part = part.as_ref().to_ascii_lowercase();
        SECRET_KEY_WORDS.iter().any(|w| part.contains(w))
    })
}

/// `e` with the value taken out of every error about a secret key: figment's message would
/// otherwise quote it ("invalid type: found string \"…\"").
fn redact(e: figment::Error) -> figment::Error {
    use figment::error::{Actual, Kind};
    let mut out: Option<figment::Error> = None;
    for mut one in e {
        if is_secret_key(&one.path) {
            let hidden = || Actual::Other("a value (not shown: the key holds a secret)".into());
            one.kind = match one.kind {
                Kind::InvalidType(_, expected) => Kind::InvalidType(hidden(), expected),
                Kind::InvalidValue(_, expected) => Kind::InvalidValue(hidden(), expected),
                Kind::Message(_) => {
                    Kind::Message("invalid value (not shown: the key holds a secret)".into())
                }
                Kind::UnknownVariant(_, expected) => {
                    Kind::UnknownVariant("(not shown)".into(), expected)
                }
                other => other,
            };
        }
        out = Some(match out {
            None => one,
            Some(prev) => prev.chain(one),
        });
    }
    out.unwrap_or_else(|| figment::Error::from("invalid configuration".to_owned()))
}

/// `url` with any password in it replaced by `***` (a user name kept; a lone user part, often a
/// token, replaced too) and secret-looking query parameters (`token=`, `password=`, `secret=`)
/// replaced by `***`, for logs: a NATS, PostgreSQL or CDP URL may carry credentials. Something
/// that is not a URL is returned as is when it has no `@`, else as `<redacted>`.
#[must_use]
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return if url.contains('@') { "<redacted>".to_owned() } else { url.to_owned() };
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let tail = redact_query(tail);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return format!("{scheme}://{authority}{tail}");
    };
    let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
    if userinfo.contains(':') {
        format!("{scheme}://{user}:***@{host}{tail}")
    } else {
        // a lone user part is often a token (nats://<token>@host)
        format!("{scheme}://***@{host}{tail}")
    }
}

/// A query string's secret-looking parameters (`?token=…`, `password=…`) replaced by `***`.
fn redact_query(tail: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else { return tail.to_owned() };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if is_secret_key(&[k]) => format!("{k}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{path}?{}", query.join("&"))
}

impl Config {
    /// Loads the configuration: embedded defaults, then `path` if given, then the environment;
    /// then validates it.
    ///
    /// # Errors
    /// [`Error::Load`] when the file cannot be read or parsed, or a key is unknown or has the
    /// wrong type (the message names the key and its source); [`Error::Invalid`] when a value is
    /// out of range (see [`Config::validate`]).
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = path {
            if !path.is_file() {
                return Err(Error::Missing(path.to_path_buf()));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(seed_aliases()).merge(Env::prefixed(ENV_PREFIX).split("__"));
        Self::extract(&figment)
    }

    /// Parses a complete or partial TOML document layered over the defaults, without the
    /// environment. Used by tests and by tools that check a file in isolation.
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn from_toml_str(toml: &str) -> Result<Self> {
        let figment = Figment::from(Toml::string(DEFAULT_TOML)).merge(Toml::string(toml));
        Self::extract(&figment)
    }

    fn extract(figment: &Figment) -> Result<Self> {
        let config: Self = figment.extract().map_err(|e| Error::Load(Box::new(redact(e))))?;
        config.validate()?;
        Ok(config)
    }

    /// The defaults alone, exactly `config/steward.toml`.
    ///
    /// # Panics
    /// Never in a built binary: the embedded file is parsed and validated by this crate's tests.
    #[must_use]
    pub fn defaults() -> Self {
        Self::from_toml_str("").expect("embedded config/steward.toml is valid")
    }

    /// Checks the rules the types cannot express.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the key, when: the shutdown phase deadlines add up to more than
    /// `shutdown.grace`; `supervisor.backoff_factor` < 1; `supervisor.backoff_jitter` outside
    /// 0..=1; `supervisor.backoff_base` > `supervisor.backoff_max`; `supervisor.period` is zero;
    /// `watchdog.leak_factor` <= 1; `watchdog.interval` or `watchdog.baseline_samples` is zero;
    /// `log.level` is empty; `registry.stopped_capacity` is zero; `store.max_connections` is
    /// outside 1..=100; `store.url` is neither empty, `sqlite:` nor `postgres://`;
    /// `tenancy.token_cache_ttl` is above 1 s; `tenancy.purge_batch`, `tenancy.max_tenants` or
    /// `tenancy.purge_max_sleep` is zero; only one of `tls.cert_file` and `tls.key_file` is set,
    /// or `tls.client_ca_file` without them; `tls.handshake_timeout` or `tls.reload_interval` is
    /// zero.
    pub fn validate(&self) -> Result<()> {
        let sum = self.shutdown.deadlines.sum();
        if sum > self.shutdown.grace {
            return Err(Error::invalid(
                "shutdown.deadlines",
                format!(
                    "phase deadlines add up to {}, more than shutdown.grace {}",
                    humantime::format_duration(sum),
                    humantime::format_duration(self.shutdown.grace)
                ),
            ));
        }
        let s = &self.supervisor;
        if s.period.is_zero() {
            return Err(Error::invalid("supervisor.period", "must be greater than 0s"));
        }
        if !(s.backoff_factor >= 1.0 && s.backoff_factor.is_finite()) {
            return Err(Error::invalid(
                "supervisor.backoff_factor",
                "must be a finite number >= 1",
            ));
        }
        if !(0.0..=1.0).contains(&s.backoff_jitter) {
            return Err(Error::invalid("supervisor.backoff_jitter", "must be between 0 and 1"));
        }
        if s.backoff_base > s.backoff_max {
            return Err(Error::invalid(
                "supervisor.backoff_base",
                "must not be greater than supervisor.backoff_max",
            ));
        }
        let w = &self.watchdog;
        if w.interval.is_zero() {
            return Err(Error::invalid("watchdog.interval", "must be greater than 0s"));
        }
        if w.baseline_samples == 0 {
            return Err(Error::invalid("watchdog.baseline_samples", "must be at least 1"));
        }
        if !(w.leak_factor > 1.0 && w.leak_factor.is_finite()) {
            return Err(Error::invalid("watchdog.leak_factor", "must be a finite number > 1"));
        }
        if self.registry.stopped_capacity == 0 {
            return Err(Error::invalid("registry.stopped_capacity", "must be at least 1"));
        }
        let st = &self.store;
        if !(1..=100).contains(&st.max_connections) {
            return Err(Error::invalid("store.max_connections", "must be between 1 and 100"));
        }
        if st.connect_timeout.is_zero() {
            return Err(Error::invalid("store.connect_timeout", "must be greater than 0s"));
        }
        if !(st.url.is_empty()
            || st.url.starts_with("sqlite:")
            || st.url.starts_with("postgres://")
            || st.url.starts_with("postgresql://"))
        {
            return Err(Error::invalid(
                "store.url",
                "must be empty (embedded SQLite), sqlite://<path> or postgres://…",
            ));
        }
        if st.url.is_empty() && st.data_dir.as_os_str().is_empty() {
            return Err(Error::invalid("store.data_dir", "must not be empty"));
        }
        let t = &self.tenancy;
        if t.token_cache_ttl > Duration::from_secs(1) {
            return Err(Error::invalid(
                "tenancy.token_cache_ttl",
                "must be at most 1s (revocation must take effect within 1 s)",
            ));
        }
        if t.purge_batch == 0 {
            return Err(Error::invalid("tenancy.purge_batch", "must be at least 1"));
        }
        if t.purge_max_sleep.is_zero() {
            return Err(Error::invalid("tenancy.purge_max_sleep", "must be greater than 0s"));
        }
        if t.max_tenants == 0 {
            return Err(Error::invalid("tenancy.max_tenants", "must be at least 1"));
        }
        self.validate_doors()?;
        self.validate_socket()?;
        self.validate_jobs()?;
        self.validate_streams()?;
        self.validate_rtc()?;
        self.validate_messaging()?;
        self.validate_browser()?;
        if self.log.level.trim().is_empty() {
            return Err(Error::invalid("log.level", "must not be empty"));
        }
        self.validate_tls()?;
        Ok(())
    }

    fn validate_tls(&self) -> Result<()> {
        let t = &self.tls;
        let (cert, key) = (t.cert_file.as_os_str().is_empty(), t.key_file.as_os_str().is_empty());
        if cert != key {
            return Err(Error::invalid(
                if cert { "tls.cert_file" } else { "tls.key_file" },
                "tls.cert_file and tls.key_file must be set together or both left empty",
            ));
        }
        if cert && !t.client_ca_file.as_os_str().is_empty() {
            return Err(Error::invalid(
                "tls.client_ca_file",
                "needs tls.cert_file and tls.key_file (client certificates need TLS on)",
            ));
        }
        for (field, d) in [
            ("tls.handshake_timeout", t.handshake_timeout),
            ("tls.reload_interval", t.reload_interval),
        ] {
            if d.is_zero() {
                return Err(Error::invalid(field, "must be greater than 0s"));
            }
        }
        Ok(())
    }

    /// The front doors: the admin token's length (the rule is named, never the value), the
    /// failed-authentication limits and the gRPC connection limits.
    fn validate_doors(&self) -> Result<()> {
        let token = &self.admin.token;
        if !token.is_empty() && token.chars().count() < MIN_ADMIN_TOKEN {
            return Err(Error::invalid(
                "admin.token",
                format!(
                    "must be at least {MIN_ADMIN_TOKEN} characters (or empty: Steward generates one)"
                ),
            ));
        }
        for (field, zero) in [
            ("admin.max_auth_failures_per_ip", self.admin.max_auth_failures_per_ip == 0),
            ("tenancy.max_auth_failures_per_ip", self.tenancy.max_auth_failures_per_ip == 0),
            ("grpc.max_concurrent_streams", self.grpc.max_concurrent_streams == 0),
            ("grpc.max_connections_per_ip", self.grpc.max_connections_per_ip == 0),
        ] {
            if zero {
                return Err(Error::invalid(field, "must be at least 1"));
            }
        }
        for (field, d) in [
            ("admin.auth_failure_window", self.admin.auth_failure_window),
            ("tenancy.auth_failure_window", self.tenancy.auth_failure_window),
        ] {
            if d.is_zero() {
                return Err(Error::invalid(field, "must be greater than 0s"));
            }
        }
        Ok(())
    }

    fn validate_socket(&self) -> Result<()> {
        let s = &self.socket;
        for (field, zero) in [
            ("socket.max_connections", s.max_connections == 0),
            ("socket.max_per_ip", s.max_per_ip == 0),
            ("socket.queue_messages", s.queue_messages == 0),
            ("socket.rate_limit", s.rate_limit == 0),
            ("socket.rate_burst", s.rate_burst == 0),
            ("socket.max_subscriptions", s.max_subscriptions == 0),
            ("socket.shutdown_batch", s.shutdown_batch == 0),
            ("socket.monitor.baseline_samples", s.monitor.baseline_samples == 0),
        ] {
            if zero {
                return Err(Error::invalid(field, "must be at least 1"));
            }
        }
        for (field, d) in [
            ("socket.ping_interval", s.ping_interval),
            ("socket.pong_timeout", s.pong_timeout),
            ("socket.write_timeout", s.write_timeout),
            ("socket.close_timeout", s.close_timeout),
            ("socket.abuse_window", s.abuse_window),
            ("socket.monitor.interval", s.monitor.interval),
        ] {
            if d.is_zero() {
                return Err(Error::invalid(field, "must be greater than 0s"));
            }
        }
        if s.max_frame.as_u64() < 1024 || s.max_frame > s.max_message {
            return Err(Error::invalid(
                "socket.max_frame",
                "must be at least 1KiB and not more than socket.max_message",
            ));
        }
        if s.queue_bytes.as_u64() < 1024 {
            return Err(Error::invalid("socket.queue_bytes", "must be at least 1KiB"));
        }
        for proxy in &s.trusted_proxies {
            if parse_ip_range(proxy).is_none() {
                return Err(Error::invalid(
                    "socket.trusted_proxies",
                    format!("`{proxy}` is neither an IP address nor a CIDR range"),
                ));
            }
        }
        let m = &s.monitor;
        if !(m.max_growth > 0.0 && m.max_growth.is_finite()) {
            return Err(Error::invalid("socket.monitor.max_growth", "must be a finite number > 0"));
        }
        if !(0.0..=1.0).contains(&m.max_inactive_ratio) {
            return Err(Error::invalid(
                "socket.monitor.max_inactive_ratio",
                "must be between 0 and 1",
            ));
        }
        Ok(())
    }

    fn validate_messaging(&self) -> Result<()> {
        let m = &self.messaging;
        for (field, zero) in [
            ("messaging.max_producers", m.max_producers == 0),
            ("messaging.max_consumers", m.max_consumers == 0),
            ("messaging.max_batch", m.max_batch == 0),
            ("messaging.max_outstanding_messages", m.max_outstanding_messages == 0),
            ("messaging.max_delivery_attempts", m.max_delivery_attempts == 0),
            ("messaging.topic_max_messages", m.topic_max_messages == 0),
        ] {
            if zero {
                return Err(Error::invalid(field, "must be at least 1"));
            }
        }
        for (field, d) in [
            ("messaging.send_timeout", m.send_timeout),
            ("messaging.producer_cleanup_timeout", m.producer_cleanup_timeout),
            ("messaging.producer_sweep_interval", m.producer_sweep_interval),
            ("messaging.invisible_duration", m.invisible_duration),
            ("messaging.heartbeat_interval", m.heartbeat_interval),
            ("messaging.write_stall_timeout", m.write_stall_timeout),
            ("messaging.dedup_window", m.dedup_window),
        ] {
            if d.is_zero() {
                return Err(Error::invalid(field, "must be greater than 0s"));
            }
        }
        if m.invisible_duration > m.max_invisible_duration {
            return Err(Error::invalid(
                "messaging.invisible_duration",
                "must not be greater than messaging.max_invisible_duration",
            ));
        }
        if m.max_outstanding_messages > m.max_outstanding_messages_limit
            || m.max_outstanding_bytes > m.max_outstanding_bytes_limit
        {
            return Err(Error::invalid(
                "messaging.max_outstanding_messages",
                "the defaults must not exceed their limits",
            ));
        }
        if m.max_body > m.max_message {
            return Err(Error::invalid(
                "messaging.max_body",
                "must not be greater than messaging.max_message",
            ));
        }
        if m.max_request < m.max_message {
            return Err(Error::invalid(
                "messaging.max_request",
                "must not be smaller than messaging.max_message (one delivery must fit a frame)",
            ));
        }
        if m.backend == BrokerBackend::Nats && m.url.trim().is_empty() {
            return Err(Error::invalid("messaging.url", "must name a NATS server"));
        }
        Ok(())
    }

    fn validate_browser(&self) -> Result<()> {
        let b = &self.browser;
        if b.executable.trim().is_empty() {
            return Err(Error::invalid("browser.executable", "must name a Chromium executable"));
        }
        for (field, zero) in [
            ("browser.max_sessions", b.max_sessions == 0),
            ("browser.max_viewport_width", b.max_viewport_width == 0),
            ("browser.max_viewport_height", b.max_viewport_height == 0),
            ("browser.max_screenshot_height", b.max_screenshot_height == 0),
            ("browser.max_result", b.max_result.as_u64() == 0),
            ("browser.max_request", b.max_request.as_u64() < 1024),
        ] {
            if zero {
                let what = if field == "browser.max_request" { "1KiB" } else { "1" };
                return Err(Error::invalid(field, format!("must be at least {what}")));
            }
        }
        for (field, d) in [
            ("browser.launch_timeout", b.launch_timeout),
            ("browser.connect_timeout", b.connect_timeout),
            ("browser.heartbeat_interval", b.heartbeat_interval),
            ("browser.heartbeat_timeout", b.heartbeat_timeout),
            ("browser.command_timeout", b.command_timeout),
            ("browser.close_timeout", b.close_timeout),
            ("browser.reconcile_interval", b.reconcile_interval),
            ("browser.session_idle_ttl", b.session_idle_ttl),
            ("browser.session_max_lifetime", b.session_max_lifetime),
            ("browser.queue_timeout", b.queue_timeout),
            ("browser.navigate_timeout", b.navigate_timeout),
            ("browser.evaluate_timeout", b.evaluate_timeout),
            ("browser.screenshot_timeout", b.screenshot_timeout),
        ] {
            if d.is_zero() {
                return Err(Error::invalid(field, "must be greater than 0s"));
            }
        }
        if b.session_idle_ttl > b.session_max_lifetime {
            return Err(Error::invalid(
                "browser.session_idle_ttl",
                "must not be greater than browser.session_max_lifetime",
            ));
        }
        if b.heartbeat_timeout > b.heartbeat_interval {
            return Err(Error::invalid(
                "browser.heartbeat_timeout",
                "must not be greater than browser.heartbeat_interval",
            ));
        }
        Ok(())
    }

    fn validate_jobs(&self) -> Result<()> {
        let j = &self.jobs;
        if j.max_jobs == 0 {
            return Err(Error::invalid("jobs.max_jobs", "must be at least 1"));
        }
        if j.sweep_interval.is_zero() {
            return Err(Error::invalid("jobs.sweep_interval", "must be greater than 0s"));
        }
        if j.max_data.as_u64() < 2 {
            return Err(Error::invalid("jobs.max_data", "must be at least 2B (an empty object)"));
        }
        if j.max_kind_len == 0 || j.watch_buffer == 0 {
            return Err(Error::invalid(
                if j.max_kind_len == 0 { "jobs.max_kind_len" } else { "jobs.watch_buffer" },
                "must be at least 1",
            ));
        }
        Ok(())
    }

    fn validate_rtc(&self) -> Result<()> {
        let r = &self.rtc;
        if r.udp_port_range().is_none() {
            return Err(Error::invalid(
                "rtc.udp_ports",
                "must be \"<first>-<last>\", 0 < first <= last",
            ));
        }
        for (field, d) in [
            ("rtc.candidate_ttl", r.candidate_ttl),
            ("rtc.join_timeout", r.join_timeout),
            ("rtc.negotiation_timeout", r.negotiation_timeout),
            ("rtc.ice_timeout", r.ice_timeout),
            ("rtc.disconnected_grace", r.disconnected_grace),
            ("rtc.empty_timeout", r.empty_timeout),
            ("rtc.departure_timeout", r.departure_timeout),
            ("rtc.shutdown_timeout", r.shutdown_timeout),
        ] {
            if d.is_zero() {
                return Err(Error::invalid(field, "must be greater than 0s"));
            }
        }
        for (field, n) in [
            ("rtc.max_peers", r.max_peers),
            ("rtc.max_rooms", r.max_rooms),
            ("rtc.max_participants", r.max_participants),
            ("rtc.max_tracks", r.max_tracks),
            ("rtc.max_candidates", r.max_candidates),
            ("rtc.forward_queue", r.forward_queue),
            ("rtc.shutdown_concurrency", r.shutdown_concurrency),
        ] {
            if n == 0 {
                return Err(Error::invalid(field, "must be at least 1"));
            }
        }
        if r.data_channel_buffer.as_u64() < r.max_data_message.as_u64()
            || r.max_data_message.as_u64() == 0
        {
            return Err(Error::invalid(
                "rtc.max_data_message",
                "must be at least 1B and at most rtc.data_channel_buffer",
            ));
        }
        Ok(())
    }

    fn validate_streams(&self) -> Result<()> {
        let s = &self.streams;
        if s.engine == StreamEngineKind::Redis {
            let scheme = s.url.split_once("://").map(|(scheme, _)| scheme);
            if !matches!(scheme, Some("redis" | "rediss")) {
                return Err(Error::invalid(
                    "streams.url",
                    "must be a redis:// or rediss:// URL with the redis engine",
                ));
            }
        }
        if s.history_size > 100_000 {
            return Err(Error::invalid("streams.history_size", "must be at most 100000"));
        }
        for (field, d) in [
            ("streams.history_ttl", s.history_ttl),
            ("streams.idle_timeout", s.idle_timeout),
            ("streams.timeout", s.timeout),
        ] {
            if d.is_zero() {
                return Err(Error::invalid(field, "must be greater than 0s"));
            }
        }
        for (field, n) in [
            ("streams.max_streams", s.max_streams),
            ("streams.max_latest", s.max_latest),
            ("streams.watch_buffer", s.watch_buffer),
        ] {
            if n == 0 {
                return Err(Error::invalid(field, "must be at least 1"));
            }
        }
        if s.max_data.as_u64() == 0 || s.max_data.as_u64() > 16 * 1024 * 1024 {
            return Err(Error::invalid("streams.max_data", "must be between 1B and 16MiB"));
        }
        Ok(())
    }
}

/// Parses `"203.0.113.7"` (one address) or `"10.0.0.0/8"` (a CIDR range) with `ipnet`.
/// `None` when it is neither.
#[must_use]
pub fn parse_ip_range(s: &str) -> Option<ipnet::IpNet> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>().ok().or_else(|| s.parse::<std::net::IpAddr>().ok().map(Into::into))
}
