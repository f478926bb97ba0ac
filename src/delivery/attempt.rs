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
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tracing::{info, info_span, Instrument};

use crate::config::{InsecureMxPolicy, Route, TlsLevel};
use crate::dane::{self, DanePolicy, Decision};
use crate::delivery::routing::{match_route, plan_route_with_port, CandidateHost};
use crate::dns::DnsLookup;
use crate::metrics::{DaneResult, DeliveryOutcome, DeliveryTls, Metrics, TlsHandshake};
use crate::smtp::client::{BlockingBody, Client, Envelope, RcptResult};
use tokio::net::TcpStream;

pub use super::decision::host_decision;
use super::decision::{dane_label, dns_error, host_tls, nexthop_domain, routing_error, DomainSts};
use super::logline;
use super::outcome::{for_rcpt, from_error, try_next_host, AttemptError, Outcome};
use super::session::{self, Peer, SessionOptions, TlsOutcome};
use super::tls_report::{session_result, sts_session, Seen};
use crate::sts::{CertFailure, HostRule, SessionFailure, SessionResult};

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
                    // RFC 8460 §3: a report goes out despite the TLS failures it
                    // may be about, so no MTA-STS policy applies to it.
                    let sts = match reports {
                        true => None,
                        false => self.domain_sts(&plan, false).await,
                    };
                    let mut out = (&mut results, &mut last, &mut keep);
                    self.run_plan(&plan, sts.as_ref(), jobs, &mut out).await;
                    // RFC 8461 §5.1: before mail waits (and in the end
                    // bounces) because of an `enforce` policy, make sure it
                    // is still the policy in force.
                    if !all_done(out.0) && stopped_by_sts(out.1.as_ref()) {
                        let again = self.domain_sts(&plan, true).await;
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
        for (job, slots) in jobs.iter().zip(results.iter_mut()) {
            for (rcpt, slot) in job.envelope.recipients.iter().zip(slots.iter_mut()) {
                if slot.is_none() {
                    let done = self.finish(job, &rcpt.address, None, None, rest.clone());
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

    /// The MTA-STS policy in force for the plan's domain (only for MX
    /// routing: a configured next hop is the operator's choice). `force`:
    /// fetch again whatever the cache says (RFC 8461 §5.1 re-check).
    async fn domain_sts(
        &self,
        plan: &crate::delivery::routing::RoutePlan,
        force: bool,
    ) -> Option<DomainSts> {
        self.sts_for(nexthop_domain(plan)?, force).await
    }

    /// The MTA-STS policy in force for recipient domain `domain` under MX
    /// routing; `force` as for the re-check.
    pub async fn sts_for(&self, domain: &str, force: bool) -> Option<DomainSts> {
        let sts = self.options.sts.as_ref()?;
        let lookup = sts.policy_for(domain, SystemTime::now(), force).await;
        if let (None, Some(failure)) = (&lookup.active, &lookup.failure) {
            if !matches!(failure, crate::sts::FetchError::Dns { .. }) {
                self.sts_result(SessionResult {
                    policy_domain: domain.to_string(),
                    policy: None,
                    mx_host: String::new(),
                    receiving_ip: None,
                    failure: Some(SessionFailure::Fetch(failure.clone())),
                });
            }
        }
        Some(DomainSts {
            active: lookup.active?,
            roots: sts.roots().clone(),
        })
    }

    /// [`Engine::sts_result`] for `host` under the domain's policy.
    fn sts_host_result(
        &self,
        sts: Option<&DomainSts>,
        host: &CandidateHost,
        address: Option<IpAddr>,
        failure: Option<SessionFailure>,
    ) {
        let Some(sts) = sts else { return };
        self.sts_result(SessionResult {
            policy_domain: sts.active.domain.clone(),
            policy: Some(sts.active.clone()),
            mx_host: host.name.clone(),
            receiving_ip: address,
            failure,
        });
    }

    /// One session's MTA-STS result (RFC 8460 material): logged here; the
    /// TLS-RPT recorder takes it from this one place.
    fn sts_result(&self, r: SessionResult) {
        info!(target: "danerelay::sts",
            domain = %r.policy_domain,
            mx = %r.mx_host,
            mode = r.mode().map_or("none", |m| m.as_str()),
            result = r.result_type().unwrap_or("success"),
            "MTA-STS session result");
        if let Some(recorder) = &self.tls_rpt {
            recorder.record(sts_session(&r));
        }
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
        let (decision, rule) = (tls.decision, tls.rule);
        if let Some(label) = dane_label(policy, host, &decision) {
            self.metrics.dane_result(label);
        }
        if rule == HostRule::Skip {
            let domain = sts.map_or("", |s| s.active.domain.as_str());
            info!(mx = %host.name, %domain, "host skipped: not an MX host of the MTA-STS policy (RFC 8461 §4.1)");
            self.sts_host_result(sts, host, None, Some(SessionFailure::MxMismatch));
            *last = Some(AttemptError::StsMxMismatch {
                host: host.name.clone(),
                domain: domain.to_string(),
            });
            return false;
        }
        if let Decision::Defer(reason) = &decision {
            self.report_tls(nexthop, host, None, (&decision, rule), Seen::Skipped);
            info!(mx = %host.name, %reason, "host skipped");
            *last = Some(match reason {
                dane::DeferReason::TlsaLookupFailed(detail) => AttemptError::TlsaLookup {
                    host: host.name.clone(),
                    detail: detail.clone(),
                },
                other => AttemptError::Dane {
                    host: host.name.clone(),
                    detail: other.to_string(),
                },
            });
            return false;
        }
        let addresses: Vec<IpAddr> = host.addresses.clone();
        for address in addresses {
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
            let session = match session::open(&peer, &decision, &self.options.session).await {
                Ok(s) => s,
                Err(e) => {
                    self.report_tls(
                        nexthop,
                        host,
                        Some(address),
                        (&decision, rule),
                        Seen::Failed(&e),
                    );
                    if matches!(e, AttemptError::Dane { .. }) {
                        self.metrics.dane_result(DaneResult::Mismatch);
                    }
                    if rule == HostRule::Authenticate {
                        let failure = match &e {
                            AttemptError::StsCertificate { failure, .. } => {
                                Some(SessionFailure::Certificate(failure.clone()))
                            }
                            AttemptError::TlsRequired { .. } => {
                                Some(SessionFailure::StartTlsNotSupported)
                            }
                            _ => None,
                        };
                        if failure.is_some() {
                            self.sts_host_result(sts, host, Some(address), failure);
                        }
                    }
                    info!(%relay, error = ?e, "host not usable");
                    let next = try_next_host(&e);
                    *last = Some(e);
                    if next {
                        continue;
                    }
                    return true;
                }
            };
            self.report_tls(
                nexthop,
                host,
                Some(address),
                (&decision, rule),
                Seen::Opened(&session),
            );
            if session.tls.dane_match().is_some() {
                self.metrics.dane_result(DaneResult::Ok);
            }
            if rule != HostRule::NotApplied {
                let failure = testing_failure(rule, sts, host, &session.tls);
                self.sts_host_result(sts, host, Some(address), failure);
            }
            if let Some(info) = session.tls.info() {
                self.metrics.tls_handshake(if info.resumed {
                    TlsHandshake::Resumed
                } else {
                    TlsHandshake::Full
                });
            }
            let mut s = Reusable {
                client: session.client,
                relay,
                tls: session.tls,
                opened,
                host: host.clone(),
                key: super::reuse::ReuseKey::new(policy.level, host, &decision)
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

    /// Counts one session for TLS-RPT, under MX routing only: with a
    /// configured next hop the recipient domain's policy was not in play.
    fn report_tls(
        &self,
        nexthop: Option<&str>,
        host: &CandidateHost,
        address: Option<IpAddr>,
        (decision, rule): (&Decision, HostRule),
        seen: Seen<'_>,
    ) {
        let (Some(recorder), Some(domain)) = (&self.tls_rpt, nexthop) else {
            return;
        };
        // Under an MTA-STS policy the session is counted once, as `sts`
        // (`sts_result`), not also as `no-policy-found`.
        if rule != HostRule::NotApplied {
            return;
        }
        if let Some(result) = session_result(domain, host, address, decision, seen) {
            recorder.record(result);
        }
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
            for (i, r) in open.iter().zip(result.recipients.iter()) {
                if let RcptResult::Error(e) = r {
                    let err = AttemptError::Smtp(e.clone());
                    if try_next_host(&err) {
                        *last = Some(err);
                        continue;
                    }
                }
                let addr = &job.envelope.recipients[*i].address;
                let out = for_rcpt(r);
                slots[*i] = Some(self.finish(job, addr, Some(&s.relay), Some(&s.tls), out));
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
        }
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
fn testing_failure(
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "attempt_tests.rs"]
mod tests;
