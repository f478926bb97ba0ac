//! `danerelay tls-check DOMAIN`: what a delivery to DOMAIN would do, on the
//! very code a delivery runs (`plan_route`, `attempt::host_decision`,
//! `session::open`), without sending mail: per candidate host the DNSSEC
//! status of the MX and address records, the addresses, the TLSA records
//! and their usability, whether STARTTLS is offered, the negotiated TLS
//! version and cipher, and the verdict — `dane-verified`, `dane-trusted`,
//! `tls-unauthenticated`, `plaintext` or `defer: reason`. Each host gets a
//! connection (first address that answers), STARTTLS per the policy, then
//! QUIT: never MAIL. Printing the report and the exit code are the front
//! end's, in `crate::cli::tls_check`.

use serde::Serialize;

use crate::dane::{usable_records, Decision};
use crate::delivery::attempt::EngineOptions;
use crate::delivery::decision::{host_decision, nexthop_domain, routing_error};
use crate::delivery::outcome::{from_error, AttemptError, Outcome};
use crate::delivery::routing::{plan_route_with_port, CandidateHost, RouteSource};
use crate::dns::{DnsError, DnsLookup};

use super::session::{self, Peer};

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub domain: String,
    /// `mx`, `implicit-mx`, `next-hop`; absent when routing failed.
    pub route: Option<&'static str>,
    /// The TLS level in force (`delivery.tls` or the route's), as configured
    /// (`dane-only`).
    pub level: String,
    /// Why there is no host at all (null MX, DNS failure…), as a delivery would say it.
    pub error: Option<String>,
    pub hosts: Vec<HostReport>,
}

/// One candidate host.
#[derive(Debug, Clone, Serialize)]
pub struct HostReport {
    pub name: String,
    pub preference: u16,
    pub port: u16,
    pub mx_dnssec: String,
    pub address_dnssec: String,
    pub addresses: Vec<String>,
    /// `secure`, `insecure`, `not looked up`, or `error: …`.
    pub tlsa_lookup: String,
    pub tlsa: Vec<TlsaReport>,
    /// The policy decision, e.g. `authenticate`, `tls-required`, `opportunistic`.
    pub decision: String,
    /// The address the check connected to.
    pub connected: Option<String>,
    pub starttls_offered: Option<bool>,
    pub tls_version: Option<String>,
    pub tls_cipher: Option<String>,
    /// `3 1 1, depth 0` when DANE authenticated the server.
    pub dane_match: Option<String>,
    pub verdict: String,
}

/// One TLSA record and whether a client uses it.
#[derive(Debug, Clone, Serialize)]
pub struct TlsaReport {
    pub record: String,
    pub usable: bool,
    pub note: Option<String>,
}

impl Report {
    /// True when at least one host would take mail now.
    pub fn deliverable(&self) -> bool {
        self.hosts.iter().any(|h| !h.verdict.starts_with("defer"))
    }
}

fn decision_word(d: &Decision) -> String {
    match d {
        Decision::Authenticate(_) => "authenticate (DANE)".into(),
        Decision::TlsRequired(m) => format!("tls-required ({m:?})"),
        Decision::Opportunistic => "opportunistic".into(),
        Decision::WebPki(t) => format!("authenticate (MTA-STS enforce, PKIX for {})", t.name),
        Decision::Plaintext => "plaintext".into(),
        Decision::Defer(r) => format!("defer: {r}"),
    }
}

fn defer_text(e: &AttemptError) -> String {
    match from_error(e) {
        Outcome::Deferred(r) | Outcome::Bounced(r) => format!("defer: {}", r.reply.one_line()),
        Outcome::Delivered(r) => r.one_line(),
    }
}

