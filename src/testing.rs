//! Test doubles and fixtures, one of each kind, shared by the unit tests,
//! `tests/it` and the benches. Compiled only for tests and under the
//! `test-util` feature (which the crate's dev-dependency on itself enables),
//! so a release build contains none of it.
//!
//! - [`FakeDns`]: DNS answers from a table (`dns::fake`).
//! - [`FakeMx`]: a receiving MTA on 127.0.0.1 (`delivery::fake_mx`).
//! - [`PausedClock`]: the delivery clock, driven by tokio's paused time.
//! - [`enqueue`], [`enqueue_with`]: a small message into a queue.
//! - [`certs`]: rcgen certificates made at test time.

use std::io::Write;
use std::time::SystemTime;

use danerelay_queue::{Envelope, Notify, Queue, QueueId, RecipientSpec};

pub use crate::delivery::clock::PausedClock;
pub use crate::delivery::fake_mx::FakeMx;
pub use crate::dns::FakeDns;

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

/// Certificates made with rcgen at test time, and the TLS configs that
/// present them.
pub mod certs {
    use std::sync::Arc;

    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    /// A certificate and its private key.
    pub struct Issued {
        pub cert: rcgen::Certificate,
        pub key: KeyPair,
    }

    impl Issued {
        pub fn der(&self) -> CertificateDer<'static> {
            self.cert.der().clone()
        }
        pub fn cert_pem(&self) -> String {
            self.cert.pem()
        }
        pub fn key_pem(&self) -> String {
            self.key.serialize_pem()
        }
        pub fn key_der(&self) -> PrivateKeyDer<'static> {
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
        }
        /// A rustls server config presenting this certificate, limited to
        /// `versions` (all safe defaults when empty).
        pub fn server_config(
            &self,
            versions: &[&'static rustls::SupportedProtocolVersion],
        ) -> Arc<rustls::ServerConfig> {
            let builder =
                rustls::ServerConfig::builder_with_provider(crate::dane::ring_provider().clone());
            let builder = if versions.is_empty() {
                builder.with_safe_default_protocol_versions()
            } else {
                builder.with_protocol_versions(versions)
            };
            let config = builder
                .expect("rustls: protocol versions")
                .with_no_client_auth()
                .with_single_cert(vec![self.der()], self.key_der())
                .expect("rustls: certificate and key");
            Arc::new(config)
        }
        /// A TLS acceptor presenting this certificate.
        pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
            tokio_rustls::TlsAcceptor::from(self.server_config(&[]))
        }
    }

    /// A self-signed certificate for `names` (DNS names in the SAN).
    pub fn self_signed(names: &[&str]) -> Issued {
        let key = KeyPair::generate().expect("rcgen: key");
        let cert = params(names).self_signed(&key).expect("rcgen: self-sign");
        Issued { cert, key }
    }

    /// A CA and a leaf for `names` that it issued: (ca, leaf).
    pub fn ca_and_leaf(names: &[&str]) -> (Issued, Issued) {
        let ca_key = KeyPair::generate().expect("rcgen: key");
        let mut ca_params = params(&[]);
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).expect("rcgen: self-sign");
        let key = KeyPair::generate().expect("rcgen: key");
        let leaf = {
            let issuer = Issuer::new(ca_params, &ca_key);
            params(names).signed_by(&key, &issuer).expect("rcgen: sign")
        };
        (
            Issued {
                cert: ca,
                key: ca_key,
            },
            Issued { cert: leaf, key },
        )
    }

    fn params(names: &[&str]) -> CertificateParams {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        CertificateParams::new(names).expect("rcgen: names")
    }
}
