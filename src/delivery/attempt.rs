//! One delivery attempt to one destination: route, then candidate hosts in
//! order (at most `delivery.max_hosts`), each address in turn, TLS per the DANE
//! decision for that host, then every queued message for the destination
//! over the same session (connection reuse). Every result goes through
//! `delivery::outcome`, so DNS, DNSSEC and DANE problems defer and never bounce.
//!
//! A recipient whose session broke before the peer judged the message
//! (`outcome::try_next_host`) is offered to the next address/host; one the
//! peer answered (2xx/4xx/5xx) keeps that answer for this attempt.

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tracing::{info, info_span, Instrument};

use crate::config::{InsecureMxPolicy, Route, TlsLevel};
use crate::dane::{self, DanePolicy};
use crate::delivery::routing::{match_route, plan_route_with_port, CandidateHost};
use crate::dns::DnsLookup;
use crate::metrics::{DeliveryOutcome, DeliveryTls, Metrics};
use crate::smtp::client::{BlockingBody, Client, Envelope, RcptResult};
use tokio::net::TcpStream;

pub use super::decision::host_decision;
use super::decision::{dane_label, dns_error, host_tls, nexthop_domain, routing_error, DomainSts};
use super::logline;
use super::mta_sts;
use super::outcome::{
    client_throttles, for_rcpt, from_error, throttles, try_next_host, AttemptError, Outcome,
};
use super::session::{self, Peer, SessionOptions, TlsOutcome};

/// The default of `delivery.max_hosts`, in the spirit of Postfix's
/// `smtp_mx_address_limit` (there 5 addresses; here 5 *hosts*, each with all
/// its addresses): enough for primary + backups, bounded so one attempt
/// cannot take `connect_timeout` × every MX of a huge list.
pub const MAX_HOSTS: usize = 5;

/// Opens a fresh reader on a queued body (one per transaction: a message may
/// be offered to a second host after the first broke mid-way).
pub type BodyOpener = Arc<dyn Fn() -> std::io::Result<Box<dyn Read + Send>> + Send + Sync>;

/// One queued message's recipients at this destination.
#[derive(Clone)]
pub struct Job {
    pub queue_id: String,
    /// Sender, parameters, and the recipients at this destination.
    pub envelope: Envelope,
    pub received_at: SystemTime,
    pub body: BodyOpener,
    /// A TLS-RPT report the relay generated (queue `Envelope::tls_report`):
    /// delivered despite TLS failures (RFC 8460 §3).
    pub tls_report: bool,
}

/// How the engine delivers (from `[delivery]`; see [`EngineOptions::from_config`]).
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub session: SessionOptions,
    pub tls: TlsLevel,
    /// `delivery.dane_insecure_mx` (RFC 7672 §2.2.1).
    pub dane_insecure_mx: InsecureMxPolicy,
    pub routes: Vec<Route>,
    /// 25 in production; tests run their MX elsewhere.
    pub mx_port: u16,
    pub max_hosts: usize,
    /// MTA-STS (RFC 8461), `None` when `mta_sts.enabled = false`.
    pub sts: Option<crate::sts::Sts>,
}

impl EngineOptions {
    /// `[delivery]` → options: `helo_name`, `connect_timeout`, `tls`,
    /// `dane_insecure_mx`, `route`;
    /// RFC 5321 §4.5.3.2 timeouts; port 25; `delivery.max_hosts`; a fresh
    /// TLS config cache (session resumption to repeat peers, see
    /// [`dane::resume`]).
    pub fn from_config(d: &crate::config::DeliveryConfig) -> EngineOptions {
        EngineOptions {
            session: SessionOptions {
                helo_name: d.helo_name.clone(),
                connect_timeout: d.connect_timeout,
                timeouts: crate::smtp::client::Timeouts::default(),
                tls_configs: Arc::new(dane::TlsConfigCache::default()),
            },
            tls: d.tls,
            dane_insecure_mx: d.dane_insecure_mx,
            routes: d.routes.clone(),
            mx_port: super::routing::SMTP_PORT,
            max_hosts: d.max_hosts,
            sts: None,
        }
    }
}

impl EngineOptions {
    /// The DANE policy for a route: its `tls` (else `delivery.tls`) and
    /// `delivery.dane_insecure_mx`.
    pub fn policy(&self, route_tls: Option<TlsLevel>) -> DanePolicy {
        DanePolicy {
            level: route_tls.unwrap_or(self.tls),
            insecure_mx: self.dane_insecure_mx,
        }
    }
}

/// Resolver, options and metrics: everything an attempt needs.
#[derive(Clone)]
pub struct Engine {
    pub dns: Arc<dyn DnsLookup>,
    pub options: EngineOptions,
    pub metrics: Metrics,
    /// Where each session's TLS result is counted for TLS-RPT (`None`: off).
    pub tls_rpt: Option<Arc<crate::tlsrpt::Recorder>>,
}

