//! Destinations, KumoMTA's "site": recipient domains whose mail goes to the
//! same MX host set share one mailbox, one connection limit and their
//! connections (SPEC "Delivery"; README "Performance", workload 6). A
//! provider hosting 500 customer domains is one destination, not 500.
//!
//! The destination of a domain is the *set* of (preference, MX host) after
//! routing, sorted, so that the RFC 5321 §5.1 shuffle among equal
//! preferences, record order and case make no difference; a route's
//! `next_hop` is its `host:port`. What stays per domain is the TLS policy
//! ([`DomainPolicy`]: the level and the MX RRset's DNSSEC status, RFC 7672
//! §2.2.1) and each domain's own limit (the destination takes the smallest).
//!
//! [`site_of`] is the pure decision; [`resolve`] adds the MX lookup (cached
//! by the resolver, and asked again by the attempt, which then hits the
//! cache). A domain whose MX lookup fails (SERVFAIL, bogus, timeout), has no
//! domain or a null MX is a destination of its own ([`Site::Domain`]): its
//! attempt routes again and defers or bounces exactly as before, and no
//! other destination waits for it.

use std::fmt;

use rand::Rng;

use crate::config::{NextHopHost, Route, TlsLevel};
use crate::dns::{normalize_name, Answer, DnsError, DnsLookup, RecordType, Security};

use super::attempt::EngineOptions;
use super::routing::{match_route, mx_targets};

/// Where a domain's mail goes, as far as connections are concerned.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Site {
    /// MX hosts (or the implicit MX, RFC 5321 §5.1) as sorted (preference,
    /// lower-case name without the trailing dot), on `port`.
    Hosts {
        hosts: Vec<(u16, String)>,
        port: u16,
    },
    /// `delivery.route.next_hop`: `host:port` or `[ip]:port`.
    NextHop(String),
    /// Routing failed: the domain alone, routed again by its attempt.
    Domain(String),
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Site::Hosts { hosts, port } => {
                for (i, (pref, name)) in hosts.iter().enumerate() {
                    let sep = if i == 0 { "" } else { "," };
                    write!(f, "{sep}{pref}:{name}")?;
                }
                write!(f, " port {port}")
            }
            Site::NextHop(hop) => write!(f, "next hop {hop}"),
            Site::Domain(d) => write!(f, "domain {d}"),
        }
    }
}

/// The parts of a domain's TLS policy known before any host is chosen. Mail
/// of one destination is handed out in takes of one policy, so a session is
/// rarely opened under one policy and then asked to carry another; whether
/// it may is decided per host by `reuse::ReuseKey`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DomainPolicy {
    /// `delivery.tls`, or the matching route's `tls`.
    pub level: TlsLevel,
    /// Security of the domain's MX RRset (RFC 7672 §2.2.1); a configured
    /// next hop counts as secure, as in `routing::plan_route`.
    pub mx_security: Security,
}

/// One recipient domain, grouped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub site: Site,
    pub policy: DomainPolicy,
    /// The domain's connection limit: the route's `max_connections`, else
    /// `delivery.per_destination`.
    pub limit: usize,
    /// The route's `message_rate` and `connection_rate` (`shaping`).
    pub message_rate: Option<crate::config::Rate>,
    pub connection_rate: Option<crate::config::Rate>,
}

/// The destination of `domain` (normalised) from its route and, without a
/// `next_hop`, its MX answer; and the MX RRset's security.
pub fn site_of(
    domain: &str,
    route: Option<&Route>,
    mx: Option<&Result<Answer, DnsError>>,
    mx_port: u16,
    rng: &mut impl Rng,
) -> (Site, Security) {
    if let Some(hop) = route.and_then(|r| r.next_hop.as_ref()) {
        let host = match &hop.host {
            NextHopHost::Ip(ip) => format!("[{ip}]"),
            NextHopHost::Name(name) => normalize_name(name),
        };
        return (
            Site::NextHop(format!("{host}:{}", hop.port)),
            Security::Secure,
        );
    }
    let alone = || (Site::Domain(domain.to_string()), Security::Insecure);
    let Some(mx) = mx else {
        return alone();
    };
    match mx_targets(domain, mx, rng) {
        Ok(targets) => {
            let mut hosts: Vec<(u16, String)> = targets
                .hosts
                .into_iter()
                .map(|(name, pref)| (pref, normalize_name(&name)))
                .collect();
            hosts.sort();
            hosts.dedup();
            let site = Site::Hosts {
                hosts,
                port: mx_port,
            };
            (site, targets.security)
        }
        Err(_) => alone(),
    }
}

/// Groups `domain`: its route, its MX lookup, its policy and limit.
pub async fn resolve(
    dns: &dyn DnsLookup,
    options: &EngineOptions,
    per_destination: usize,
    domain: &str,
) -> Destination {
    let domain = normalize_name(domain);
    let route = match_route(&options.routes, &domain);
    let mx = match route.and_then(|r| r.next_hop.as_ref()) {
        Some(_) => None,
        None => Some(dns.lookup(&domain, RecordType::Mx).await),
    };
    let (site, mx_security) = site_of(
        &domain,
        route,
        mx.as_ref(),
        options.mx_port,
        &mut rand::rng(),
    );
    Destination {
        site,
        policy: DomainPolicy {
            level: route.and_then(|r| r.tls).unwrap_or(options.tls),
            mx_security,
        },
        limit: route
            .and_then(|r| r.max_connections)
            .unwrap_or(per_destination)
            .max(1),
        message_rate: route.and_then(|r| r.message_rate),
        connection_rate: route.and_then(|r| r.connection_rate),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "site_tests.rs"]
mod tests;
