//! The configuration schema. Field docs are the reference; `config/steward.toml` repeats them
//! with the defaults.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

/// The whole configuration of one `steward` process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[admin]`: the admin HTTP listener.
    pub admin: AdminConfig,
    /// `[http]`: the public HTTP listener.
    pub http: HttpConfig,
    /// `[grpc]`: the gRPC listener and its runtime.
    pub grpc: GrpcConfig,
    /// `[supervisor]`: default restart policy of supervisors.
    pub supervisor: SupervisorConfig,
    /// `[registry]`: the resource registry.
    pub registry: RegistryConfig,
    /// `[idle]`: idle timeouts per resource kind.
    pub idle: IdleConfig,
    /// `[shutdown]`: the graceful shutdown grace and phase deadlines.
    pub shutdown: ShutdownConfig,
    /// `[watchdog]`: the leak watchdog.
    pub watchdog: WatchdogConfig,
    /// `[log]`: logging.
    pub log: LogConfig,
    /// `[store]`: where tenants and API tokens are kept.
    pub store: StoreConfig,
    /// `[tenancy]`: token cache, quota defaults and expiry purge.
    pub tenancy: TenancyConfig,
    /// `[socket]`: the WebSocket front door (`GET /v1/ws`) and its per-socket limits.
    pub socket: SocketConfig,
    /// `[jobs]`: the job hub (asynchronous jobs that sockets and `WatchJob` follow).
    pub jobs: JobsConfig,
    /// `[messaging]`: the producer/consumer proxy and its broker (embedded or NATS JetStream).
    pub messaging: MessagingConfig,
    /// `[browser]`: the Chromium pool and browser sessions (`steward.browser.v1.Browser`).
    pub browser: BrowserConfig,
    /// `[streams]`: streams with a last-value cache, history and recovery
    /// (`steward.streams.v1.Streams`, WebSocket `subscribe {stream}`).
    pub streams: StreamsConfig,
    /// `[rtc]`: WebRTC rooms (`GET /v1/rtc` signaling, `steward.rtc.v1.Rooms`).
    pub rtc: RtcConfig,
    /// `[tls]`: TLS on the public HTTP listener and the gRPC listeners (rustls). Off by default:
    /// plain TCP, for running behind a proxy that terminates TLS.
    pub tls: TlsConfig,
}

/// `[admin]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Listen address. Default `127.0.0.1:9090` (loopback only).
    pub listen: SocketAddr,
    /// Bearer token for `/v1/*` (HTTP) and `steward.admin.v1` (gRPC); at least 32 characters
    /// (`MIN_ADMIN_TOKEN`). Default empty: a random token is generated at start and written to
    /// `<data dir>/admin-token` (mode 0600); the log says where, never what.
    pub token: String,
    /// Failed admin authentications allowed per client IP within `auth_failure_window`; beyond
    /// them the IP is answered 429 / `RESOURCE_EXHAUSTED` until the window ends. Default 10.
    pub max_auth_failures_per_ip: u32,
    /// The window of `max_auth_failures_per_ip`, from an IP's first failure. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub auth_failure_window: Duration,
}

/// `[http]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Public listen address. Default `0.0.0.0:8080`.
    pub listen: SocketAddr,
    /// actix-web worker threads per HTTP listener; 0 = one per core. Default 1.
    pub workers: usize,
}

/// `[grpc]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcConfig {
    /// Listen address. Default `0.0.0.0:50051`.
    pub listen: SocketAddr,
    /// Worker threads of tonic's own multi-thread runtime; 0 = one per core. Default 2.
    pub worker_threads: usize,
    /// HTTP/2 keepalive PING interval. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub http2_keepalive_interval: Duration,
    /// HTTP/2 keepalive PING acknowledgement timeout. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub http2_keepalive_timeout: Duration,
    /// TCP keepalive on accepted connections. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub tcp_keepalive: Duration,
    /// The admin gRPC listener (`steward.admin.v1.Admin`, health, reflection): its own supervised
    /// service, so nothing administrative answers on the public port. Default `127.0.0.1:9091`.
    pub admin_listen: SocketAddr,
    /// Most concurrent HTTP/2 streams per connection (`SETTINGS_MAX_CONCURRENT_STREAMS`, RFC 9113
    /// §6.5.2) on both gRPC listeners: the next stream is refused with `REFUSED_STREAM`, which
    /// clients retry. Default 100.
    pub max_concurrent_streams: u32,
    /// Most open gRPC connections from one client IP, per listener; beyond it a new connection is
    /// closed at once and counted. Default 100.
    pub max_connections_per_ip: u32,
}

/// `[supervisor]`: restart intensity (OTP) and restart backoff.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisorConfig {
    /// More than this many restarts within `period` escalates. Default 3 (Elixir's default).
    pub max_restarts: u32,
    /// Window of the restart intensity. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub period: Duration,
    /// Delay before the first restart. Default 100 ms.
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    /// Growth of the delay per consecutive restart (>= 1). Default 2.0.
    pub backoff_factor: f64,
    /// Upper bound of the delay. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Random spread of each delay, as a fraction (0..=1). Default 0.2 (+/- 20 %).
    pub backoff_jitter: f64,
    /// Uptime after which a child's backoff is reset. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub backoff_reset_after: Duration,
    /// Graceful stop deadline of one child before it is killed. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub child_shutdown: Duration,
}

