//! PKIX for MTA-STS (RFC 8461 §3.3 policy hosts, §4.2 MX hosts): the trust
//! anchors (bundled Mozilla roots from `webpki-roots`, or `mta_sts.ca_file`
//! instead), the rustls WebPKI verifier over them with the ring provider,
//! and the classification of a refused certificate into the RFC 8460 §4.3
//! result types.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::{CertificateError, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::dane::provider::ring_provider;

/// Why a trust-anchor file or the verifier could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RootsError {
    #[error("no PEM certificate in it")]
    Empty,
    #[error("bad PEM: {0}")]
    Pem(String),
    #[error("certificate {index} is not a usable trust anchor: {detail}")]
    Anchor { index: usize, detail: String },
    #[error("cannot read {path}: {detail}")]
    Read { path: String, detail: String },
    #[error("verifier: {0}")]
    Verifier(String),
}

/// The certificates of a PEM bundle (at least one).
pub fn parse_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, RootsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| RootsError::Pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(RootsError::Empty);
    }
    Ok(certs)
}

/// The trust anchors: `ca_file`'s certificates, or the bundled Mozilla roots.
pub fn load_roots(ca_file: Option<&Path>) -> Result<Arc<RootCertStore>, RootsError> {
    let Some(path) = ca_file else {
        return Ok(Arc::new(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        }));
    };
    let pem = std::fs::read(path).map_err(|e| RootsError::Read {
        path: path.display().to_string(),
        detail: e.to_string(),
    })?;
    let mut store = RootCertStore::empty();
    for (index, cert) in parse_pem(&pem)?.into_iter().enumerate() {
        store.add(cert).map_err(|e| RootsError::Anchor {
            index,
            detail: e.to_string(),
        })?;
    }
    Ok(Arc::new(store))
}

/// The WebPKI verifier (chain to `roots`, validity period, name = the SNI)
/// with the process's ring provider.
pub fn verifier(roots: Arc<RootCertStore>) -> Result<Arc<WebPkiServerVerifier>, RootsError> {
    WebPkiServerVerifier::builder_with_provider(roots, ring_provider().clone())
        .build()
        .map_err(|e| RootsError::Verifier(e.to_string()))
}

/// Why a certificate is not PKIX-valid for a name, in RFC 8460 §4.3 terms.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CertFailure {
    /// No SAN matches the name.
    HostMismatch,
    /// Outside its validity period.
    Expired,
    /// No chain to a trust anchor (self-signed, unknown CA).
    NotTrusted,
    /// Anything else (bad encoding, bad signature, revoked…).
    Other(String),
}

impl CertFailure {
    /// The RFC 8460 §4.3.2 result type.
    pub fn result_type(&self) -> &'static str {
        match self {
            CertFailure::HostMismatch => "certificate-host-mismatch",
            CertFailure::Expired => "certificate-expired",
            CertFailure::NotTrusted => "certificate-not-trusted",
            CertFailure::Other(_) => "validation-failure",
        }
    }

    /// From a rustls certificate error.
    pub fn from_rustls(e: &rustls::Error) -> CertFailure {
        match e {
            rustls::Error::InvalidCertificate(c) => match c {
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => CertFailure::HostMismatch,
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. } => CertFailure::Expired,
                CertificateError::UnknownIssuer => CertFailure::NotTrusted,
                other => CertFailure::Other(format!("{other:?}")),
            },
            other => CertFailure::Other(other.to_string()),
        }
    }
}

impl std::fmt::Display for CertFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CertFailure::Other(d) => write!(f, "{}: {d}", self.result_type()),
            _ => f.write_str(self.result_type()),
        }
    }
}

/// Checks a chain (leaf first) as the handshake's verifier would: for
/// `host`, at `now`. Used after a handshake that did not check it
/// (`testing` mode; a resumed session under `enforce`).
pub fn check_chain(
    verifier: &WebPkiServerVerifier,
    host: &str,
    chain: &[CertificateDer<'_>],
    now: UnixTime,
) -> Result<(), CertFailure> {
    let (leaf, rest) = chain
        .split_first()
        .ok_or_else(|| CertFailure::Other("no certificate".into()))?;
    let name = ServerName::try_from(host.trim_end_matches('.').to_string())
        .map_err(|_| CertFailure::Other(format!("{host:?} is not a server name")))?;
    verifier
        .verify_server_cert(leaf, rest, &name, &[], now)
        .map(|_| ())
        .map_err(|e| CertFailure::from_rustls(&e))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testing::certs;

    #[test]
    fn chains_are_checked_for_trust_name_and_time() {
        let ca = certs::ca("STS test CA", None, false);
        let mut store = RootCertStore::empty();
        store.add(ca.cert.clone()).unwrap();
        let v = verifier(Arc::new(store)).unwrap();
        let now = UnixTime::now();
        let good = [certs::leaf(&["mx.example.com"], Some(&ca), false).cert];
        assert_eq!(check_chain(&v, "mx.example.com", &good, now), Ok(()));
        assert_eq!(check_chain(&v, "MX.example.com.", &good, now), Ok(()));
        assert_eq!(
            check_chain(&v, "other.example.com", &good, now),
            Err(CertFailure::HostMismatch)
        );
        let expired = [certs::leaf(&["mx.example.com"], Some(&ca), true).cert];
        assert_eq!(
            check_chain(&v, "mx.example.com", &expired, now),
            Err(CertFailure::Expired)
        );
        let stranger = [certs::self_signed(&["mx.example.com"]).cert];
        assert_eq!(
            check_chain(&v, "mx.example.com", &stranger, now),
            Err(CertFailure::NotTrusted)
        );
        assert!(matches!(
            check_chain(&v, "mx.example.com", &[], now),
            Err(CertFailure::Other(_))
        ));
        assert_eq!(
            CertFailure::NotTrusted.result_type(),
            "certificate-not-trusted"
        );
        assert_eq!(CertFailure::Expired.result_type(), "certificate-expired");
        assert_eq!(
            CertFailure::HostMismatch.result_type(),
            "certificate-host-mismatch"
        );
    }

    #[test]
    fn a_ca_file_replaces_the_bundled_roots() {
        assert!(load_roots(None).unwrap().len() > 100);
        let ca = certs::ca("file CA", None, false);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, ca.cert_pem()).unwrap();
        assert_eq!(load_roots(Some(&path)).unwrap().len(), 1);
        std::fs::write(&path, "not pem").unwrap();
        assert_eq!(parse_pem(b"not pem"), Err(RootsError::Empty));
        assert!(load_roots(Some(&path)).is_err());
        assert!(load_roots(Some(&dir.path().join("missing"))).is_err());
    }
}
