//! One session's TLS result at one host as TLS-RPT counts it (RFC 8460
//! §4.3): the policy the host was tried under (DANE ⇒ `tlsa`, opportunistic
//! or `encrypt` ⇒ `no-policy-found`) and, when TLS did not come up as that
//! policy wanted, the result type. Pure: the attempt hands the outcome to
//! [`crate::tlsrpt::Recorder`].

use std::net::IpAddr;

use crate::dane::{Decision, DeferReason, MandatoryTls};
use crate::delivery::routing::CandidateHost;
use crate::smtp::client::ClientError;
use crate::tlsrpt::{Failure, Policy, PolicyType, ResultType, SessionResult};

use super::outcome::AttemptError;
use super::session::{Session, TlsOutcome};

/// What the attempt knows about a session when it reports it.
pub enum Seen<'a> {
    /// The host was skipped before connecting (`Decision::Defer`).
    Skipped,
    /// Connecting or the TLS set-up failed.
    Failed(&'a AttemptError),
    /// The session is up (perhaps in plaintext).
    Opened(&'a Session),
}

/// The TLS-RPT result, or `None` when no TLS policy applied (level
/// `none`) or the session never reached TLS negotiation (connection
/// refused, timeouts, SMTP errors before STARTTLS).
pub fn session_result(
    domain: &str,
    host: &CandidateHost,
    address: Option<IpAddr>,
    decision: &Decision,
    seen: Seen<'_>,
) -> Option<SessionResult> {
    let dane = |strings: Vec<String>| Policy {
        kind: PolicyType::Tlsa,
        strings,
        mx_host: vec![host.name.clone()],
    };
    let (policy, preset) = match decision {
        Decision::Plaintext => return None,
        Decision::Authenticate(t) => (
            dane(t.records.iter().map(|r| r.to_string()).collect()),
            None,
        ),
        Decision::TlsRequired(MandatoryTls::AllTlsaUnusable) => (
            dane(Vec::new()),
            Some((ResultType::TlsaInvalid, "all TLSA records unusable")),
        ),
        Decision::TlsRequired(MandatoryTls::EncryptLevel) | Decision::Opportunistic => {
            (Policy::no_policy(), None)
        }
        Decision::Defer(reason) => (dane(Vec::new()), Some(defer_result(reason))),
        // MTA-STS `enforce`: counted from the MTA-STS result ([`sts_session`]).
        Decision::WebPki(_) => return None,
    };
    let failure = match (preset, seen) {
        (Some((result, why)), Seen::Skipped) => Some((result, why.to_string())),
        (_, Seen::Skipped) => return None,
        (_, Seen::Failed(e)) => Some(failed_result(e)?),
        (Some((result, why)), Seen::Opened(_)) => Some((result, why.to_string())),
        (None, Seen::Opened(s)) => opened_result(s),
    };
    Some(SessionResult {
        domain: domain.to_ascii_lowercase(),
        policy,
        failure: failure.map(|(result, reason)| Failure {
            result,
            sending_mta_ip: None,
            receiving_mx_hostname: Some(host.name.clone()),
            receiving_ip: address,
            reason: Some(reason),
        }),
    })
}

/// An MTA-STS session result as TLS-RPT counts it: policy type `sts`
/// (RFC 8460 §4.3.2.2) with the policy's lines and `mx` patterns; a policy
/// that could not be fetched is an `sts` policy without strings.
pub fn sts_session(r: &crate::sts::SessionResult) -> SessionResult {
    let policy = Policy {
        kind: PolicyType::Sts,
        strings: r.policy_strings(),
        mx_host: r.policy.as_ref().map_or_else(Vec::new, |a| {
            a.policy.mx.iter().map(|p| p.as_str().to_string()).collect()
        }),
    };
    let failure = r.failure.as_ref().map(|f| Failure {
        result: ResultType::from_rfc(f.result_type()).unwrap_or(ResultType::ValidationFailure),
        sending_mta_ip: None,
        receiving_mx_hostname: Some(r.mx_host.clone()).filter(|h| !h.is_empty()),
        receiving_ip: r.receiving_ip,
        reason: Some(format!("{f:?}")),
    });
    SessionResult {
        domain: r.policy_domain.to_ascii_lowercase(),
        policy,
        failure,
    }
}

/// RFC 8460 §4.3.2.1 for a host DANE would not let us use.
fn defer_result(reason: &DeferReason) -> (ResultType, &'static str) {
    match reason {
        DeferReason::TlsaLookupFailed(_) => (ResultType::DnssecInvalid, "TLSA lookup failed"),
        DeferReason::NoUsableTlsa => (ResultType::TlsaInvalid, "no usable TLSA records"),
        DeferReason::MxInsecure | DeferReason::HostInsecure | DeferReason::NoSecureTlsa => {
            (ResultType::DaneRequired, "no DNSSEC-validated TLSA records")
        }
    }
}

/// A session that failed before mail could go: TLS problems only.
fn failed_result(e: &AttemptError) -> Option<(ResultType, String)> {
    match e {
        AttemptError::TlsRequired { .. } => Some((
            ResultType::StarttlsNotSupported,
            "STARTTLS not offered".into(),
        )),
        AttemptError::Dane { detail, .. } => Some((dane_failure(detail), detail.clone())),
        AttemptError::TlsaLookup { detail, .. } => {
            Some((ResultType::DnssecInvalid, detail.clone()))
        }
        AttemptError::Smtp(c) if matches!(**c, ClientError::Tls { .. }) => {
            Some((ResultType::ValidationFailure, c.to_string()))
        }
        _ => None,
    }
}

/// A DANE verdict (`AttemptError::Dane`'s detail, `dane::Verdict` /
/// `dane::Failure` as debug text) as its RFC 8460 result type.
pub fn dane_failure(detail: &str) -> ResultType {
    if detail.contains("NameMismatch") {
        ResultType::CertificateHostMismatch
    } else if detail.contains("TaChain") && detail.to_ascii_lowercase().contains("expired") {
        ResultType::CertificateExpired
    } else if detail.contains("TaChain") {
        ResultType::CertificateNotTrusted
    } else if detail.contains("NoMatch") || detail.contains("NoUsableTlsa") {
        // §4.3.2.1: none of the records in the RRset validated the server.
        ResultType::TlsaInvalid
    } else {
        ResultType::ValidationFailure
    }
}

/// An opened session: TLS up is a success; plaintext is a failure.
fn opened_result(s: &Session) -> Option<(ResultType, String)> {
    match &s.tls {
        TlsOutcome::Plaintext if s.fell_back => {
            Some((ResultType::ValidationFailure, "TLS handshake failed".into()))
        }
        TlsOutcome::Plaintext if !s.starttls_offered => Some((
            ResultType::StarttlsNotSupported,
            "STARTTLS not offered".into(),
        )),
        TlsOutcome::Plaintext => {
            Some((ResultType::StarttlsNotSupported, "STARTTLS refused".into()))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dane_verdicts_map_to_rfc_8460_result_types() {
        for (detail, want) in [
            ("Failed(NoMatch)", ResultType::TlsaInvalid),
            ("NoUsableTlsa", ResultType::TlsaInvalid),
            (
                "Failed(NameMismatch { record: \"2 0 1\", found: [], wanted: [] })",
                ResultType::CertificateHostMismatch,
            ),
            (
                "Failed(TaChain { record: \"2 0 1\", error: \"CertExpired\" })",
                ResultType::CertificateExpired,
            ),
            (
                "Failed(TaChain { record: \"2 0 1\", error: \"UnknownIssuer\" })",
                ResultType::CertificateNotTrusted,
            ),
            ("Failed(EmptyChain)", ResultType::ValidationFailure),
            ("handshake failure", ResultType::ValidationFailure),
        ] {
            assert_eq!(dane_failure(detail), want, "{detail}");
        }
    }

    #[test]
    fn deferred_hosts_map_to_dane_result_types() {
        assert_eq!(
            defer_result(&DeferReason::TlsaLookupFailed("x".into())).0,
            ResultType::DnssecInvalid
        );
        assert_eq!(
            defer_result(&DeferReason::NoUsableTlsa).0,
            ResultType::TlsaInvalid
        );
        assert_eq!(
            defer_result(&DeferReason::NoSecureTlsa).0,
            ResultType::DaneRequired
        );
        assert_eq!(
            defer_result(&DeferReason::HostInsecure).0,
            ResultType::DaneRequired
        );
    }

    #[test]
    fn connection_failures_are_not_tls_results() {
        let e = AttemptError::Connect {
            host: "h".into(),
            detail: "refused".into(),
        };
        assert_eq!(failed_result(&e), None);
        let e = AttemptError::TlsRequired { host: "h".into() };
        assert_eq!(
            failed_result(&e).unwrap().0,
            ResultType::StarttlsNotSupported
        );
    }
}