/// `[registry]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// How long stopped entries stay visible. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub stopped_retention: Duration,
    /// Most stopped entries kept. Default 1024.
    pub stopped_capacity: usize,
}

/// `[idle]`: idle timeout per resource kind; zero disables it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdleConfig {
    /// Browsers. Default 0 s (off: a browser lives while it holds sessions).
    #[serde(with = "humantime_serde")]
    pub browser: Duration,
    /// Browser sessions. Default 5 min.
    #[serde(with = "humantime_serde")]
    pub session: Duration,
    /// Message producers. Default 0 s: the messaging sweep owns their idle timeout
    /// (`[messaging] producer_cleanup_timeout`, seed 001's `PRODUCER_CLEANUP_TIMEOUT`).
    #[serde(with = "humantime_serde")]
    pub producer: Duration,
    /// Message consumers. Default 0 s (off: a consumer lives as long as its stream).
    #[serde(with = "humantime_serde")]
    pub consumer: Duration,
    /// WebSocket sockets (seed 002). Default 24 h.
    #[serde(with = "humantime_serde")]
    pub socket: Duration,
    /// WebRTC peers. Default 0 s (off: peers have per-state deadlines).
    #[serde(with = "humantime_serde")]
    pub peer: Duration,
    /// Streams. Default 0 s (off: a stream owns its idle rule, `[streams] idle_timeout`, since
    /// only it knows whether it is empty and unwatched).
    #[serde(with = "humantime_serde")]
    pub stream: Duration,
    /// Steward's own services. Default 0 s (off).
    #[serde(with = "humantime_serde")]
    pub service: Duration,
}

/// `[shutdown]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// Total graceful shutdown budget. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    /// `[shutdown.deadlines]`: one deadline per phase.
    pub deadlines: PhaseDeadlines,
}

/// `[shutdown.deadlines]`: the deadline of each shutdown phase, in running order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseDeadlines {
    /// Readiness turns 503 / NOT_SERVING, then this whole time passes so load balancers notice
    /// before anything stops accepting. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub readiness_off: Duration,
    /// Listeners stop accepting new connections, upgrades and streams. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub stop_accepting: Duration,
    /// Clients are told (WebSocket Close 1001, gRPC streams end `UNAVAILABLE`). Default 3 s.
    #[serde(with = "humantime_serde")]
    pub notify_clients: Duration,
    /// Producers flush and consumers return in-flight messages. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub drain_messaging: Duration,
    /// Browser sessions close. Default 4 s.
    #[serde(with = "humantime_serde")]
    pub sessions: Duration,
    /// WebRTC peers close. Default 3 s.
    #[serde(with = "humantime_serde")]
    pub peers: Duration,
    /// WebSocket sockets close. Default 3 s.
    #[serde(with = "humantime_serde")]
    pub sockets: Duration,
    /// Browsers close, their process groups are killed and reaped, profiles removed. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub browsers: Duration,
    /// Services stop (in reverse start order), then stores and telemetry flush. Default 3 s.
    #[serde(with = "humantime_serde")]
    pub flush: Duration,
}

impl PhaseDeadlines {
    /// The sum of all phase deadlines; [`Config::validate`] requires it to fit `shutdown.grace`.
    #[must_use]
    pub fn sum(&self) -> Duration {
        [
            self.readiness_off,
            self.stop_accepting,
            self.notify_clients,
            self.drain_messaging,
            self.sessions,
            self.peers,
            self.sockets,
            self.browsers,
            self.flush,
        ]
        .iter()
        .sum()
    }
}

/// `[watchdog]`: the leak watchdog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchdogConfig {
    /// Sampling interval. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Number of samples averaged into the baseline. Default 6.
    pub baseline_samples: u32,
    /// Multiple of the baseline above which a count is a potential leak (> 1). Default 3.0.
    pub leak_factor: f64,
    /// Floor for resource and task counts: below it nothing alarms. Default 100.
    pub count_floor: u64,
    /// Floor for open file descriptors. Default 256.
    pub fd_floor: u64,
    /// Floor for resident memory. Default 256 MiB.
    pub rss_floor: ByteSize,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Level or EnvFilter directive. Default `info`. `RUST_LOG` wins when set.
    pub level: String,
    /// Output format. Default `text`.
    pub format: LogFormat,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[store]`: the database of tenants and API tokens (sqlx).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Database URL. Empty (default): the embedded SQLite file `steward.db` under `data_dir`,
    /// created on first start. `sqlite://<path>` names another SQLite file;
    /// `postgres://user@host:port/db` uses PostgreSQL, so several nodes share tenants and tokens.
    pub url: String,
    /// Directory for Steward's own files (the embedded SQLite database); created if missing.
    /// Relative paths are relative to the working directory. Default `data`.
    pub data_dir: PathBuf,
    /// Most open connections of the pool (1..=100). Default 8.
    pub max_connections: u32,
    /// How long to wait for a connection (at start and per query). Default 5 s.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
}