/// What became of one recipient, with what the log line needs.
#[derive(Debug, Clone)]
pub struct RcptOutcome {
    pub outcome: Outcome,
    pub relay: Option<String>,
    pub tls: Option<TlsOutcome>,
    /// The destination answered with a "slow down" (`shaping::throttles`).
    pub throttle: bool,
}

/// Per job, per envelope recipient: `None` while still open.
type Results = Vec<Vec<Option<RcptOutcome>>>;

/// A session left open after an attempt, for the next messages to the
/// same destination (connection reuse).
pub struct Reusable {
    client: Client<TcpStream>,
    relay: String,
    tls: TlsOutcome,
    opened: Instant,
    /// The host, as routed for the domain that opened the session.
    pub host: CandidateHost,
    /// The policy it was opened under (`None`: never shared across domains).
    pub key: Option<super::reuse::ReuseKey>,
}

impl Reusable {
    /// QUIT and close (records the session's duration).
    pub async fn close(self, metrics: &Metrics) {
        session::quit_quietly(self.client).await;
        metrics
            .delivery_duration_seconds
            .observe(self.opened.elapsed().as_secs_f64());
    }
}

impl Engine {
    /// Delivers every job to `domain`; one outcome per job and recipient,
    /// in envelope order. The session is closed at the end.
    pub async fn deliver(&self, domain: &str, jobs: &[Job]) -> Vec<Vec<RcptOutcome>> {
        let (results, open) = self.deliver_reusing(domain, jobs, None).await;
        if let Some(s) = open {
            s.close(&self.metrics).await;
        }
        results
    }

    /// [`Engine::deliver`] that first uses `cached` (a session to this
    /// destination from the previous call) and hands back a still-usable
    /// session instead of closing it.
    pub async fn deliver_reusing(
        &self,
        domain: &str,
        jobs: &[Job],
        cached: Option<Reusable>,
    ) -> (Vec<Vec<RcptOutcome>>, Option<Reusable>) {
        let span = info_span!("delivery", domain = %domain);
        self.deliver_inner(domain, jobs, cached)
            .instrument(span)
            .await
    }

    async fn deliver_inner(
        &self,
        domain: &str,
        jobs: &[Job],
        cached: Option<Reusable>,
    ) -> (Vec<Vec<RcptOutcome>>, Option<Reusable>) {
        let mut results: Results = jobs
            .iter()
            .map(|j| vec![None; j.envelope.recipients.len()])
            .collect();
        let opts = &self.options;
        let mut last: Option<AttemptError> = None;
        let mut keep: Option<Reusable> = None;
        if let Some(mut s) = cached {
            self.run_jobs(&mut s, jobs, &mut results, &mut last).await;
            if s.client.is_usable() {
                keep = Some(s);
            } else {
                s.close(&self.metrics).await;
            }
        }
        if !all_done(&results) {
            if let Some(s) = keep.take() {
                s.close(&self.metrics).await;
            }
            let reports = !jobs.is_empty() && jobs.iter().all(|j| j.tls_report);
            let pending = if reports {
                None
            } else {
                self.dnssec_pending(domain).await
            };
            let planned = match pending {
                Some(pending) => Err(pending),
                None => plan_route_with_port(self.dns.as_ref(), domain, &opts.routes, opts.mx_port)
                    .await
                    .map_err(routing_error),
            };
            match planned {
                Err(e) => last = Some(e),
                Ok(plan) => {
                    if let Some((_, e)) = plan.failed_hosts.first() {
                        last = Some(dns_error(e.clone()));
                    }
                    // MTA-STS only under MX routing: a next hop is the operator's.
                    // RFC 8460 §3: a report goes out despite the TLS failures it
                    // may be about, so no MTA-STS policy applies to it.
                    let policy_domain = nexthop_domain(&plan).filter(|_| !reports);
                    let sts = match policy_domain {
                        Some(d) => self.sts_for(d, false).await,
                        None => None,
                    };
                    let mut out = (&mut results, &mut last, &mut keep);
                    self.run_plan(&plan, sts.as_ref(), jobs, &mut out).await;
                    // RFC 8461 §5.1: before mail waits (and in the end
                    // bounces) because of an `enforce` policy, make sure it
                    // is still the policy in force.
                    if !all_done(out.0) && mta_sts::recheck_wanted(sts.as_ref(), out.1.as_ref()) {
                        let again = match policy_domain {
                            Some(d) => self.sts_for(d, true).await,
                            None => None,
                        };
                        let changed = again.as_ref().map(|s| &s.active.text)
                            != sts.as_ref().map(|s| &s.active.text);
                        if changed {
                            info!(%domain, "MTA-STS policy changed on re-check: trying the hosts again");
                            self.run_plan(&plan, again.as_ref(), jobs, &mut out).await;
                        }
                    }
                }
            }
        }
        let fallback = last.unwrap_or_else(|| AttemptError::NoUsableHost {
            domain: domain.to_string(),
        });
        let rest = from_error(&fallback);
        let throttle = throttles(&fallback);
        for (job, slots) in jobs.iter().zip(results.iter_mut()) {
            for (rcpt, slot) in job.envelope.recipients.iter().zip(slots.iter_mut()) {
                if slot.is_none() {
                    let mut done = self.finish(job, &rcpt.address, None, None, rest.clone());
                    done.throttle = throttle;
                    *slot = Some(done);
                }
            }
        }
        let results = results
            .into_iter()
            .map(|slots| slots.into_iter().flatten().collect())
            .collect();
        (results, keep)
    }

