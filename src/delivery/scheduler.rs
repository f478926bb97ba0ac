//! The scheduler task: owns the queue's due list. It sleeps until
//! `Queue::next_due` or until the queue's `on_due` hook fires (a tokio
//! `Notify`: no polling), leases what is due (at most
//! `delivery.concurrency` × [`ACTIVE_PER_CONNECTION`] messages out at a time,
//! so one destination sitting on its connections does not stop the others),
//! and splits each message's recipients by recipient
//! domain. Each domain is then grouped by destination — its MX host set or
//! next hop (`site`; a task per domain, so a failing MX lookup stalls no
//! one) — and its share goes to that destination's mailbox.
//!
//! Each destination has a mailbox served by at most `delivery.per_destination`
//! workers (or the smallest route `max_connections` of its domains); a worker
//! needs one of the `delivery.concurrency` connection permits (a semaphore)
//! and delivers a share of the waiting messages over one session, then takes
//! more over the same session (connection reuse, across the destination's
//! domains while the TLS policy is identical: `reuse`), lingering [`LINGER`]
//! for new mail unless another worker waits for a connection
//! (`scheduler_worker.rs`).
//!
//! When every group of a message is done, `report::report` records the
//! outcomes and sends the DSNs. On shutdown nothing new is leased; attempts
//! in flight get `shutdown_grace` (minus a margin for the bookkeeping) and
//! are then cut off: a message nobody finished is given back untouched
//! (`Queue::abandon`), one with some final answers is completed with just
//! those — a recipient is never marked delivered unless a peer said 2xx.
//! "Now" comes from a [`Clock`] (the wall clock unless a test injects one).

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use danerelay_queue::{Leased, Queue};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::smtp::client::{Envelope, Recipient};
use crate::smtp::queue_edge;

use super::attempt::{Engine, Job, RcptOutcome};
use super::clock::{Clock, SystemClock};
pub use super::gate::Gate;
use super::mailbox::{self, Classed};
pub use super::mailbox::{LINGER, MAX_PER_SESSION};
use super::report::{self, ReportOptions, Reported};
use super::shaping::{Shaper, ShapingOptions};
use super::site::{DomainPolicy, Site};

/// The longest the scheduler sleeps without a reason (a safety net against
/// a missed wake-up; not a poll: nothing is done unless something is due).
const MAX_IDLE: Duration = Duration::from_secs(60);
/// Back-off after a queue error.
const ERROR_PAUSE: Duration = Duration::from_secs(1);
/// Messages out at once per connection permit (Postfix's active queue in
/// spirit): a destination that sits on its connections — slow, tarpitting,
/// rate-limited — holds at most its mailbox's share, while the rest of the
/// `delivery.concurrency × ACTIVE_PER_CONNECTION` slots keep leasing mail
/// for everyone else. Waiting leases are renewed (`keeper`).
const ACTIVE_PER_CONNECTION: usize = 8;

/// Caps, grace and reporting.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    pub concurrency: usize,
    pub per_destination: usize,
    /// `shutdown_grace`: in-flight attempts are cut off after it (less a margin).
    pub grace: Duration,
    pub report: ReportOptions,
}

/// The delivery scheduler. Cheap to clone (all shared).
#[derive(Clone)]
pub struct Scheduler {
    queue: Queue,
    engine: Engine,
    options: SchedulerOptions,
    connections: Arc<Semaphore>,
    /// Workers waiting for a connection permit (idle sessions do not linger then).
    conn_waiters: Arc<AtomicUsize>,
    destinations: Arc<Mutex<HashMap<Site, Mailbox>>>,
    wake: Arc<Notify>,
    /// "Now" for due dates, retries and expiry (the wall clock but in tests).
    clock: Arc<dyn Clock>,
    /// Per-destination budgets and adaptive backoff (`shaping`).
    shaper: Shaper,
    /// Destinations held by hand, and the drain switch (`gate`).
    gate: Gate,
    /// Messages out now, whose leases `keeper` renews while they wait.
    flights: keeper::Flights,
}

/// One leased message while its groups are out.
struct InFlight {
    leased: Leased,
    state: Mutex<FlightState>,
    _slot: OwnedSemaphorePermit,
}