/// Runs the check.
pub async fn check(dns: &dyn DnsLookup, options: &EngineOptions, domain: &str) -> Report {
    let mut report = Report {
        domain: domain.to_string(),
        route: None,
        level: options.tls.to_string(),
        error: None,
        hosts: Vec::new(),
    };
    let plan = match plan_route_with_port(dns, domain, &options.routes, options.mx_port).await {
        Ok(p) => p,
        Err(e) => {
            report.error = Some(match from_error(&routing_error(e)) {
                Outcome::Bounced(r) => format!("bounce: {}", r.reply.one_line()),
                Outcome::Deferred(r) => format!("defer: {}", r.reply.one_line()),
                Outcome::Delivered(r) => r.one_line(),
            });
            return report;
        }
    };
    report.route = Some(match plan.source {
        RouteSource::Mx => "mx",
        RouteSource::ImplicitMx => "implicit-mx",
        RouteSource::NextHop => "next-hop",
    });
    let policy = options.policy(plan.tls);
    report.level = policy.level.to_string();
    let nexthop = nexthop_domain(&plan);
    for host in plan.hosts.iter().take(options.max_hosts) {
        let (decision, looked) = host_decision(dns, policy, nexthop, host).await;
        let mut h = host_report(host, &decision, looked.as_ref());
        if let Decision::Defer(r) = &decision {
            h.verdict = format!("defer: {r}");
        } else {
            probe(&mut h, host, &decision, options).await;
        }
        report.hosts.push(h);
    }
    report
}

/// What DNS and the decision say about `host`, before connecting.
fn host_report(
    host: &CandidateHost,
    decision: &Decision,
    looked: Option<&Result<crate::dns::TlsaLookup, DnsError>>,
) -> HostReport {
    let (tlsa_lookup, tlsa) = match looked {
        None => ("not looked up".to_string(), Vec::new()),
        Some(Err(e)) => (format!("error: {e}"), Vec::new()),
        Some(Ok(l)) => {
            let usable = usable_records(&l.records);
            let rows = l
                .records
                .iter()
                .map(|r| TlsaReport {
                    record: r.to_string(),
                    usable: usable.contains(r),
                    note: match r.usability() {
                        Err(why) => Some(why.to_string()),
                        Ok(()) if !usable.contains(r) => {
                            Some("superseded by a stronger digest".into())
                        }
                        Ok(()) => None,
                    },
                })
                .collect();
            (format!("{} at {}", l.security, l.base_domain), rows)
        }
    };
    HostReport {
        name: host.name.clone(),
        preference: host.preference,
        port: host.port,
        mx_dnssec: host.mx_security.to_string(),
        address_dnssec: host.address_security.to_string(),
        addresses: host.addresses.iter().map(ToString::to_string).collect(),
        tlsa_lookup,
        tlsa,
        decision: decision_word(decision),
        connected: None,
        starttls_offered: None,
        tls_version: None,
        tls_cipher: None,
        dane_match: None,
        verdict: String::new(),
    }
}

/// Connects to `host`'s addresses in turn (the next only when one is
/// unreachable) and records what the session would be.
async fn probe(
    h: &mut HostReport,
    host: &CandidateHost,
    decision: &Decision,
    options: &EngineOptions,
) {
    h.verdict = "defer: no address answered".into();
    for address in &host.addresses {
        let peer = Peer {
            host: &host.name,
            address: *address,
            port: host.port,
        };
        match session::open(&peer, decision, &options.session).await {
            Ok(s) => {
                h.connected = Some(peer.relay());
                h.starttls_offered = Some(s.starttls_offered);
                if let Some(i) = s.tls.info() {
                    h.tls_version = Some(i.version.clone());
                    h.tls_cipher = Some(i.cipher.clone());
                }
                h.dane_match = s.tls.dane_match().map(ToString::to_string);
                h.verdict = s.tls.label().to_string();
                session::quit_quietly(s.client).await;
                return;
            }
            Err(e) => {
                if matches!(e, AttemptError::TlsRequired { .. }) {
                    h.starttls_offered = Some(false);
                }
                h.connected = Some(peer.relay());
                h.verdict = defer_text(&e);
                // Only an unreachable address sends us to the next one.
                if !matches!(
                    e,
                    AttemptError::Connect { .. } | AttemptError::ConnectTimeout { .. }
                ) {
                    return;
                }
            }
        }
    }
}
