//! Tenants, their quotas and labels, and API token metadata: the validated shapes the store keeps
//! and the edges render.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use steward_config::QuotaDefaults;
use steward_core::ResourceKind;

use crate::{Error, Result};

/// Longest tenant id: 63 characters, one DNS label (RFC 1123 §2.1), so an id can name hosts,
/// NATS subjects and Kubernetes objects.
pub const MAX_TENANT_ID: usize = 63;
/// Longest display name, in characters.
pub const MAX_DISPLAY_NAME: usize = 200;
/// Longest token name, in characters.
pub const MAX_TOKEN_NAME: usize = 100;
/// Most labels on one tenant.
pub const MAX_LABELS: usize = 64;
/// Longest label key (Kubernetes' name part: 63).
pub const MAX_LABEL_KEY: usize = 63;
/// Longest label value, in characters.
pub const MAX_LABEL_VALUE: usize = 255;
/// Longest remote browser endpoint URL, in bytes.
pub const MAX_ENDPOINT: usize = 2048;
/// Largest value of a counting quota (all but `stored_bytes`).
pub const MAX_QUOTA: u64 = 1_000_000;
/// Largest `stored_bytes` quota: 1 TiB (a NATS stream on disk may hold that much; the embedded
/// broker holds it in memory, so its real bound is the node's memory).
pub const MAX_STORED_BYTES: u64 = 1 << 40;
/// Most entries in a tenant's `browser_allow` list.
pub const MAX_BROWSER_ALLOW: usize = 64;
/// Longest `browser_allow` entry, in bytes (the longest DNS name, RFC 1035 §2.3.4).
pub const MAX_BROWSER_ALLOW_ENTRY: usize = 253;

/// A tenant id: a slug of 1..=63 characters `[a-z0-9-]`, starting and ending with a letter or
/// digit (an RFC 1123 DNS label, lowercase). Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct TenantId(Arc<str>);

impl TenantId {
    /// Validates `id`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for field `id` when it is empty, longer than
    /// [`MAX_TENANT_ID`], or not a lowercase DNS label.
    pub fn new(id: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::invalid("id", reason);
        if id.is_empty() {
            return Err(invalid("must not be empty"));
        }
        if id.chars().count() > MAX_TENANT_ID {
            return Err(invalid(&format!("must be at most {MAX_TENANT_ID} characters")));
        }
        if !id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return Err(invalid("may contain only a-z, 0-9 and '-'"));
        }
        if id.starts_with('-') || id.ends_with('-') {
            return Err(invalid("must start and end with a letter or digit"));
        }
        Ok(Self(id.into()))
    }

    /// The id as a string slice.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as the shared string resources carry as their tenant.
    #[must_use]
    pub fn as_arc(&self) -> &Arc<str> {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TenantId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

/// One quota: a limit on a tenant's live resources of one kind, or a rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QuotaKind {
    /// Live browser sessions.
    Sessions,
    /// Open pages in one session (enforced by the session itself).
    PagesPerSession,
    /// Session creations per minute.
    SessionRate,
    /// Live message producers.
    Producers,
    /// Live message consumers.
    Consumers,
    /// Live WebSocket sockets.
    Sockets,
    /// Live WebRTC peers.
    Peers,
    /// Messaging topics that exist (embedded topics; NATS streams).
    Topics,
    /// Consumer groups that exist, over all topics (embedded groups; NATS durable consumers).
    Groups,
    /// Messages stored and not yet acked by every group, over all topics.
    StoredMessages,
    /// Bytes of those messages (body, tag, keys, properties).
    StoredBytes,
    /// Jobs that are not finished (queued or running).
    Jobs,
    /// Open `WatchJob` streams.
    WatchStreams,
    /// Live streams (`steward.streams.v1`) on this node.
    Streams,
    /// Keys with a latest value in one stream.
    StreamKeys,
    /// Bytes the tenant's streams hold in memory.
    StreamBytes,
}

impl QuotaKind {
    /// Every quota, in a fixed order.
    pub const ALL: [Self; 16] = [
        Self::Sessions,
        Self::PagesPerSession,
        Self::SessionRate,
        Self::Producers,
        Self::Consumers,
        Self::Sockets,
        Self::Peers,
        Self::Topics,
        Self::Groups,
        Self::StoredMessages,
        Self::StoredBytes,
        Self::Jobs,
        Self::WatchStreams,
        Self::Streams,
        Self::StreamKeys,
        Self::StreamBytes,
    ];

