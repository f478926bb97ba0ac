//! `session::open` against scripted peers: the TLS rules of RFC 7672 §2.2
//! and the opportunistic plaintext retry on a new connection.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use super::*;
use crate::dane::{DaneTarget, MandatoryTls, TlsaRecord};

/// What the peer saw, per connection: the commands it got.
type Log = Arc<Mutex<Vec<Vec<String>>>>;

/// A peer that offers STARTTLS (or not) and, after `220`, sends garbage
/// instead of a TLS handshake.
async fn peer(offer_starttls: bool) -> (u16, Log) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let log: Log = Arc::default();
    let l = log.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let l = l.clone();
            tokio::spawn(async move {
                let n = {
                    let mut g = l.lock().unwrap();
                    g.push(Vec::new());
                    g.len() - 1
                };
                let (r, mut w) = tcp.into_split();
                let mut r = BufReader::new(r);
                w.write_all(b"220 peer.test ESMTP\r\n").await.unwrap();
                let mut line = String::new();
                while r.read_line(&mut line).await.unwrap_or(0) > 0 {
                    let cmd = line.trim().to_ascii_uppercase();
                    l.lock().unwrap()[n].push(cmd.clone());
                    let reply: &[u8] = if cmd.starts_with("EHLO") && offer_starttls {
                        b"250-peer.test\r\n250 STARTTLS\r\n"
                    } else if cmd.starts_with("EHLO") {
                        b"250 peer.test\r\n"
                    } else if cmd == "STARTTLS" {
                        w.write_all(b"220 go ahead\r\n").await.unwrap();
                        // After the client's ClientHello, not with the 220
                        // (that would be STARTTLS command injection).
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        let _ = w.write_all(b"this is not TLS\r\n\r\n").await;
                        break;
                    } else if cmd == "QUIT" {
                        let _ = w.write_all(b"221 bye\r\n").await;
                        break;
                    } else {
                        b"502 no\r\n"
                    };
                    if w.write_all(reply).await.is_err() {
                        break;
                    }
                    line.clear();
                }
            });
        }
    });
    (port, log)
}

fn options() -> SessionOptions {
    SessionOptions {
        helo_name: "relay.test".into(),
        connect_timeout: Duration::from_secs(5),
        timeouts: Timeouts::default(),
        tls_configs: Default::default(),
    }
}

fn at(port: u16) -> Peer<'static> {
    Peer {
        host: "mx.test",
        address: "127.0.0.1".parse().unwrap(),
        port,
    }
}

fn dane() -> Decision {
    let rec = TlsaRecord::parse(&format!("3 1 1 {}", "ab".repeat(32))).unwrap();
    Decision::Authenticate(DaneTarget::new("mx.test", "mx.test", vec![rec]))
}

#[tokio::test]
async fn opportunistic_handshake_failure_retries_in_plaintext_on_a_new_connection() {
    let (port, log) = peer(true).await;
    let s = open(&at(port), &Decision::Opportunistic, &options())
        .await
        .unwrap();
    assert!(s.fell_back);
    assert_eq!(s.tls, TlsOutcome::Plaintext);
    quit_quietly(s.client).await;
    let log = log.lock().unwrap().clone();
    assert_eq!(log.len(), 2, "a second connection: {log:?}");
    assert!(log[0].contains(&"STARTTLS".to_string()));
    assert!(!log[1].contains(&"STARTTLS".to_string()), "{log:?}");
}

#[tokio::test]
async fn mandatory_tls_never_falls_back() {
    for decision in [
        Decision::TlsRequired(MandatoryTls::EncryptLevel),
        Decision::TlsRequired(MandatoryTls::AllTlsaUnusable),
        dane(),
    ] {
        let (port, log) = peer(true).await;
        let err = open(&at(port), &decision, &options()).await.unwrap_err();
        let dane = matches!(decision, Decision::Authenticate(_));
        match err {
            AttemptError::Dane { .. } if dane => {}
            AttemptError::Smtp(ref e) if !dane && matches!(**e, ClientError::Tls { .. }) => {}
            other => panic!("{decision:?}: {other:?}"),
        }
        assert_eq!(log.lock().unwrap().len(), 1, "{decision:?}: no retry");
    }
}

#[tokio::test]
async fn no_starttls_offered() {
    // Opportunistic: plaintext on the same connection.
    let (port, log) = peer(false).await;
    let s = open(&at(port), &Decision::Opportunistic, &options())
        .await
        .unwrap();
    assert_eq!(
        (s.tls.clone(), s.fell_back, s.starttls_offered),
        (TlsOutcome::Plaintext, false, false)
    );
    quit_quietly(s.client).await;
    assert_eq!(log.lock().unwrap().len(), 1);
    // DANE or mandatory TLS: that host is not used (RFC 7672 §2.2).
    for decision in [dane(), Decision::TlsRequired(MandatoryTls::AllTlsaUnusable)] {
        let (port, log) = peer(false).await;
        let err = open(&at(port), &decision, &options()).await.unwrap_err();
        assert!(matches!(err, AttemptError::TlsRequired { .. }), "{err:?}");
        let cmds = log.lock().unwrap()[0].clone();
        assert!(cmds.iter().all(|c| !c.starts_with("MAIL")), "{cmds:?}");
    }
}

