//! Test harness for the submission server: a scenario (Default = happy path),
//! an in-process server on 127.0.0.1:0 with a CA-issued certificate, a store
//! that records what was committed, and a small raw SMTP client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use danerelay::config::*;
use danerelay::smtp::server::{run_with_store, MessageSink, MessageStore, StoreError, Submitted};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub const USER: &str = "alice@example.com";
pub const PASSWORD: &str = "correct horse battery";

pub struct Scenario {
    pub trusted: Vec<ipnet::IpNet>,
    pub policy: SenderPolicy,
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub max_connections: usize,
    pub max_auth_failures: u32,
    pub command_timeout: Duration,
    pub fail_storage: bool,
    /// `[tls]` absent: the development self-signed certificate.
    pub self_signed: bool,
    /// Write a users file (and so offer AUTH).
    pub users_file: bool,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            trusted: vec![],
            policy: SenderPolicy::OwnAddress,
            max_message_size: 64 * 1024,
            max_recipients: 3,
            max_connections: 50,
            max_auth_failures: 3,
            command_timeout: Duration::from_secs(10),
            fail_storage: false,
            self_signed: false,
            users_file: true,
        }
    }
}

/// One message as the queue holds it, read back through the queue API.
#[derive(Debug, Clone)]
pub struct Stored {
    pub id: String,
    pub info: danerelay_queue::MessageInfo,
    pub body: Vec<u8>,
}

/// A store whose commits always fail (storage error ⇒ 451).
struct FailingStore;

struct FailingSink;

impl std::io::Write for FailingSink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl MessageSink for FailingSink {
    fn commit(self: Box<Self>, _: Submitted) -> Result<String, StoreError> {
        Err(StoreError::new("disk on fire"))
    }
}

impl MessageStore for FailingStore {
    fn begin(&self, _id: Option<&str>) -> Result<Box<dyn MessageSink>, StoreError> {
        Ok(Box::new(FailingSink))
    }
}