    /// The largest value the quota may be set to ([`MAX_QUOTA`], or [`MAX_STORED_BYTES`]).
    #[must_use]
    pub fn max(self) -> u64 {
        match self {
            Self::StoredBytes | Self::StreamBytes => MAX_STORED_BYTES,
            _ => MAX_QUOTA,
        }
    }

    /// Its name in JSON, config and metrics (`sessions`, `pages_per_session`, …).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sessions => "sessions",
            Self::PagesPerSession => "pages_per_session",
            Self::SessionRate => "session_rate",
            Self::Producers => "producers",
            Self::Consumers => "consumers",
            Self::Sockets => "sockets",
            Self::Peers => "peers",
            Self::Topics => "topics",
            Self::Groups => "groups",
            Self::StoredMessages => "stored_messages",
            Self::StoredBytes => "stored_bytes",
            Self::Jobs => "jobs",
            Self::WatchStreams => "watch_streams",
            Self::Streams => "streams",
            Self::StreamKeys => "stream_keys",
            Self::StreamBytes => "stream_bytes",
        }
    }

    /// The quota that caps live resources of `kind`, if one does.
    #[must_use]
    pub fn for_resource(kind: ResourceKind) -> Option<Self> {
        match kind {
            ResourceKind::Session => Some(Self::Sessions),
            ResourceKind::Producer => Some(Self::Producers),
            ResourceKind::Consumer => Some(Self::Consumers),
            ResourceKind::Socket => Some(Self::Sockets),
            ResourceKind::Peer => Some(Self::Peers),
            ResourceKind::Stream => Some(Self::Streams),
            ResourceKind::Browser | ResourceKind::Room | ResourceKind::Service => None,
        }
    }
}