/// `[tenancy]`: authentication cache, expiry purge and default quotas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenancyConfig {
    /// How long a resolved API token stays cached (0..=1 s: a revocation made on another node
    /// takes effect within this time; on this node it takes effect at once). Default 1 s.
    #[serde(with = "humantime_serde")]
    pub token_cache_ttl: Duration,
    /// Most cached tokens. Default 10000.
    pub token_cache_capacity: u64,
    /// Longest `expires_in` a new token may have; 0 s = no limit (tokens may also never
    /// expire). Default 0 s.
    #[serde(with = "humantime_serde")]
    pub max_token_lifetime: Duration,
    /// How many of the earliest-expiring tokens the purge's deadline queue loads at once.
    /// Default 256.
    pub purge_batch: u32,
    /// Longest sleep of the purge between looks at the store, so tokens created on other nodes
    /// are purged too. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub purge_max_sleep: Duration,
    /// `Retry-After` for a refused admission when a live-resource quota is full (a retry
    /// succeeds once one of the tenant's resources stops). Default 1 s.
    #[serde(with = "humantime_serde")]
    pub quota_retry_after: Duration,
    /// Failed tenant-token authentications allowed per client IP within `auth_failure_window`
    /// (public HTTP, WebSocket and public gRPC); beyond them the IP is answered 429 /
    /// `RESOURCE_EXHAUSTED` until the window ends. Default 30.
    pub max_auth_failures_per_ip: u32,
    /// The window of `max_auth_failures_per_ip`, from an IP's first failure. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub auth_failure_window: Duration,
    /// Most tenants (`POST /v1/tenants` answers 429 beyond it). Default 10000.
    pub max_tenants: u32,
    /// Most live tokens per tenant. Default 100.
    pub max_tokens_per_tenant: u32,
    /// `[tenancy.default_quotas]`: quotas of a tenant that does not override them.
    pub default_quotas: QuotaDefaults,
}

/// `[tenancy.default_quotas]`: per-tenant limits unless the tenant overrides them. 0 forbids
/// the kind for the tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaDefaults {
    /// Live browser sessions (browserless `CONCURRENT`-style; seed 000). Default 5.
    pub sessions: u32,
    /// Open pages in one session. Default 5.
    pub pages_per_session: u32,
    /// Session creations per minute. Default 30.
    pub session_rate: u32,
    /// Live message producers. Default 100.
    pub producers: u32,
    /// Live message consumers (streams). Default 100.
    pub consumers: u32,
    /// Live WebSocket sockets. Default 1000.
    pub sockets: u32,
    /// Live WebRTC peers. Default 50.
    pub peers: u32,
    /// Messaging topics that exist (embedded topics; NATS streams). Default 1000.
    pub topics: u32,
    /// Consumer groups that exist, over all the tenant's topics. Default 1000.
    pub groups: u32,
    /// Messages stored and not yet acked by every group, over all the tenant's topics. Default
    /// 100000.
    pub stored_messages: u32,
    /// Bytes of those messages (body, tag, keys, properties). Default 64 MiB.
    pub stored_bytes: ByteSize,
    /// Jobs that are not finished (queued or running). Default 1000.
    pub jobs: u32,
    /// Open `WatchJob` streams. Default 100.
    pub watch_streams: u32,
    /// Live streams (`steward.streams.v1`): stream actors of the tenant on this node.
    /// Default 100.
    pub streams: u32,
    /// Keys with a latest value in one stream; a publication with a new key beyond it is
    /// refused. Default 10000.
    pub stream_keys: u32,
    /// Bytes a tenant's streams hold in memory (history and latest values: data and keys).
    /// Default 16 MiB.
    pub stream_bytes: ByteSize,
}

