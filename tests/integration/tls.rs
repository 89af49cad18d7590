//! TLS (`[tls]`) on the real binary, with a throwaway CA and certificates made by rcgen: a client
//! that trusts the CA works on the public HTTP listener, its WebSocket route and both gRPC
//! listeners, a plain client is refused, a certificate swapped on disk is served within
//! `reload_interval`, and a client that never finishes its handshake is dropped after
//! `handshake_timeout`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::sockets::tenant;
use crate::support::{Steward, WITHIN, eventually};

/// `[tls] reload_interval` and `handshake_timeout` of these tests.
const RELOAD: Duration = Duration::from_secs(1);
const HANDSHAKE: Duration = Duration::from_secs(1);

/// A throwaway CA.
struct Ca {
    cert: rcgen::Certificate,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "Steward test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self { cert, issuer: Issuer::new(params, key) }
    }

    /// A server certificate for 127.0.0.1 and localhost named `name`: (chain and key in one
    /// PEM, the certificate's DER).
    fn leaf(&self, name: &str) -> (String, CertificateDer<'static>) {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.use_authority_key_identifier_extension = true;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (format!("{}{}", cert.pem(), key.serialize_pem()), cert.der().clone())
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A rustls client that trusts this CA only, offering `alpn`.
    fn client(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

/// Replaces `path` at once, as a deploy tool would (write beside it, rename over it).
fn swap(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Steward serving TLS from `server.pem` (chain and key in one file) in a temp dir.
struct TlsSteward {
    s: Steward,
    ca: Ca,
    pem: PathBuf,
    dir: tempfile::TempDir,
}

impl TlsSteward {
    async fn start() -> Self {
        // the clients below (reqwest, tonic) would otherwise ask rustls for a default provider
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = Ca::new();
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("server.pem");
        std::fs::write(&pem, ca.leaf("first").0).unwrap();
        let file = pem.to_str().unwrap().to_owned();
        let reload = format!("{}ms", RELOAD.as_millis());
        let handshake = format!("{}ms", HANDSHAKE.as_millis());
        let s = Steward::start(&[
            ("STEWARD__TLS__CERT_FILE", &file),
            ("STEWARD__TLS__KEY_FILE", &file),
            ("STEWARD__TLS__RELOAD_INTERVAL", &reload),
            ("STEWARD__TLS__HANDSHAKE_TIMEOUT", &handshake),
        ])
        .await;
        Self { s, ca, pem, dir }
    }

    /// `host:port` of a listener from its `http://` address.
    fn addr(url: &str) -> String {
        url.strip_prefix("http://").unwrap().to_owned()
    }

    /// The leaf certificate the listener at `url` serves now, through a raw rustls handshake.
    async fn served(&self, url: &str, alpn: &[&[u8]]) -> CertificateDer<'static> {
        let tls = self.connect(url, alpn).await.expect("tls handshake");
        tls.get_ref().1.peer_certificates().unwrap()[0].clone().into_owned()
    }

    /// A TLS connection to the listener at `url`, trusting the test CA.
    async fn connect(
        &self,
        url: &str,
        alpn: &[&[u8]],
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(Self::addr(url)).await?;
        let connector = tokio_rustls::TlsConnector::from(self.ca.client(alpn));
        let name = ServerName::try_from("127.0.0.1").unwrap();
        tokio::time::timeout(WITHIN, connector.connect(name, tcp)).await.expect("handshake ends")
    }

    /// A gRPC channel over TLS to the listener at `url`, trusting the test CA.
    async fn grpc_channel(&self, url: &str) -> tonic::transport::Channel {
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(self.ca.pem()));
        tonic::transport::Endpoint::from_shared(https(url))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .expect("a TLS gRPC channel")
    }
}

fn https(url: &str) -> String {
    url.replacen("http://", "https://", 1)
}

/// Whether `grpc.health.v1` answers SERVING on `channel` (soon after "ready").
async fn serving(channel: tonic::transport::Channel) -> bool {
    let health = HealthClient::new(channel);
    eventually(WITHIN, || {
        let mut health = health.clone();
        async move {
            health
                .check(HealthCheckRequest { service: String::new() })
                .await
                .is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32)
        }
    })
    .await
}