impl fmt::Display for QuotaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A tenant's effective quotas: its overrides over the node's `[tenancy.default_quotas]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Quotas {
    /// Live browser sessions.
    pub sessions: u64,
    /// Open pages per session.
    pub pages_per_session: u64,
    /// Session creations per minute.
    pub session_rate: u64,
    /// Live message producers.
    pub producers: u64,
    /// Live message consumers.
    pub consumers: u64,
    /// Live WebSocket sockets.
    pub sockets: u64,
    /// Live WebRTC peers.
    pub peers: u64,
    /// Messaging topics that exist.
    pub topics: u64,
    /// Consumer groups that exist, over all topics.
    pub groups: u64,
    /// Messages stored and not yet acked by every group.
    pub stored_messages: u64,
    /// Bytes of stored messages.
    pub stored_bytes: u64,
    /// Jobs that are not finished (queued or running).
    pub jobs: u64,
    /// Open `WatchJob` streams.
    pub watch_streams: u64,
    /// Live streams on this node.
    pub streams: u64,
    /// Keys with a latest value in one stream.
    pub stream_keys: u64,
    /// Bytes the tenant's streams hold in memory.
    pub stream_bytes: u64,
}

impl Quotas {
    /// The value of quota `q`.
    #[must_use]
    pub fn get(&self, q: QuotaKind) -> u64 {
        match q {
            QuotaKind::Sessions => self.sessions,
            QuotaKind::PagesPerSession => self.pages_per_session,
            QuotaKind::SessionRate => self.session_rate,
            QuotaKind::Producers => self.producers,
            QuotaKind::Consumers => self.consumers,
            QuotaKind::Sockets => self.sockets,
            QuotaKind::Peers => self.peers,
            QuotaKind::Topics => self.topics,
            QuotaKind::Groups => self.groups,
            QuotaKind::StoredMessages => self.stored_messages,
            QuotaKind::StoredBytes => self.stored_bytes,
            QuotaKind::Jobs => self.jobs,
            QuotaKind::WatchStreams => self.watch_streams,
            QuotaKind::Streams => self.streams,
            QuotaKind::StreamKeys => self.stream_keys,
            QuotaKind::StreamBytes => self.stream_bytes,
        }
    }

    /// `overrides` over `defaults`.
    #[must_use]
    pub fn resolve(defaults: &QuotaDefaults, overrides: &QuotaOverrides) -> Self {
        let d = defaults;
        let o = overrides;
        Self {
            sessions: o.sessions.unwrap_or(u64::from(d.sessions)),
            pages_per_session: o.pages_per_session.unwrap_or(u64::from(d.pages_per_session)),
            session_rate: o.session_rate.unwrap_or(u64::from(d.session_rate)),
            producers: o.producers.unwrap_or(u64::from(d.producers)),
            consumers: o.consumers.unwrap_or(u64::from(d.consumers)),
            sockets: o.sockets.unwrap_or(u64::from(d.sockets)),
            peers: o.peers.unwrap_or(u64::from(d.peers)),
            topics: o.topics.unwrap_or(u64::from(d.topics)),
            groups: o.groups.unwrap_or(u64::from(d.groups)),
            stored_messages: o.stored_messages.unwrap_or(u64::from(d.stored_messages)),
            stored_bytes: o.stored_bytes.unwrap_or(d.stored_bytes.as_u64()),
            jobs: o.jobs.unwrap_or(u64::from(d.jobs)),
            watch_streams: o.watch_streams.unwrap_or(u64::from(d.watch_streams)),
            streams: o.streams.unwrap_or(u64::from(d.streams)),
            stream_keys: o.stream_keys.unwrap_or(u64::from(d.stream_keys)),
            stream_bytes: o.stream_bytes.unwrap_or(d.stream_bytes.as_u64()),
        }
    }
}

/// The quotas a tenant sets for itself; unset ones follow the node's defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct QuotaOverrides {
    /// Live browser sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<u64>,
    /// Open pages per session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pages_per_session: Option<u64>,
    /// Session creations per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_rate: Option<u64>,
    /// Live message producers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producers: Option<u64>,
    /// Live message consumers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumers: Option<u64>,
    /// Live WebSocket sockets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sockets: Option<u64>,
    /// Live WebRTC peers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<u64>,
    /// Messaging topics that exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topics: Option<u64>,
    /// Consumer groups that exist, over all topics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<u64>,
    /// Messages stored and not yet acked by every group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_messages: Option<u64>,
    /// Bytes of stored messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_bytes: Option<u64>,
    /// Jobs that are not finished (queued or running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<u64>,
    /// Open `WatchJob` streams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch_streams: Option<u64>,
    /// Live streams on this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streams: Option<u64>,
    /// Keys with a latest value in one stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_keys: Option<u64>,
    /// Bytes the tenant's streams hold in memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_bytes: Option<u64>,
}

impl QuotaOverrides {
    fn slots(&mut self) -> [(QuotaKind, &mut Option<u64>); 16] {
        [
            (QuotaKind::Sessions, &mut self.sessions),
            (QuotaKind::PagesPerSession, &mut self.pages_per_session),
            (QuotaKind::SessionRate, &mut self.session_rate),
            (QuotaKind::Producers, &mut self.producers),
            (QuotaKind::Consumers, &mut self.consumers),
            (QuotaKind::Sockets, &mut self.sockets),
            (QuotaKind::Peers, &mut self.peers),
            (QuotaKind::Topics, &mut self.topics),
            (QuotaKind::Groups, &mut self.groups),
            (QuotaKind::StoredMessages, &mut self.stored_messages),
            (QuotaKind::StoredBytes, &mut self.stored_bytes),
            (QuotaKind::Jobs, &mut self.jobs),
            (QuotaKind::WatchStreams, &mut self.watch_streams),
            (QuotaKind::Streams, &mut self.streams),
            (QuotaKind::StreamKeys, &mut self.stream_keys),
            (QuotaKind::StreamBytes, &mut self.stream_bytes),
        ]
    }

    /// Checks every set value against its maximum ([`QuotaKind::max`]).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the field (`quotas.sockets`).
    pub fn validate(mut self) -> Result<Self> {
        for (q, v) in self.slots() {
            if v.is_some_and(|v| v > q.max()) {
                return Err(Error::invalid(
                    &format!("quotas.{q}"),
                    &format!("must be at most {}", q.max()),
                ));
            }
        }
        Ok(self)
    }

    /// Applies a JSON merge patch (RFC 7396): a value sets the override, `null` removes it
    /// (the default applies again), an absent field leaves it.
    ///
    /// # Errors
    /// As [`QuotaOverrides::validate`].
    pub fn merge(mut self, patch: &QuotaPatch) -> Result<Self> {
        for ((_, v), p) in self.slots().into_iter().zip(patch.values()) {
            if let Some(p) = p {
                *v = p;
            }
        }
        self.validate()
    }
}

/// A merge patch of quota overrides: `Some(Some(n))` sets, `Some(None)` (JSON `null`) resets to
/// the default, `None` (absent) leaves the field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
#[allow(clippy::option_option)] // absent, null and a value mean three different things
pub struct QuotaPatch {
    /// Live browser sessions.
    #[serde(default, deserialize_with = "patch_field")]
    pub sessions: Option<Option<u64>>,
    /// Open pages per session.
    #[serde(default, deserialize_with = "patch_field")]
    pub pages_per_session: Option<Option<u64>>,
    /// Session creations per minute.
    #[serde(default, deserialize_with = "patch_field")]
    pub session_rate: Option<Option<u64>>,
    /// Live message producers.
    #[serde(default, deserialize_with = "patch_field")]
    pub producers: Option<Option<u64>>,
    /// Live message consumers.
    #[serde(default, deserialize_with = "patch_field")]
    pub consumers: Option<Option<u64>>,
    /// Live WebSocket sockets.
    #[serde(default, deserialize_with = "patch_field")]
    pub sockets: Option<Option<u64>>,
    /// Live WebRTC peers.
    #[serde(default, deserialize_with = "patch_field")]
    pub peers: Option<Option<u64>>,
    /// Messaging topics that exist.
    #[serde(default, deserialize_with = "patch_field")]
    pub topics: Option<Option<u64>>,
    /// Consumer groups that exist, over all topics.
    #[serde(default, deserialize_with = "patch_field")]
    pub groups: Option<Option<u64>>,
    /// Messages stored and not yet acked by every group.
    #[serde(default, deserialize_with = "patch_field")]
    pub stored_messages: Option<Option<u64>>,
    /// Bytes of stored messages.
    #[serde(default, deserialize_with = "patch_field")]
    pub stored_bytes: Option<Option<u64>>,
    /// Jobs that are not finished (queued or running).
    #[serde(default, deserialize_with = "patch_field")]
    pub jobs: Option<Option<u64>>,
    /// Open `WatchJob` streams.
    #[serde(default, deserialize_with = "patch_field")]
    pub watch_streams: Option<Option<u64>>,
    /// Live streams on this node.
    #[serde(default, deserialize_with = "patch_field")]
    pub streams: Option<Option<u64>>,
    /// Keys with a latest value in one stream.
    #[serde(default, deserialize_with = "patch_field")]
    pub stream_keys: Option<Option<u64>>,
    /// Bytes the tenant's streams hold in memory.
    #[serde(default, deserialize_with = "patch_field")]
    pub stream_bytes: Option<Option<u64>>,
}

impl QuotaPatch {
    #[allow(clippy::option_option)]
    fn values(&self) -> [Option<Option<u64>>; 16] {
        [
            self.sessions,
            self.pages_per_session,
            self.session_rate,
            self.producers,
            self.consumers,
            self.sockets,
            self.peers,
            self.topics,
            self.groups,
            self.stored_messages,
            self.stored_bytes,
            self.jobs,
            self.watch_streams,
            self.streams,
            self.stream_keys,
            self.stream_bytes,
        ]
    }
}

/// Deserializes a present field (value or `null`) as `Some(_)`; `#[serde(default)]` makes an
/// absent one `None`.
#[allow(clippy::option_option)]
pub(crate) fn patch_field<'de, D, T>(d: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Free-form `key: value` labels on a tenant.
pub type Labels = BTreeMap<String, String>;

