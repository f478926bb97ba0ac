//! The per-host MTA-STS decision (pure): given the DANE decision for an MX
//! host and the recipient domain's policy in force, what MTA-STS adds.
//!
//! Precedence (RFC 8461 §2, SPEC "Delivery"): DANE first. A host with
//! usable secure TLSA is authenticated by DANE and MTA-STS is not consulted;
//! a DANE deferral (TLSA lookup failed, bogus) stays a deferral — MTA-STS
//! never turns a DANE failure into a success. `delivery.tls = "none"` is
//! the operator's explicit choice of plaintext and is left alone.

use crate::dane::Decision;

use super::policy::{Mode, Policy};

/// What MTA-STS does with one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostRule {
    /// No policy, `mode: none`, or DANE decides: the DANE decision stands.
    NotApplied,
    /// `enforce` and the host matches an `mx` pattern (§4.1): TLS with a
    /// certificate PKIX-valid for the host name (§4.2), else skip the host.
    Authenticate,
    /// `enforce` and the host matches no pattern: not a valid MX (§4.1,
    /// §5.1: "MUST NOT deliver" to it).
    Skip,
    /// `testing` (§5.2): deliver as without a policy; failures (an
    /// unmatched MX, a certificate not valid) are reported, not enforced.
    Testing { mx_matches: bool },
}

/// The rule for `mx_host` under `policy`, after DANE's `dane` decision.
pub fn host_rule(dane: &Decision, policy: Option<&Policy>, mx_host: &str) -> HostRule {
    let Some(policy) = policy else {
        return HostRule::NotApplied;
    };
    match dane {
        // RFC 8461 §2: DANE authenticates, or its failure defers; both stand.
        Decision::Authenticate(_) | Decision::Defer(_) => return HostRule::NotApplied,
        Decision::Plaintext | Decision::WebPki(_) => return HostRule::NotApplied,
        Decision::TlsRequired(_) | Decision::Opportunistic => {}
    }
    let matches = policy.mx_matches(mx_host);
    match policy.mode {
        Mode::None => HostRule::NotApplied,
        Mode::Testing => HostRule::Testing {
            mx_matches: matches,
        },
        Mode::Enforce if matches => HostRule::Authenticate,
        Mode::Enforce => HostRule::Skip,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::dane::{DaneTarget, DeferReason, MandatoryTls, TlsaRecord};
    use crate::sts::policy::MxPattern;

    fn policy(mode: Mode) -> Policy {
        Policy {
            mode,
            mx: vec![MxPattern::parse("*.mx.example.com").unwrap()],
            max_age: 86400,
        }
    }

    #[test]
    fn dane_decides_first_and_the_mode_decides_the_rest() {
        let dane = Decision::Authenticate(DaneTarget::new(
            "a.mx.example.com",
            "a.mx.example.com",
            vec![TlsaRecord {
                usage: 3,
                selector: 1,
                matching: 1,
                data: vec![1; 32],
            }],
        ));
        let defer = Decision::Defer(DeferReason::TlsaLookupFailed("servfail".into()));
        let opp = Decision::Opportunistic;
        let req = Decision::TlsRequired(MandatoryTls::EncryptLevel);
        let (inside, outside) = ("a.mx.example.com", "mx.elsewhere.net");
        let enforce = policy(Mode::Enforce);
        let testing = policy(Mode::Testing);
        let none = policy(Mode::None);
        use HostRule::*;
        for (d, p, host, want) in [
            (&opp, None, inside, NotApplied),
            (&dane, Some(&enforce), inside, NotApplied),
            (&dane, Some(&enforce), outside, NotApplied),
            (&defer, Some(&enforce), inside, NotApplied),
            (&Decision::Plaintext, Some(&enforce), inside, NotApplied),
            (&opp, Some(&enforce), inside, Authenticate),
            (&req, Some(&enforce), inside, Authenticate),
            (&opp, Some(&enforce), outside, Skip),
            (&opp, Some(&enforce), "b.c.mx.example.com", Skip),
            (&opp, Some(&testing), inside, Testing { mx_matches: true }),
            (&opp, Some(&testing), outside, Testing { mx_matches: false }),
            (&opp, Some(&none), inside, NotApplied),
            (&req, Some(&none), outside, NotApplied),
        ] {
            assert_eq!(host_rule(d, p, host), want, "{d:?} {p:?} {host}");
        }
    }
}
