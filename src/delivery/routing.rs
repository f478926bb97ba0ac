//! Routing: a recipient domain → the ordered list of candidate SMTP hosts,
//! each with the DNSSEC status DANE needs (RFC 7672 §2.2.1–§2.2.2: the MX
//! RRset *and* the host's addresses must be secure before TLSA is looked up).
//!
//! The decisions are pure functions ([`match_route`], [`mx_targets`],
//! [`host_addresses`]) table-tested below; [`plan_route`] only strings them
//! together with DNS lookups.
//!
//! * `delivery.route` first (first match wins); a `next_hop` bypasses MX.
//! * RFC 5321 §5.1: MX hosts in preference order, random among equals;
//!   implicit MX (the domain itself) only when the domain has *no MX RRset*
//!   (NODATA); a CNAME at the domain is followed by the resolver and the
//!   canonical name is used.
//! * RFC 7505: a null MX (`MX 0 .`) is a permanent failure, `5.1.10`.
//! * A failed MX lookup (SERVFAIL, bogus, timeout) is temporary and never
//!   falls back to implicit MX (that fallback would let an attacker who
//!   breaks the MX lookup redirect mail).

use std::net::IpAddr;

use rand::seq::SliceRandom;
use rand::Rng;
use tracing::debug;

use crate::config::{DomainPattern, NextHopHost, Route, TlsLevel};
use crate::dns::{normalize_name, Answer, AnswerKind, DnsError, DnsLookup, RecordType, Security};

/// The SMTP port used for MX and implicit-MX hosts.
pub const SMTP_PORT: u16 = 25;

/// Where the candidate list came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteSource {
    Mx,
    /// RFC 5321 §5.1: no MX RRset, the domain itself is the host.
    ImplicitMx,
    /// `delivery.route.next_hop`: no MX lookup at all.
    NextHop,
}

/// One host to try, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CandidateHost {
    /// The name as found in the MX record (or the domain, or the next hop).
    pub name: String,
    /// `name` after following CNAMEs in its address lookup.
    pub canonical_name: String,
    pub preference: u16,
    pub port: u16,
    /// Security of the MX RRset (or of the MX denial for an implicit MX).
    /// A configured next-hop *name* counts as secure: it came from local
    /// configuration, not DNS (as in Postfix).
    pub mx_security: Security,
    /// IPv4 first, then IPv6, each in the resolver's order.
    pub addresses: Vec<IpAddr>,
    /// Security of the A/AAAA answers that produced `addresses` (a literal
    /// next-hop IP is insecure: there is no DNS to tie TLSA to).
    pub address_security: Security,
}

impl CandidateHost {
    /// Whether a TLSA lookup is allowed for this host (RFC 7672 §2.2.2).
    pub fn dnssec_secure(&self) -> bool {
        self.mx_security == Security::Secure && self.address_security == Security::Secure
    }
}

/// The result of routing one domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePlan {
    pub domain: String,
    pub source: RouteSource,
    /// The TLS level of the matching `delivery.route`, if any.
    pub tls: Option<TlsLevel>,
    /// Never empty.
    pub hosts: Vec<CandidateHost>,
    /// Hosts left out because their address lookup failed temporarily.
    pub failed_hosts: Vec<(String, DnsError)>,
}

/// Why a domain has no route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoutingError {
    #[error("{domain} does not accept mail (null MX, RFC 7505)")]
    NullMx { domain: String },
    #[error("{domain}: domain does not exist")]
    NoSuchDomain { domain: String },
    #[error("{domain}: no MX host has an address")]
    NoAddresses { domain: String },
    #[error("{domain}: DNS lookup failed: {source}")]
    Dns { domain: String, source: DnsError },
}

impl RoutingError {
    /// Permanent errors bounce; the rest defer (README.md: lookup errors always defer).
    pub fn is_permanent(&self) -> bool {
        match self {
            RoutingError::NullMx { .. }
            | RoutingError::NoSuchDomain { .. }
            | RoutingError::NoAddresses { .. } => true,
            RoutingError::Dns { source, .. } => !source.is_temporary(),
        }
    }

