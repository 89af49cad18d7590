//! Tests of the resolver, the server configs, the handshake deadline and the reload service,
//! with a throwaway CA and certificates made by rcgen and real rustls clients on loopback.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use steward_config::{Config, TlsConfig, TlsVersion};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// A throwaway CA.
struct Ca {
    cert: rcgen::Certificate,
    issuer: Issuer<'static, KeyPair>,
}

/// A leaf: PEM chain and PEM key.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self { cert, issuer: Issuer::new(params, key) }
    }

    /// A leaf for `localhost` and 127.0.0.1, good for server and client authentication.
    fn leaf(&self, name: &str) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().clone() }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        roots
    }
}

impl Leaf {
    /// Chain and key in one PEM.
    fn combined(&self) -> String {
        format!("{}{}", self.cert_pem, self.key_pem)
    }

    fn chain_and_key(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        use rustls::pki_types::pem::PemObject as _;
        (vec![self.der.clone()], PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).unwrap())
    }
}

/// Replaces `path` at once (write beside it, then rename), as a deploy tool or Kubernetes does.
fn swap(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A temp dir with `server.pem` (chain and key of `leaf`) and `ca.pem`.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new(ca: &Ca, leaf: &Leaf) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("server.pem"), leaf.combined()).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `[tls]` serving `server.pem` (chain and key in one file).
    fn config(&self) -> TlsConfig {
        TlsConfig {
            cert_file: self.path("server.pem"),
            key_file: self.path("server.pem"),
            ..Config::defaults().tls
        }
    }
}

fn client_config(
    ca: &Ca,
    versions: &[&'static SupportedProtocolVersion],
    cert: Option<&Leaf>,
) -> Arc<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(ca.roots());
    Arc::new(match cert {
        Some(leaf) => {
            let (chain, key) = leaf.chain_and_key();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    })
}

const ALL: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// A connected loopback pair: (server side, client side).
async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (server.unwrap().0, client.unwrap())
}

type ClientStream = tokio_rustls::client::TlsStream<TcpStream>;
type ServerStream = tokio_rustls::server::TlsStream<TcpStream>;

/// Both sides of one handshake, then one byte each way (a TLS 1.3 server refuses a client
/// certificate after the client's handshake has finished: the exchange shows it).
async fn handshake(
    acceptor: &Acceptor,
    client: Arc<ClientConfig>,
) -> (Result<ServerStream>, std::io::Result<ClientStream>) {
    let (server_io, client_io) = tcp_pair().await;
    let connector = tokio_rustls::TlsConnector::from(client);
    let name = ServerName::try_from("localhost").unwrap();
    let server = async {
        let mut s = acceptor.accept(server_io).await?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.map_err(Error::Handshake)?;
        s.write_all(&b).await.map_err(Error::Handshake)?;
        s.flush().await.map_err(Error::Handshake)?;
        Ok(s)
    };
    let client = async {
        let mut c = connector.connect(name, client_io).await?;
        c.write_all(b"x").await?;
        c.flush().await?;
        let mut b = [0u8; 1];
        c.read_exact(&mut b).await?;
        Ok(c)
    };
    tokio::time::timeout(Duration::from_secs(10), async { tokio::join!(server, client) })
        .await
        .expect("the handshake ends")
}

fn peer_leaf(c: &ClientStream) -> CertificateDer<'static> {
    c.get_ref().1.peer_certificates().unwrap()[0].clone().into_owned()
}

#[test]
fn tls_is_off_without_a_certificate() {
    assert!(Tls::from_config(&Config::defaults().tls).unwrap().is_none());
    assert!(matches!(Tls::new(&Config::defaults().tls), Err(Error::Disabled)));
}