#[tokio::test]
async fn plaintext_level_never_starts_tls_and_defer_never_connects() {
    let (port, log) = peer(true).await;
    let s = open(&at(port), &Decision::Plaintext, &options())
        .await
        .unwrap();
    assert_eq!(s.tls, TlsOutcome::Plaintext);
    assert!(s.starttls_offered);
    quit_quietly(s.client).await;
    assert!(!log.lock().unwrap()[0].contains(&"STARTTLS".to_string()));
    let (port, log) = peer(true).await;
    let defer = Decision::Defer(crate::dane::DeferReason::NoSecureTlsa);
    assert!(open(&at(port), &defer, &options()).await.is_err());
    assert!(
        log.lock().unwrap().is_empty(),
        "no connection for a deferred host"
    );
}

#[tokio::test]
async fn connect_refused_is_a_connect_error() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let err = open(&at(port), &Decision::Opportunistic, &options())
        .await
        .unwrap_err();
    assert!(matches!(err, AttemptError::Connect { .. }), "{err:?}");
    assert!(crate::delivery::outcome::try_next_host(&err));
}

/// The fake MX with a STARTTLS that really upgrades, with one
/// `ServerConfig` for all its connections (so it can resume sessions; TLS
/// 1.3 tickets come right after the handshake and the client reads them
/// with the EHLO reply). Returns the port and the certificate it presents.
async fn tls_peer(
    version: &'static rustls::SupportedProtocolVersion,
) -> (u16, rustls::pki_types::CertificateDer<'static>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["mx.test".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap()
        .der()
        .clone();
    let presented = Arc::new(Presented(Mutex::new(certified(vec![cert.clone()], &key))));
    let (port, _) = tls_peer_presenting(version, presented).await;
    (port, cert)
}

/// What a [`tls_peer_presenting`] serves; replaceable while it runs (a
/// certificate renewal), sessions stay resumable across the change.
#[derive(Debug)]
struct Presented(Mutex<Arc<rustls::sign::CertifiedKey>>);

impl rustls::server::ResolvesServerCert for Presented {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.lock().unwrap().clone())
    }
}

fn certified(
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: &rcgen::KeyPair,
) -> Arc<rustls::sign::CertifiedKey> {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signer = crate::dane::ring_provider()
        .key_provider
        .load_private_key(der)
        .unwrap();
    Arc::new(rustls::sign::CertifiedKey::new(chain, signer))
}

/// [`tls_peer`] presenting `presented`; also returns the number of TCP
/// connections it accepted so far.
async fn tls_peer_presenting(
    version: &'static rustls::SupportedProtocolVersion,
    presented: Arc<Presented>,
) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    let config = rustls::ServerConfig::builder_with_provider(crate::dane::ring_provider().clone())
        .with_protocol_versions(&[version])
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(presented);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let mut r = BufReader::new(tcp);
                r.get_mut().write_all(b"220 mx.test ESMTP\r\n").await?;
                let mut line = String::new();
                while r.read_line(&mut line).await? > 0 {
                    let cmd = line.trim().to_ascii_uppercase();
                    line.clear();
                    if cmd.starts_with("EHLO") {
                        r.get_mut()
                            .write_all(b"250-mx.test\r\n250 STARTTLS\r\n")
                            .await?;
                    } else if cmd == "STARTTLS" {
                        r.get_mut().write_all(b"220 go ahead\r\n").await?;
                        break;
                    }
                }
                let mut tls = BufReader::new(acceptor.accept(r.into_inner()).await?);
                while tls.read_line(&mut line).await? > 0 {
                    let cmd = line.trim().to_ascii_uppercase();
                    line.clear();
                    if cmd.starts_with("EHLO") {
                        tls.get_mut().write_all(b"250 mx.test\r\n").await?;
                    } else if cmd == "QUIT" {
                        tls.get_mut().write_all(b"221 bye\r\n").await?;
                        tls.get_mut().shutdown().await?;
                        break;
                    }
                }
                Ok::<_, std::io::Error>(())
            });
        }
    });
    (port, accepted)
}

/// The DANE-EE SPKI SHA2-256 record of `cert`.
fn tlsa_3_1_1(cert: &[u8]) -> TlsaRecord {
    use sha2::Digest;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).unwrap();
    TlsaRecord {
        usage: 3,
        selector: 1,
        matching: 1,
        data: sha2::Sha256::digest(parsed.tbs_certificate.subject_pki.raw).to_vec(),
    }
}

