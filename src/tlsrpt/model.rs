//! What TLS-RPT counts (RFC 8460 §4.3, §4.4): one session's result, and a
//! policy domain's counts for one UTC day, which merge commutatively (so
//! in-memory batches, the durable record and a restart add up the same).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// RFC 8460 §4.4 `policy-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyType {
    /// DANE (RFC 7672): the host's TLSA records.
    Tlsa,
    /// MTA-STS (RFC 8461).
    Sts,
    /// Neither: opportunistic TLS.
    NoPolicyFound,
}

/// RFC 8460 §4.3 result types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResultType {
    /// §4.3.1: the receiver did not offer STARTTLS.
    StarttlsNotSupported,
    /// §4.3.1: the certificate names another host.
    CertificateHostMismatch,
    /// §4.3.1: the certificate has expired.
    CertificateExpired,
    /// §4.3.1: the chain does not lead to a trusted root.
    CertificateNotTrusted,
    /// §4.3.1: any other TLS or validation failure.
    ValidationFailure,
    /// §4.3.2.1: no TLSA record of the RRset validated the server.
    TlsaInvalid,
    /// §4.3.2.1: no valid (secure) records from the resolver.
    DnssecInvalid,
    /// §4.3.2.1: DANE required, no DNSSEC-validated TLSA for the host.
    DaneRequired,
    /// §4.3.2.2: the MTA-STS policy could not be fetched.
    StsPolicyFetchError,
    /// §4.3.2.2: the MTA-STS policy was invalid.
    StsPolicyInvalid,
    /// §4.3.2.2: the policy host's certificate did not validate.
    StsWebpkiInvalid,
}

impl ResultType {
    /// The result type spelled `s` (RFC 8460 §4.3), as other modules name it.
    pub fn from_rfc(s: &str) -> Option<ResultType> {
        Some(match s {
            "starttls-not-supported" => ResultType::StarttlsNotSupported,
            "certificate-host-mismatch" => ResultType::CertificateHostMismatch,
            "certificate-expired" => ResultType::CertificateExpired,
            "certificate-not-trusted" => ResultType::CertificateNotTrusted,
            "validation-failure" => ResultType::ValidationFailure,
            "tlsa-invalid" => ResultType::TlsaInvalid,
            "dnssec-invalid" => ResultType::DnssecInvalid,
            "dane-required" => ResultType::DaneRequired,
            "sts-policy-fetch-error" => ResultType::StsPolicyFetchError,
            "sts-policy-invalid" => ResultType::StsPolicyInvalid,
            "sts-webpki-invalid" => ResultType::StsWebpkiInvalid,
            _ => return None,
        })
    }

    /// The RFC's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ResultType::StarttlsNotSupported => "starttls-not-supported",
            ResultType::CertificateHostMismatch => "certificate-host-mismatch",
            ResultType::CertificateExpired => "certificate-expired",
            ResultType::CertificateNotTrusted => "certificate-not-trusted",
            ResultType::ValidationFailure => "validation-failure",
            ResultType::TlsaInvalid => "tlsa-invalid",
            ResultType::DnssecInvalid => "dnssec-invalid",
            ResultType::DaneRequired => "dane-required",
            ResultType::StsPolicyFetchError => "sts-policy-fetch-error",
            ResultType::StsPolicyInvalid => "sts-policy-invalid",
            ResultType::StsWebpkiInvalid => "sts-webpki-invalid",
        }
    }
}

/// The policy a session was made under (RFC 8460 §4.4 `policy`, without
/// the domain, which keys the counts).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Policy {
    pub kind: PolicyType,
    /// `policy-string`: the TLSA records (`"3 1 1 ab…"`) or the STS policy
    /// lines; empty for `no-policy-found`.
    #[serde(default)]
    pub strings: Vec<String>,
    /// `mx-host`: the MX host (DANE, whose records are per host) or the
    /// STS policy's `mx` patterns.
    #[serde(default)]
    pub mx_host: Vec<String>,
}

impl Policy {
    pub fn no_policy() -> Policy {
        Policy {
            kind: PolicyType::NoPolicyFound,
            strings: Vec::new(),
            mx_host: Vec::new(),
        }
    }
}

/// One failure's details (RFC 8460 §4.4 `failure-details`, without the
/// count).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Failure {
    pub result: ResultType,
    #[serde(default)]
    pub sending_mta_ip: Option<IpAddr>,
    #[serde(default)]
    pub receiving_mx_hostname: Option<String>,
    #[serde(default)]
    pub receiving_ip: Option<IpAddr>,
    /// `failure-reason-code`: a short free-text reason.
    #[serde(default)]
    pub reason: Option<String>,
}

/// One SMTP session's TLS result, as delivery (DANE, opportunistic) and
/// MTA-STS report it to the recorder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionResult {
    /// The policy domain (the recipient domain), lower-case.
    pub domain: String,
    pub policy: Policy,
    /// `None`: a successful session.
    pub failure: Option<Failure>,
}

/// Distinct failure details kept per policy and day; more are counted under
/// a detail without addresses, so a scan over many hosts cannot grow a
/// record without bound.
pub const MAX_FAILURE_DETAILS: usize = 100;