/// `[socket]`: admission, keepalive and limits of WebSocket sockets (seed 002; Centrifugo's
/// client limits are the reference for the queue and the close codes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocketConfig {
    /// Most open sockets on this node; an upgrade beyond it gets 503 + `Retry-After`.
    /// Default 10000.
    pub max_connections: u32,
    /// Most open sockets per client IP; beyond it 429 + `Retry-After` (seed 002:
    /// `MAX_CONNECTIONS_PER_IP` 100). Default 100.
    pub max_per_ip: u32,
    /// Peers whose `X-Forwarded-For` is believed (exact addresses or CIDR ranges such as
    /// `"10.0.0.0/8"`). The client IP is the right-most address of the header that is not a
    /// trusted proxy. Empty (default): the header is ignored and the TCP peer is the client.
    pub trusted_proxies: Vec<String>,
    /// `Retry-After` sent with a refused upgrade (per-IP cap, node cap, shutting down).
    /// Default 1 s.
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
    /// Interval of the protocol Ping (RFC 6455 §5.5.2), sent from a timer that keeps firing
    /// while the client does not read. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// Grace after a ping interval: nothing received for `ping_interval + pong_timeout` closes
    /// the socket with 4012 "no pong". Default 10 s.
    #[serde(with = "humantime_serde")]
    pub pong_timeout: Duration,
    /// Largest inbound frame; a larger one closes with 1009 (RFC 6455 §7.4.1). Default 64 KiB.
    pub max_frame: ByteSize,
    /// Largest inbound message (continuations aggregated); larger closes with 1009. Default 1 MiB.
    pub max_message: ByteSize,
    /// Outbound queue bound in messages; exceeding it closes with 4008 "slow consumer" without
    /// flushing the backlog. Default 256.
    pub queue_messages: u32,
    /// Outbound queue bound in bytes (4008 beyond it). Default 1 MiB.
    pub queue_bytes: ByteSize,
    /// Kernel send buffer (`SO_SNDBUF`) of connections to the public listener; Linux doubles it.
    /// It bounds what a client that stopped reading holds in the kernel, so the slow-consumer
    /// limits apply within about `write_timeout` rather than after megabytes of autotuned
    /// buffer. "0B" keeps the kernel's autotuning. Default 64 KiB.
    pub send_buffer: ByteSize,
    /// Deadline of one write to the client (4008 when missed). Default 1 s.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// Sustained client events per second (token bucket refill; seed 002:
    /// `SOCKET_EVENT_RATE_LIMIT` 50). Beyond it an event gets `error` `rate_limited`. Default 50.
    pub rate_limit: u32,
    /// Token bucket size (events allowed in a burst). Default 50.
    pub rate_burst: u32,
    /// Rate-limited events tolerated within `abuse_window`; one more closes with 1008 "policy
    /// violation". Default 100.
    pub abuse_limit: u32,
    /// Window over which rate-limited events are counted. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub abuse_window: Duration,
    /// Most job subscriptions per socket (`error` `too_many_subscriptions` beyond). Default 128.
    pub max_subscriptions: u32,
    /// How long the close handshake may take (sending the Close frame) before the connection
    /// is dropped. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub close_timeout: Duration,
    /// Sockets told Close 1001 at a time during shutdown (the next batch starts when one is
    /// gone). Default 256.
    pub shutdown_batch: u32,
    /// Arbiters (an actix event loop on its own thread each) the socket actors are spread over,
    /// round-robin at the upgrade; 0 = one per core (`available_parallelism`). Default 0.
    pub arbiters: u32,
    /// `[socket.monitor]`: the memory monitor.
    pub monitor: SocketMonitorConfig,
}

impl SocketConfig {
    /// `trusted_proxies` parsed (entries that do not parse are left out; validation refuses
    /// them first).
    #[must_use]
    pub fn trusted_proxy_ranges(&self) -> Vec<ipnet::IpNet> {
        self.trusted_proxies.iter().filter_map(|p| crate::parse_ip_range(p)).collect()
    }
}

/// `[socket.monitor]`: the seed's memory monitor, as metrics and warnings from a supervised
/// actor, with remediation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocketMonitorConfig {
    /// Sampling interval. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Samples averaged into the baseline. Default 3.
    pub baseline_samples: u32,
    /// Alarm: open sockets above this. Default 1000.
    pub max_connections: u64,
    /// Alarm: RSS grew more than this fraction over its baseline (0.5 = 50 %). Default 0.5.
    pub max_growth: f64,
    /// A socket is inactive when it sent no application message for this long. Default 2 h.
    #[serde(with = "humantime_serde")]
    pub inactive_after: Duration,
    /// Alarm: more than this fraction of sockets inactive (0.4 = 40 %). Default 0.4.
    pub max_inactive_ratio: f64,
    /// Alarm: more than this many running jobs. Default 100.
    pub max_running_jobs: u64,
    /// Remediation: while any alarm is raised, close sockets inactive for longer than this with
    /// a `notice` `idle_timeout` and Close 4000. "0s" disables remediation. Default 2 h.
    #[serde(with = "humantime_serde")]
    pub remediate_inactive_after: Duration,
}

/// `[jobs]`: the job table of the job hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsConfig {
    /// Hard cap on jobs held (live and finished-not-yet-evicted); `CreateJob` beyond it gets
    /// `RESOURCE_EXHAUSTED`. Default 100000.
    pub max_jobs: u32,
    /// How long a finished job (completed, failed, cancelled) stays readable before it is
    /// evicted (seed 002: 5 min). Default 5 min.
    #[serde(with = "humantime_serde")]
    pub finished_ttl: Duration,
    /// Interval of the sweep that evicts due jobs and drops subscribers that went away, a safety
    /// net under the eviction timer (seed 002: 5 min). Default 5 min.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// Largest `data` object of a job, as JSON text. Default 16 KiB.
    pub max_data: ByteSize,
    /// Longest `kind` string of a job, in bytes. Default 128.
    pub max_kind_len: u32,
    /// Updates buffered per `WatchJob` stream; a watcher that falls further behind is ended
    /// with `RESOURCE_EXHAUSTED` (it never slows the hub). Default 64.
    pub watch_buffer: u32,
    /// A job still queued this long after its creation expires (failed, error `expired`).
    /// Default 24 h.
    #[serde(with = "humantime_serde")]
    pub queued_ttl: Duration,
}

