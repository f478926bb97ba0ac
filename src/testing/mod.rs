//! Test doubles and fixtures, one of each kind, shared by the unit tests,
//! `tests/it` and the benches. Compiled only for tests and under the
//! `test-util` feature (which the crate's dev-dependency on itself enables),
//! so a release build contains none of it.
//!
//! - [`FakeDns`]: DNS answers from a table (`dns::fake`).
//! - [`mx`]: the fake MX, scripted, on a duplex or on 127.0.0.1 ([`FakeMx`]).
//! - [`PausedClock`]: the delivery clock, driven by tokio's paused time.
//! - [`enqueue`], [`enqueue_with`]: a small message into a queue.
//! - [`certs`]: rcgen certificates made at test time (and
//!   [`certs::tlsa_3_1_1`], the DANE-EE record of one).
//! - [`engine_options`]: delivery options for a fake MX on one port.

use std::io::Write;
use std::time::SystemTime;

use danerelay_queue::{Envelope, Notify, Queue, QueueId, RecipientSpec};

#[allow(clippy::unwrap_used)]
pub mod mx;

pub use crate::delivery::clock::PausedClock;
pub use crate::dns::FakeDns;
pub use mx::FakeMx;

/// Delivery engine options for tests: MX hosts on `port`, level `tls`,
/// short connect timeout, no routes, no MTA-STS.
pub fn engine_options(
    port: u16,
    tls: crate::config::TlsLevel,
) -> crate::delivery::attempt::EngineOptions {
    crate::delivery::attempt::EngineOptions {
        session: crate::delivery::session::SessionOptions {
            helo_name: "relay.test".into(),
            connect_timeout: std::time::Duration::from_secs(5),
            timeouts: crate::smtp::client::Timeouts::default(),
            tls_configs: Default::default(),
        },
        tls,
        dane_insecure_mx: Default::default(),
        routes: Vec::new(),
        mx_port: port,
        max_hosts: crate::delivery::attempt::MAX_HOSTS,
        sts: None,
    }
}

/// Enqueues a small message from `sender` to `rcpts`, received now.
pub fn enqueue(queue: &Queue, sender: &str, rcpts: &[&str]) -> QueueId {
    let env = Envelope::new(sender, SystemTime::now());
    enqueue_with(queue, env, rcpts, Notify::default())
}

/// Enqueues a small message with this envelope; every recipient gets `notify`.
pub fn enqueue_with(queue: &Queue, env: Envelope, rcpts: &[&str], notify: Notify) -> QueueId {
    let mut w = queue.begin().expect("queue: begin");
    write!(
        w,
        "From: <{}>\r\nTo: <{}>\r\nSubject: test\r\nMessage-ID: <{}@danerelay.test>\r\n\r\n\
         hello\r\n",
        env.sender,
        rcpts.join(">, <"),
        w.id()
    )
    .expect("queue: write the body");
    let specs = rcpts
        .iter()
        .map(|r| RecipientSpec {
            address: (*r).into(),
            orcpt: None,
            notify,
        })
        .collect();
    w.commit(env, specs).expect("queue: commit")
}

/// Certificates made with rcgen at test time — self-signed or issued by a
/// test CA, optionally expired — and the TLS configs that present them.
pub mod certs {
    use std::sync::Arc;

    use rcgen::{
        date_time_ymd, BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair,
        KeyUsagePurpose,
    };
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    /// One certificate with its key and the parameters that issue children.
    pub struct Node {
        pub cert: CertificateDer<'static>,
        pub key: KeyPair,
        params: CertificateParams,
        pem: String,
    }

    impl Node {
        fn issuer(&self) -> Issuer<'_, &KeyPair> {
            Issuer::from_params(&self.params, &self.key)
        }
        pub fn cert_pem(&self) -> String {
            self.pem.clone()
        }
        pub fn key_pem(&self) -> String {
            self.key.serialize_pem()
        }
        pub fn key_der(&self) -> PrivateKeyDer<'static> {
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
        }
        /// A rustls server config presenting this certificate alone, limited
        /// to `versions` (the safe defaults when empty).
        pub fn server_config(
            &self,
            versions: &[&'static rustls::SupportedProtocolVersion],
        ) -> rustls::ServerConfig {
            let builder =
                rustls::ServerConfig::builder_with_provider(crate::dane::ring_provider().clone());
            let builder = if versions.is_empty() {
                builder.with_safe_default_protocol_versions()
            } else {
                builder.with_protocol_versions(versions)
            };
            builder
                .expect("rustls: protocol versions")
                .with_no_client_auth()
                .with_single_cert(vec![self.cert.clone()], self.key_der())
                .expect("rustls: certificate and key")
        }
        /// A TLS acceptor presenting this certificate.
        pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
            tokio_rustls::TlsAcceptor::from(Arc::new(self.server_config(&[])))
        }
    }

    fn expire(params: &mut CertificateParams) {
        params.not_before = date_time_ymd(2019, 1, 1);
        params.not_after = date_time_ymd(2020, 1, 1);
    }

    fn sign(params: CertificateParams, parent: Option<&Node>) -> Node {
        let key = KeyPair::generate().expect("rcgen: key");
        let cert = match parent {
            Some(p) => params.signed_by(&key, &p.issuer()),
            None => params.self_signed(&key),
        }
        .expect("rcgen: sign");
        Node {
            pem: cert.pem(),
            cert: cert.der().clone(),
            key,
            params,
        }
    }

    /// A CA certificate named `cn`, self-signed when `parent` is `None`.
    pub fn ca(cn: &str, parent: Option<&Node>, expired: bool) -> Node {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("rcgen: params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        if expired {
            expire(&mut params);
        }
        sign(params, parent)
    }

    /// A server certificate for `names` (DNS SANs), self-signed when
    /// `parent` is `None`.
    pub fn leaf(names: &[&str], parent: Option<&Node>, expired: bool) -> Node {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("rcgen: names");
        params
            .distinguished_name
            .push(DnType::CommonName, "smtp server");
        if expired {
            expire(&mut params);
        }
        sign(params, parent)
    }

    /// A self-signed server certificate for `names`.
    pub fn self_signed(names: &[&str]) -> Node {
        leaf(names, None, false)
    }

    /// The DANE-EE SPKI SHA2-256 record (`3 1 1`) of `cert`.
    pub fn tlsa_3_1_1(cert: &[u8]) -> crate::dane::TlsaRecord {
        use sha2::Digest;
        let spki = match x509_parser::parse_x509_certificate(cert) {
            Ok((_, parsed)) => parsed.tbs_certificate.subject_pki.raw.to_vec(),
            Err(e) => panic!("tlsa_3_1_1: not a certificate: {e}"),
        };
        crate::dane::TlsaRecord {
            usage: 3,
            selector: 1,
            matching: 1,
            data: sha2::Sha256::digest(spki).to_vec(),
        }
    }

    /// A server certificate with no SANs, only the subject CN `cn`.
    pub fn cn_only_leaf(cn: &str, parent: &Node) -> Node {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("rcgen: params");
        params.distinguished_name.push(DnType::CommonName, cn);
        sign(params, Some(parent))
    }
}
