//! The per-host TLS decision as delivery and `tls-check` both take it: the
//! TLSA lookup only where DANE can apply (RFC 7672 §2.2.2: secure MX and
//! secure addresses), the DNS result mapped onto `dane::decide`'s input,
//! the `dane_results_total` label, and routing/DNS failures as
//! [`AttemptError`]s (bogus ⇒ `DnssecBogus`, the rest ⇒ `DnsLookup`).

use crate::config::TlsLevel;
use crate::dane::{self, decide, Decision, MandatoryTls};
use crate::delivery::routing::{CandidateHost, RoutingError};
use crate::dns::{lookup_tlsa, DnsError, DnsLookup, Security};
use crate::metrics::DaneResult;

use super::outcome::AttemptError;

/// The TLS decision for one host, with the TLSA lookup only where DANE
/// can apply (RFC 7672 §2.2.2: secure MX and secure addresses).
pub async fn host_decision(
    dns: &dyn DnsLookup,
    level: TlsLevel,
    host: &CandidateHost,
) -> (Decision, Option<Result<crate::dns::TlsaLookup, DnsError>>) {
    let dane_level = matches!(level, TlsLevel::Dane | TlsLevel::DaneOnly);
    let looked = if dane_level && host.dnssec_secure() {
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
    let tlsa = match &looked {
        None => dane::TlsaInput::NoRecords { secure: false },
        Some(Err(e)) => dane::TlsaInput::Failed(e.to_string()),
        Some(Ok(l)) if l.has_secure_tlsa() => dane::TlsaInput::Records {
            secure: true,
            records: l.records.clone(),
            base_domain: l.base_domain.clone(),
        },
        Some(Ok(l)) => dane::TlsaInput::NoRecords {
            secure: l.security == Security::Secure,
        },
    };
    let decision = decide(
        level,
        &host.name,
        host.mx_security,
        host.address_security,
        tlsa,
    );
    (decision, looked)
}

/// The `dane_results_total` label for a decision before connecting.
pub fn dane_label(
    level: TlsLevel,
    host: &CandidateHost,
    decision: &Decision,
) -> Option<DaneResult> {
    if !matches!(level, TlsLevel::Dane | TlsLevel::DaneOnly) {
        return Some(DaneResult::NotApplicable);
    }
    match decision {
        Decision::Authenticate(_) => None, // ok / mismatch once connected
        Decision::TlsRequired(MandatoryTls::AllTlsaUnusable) => Some(DaneResult::Unusable),
        Decision::Defer(dane::DeferReason::TlsaLookupFailed(_)) => Some(DaneResult::Tempfail),
        _ if !host.dnssec_secure() => Some(DaneResult::Insecure),
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
