//! The per-host TLS decision as delivery and `tls-check` both take it: the
//! TLSA lookup only where DANE can apply (RFC 7672 §2.2.2: secure addresses;
//! §2.2.1: a secure MX RRset unless `dane_insecure_mx = "dane"`), the DNS
//! result mapped onto `dane::decide`'s input,
//! the `dane_results_total` label, and routing/DNS failures as
//! [`AttemptError`]s (bogus ⇒ `DnssecBogus`, the rest ⇒ `DnsLookup`).

use crate::dane::{self, decide, DanePolicy, Decision, HostDns, MandatoryTls};
use crate::delivery::routing::{CandidateHost, RoutePlan, RouteSource, RoutingError};
use crate::dns::{lookup_tlsa, DnsError, DnsLookup, Security};
use crate::metrics::DaneResult;

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