/// Checks label count and the shape of keys (`[a-z0-9._/-]`, 1..=63) and values (<= 255
/// characters, no control characters).
///
/// # Errors
/// [`Error::InvalidArgument`] naming the label (`labels.team`).
pub fn validate_labels(labels: &Labels) -> Result<()> {
    if labels.len() > MAX_LABELS {
        return Err(Error::invalid("labels", &format!("at most {MAX_LABELS} labels")));
    }
    for (k, v) in labels {
        let ok = !k.is_empty()
            && k.len() <= MAX_LABEL_KEY
            && k.bytes().all(|b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || matches!(b, b'.' | b'_' | b'/' | b'-')
            });
        if !ok {
            return Err(Error::invalid(
                "labels",
                &format!("key {k:?} must be 1..={MAX_LABEL_KEY} characters of a-z 0-9 . _ / -"),
            ));
        }
        if v.chars().count() > MAX_LABEL_VALUE || v.chars().any(char::is_control) {
            return Err(Error::invalid(
                &format!("labels.{k}"),
                &format!("must be at most {MAX_LABEL_VALUE} characters, no control characters"),
            ));
        }
    }
    Ok(())
}

/// Checks a display name or token name: 1..=`max` characters, no control characters.
///
/// # Errors
/// [`Error::InvalidArgument`] naming `field`.
pub fn validate_name(field: &str, name: &str, max: usize) -> Result<()> {
    if name.trim().is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if name.chars().count() > max {
        return Err(Error::invalid(field, &format!("must be at most {max} characters")));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(())
}

/// Checks a remote browser endpoint: an absolute `ws`, `wss`, `http` or `https` URL with a host
/// (the CDP endpoint of a browser the tenant runs, seed 000's `browserURL`), at most
/// [`MAX_ENDPOINT`] bytes.
///
/// # Errors
/// [`Error::InvalidArgument`] for field `browser_endpoint`.
pub fn validate_endpoint(endpoint: &str) -> Result<()> {
    let invalid = |reason: &str| Error::invalid("browser_endpoint", reason);
    if endpoint.len() > MAX_ENDPOINT {
        return Err(invalid(&format!("must be at most {MAX_ENDPOINT} bytes")));
    }
    let url = url::Url::parse(endpoint).map_err(|e| invalid(&format!("not a URL: {e}")))?;
    if !matches!(url.scheme(), "ws" | "wss" | "http" | "https") {
        return Err(invalid("scheme must be ws, wss, http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("must name a host"));
    }
    Ok(())
}

/// Checks a tenant's browser allow-list: at most [`MAX_BROWSER_ALLOW`] entries, each at most
/// [`MAX_BROWSER_ALLOW_ENTRY`] bytes and one of a CIDR (`10.0.0.0/8`, `fd00::/8`), an IP address
/// (`127.0.0.1`, `::1`), a host name (`intranet.example`: dot-separated labels of 1..=63
/// characters `[A-Za-z0-9-]`, the last not all digits) or `*.` and a host name
/// (`*.corp.example`: its sub-domains). The same grammar as the browser's URL policy, which
/// gives the entries their meaning (steward-browser `policy`).
///
/// # Errors
/// [`Error::InvalidArgument`] naming `browser_allow` (too many entries) or the entry
/// (`browser_allow[2]`).
pub fn validate_browser_allow(list: &[String]) -> Result<()> {
    if list.len() > MAX_BROWSER_ALLOW {
        return Err(Error::invalid(
            "browser_allow",
            &format!("at most {MAX_BROWSER_ALLOW} entries"),
        ));
    }
    for (i, entry) in list.iter().enumerate() {
        let invalid = |reason: &str| Error::invalid(&format!("browser_allow[{i}]"), reason);
        if entry.is_empty() {
            return Err(invalid("must not be empty"));
        }
        if entry.len() > MAX_BROWSER_ALLOW_ENTRY {
            return Err(invalid(&format!("must be at most {MAX_BROWSER_ALLOW_ENTRY} bytes")));
        }
        if entry.contains('/') {
            if entry.parse::<ipnet::IpNet>().is_err() {
                return Err(invalid(&format!(
                    "{entry:?} is not a CIDR (such as 10.0.0.0/8 or fd00::/8)"
                )));
            }
            continue;
        }
        if entry.parse::<std::net::IpAddr>().is_ok() {
            continue;
        }
        let name = entry.strip_prefix("*.").unwrap_or(entry);
        if !is_host_name(name) {
            return Err(invalid(&format!(
                "{entry:?} is not a CIDR, an IP address, a host name (dot-separated labels of \
                 A-Z a-z 0-9 -, the last not all digits) or `*.` and a host name"
            )));
        }
    }
    Ok(())
}

/// Dot-separated labels of 1..=63 bytes of `[A-Za-z0-9-]`, the last not all digits (the URL
/// Standard reads such a host as an IPv4 address, so the entry could never match a name).
fn is_host_name(name: &str) -> bool {
    let label_ok = |l: &str| {
        !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    name.split('.').all(label_ok)
        && name.rsplit('.').next().is_some_and(|last| !last.bytes().all(|b| b.is_ascii_digit()))
}

/// A tenant as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    /// Its id.
    pub id: TenantId,
    /// Human-readable name.
    pub display_name: String,
    /// When it was created.
    pub created_at: SystemTime,
    /// When it last changed.
    pub updated_at: SystemTime,
    /// Quotas it sets; the rest follow the node's defaults.
    pub quota_overrides: QuotaOverrides,
    /// CDP endpoint its browser sessions use instead of a local Chromium.
    pub browser_endpoint: Option<String>,
    /// What its browser sessions may reach beyond the public internet: CIDRs, addresses, host
    /// names and `*.` wildcards ([`validate_browser_allow`]); empty = nothing.
    pub browser_allow: Vec<String>,
    /// Labels.
    pub labels: Labels,
    /// Optimistic-concurrency revision, +1 per update.
    pub revision: i64,
}

/// What `POST /v1/tenants` takes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    /// The id ([`TenantId`] rules).
    pub id: String,
    /// Human-readable name; the id when absent.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Quota overrides.
    #[serde(default)]
    pub quotas: QuotaOverrides,
    /// Remote CDP endpoint.
    #[serde(default)]
    pub browser_endpoint: Option<String>,
    /// Private addresses and names its browser sessions may reach (at most 64 CIDRs, IP
    /// addresses, host names or `*.` host names); empty when absent.
    #[serde(default)]
    pub browser_allow: Vec<String>,
    /// Labels.
    #[serde(default)]
    pub labels: Labels,
}

/// What `PATCH /v1/tenants/{id}` takes: a JSON merge patch (RFC 7396) of the mutable fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
#[allow(clippy::option_option)] // absent, null and a value mean three different things
pub struct TenantPatch {
    /// New display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Quota overrides to set (`n`) or reset to the default (`null`).
    #[serde(default)]
    pub quotas: Option<QuotaPatch>,
    /// New endpoint, or `null` to remove it.
    #[serde(default, deserialize_with = "patch_field")]
    pub browser_endpoint: Option<Option<String>>,
    /// A new browser allow-list replacing the old one, or `null` to empty it.
    #[serde(default, deserialize_with = "patch_field")]
    pub browser_allow: Option<Option<Vec<String>>>,
    /// Labels to set (`"v"`) or remove (`null`).
    #[serde(default)]
    pub labels: Option<BTreeMap<String, Option<String>>>,
}

/// A token id: 16 lowercase hex digits, public (it names the token in lists, logs and
/// `DELETE /v1/tokens/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct TokenId(Arc<str>);

impl TokenId {
    /// Validates `id`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for field `token_id` unless it is 16 lowercase hex digits.
    pub fn new(id: &str) -> Result<Self> {
        if id.len() == 16 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            Ok(Self(id.into()))
        } else {
            Err(Error::invalid("token_id", "must be 16 lowercase hex digits"))
        }
    }

    /// The id as a string slice.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An API token as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// Its id.
    pub id: TokenId,
    /// The tenant it authenticates as.
    pub tenant: TenantId,
    /// Its name.
    pub name: String,
    /// When it was issued.
    pub created_at: SystemTime,
    /// When it stops working; never when absent.
    pub expires_at: Option<SystemTime>,
}

/// What `POST /v1/tenants/{id}/tokens` takes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// Its name (1..=100 characters).
    pub name: String,
    /// Lifetime as a human duration ("30d", "1h"); absent = never expires.
    #[serde(default)]
    pub expires_in: Option<String>,
}
