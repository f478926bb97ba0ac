//! When a session opened for one recipient domain may carry mail for
//! another domain of the same destination (SPEC "Delivery": "a connection is
//! reused only for a message whose TLS policy is identical").
//!
//! The [`ReuseKey`] of a session is taken from the decision that opened it;
//! the key of another domain is the decision that domain would get for the
//! very same host — its own TLS level and MX RRset security, the host's
//! address security and TLSA RRset (looked up again, cached) — so a changed
//! TLSA RRset, a domain whose MX RRset is insecure, or a route with another
//! `tls` all make a different key and a new connection. Postfix keys its
//! connection cache by destination and TLS policy alike
//! (`smtp_tls_connection_reuse`, TLS_SESS_STATE "policy" fingerprint).

use rustls_pki_types::ServerName;

use crate::config::TlsLevel;
use crate::dane::{DanePolicy, Decision, PolicyKey};
use crate::dns::{DnsLookup, Security};

use super::decision::{host_tls, DomainSts};
use super::routing::CandidateHost;
use super::site::DomainPolicy;
use crate::sts::{HostRule, Mode};

/// Everything the TLS of a message on a connection to one host depends on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReuseKey {
    /// `delivery.tls` or the route's `tls`.
    level: TlsLevel,
    /// The recipient domain's MX RRset (RFC 7672 §2.2.1).
    mx_security: Security,
    /// The decision's kind, the SHA-256 of the usable TLSA RRset and of the
    /// reference identifiers (RFC 7672 §3.2.3), and the SNI: the same key
    /// the TLS session cache uses (`dane::resume`). `None`: plaintext.
    tls: Option<PolicyKey>,
    /// The host and port the session is connected to.
    host: (String, u16),
    /// The domain's MTA-STS policy mode and id (RFC 8461 §3.2), `None`
    /// without one: a domain under an `enforce` policy never rides a session
    /// opened for a domain without one, nor under another policy version.
    sts: Option<(Mode, String)>,
}

impl ReuseKey {
    /// The key of a session to `host` opened under `decision`. `None` when
    /// the decision opens no session (defer) or the name cannot be an SNI:
    /// such a session is never shared.
    pub fn new(level: TlsLevel, host: &CandidateHost, decision: &Decision) -> Option<ReuseKey> {
        let tls = match decision {
            Decision::Defer(_) => return None,
            Decision::Plaintext => None,
            _ => {
                let name = ServerName::try_from(host.name.as_str()).ok()?;
                Some(PolicyKey::new(decision, &name)?)
            }
        };
        Some(ReuseKey {
            level,
            mx_security: host.mx_security,
            tls,
            host: (host.name.to_ascii_lowercase(), host.port),
            sts: None,
        })
    }

    /// The key under the domain's MTA-STS policy, when it has one.
    pub fn with_sts(mut self, sts: Option<&DomainSts>) -> ReuseKey {
        self.sts = sts.map(DomainSts::reuse_tag);
        self
    }
}

/// The key a domain with `policy` would have on a session to `host` (the
/// session's host as routed for the domain that opened it; the MX RRset
/// security is this domain's). `dane` is the domain's DANE policy and
/// `nexthop` its reference identifier (the domain itself under an MX route,
/// RFC 7672 §3.2.2). `None`: not known, do not share.
pub async fn key_for(
    dns: &dyn DnsLookup,
    policy: DomainPolicy,
    route: (DanePolicy, Option<&str>),
    host: &CandidateHost,
) -> Option<ReuseKey> {
    key_for_sts(dns, policy, route, host, None).await
}

/// [`key_for`] for a domain with the MTA-STS policy `sts` (decided by
/// [`host_tls`], so an `enforce` domain keys as `WebPki` and a host its
/// policy does not list is never shared).
pub async fn key_for_sts(
    dns: &dyn DnsLookup,
    policy: DomainPolicy,
    (dane, nexthop): (DanePolicy, Option<&str>),
    host: &CandidateHost,
    sts: Option<&DomainSts>,
) -> Option<ReuseKey> {
    let needs_dnssec = matches!(policy.level, TlsLevel::Dane | TlsLevel::DaneOnly);
    // As the attempt: no DNSSEC verdict yet means no DANE decision at all.
    if needs_dnssec && !dns.dnssec_ready().await {
        return None;
    }
    let host = CandidateHost {
        mx_security: policy.mx_security,
        ..host.clone()
    };
    let tls = host_tls(dns, dane, nexthop, &host, sts).await;
    if tls.rule == HostRule::Skip {
        return None;
    }
    Some(ReuseKey::new(policy.level, &host, &tls.decision)?.with_sts(sts))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "reuse_tests.rs"]
mod tests;
