//! The URL policy of browser navigation: which URLs a tenant's session may load.
//!
//! A session's Chromium runs on Steward's host and network, so without a policy any tenant could
//! make it fetch what only that host can reach: the cloud metadata service at 169.254.169.254,
//! admin listeners on loopback, databases on the private network — server-side request forgery.
//! The rule comes from the issue: "`file:`, `chrome:`, `about:` except `about:blank`, loopback,
//! link-local (incl. 169.254.169.254) and private ranges refused with PERMISSION_DENIED unless
//! the tenant's allow-list permits them"; the approach (allow-list the schemes, resolve the host
//! and check every address it resolves to, including encoded and IPv4-embedding IPv6 forms)
//! follows the OWASP Server-Side Request Forgery Prevention Cheat Sheet.
//!
//! - **Schemes.** `http` and `https` are checked by host. `data:` and `about:blank` (also with a
//!   query or fragment) load without a host. Every other scheme — `file`, `chrome`,
//!   `chrome-extension`, `chrome-untrusted`, `devtools`, `view-source`, `javascript`, `ftp`,
//!   `ws`, `wss`, `blob`, `filesystem`, `about:` other than `blank`, … — is refused, and no
//!   allow-list entry changes that.
//! - **Addresses.** Refused unless allow-listed, from the IANA special-purpose address registries
//!   (RFC 6890): unspecified (`0.0.0.0/8`, `::`), loopback (`127.0.0.0/8`, `::1`), link-local
//!   (`169.254.0.0/16` with the cloud metadata address, `fe80::/10`; RFC 3927, RFC 4291), private
//!   (`10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16`, RFC 1918; unique local `fc00::/7`,
//!   RFC 4193; the deprecated site-local `fec0::/10`, RFC 3879), shared address space
//!   (`100.64.0.0/10`, RFC 6598), multicast (`224.0.0.0/4`, `ff00::/8`), the limited broadcast
//!   `255.255.255.255`, IETF protocol assignments (`192.0.0.0/24`), documentation (`192.0.2.0/24`,
//!   `198.51.100.0/24`, `203.0.113.0/24`, RFC 5737; `2001:db8::/32`, RFC 3849), benchmarking
//!   (`198.18.0.0/15`, RFC 2544), reserved (`240.0.0.0/4`) and discard-only (`100::/64`, RFC 6666). An IPv6 address that embeds an IPv4 one is judged by the IPv4 address:
//!   IPv4-mapped `::ffff:0:0/96` and the deprecated IPv4-compatible `::/96` (RFC 4291 §2.5.5),
//!   IPv4-translated `::ffff:0:0:0/96` (RFC 2765), the NAT64 well-known prefix `64:ff9b::/96`
//!   (RFC 6052) and 6to4 `2002::/16` (RFC 3056).
//! - **Host names.** `localhost` and `*.localhost` are loopback without resolving (RFC 6761 §6.3;
//!   Chromium never asks DNS for them). Other names are resolved and every address must pass.
//!   Numeric hosts in any form the URL Standard accepts (`http://2130706433/`,
//!   `http://0x7f.1/`, `http://017700000001/`, `http://[::1]/`) are normalised to addresses by
//!   the `url` crate (WHATWG URL Standard, IPv4 parser) before any check.
//! - **Allow-list.** A tenant's `browser_allow` entries are CIDRs (`10.0.0.0/8`, `fd00::/8`),
//!   single addresses (`127.0.0.1`, `::1`), host names (`intranet.example`: a case-insensitive
//!   exact match of the URL's host, which permits it whatever it resolves to) and wildcard
//!   suffixes (`*.corp.example`: its sub-domains, not `corp.example` itself); at most
//!   [`MAX_ALLOW_ENTRIES`] of at most [`MAX_ALLOW_ENTRY_LEN`] bytes. Names are ASCII (write an
//!   internationalised name in its `xn--` form).
//!
//! What this check cannot see: Chromium resolves the host again when it connects, so a name
//! whose answer changes in between (DNS rebinding) can still reach a blocked address; redirects
//! are seen only through the final URL, which the caller checks again after navigation
//! ([`UrlPolicy::check_resolved`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use ipnet::IpNet;
use url::{Host, Url};