#[test]
fn start_fails_on_a_missing_or_mismatched_pair_naming_the_file() {
    let ca = Ca::new("test CA");
    let (a, b) = (ca.leaf("a"), ca.leaf("b"));
    let files = Files::new(&ca, &a);
    let missing = TlsConfig { cert_file: files.path("nope.pem"), ..files.config() };
    let err = Tls::new(&missing).unwrap_err();
    assert!(matches!(err, Error::Read { what: "certificate", .. }), "{err}");
    assert!(err.to_string().contains("nope.pem"), "{err}");

    std::fs::write(files.path("b.key"), &b.key_pem).unwrap();
    let mismatched = TlsConfig { key_file: files.path("b.key"), ..files.config() };
    let err = Tls::new(&mismatched).unwrap_err();
    assert!(matches!(err, Error::Key { .. }), "{err}");
    let why = error::chain(&err);
    assert!(!why.contains("PRIVATE KEY") && !why.contains(&b.key_pem), "{why}");

    std::fs::write(files.path("empty.pem"), "not a certificate\n").unwrap();
    let empty = TlsConfig { cert_file: files.path("empty.pem"), ..files.config() };
    assert!(matches!(Tls::new(&empty), Err(Error::NoCertificate(_))));
}

#[tokio::test]
async fn the_resolver_serves_the_certificate_with_h2_for_grpc() {
    let ca = Ca::new("test CA");
    let leaf = ca.leaf("steward");
    let files = Files::new(&ca, &leaf);
    let tls = Tls::new(&files.config()).unwrap();
    assert_eq!(tls.resolver().current().cert[0], leaf.der);
    assert_eq!(tls.grpc_server_config().alpn_protocols, vec![b"h2".to_vec()]);
    assert!(tls.http_server_config().alpn_protocols.is_empty(), "actix-web adds its own");

    let mut client = (*client_config(&ca, ALL, None)).clone();
    client.alpn_protocols = vec![b"h2".to_vec()];
    let (server, client) = handshake(&tls.acceptor(), Arc::new(client)).await;
    let (server, client) = (server.unwrap(), client.unwrap());
    assert_eq!(peer_leaf(&client), leaf.der);
    assert_eq!(server.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));

    // a client that trusts another CA refuses the server
    let other = Ca::new("other CA");
    let (_, client) = handshake(&tls.acceptor(), client_config(&other, ALL, None)).await;
    assert!(client.is_err());
}

#[tokio::test]
async fn a_certificate_swapped_on_disk_is_served_after_reload() {
    let ca = Ca::new("test CA");
    let (old, new) = (ca.leaf("old"), ca.leaf("new"));
    let files = Files::new(&ca, &old);
    let tls = Tls::new(&files.config()).unwrap();
    assert_eq!(tls.resolver().reload(), Reload::Unchanged);

    swap(&files.path("server.pem"), &new.combined());
    assert_eq!(tls.resolver().reload(), Reload::Reloaded);
    assert_eq!(tls.resolver().reload(), Reload::Unchanged);
    assert_eq!((tls.reloads_ok(), tls.reloads_failed()), (1, 0));
    let (_, client) = handshake(&tls.acceptor(), client_config(&ca, ALL, None)).await;
    assert_eq!(peer_leaf(&client.unwrap()), new.der, "new connections get the new certificate");

    // two files: the pair is taken once both are in place
    std::fs::write(files.path("cert.pem"), &old.cert_pem).unwrap();
    std::fs::write(files.path("key.pem"), &old.key_pem).unwrap();
    let two = TlsConfig {
        cert_file: files.path("cert.pem"),
        key_file: files.path("key.pem"),
        ..files.config()
    };
    let tls = Tls::new(&two).unwrap();
    swap(&files.path("cert.pem"), &new.cert_pem);
    assert_eq!(tls.resolver().reload(), Reload::Refused, "new certificate, old key");
    assert_eq!(tls.resolver().current().cert[0], old.der);
    swap(&files.path("key.pem"), &new.key_pem);
    assert_eq!(tls.resolver().reload(), Reload::Reloaded);
    assert_eq!(tls.resolver().current().cert[0], new.der);
    assert_eq!((tls.reloads_ok(), tls.reloads_failed()), (1, 1));
}