/// Where streams keep their history and latest values (`[streams] engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamEngineKind {
    /// In this process's memory: history and latest values are lost on restart, and each node
    /// has its own streams. The default.
    Memory,
    /// Redis at `[streams] url`: one atomic Lua script per publish, pub/sub between nodes, so
    /// every node sees every publication (Centrifugo's Redis engine is the reference).
    Redis,
}

/// `[streams]`: streams of publications with a last value per key, a bounded history and
/// recovery by position (offset + epoch), after Centrifugo's history and recovery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamsConfig {
    /// `memory` (default) or `redis`.
    pub engine: StreamEngineKind,
    /// Redis URL of the `redis` engine (`redis://host:port/db`, `rediss://` for TLS). Default
    /// `redis://127.0.0.1:6379`.
    pub url: String,
    /// Publications kept per stream for history and recovery (Centrifugo `history_size`).
    /// Default 100; at most 100000.
    pub history_size: u32,
    /// How long a publication stays in the history (Centrifugo `history_ttl`). Default 5 min.
    #[serde(with = "humantime_serde")]
    pub history_ttl: Duration,
    /// How long a key's latest value lives after its last publication; "0s" keeps it until
    /// removed. Default 1 h.
    #[serde(with = "humantime_serde")]
    pub key_ttl: Duration,
    /// How long a publish's idempotency key is remembered: a second publish with the same key
    /// within it answers the first one's position and stores nothing. Default 5 min.
    #[serde(with = "humantime_serde")]
    pub idempotency_window: Duration,
    /// A stream that holds nothing (no history, no key) and has no subscriber stops after this
    /// long. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Most live streams on this node (the `streams` supervisor's `max_children`). Default 10000.
    pub max_streams: u32,
    /// Largest publication data. Default 64 KiB.
    pub max_data: ByteSize,
    /// Most latest values sent with a `subscribe {latest: true}` or `Latest` of all keys (the
    /// most recently published first). Default 1000.
    pub max_latest: u32,
    /// Publications buffered per `Watch` stream; a watcher that falls further behind is ended
    /// with `RESOURCE_EXHAUSTED`. Default 256.
    pub watch_buffer: u32,
    /// Deadline of one engine call (a Redis round trip) and of an edge's ask to a stream.
    /// Default 5 s.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

/// `[rtc]`: WebRTC rooms, an SFU (`docs/protocol/rtc.md`). One peer actor per peer connection,
/// one room actor per tenant and room name. Deadlines follow the issue and LiveKit's defaults
/// (empty/departure timeouts); the candidate cap and its expiry follow seed 004 and Janus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtcConfig {
    /// Most live peers on this node (the `peers` supervisor's `max_children`). Default 500.
    pub max_peers: u32,
    /// Most live rooms on this node (the `rooms` supervisor's `max_children`). Default 500.
    pub max_rooms: u32,
    /// Most participants of one room; the next `join` is refused `room_full`. Default 16.
    pub max_participants: u32,
    /// Most tracks one peer may publish; more are not forwarded (`too_many_tracks`): each
    /// costs a track, a queue and a task per subscriber. Default 4.
    pub max_tracks: u32,
    /// Address the peers' UDP sockets bind (ICE host candidates). Default `0.0.0.0`.
    pub bind_address: IpAddr,
    /// UDP ports the peers bind, `"<first>-<last>"` inclusive: one port per live peer, so the
    /// range also caps live peers. Default `"50000-50999"`.
    pub udp_ports: String,
    /// Public addresses announced instead of the bound one (a host behind 1:1 NAT). Default
    /// none.
    pub nat_1to1_ips: Vec<IpAddr>,
    /// Whether a client's mDNS (`.local`) candidates are resolved; off, they are ignored
    /// (counted, not an error). Default false.
    pub allow_mdns: bool,
    /// Most ICE candidates a peer may send; the next one is answered `too_many_candidates`
    /// (seed 004: 50). Default 50.
    pub max_candidates: u32,
    /// Candidates that arrive before the remote description are buffered (within
    /// `max_candidates`) at most this long (Janus' pending-candidate expiry). Default 45 s.
    #[serde(with = "humantime_serde")]
    pub candidate_ttl: Duration,
    /// From the upgrade to `join`. Default 15 s.
    #[serde(with = "humantime_serde")]
    pub join_timeout: Duration,
    /// From `joined` to the client's offer, and from any offer to its answer. Default 15 s.
    #[serde(with = "humantime_serde")]
    pub negotiation_timeout: Duration,
    /// From the first answer to ICE `connected`; past it the peer closes `ice_failed`.
    /// Default 25 s.
    #[serde(with = "humantime_serde")]
    pub ice_timeout: Duration,
    /// How long a `disconnected` connection may take to recover before it closes
    /// `disconnected`. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub disconnected_grace: Duration,
    /// Longest life of one peer; "0s": no limit. Default 0 s.
    #[serde(with = "humantime_serde")]
    pub max_lifetime: Duration,
    /// A room nobody ever joined stops after this long (LiveKit `empty_timeout`). Default 300 s.
    #[serde(with = "humantime_serde")]
    pub empty_timeout: Duration,
    /// A room stops this long after its last participant left (LiveKit `departure_timeout`).
    /// Default 20 s.
    #[serde(with = "humantime_serde")]
    pub departure_timeout: Duration,
    /// Bytes a peer's data channel may hold unsent; a message that does not fit is dropped
    /// (counted): a slow receiver loses messages, never grows memory. Default 1 MiB.
    pub data_channel_buffer: ByteSize,
    /// Largest data-channel message forwarded (and of `SendData`). Default 64 KiB.
    pub max_data_message: ByteSize,
    /// RTP packets queued per forwarded track and subscriber; beyond, packets are dropped
    /// (counted). Default 256.
    pub forward_queue: u32,
    /// At shutdown, how long each peer's connection may take to close. Default 2 s.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// At shutdown, how many peers close at once. Default 16.
    pub shutdown_concurrency: u32,
}