pub struct Server {
    pub starttls: SocketAddr,
    pub implicit: SocketAddr,
    pub plain: SocketAddr,
    pub queue: danerelay_queue::Queue,
    pub ca_pem: String,
    pub _dir: tempfile::TempDir,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Server {
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// Everything in the queue, with bodies.
    pub fn messages(&self) -> Vec<Stored> {
        use std::io::Read;
        let list = self
            .queue
            .list(&danerelay_queue::ListFilter::default())
            .unwrap();
        list.into_iter()
            .map(|info| {
                let mut body = Vec::new();
                self.queue
                    .body(info.id)
                    .unwrap()
                    .read_to_end(&mut body)
                    .unwrap();
                Stored {
                    id: info.id.to_string(),
                    info,
                    body,
                }
            })
            .collect()
    }
}

/// A CA and a `localhost` leaf it issued, as PEM (ca, leaf chain, key).
pub fn make_ca_and_leaf() -> (String, String, String) {
    use danerelay::testing::certs;
    let ca = certs::ca("Submission Test CA", None, false);
    let leaf = certs::leaf(&["localhost"], Some(&ca), false);
    (ca.cert_pem(), leaf.cert_pem(), leaf.key_pem())
}

pub fn config(s: &Scenario, dir: &std::path::Path) -> Config {
    let (ca, leaf, key) = make_ca_and_leaf();
    std::fs::write(dir.join("ca.pem"), ca).unwrap();
    std::fs::write(dir.join("tls.crt"), leaf).unwrap();
    std::fs::write(dir.join("tls.key"), key).unwrap();
    let users = dir.join("users.toml");
    danerelay::auth::user_add(&users, USER, PASSWORD).unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    Config {
        hostname: "relay.test".into(),
        shutdown_grace: Duration::from_secs(5),
        listeners: vec![
            ListenerConfig {
                address: any,
                tls: ListenerTls::StartTls,
            },
            ListenerConfig {
                address: any,
                tls: ListenerTls::Implicit,
            },
            ListenerConfig {
                address: any,
                tls: ListenerTls::None,
            },
        ],
        tls: if s.self_signed {
            TlsSource::SelfSigned
        } else {
            TlsSource::Files {
                certificate: dir.join("tls.crt"),
                private_key: dir.join("tls.key"),
            }
        },
        auth: AuthConfig {
            users_file: s.users_file.then_some(users),
            trusted_networks: s.trusted.clone(),
            sender_policy: s.policy,
        },
        limits: Limits {
            max_message_size: s.max_message_size,
            max_recipients: s.max_recipients,
            max_connections: s.max_connections,
            max_auth_failures: s.max_auth_failures,
            command_timeout: s.command_timeout,
            ..Limits::default()
        },
        queue: QueueConfig {
            path: dir.join("queue"),
            retry: vec![Duration::from_secs(60)],
            max_age: Duration::from_secs(3600),
            delay_warning: None,
            min_free_space: 0,
            cache_size: 16 << 20,
        },
        dns: DnsConfig {
            nameservers: vec![],
            dnssec: DnssecMode::Off,
            trust_anchor: None,
            dnssec_probe: None,
        },
        delivery: DeliveryConfig {
            concurrency: 1,
            per_destination: 1,
            tls: TlsLevel::May,
            dane_insecure_mx: Default::default(),
            helo_name: "relay.test".into(),
            connect_timeout: Duration::from_secs(5),
            max_hosts: 5,
            paused: false,
            routes: vec![],
        },
        http: HttpConfig {
            submission_address: None,
            address: any,
            admin_token: None,
        },
        dkim: Vec::new(),
        mta_sts: danerelay::config::MtaStsConfig {
            enabled: false,
            ca_file: None,
            fetch_timeout: std::time::Duration::from_secs(60),
        },
        tls_rpt: danerelay::config::tls_rpt::TlsRptConfig::defaults("relay.test"),
    }
}

/// Certificate files are polled every 100 ms so rotation tests are quick.
fn opts_fast() -> danerelay::smtp::server::ServerOptions {
    danerelay::smtp::server::ServerOptions {
        cert_poll: Duration::from_millis(100),
        ..Default::default()
    }
}

fn metrics() -> danerelay::metrics::Metrics {
    danerelay::metrics::Metrics::new()
}

pub async fn start(s: Scenario) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&s, dir.path());
    let opts = danerelay_queue::QueueOptions {
        retry: cfg.queue.retry.clone(),
        max_age: cfg.queue.max_age,
        lease: Duration::from_secs(60),
    };
    let queue = danerelay_queue::Queue::open(&cfg.queue.path, opts).unwrap();
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let cfg = Arc::new(cfg);
    let (sd, tr) = (shutdown.clone(), tracker.clone());
    let addrs = if s.fail_storage {
        run_with_store(cfg, Arc::new(FailingStore), opts_fast(), metrics(), sd, tr).await
    } else {
        run_with_store(cfg, Arc::new(queue.clone()), opts_fast(), metrics(), sd, tr).await
    }
    .unwrap();
    let ca_pem = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
    Server {
        starttls: addrs[0],
        implicit: addrs[1],
        plain: addrs[2],
        queue,
        ca_pem,
        _dir: dir,
        shutdown,
        tracker,
    }
}

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A raw SMTP client that shows exactly what the server sent.
pub struct Client {
    stream: Box<dyn Io>,
    buf: Vec<u8>,
    /// DER of the server's leaf certificate, once TLS is up.
    pub peer_cert: Option<Vec<u8>>,
}

fn tls_connector(ca_pem: &str) -> tokio_rustls::TlsConnector {
    tls_connector_versions(ca_pem, rustls::DEFAULT_VERSIONS)
}

