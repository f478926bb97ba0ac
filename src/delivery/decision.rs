//! The per-host TLS decision as delivery and `tls-check` both take it: the
//! TLSA lookup only where DANE can apply (RFC 7672 §2.2.2: secure addresses;
//! §2.2.1: a secure MX RRset unless `dane_insecure_mx = "dane"`), the DNS
//! result mapped onto `dane::decide`'s input,
//! the `dane_results_total` label, and routing/DNS failures as
//! [`AttemptError`]s (bogus ⇒ `DnssecBogus`, the rest ⇒ `DnsLookup`).
//! [`host_tls`] adds MTA-STS after DANE (RFC 8461 §2: DANE first;
//! `crate::sts::enforce` is the rule).

use std::sync::Arc;

use crate::dane::{self, decide, DanePolicy, Decision, HostDns, MandatoryTls, WebPkiTarget};
use crate::delivery::routing::{CandidateHost, RoutePlan, RouteSource, RoutingError};
use crate::dns::{lookup_tlsa, DnsError, DnsLookup, Security};
use crate::metrics::DaneResult;
use crate::sts::{host_rule, Active, HostRule, Mode};

use super::outcome::AttemptError;

/// The TLS decision for one host, with the TLSA lookup only where DANE
/// can apply ([`DanePolicy::wants_tlsa`]: secure addresses, and a secure MX
/// RRset unless `dane_insecure_mx = "dane"`). `nexthop` is the next-hop
/// domain of an MX or implicit-MX route ([`nexthop_domain`]).
pub async fn host_decision(
    dns: &dyn DnsLookup,
    policy: DanePolicy,
    nexthop: Option<&str>,
    host: &CandidateHost,
) -> (Decision, Option<Result<crate::dns::TlsaLookup, DnsError>>) {
    let looked = if policy.wants_tlsa(host.mx_security, host.address_security) {
        Some(
            lookup_tlsa(
                dns,
                &host.name,
                &host.canonical_name,
                host.address_security,
                host.port,
            )
            .await,
        )
    } else {
        None
    };
    // `lookup_tlsa` keeps records only from a secure RRset; `decide` ignores
    // insecure and empty ones (RFC 7672 §2.2) all the same.
    let tlsa = match &looked {
        None => dane::TlsaInput::NoRecords { secure: false },
        Some(Err(e)) => dane::TlsaInput::Failed(e.to_string()),
        Some(Ok(l)) => dane::TlsaInput::Records {
            secure: l.security == Security::Secure,
            records: l.records.clone(),
            base_domain: l.base_domain.clone(),
        },
    };
    let decision = decide(
        policy,
        HostDns {
            mx_host: &host.name,
            nexthop,
            mx: host.mx_security,
            host: host.address_security,
            tlsa,
        },
    );
    (decision, looked)
}

/// The MTA-STS policy in force for the recipient domain, with the trust
/// anchors its MX certificates are checked against.
#[derive(Debug, Clone)]
pub struct DomainSts {
    pub active: Active,
    pub roots: Arc<rustls::RootCertStore>,
}

impl DomainSts {
    /// What a session's TLS depends on besides the decision: the policy's
    /// mode and id (a connection is shared only under the same ones).
    pub fn reuse_tag(&self) -> (Mode, String) {
        self.active.reuse_tag()
    }
}

/// One host's TLS decision with MTA-STS applied after DANE.
#[derive(Debug)]
pub struct HostTls {
    /// DANE's decision, or [`Decision::WebPki`] under `enforce`.
    pub decision: Decision,
    /// What MTA-STS made of the host ([`HostRule::Skip`]: do not connect).
    pub rule: HostRule,
    pub looked: Option<Result<crate::dns::TlsaLookup, DnsError>>,
}

/// [`host_decision`], then the MTA-STS rule for the host under `sts`
/// (`crate::sts::enforce`): `enforce` and a matching MX ⇒ PKIX for the MX
/// host name (RFC 8461 §4.2).
pub async fn host_tls(
    dns: &dyn DnsLookup,
    policy: DanePolicy,
    nexthop: Option<&str>,
    host: &CandidateHost,
    sts: Option<&DomainSts>,
) -> HostTls {
    let (dane, looked) = host_decision(dns, policy, nexthop, host).await;
    let rule = host_rule(&dane, sts.map(|s| &s.active.policy), &host.name);
    let decision = match (rule, sts) {
        (HostRule::Authenticate, Some(s)) => {
            Decision::WebPki(WebPkiTarget::new(&host.name, s.roots.clone()))
        }
        _ => dane,
    };
    HostTls {
        decision,
        rule,
        looked,
    }
}

