//! DANE (RFC 7672/7671): verdicts on rcgen-made chains, real TLS 1.2/1.3
//! handshakes through the rustls verifiers, and `danerelay dane verify`.
//! Certificates and keys are generated per test; nothing is checked in.

#![allow(clippy::unwrap_used)] // a test that unwraps fails loudly, which is the point

mod cli;
mod handshake;
mod openssl_peer;
mod properties;
mod resume;
mod v1_cert;
mod verdicts;

use base64::Engine;
use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256, Sha512};

use danerelay::dane::{rejection_verdict, TlsClientSetup, TlsaRecord, Verdict};
pub use danerelay::testing::certs::{ca, cn_only_leaf, leaf, Node};

/// The leaf's name; the TLSA base domain in most tests.
pub const MX: &str = "mx.example.net";

/// root → intermediate → leaf for [`MX`].
pub struct Pki {
    pub root: Node,
    pub inter: Node,
    pub leaf: Node,
}

impl Pki {
    pub fn new() -> Self {
        Self::with(false, &[MX])
    }

    pub fn with(expired_intermediate: bool, leaf_names: &[&str]) -> Self {
        let root = ca("DANE Test Root", None, false);
        let inter = ca("DANE Test Intermediate", Some(&root), expired_intermediate);
        let leaf = leaf(leaf_names, Some(&inter), false);
        Self { root, inter, leaf }
    }

    /// What a server sends: leaf, intermediate, root.
    pub fn full_chain(&self) -> Vec<CertificateDer<'static>> {
        vec![
            self.leaf.cert.clone(),
            self.inter.cert.clone(),
            self.root.cert.clone(),
        ]
    }

    /// What most servers send: leaf and intermediate, no root.
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.leaf.cert.clone(), self.inter.cert.clone()]
    }
}

/// The SubjectPublicKeyInfo DER of `cert`, parsed independently of the code
/// under test.
pub fn spki(cert: &CertificateDer<'_>) -> Vec<u8> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).unwrap();
    parsed.tbs_certificate.subject_pki.raw.to_vec()
}

/// The TLSA record `usage selector matching` that matches `cert`.
pub fn tlsa(usage: u8, selector: u8, matching: u8, cert: &CertificateDer<'_>) -> TlsaRecord {
    let selected = if selector == 0 {
        cert.to_vec()
    } else {
        spki(cert)
    };
    let data = match matching {
        0 => selected,
        1 => Sha256::digest(&selected).to_vec(),
        2 => Sha512::digest(&selected).to_vec(),
        _ => panic!("test helper only makes known matching types"),
    };
    TlsaRecord {
        usage,
        selector,
        matching,
        data,
    }
}

/// `chain` as a PEM file's text.
pub fn pem(chain: &[CertificateDer<'_>]) -> String {
    let mut out = String::new();
    for cert in chain {
        let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).unwrap());
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}

/// The DANE verdict the client ends up with after a handshake with `setup`:
/// re-derived from the connection's chain when it succeeded, the verifier's
/// refusal when it failed; `None` for non-DANE setups and other failures.
pub fn client_verdict(
    setup: &TlsClientSetup,
    result: Result<&rustls::ClientConnection, &std::io::Error>,
) -> Option<Verdict> {
    match result {
        Ok(conn) => setup.verdict(conn.peer_certificates().unwrap_or_default()),
        Err(e) => e
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
            .and_then(rejection_verdict),
    }
}