/// One message's recipients at one domain: its job and queue indices.
type Pending = (Arc<InFlight>, Job, Vec<u32>);

/// A [`Pending`] share grouped into its destination's mailbox.
struct Item {
    flight: Arc<InFlight>,
    job: Job,
    indices: Vec<u32>,
    domain: Arc<str>,
    policy: DomainPolicy,
}

impl Classed for Item {
    type Class = DomainPolicy;
    fn class(&self) -> &DomainPolicy {
        &self.policy
    }
}

type Mailbox = mailbox::Mailbox<Item>;
type Step = mailbox::Step<Item>;

struct FlightState {
    results: Vec<Reported>,
    groups_left: usize,
    aborted: bool,
}

/// The domain part of an address, lower-cased ("" when there is none).
pub fn domain_of(address: &str) -> String {
    address
        .rsplit_once('@')
        .map(|(_, d)| d.trim_end_matches('.').to_ascii_lowercase())
        .unwrap_or_default()
}

impl Scheduler {
    pub fn new(queue: Queue, engine: Engine, options: SchedulerOptions) -> Scheduler {
        let connections = Arc::new(Semaphore::new(options.concurrency.max(1)));
        let shaper = Shaper::new(ShapingOptions::default(), engine.metrics.clone());
        Scheduler {
            shaper,
            queue,
            engine,
            options,
            connections,
            conn_waiters: Arc::default(),
            destinations: Arc::default(),
            wake: Arc::new(Notify::new()),
            clock: Arc::new(SystemClock),
            gate: Gate::default(),
            flights: keeper::Flights::default(),
        }
    }

    /// Obeys `queue suspend` and `queue drain` (see [`Gate`]).
    pub fn with_gate(mut self, gate: Gate) -> Scheduler {
        self.gate = gate;
        self
    }