/// The next-hop domain of a route (RFC 7672 §3.2.3): the recipient domain
/// when its MX (or implicit MX) was looked up; `None` for a configured next
/// hop, whose own name is already the host name.
pub fn nexthop_domain(plan: &RoutePlan) -> Option<&str> {
    match plan.source {
        RouteSource::Mx | RouteSource::ImplicitMx => Some(&plan.domain),
        RouteSource::NextHop => None,
    }
}

/// The `dane_results_total` label for a decision before connecting.
pub fn dane_label(
    policy: DanePolicy,
    host: &CandidateHost,
    decision: &Decision,
) -> Option<DaneResult> {
    if !policy.is_dane() {
        return Some(DaneResult::NotApplicable);
    }
    match decision {
        Decision::Authenticate(_) => None, // ok / mismatch once connected
        Decision::TlsRequired(MandatoryTls::AllTlsaUnusable) => Some(DaneResult::Unusable),
        Decision::Defer(dane::DeferReason::TlsaLookupFailed(_)) => Some(DaneResult::Tempfail),
        _ if !policy.wants_tlsa(host.mx_security, host.address_security) => {
            Some(DaneResult::Insecure)
        }
        _ => Some(DaneResult::NotApplicable),
    }
}

/// A routing failure as an attempt error (null MX, no domain, DNS).
pub(crate) fn routing_error(e: RoutingError) -> AttemptError {
    match e {
        RoutingError::NullMx { domain } => AttemptError::NullMx { domain },
        RoutingError::NoSuchDomain { domain } => AttemptError::NoSuchDomain { domain },
        RoutingError::NoAddresses { domain } => AttemptError::NoUsableHost { domain },
        RoutingError::Dns { source, .. } => dns_error(source),
    }
}