    /// RFC 3463 enhanced status code for the DSN / log.
    pub fn enhanced_status(&self) -> &'static str {
        match self {
            // RFC 7505 §4.2.
            RoutingError::NullMx { .. } => "5.1.10",
            // RFC 3463: X.1.2 bad destination system address.
            RoutingError::NoSuchDomain { .. } => "5.1.2",
            // RFC 3463: X.4.4 unable to route.
            RoutingError::NoAddresses { .. } => "5.4.4",
            RoutingError::Dns { source, .. } if !source.is_temporary() => "5.1.2",
            RoutingError::Dns { .. } => "4.4.3",
        }
    }
}

/// The first `delivery.route` whose pattern matches `domain` (already
/// normalised). `*.example.com` matches subdomains only, not `example.com`.
pub fn match_route<'r>(routes: &'r [Route], domain: &str) -> Option<&'r Route> {
    routes.iter().find(|r| match &r.domain {
        DomainPattern::Exact(d) => d == domain,
        DomainPattern::Subdomains(suffix) => domain
            .strip_suffix(suffix.as_str())
            .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
    })
}

/// The MX decision (RFC 5321 §5.1, RFC 7505) as a pure function: the host
/// names to resolve, in order, with the MX RRset's security.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxTargets {
    pub source: RouteSource,
    pub hosts: Vec<(String, u16)>,
    pub security: Security,
}

pub fn mx_targets(
    domain: &str,
    mx: &Result<Answer, DnsError>,
    rng: &mut impl Rng,
) -> Result<MxTargets, RoutingError> {
    let answer = match mx {
        Ok(a) => a,
        // Never implicit MX on an error: only a definite NODATA allows it.
        Err(e) => {
            return Err(RoutingError::Dns {
                domain: domain.to_string(),
                source: e.clone(),
            })
        }
    };
    match &answer.kind {
        AnswerKind::NxDomain => Err(RoutingError::NoSuchDomain {
            domain: domain.to_string(),
        }),
        AnswerKind::NoData => Ok(MxTargets {
            source: RouteSource::ImplicitMx,
            hosts: vec![(answer.canonical_name.clone(), 0)],
            security: answer.security,
        }),
        AnswerKind::Records(_) => {
            let all: Vec<_> = answer.mx().collect();
            // RFC 7505 §3: a lone MX with exchange "." means "no mail".
            if all.iter().all(|m| m.exchange.is_empty()) {
                return Err(RoutingError::NullMx {
                    domain: domain.to_string(),
                });
            }
            let mut hosts: Vec<(String, u16)> = all
                .iter()
                .filter(|m| !m.exchange.is_empty())
                .map(|m| (m.exchange.clone(), m.preference))
                .collect();
            hosts.dedup();
            // Shuffle, then a stable sort: random order among equal preferences.
            hosts.shuffle(rng);
            hosts.sort_by_key(|(_, pref)| *pref);
            Ok(MxTargets {
                source: RouteSource::Mx,
                hosts,
                security: answer.security,
            })
        }
    }
}

/// A host's addresses from its A and AAAA answers, or `Err` when neither
/// gave any and at least one failed. A family that failed is skipped: the
/// other family's status stands on its own, so a broken AAAA lookup cannot
/// make secure A records look insecure (nor the reverse).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAddresses {
    pub canonical_name: String,
    pub addresses: Vec<IpAddr>,
    pub security: Security,
}

pub fn host_addresses(
    host: &str,
    a: &Result<Answer, DnsError>,
    aaaa: &Result<Answer, DnsError>,
) -> Result<HostAddresses, DnsError> {
    let answers: Vec<&Answer> = [a, aaaa]
        .into_iter()
        .filter_map(|r| r.as_ref().ok())
        .collect();
    let addresses: Vec<IpAddr> = answers.iter().flat_map(|a| a.addresses()).collect();
    if addresses.is_empty() {
        if let Some(Err(e)) = [a, aaaa].into_iter().find(|r| r.is_err()) {
            return Err(e.clone());
        }
    }
    let with_records: Vec<&&Answer> = answers.iter().filter(|a| !a.records().is_empty()).collect();
    let security = with_records
        .iter()
        .fold(Security::Secure, |s, a| s.and(a.security));
    let canonical_name = with_records
        .first()
        .map_or_else(|| normalize_name(host), |a| a.canonical_name.clone());
    Ok(HostAddresses {
        canonical_name,
        addresses,
        security: if with_records.is_empty() {
            Security::Insecure
        } else {
            security
        },
    })
}