fn tls_connector_versions(
    ca_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

fn leaf_der(conn: &rustls::ClientConnection) -> Option<Vec<u8>> {
    conn.peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
}

impl Client {
    /// Connects and returns the client plus the greeting.
    pub async fn connect(addr: SocketAddr) -> (Client, (u16, String)) {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut c = Client {
            stream: Box::new(tcp),
            buf: Vec::new(),
            peer_cert: None,
        };
        let greeting = c.reply().await;
        (c, greeting)
    }

    /// Implicit TLS (RFC 8314).
    pub async fn connect_tls(addr: SocketAddr, ca_pem: &str) -> (Client, (u16, String)) {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let tls = tls_connector(ca_pem)
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let peer_cert = leaf_der(tls.get_ref().1);
        let mut c = Client {
            stream: Box::new(tls),
            buf: Vec::new(),
            peer_cert,
        };
        let greeting = c.reply().await;
        (c, greeting)
    }

    /// Implicit TLS limited to TLS 1.2.
    pub async fn connect_tls12(addr: SocketAddr, ca_pem: &str) -> (Client, (u16, String)) {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let tls = tls_connector_versions(ca_pem, &[&rustls::version::TLS12])
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let peer_cert = leaf_der(tls.get_ref().1);
        let mut c = Client {
            stream: Box::new(tls),
            buf: Vec::new(),
            peer_cert,
        };
        let greeting = c.reply().await;
        (c, greeting)
    }

    /// Handshake after a 220 to STARTTLS; any unread plaintext is dropped first.
    pub async fn upgrade(self, ca_pem: &str) -> Client {
        let tls = tls_connector(ca_pem)
            .connect(ServerName::try_from("localhost").unwrap(), self.stream)
            .await
            .unwrap();
        let peer_cert = leaf_der(tls.get_ref().1);
        Client {
            stream: Box::new(tls),
            buf: Vec::new(),
            peer_cert,
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    /// Reads one (possibly multi-line) reply: (code, all lines' text joined by \n).
    /// Code 0 = the connection closed.
    pub async fn reply(&mut self) -> (u16, String) {
        let mut text = Vec::new();
        loop {
            let line = loop {
                if let Some(p) = self.buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = self.buf.drain(..=p).collect();
                    break String::from_utf8_lossy(&line).trim_end().to_string();
                }
                let mut chunk = [0u8; 4096];
                let n = tokio::time::timeout(Duration::from_secs(20), self.stream.read(&mut chunk))
                    .await
                    .expect("server reply timed out")
                    .unwrap_or(0);
                if n == 0 {
                    return (0, text.join("\n"));
                }
                self.buf.extend_from_slice(&chunk[..n]);
            };
            let code: u16 = line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .unwrap_or_else(|| panic!("bad reply line {line:?}"));
            text.push(line.get(4..).unwrap_or("").to_string());
            if line.as_bytes().get(3) != Some(&b'-') {
                return (code, text.join("\n"));
            }
        }
    }

    pub async fn cmd(&mut self, line: &str) -> (u16, String) {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    /// EHLO, STARTTLS, handshake, EHLO again.
    pub async fn starttls(mut self, ca_pem: &str) -> Client {
        assert_eq!(self.cmd("EHLO client.test").await.0, 250);
        assert_eq!(self.cmd("STARTTLS").await.0, 220);
        let mut c = self.upgrade(ca_pem).await;
        assert_eq!(c.cmd("EHLO client.test").await.0, 250);
        c
    }

    pub async fn login(&mut self, user: &str, password: &str) -> (u16, String) {
        use base64::Engine;
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        self.cmd(&format!("AUTH PLAIN {token}")).await
    }
}

/// Connected over STARTTLS and logged in as [`USER`].
pub async fn logged_in(srv: &Server) -> Client {
    let (c, _) = Client::connect(srv.starttls).await;
    let mut c = c.starttls(&srv.ca_pem).await;
    assert_eq!(c.login(USER, PASSWORD).await.0, 235);
    c
}