pub(crate) fn dns_error(source: DnsError) -> AttemptError {
    match source {
        DnsError::Bogus { name, detail, .. } => AttemptError::DnssecBogus { name, detail },
        other => AttemptError::DnsLookup {
            name: match &other {
                DnsError::ServFail { name, .. }
                | DnsError::Timeout { name, .. }
                | DnsError::ResponseCode { name, .. }
                | DnsError::Transport { name, .. }
                | DnsError::InvalidName { name, .. } => name.clone(),
                DnsError::Bogus { name, .. } => name.clone(),
                DnsError::Setup { .. } => "resolver".into(),
            },
            detail: other.to_string(),
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::{InsecureMxPolicy, TlsLevel};
    use crate::dane::{DeferReason, TlsaRecord};
    use crate::dns::{FakeDns, RecordType, Tlsa};
    use Security::{Insecure, Secure};

    fn host(mx: Security, address: Security) -> CandidateHost {
        CandidateHost {
            name: "mx.example.net".into(),
            canonical_name: "mx.example.net".into(),
            preference: 10,
            port: 25,
            mx_security: mx,
            addresses: vec!["192.0.2.1".parse().unwrap()],
            address_security: address,
        }
    }

    fn ee() -> Tlsa {
        TlsaRecord {
            usage: 3,
            selector: 1,
            matching: 1,
            data: vec![0xab; 32],
        }
    }

    fn policy(level: TlsLevel, insecure_mx: InsecureMxPolicy) -> DanePolicy {
        DanePolicy { level, insecure_mx }
    }

    #[tokio::test]
    async fn an_insecure_tlsa_rrset_of_a_secure_host_is_ignored() {
        // A secure host whose TLSA RRset is not signed (a CNAME into an
        // unsigned zone): RFC 7672 §2.2 — no DANE, never authentication.
        let dns = FakeDns::new();
        dns.tlsa("_25._tcp.mx.example.net", Insecure, vec![ee()]);
        let h = host(Secure, Secure);
        let dane = DanePolicy::new(TlsLevel::Dane);
        let (d, looked) = host_decision(&dns, dane, Some("example.net"), &h).await;
        assert_eq!(d, Decision::Opportunistic);
        assert_eq!(looked.unwrap().unwrap().security, Insecure);
        let only = DanePolicy::new(TlsLevel::DaneOnly);
        let (d, _) = host_decision(&dns, only, Some("example.net"), &h).await;
        assert_eq!(d, Decision::Defer(DeferReason::NoSecureTlsa));
    }

    #[tokio::test]
    async fn secure_tlsa_authenticates_with_the_nexthop_as_reference_id() {
        let dns = FakeDns::new();
        dns.tlsa("_25._tcp.mx.example.net", Secure, vec![ee()]);
        let dane = DanePolicy::new(TlsLevel::Dane);
        let (d, _) = host_decision(&dns, dane, Some("example.net"), &host(Secure, Secure)).await;
        let Decision::Authenticate(t) = d else {
            panic!("{d:?}")
        };
        assert_eq!(t.reference_names, ["mx.example.net", "example.net"]);
        assert_eq!(t.assurance, dane::Assurance::Verified);
        // Insecure MX under "dane": looked up, trusted, no next-hop name.
        let (d, _) = host_decision(&dns, dane, Some("example.net"), &host(Insecure, Secure)).await;
        let Decision::Authenticate(t) = d else {
            panic!("{d:?}")
        };
        assert_eq!(t.reference_names, ["mx.example.net"]);
        assert_eq!(t.assurance, dane::Assurance::Trusted);
        // Under "may": not even looked up.
        let may = policy(TlsLevel::Dane, InsecureMxPolicy::May);
        let queries = dns.queries().len();
        let (d, looked) =
            host_decision(&dns, may, Some("example.net"), &host(Insecure, Secure)).await;
        assert_eq!((d, looked), (Decision::Opportunistic, None));
        assert_eq!(dns.queries().len(), queries);
    }

    #[tokio::test]
    async fn a_failed_tlsa_lookup_defers() {
        let dns = FakeDns::new();
        dns.servfail("_25._tcp.mx.example.net", RecordType::Tlsa);
        let dane = DanePolicy::new(TlsLevel::Dane);
        let (d, looked) = host_decision(&dns, dane, None, &host(Secure, Secure)).await;
        assert!(
            matches!(d, Decision::Defer(DeferReason::TlsaLookupFailed(_))),
            "{d:?}"
        );
        assert!(looked.unwrap().is_err());
    }

    #[test]
    fn dane_results_labels() {
        let dane = DanePolicy::new(TlsLevel::Dane);
        let may = policy(TlsLevel::Dane, InsecureMxPolicy::May);
        let secure = host(Secure, Secure);
        let target = dane::DaneTarget::new("mx.example.net", "mx.example.net", vec![ee()]);
        for (p, h, d, want) in [
            (
                DanePolicy::new(TlsLevel::May),
                &secure,
                Decision::Opportunistic,
                Some(DaneResult::NotApplicable),
            ),
            (
                DanePolicy::new(TlsLevel::Encrypt),
                &secure,
                Decision::TlsRequired(MandatoryTls::EncryptLevel),
                Some(DaneResult::NotApplicable),
            ),
            (dane, &secure, Decision::Authenticate(target), None),
            (
                dane,
                &secure,
                Decision::TlsRequired(MandatoryTls::AllTlsaUnusable),
                Some(DaneResult::Unusable),
            ),
            (
                dane,
                &secure,
                Decision::Defer(DeferReason::TlsaLookupFailed("x".into())),
                Some(DaneResult::Tempfail),
            ),
            (
                dane,
                &secure,
                Decision::Opportunistic,
                Some(DaneResult::NotApplicable),
            ),
            (
                dane,
                &host(Secure, Insecure),
                Decision::Opportunistic,
                Some(DaneResult::Insecure),
            ),
            (
                dane,
                &host(Insecure, Secure),
                Decision::Opportunistic,
                Some(DaneResult::NotApplicable),
            ),
            (
                may,
                &host(Insecure, Secure),
                Decision::Opportunistic,
                Some(DaneResult::Insecure),
            ),
            (
                DanePolicy::new(TlsLevel::DaneOnly),
                &secure,
                Decision::Defer(DeferReason::NoSecureTlsa),
                Some(DaneResult::NotApplicable),
            ),
        ] {
            assert_eq!(dane_label(p, h, &d), want, "{p:?} {h:?} {d:?}");
        }
    }

    #[test]
    fn the_nexthop_domain_is_the_recipient_domain_unless_configured() {
        let plan = |source| RoutePlan {
            domain: "example.net".into(),
            source,
            tls: None,
            hosts: vec![host(Secure, Secure)],
            failed_hosts: Vec::new(),
        };
        assert_eq!(nexthop_domain(&plan(RouteSource::Mx)), Some("example.net"));
        assert_eq!(
            nexthop_domain(&plan(RouteSource::ImplicitMx)),
            Some("example.net")
        );
        assert_eq!(nexthop_domain(&plan(RouteSource::NextHop)), None);
    }
}
