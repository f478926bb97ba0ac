//! The bookkeeping around one host of an attempt: what refuses it before a
//! connection (an MX outside the MTA-STS policy, a DANE deferral), and what
//! each opened or failed session adds to the DANE and handshake metrics,
//! MTA-STS results and TLS-RPT counts. Kept apart from the connect loop in
//! `attempt` so that loop reads as what it does.

use std::net::IpAddr;

use tracing::info;

use super::super::decision::DomainSts;
use super::super::mta_sts;
use super::super::outcome::AttemptError;
use super::super::session::Session;
use super::super::tls_report::{session_result, Seen};
use super::Engine;
use crate::dane::{self, Decision};
use crate::delivery::routing::CandidateHost;
use crate::metrics::{DaneResult, TlsHandshake};
use crate::sts::{HostRule, SessionFailure};

/// One host as the attempt sees it: its TLS decision and MTA-STS rule.
pub(super) struct AtHost<'a> {
    pub host: &'a CandidateHost,
    /// The recipient domain under MX routing (`None`: a configured next hop).
    pub nexthop: Option<&'a str>,
    pub sts: Option<&'a DomainSts>,
    pub decision: &'a Decision,
    pub rule: HostRule,
}

impl Engine {
    /// Why `at` must not be connected to, if it must not: an MX host the
    /// `enforce` policy does not list (RFC 8461 §4.1), or a DANE deferral.
    pub(super) fn refused_before_connecting(&self, at: &AtHost<'_>) -> Option<AttemptError> {
        let host = at.host;
        if at.rule == HostRule::Skip {
            let domain = at.sts.map_or("", |s| s.active.domain.as_str());
            info!(mx = %host.name, %domain, "host skipped: not an MX host of the MTA-STS policy (RFC 8461 §4.1)");
            let failure = Some(SessionFailure::MxMismatch);
            mta_sts::host_result(self.options.sts.as_ref(), at.sts, host, None, failure);
            return Some(AttemptError::StsMxMismatch {
                host: host.name.clone(),
                domain: domain.to_string(),
            });
        }
        let Decision::Defer(reason) = at.decision else {
            return None;
        };
        self.report_tls(at, None, Seen::Skipped);
        info!(mx = %host.name, %reason, "host skipped");
        Some(match reason {
            dane::DeferReason::TlsaLookupFailed(detail) => AttemptError::TlsaLookup {
                host: host.name.clone(),
                detail: detail.clone(),
            },
            other => AttemptError::Dane {
                host: host.name.clone(),
                detail: other.to_string(),
            },
        })
    }

    /// A connection to `address` failed or was refused by the TLS policy.
    pub(super) fn open_failed(&self, at: &AtHost<'_>, address: IpAddr, e: &AttemptError) {
        self.report_tls(at, Some(address), Seen::Failed(e));
        if matches!(e, AttemptError::Dane { .. }) {
            self.metrics.dane_result(DaneResult::Mismatch);
        }
        if at.rule != HostRule::Authenticate {
            return;
        }
        let failure = match e {
            AttemptError::StsCertificate { failure, .. } => {
                SessionFailure::Certificate(failure.clone())
            }
            AttemptError::TlsRequired { .. } => SessionFailure::StartTlsNotSupported,
            _ => return,
        };
        let sts = self.options.sts.as_ref();
        mta_sts::host_result(sts, at.sts, at.host, Some(address), Some(failure));
    }

    /// A session to `address` is up (perhaps in plaintext).
    pub(super) fn opened(&self, at: &AtHost<'_>, address: IpAddr, session: &Session) {
        self.report_tls(at, Some(address), Seen::Opened(session));
        if session.tls.dane_match().is_some() {
            self.metrics.dane_result(DaneResult::Ok);
        }
        if at.rule != HostRule::NotApplied {
            let failure = mta_sts::testing_failure(at.rule, at.sts, at.host, &session.tls);
            let sts = self.options.sts.as_ref();
            mta_sts::host_result(sts, at.sts, at.host, Some(address), failure);
        }
        if let Some(info) = session.tls.info() {
            self.metrics.tls_handshake(if info.resumed {
                TlsHandshake::Resumed
            } else {
                TlsHandshake::Full
            });
        }
    }

    /// Counts one session for TLS-RPT, under MX routing only: with a
    /// configured next hop the recipient domain's policy was not in play.
    /// Under an MTA-STS policy the session is counted once, as `sts`
    /// (through the MTA-STS results), not also as `no-policy-found`.
    fn report_tls(&self, at: &AtHost<'_>, address: Option<IpAddr>, seen: Seen<'_>) {
        let (Some(recorder), Some(domain)) = (&self.tls_rpt, at.nexthop) else {
            return;
        };
        if at.rule != HostRule::NotApplied {
            return;
        }
        if let Some(result) = session_result(domain, at.host, address, at.decision, seen) {
            recorder.record(result);
        }
    }
}
