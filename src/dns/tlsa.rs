//! The TLSA lookup for one SMTP server, RFC 7672 §2.2.2–§2.2.3.
//!
//! Only a host whose address records are secure gets a TLSA lookup
//! (§2.2.2: an insecure A/AAAA answer means DANE does not apply). When the
//! host name is an alias and the CNAME chain is secure, the TLSA RRset is
//! looked up at the fully expanded name first and, only when that name has
//! none (NODATA/NXDOMAIN), at the original name (§2.2.3). A lookup *error*
//! at the expanded name is a failure, never a fall-through: falling through
//! on SERVFAIL would let an attacker who can break one lookup downgrade the
//! connection. The name the TLSA records were found at is the *TLSA base
//! domain*: it is the SNI and the DANE-TA reference identifier (§3.2.2).

use tracing::debug;

use super::types::{Answer, AnswerKind, DnsError, DnsLookup, RecordType, Security, Tlsa};

/// The TLSA records that apply to one host, or why there are none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsaLookup {
    /// The name the lookup settled on (without the `_port._tcp.` prefix).
    pub base_domain: String,
    /// Non-empty only when `security` is `Secure`: insecure TLSA records are
    /// never used (RFC 7672 §2.2).
    pub records: Vec<Tlsa>,
    pub security: Security,
}

impl TlsaLookup {
    /// Whether DANE engages for this host (secure, non-empty TLSA RRset).
    pub fn has_secure_tlsa(&self) -> bool {
        self.security == Security::Secure && !self.records.is_empty()
    }
}

/// `_<port>._tcp.<base>` (RFC 6698 §3).
pub fn tlsa_owner(port: u16, base: &str) -> String {
    format!("_{port}._tcp.{}", base.trim_end_matches('.'))
}

/// Looks up the TLSA records for an SMTP host.
///
/// * `host` — the MX exchange (or next-hop/implicit-MX) name as configured;
/// * `canonical` — the CNAME-expanded name from the host's address lookup;
/// * `address_security` — the security of that address lookup (CNAMEs
///   included).
///
/// With insecure addresses no query is sent and the result is insecure and
/// empty, based at `host`.
pub async fn lookup_tlsa(
    dns: &dyn DnsLookup,
    host: &str,
    canonical: &str,
    address_security: Security,
    port: u16,
) -> Result<TlsaLookup, DnsError> {
    let host = super::normalize_name(host);
    let canonical = super::normalize_name(canonical);
    if address_security != Security::Secure {
        debug!(%host, "addresses insecure: no TLSA lookup (RFC 7672 §2.2.2)");
        return Ok(none(host, Security::Insecure));
    }
    if canonical != host {
        let expanded = dns
            .lookup(&tlsa_owner(port, &canonical), RecordType::Tlsa)
            .await?;
        if let Some(found) = settle(&canonical, &expanded) {
            return Ok(found);
        }
        debug!(%host, %canonical, "no TLSA at the expanded name; trying the original");
    }
    let original = dns
        .lookup(&tlsa_owner(port, &host), RecordType::Tlsa)
        .await?;
    Ok(settle(&host, &original).unwrap_or_else(|| none(host, original.security)))
}

/// `Some` when the answer holds TLSA records (secure or not: an insecure
/// RRset at the expanded name still ends the search, §2.2.3 only falls
/// through when no RRset exists).
fn settle(base: &str, answer: &Answer) -> Option<TlsaLookup> {
    match &answer.kind {
        AnswerKind::Records(_) => Some(TlsaLookup {
            base_domain: base.to_string(),
            records: if answer.is_secure() {
                answer.tlsa().cloned().collect()
            } else {
                Vec::new()
            },
            security: answer.security,
        }),
        AnswerKind::NoData | AnswerKind::NxDomain => None,
    }
}

fn none(base: String, security: Security) -> TlsaLookup {
    TlsaLookup {
        base_domain: base,
        records: Vec::new(),
        security,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::dns::FakeDns;
    use Security::{Insecure, Secure};

    fn t(usage: u8) -> Tlsa {
        Tlsa {
            usage,
            selector: 1,
            matching: 1,
            data: vec![0xab; 32],
        }
    }

    #[tokio::test]
    async fn secure_host_gets_its_tlsa() {
        let dns = FakeDns::new();
        dns.tlsa("_25._tcp.mx.example.net", Secure, vec![t(3)]);
        let got = lookup_tlsa(&dns, "mx.example.net", "mx.example.net", Secure, 25)
            .await
            .unwrap();
        assert!(got.has_secure_tlsa());
        assert_eq!(got.base_domain, "mx.example.net");
        assert_eq!(got.records, vec![t(3)]);
    }

    #[tokio::test]
    async fn insecure_addresses_skip_the_lookup() {
        let dns = FakeDns::new();
        dns.tlsa("_25._tcp.mx.example.net", Secure, vec![t(3)]);
        let got = lookup_tlsa(&dns, "mx.example.net", "mx.example.net", Insecure, 25)
            .await
            .unwrap();
        assert!(!got.has_secure_tlsa());
        assert!(
            dns.queries().is_empty(),
            "no TLSA query for an insecure host"
        );
    }

    #[tokio::test]
    async fn expanded_name_first_then_original() {
        let dns = FakeDns::new();
        dns.tlsa("_25._tcp.mx.provider.net", Secure, vec![t(2)]);
        dns.tlsa("_25._tcp.mx.example.com", Secure, vec![t(3)]);
        let got = lookup_tlsa(&dns, "mx.example.com", "mx.provider.net", Secure, 25)
            .await
            .unwrap();
        assert_eq!(got.base_domain, "mx.provider.net");
        assert_eq!(got.records, vec![t(2)]);
        assert_eq!(dns.queries().len(), 1);

        let dns = FakeDns::new();
        dns.nodata("_25._tcp.mx.provider.net", RecordType::Tlsa, Secure);
        dns.tlsa("_25._tcp.mx.example.com", Secure, vec![t(3)]);
        let got = lookup_tlsa(&dns, "mx.example.com", "mx.provider.net", Secure, 25)
            .await
            .unwrap();
        assert_eq!(got.base_domain, "mx.example.com");
        assert_eq!(got.records, vec![t(3)]);
        let asked: Vec<String> = dns.queries().into_iter().map(|q| q.0).collect();
        assert_eq!(
            asked,
            ["_25._tcp.mx.provider.net", "_25._tcp.mx.example.com"]
        );
    }

    #[tokio::test]
    async fn error_at_expanded_name_is_a_failure_not_a_fall_through() {
        let dns = FakeDns::new();
        dns.servfail("_25._tcp.mx.provider.net", RecordType::Tlsa);
        dns.nodata("_25._tcp.mx.example.com", RecordType::Tlsa, Secure);
        let err = lookup_tlsa(&dns, "mx.example.com", "mx.provider.net", Secure, 25)
            .await
            .unwrap_err();
        assert!(err.is_temporary());
        assert_eq!(
            dns.queries().len(),
            1,
            "the original name must not be asked"
        );
    }

    #[tokio::test]
    async fn insecure_tlsa_are_never_used_and_other_ports_are_looked_up() {
        let dns = FakeDns::new();
        dns.tlsa("_587._tcp.relay.example.net", Insecure, vec![t(3)]);
        let got = lookup_tlsa(&dns, "relay.example.net", "relay.example.net", Secure, 587)
            .await
            .unwrap();
        assert!(!got.has_secure_tlsa());
        assert!(got.records.is_empty());
        assert_eq!(got.security, Insecure);
    }
}