use crate::stats::EgressRefusal;
use crate::{Error, Result};

/// Most entries in a tenant's allow-list.
pub const MAX_ALLOW_ENTRIES: usize = 64;
/// Longest allow-list entry, in bytes (the longest DNS name, RFC 1035 §2.3.4).
pub const MAX_ALLOW_ENTRY_LEN: usize = 253;
/// Longest label of a host-name entry, in bytes (RFC 1035 §2.3.4).
const MAX_LABEL_LEN: usize = 63;
/// How long [`UrlPolicy::check`] waits for the host to resolve before letting the URL pass.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest URL quoted in an error message, in bytes.
const MAX_URL_IN_MESSAGE: usize = 200;
/// The cloud metadata service (AWS, GCP, Azure, …), named in refusals.
const METADATA: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

/// A tenant's URL policy: the fixed scheme rules and blocked address ranges, minus what its
/// `browser_allow` list permits. The default allows nothing beyond the public internet.
#[derive(Debug, Clone, Default)]
pub struct UrlPolicy {
    /// CIDR and single-address entries (a single address as a /32 or /128).
    nets: Vec<IpNet>,
    /// Host-name entries, lowercase, matched exactly.
    names: Vec<String>,
    /// Wildcard entries as their suffix with its leading dot, lowercase (`.corp.example`).
    suffixes: Vec<String>,
}

/// One parsed allow-list entry.
enum Entry {
    Net(IpNet),
    Name(String),
    Suffix(String),
}

/// What a URL's scheme and host make of it.
enum Target {
    /// Loads without a host (`data:`, `about:blank`).
    NoHost,
    /// An `http(s)` host name: lowercase, without trailing dots.
    Name(String),
    /// An `http(s)` host that is an address.
    Addr(IpAddr),
}

/// Why an address is blocked.
struct Blocked {
    /// What the address is ("a loopback address").
    kind: &'static str,
    /// The IPv4 address an IPv6 address embeds, which `kind` describes.
    embedded: Option<Ipv4Addr>,
}

impl UrlPolicy {
    /// Parses a tenant's allow-list (entries as in the module docs).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming `browser_allow` when there are more than
    /// [`MAX_ALLOW_ENTRIES`] entries, or `browser_allow[i]` for an entry that is empty, longer
    /// than [`MAX_ALLOW_ENTRY_LEN`] bytes, or neither a CIDR, an address, a host name nor `*.`
    /// and a host name.
    pub fn new(allow: &[String]) -> Result<Self> {
        if allow.len() > MAX_ALLOW_ENTRIES {
            return Err(Error::invalid(
                "browser_allow",
                format!("at most {MAX_ALLOW_ENTRIES} entries"),
            ));
        }
        let mut policy = Self::default();
        for (i, entry) in allow.iter().enumerate() {
            match parse_entry(entry) {
                Ok(Entry::Net(net)) => policy.nets.push(net),
                Ok(Entry::Name(name)) => policy.names.push(name),
                Ok(Entry::Suffix(suffix)) => policy.suffixes.push(suffix),
                Err(reason) => return Err(Error::invalid(format!("browser_allow[{i}]"), reason)),
            }
        }
        Ok(policy)
    }