    /// The candidate hosts of `plan` in order under `sts`, until every
    /// recipient has its outcome or a host says stop.
    async fn run_plan(
        &self,
        plan: &crate::delivery::routing::RoutePlan,
        sts: Option<&DomainSts>,
        jobs: &[Job],
        (results, last, keep): &mut (
            &mut Results,
            &mut Option<AttemptError>,
            &mut Option<Reusable>,
        ),
    ) {
        let mut policy = self.options.policy(plan.tls);
        if !jobs.is_empty() && jobs.iter().all(|j| j.tls_report) {
            policy.level = report_level(policy.level);
        }
        let nexthop = nexthop_domain(plan);
        for host in plan.hosts.iter().take(self.options.max_hosts) {
            let span = info_span!("host", mx = %host.name);
            let stop = self
                .try_host(host, (policy, nexthop, sts), jobs, results, last, keep)
                .instrument(span)
                .await;
            if stop || all_done(results) {
                break;
            }
        }
    }

    /// The MTA-STS policy in force for recipient domain `domain` under MX
    /// routing (for sharing a session across domains).
    pub async fn sts_for(&self, domain: &str, force: bool) -> Option<DomainSts> {
        mta_sts::domain_sts(self.options.sts.as_ref(), domain, force).await
    }

    /// `Some(error)` when this destination's TLS level needs a DNSSEC
    /// verdict (`dane`, `dane-only`) and the resolver has none yet
    /// (`dns.dnssec = "auto"` still probing, after a bounded wait): the
    /// mail defers rather than going out on insecure-for-now answers, which
    /// would downgrade DANE to opportunistic TLS.
    async fn dnssec_pending(&self, domain: &str) -> Option<AttemptError> {
        let level = match_route(&self.options.routes, &crate::dns::normalize_name(domain))
            .and_then(|r| r.tls)
            .unwrap_or(self.options.tls);
        if !matches!(level, TlsLevel::Dane | TlsLevel::DaneOnly) || self.dns.dnssec_ready().await {
            return None;
        }
        info!(%domain, "DNSSEC mode not chosen yet (dns.dnssec = auto still probing): deferred");
        Some(AttemptError::DnsLookup {
            name: "resolver".into(),
            detail:
                "no DNSSEC verdict yet (dns.dnssec = auto: the start-up probe is still running)"
                    .into(),
        })
    }

    /// Tries every address of one host. True when the attempt must stop
    /// (an error that is not "try the next host"). A session that is still
    /// usable when everything is done lands in `keep`.
    async fn try_host(
        &self,
        host: &CandidateHost,
        (policy, nexthop, sts): (DanePolicy, Option<&str>, Option<&DomainSts>),
        jobs: &[Job],
        results: &mut Results,
        last: &mut Option<AttemptError>,
        keep: &mut Option<Reusable>,
    ) -> bool {
        let tls = host_tls(self.dns.as_ref(), policy, nexthop, host, sts).await;
        let at = AtHost {
            host,
            nexthop,
            sts,
            decision: &tls.decision,
            rule: tls.rule,
        };
        if let Some(label) = dane_label(policy, host, at.decision) {
            self.metrics.dane_result(label);
        }
        if let Some(refused) = self.refused_before_connecting(&at) {
            *last = Some(refused);
            return false;
        }
        for address in host.addresses.iter().copied() {
            if all_done(results) {
                return true;
            }
            let peer = Peer {
                host: &host.name,
                address,
                port: host.port,
            };
            let relay = peer.relay();
            let opened = Instant::now();
            let session = match session::open(&peer, at.decision, &self.options.session).await {
                Ok(s) => s,
                Err(e) => {
                    self.open_failed(&at, address, &e);
                    info!(%relay, error = ?e, "host not usable");
                    let next = try_next_host(&e);
                    *last = Some(e);
                    if next {
                        continue;
                    }
                    return true;
                }
            };
            self.opened(&at, address, &session);
            let mut s = Reusable {
                client: session.client,
                relay,
                tls: session.tls,
                opened,
                host: host.clone(),
                key: super::reuse::ReuseKey::new(policy.level, host, at.decision)
                    .map(|k| k.with_sts(sts)),
            };
            self.run_jobs(&mut s, jobs, results, last).await;
            if s.client.is_usable() && all_done(results) {
                *keep = Some(s);
            } else {
                s.close(&self.metrics).await;
            }
        }
        false
    }