async fn resolve_host(dns: &dyn DnsLookup, host: &str) -> Result<HostAddresses, DnsError> {
    let (a, aaaa) = tokio::join!(
        dns.lookup(host, RecordType::A),
        dns.lookup(host, RecordType::Aaaa)
    );
    host_addresses(host, &a, &aaaa)
}

/// Routes `domain`: route override, else MX; then every host's addresses.
pub async fn plan_route(
    dns: &dyn DnsLookup,
    domain: &str,
    routes: &[Route],
) -> Result<RoutePlan, RoutingError> {
    plan_route_with_port(dns, domain, routes, SMTP_PORT).await
}

/// [`plan_route`] with another port for MX and implicit-MX hosts (end-to-end
/// tests run their MX on an ephemeral port; a next hop keeps its own port).
pub async fn plan_route_with_port(
    dns: &dyn DnsLookup,
    domain: &str,
    routes: &[Route],
    mx_port: u16,
) -> Result<RoutePlan, RoutingError> {
    let domain = normalize_name(domain);
    let route = match_route(routes, &domain);
    let tls = route.and_then(|r| r.tls);
    let (targets, port) = match route.and_then(|r| r.next_hop.as_ref()) {
        Some(next_hop) => match &next_hop.host {
            NextHopHost::Ip(ip) => {
                let host = CandidateHost {
                    name: ip.to_string(),
                    canonical_name: ip.to_string(),
                    preference: 0,
                    port: next_hop.port,
                    mx_security: Security::Secure,
                    addresses: vec![*ip],
                    address_security: Security::Insecure,
                };
                return Ok(plan(
                    domain,
                    RouteSource::NextHop,
                    tls,
                    vec![host],
                    Vec::new(),
                ));
            }
            NextHopHost::Name(name) => (
                MxTargets {
                    source: RouteSource::NextHop,
                    hosts: vec![(normalize_name(name), 0)],
                    security: Security::Secure,
                },
                next_hop.port,
            ),
        },
        None => {
            let mx = dns.lookup(&domain, RecordType::Mx).await;
            let targets = mx_targets(&domain, &mx, &mut rand::rng())?;
            (targets, mx_port)
        }
    };
    let mut hosts = Vec::new();
    let mut failed = Vec::new();
    for (name, preference) in targets.hosts {
        match resolve_host(dns, &name).await {
            Ok(found) if found.addresses.is_empty() => {
                debug!(%domain, host = %name, "host has no addresses; skipped");
            }
            Ok(found) => hosts.push(CandidateHost {
                name,
                canonical_name: found.canonical_name,
                preference,
                port,
                mx_security: targets.security,
                addresses: found.addresses,
                address_security: found.security,
            }),
            Err(e) => failed.push((name, e)),
        }
    }
    if hosts.is_empty() {
        return Err(match failed.into_iter().next() {
            Some((_, source)) => RoutingError::Dns { domain, source },
            None => RoutingError::NoAddresses { domain },
        });
    }
    Ok(plan(domain, targets.source, tls, hosts, failed))
}

fn plan(
    domain: String,
    source: RouteSource,
    tls: Option<TlsLevel>,
    hosts: Vec<CandidateHost>,
    failed_hosts: Vec<(String, DnsError)>,
) -> RoutePlan {
    for h in &hosts {
        debug!(
            %domain, host = %h.name, preference = h.preference, mx_security = %h.mx_security,
            address_security = %h.address_security, addresses = ?h.addresses, "candidate host"
        );
    }
    RoutePlan {
        domain,
        source,
        tls,
        hosts,
        failed_hosts,
    }
}

#[cfg(test)]
#[path = "routing_tests.rs"]
mod tests;