impl RtcConfig {
    /// The inclusive UDP port range of `udp_ports`; `None` when it is not `"<first>-<last>"`
    /// with `0 < first <= last`.
    #[must_use]
    pub fn udp_port_range(&self) -> Option<(u16, u16)> {
        let (a, b) = self.udp_ports.trim().split_once('-')?;
        let (a, b) = (a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?);
        (a > 0 && a <= b).then_some((a, b))
    }
}

/// Which broker stores messages (`[messaging] backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BrokerBackend {
    /// In-process, in memory: nothing survives a restart. The default.
    Embedded,
    /// NATS JetStream at `[messaging] url` (one stream per tenant topic, one durable pull
    /// consumer per group). Works with nats-server 2.9 and later.
    Nats,
}

/// `[messaging]`: the gRPC producer/consumer proxy (`steward.messaging.v1.Messaging`).
///
/// Names follow the references: RocketMQ 5's gRPC proxy (invisible duration, receipt handles,
/// `PRODUCER_CLEANUP_TIMEOUT`), Pub/Sub StreamingPull (max outstanding messages/bytes) and NATS
/// JetStream (duplicate window, max deliveries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessagingConfig {
    /// `embedded` (default) or `nats`.
    pub backend: BrokerBackend,
    /// NATS server URL(s), comma-separated, used when `backend = "nats"`.
    /// Default `nats://127.0.0.1:4222`.
    pub url: String,
    /// How long `SendMessage` waits for the broker to store a batch before the undecided
    /// messages answer `UNAVAILABLE`. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub send_timeout: Duration,
    /// A producer with no send in flight and no activity for this long is stopped by the sweep
    /// (seed 001's `PRODUCER_CLEANUP_TIMEOUT`; that environment variable is an alias).
    /// Default 30 s.
    #[serde(with = "humantime_serde")]
    pub producer_cleanup_timeout: Duration,
    /// Interval of the idle-producer sweep (seed 001: 30 s). Default 30 s.
    #[serde(with = "humantime_serde")]
    pub producer_sweep_interval: Duration,
    /// How long a consumer group's state (its position and backlog) outlives its last stream
    /// (seed 001's `CONSUMER_CLEANUP_TIMEOUT`; that environment variable is an alias).
    /// Default 1 h.
    #[serde(with = "humantime_serde")]
    pub consumer_cleanup_timeout: Duration,
    /// Most live producers on this node. Default 100000.
    pub max_producers: u32,
    /// Most live consumers (receive streams) on this node. Default 10000.
    pub max_consumers: u32,
    /// Most messages in one `SendMessage` batch. Default 1000.
    pub max_batch: u32,
    /// Largest message body. Default 4 MiB (RocketMQ's default).
    pub max_body: ByteSize,
    /// Largest message in total (body, tag, keys and properties). Default 4 MiB + 64 KiB.
    pub max_message: ByteSize,
    /// Largest encoded gRPC request to the messaging service (tonic's
    /// `max_decoding_message_size`; beyond it the call fails before Steward sees it).
    /// Default 16 MiB.
    pub max_request: ByteSize,
    /// Default invisible duration of a delivery (JetStream's ack wait). Default 30 s.
    #[serde(with = "humantime_serde")]
    pub invisible_duration: Duration,
    /// Longest invisible duration a client may ask for. Default 12 h (RocketMQ's limit).
    #[serde(with = "humantime_serde")]
    pub max_invisible_duration: Duration,
    /// Default `max_outstanding_messages` of a stream (Pub/Sub's default). Default 1000.
    pub max_outstanding_messages: u32,
    /// Default `max_outstanding_bytes` of a stream. Default 16 MiB.
    pub max_outstanding_bytes: ByteSize,
    /// Ceilings a stream may ask for: messages, bytes. Defaults 10000 and 64 MiB.
    pub max_outstanding_messages_limit: u32,
    /// See `max_outstanding_messages_limit`.
    pub max_outstanding_bytes_limit: ByteSize,
    /// A stream with nothing to deliver sends a heartbeat this often. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// A write to a client stalled this long returns its messages to the broker and counts a
    /// `channel_full_event` (seed 001: 5 s). Default 5 s.
    #[serde(with = "humantime_serde")]
    pub write_stall_timeout: Duration,
    /// Delivery attempts before a message moves to the dead-letter topic `<topic>.dlq`.
    /// Default 16 (RocketMQ's default max reconsume times).
    pub max_delivery_attempts: u32,
    /// Window in which a repeated client message id is a duplicate (JetStream's
    /// `duplicate_window`, 2 min). Default 2 min.
    #[serde(with = "humantime_serde")]
    pub dedup_window: Duration,
    /// Embedded broker: most messages waiting (ready, delayed or leased) per group of a topic;
    /// a full topic answers `RETRY_LATER`. Default 100000.
    pub topic_max_messages: u32,
    /// Embedded broker: most body bytes held per topic. Default 256 MiB. NATS: the stream's
    /// `max_bytes` (discard new). Both answer `RETRY_LATER` beyond.
    pub topic_max_bytes: ByteSize,
    /// A topic or group that holds no message and saw no send, receive or ack for this long is
    /// removed (NATS: its stream or durable consumer). Default 1 h.
    #[serde(with = "humantime_serde")]
    pub topic_idle_ttl: Duration,
}