#[tokio::test]
async fn a_client_that_trusts_the_ca_works_on_every_listener_and_a_plain_client_is_refused() {
    let t = TlsSteward::start().await;
    let s = &t.s;
    let bound: Vec<serde_json::Value> = s
        .dump()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "listener bound")
        .collect();
    for (listener, tls) in
        [("public", true), ("grpc", true), ("grpc-admin", true), ("admin", false)]
    {
        assert!(
            bound.iter().any(|v| v["listener"] == listener && v["tls"] == tls),
            "{listener}: no `listener bound` line with tls = {tls}: {bound:?}"
        );
    }

    // HTTPS on the public listener
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(t.ca.pem().as_bytes()).unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let r = client.get(format!("{}/healthz", https(&s.public))).send().await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    // plain HTTP to the same port gets no HTTP answer
    let plain = s.http.get(format!("{}/healthz", s.public)).send().await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
    // a client that does not trust the CA refuses the server
    let stranger = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(Ca::new().pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    assert!(stranger.get(format!("{}/healthz", https(&s.public))).send().await.is_err());
    // the admin HTTP listener stays plain (loopback)
    let r = s.get("/healthz").send().await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);

    // wss:// on /v1/ws: the upgrade over TLS, then the protocol
    let token = tenant(s, "acme").await;
    let tls = t.connect(&s.public, &[b"http/1.1"]).await.expect("tls to the public listener");
    let mut request = format!("{}/v1/ws", s.public.replacen("http://", "wss://", 1))
        .into_client_request()
        .unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, response) =
        tokio_tungstenite::client_async(request, tls).await.expect("websocket upgrade over tls");
    assert_eq!(response.status().as_u16(), 101);
    ws.send(Message::text(r#"{"type":"ping","id":1}"#)).await.unwrap();
    let pong = tokio::time::timeout(WITHIN, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    return serde_json::from_str::<serde_json::Value>(&t).unwrap();
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("a pong within the deadline");
    assert_eq!(pong, serde_json::json!({"type": "pong", "id": 1}));
    ws.close(None).await.unwrap();

    // gRPC over TLS on both listeners
    assert!(serving(t.grpc_channel(&s.grpc).await).await, "grpc over TLS never SERVING");
    assert!(
        serving(t.grpc_channel(&s.grpc_admin).await).await,
        "grpc-admin over TLS never SERVING"
    );
    // plain h2c to the TLS port fails
    let plain = tonic::transport::Endpoint::from_shared(s.grpc.clone())
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await;
    if let Ok(channel) = plain {
        let mut health = HealthClient::new(channel);
        let r = health.check(HealthCheckRequest { service: String::new() }).await;
        assert!(r.is_err(), "plain gRPC answered: {r:?}");
    }

    // the README's walk-through with TLS: `steward whoami` on an https:// address with the CA
    let ca = t.dir.path().join("ca.pem");
    std::fs::write(&ca, t.ca.pem()).unwrap();
    let out = crate::support::run(
        &["whoami", "--grpc", &https(&s.grpc)],
        &[("STEWARD_TOKEN", &token), ("STEWARD_CA_FILE", ca.to_str().unwrap())],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("tenant:  acme"), "{stdout}");
}

#[tokio::test]
async fn a_certificate_swapped_on_disk_is_served_within_reload_interval() {
    let t = TlsSteward::start().await;
    let s = &t.s;
    let first = t.served(&s.public, &[]).await;
    assert_eq!(t.served(&s.grpc, &[b"h2"]).await, first, "one certificate for every listener");

    // a broken file keeps the served certificate
    swap(&t.pem, "-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n");
    let refused = eventually(WITHIN, || async {
        s.find_message("refused the changed tls certificate").is_some()
    })
    .await;
    assert!(refused, "no warning about the broken file: {}", s.dump());
    assert_eq!(t.served(&s.public, &[]).await, first);

    let (pem, second) = t.ca.leaf("second");
    assert_ne!(second, first);
    swap(&t.pem, &pem);
    let swapped = Instant::now();
    // within reload_interval, plus room for a loaded machine
    let served = eventually(RELOAD + Duration::from_secs(5), || async {
        t.served(&s.public, &[]).await == second
    })
    .await;
    assert!(
        served,
        "the new certificate was not served within {:?}",
        RELOAD + Duration::from_secs(5)
    );
    eprintln!("new certificate served {:?} after the swap", swapped.elapsed());
    assert_eq!(t.served(&s.grpc, &[b"h2"]).await, second);
    assert_eq!(t.served(&s.grpc_admin, &[b"h2"]).await, second);
    assert!(serving(t.grpc_channel(&s.grpc).await).await);
}

#[tokio::test]
async fn a_client_that_never_finishes_its_handshake_is_dropped_after_handshake_timeout() {
    let t = TlsSteward::start().await;
    let s = &t.s;
    for url in [&s.public, &s.grpc, &s.grpc_admin] {
        let mut silent = TcpStream::connect(TlsSteward::addr(url)).await.unwrap();
        let t0 = Instant::now();
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(HANDSHAKE + Duration::from_secs(4), silent.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{url}: still open {:?} after connecting", t0.elapsed()));
        assert!(matches!(read, Ok(0) | Err(_)), "{url}: {read:?}");
        assert!(
            t0.elapsed() >= HANDSHAKE.mul_f32(0.9),
            "{url}: closed after {:?}, before handshake_timeout",
            t0.elapsed()
        );
    }
    // the listeners still serve
    assert_eq!(t.served(&s.public, &[]).await, t.served(&s.grpc, &[b"h2"]).await);
    // the two gRPC listeners' silent clients were counted
    let timed_out = "steward_tls_handshakes_failed_total{reason=\"timeout\"}";
    assert!(crate::sockets::metric(s, timed_out).await >= 2.0);
}