#[tokio::test]
async fn repeat_peer_resumes_and_the_log_still_says_dane_verified() {
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let (port, cert) = tls_peer(version).await;
        let rec = tlsa_3_1_1(&cert);
        let decision = Decision::Authenticate(DaneTarget::new("mx.test", "mx.test", vec![rec]));
        let opts = options();
        let mut lines = Vec::new();
        for _ in 0..3 {
            let s = open(&at(port), &decision, &opts).await.unwrap();
            lines.push(s.tls.to_string());
            quit_quietly(s.client).await;
        }
        let v = if std::ptr::eq(version, &rustls::version::TLS13) {
            "TLSv1.3"
        } else {
            "TLSv1.2"
        };
        assert!(lines[0].starts_with(&format!("dane-verified (3 1 1, depth 0) {v} ")));
        assert!(!lines[0].ends_with(" resumed"), "{lines:?}");
        for l in &lines[1..] {
            assert!(l.starts_with(&format!("dane-verified (3 1 1, depth 0) {v} ")));
            assert!(l.ends_with(" resumed"), "{lines:?}");
        }
        // Another policy for the same peer (opportunistic) does not resume.
        let s = open(&at(port), &Decision::Opportunistic, &opts)
            .await
            .unwrap();
        assert!(s.tls.to_string().starts_with("tls-unauthenticated "));
        assert!(!s.tls.info().unwrap().resumed, "{}", s.tls);
        quit_quietly(s.client).await;
        // The cache holds one config per policy, shared through the options.
        assert_eq!(opts.tls_configs.len(), 2);
    }
}

/// A DANE-TA(2) chain for `mx.test` under one CA, each leaf with its own
/// lifetime from now.
struct RenewingPki {
    root_params: rcgen::CertificateParams,
    root_key: rcgen::KeyPair,
    root: rustls::pki_types::CertificateDer<'static>,
}

impl RenewingPki {
    fn new() -> Self {
        let root_key = rcgen::KeyPair::generate().unwrap();
        let mut root_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        root_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "renewal test CA");
        root_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let root = root_params.self_signed(&root_key).unwrap().der().clone();
        Self {
            root_params,
            root_key,
            root,
        }
    }

    /// The `2 0 1` record of the CA.
    fn record(&self) -> TlsaRecord {
        use sha2::Digest;
        TlsaRecord {
            usage: 2,
            selector: 0,
            matching: 1,
            data: sha2::Sha256::digest(&self.root).to_vec(),
        }
    }

    /// A leaf valid from an hour ago until `lifetime` from now, with the CA.
    fn leaf(&self, lifetime: Duration) -> Arc<rustls::sign::CertifiedKey> {
        let epoch = rcgen::date_time_ymd(1970, 1, 1);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["mx.test".to_string()]).unwrap();
        params.not_before = epoch + (now - Duration::from_secs(3600));
        params.not_after = epoch + (now + lifetime);
        let issuer = rcgen::Issuer::from_params(&self.root_params, &self.root_key);
        let cert = params.signed_by(&key, &issuer).unwrap().der().clone();
        certified(vec![cert, self.root.clone()], &key)
    }
}

#[tokio::test]
async fn a_resumed_session_that_no_longer_verifies_is_evicted_and_retried_in_full() {
    // The server renews its certificate; the session the client holds was
    // verified with the old one, which has expired since. Resuming it
    // re-derives a failed verdict: that must cost one full handshake, not
    // a deferral for the session cache's lifetime.
    let pki = RenewingPki::new();
    let decision =
        Decision::Authenticate(DaneTarget::new("mx.test", "mx.test", vec![pki.record()]));
    let mut peers = Vec::new();
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let presented = Arc::new(Presented(Mutex::new(pki.leaf(Duration::from_secs(5)))));
        let (port, accepted) = tls_peer_presenting(version, presented.clone()).await;
        let opts = options();
        let s = open(&at(port), &decision, &opts).await.unwrap();
        assert!(
            matches!(s.tls, TlsOutcome::DaneVerified(..)),
            "{version:?}: {}",
            s.tls
        );
        assert!(!s.tls.info().unwrap().resumed);
        quit_quietly(s.client).await;
        *presented.0.lock().unwrap() = pki.leaf(Duration::from_secs(86_400));
        peers.push((version, port, accepted, opts));
    }
    // Past the first leaf's not_after (whole seconds in the certificate).
    tokio::time::sleep(Duration::from_secs(6)).await;
    for (version, port, accepted, opts) in peers {
        let s = open(&at(port), &decision, &opts).await.unwrap();
        assert!(
            matches!(s.tls, TlsOutcome::DaneVerified(..)),
            "{version:?}: {}",
            s.tls
        );
        assert!(!s.tls.info().unwrap().resumed, "{version:?}: {}", s.tls);
        quit_quietly(s.client).await;
        let n = accepted.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(n, 3, "{version:?}: first, resumed and refused, then full");
        // The renewed certificate's session resumes as usual.
        let s = open(&at(port), &decision, &opts).await.unwrap();
        assert!(
            s.tls.info().unwrap().resumed && s.tls.dane_match().is_some(),
            "{version:?}: {}",
            s.tls
        );
        quit_quietly(s.client).await;
    }
}