/// Who shares a local Chromium (`[browser] isolation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BrowserIsolation {
    /// A Chromium serves one tenant, and a tenant has one Chromium (all its sessions in it).
    Tenant,
    /// Tenants share Chromium processes (each session still has its own browser context).
    Shared,
}

/// `[browser]`: the Chromium processes Steward runs and the browser sessions tenants hold on
/// them (`steward.browser.v1.Browser`, `docs/protocol/browser.md`).
///
/// Names and defaults follow browserless (session timeout, queue length, concurrency) and the
/// Chrome DevTools Protocol (browser context, target); per-tenant session limits are the
/// tenant's quotas (`sessions`, `pages_per_session`, `session_rate`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrowserConfig {
    /// The Chromium executable: a path, or a name looked up on `PATH`. Default `chromium`
    /// (Debian's package `chromium`, `/usr/bin/chromium`).
    pub executable: String,
    /// Most local Chromium processes on this node, whatever tenants they serve. 0 = automatic:
    /// max(4, cores) with `isolation = "tenant"`, max(1, cores / 2) with `"shared"`. Default 0.
    pub browsers: u32,
    /// Who shares a local Chromium. `tenant` (default): a Chromium serves one tenant only, and
    /// holds all that tenant's sessions (one per tenant, so no tenant takes the node's slots);
    /// it starts with the tenant's first session and stops `tenant_browser_idle` after its
    /// last. `shared`: every tenant's sessions (each its own browser context) share the pool's
    /// Chromium processes — for operators who serve one trust domain.
    pub isolation: BrowserIsolation,
    /// With `isolation = "tenant"`: how long a tenant's Chromium stays up without sessions.
    /// Default 5 min.
    #[serde(with = "humantime_serde")]
    pub tenant_browser_idle: Duration,
    /// The system user local Chromium runs as when Steward runs as root (Chromium never runs
    /// as root); `nobody` when this user does not exist. Ignored when Steward is not root
    /// (Chromium then runs as Steward's user). Default `steward-chromium`.
    pub user: String,
    /// Chromium keeps its sandbox (Linux user namespaces). Where the kernel cannot give it one,
    /// local browsers refuse to start unless this is `true`, which runs them without it (and
    /// warns). Default `false`.
    pub allow_no_sandbox: bool,
    /// Extra command-line flags for every local Chromium, after Steward's own. Default none.
    pub extra_args: Vec<String>,
    /// How long a local Chromium has to answer on its CDP pipe after it is spawned. Default 20 s.
    #[serde(with = "humantime_serde")]
    pub launch_timeout: Duration,
    /// Deadline of the CDP connect (WebSocket handshake to a local or remote browser); the
    /// timer is the browser's own and goes with it (chromiumoxide has none: #333). Default 10 s.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Interval of the `Browser.getVersion` heartbeat of every browser. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Deadline of one heartbeat; a missed one is a disconnect. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub heartbeat_timeout: Duration,
    /// Deadline of the other CDP calls (create or dispose a context, open or close a page,
    /// emulation, `Content`). Default 10 s.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// How long a stopping browser waits for `Browser.close` before its process group is
    /// killed. Default 3 s.
    #[serde(with = "humantime_serde")]
    pub close_timeout: Duration,
    /// A browser that has created this many contexts stops taking sessions and is replaced
    /// once its sessions are gone. 0 = never. Default 1000.
    pub recycle_after_contexts: u32,
    /// Likewise after this long. "0s" = never. Default 6 h.
    #[serde(with = "humantime_serde")]
    pub recycle_after: Duration,
    /// Interval of the reconciler that disposes contexts and pages no live session owns.
    /// Default 30 s.
    #[serde(with = "humantime_serde")]
    pub reconcile_interval: Duration,
    /// Most live sessions on this node (the `sessions` supervisor's `max_children`).
    /// Default 200.
    pub max_sessions: u32,
    /// Idle TTL of a session when `CreateSession` sets none: no call and no `KeepAlive` for
    /// this long closes it with reason `idle` (browserless-style, seed 000). Default 5 min.
    #[serde(with = "humantime_serde")]
    pub session_idle_ttl: Duration,
    /// Longest life of a session, and the most `CreateSession` may ask for as either TTL; it
    /// closes with reason `max_lifetime` then. Default 30 min.
    #[serde(with = "humantime_serde")]
    pub session_max_lifetime: Duration,
    /// `CreateSession` calls of one tenant that may wait for a free slot (its `sessions` quota
    /// or the node's `max_sessions`); beyond: `RESOURCE_EXHAUSTED` at once. 0 = no queue.
    /// Default 10 (browserless's `QUEUE_LENGTH`).
    pub queue_length: u32,
    /// How long a queued `CreateSession` waits for a slot before `RESOURCE_EXHAUSTED` with
    /// retry advice. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub queue_timeout: Duration,
    /// Deadline of `Navigate` (the request may ask for less). Default 30 s.
    #[serde(with = "humantime_serde")]
    pub navigate_timeout: Duration,
    /// Deadline of `Evaluate` (the request may ask for less). Default 10 s.
    #[serde(with = "humantime_serde")]
    pub evaluate_timeout: Duration,
    /// Deadline of `Screenshot` and `Pdf`. Default 15 s.
    #[serde(with = "humantime_serde")]
    pub screenshot_timeout: Duration,
    /// Largest viewport a session may ask for, in CSS pixels: width. Default 3840.
    pub max_viewport_width: u32,
    /// Largest viewport height, in CSS pixels. Default 2160.
    pub max_viewport_height: u32,
    /// Tallest screenshot (full page or clip), in CSS pixels. Default 16384 (Chromium's own
    /// texture limit).
    pub max_screenshot_height: u32,
    /// Largest result (screenshot, PDF, HTML content, evaluate JSON); beyond: `OUT_OF_RANGE`.
    /// Default 16 MiB.
    pub max_result: ByteSize,
    /// Largest encoded gRPC request to the browser service (tonic's
    /// `max_decoding_message_size`). Default 1 MiB.
    pub max_request: ByteSize,
    /// Static answers of the egress proxy's resolver, asked before DNS: a host name
    /// (lowercase) and the addresses it stands for, like `/etc/hosts` for the proxy only.
    /// Answers are checked against the tenant's policy like any other. Default none.
    pub egress_hosts: BTreeMap<String, Vec<IpAddr>>,
}

