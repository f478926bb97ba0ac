//! MTA-STS (RFC 8461) in a delivery attempt: the policy in force for the
//! recipient domain, the re-check before mail waits on an `enforce` policy
//! (§5.1), what `testing` records about a session that went ahead (§5.2),
//! and the one place session results leave for TLS-RPT (RFC 8460).

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use tracing::info;

use crate::sts::{CertFailure, HostRule, SessionFailure, SessionResult, Sts};

use super::decision::DomainSts;
use super::outcome::AttemptError;
use super::routing::CandidateHost;
use super::session::TlsOutcome;

/// A policy fetched this recently is not fetched again to re-check it
/// before mail waits on it (RFC 8461 §5.1): it is the policy in force.
pub const STS_RECHECK_AFTER: Duration = Duration::from_secs(300);

/// The MTA-STS policy in force for recipient domain `domain` (MX routing
/// only: a configured next hop is the operator's choice); `force`: fetch
/// again whatever the cache says (the RFC 8461 §5.1 re-check). A failed
/// discovery or fetch with no policy left is recorded as a session result.
pub async fn domain_sts(sts: Option<&Sts>, domain: &str, force: bool) -> Option<DomainSts> {
    let sts = sts?;
    let lookup = sts.policy_for(domain, SystemTime::now(), force).await;
    if let (None, Some(failure)) = (&lookup.active, &lookup.failure) {
        if !matches!(failure, crate::sts::FetchError::Dns { .. }) {
            record(
                Some(sts),
                SessionResult {
                    policy_domain: domain.to_string(),
                    policy: None,
                    mx_host: String::new(),
                    receiving_ip: None,
                    failure: Some(SessionFailure::Fetch(failure.clone())),
                },
            );
        }
    }
    Some(DomainSts {
        active: lookup.active?,
        roots: sts.roots().clone(),
    })
}

/// Whether the policy used is old enough to be fetched again before mail
/// waits on it, and mail does wait on it.
pub fn recheck_wanted(sts: Option<&DomainSts>, last: Option<&AttemptError>) -> bool {
    let stale = sts.is_some_and(|s| {
        crate::sts::unix(SystemTime::now()) >= s.active.fetched_at + STS_RECHECK_AFTER.as_secs()
    });
    stale && stopped_by_sts(last)
}

/// [`record`] for `host` under the domain's policy.
pub fn host_result(
    service: Option<&Sts>,
    sts: Option<&DomainSts>,
    host: &CandidateHost,
    address: Option<IpAddr>,
    failure: Option<SessionFailure>,
) {
    let Some(sts) = sts else { return };
    record(
        service,
        SessionResult {
            policy_domain: sts.active.domain.clone(),
            policy: Some(sts.active.clone()),
            mx_host: host.name.clone(),
            receiving_ip: address,
            failure,
        },
    );
}

/// One session's MTA-STS result (RFC 8460 material): logged, and handed
/// to the MTA-STS sink (the TLS-RPT recorder) from this one place.
pub fn record(service: Option<&Sts>, r: SessionResult) {
    info!(target: "danerelay::sts",
        domain = %r.policy_domain,
        mx = %r.mx_host,
        mode = r.mode().map_or("none", |m| m.as_str()),
        result = r.result_type().unwrap_or("success"),
        "MTA-STS session result");
    if let Some(sts) = service {
        sts.record(&r);
    }
}

/// Whether the last error is MTA-STS's doing (a host not in the policy,
/// or a certificate not valid for it).
fn stopped_by_sts(last: Option<&AttemptError>) -> bool {
    matches!(
        last,
        Some(AttemptError::StsMxMismatch { .. } | AttemptError::StsCertificate { .. })
    )
}

/// Under `testing` (RFC 8461 §5.2) what `enforce` would have refused about
/// a session that went ahead: an MX outside the policy, no TLS, or a
/// certificate not PKIX-valid for the MX host name. `None` otherwise.
pub fn testing_failure(
    rule: HostRule,
    sts: Option<&DomainSts>,
    host: &CandidateHost,
    tls: &TlsOutcome,
) -> Option<SessionFailure> {
    let HostRule::Testing { mx_matches } = rule else {
        return None;
    };
    if !mx_matches {
        return Some(SessionFailure::MxMismatch);
    }
    let info = match tls {
        TlsOutcome::Plaintext => return Some(SessionFailure::StartTlsNotSupported),
        TlsOutcome::Unauthenticated(info) => info,
        _ => return None,
    };
    let roots = sts?.roots.clone();
    let verifier = match crate::sts::pkix::verifier(roots) {
        Ok(v) => v,
        Err(e) => {
            return Some(SessionFailure::Certificate(CertFailure::Other(
                e.to_string(),
            )))
        }
    };
    crate::sts::pkix::check_chain(
        &verifier,
        &host.name,
        &info.peer_certificates,
        rustls_pki_types::UnixTime::now(),
    )
    .err()
    .map(SessionFailure::Certificate)
}