    /// Measures due dates, retries and expiry against `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Scheduler {
        self.clock = clock;
        self
    }

    /// Shapes traffic with `shaper` (shared with the admin API's summary).
    pub fn with_shaper(mut self, shaper: Shaper) -> Scheduler {
        self.shaper = shaper;
        self
    }

    /// The per-destination shaping state.
    pub fn shaper(&self) -> &Shaper {
        &self.shaper
    }

    /// Runs until `shutdown`, then drains in-flight attempts within the grace.
    pub async fn run(self, shutdown: CancellationToken) {
        let (shaper, stop) = (self.shaper.clone(), shutdown.clone());
        tokio::spawn(async move {
            // Backoff windows end by themselves: keep the gauge current.
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => shaper.refresh(tokio::time::Instant::now()),
                }
            }
        });
        let (queue, clock) = (self.queue.clone(), self.clock.clone());
        tokio::spawn(self.flights.clone().run(queue, clock, shutdown.clone()));
        let wake = self.wake.clone();
        self.queue.on_due(move || wake.notify_one());
        let active = self.options.concurrency.max(1) * ACTIVE_PER_CONNECTION;
        let slots = Arc::new(Semaphore::new(active));
        let hard = CancellationToken::new();
        let tasks = TaskTracker::new();
        info!(
            concurrency = self.options.concurrency,
            per_destination = self.options.per_destination,
            "delivery scheduler started"
        );
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            if self.gate.stopped() {
                // Draining: nothing new is leased; the drain takes the mail.
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = self.gate.resumed() => {}
                }
                continue;
            }
            let free = slots.available_permits();
            let mut pause = None;
            let mut full = false;
            if free > 0 {
                let (q, now) = (self.queue.clone(), self.clock.now());
                match tokio::task::spawn_blocking(move || q.lease_due(now, free)).await {
                    Ok(Ok(batch)) => {
                        full = batch.len() == free;
                        self.dispatch(batch, &slots, &tasks, &shutdown, &hard);
                    }
                    Ok(Err(e)) => {
                        error!(error = %e, "leasing due messages failed");
                        pause = Some(ERROR_PAUSE);
                    }
                    Err(e) => {
                        error!(error = %e, "leasing task failed");
                        pause = Some(ERROR_PAUSE);
                    }
                }
            }
            if full && slots.available_permits() > 0 {
                continue; // more may be due right now
            }
            let wait = match pause {
                Some(p) => p,
                None if slots.available_permits() == 0 => MAX_IDLE, // a finish wakes us
                None => self.until_next_due().await,
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        tasks.close();
        let grace = self.options.grace;
        let margin = (grace / 5).min(Duration::from_secs(2));
        if tokio::time::timeout(grace.saturating_sub(margin), tasks.wait())
            .await
            .is_err()
        {
            warn!("shutdown grace running out: cutting off deliveries in flight");
            hard.cancel();
            let _ = tokio::time::timeout(margin, tasks.wait()).await;
        }
        info!("delivery scheduler stopped");
    }

    /// How long until the next message is due (never zero: a due entry that
    /// could not be leased — taken by another worker — must not spin us).
    async fn until_next_due(&self) -> Duration {
        let q = self.queue.clone();
        let next = tokio::task::spawn_blocking(move || q.next_due()).await;
        match next {
            Ok(Ok(Some(at))) => at
                .duration_since(self.clock.now())
                .unwrap_or(Duration::ZERO)
                .clamp(Duration::from_millis(20), MAX_IDLE),
            Ok(Ok(None)) => MAX_IDLE,
            _ => ERROR_PAUSE,
        }
    }

    /// Splits a leased batch by recipient domain and spawns one routing
    /// task per domain (`route`), which hands the shares to the domain's
    /// destination.
    fn dispatch(
        &self,
        batch: Vec<Leased>,
        slots: &Arc<Semaphore>,
        tasks: &TaskTracker,
        soft: &CancellationToken,
        hard: &CancellationToken,
    ) {
        let mut by_domain: HashMap<String, Vec<Pending>> = HashMap::new();
        for leased in batch {
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                // Cannot happen (we lease at most the free slots); give it back.
                let q = self.queue.clone();
                tokio::task::spawn_blocking(move || q.abandon(&leased));
                continue;
            };
            let mut per_domain: HashMap<String, Vec<usize>> = HashMap::new();
            for (i, r) in leased.recipients.iter().enumerate() {
                per_domain.entry(domain_of(&r.address)).or_default().push(i);
            }
            let flight = Arc::new(InFlight {
                state: Mutex::new(FlightState {
                    results: Vec::new(),
                    groups_left: per_domain.len(),
                    aborted: false,
                }),
                _slot: slot,
                leased,
            });
            self.flights.add(&flight);
            if per_domain.is_empty() {
                // Nothing open: complete with no outcomes so the queue tidies up.
                tasks.spawn(self.clone().finalize(flight));
                continue;
            }
            for (domain, idx) in per_domain {
                let job = self.job(&flight.leased, &idx);
                let indices = idx
                    .iter()
                    .map(|i| flight.leased.recipients[*i].index)
                    .collect();
                by_domain
                    .entry(domain)
                    .or_default()
                    .push((flight.clone(), job, indices));
            }
        }
        let now = self.clock.now();
        for (domain, items) in by_domain {
            let me = self.clone();
            if self.gate.is_suspended(&domain, now) {
                tasks.spawn(me.defer_suspended(domain, items));
                continue;
            }
            let (soft, hard) = (soft.clone(), hard.clone());
            tasks.spawn(me.route(domain, items, tasks.clone(), soft, hard));
        }
    }

    /// A suspended domain's share: deferred without connecting to anyone.
    async fn defer_suspended(self, domain: String, items: Vec<Pending>) {
        let outcome = super::suspend::suspended_outcome(&domain);
        let results = items
            .iter()
            .map(|(_, _, idx)| {
                idx.iter()
                    .map(|_| RcptOutcome {
                        outcome: outcome.clone(),
                        relay: None,
                        tls: None,
                        throttle: false,
                    })
                    .collect()
            })
            .collect();
        let group = items.into_iter().map(|(f, _, idx)| (f, idx)).collect();
        self.settle(group, Some(results)).await;
    }

    fn lock_destinations(&self) -> std::sync::MutexGuard<'_, HashMap<Site, Mailbox>> {
        crate::sync::lock(&self.destinations)
    }

    fn job(&self, leased: &Leased, idx: &[usize]) -> Job {
        let env = &leased.envelope;
        let recipients = idx
            .iter()
            .map(|i| {
                let r = &leased.recipients[*i];
                Recipient {
                    address: r.address.clone(),
                    orcpt: r.orcpt.clone(),
                    notify: queue_edge::notify_from_queue(r.notify),
                }
            })
            .collect();
        let mut envelope = Envelope::new(env.sender.clone(), recipients);
        envelope.size = Some(leased.size);
        envelope.body_8bit = env.body_8bit;
        envelope.smtputf8 = env.smtputf8;
        envelope.relay_signed = env.relay_signed;
        envelope.envid = env.envid.clone();
        envelope.ret = env.ret;
        let (q, id) = (self.queue.clone(), leased.id);
        Job {
            queue_id: leased.id.to_string(),
            envelope,
            received_at: env.received_at,
            body: Arc::new(move || {
                q.body(id)
                    .map(|r| Box::new(r) as Box<dyn std::io::Read + Send>)
                    .map_err(std::io::Error::other)
            }),
            tls_report: env.tls_report,
        }
    }

    /// Hands each message its outcomes (`None`: cut off by shutdown) and
    /// finalizes the messages whose last group this was — all at once, so
    /// their durable `complete`s share the queue's group-commit rounds (one
    /// after another, a session's batch of n messages waited n sync rounds
    /// before the worker could take more: benches/compare.sh, workload 2).
    async fn settle(
        &self,
        group: Vec<(Arc<InFlight>, Vec<u32>)>,
        results: Option<Vec<Vec<RcptOutcome>>>,
    ) {
        let mut finishing = tokio::task::JoinSet::new();
        for (i, (flight, indices)) in group.into_iter().enumerate() {
            let last = {
                let mut st = flight.state.lock().unwrap_or_else(PoisonError::into_inner);
                match results.as_ref().and_then(|r| r.get(i)) {
                    Some(outs) => {
                        for (index, o) in indices.iter().zip(outs) {
                            st.results.push(Reported {
                                index: *index,
                                outcome: o.outcome.clone(),
                                remote_mta: o
                                    .relay
                                    .as_deref()
                                    .and_then(|r| r.split('[').next())
                                    .map(str::to_string),
                            });
                        }
                    }
                    None => st.aborted = true,
                }
                st.groups_left = st.groups_left.saturating_sub(1);
                st.groups_left == 0
            };
            if last {
                finishing.spawn(self.clone().finalize(flight));
            }
        }
        while let Some(done) = finishing.join_next().await {
            if let Err(e) = done {
                error!(error = %e, "completion task failed");
            }
        }
    }

    /// Every group of a message is back: complete (or abandon) it.
    async fn finalize(self, flight: Arc<InFlight>) {
        let queue = self.queue.clone();
        let options = self.options.report.clone();
        let metrics = self.engine.metrics.clone();
        let (wake, clock) = (self.wake.clone(), self.clock.clone());
        let done = tokio::task::spawn_blocking(move || {
            let (results, aborted) = {
                let st = flight.state.lock().unwrap_or_else(PoisonError::into_inner);
                (st.results.clone(), st.aborted)
            };
            let id = flight.leased.id;
            if aborted && results.is_empty() {
                if let Err(e) = queue.abandon(&flight.leased) {
                    error!(queue_id = %id, error = %e, "giving the lease back failed");
                } else {
                    info!(queue_id = %id, "delivery cut off by shutdown; lease given back");
                }
            } else {
                let now = clock.now();
                match report::report(&queue, &flight.leased, &results, &options, &metrics, now) {
                    Ok(s) if s.completion.finished => info!(queue_id = %id, "removed"),
                    Ok(_) => {}
                    Err(e) => error!(queue_id = %id, error = %e, "recording the outcome failed"),
                }
            }
            drop(flight); // frees the message slot
        })
        .await;
        if let Err(e) = done {
            error!(error = %e, "completion task failed");
        }
        wake.notify_one();
    }
}

#[path = "lease_keeper.rs"]
mod keeper;
#[path = "scheduler_worker.rs"]
mod worker;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
#[path = "scheduler_tests.rs"]
mod tests;
