//! Tests of the URL policy: schemes, special addresses, names that resolve to them, allow lists.

use std::net::IpAddr;

use url::Url;

use super::{MAX_ALLOW_ENTRIES, UrlPolicy};
use crate::Error;

fn policy(allow: &[&str]) -> UrlPolicy {
    let allow: Vec<String> = allow.iter().map(|s| (*s).to_owned()).collect();
    UrlPolicy::new(&allow).unwrap()
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

/// `check_resolved` of `url` resolving to `addrs`.
fn verdict(p: &UrlPolicy, url: &str, addrs: &[&str]) -> Result<(), Error> {
    p.check_resolved(&Url::parse(url).unwrap(), &ips(addrs))
}

/// The refusal's message; panics unless it is a refusal.
fn refusal(p: &UrlPolicy, url: &str, addrs: &[&str]) -> String {
    match verdict(p, url, addrs) {
        Err(Error::PermissionDenied(m)) => m,
        other => panic!("{url} {addrs:?}: expected a refusal, got {other:?}"),
    }
}

fn assert_allowed(p: &UrlPolicy, url: &str, addrs: &[&str]) {
    if let Err(e) = verdict(p, url, addrs) {
        panic!("{url} {addrs:?}: expected it to pass, got {e}");
    }
}

fn invalid_field(allow: &[String]) -> String {
    match UrlPolicy::new(allow) {
        Err(Error::InvalidArgument { field, .. }) => field,
        other => panic!("{allow:?}: expected InvalidArgument, got {other:?}"),
    }
}

#[test]
fn only_http_https_data_and_about_blank_load() {
    let p = UrlPolicy::default();
    for ok in [
        "about:blank",
        "about:blank#top",
        "about:blank?x=1",
        "data:text/html,<h1>hi</h1>",
        "data:,",
        "http://example.com/",
        "https://example.com:8443/a?b#c",
    ] {
        assert_allowed(&p, ok, &["93.184.215.14"]);
    }
    for bad in [
        "file:///etc/passwd",
        "file://localhost/etc/passwd",
        "chrome://settings",
        "chrome://gpu/",
        "chrome-extension://abcdefghijklmnop/page.html",
        "chrome-untrusted://terminal/",
        "devtools://devtools/bundled/inspector.html",
        "view-source:http://example.com/",
        "javascript:alert(1)",
        "ftp://example.com/file",
        "ws://example.com/socket",
        "wss://example.com/socket",
        "blob:https://example.com/1b2c3d",
        "filesystem:https://example.com/temporary/x",
        "about:version",
        "about:config",
        "about:srcdoc",
        "about:blankx",
        "about:blank/x",
        "mailto:a@example.com",
        "gopher://example.com/",
    ] {
        let m = refusal(&p, bad, &["93.184.215.14"]);
        assert!(m.contains("scheme") || m.contains("about:blank"), "{bad}: {m}");
    }
}

#[test]
fn scheme_rules_are_not_allow_listable() {
    let p = policy(&["0.0.0.0/0", "::/0", "localhost", "*.example.com", "example.com"]);
    for bad in ["file:///etc/passwd", "chrome://settings", "about:version", "javascript:1"] {
        refusal(&p, bad, &[]);
    }
}

#[test]
fn blocked_ipv4_ranges_are_refused_with_their_reason() {
    let p = UrlPolicy::default();
    for (ip, kind) in [
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("169.254.169.254", "cloud metadata"),
        ("169.254.0.1", "link-local"),
        ("10.0.0.1", "private"),
        ("10.255.255.255", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "shared"),
        ("100.127.255.255", "shared"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("192.0.0.8", "IETF protocol"),
        ("192.0.2.2", "documentation"),
        ("198.51.100.1", "documentation"),
        ("203.0.113.9", "documentation"),
        ("198.18.0.1", "benchmarking"),
        ("198.19.255.255", "benchmarking"),
        ("240.0.0.1", "reserved"),
        ("254.255.255.255", "reserved"),
    ] {
        let m = refusal(&p, &format!("http://{ip}/"), &[]);
        assert!(m.contains(kind), "{ip}: {m}");
    }
    for public in [
        "8.8.8.8",
        "1.1.1.1",
        "11.0.0.1",
        "100.63.255.255",
        "100.128.0.0",
        "126.255.255.255",
        "128.0.0.1",
        "169.253.255.255",
        "169.255.0.1",
        "172.15.255.255",
        "172.32.0.0",
        "192.167.255.255",
        "192.169.0.0",
        "192.0.1.255",
        "192.0.3.0",
        "198.17.255.255",
        "198.20.0.0",
        "203.0.112.255",
        "223.255.255.255",
    ] {
        assert_allowed(&p, &format!("http://{public}/"), &[]);
    }
}

#[test]
fn blocked_ipv6_ranges_are_refused_with_their_reason() {
    let p = UrlPolicy::default();
    for (ip, kind) in [
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("febf:ffff::1", "link-local"),
        ("fec0::1", "site-local"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("ff02::1", "multicast"),
        ("ff0e::1", "multicast"),
        ("2001:db8::1", "documentation"),
        ("100::1", "discard-only"),
    ] {
        let m = refusal(&p, &format!("http://[{ip}]/"), &[]);
        assert!(m.contains(kind), "{ip}: {m}");
    }
    for public in ["2001:4860:4860::8888", "2606:4700::1111", "fe7f::1", "fe00::1", "2001:db9::1"] {
        assert_allowed(&p, &format!("http://[{public}]/"), &[]);
    }
}

#[test]
fn ipv6_embedding_a_blocked_ipv4_is_judged_by_it() {
    let p = UrlPolicy::default();
    for (ip, v4, kind) in [
        ("::ffff:127.0.0.1", "127.0.0.1", "loopback"), // IPv4-mapped
        ("::ffff:7f00:2", "127.0.0.2", "loopback"),
        ("::ffff:169.254.169.254", "169.254.169.254", "cloud metadata"),
        ("::ffff:10.1.2.3", "10.1.2.3", "private"),
        ("::127.0.0.1", "127.0.0.1", "loopback"), // IPv4-compatible
        ("::192.168.0.1", "192.168.0.1", "private"),
        ("::ffff:0:10.0.0.1", "10.0.0.1", "private"), // IPv4-translated
        ("64:ff9b::a9fe:a9fe", "169.254.169.254", "cloud metadata"), // NAT64
        ("64:ff9b::7f00:1", "127.0.0.1", "loopback"),
        ("2002:7f00:1::1", "127.0.0.1", "loopback"), // 6to4
        ("2002:c0a8:101::", "192.168.1.1", "private"),
    ] {
        let m = refusal(&p, &format!("http://[{ip}]/"), &[]);
        assert!(m.contains(&format!("embeds {v4}, ")) && m.contains(kind), "{ip}: {m}");
    }
    for public in ["::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1", "::8.8.8.8"] {
        assert_allowed(&p, &format!("http://[{public}]/"), &[]);
    }
}

#[test]
fn every_literal_address_form_is_normalised_before_the_check() {
    let p = UrlPolicy::default();
    for (url, host) in [
        ("http://2130706433/", "127.0.0.1"),
        ("http://0x7f.1/", "127.0.0.1"),
        ("http://0x7f000001/", "127.0.0.1"),
        ("http://017700000001/", "127.0.0.1"),
        ("http://0177.0.0.1/", "127.0.0.1"),
        ("http://127.1/", "127.0.0.1"),
        ("http://127.0.0.1./", "127.0.0.1"),
        ("http://0/", "0.0.0.0"),
        ("http://0xa9.0xfe.0xa9.0xfe/latest/meta-data/", "169.254.169.254"),
        ("http://2852039166/", "169.254.169.254"),
        ("http://%31%32%37.0.0.1/", "127.0.0.1"),
        ("https://[::1]:8443/", "[::1]"),
        ("http://[0:0:0:0:0:0:0:1]/", "[::1]"),
        ("http://[::ffff:7f00:1]/", "[::ffff:7f00:1]"),
        ("http://[::FFFF:127.0.0.1]/", "[::ffff:7f00:1]"),
        ("http://user:pw@127.0.0.1/", "127.0.0.1"),
    ] {
        let parsed = Url::parse(url).unwrap();
        assert_eq!(parsed.host_str(), Some(host), "{url}");
        // the address is the host: what it "resolved" to does not matter
        refusal(&p, url, &["8.8.8.8"]);
    }
}

#[test]
fn localhost_names_are_loopback_without_resolving() {
    let p = UrlPolicy::default();
    for url in [
        "http://localhost/",
        "http://LOCALHOST:8080/",
        "http://localhost./",
        "http://app.localhost/",
        "https://a.b.localhost/x",
    ] {
        let m = refusal(&p, url, &["8.8.8.8"]);
        assert!(m.contains("loopback"), "{url}: {m}");
    }
    // only the label `localhost` counts
    assert_allowed(&p, "http://notlocalhost/", &["8.8.8.8"]);
    assert_allowed(&p, "http://localhost.example.com/", &["8.8.8.8"]);
}

#[test]
fn names_are_judged_by_every_address_they_resolve_to() {
    let p = UrlPolicy::default();
    let m = refusal(&p, "http://db.internal/", &["10.0.0.5"]);
    assert!(m.contains("db.internal resolves to 10.0.0.5, a private address"), "{m}");
    let m = refusal(&p, "http://mixed.example/", &["8.8.8.8", "169.254.169.254"]);
    assert!(m.contains("169.254.169.254") && m.contains("cloud metadata"), "{m}");
    let m = refusal(&p, "http://v6.example/", &["2606:4700::1111", "::ffff:127.0.0.1"]);
    assert!(m.contains("which embeds 127.0.0.1, a loopback address"), "{m}");
    refusal(&p, "http://127.0.0.1.nip.io/", &["127.0.0.1"]);
    assert_allowed(&p, "https://example.com/", &["93.184.215.14", "2606:2800:21f:cb07::1"]);
    // no answer: Chromium will not resolve it either
    assert_allowed(&p, "http://does-not-resolve.invalid/", &[]);
}

#[test]
fn refusals_name_the_reason_and_the_remedy() {
    let p = UrlPolicy::default();
    let err = verdict(&p, "http://127.0.0.1:8080/", &[]).unwrap_err();
    assert_eq!(err.code(), "url_not_allowed");
    assert_eq!(
        err.to_string(),
        "url refused: http://127.0.0.1:8080/: 127.0.0.1 is a loopback address; add it to the \
         tenant's browser_allow list to permit it"
    );
    let m = refusal(&p, "http://intranet.example/", &["192.168.0.10"]);
    assert!(
        m.ends_with(
            "add the address or the host name to the tenant's browser_allow list to permit it"
        ),
        "{m}"
    );
    // credentials never appear, long URLs are shortened
    let m = refusal(&p, "http://admin:hunter2@10.0.0.1/", &[]);
    assert!(!m.contains("hunter2") && !m.contains("admin"), "{m}");
    let long = format!("javascript:{}", "a".repeat(10_000));
    let m = refusal(&p, &long, &[]);
    assert!(m.len() < 600, "{}", m.len());
}

#[test]
fn cidr_and_address_entries_permit_what_they_contain() {
    let p = policy(&["127.0.0.0/8", "10.1.0.0/16", "192.168.1.1", "fd00::/8", "::1"]);
    assert!(!p.is_empty());
    assert_allowed(&p, "http://127.0.0.1:8080/", &[]);
    assert_allowed(&p, "http://127.9.9.9/", &[]);
    assert_allowed(&p, "http://10.1.200.3/", &[]);
    refusal(&p, "http://10.2.0.1/", &[]);
    assert_allowed(&p, "http://192.168.1.1/", &[]);
    refusal(&p, "http://192.168.1.2/", &[]);
    assert_allowed(&p, "http://[fd12::1]/", &[]);
    refusal(&p, "http://[fc00::1]/", &[]);
    assert_allowed(&p, "http://[::1]/", &[]);
    refusal(&p, "http://[fe80::1]/", &[]);
    refusal(&p, "http://169.254.169.254/", &[]);
    // resolved names: every address must be permitted
    assert_allowed(&p, "http://db.internal/", &["10.1.0.5"]);
    refusal(&p, "http://db.internal/", &["10.1.0.5", "10.2.0.5"]);
    // an embedded IPv4 is permitted by an entry that contains it
    assert_allowed(&p, "http://[::ffff:127.0.0.1]/", &[]);
    assert_allowed(&p, "http://[64:ff9b::a01:101]/", &[]);
    // a host part in a CIDR entry is ignored
    let p = policy(&["10.0.0.1/8"]);
    assert_allowed(&p, "http://10.200.0.1/", &[]);
}

#[test]
fn loopback_entries_permit_localhost() {
    for allow in ["127.0.0.1", "127.0.0.0/8", "::1", "localhost"] {
        assert_allowed(&policy(&[allow]), "http://localhost:3000/", &[]);
    }
    let p = policy(&["*.localhost"]);
    assert_allowed(&p, "http://app.localhost/", &[]);
    refusal(&p, "http://localhost/", &[]);
    refusal(&policy(&["10.0.0.0/8"]), "http://localhost/", &[]);
}

#[test]
fn name_entries_match_the_host_exactly_and_wildcards_its_sub_domains() {
    let p = policy(&["Intranet.Example", "*.corp.example"]);
    // a named host passes whatever it resolves to
    assert_allowed(&p, "http://intranet.example/", &["10.0.0.5"]);
    assert_allowed(&p, "http://INTRANET.example./", &["127.0.0.1"]);
    refusal(&p, "http://a.intranet.example/", &["10.0.0.5"]);
    refusal(&p, "http://intranet.example.com/", &["10.0.0.5"]);
    assert_allowed(&p, "https://git.corp.example/", &["10.0.0.6"]);
    assert_allowed(&p, "https://a.b.corp.example/", &["fd00::6"]);
    refusal(&p, "https://corp.example/", &["10.0.0.6"]);
    refusal(&p, "https://evilcorp.example/", &["10.0.0.6"]);
    // names never permit an address host
    refusal(&policy(&["localhost"]), "http://127.0.0.1/", &[]);
}

#[test]
fn new_accepts_the_documented_entry_forms() {
    let max_name =
        format!("{}.{}.{}.{}", "a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(61));
    assert_eq!(max_name.len(), 253);
    let entries: Vec<String> = [
        "127.0.0.0/8",
        "0.0.0.0/0",
        "fd00::/8",
        "::/0",
        "127.0.0.1",
        "::1",
        "::ffff:10.0.0.1",
        "localhost",
        "intranet.example",
        "Intranet.EXAMPLE",
        "*.corp.example",
        "xn--bcher-kva.example",
        "my-host",
        "a1.b2",
        &max_name,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    UrlPolicy::new(&entries).unwrap();
    let full: Vec<String> = (0..MAX_ALLOW_ENTRIES).map(|i| format!("10.0.{i}.0/24")).collect();
    UrlPolicy::new(&full).unwrap();
    assert!(UrlPolicy::default().is_empty());
    assert!(UrlPolicy::new(&[]).unwrap().is_empty());
}

#[test]
fn new_refuses_malformed_entries_naming_them() {
    let too_many: Vec<String> = (0..=MAX_ALLOW_ENTRIES).map(|i| format!("10.0.{i}.0/24")).collect();
    assert_eq!(invalid_field(&too_many), "browser_allow");
    let long_label = format!("{}.example", "a".repeat(64));
    let too_long = format!("{}.example", "a.".repeat(123));
    assert!(too_long.len() > 253);
    for bad in [
        "",
        " ",
        "10.0.0.0/33",
        "::/129",
        "10.0.0/8",
        "10/8",
        "localhost/8",
        "not a host",
        "host_name.example",
        "*",
        "*.",
        "*example.com",
        "a.*.example",
        "a..b",
        ".example",
        "example.",
        "[::1]",
        "127.1",
        "10.0.0.256",
        "http://example.com",
        "example.com:8080",
        "bücher.example",
        &long_label,
        &too_long,
    ] {
        let entries = vec!["10.0.0.0/8".to_owned(), "ok.example".to_owned(), bad.to_owned()];
        assert_eq!(invalid_field(&entries), "browser_allow[2]", "{bad:?}");
    }
}

#[tokio::test]
async fn check_parses_checks_and_returns_the_url() {
    let p = UrlPolicy::default();
    let url = p.check("HTTP://8.8.8.8/a?b").await.unwrap();
    assert_eq!(url.as_str(), "http://8.8.8.8/a?b");
    p.check("about:blank").await.unwrap();
    p.check("data:text/plain,hi").await.unwrap();
    for bad in ["", "example.com", "/relative", "http://", "http://[::1/"] {
        match p.check(bad).await {
            Err(Error::InvalidArgument { field, .. }) => assert_eq!(field, "url", "{bad:?}"),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    for bad in
        ["http://2130706433/", "http://[::1]:9222/json", "http://localhost:9222/", "file:///"]
    {
        assert!(matches!(p.check(bad).await, Err(Error::PermissionDenied(_))), "{bad}");
    }
    // an allow-listed name is not resolved at all; one that does not resolve passes
    policy(&["db.internal"]).check("http://db.internal/").await.unwrap();
    p.check("http://does-not-exist.invalid/").await.unwrap();
}