    /// Checks a URL before navigation: parses it, applies the scheme rules, resolves the host
    /// (at most [`RESOLVE_TIMEOUT`]; a host that does not resolve in time, or at all, passes —
    /// Chromium fails to resolve it too and reports its own error) and checks every address it
    /// resolves to. Returns the parsed URL.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for field `url` when it is not an absolute URL;
    /// [`Error::PermissionDenied`] naming the reason when the policy refuses it.
    pub async fn check(&self, url: &str) -> Result<Url> {
        let parsed = Url::parse(url)
            .map_err(|e| Error::invalid("url", format!("not an absolute URL: {e}")))?;
        let addrs = match target(&parsed)? {
            Target::Name(name) if !self.names_host(&name) && !is_localhost(&name) => {
                resolve(&name, parsed.port_or_known_default().unwrap_or(80)).await
            }
            Target::Name(_) | Target::Addr(_) | Target::NoHost => Vec::new(),
        };
        self.check_resolved(&parsed, &addrs)?;
        Ok(parsed)
    }

    /// The pure part of [`UrlPolicy::check`]: checks a parsed URL whose host resolved to
    /// `addrs` (no DNS; an empty `addrs` means the name did not resolve, and passes). Used after
    /// navigation on the final URL too. A host that is an address is checked as itself,
    /// `localhost` names as loopback, whatever `addrs` holds.
    ///
    /// # Errors
    /// [`Error::PermissionDenied`] naming the reason; [`Error::InvalidArgument`] for field `url`
    /// for an `http(s)` URL without a host.
    pub fn check_resolved(&self, url: &Url, addrs: &[IpAddr]) -> Result<()> {
        match target(url)? {
            Target::NoHost => Ok(()),
            Target::Addr(ip) => self.check_addr(url, None, ip),
            Target::Name(name) if self.names_host(&name) => Ok(()),
            Target::Name(name) if is_localhost(&name) => {
                let loopback = [IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)];
                if loopback.iter().any(|ip| self.permits(*ip, None)) {
                    Ok(())
                } else {
                    Err(denied(
                        url,
                        &format!(
                            "{name} is a loopback name (it always means 127.0.0.1 and ::1); add it \
                             to the tenant's browser_allow list to permit it"
                        ),
                    ))
                }
            }
            Target::Name(name) => {
                addrs.iter().try_for_each(|ip| self.check_addr(url, Some(&name), *ip))
            }
        }
    }

    /// Why [`UrlPolicy::check_resolved`] refused a host (`name`, when it is not an address)
    /// that resolved to `addrs`: the class of the first address it does not permit, as the
    /// egress proxy's `reason` label.
    pub(crate) fn refusal_reason(&self, name: Option<&str>, addrs: &[IpAddr]) -> EgressRefusal {
        if name.is_some_and(is_localhost) {
            return EgressRefusal::Loopback;
        }
        addrs.iter().find_map(|ip| blocked(*ip).filter(|b| !self.permits(*ip, b.embedded))).map_or(
            EgressRefusal::Special,
            |b| match b.kind {
                k if k.contains("loopback") => EgressRefusal::Loopback,
                k if k.contains("link-local") => EgressRefusal::LinkLocal,
                k if k.contains("private") || k.contains("site-local") => EgressRefusal::Private,
                _ => EgressRefusal::Special,
            },
        )
    }

    /// Whether the allow-list is empty (only the public internet is allowed).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty() && self.names.is_empty() && self.suffixes.is_empty()
    }

    /// Whether a host-name entry matches `host` (lowercase, without trailing dots).
    fn names_host(&self, host: &str) -> bool {
        self.names.iter().any(|n| n == host)
            || self.suffixes.iter().any(|s| host.len() > s.len() && host.ends_with(s.as_str()))
    }

    /// Whether a CIDR or address entry contains `ip`, or the IPv4 address it embeds.
    fn permits(&self, ip: IpAddr, embedded: Option<Ipv4Addr>) -> bool {
        self.nets.iter().any(|net| {
            net.contains(&ip) || embedded.is_some_and(|v4| net.contains(&IpAddr::V4(v4)))
        })
    }

    /// Refuses `ip` (the URL's host, or what host `name` resolved to) if it is blocked and not
    /// allow-listed.
    fn check_addr(&self, url: &Url, name: Option<&str>, ip: IpAddr) -> Result<()> {
        let Some(blocked) = blocked(ip) else {
            return Ok(());
        };
        if self.permits(ip, blocked.embedded) {
            return Ok(());
        }
        let kind = blocked.kind;
        let what = match (name, blocked.embedded) {
            (None, None) => format!("{ip} is {kind}"),
            (None, Some(v4)) => format!("{ip} embeds {v4}, {kind}"),
            (Some(name), None) => format!("{name} resolves to {ip}, {kind}"),
            (Some(name), Some(v4)) => format!("{name} resolves to {ip}, which embeds {v4}, {kind}"),
        };
        let add = if name.is_some() { "add the address or the host name" } else { "add it" };
        Err(denied(url, &format!("{what}; {add} to the tenant's browser_allow list to permit it")))
    }
}

