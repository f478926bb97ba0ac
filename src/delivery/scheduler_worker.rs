//! The scheduler's destination side: grouping each domain of a batch into
//! its destination (`site::resolve`, one task per domain), and the workers
//! that serve a destination's mailbox over shared sessions. A session opened
//! for one domain carries the next domain's mail only when that domain's
//! [`ReuseKey`](super::super::reuse::ReuseKey) for the session's host is the
//! session's own (SPEC "Delivery"); otherwise it is closed and the attempt
//! opens one under the domain's own policy.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use super::super::attempt::{Job, RcptOutcome, Reusable};
use super::super::mailbox::Asking;
use super::super::reuse;
use super::super::site::{self, DomainPolicy, Site};
use super::{Item, Pending, Scheduler, Step};

/// A session kept between rounds, with the domain it last served.
struct Open {
    session: Reusable,
    domain: Arc<str>,
    policy: DomainPolicy,
}

/// Each item's flight and queue indices, as `settle` takes them.
fn settling(items: Vec<Item>) -> Vec<(Arc<super::InFlight>, Vec<u32>)> {
    items.into_iter().map(|i| (i.flight, i.indices)).collect()
}

impl Scheduler {
    /// Groups `domain` into its destination and hands it the domain's
    /// shares, starting workers up to the destination's limit. Its own
    /// task: a slow or failing MX lookup holds up no other domain (a failed
    /// one is a destination of its own and defers in its attempt).
    pub(super) async fn route(
        self,
        domain: String,
        items: Vec<Pending>,
        tasks: TaskTracker,
        soft: CancellationToken,
        hard: CancellationToken,
    ) {
        let (dns, per) = (self.engine.dns.clone(), self.options.per_destination);
        let dest = tokio::select! {
            d = site::resolve(dns.as_ref(), &self.engine.options, per, &domain) => d,
            _ = hard.cancelled() => {
                let group = items.into_iter().map(|(f, _, ix)| (f, ix)).collect();
                self.settle(group, None).await;
                return;
            }
        };
        debug!(%domain, site = %dest.site, "destination");
        let domain: Arc<str> = Arc::from(domain);
        let items = items.into_iter().map(|(flight, job, indices)| Item {
            flight,
            // Relay-generated TLS-RPT reports are a policy class of their
            // own (RFC 8460 §3), never in one take with ordinary mail.
            policy: if job.tls_report {
                DomainPolicy {
                    level: crate::delivery::attempt::report_level(dest.policy.level),
                    ..dest.policy
                }
            } else {
                dest.policy
            },
            job,
            indices,
            domain: domain.clone(),
        });
        let spawn = self
            .lock_destinations()
            .entry(dest.site.clone())
            .or_default()
            .admit(items, dest.limit);
        for _ in 0..spawn {
            let me = self.clone();
            let (soft, hard) = (soft.clone(), hard.clone());
            tasks.spawn(me.destination_worker(dest.site.clone(), soft, hard));
        }
    }

    /// Serves one destination until its mailbox is empty: takes a share of
    /// the waiting messages, delivers them over one session, reports, and
    /// takes more (messages that arrived meanwhile reuse the worker).
    async fn destination_worker(
        self,
        site: Site,
        soft: CancellationToken,
        hard: CancellationToken,
    ) {
        let mut open: Option<Open> = None;
        let mut held: Option<OwnedSemaphorePermit> = None;
        let mut linger_until: Option<tokio::time::Instant> = None;
        loop {
            let class = open.as_ref().map(|o| o.policy);
            let step = self.next_step(&site, class.as_ref(), &mut linger_until, &soft);
            let take = match step {
                None => return,
                Some(Step::Work(take)) => take,
                Some(Step::Linger(ready, until)) => {
                    tokio::select! {
                        _ = ready.notified() => {}
                        _ = tokio::time::sleep_until(until) => {}
                        _ = soft.cancelled() => {}
                    }
                    if let Some(mb) = self.lock_destinations().get_mut(&site) {
                        mb.idle = mb.idle.saturating_sub(1);
                    }
                    continue;
                }
                Some(Step::Exit(take)) => {
                    if let Some(o) = open.take() {
                        o.session.close(&self.engine.metrics).await;
                    }
                    self.settle(settling(take), None).await;
                    return;
                }
            };
            let permit = self.permit(held.take(), open.is_some(), &soft).await;
            let cached = open.take();
            let results = match permit {
                Some(p) => tokio::select! {
                    (r, s) = self.deliver_take(&take, cached) => {
                        if s.is_some() {
                            held = Some(p);
                        }
                        open = s;
                        Some(r)
                    }
                    _ = hard.cancelled() => None,
                },
                None => None,
            };
            self.settle(settling(take), results).await;
        }
    }

