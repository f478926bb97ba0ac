//! The DANE verdict on a certificate chain (RFC 7672 §3, RFC 7671 §5): pure,
//! shared by the rustls verifier and `danerelay dane verify`.

use std::fmt;

use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use webpki::{EndEntityCert, KeyUsage};
use x509_parser::asn1_rs::Sequence;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use super::policy::normalize_name;
use super::provider::ring_provider;
use super::tlsa::{usable_records, TlsaRecord, DANE_EE, DANE_TA, MATCH_FULL, SEL_CERT};

/// Which record authenticated the server, for logs and metrics:
/// `dane-verified (2 0 1, depth 1)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DaneMatch {
    pub usage: u8,
    pub selector: u8,
    pub matching: u8,
    /// 0 = the leaf; for DANE-TA the trust anchor's position in the
    /// validated path (one past the last certificate used from the chain
    /// when the anchor came from DNS only).
    pub depth: usize,
}

impl fmt::Display for DaneMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}, depth {}",
            self.usage, self.selector, self.matching, self.depth
        )
    }
}

/// The verdict on one chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// One usable record matched (RFC 7671 §5: any one suffices).
    Verified(DaneMatch),
    /// No usable record at all (RFC 7672 §3.1): nothing to authenticate with.
    NoUsableTlsa,
    /// Usable records exist and none authenticates the chain.
    Failed(Failure),
}

/// Why a chain failed; the first TA-specific problem beats a plain no-match,
/// because it says what the operator got wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("the server sent no certificate")]
    EmptyChain,
    #[error("no usable TLSA record matches the certificate chain")]
    NoMatch,
    /// RFC 7672 §3.2.1: the TA matched but the leaf does not chain to it.
    #[error("DANE-TA {record} matched but the chain does not validate to it: {error}")]
    TaChain { record: String, error: String },
    /// RFC 7672 §3.2.3: the chain validates but the leaf names no reference id.
    #[error("DANE-TA {record} validated but the certificate names {found:?}, none of {wanted:?}")]
    NameMismatch {
        record: String,
        found: Vec<String>,
        wanted: Vec<String>,
    },
}