/// Parses one allow-list entry; the error is the reason it is invalid.
fn parse_entry(entry: &str) -> std::result::Result<Entry, String> {
    if entry.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if entry.len() > MAX_ALLOW_ENTRY_LEN {
        return Err(format!("must be at most {MAX_ALLOW_ENTRY_LEN} bytes"));
    }
    if entry.contains('/') {
        return entry
            .parse::<IpNet>()
            .map(|net| Entry::Net(net.trunc()))
            .map_err(|_| format!("{entry:?} is not a CIDR (such as 10.0.0.0/8 or fd00::/8)"));
    }
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Ok(Entry::Net(IpNet::from(ip)));
    }
    let (wildcard, name) = match entry.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, entry),
    };
    if !is_host_name(name) {
        return Err(format!(
            "{entry:?} is not a CIDR, an IP address, a host name (dot-separated labels of \
             A-Z a-z 0-9 -, the last not all digits) or `*.` and a host name"
        ));
    }
    let name = name.to_ascii_lowercase();
    Ok(if wildcard { Entry::Suffix(format!(".{name}")) } else { Entry::Name(name) })
}

/// Dot-separated labels of 1..=63 bytes of `[A-Za-z0-9-]`, the last not all digits (the URL
/// Standard would read such a host as an IPv4 address, so the entry could never match).
fn is_host_name(name: &str) -> bool {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= MAX_LABEL_LEN
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    name.split('.').all(label_ok)
        && name.rsplit('.').next().is_some_and(|last| !last.bytes().all(|b| b.is_ascii_digit()))
}

/// `localhost` or a name under it (RFC 6761 §6.3).
pub(crate) fn is_localhost(name: &str) -> bool {
    name == "localhost" || name.ends_with(".localhost")
}

/// Applies the scheme rules and says what to check of the host.
fn target(url: &Url) -> Result<Target> {
    match url.scheme() {
        "http" | "https" => match url.host() {
            Some(Host::Domain(d)) => Ok(Target::Name(d.trim_end_matches('.').to_ascii_lowercase())),
            Some(Host::Ipv4(ip)) => Ok(Target::Addr(IpAddr::V4(ip))),
            Some(Host::Ipv6(ip)) => Ok(Target::Addr(IpAddr::V6(ip))),
            None => Err(Error::invalid("url", "must name a host")),
        },
        "data" => Ok(Target::NoHost),
        // `about:blank`, `about:blank?x`, `about:blank#x`: the path is exactly `blank`
        "about" if url.path() == "blank" => Ok(Target::NoHost),
        "about" => Err(denied(url, "of the about: scheme only about:blank is allowed")),
        scheme => Err(denied(
            url,
            &format!(
                "the {scheme}: scheme is not allowed (only http, https, data: and about:blank \
                 are, whatever the tenant's browser_allow list says)"
            ),
        )),
    }
}

/// Resolves `host` within [`RESOLVE_TIMEOUT`]; nothing when it fails or takes longer.
pub(crate) async fn resolve(host: &str, port: u16) -> Vec<IpAddr> {
    match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port))).await {
        Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
        // Chromium will not resolve it either and reports its own error
        Ok(Err(_)) | Err(_) => Vec::new(),
    }
}