#[tokio::test]
async fn a_broken_file_keeps_the_old_certificate_and_is_counted_once() {
    let ca = Ca::new("test CA");
    let (good, next) = (ca.leaf("good"), ca.leaf("next"));
    let files = Files::new(&ca, &good);
    let tls = Tls::new(&files.config()).unwrap();
    let server_pem = files.path("server.pem");

    swap(
        &server_pem,
        "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
    );
    assert_eq!(tls.resolver().reload(), Reload::Refused);
    assert_eq!(tls.resolver().reload(), Reload::Refused, "still broken");
    assert_eq!(tls.reloads_failed(), 1, "one failure per distinct content");

    swap(&server_pem, &format!("{}{}", next.cert_pem, good.key_pem));
    assert_eq!(tls.resolver().reload(), Reload::Refused, "key of another certificate");
    std::fs::remove_file(&server_pem).unwrap();
    assert_eq!(tls.resolver().reload(), Reload::Refused, "file gone");
    assert_eq!(tls.resolver().reload(), Reload::Refused);
    assert_eq!(tls.reloads_failed(), 3);
    assert_eq!(tls.resolver().current().cert[0], good.der);
    let (_, client) = handshake(&tls.acceptor(), client_config(&ca, ALL, None)).await;
    assert_eq!(peer_leaf(&client.unwrap()), good.der, "still served");

    swap(&server_pem, &next.combined());
    assert_eq!(tls.resolver().reload(), Reload::Reloaded);
    assert_eq!((tls.reloads_ok(), tls.reloads_failed()), (1, 3));
}

