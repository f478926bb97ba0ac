//! The start-up DNSSEC probe, like Postfix's `dnssec_probe`: ask for the SOA
//! of a name that must validate (`dns.dnssec_probe`, `"."` by default). If it
//! does not come back secure the resolver is not validating (or does not
//! pass on the AD bit) and DANE is silently inactive, so say so loudly; the
//! result feeds the `danerelay_dnssec_validating` gauge.

use tracing::{info, warn};

use super::types::{DnsLookup, RecordType, Security};

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    /// True when the probe answer was secure.
    pub validating: bool,
    /// Human-readable reason, e.g. `". SOA came back insecure"`.
    pub detail: String,
}

/// Runs the probe once and logs the verdict (warning when DANE is inactive).
pub async fn dnssec_probe(dns: &dyn DnsLookup, name: &str) -> ProbeResult {
    let result = check(dns, name).await;
    let shown = shown(name);
    if result.validating {
        info!(
            probe = shown,
            "DNSSEC probe: resolver validates; DANE is active"
        );
    } else {
        warn!(
            probe = shown,
            detail = %result.detail,
            "DNSSEC probe failed: the resolver does not validate (or strips the AD bit); DANE is INACTIVE"
        );
    }
    result
}

fn shown(name: &str) -> &str {
    if name.is_empty() || name == "." {
        "."
    } else {
        name
    }
}

/// Runs the probe once, without logging (`dns.dnssec = "auto"` words its
/// own verdict: a non-validating resolver is no problem there).
pub(crate) async fn check(dns: &dyn DnsLookup, name: &str) -> ProbeResult {
    let shown = shown(name);
    match dns.lookup(name, RecordType::Soa).await {
        Ok(answer) if answer.security == Security::Secure && !answer.records().is_empty() => {
            ProbeResult {
                validating: true,
                detail: format!("{shown} SOA is secure"),
            }
        }
        Ok(answer) => ProbeResult {
            validating: false,
            detail: format!(
                "{shown} SOA came back {} ({})",
                answer.security,
                answer.kind.as_str()
            ),
        },
        Err(e) => ProbeResult {
            validating: false,
            detail: e.to_string(),
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::dns::{FakeDns, Record};

    #[tokio::test]
    async fn secure_soa_means_validating() {
        let dns = FakeDns::new();
        dns.records(
            "",
            RecordType::Soa,
            Security::Secure,
            vec![Record::Soa { serial: 1 }],
        );
        assert!(dnssec_probe(&dns, ".").await.validating);
    }

    #[tokio::test]
    async fn insecure_or_failed_soa_means_not_validating() {
        let dns = FakeDns::new();
        dns.records(
            "",
            RecordType::Soa,
            Security::Insecure,
            vec![Record::Soa { serial: 1 }],
        );
        let r = dnssec_probe(&dns, ".").await;
        assert!(!r.validating);
        assert!(r.detail.contains("insecure"), "{}", r.detail);
        dns.servfail("", RecordType::Soa);
        assert!(!dnssec_probe(&dns, ".").await.validating);
    }
}