    /// Every job's open recipients over one session.
    async fn run_jobs(
        &self,
        s: &mut Reusable,
        jobs: &[Job],
        results: &mut Results,
        last: &mut Option<AttemptError>,
    ) {
        for (job, slots) in jobs.iter().zip(results.iter_mut()) {
            if !s.client.is_usable() {
                break;
            }
            let open: Vec<usize> = (0..slots.len()).filter(|i| slots[*i].is_none()).collect();
            if open.is_empty() {
                continue;
            }
            let mut env = job.envelope.clone();
            env.recipients = open
                .iter()
                .map(|i| job.envelope.recipients[*i].clone())
                .collect();
            let body = match (job.body)() {
                Ok(b) => b,
                Err(e) => {
                    let out = from_error(&AttemptError::Local {
                        detail: format!("cannot read queued message: {e}"),
                    });
                    for i in &open {
                        let addr = &job.envelope.recipients[*i].address;
                        slots[*i] = Some(self.finish(job, addr, None, None, out.clone()));
                    }
                    continue;
                }
            };
            let span = info_span!("message", queue_id = %job.queue_id);
            let result = s
                .client
                .transaction(&env, BlockingBody::new(body))
                .instrument(span)
                .await;
            let phases = result.phases.iter().copied();
            for ((i, r), phase) in open.iter().zip(result.recipients.iter()).zip(phases) {
                if let RcptResult::Error(e) = r {
                    let err = AttemptError::Smtp(e.clone());
                    if try_next_host(&err) {
                        *last = Some(err);
                        continue;
                    }
                }
                let throttle = match r {
                    RcptResult::Reply(reply) => super::shaping::throttles(phase, reply),
                    RcptResult::Error(e) => client_throttles(e),
                };
                let addr = &job.envelope.recipients[*i].address;
                let out = for_rcpt(r);
                let mut done = self.finish(job, addr, Some(&s.relay), Some(&s.tls), out);
                done.throttle = throttle;
                slots[*i] = Some(done);
            }
        }
    }

    /// Logs and counts one recipient's outcome.
    fn finish(
        &self,
        job: &Job,
        recipient: &str,
        relay: Option<&str>,
        tls: Option<&TlsOutcome>,
        outcome: Outcome,
    ) -> RcptOutcome {
        let delay = SystemTime::now()
            .duration_since(job.received_at)
            .unwrap_or(Duration::ZERO);
        let line = logline::line(&job.queue_id, recipient, relay, delay, tls, &outcome);
        match outcome {
            Outcome::Delivered(_) => info!(target: "danerelay::delivery", "{line}"),
            _ => tracing::warn!(target: "danerelay::delivery", "{line}"),
        }
        let label = match &outcome {
            Outcome::Delivered(_) => DeliveryOutcome::Delivered,
            Outcome::Deferred(_) => DeliveryOutcome::Deferred,
            Outcome::Bounced(_) => DeliveryOutcome::Bounced,
        };
        let tls_label = match tls {
            Some(TlsOutcome::DaneVerified(..)) => DeliveryTls::DaneVerified,
            Some(TlsOutcome::DaneTrusted(..)) => DeliveryTls::DaneTrusted,
            Some(TlsOutcome::StsVerified(_)) => DeliveryTls::StsVerified,
            Some(TlsOutcome::Unauthenticated(_)) => DeliveryTls::Unauthenticated,
            Some(TlsOutcome::Plaintext) => DeliveryTls::Plaintext,
            None => DeliveryTls::None,
        };
        self.metrics.delivery_attempt(label, tls_label);
        RcptOutcome {
            outcome,
            relay: relay.map(str::to_string),
            tls: tls.cloned(),
            throttle: false,
        }
    }
}

/// The level a relay-generated TLS-RPT report is delivered under: RFC 8460
/// §3 wants reports delivered despite the very TLS failures they may be
/// about, so opportunistic TLS (plaintext after a failed handshake) — but
/// never more TLS than configured (`none` stays `none`).
pub fn report_level(level: TlsLevel) -> TlsLevel {
    match level {
        TlsLevel::None => TlsLevel::None,
        _ => TlsLevel::May,
    }
}

fn all_done(results: &Results) -> bool {
    results.iter().all(|r| r.iter().all(Option::is_some))
}

#[path = "attempt_host.rs"]
mod host;
use host::AtHost;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "attempt_tests.rs"]
mod tests;