/// `[tls]`: TLS (rustls, ring) on the public HTTP listener (and so `wss://` on `GET /v1/ws`) and
/// on both gRPC listeners. The admin HTTP listener stays plain: it is bound to loopback.
///
/// Off while `cert_file` is empty (the default): every listener speaks plain TCP, for running
/// behind a proxy or load balancer that terminates TLS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the server's certificate chain, leaf first. Empty (default): TLS off.
    /// Re-read every `reload_interval`; a changed file is served from then on.
    pub cert_file: PathBuf,
    /// PEM file with the private key of the leaf (PKCS#8, PKCS#1 or SEC1). Set together with
    /// `cert_file`. Default empty.
    pub key_file: PathBuf,
    /// PEM file with the CA certificates that sign client certificates. Empty (default): no
    /// client certificates are asked for. Set: mutual TLS, every client must present a
    /// certificate signed by one of them. Read at start.
    pub client_ca_file: PathBuf,
    /// Lowest TLS version accepted: `"1.2"` (default) or `"1.3"` (RFC 8446 only).
    pub min_version: TlsVersion,
    /// A client that has not completed its TLS handshake this long after connecting is
    /// disconnected. Default 3 s (actix-web's own default).
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// How often `cert_file` and `key_file` are read again; a changed pair is served from then
    /// on, a broken one is logged and the previous certificate kept. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
}

impl TlsConfig {
    /// Whether TLS is on (`cert_file` is set).
    #[must_use]
    pub fn enabled(&self) -> bool {
        !self.cert_file.as_os_str().is_empty()
    }
}

/// A TLS protocol version, written `"1.2"` or `"1.3"` (a bare number such as
/// `STEWARD__TLS__MIN_VERSION=1.3` is read the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TlsVersion {
    /// TLS 1.2 (RFC 5246).
    Tls12,
    /// TLS 1.3 (RFC 8446).
    Tls13,
}

impl TlsVersion {
    /// `"1.2"` or `"1.3"`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tls12 => "1.2",
            Self::Tls13 => "1.3",
        }
    }
}

impl std::fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for TlsVersion {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for TlsVersion {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = TlsVersion;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("\"1.2\" or \"1.3\"")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TlsVersion, E> {
                match v.trim() {
                    "1.2" => Ok(TlsVersion::Tls12),
                    "1.3" => Ok(TlsVersion::Tls13),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }

            // the environment layer reads `1.3` as a number
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<TlsVersion, E> {
                if (v - 1.2).abs() < 1e-9 {
                    Ok(TlsVersion::Tls12)
                } else if (v - 1.3).abs() < 1e-9 {
                    Ok(TlsVersion::Tls13)
                } else {
                    Err(E::invalid_value(serde::de::Unexpected::Float(v), &self))
                }
            }
        }
        deserializer.deserialize_any(Visit)
    }
}