#[tokio::test]
async fn min_version_1_3_refuses_a_tls_1_2_only_client() {
    let ca = Ca::new("test CA");
    let files = Files::new(&ca, &ca.leaf("steward"));
    let only_12: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];

    let default = Tls::new(&files.config()).unwrap();
    assert_eq!(default.min_version(), TlsVersion::Tls12);
    let (server, client) = handshake(&default.acceptor(), client_config(&ca, only_12, None)).await;
    let client = client.expect("1.2 is accepted by default");
    assert_eq!(client.get_ref().1.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
    server.unwrap();

    let strict = Tls::new(&TlsConfig { min_version: TlsVersion::Tls13, ..files.config() }).unwrap();
    let (server, client) = handshake(&strict.acceptor(), client_config(&ca, only_12, None)).await;
    assert!(matches!(server, Err(Error::Handshake(_))), "{server:?}");
    assert!(client.is_err());
    assert_eq!(strict.handshakes_failed(), 1);
    let (server, client) = handshake(&strict.acceptor(), client_config(&ca, ALL, None)).await;
    server.unwrap();
    assert_eq!(
        client.unwrap().get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate_of_the_ca() {
    let ca = Ca::new("test CA");
    let files = Files::new(&ca, &ca.leaf("steward"));
    let client_ca = Ca::new("client CA");
    std::fs::write(files.path("clients.pem"), client_ca.pem()).unwrap();
    let tls = Tls::new(&TlsConfig { client_ca_file: files.path("clients.pem"), ..files.config() })
        .unwrap();

    let (server, _) = handshake(&tls.acceptor(), client_config(&ca, ALL, None)).await;
    assert!(server.is_err(), "no client certificate");
    let stranger = Ca::new("stranger CA").leaf("mallory");
    let (server, _) = handshake(&tls.acceptor(), client_config(&ca, ALL, Some(&stranger))).await;
    assert!(server.is_err(), "a certificate of another CA");
    assert_eq!(tls.handshakes_failed(), 2);

    let alice = client_ca.leaf("alice");
    let (server, client) = handshake(&tls.acceptor(), client_config(&ca, ALL, Some(&alice))).await;
    let server = server.expect("a certificate of the client CA");
    client.unwrap();
    assert_eq!(server.get_ref().1.peer_certificates().unwrap()[0], alice.der);

    let err = Tls::new(&TlsConfig { client_ca_file: files.path("none.pem"), ..files.config() })
        .unwrap_err();
    assert!(matches!(err, Error::Read { what: "client CA", .. }), "{err}");
}

#[tokio::test]
async fn a_client_that_never_finishes_its_handshake_is_dropped_at_the_deadline() {
    let ca = Ca::new("test CA");
    let files = Files::new(&ca, &ca.leaf("steward"));
    let timeout = Duration::from_millis(300);
    let tls = Tls::new(&TlsConfig { handshake_timeout: timeout, ..files.config() }).unwrap();
    let acceptor = tls.acceptor();
    assert_eq!(acceptor.timeout(), timeout);

    let (server_io, mut silent) = tcp_pair().await;
    let t0 = Instant::now();
    let err = acceptor.accept(server_io).await.unwrap_err();
    assert!(matches!(err, Error::HandshakeTimeout(d) if d == timeout), "{err}");
    assert!(t0.elapsed() >= timeout && t0.elapsed() < timeout + Duration::from_secs(2));
    assert_eq!(tls.handshakes_timed_out(), 1);
    // its socket is closed: the client reads the end
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(2), silent.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "{read:?}");
}

#[tokio::test]
async fn incoming_handshakes_run_side_by_side_so_a_silent_client_delays_no_one() {
    use futures_util::StreamExt as _;

    let ca = Ca::new("test CA");
    let files = Files::new(&ca, &ca.leaf("steward"));
    let tls = Tls::new(&TlsConfig { handshake_timeout: Duration::from_secs(5), ..files.config() })
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = futures_util::stream::unfold(listener, |l| async move {
        let r = l.accept().await.map(|(s, _)| s);
        Some((r, l))
    });
    let mut incoming = tls.acceptor().incoming(accepted, 16);

    let _silent = TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(client_config(&ca, ALL, None));
    let t0 = Instant::now();
    let client = async {
        let io = TcpStream::connect(addr).await.unwrap();
        connector.connect(ServerName::try_from("localhost").unwrap(), io).await
    };
    let (client, first) = tokio::join!(client, incoming.next());
    client.unwrap();
    first.unwrap().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(4), "waited for the silent one: {:?}", t0.elapsed());
    assert_eq!(tls.handshakes_timed_out(), 0);
}

#[actix_rt::test]
async fn the_reload_service_serves_a_swapped_certificate_within_its_interval() {
    use steward_core::supervisor::Supervisor;
    use steward_core::{Registry, ResourceFilter, ResourceKind, Strategy, SupervisorSpec};

    let ca = Ca::new("test CA");
    let (old, new) = (ca.leaf("old"), ca.leaf("new"));
    let files = Files::new(&ca, &old);
    let interval = Duration::from_millis(100);
    let tls = Tls::new(&TlsConfig { reload_interval: interval, ..files.config() }).unwrap();
    let registry = Registry::with_defaults();
    let spec =
        SupervisorSpec::from_config("test", Strategy::OneForOne, &Config::defaults().supervisor)
            .child(tls.child_spec());
    let root = Supervisor::start_root(&registry, spec).await.unwrap();
    let filter = ResourceFilter { kind: Some(ResourceKind::Service), ..Default::default() };
    let (services, _) = registry.list(&filter, None, 100);
    assert!(services.iter().any(|r| &*r.name == "tls-reload"), "{services:?}");

    swap(&files.path("server.pem"), &new.combined());
    let t0 = Instant::now();
    while tls.resolver().current().cert[0] != new.der {
        assert!(t0.elapsed() < Duration::from_secs(5), "not reloaded within 5 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(tls.reloads_ok(), 1);
    root.handle.stop(steward_core::ExitReason::Shutdown).await.unwrap();
}