/// Verifies `chain` (leaf first, as sent) against `records`.
///
/// Unusable records are dropped and digest agility applied first
/// ([`usable_records`]). DANE-EE(3) matches the leaf only, ignoring names and
/// dates (RFC 7672 §3.1.1). DANE-TA(2) matches a certificate the server sent
/// above the leaf, or supplies the anchor itself with Full(0) (§3.2.2); the
/// leaf must then chain to that anchor alone with valid signatures and dates
/// and carry `base_domain` or one of `reference_names` (§3.1.2, §3.2.3).
pub fn verify_chain(
    base_domain: &str,
    reference_names: &[String],
    chain: &[CertificateDer<'_>],
    records: &[TlsaRecord],
    now: UnixTime,
) -> Verdict {
    let records = usable_records(records);
    if records.is_empty() {
        return Verdict::NoUsableTlsa;
    }
    let Some(leaf) = chain.first() else {
        return Verdict::Failed(Failure::EmptyChain);
    };
    for r in records.iter().filter(|r| r.usage == DANE_EE) {
        if cert_matches(r, leaf) {
            return Verdict::Verified(DaneMatch {
                usage: r.usage,
                selector: r.selector,
                matching: r.matching,
                depth: 0,
            });
        }
    }
    let mut wanted = vec![normalize_name(base_domain)];
    for name in reference_names.iter().map(|n| normalize_name(n)) {
        if !wanted.contains(&name) {
            wanted.push(name);
        }
    }
    let mut first_failure = None;
    for r in records.iter().filter(|r| r.usage == DANE_TA) {
        match verify_ta(r, chain, &wanted, now) {
            Ok(Some(depth)) => {
                return Verdict::Verified(DaneMatch {
                    usage: r.usage,
                    selector: r.selector,
                    matching: r.matching,
                    depth,
                })
            }
            Ok(None) => {}
            Err(failure) => {
                first_failure.get_or_insert(failure);
            }
        }
    }
    Verdict::Failed(first_failure.unwrap_or(Failure::NoMatch))
}

/// One DANE-TA record: `Ok(Some(depth))` verified, `Ok(None)` the record
/// matches nothing, `Err` it matched but the chain or name is wrong.
fn verify_ta(
    r: &TlsaRecord,
    chain: &[CertificateDer<'_>],
    wanted: &[String],
    now: UnixTime,
) -> Result<Option<usize>, Failure> {
    let mut anchors: Vec<TrustAnchor<'_>> = chain
        .iter()
        .skip(1)
        .filter(|c| cert_matches(r, c))
        .filter_map(|c| webpki::anchor_from_trusted_cert(c).ok())
        .collect();
    if r.matching == MATCH_FULL {
        anchors.extend(anchors_from_record(r, chain));
    }
    if anchors.is_empty() {
        return Ok(None);
    }
    let leaf = &chain[0];
    let ta_error = |error: String| Failure::TaChain {
        record: r.params(),
        error,
    };
    let ee = EndEntityCert::try_from(leaf).map_err(|e| ta_error(format!("leaf: {e}")))?;
    let algs = ring_provider().signature_verification_algorithms.all;
    let mut last_error = None;
    for anchor in &anchors {
        // Only this one anchor: never the WebPKI roots (RFC 7672 §3.1.2).
        let result = ee.verify_for_usage(
            algs,
            std::slice::from_ref(anchor),
            &chain[1..],
            now,
            KeyUsage::server_auth(),
            None,
            None,
        );
        match result {
            Ok(path) => {
                let depth = path.intermediate_certificates().count() + 1;
                let found = leaf_names(leaf);
                if found
                    .iter()
                    .any(|p| wanted.iter().any(|w| name_matches(p, w)))
                {
                    return Ok(Some(depth));
                }
                return Err(Failure::NameMismatch {
                    record: r.params(),
                    found,
                    wanted: wanted.to_vec(),
                });
            }
            Err(e) => last_error = Some(e.to_string()),
        }
    }
    Err(ta_error(last_error.unwrap_or_default()))
}

/// RFC 7672 §3.2.2: a Full(0) DANE-TA record carries the anchor itself, so
/// the server need not send it. A bare key has no subject name: it is offered
/// under each issuer name in the chain and the signature check decides.
fn anchors_from_record(r: &TlsaRecord, chain: &[CertificateDer<'_>]) -> Vec<TrustAnchor<'static>> {
    if r.selector == SEL_CERT {
        let der = CertificateDer::from(r.data.as_slice());
        return webpki::anchor_from_trusted_cert(&der)
            .map(|a| vec![a.to_owned()])
            .unwrap_or_default();
    }
    let Some(spki) = sequence_contents(&r.data) else {
        return Vec::new();
    };
    let mut issuers: Vec<Vec<u8>> = Vec::new();
    for cert in chain {
        if let Ok((_, parsed)) = X509Certificate::from_der(cert) {
            if let Some(issuer) = sequence_contents(parsed.issuer().as_raw()) {
                if !issuers.contains(&issuer) {
                    issuers.push(issuer);
                }
            }
        }
    }
    issuers
        .into_iter()
        .map(|subject| TrustAnchor {
            subject: subject.into(),
            subject_public_key_info: spki.clone().into(),
            name_constraints: None,
        })
        .collect()
}

/// Whether record `r` matches certificate `cert` under its selector.
fn cert_matches(r: &TlsaRecord, cert: &CertificateDer<'_>) -> bool {
    if r.selector == SEL_CERT {
        return r.matches_selected(cert);
    }
    match X509Certificate::from_der(cert) {
        Ok((_, parsed)) => r.matches_selected(parsed.tbs_certificate.subject_pki.raw),
        Err(_) => false,
    }
}

/// The DNS names a certificate claims: its dNSName SANs, or its subject CNs
/// when it has none (RFC 7672 §3.2.3, as Postfix does).
pub fn leaf_names(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, parsed)) = X509Certificate::from_der(cert) else {
        return Vec::new();
    };
    let sans: Vec<String> = match parsed.subject_alternative_name() {
        Ok(Some(ext)) => ext
            .value
            .general_names
            .iter()
            .filter_map(|g| match g {
                GeneralName::DNSName(n) => Some(normalize_name(n)),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if !sans.is_empty() {
        return sans;
    }
    parsed
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .map(normalize_name)
        .collect()
}

/// RFC 7672 §3.2.3 / RFC 6125 §6.4.3: whether `pattern`, a name the
/// certificate carries, matches `reference`: exactly, or by a `*` that is
/// the whole leftmost label and stands for exactly one label. A reference
/// with a leading dot (`.example.com`, Postfix's "dot-nexthop") stands for
/// every strict subdomain of the name after the dot. Empty labels and any
/// other `*` never match.
pub fn name_matches(pattern: &str, reference: &str) -> bool {
    let pattern = normalize_name(pattern);
    let reference = normalize_name(reference);
    let (name, subdomains) = match reference.strip_prefix('.') {
        Some(parent) => (parent, true),
        None => (reference.as_str(), false),
    };
    // `*.rest` covers one label followed by `rest`.
    let (covered, wildcard) = match pattern.strip_prefix("*.") {
        Some(rest) => (rest, true),
        None => (pattern.as_str(), false),
    };
    if !is_plain_name(name) || !is_plain_name(covered) {
        return false;
    }
    match (wildcard, subdomains) {
        (false, false) => covered == name,
        (true, false) => name
            .split_once('.')
            .is_some_and(|(_, parent)| parent == covered),
        (false, true) => is_strict_subdomain(covered, name),
        (true, true) => covered == name || is_strict_subdomain(covered, name),
    }
}

/// Non-empty labels, none with a `*`.
fn is_plain_name(name: &str) -> bool {
    name.split('.').all(|l| !l.is_empty() && !l.contains('*'))
}

/// `name` is `label(s).parent` (both plain: the head has no empty label).
fn is_strict_subdomain(name: &str, parent: &str) -> bool {
    name.strip_suffix(parent)
        .is_some_and(|head| head.ends_with('.'))
}

/// The contents of a DER SEQUENCE — a Name or a SubjectPublicKeyInfo — as
/// webpki's [`TrustAnchor`] fields want them (without tag and length).
fn sequence_contents(der: &[u8]) -> Option<Vec<u8>> {
    Sequence::from_der(der)
        .ok()
        .map(|(_, seq)| seq.content.into_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_only_as_whole_leftmost_label() {
        assert!(name_matches("mx.example.net", "MX.Example.Net."));
        assert!(name_matches("*.example.net", "mx.example.net"));
        assert!(!name_matches("*.example.net", "a.mx.example.net"));
        assert!(!name_matches("*.example.net", "example.net"));
        assert!(!name_matches("*.example.net", "mx.example.org"));
        assert!(!name_matches("m*.example.net", "mx.example.net"));
        assert!(!name_matches("mx.*.net", "mx.example.net"));
        assert!(!name_matches("*.*.net", "mx.example.net"));
        assert!(!name_matches("*.", "mx"));
        assert!(!name_matches("*", "mx"));
        assert!(!name_matches("other.example.net", "mx.example.net"));
        assert!(!name_matches("example.net", "mx.example.net"));
    }

    #[test]
    fn stars_and_empty_labels_never_match_even_themselves() {
        for name in [
            "m*.example.net",
            "mx.*.net",
            "*",
            "*.*.net",
            "a..net",
            ".",
            "",
        ] {
            assert!(!name_matches(name, name), "{name:?}");
        }
        assert!(!name_matches("*.example.net", "*.example.net"));
        assert!(!name_matches("*.example.net", "a..example.net"));
        assert!(!name_matches("mx..net", "mx..net"));
        assert!(!name_matches("*..net", "a..net"));
        assert!(!name_matches("mx.example.net", ""));
    }

    #[test]
    fn a_leading_dot_reference_matches_strict_subdomains() {
        assert!(name_matches("mx.example.com", ".example.com"));
        assert!(name_matches("a.b.example.com", ".Example.COM."));
        assert!(name_matches("*.example.com", ".example.com"));
        assert!(name_matches("*.mx.example.com", ".example.com"));
        assert!(!name_matches("example.com", ".example.com"));
        assert!(!name_matches("xexample.com", ".example.com"));
        assert!(!name_matches("mx.example.org", ".example.com"));
        assert!(!name_matches("*.com", ".example.com"));
        assert!(!name_matches("*.xexample.com", ".example.com"));
        assert!(!name_matches("m*.example.com", ".example.com"));
        assert!(!name_matches(".example.com", ".example.com"));
        assert!(!name_matches("mx.example.com", ".*.com"));
        assert!(!name_matches("mx.example.com", "."));
        assert!(!name_matches("mx.example.com", ".."));
    }

    #[test]
    fn sequence_contents_strips_tag_and_length() {
        assert_eq!(sequence_contents(&[0x30, 2, 1, 2]), Some(vec![1u8, 2]));
        assert_eq!(sequence_contents(&[0x30, 3, 1, 2]), None);
        assert_eq!(sequence_contents(&[0x31, 2, 1, 2]), None);
        let mut long = vec![0x30, 0x81, 200];
        long.extend([0u8; 200]);
        assert_eq!(sequence_contents(&long).map(|c| c.len()), Some(200));
        assert_eq!(sequence_contents(&[]), None);
    }
}
