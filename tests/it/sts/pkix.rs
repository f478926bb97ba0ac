//! PKIX for MTA-STS (`danerelay::sts::pkix`): chains to the test CA,
//! names, validity; `mta_sts.ca_file` replacing the bundled roots.

use std::sync::Arc;

use danerelay::sts::pkix::{check_chain, load_roots, parse_pem, verifier, CertFailure, RootsError};
use danerelay::testing::certs;
use rustls::RootCertStore;
use rustls_pki_types::UnixTime;

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