/// Why `ip` is blocked, or `None` when it is a public address.
fn blocked(ip: IpAddr) -> Option<Blocked> {
    match ip {
        IpAddr::V4(v4) => blocked_v4(v4).map(|kind| Blocked { kind, embedded: None }),
        IpAddr::V6(v6) => blocked_v6(v6),
    }
}

fn blocked_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if a == 0 {
        Some("an unspecified (\"this network\") address")
    } else if ip.is_loopback() {
        Some("a loopback address")
    } else if ip == METADATA {
        Some("a link-local address (the cloud metadata service)")
    } else if ip.is_link_local() {
        Some("a link-local address")
    } else if ip.is_private() {
        Some("a private address")
    } else if a == 100 && b & 0xc0 == 64 {
        Some("a shared (carrier-grade NAT) address")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else if ip.is_broadcast() {
        Some("the broadcast address")
    } else if [a, b, ip.octets()[2]] == [192, 0, 0] {
        Some("an IETF protocol assignment address")
    } else if ip.is_documentation() {
        Some("a documentation address")
    } else if a == 198 && b & 0xfe == 18 {
        Some("a benchmarking address")
    } else if a >= 240 {
        Some("a reserved address")
    } else {
        None
    }
}

fn blocked_v6(ip: Ipv6Addr) -> Option<Blocked> {
    let own = |kind| Some(Blocked { kind, embedded: None });
    if ip.is_loopback() {
        return own("a loopback address");
    }
    if ip.is_unspecified() {
        return own("an unspecified address");
    }
    if let Some(v4) = embedded_v4(ip) {
        return blocked_v4(v4).map(|kind| Blocked { kind, embedded: Some(v4) });
    }
    let first = ip.segments()[0];
    if first & 0xffc0 == 0xfe80 {
        own("a link-local address")
    } else if first & 0xffc0 == 0xfec0 {
        own("a site-local address")
    } else if first & 0xfe00 == 0xfc00 {
        own("a private (unique local) address")
    } else if ip.is_multicast() {
        own("a multicast address")
    } else if ip.segments()[..2] == [0x2001, 0x0db8] {
        own("a documentation address")
    } else if ip.segments()[..4] == [0x0100, 0, 0, 0] {
        own("a discard-only address")
    } else {
        None
    }
}

/// The IPv4 address an IPv6 address carries: IPv4-mapped, IPv4-compatible, IPv4-translated,
/// NAT64 (well-known prefix) or 6to4.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let [.., a, b, c, d] = ip.octets();
    let low = Ipv4Addr::new(a, b, c, d);
    match ip.segments() {
        [0, 0, 0, 0, 0, 0xffff, _, _]
        | [0, 0, 0, 0, 0, 0, _, _]
        | [0, 0, 0, 0, 0xffff, 0, _, _]
        | [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        [0x2002, hi, lo, ..] => {
            let [a, b] = hi.to_be_bytes();
            let [c, d] = lo.to_be_bytes();
            Some(Ipv4Addr::new(a, b, c, d))
        }
        _ => None,
    }
}

/// [`Error::PermissionDenied`] quoting `url` (without credentials, shortened) and `reason`.
fn denied(url: &Url, reason: &str) -> Error {
    let mut shown = url.clone();
    // credentials never go into a message, which may be logged; a URL that cannot have them
    // (`data:`) refuses the change and has none
    let _ = shown.set_password(None);
    let _ = shown.set_username("");
    let s = shown.as_str();
    let s = if s.len() > MAX_URL_IN_MESSAGE {
        let mut end = MAX_URL_IN_MESSAGE;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    } else {
        s.to_owned()
    };
    Error::PermissionDenied(format!("{s}: {reason}"))
}

#[cfg(test)]
mod tests;