/// The counts for one policy.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PolicyCounts {
    pub success: u64,
    pub failures: Vec<(Failure, u64)>,
}

impl PolicyCounts {
    pub fn failure_total(&self) -> u64 {
        self.failures.iter().map(|(_, n)| n).sum()
    }

    fn add_failure(&mut self, f: Failure, n: u64) {
        if let Some((_, c)) = self.failures.iter_mut().find(|(g, _)| *g == f) {
            *c += n;
            return;
        }
        if self.failures.len() >= MAX_FAILURE_DETAILS {
            let coarse = Failure {
                result: f.result,
                sending_mta_ip: None,
                receiving_mx_hostname: None,
                receiving_ip: None,
                reason: None,
            };
            if f != coarse {
                return self.add_failure(coarse, n);
            }
        }
        self.failures.push((f, n));
    }
}

/// A policy domain's counts for one UTC day.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DomainDay {
    pub policies: Vec<(Policy, PolicyCounts)>,
}

impl DomainDay {
    fn entry(&mut self, policy: &Policy) -> &mut PolicyCounts {
        let i = match self.policies.iter().position(|(p, _)| p == policy) {
            Some(i) => i,
            None => {
                self.policies
                    .push((policy.clone(), PolicyCounts::default()));
                self.policies.len() - 1
            }
        };
        &mut self.policies[i].1
    }

    /// Counts one session.
    pub fn add(&mut self, policy: &Policy, failure: Option<Failure>) {
        let c = self.entry(policy);
        match failure {
            None => c.success += 1,
            Some(f) => c.add_failure(f, 1),
        }
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: DomainDay) {
        for (policy, counts) in other.policies {
            let c = self.entry(&policy);
            c.success += counts.success;
            for (f, n) in counts.failures {
                c.add_failure(f, n);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(result: ResultType, ip: &str) -> Failure {
        Failure {
            result,
            sending_mta_ip: None,
            receiving_mx_hostname: Some("mx.example.net".into()),
            receiving_ip: Some(ip.parse().unwrap()),
            reason: None,
        }
    }

    #[test]
    fn sessions_count_per_policy_and_failure_detail() {
        let dane = Policy {
            kind: PolicyType::Tlsa,
            strings: vec!["3 1 1 AA".into()],
            mx_host: vec!["mx.example.net".into()],
        };
        let mut d = DomainDay::default();
        for _ in 0..3 {
            d.add(&dane, None);
        }
        d.add(&dane, Some(fail(ResultType::TlsaInvalid, "192.0.2.1")));
        d.add(&dane, Some(fail(ResultType::TlsaInvalid, "192.0.2.1")));
        d.add(&dane, Some(fail(ResultType::TlsaInvalid, "192.0.2.2")));
        d.add(&Policy::no_policy(), None);
        assert_eq!(d.policies.len(), 2);
        let c = &d.policies[0].1;
        assert_eq!((c.success, c.failure_total()), (3, 3));
        assert_eq!(c.failures.len(), 2);
        assert_eq!(c.failures[0].1, 2);
        assert_eq!(d.policies[1].1.success, 1);
    }

    #[test]
    fn merging_adds_up_like_recording_everything_in_one_place() {
        let p = Policy::no_policy();
        let mut a = DomainDay::default();
        let mut b = DomainDay::default();
        let mut all = DomainDay::default();
        for (i, target) in [&mut a, &mut b].into_iter().enumerate() {
            target.add(&p, None);
            target.add(
                &p,
                Some(fail(ResultType::StarttlsNotSupported, "192.0.2.9")),
            );
            all.add(&p, None);
            all.add(
                &p,
                Some(fail(ResultType::StarttlsNotSupported, "192.0.2.9")),
            );
            let _ = i;
        }
        a.merge(b);
        assert_eq!(a, all);
        assert_eq!(a.policies[0].1.success, 2);
        assert_eq!(
            a.policies[0].1.failures,
            vec![(fail(ResultType::StarttlsNotSupported, "192.0.2.9"), 2)]
        );
    }

    #[test]
    fn failure_details_are_bounded_but_every_failure_is_counted() {
        let p = Policy::no_policy();
        let mut d = DomainDay::default();
        for i in 0..(MAX_FAILURE_DETAILS as u32 + 50) {
            let ip = std::net::Ipv4Addr::from(0xC000_0200 + i).to_string();
            d.add(&p, Some(fail(ResultType::ValidationFailure, &ip)));
        }
        let c = &d.policies[0].1;
        assert_eq!(c.failure_total(), MAX_FAILURE_DETAILS as u64 + 50);
        assert_eq!(c.failures.len(), MAX_FAILURE_DETAILS + 1);
        assert_eq!(c.failures.last().unwrap().1, 50);
    }

    #[test]
    fn result_types_serialize_as_the_rfc_spells_them() {
        for r in [
            ResultType::StarttlsNotSupported,
            ResultType::DaneRequired,
            ResultType::StsWebpkiInvalid,
        ] {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
        assert_eq!(
            serde_json::to_value(PolicyType::NoPolicyFound).unwrap(),
            "no-policy-found"
        );
    }
}