    /// Delivers a share (all of one policy class) domain by domain, each
    /// over the open session when it may carry that domain's mail.
    async fn deliver_take(
        &self,
        take: &[Item],
        mut open: Option<Open>,
    ) -> (Vec<Vec<RcptOutcome>>, Option<Open>) {
        let mut results = vec![Vec::new(); take.len()];
        for (domain, idx) in by_domain(take) {
            let policy = take[idx[0]].policy;
            let cached = match open.take() {
                Some(o) if o.domain == domain => Some(o.session),
                Some(o) => self.shareable(o, &domain, policy).await,
                None => None,
            };
            let jobs: Vec<Job> = idx.iter().map(|i| take[*i].job.clone()).collect();
            let (outcomes, kept) = self.engine.deliver_reusing(&domain, &jobs, cached).await;
            for (i, o) in idx.iter().zip(outcomes) {
                results[*i] = o;
            }
            open = kept.map(|session| Open {
                session,
                domain: domain.clone(),
                policy,
            });
        }
        (results, open)
    }

    /// `o`'s session for `domain` if its key there is the session's own
    /// (`reuse`); else it is closed.
    async fn shareable(&self, o: Open, domain: &str, policy: DomainPolicy) -> Option<Reusable> {
        let (dns, options) = (self.engine.dns.as_ref(), &self.engine.options);
        // Under a route with a next hop there is no next-hop domain to match
        // (as `decision::nexthop_domain`); under MX routing it is the domain.
        let via_next_hop = crate::delivery::routing::match_route(
            &options.routes,
            &crate::dns::normalize_name(domain),
        )
        .is_some_and(|r| r.next_hop.is_some());
        let nexthop = (!via_next_hop).then_some(domain);
        let dane = options.policy(Some(policy.level));
        let sts = match nexthop {
            Some(d) => self.engine.sts_for(d, false).await,
            None => None,
        };
        let route = (dane, nexthop);
        let key = reuse::key_for_sts(dns, policy, route, &o.session.host, sts.as_ref()).await;
        if key.is_some() && key == o.session.key {
            debug!(from = %o.domain, to = %domain, mx = %o.session.host.name,
                "session shared across domains (same MX, same TLS policy)");
            return Some(o.session);
        }
        debug!(from = %o.domain, to = %domain, mx = %o.session.host.name,
            "TLS policy differs: not sharing the session");
        o.session.close(&self.engine.metrics).await;
        None
    }

    /// What `site`'s worker does next (`None`: the mailbox is gone); the
    /// mailbox goes when its last worker leaves it empty.
    fn next_step(
        &self,
        site: &Site,
        session: Option<&DomainPolicy>,
        linger_until: &mut Option<tokio::time::Instant>,
        soft: &CancellationToken,
    ) -> Option<Step> {
        let mut map = self.lock_destinations();
        let mb = map.get_mut(site)?;
        let step = mb.next_step(Asking {
            session,
            others_waiting: self.conn_waiters.load(Ordering::Acquire) > 0,
            shutting_down: soft.is_cancelled(),
            linger_until,
        });
        if matches!(step, Step::Exit(_)) && mb.workers == 0 && mb.waiting.is_empty() {
            map.remove(site);
        }
        Some(step)
    }

    /// A connection permit: an open session keeps its own between rounds,
    /// otherwise wait for one (`None`: shutdown came first).
    async fn permit(
        &self,
        held: Option<OwnedSemaphorePermit>,
        session_open: bool,
        soft: &CancellationToken,
    ) -> Option<OwnedSemaphorePermit> {
        match held {
            Some(p) if session_open => Some(p),
            _ => {
                let conns = self.connections.clone();
                self.conn_waiters.fetch_add(1, Ordering::AcqRel);
                let p = tokio::select! {
                    p = conns.acquire_owned() => p.ok(),
                    _ = soft.cancelled() => None,
                };
                self.conn_waiters.fetch_sub(1, Ordering::AcqRel);
                p
            }
        }
    }
}

/// The share's item indices per domain, domains in order of first appearance.
fn by_domain(take: &[Item]) -> Vec<(Arc<str>, Vec<usize>)> {
    let mut groups: Vec<(Arc<str>, Vec<usize>)> = Vec::new();
    for (i, item) in take.iter().enumerate() {
        match groups.iter_mut().find(|(d, _)| *d == item.domain) {
            Some((_, idx)) => idx.push(i),
            None => groups.push((item.domain.clone(), vec![i])),
        }
    }
    groups
}
