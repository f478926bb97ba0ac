//! One session's MTA-STS result, for TLS reporting (RFC 8460): the policy
//! domain and policy in force, the MX host, and the failure if there was
//! one, with its RFC 8460 §4.3.2 result type. Delivery makes one per MX
//! host it dealt with under a policy; the TLS-RPT recorder counts them.

use std::net::IpAddr;

use super::fetch::FetchError;
use super::pkix::CertFailure;
use super::{Active, Mode};

/// Why a session under a policy failed (or, under `testing`, would have).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionFailure {
    /// Discovery or fetch failed (no policy in force because of it).
    Fetch(FetchError),
    /// The MX host matches no `mx` pattern (RFC 8461 §4.1).
    MxMismatch,
    /// No STARTTLS, or it was refused.
    StartTlsNotSupported,
    /// The certificate is not PKIX-valid for the MX host name (§4.2).
    Certificate(CertFailure),
}

impl SessionFailure {
    /// The RFC 8460 §4.3.2 `result-type`.
    pub fn result_type(&self) -> &'static str {
        match self {
            SessionFailure::Fetch(e) => e.result_type(),
            // RFC 8460 has no type of its own for an MX outside the policy.
            SessionFailure::MxMismatch => "validation-failure",
            SessionFailure::StartTlsNotSupported => "starttls-not-supported",
            SessionFailure::Certificate(c) => c.result_type(),
        }
    }
}

/// One session's result under MTA-STS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionResult {
    /// The recipient domain whose policy applied (`policy-domain`).
    pub policy_domain: String,
    /// The policy in force (`None`: it could not be fetched, see `failure`).
    pub policy: Option<Active>,
    /// `receiving-mx-hostname`.
    pub mx_host: String,
    /// `receiving-ip`, when a connection was made.
    pub receiving_ip: Option<IpAddr>,
    pub failure: Option<SessionFailure>,
}

impl SessionResult {
    /// The RFC 8460 `result-type` of the failure; `None` for a success.
    pub fn result_type(&self) -> Option<&'static str> {
        self.failure.as_ref().map(SessionFailure::result_type)
    }

    /// The `policy-string` lines (RFC 8460 §4.3): the policy file's lines.
    pub fn policy_strings(&self) -> Vec<String> {
        self.policy
            .as_ref()
            .map(Active::policy_strings)
            .unwrap_or_default()
    }

    /// The policy's mode, when one was in force.
    pub fn mode(&self) -> Option<Mode> {
        self.policy.as_ref().map(|a| a.policy.mode)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::sts::policy::parse_policy;

    #[test]
    fn result_types_and_policy_strings() {
        let text = "version: STSv1\r\nmode: testing\r\nmx: mx.example.com\r\nmax_age: 86400\r\n";
        let active = Active {
            domain: "example.com".into(),
            id: "1".into(),
            policy: parse_policy(text).unwrap(),
            text: text.into(),
            fetched_at: 0,
        };
        let mut r = SessionResult {
            policy_domain: "example.com".into(),
            policy: Some(active),
            mx_host: "mx.example.com".into(),
            receiving_ip: None,
            failure: None,
        };
        assert_eq!(r.result_type(), None);
        assert_eq!(r.mode(), Some(Mode::Testing));
        assert_eq!(
            r.policy_strings(),
            [
                "version: STSv1",
                "mode: testing",
                "mx: mx.example.com",
                "max_age: 86400"
            ]
        );
        for (f, want) in [
            (SessionFailure::MxMismatch, "validation-failure"),
            (
                SessionFailure::StartTlsNotSupported,
                "starttls-not-supported",
            ),
            (
                SessionFailure::Certificate(CertFailure::HostMismatch),
                "certificate-host-mismatch",
            ),
            (
                SessionFailure::Certificate(CertFailure::Expired),
                "certificate-expired",
            ),
            (
                SessionFailure::Fetch(FetchError::TooLarge),
                "sts-policy-fetch-error",
            ),
        ] {
            r.failure = Some(f);
            assert_eq!(r.result_type(), Some(want));
        }
    }
}
