//! Traffic shaping per destination (the MX host set, `site`): the
//! `delivery.route` budgets `max_connections`, `message_rate` and
//! `connection_rate`, and the adaptive part — a destination that says
//! "slow down" (421, or 4.7.x at connect, MAIL or DATA) gets half the
//! connections and a backoff window, and earns connections back one by one
//! with delivered mail (additive increase, multiplicative decrease, as TCP
//! congestion control, RFC 5681 §3.1).
//!
//! The decisions are pure ([`gcra`], [`Adaptive`], [`throttles`]); the
//! [`Shaper`] keeps their state per destination for the scheduler's workers
//! and, with `[cluster] redis_url`, asks the shared budget first
//! (`crate::cluster`), falling back to the local one whenever Redis does not
//! answer in time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

pub use crate::cluster::Budget;
use crate::config::Rate;
use crate::metrics::Metrics;
use crate::smtp::client::Phase;
use crate::smtp::Reply;

use super::site::Site;

/// Generic cell rate algorithm (the leaky bucket as a meter, ITU-T I.371;
/// what `governor` and redis-cell implement): `tat` is the theoretical
/// arrival time of the next cell, in µs on any clock shared by the callers.
/// Taking `n` cells at `now` is allowed while it puts `tat` no further than
/// `burst` intervals ahead of `now`; the answer is the new `tat`, or how
/// long (µs) to wait before the same request would be allowed. The Redis
/// script in `cluster` is this function, line by line.
pub fn gcra(tat: u64, now: u64, interval: u64, burst: u32, n: u32) -> Result<u64, u64> {
    let new_tat = tat.max(now) + interval * u64::from(n);
    let allowed_until = now + interval * u64::from(burst);
    if new_tat <= allowed_until {
        Ok(new_tat)
    } else {
        Err(new_tat - allowed_until)
    }
}

/// Whether a reply tells the relay to slow down for the whole destination.
/// 421 anywhere is the server closing the channel for now (RFC 5321 §3.8,
/// §4.2.2 "service not available"); a transient 4.7.x (RFC 3463 §3.8,
/// security or policy status — what large providers use for rate limits,
/// e.g. 421-4.7.28 / 451 4.7.650) at the greeting, EHLO, MAIL or DATA is
/// about the sender, not one mailbox. At RCPT it is about that recipient,
/// and 4.2.x is always per mailbox (RFC 3463 §3.3): neither throttles.
pub fn throttles(phase: Phase, reply: &Reply) -> bool {
    if reply.is_closing() {
        return true;
    }
    let session_level = matches!(
        phase,
        Phase::Greeting
            | Phase::Ehlo
            | Phase::Helo
            | Phase::Mail
            | Phase::Data
            | Phase::DataBlock
            | Phase::FinalDot
            | Phase::Bdat
    );
    let status = reply.status();
    session_level && reply.is_transient() && status.0 == 4 && status.1 == 7
}

/// How the adaptive part behaves (not configuration: the defaults are what
/// the relay runs with; tests shorten them).
#[derive(Debug, Clone, Copy)]
pub struct ShapingOptions {
    /// The first backoff window after a throttling reply.
    pub backoff: Duration,
    /// Repeated throttling doubles the window up to this.
    pub max_backoff: Duration,
    /// Delivered recipients that earn one connection back.
    pub recover_after: u32,
}

impl Default for ShapingOptions {
    fn default() -> ShapingOptions {
        ShapingOptions {
            backoff: Duration::from_secs(60),
            max_backoff: Duration::from_secs(15 * 60),
            recover_after: 20,
        }
    }
}

/// The adaptive state of one destination.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Adaptive {
    /// The reduced connection cap; `None` = the configured limit.
    cap: Option<usize>,
    backoff_until: Option<Instant>,
    /// Throttles since the cap was last back at the limit.
    strikes: u32,
    delivered: u32,
}

impl Adaptive {
    /// A throttling reply while `in_use` connections were open: half of
    /// them (at least one) and a backoff window, doubled per repeat. Replies
    /// arriving during the window (the other connections' answers to the
    /// same overload) count once.
    pub fn on_throttle(&mut self, now: Instant, limit: usize, in_use: usize, o: &ShapingOptions) {
        if self.backoff_until.is_some_and(|t| now < t) {
            return;
        }
        let base = self.cap.unwrap_or(limit).min(in_use.max(1));
        self.cap = Some((base / 2).max(1));
        let factor = 2u32.saturating_pow(self.strikes.min(16));
        self.backoff_until = Some(now + o.backoff.saturating_mul(factor).min(o.max_backoff));
        self.strikes += 1;
        self.delivered = 0;
    }

    /// `n` recipients delivered: every `recover_after` of them one
    /// connection more, until the configured limit is reached again.
    pub fn on_delivered(&mut self, n: u32, limit: usize, o: &ShapingOptions) {
        let Some(mut cap) = self.cap else { return };
        self.delivered += n;
        while self.delivered >= o.recover_after.max(1) && cap < limit {
            self.delivered -= o.recover_after.max(1);
            cap += 1;
        }
        if cap >= limit {
            *self = Adaptive::default();
        } else {
            self.cap = Some(cap);
        }
    }

    /// The connection cap now (`limit` when not reduced).
    pub fn cap(&self, limit: usize) -> usize {
        self.cap.map_or(limit, |c| c.min(limit))
    }

    /// The end of the backoff window, while it lasts.
    pub fn backoff(&self, now: Instant) -> Option<Instant> {
        self.backoff_until.filter(|t| now < *t)
    }

    /// Reduced connections or in a backoff window.
    pub fn throttled(&self, now: Instant) -> bool {
        self.cap.is_some() || self.backoff(now).is_some()
    }
}

/// A destination's state as `queue summary` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationView {
    /// The MX host set (or next hop) as `site` prints it.
    pub destination: String,
    pub throttled: bool,
    /// Unix seconds at which the backoff window ends, while it lasts.
    pub backoff_until: Option<u64>,
    /// Connections open (workers serving it) now.
    pub connections: usize,
    /// The connection cap now: the limit, or less after throttling.
    pub max_connections: usize,
    pub message_rate: Option<String>,
    pub connection_rate: Option<String>,
}

/// One destination's budgets and state.
#[derive(Debug)]
struct DestState {
    limit: usize,
    message_rate: Option<Rate>,
    connection_rate: Option<Rate>,
    messages: u64,
    connections: u64,
    adaptive: Adaptive,
    workers: usize,
    last_used: Instant,
}

/// The shaping state of every destination with work (cheap to clone).
#[derive(Clone)]
pub struct Shaper {
    states: Arc<Mutex<HashMap<Site, DestState>>>,
    options: ShapingOptions,
    metrics: Metrics,
    /// The µs clock of the local buckets starts here.
    origin: Instant,
    cluster: Option<crate::cluster::Cluster>,
    /// This replica's name in shared connection slots.
    replica: Arc<str>,
}

/// How long a destination's state outlives its last use when not throttled.
const FORGET_AFTER: Duration = Duration::from_secs(600);

impl Shaper {
    pub fn new(options: ShapingOptions, metrics: Metrics) -> Shaper {
        Shaper {
            states: Arc::default(),
            options,
            metrics,
            origin: Instant::now(),
            cluster: None,
            replica: Arc::from(format!("{:016x}", rand::random::<u64>())),
        }
    }

    /// Shares budgets and backoff with the other replicas through Redis.
    pub fn with_cluster(mut self, cluster: crate::cluster::Cluster) -> Shaper {
        self.cluster = Some(cluster);
        self
    }

    /// This replica's (random) name in shared state.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Site, DestState>> {
        crate::sync::lock(&self.states)
    }

    fn now_us(&self, now: Instant) -> u64 {
        u64::try_from(now.duration_since(self.origin).as_micros()).unwrap_or(u64::MAX)
    }

    /// Work for `site` arrived from a domain with these budgets: the
    /// strictest of all its domains' apply.
    pub fn admit(&self, site: &Site, limit: usize, message: Option<Rate>, conn: Option<Rate>) {
        let now = Instant::now();
        let mut map = self.lock();
        let st = map.entry(site.clone()).or_insert_with(|| DestState {
            limit,
            message_rate: message,
            connection_rate: conn,
            messages: 0,
            connections: 0,
            adaptive: Adaptive::default(),
            workers: 0,
            last_used: now,
        });
        st.limit = st.limit.min(limit).max(1);
        st.message_rate = Rate::stricter(st.message_rate, message);
        st.connection_rate = Rate::stricter(st.connection_rate, conn);
        st.last_used = now;
    }

    /// The connection cap of `site` now (after adaptive reduction).
    pub fn cap(&self, site: &Site) -> usize {
        self.lock()
            .get(site)
            .map_or(usize::MAX, |s| s.adaptive.cap(s.limit))
    }

    /// The largest take a worker may ask for (a rate's burst).
    pub fn max_take(&self, site: &Site) -> Option<usize> {
        let map = self.lock();
        let rate = map.get(site)?.message_rate?;
        usize::try_from(rate.burst()).ok()
    }

    /// How many workers serve `site` now (for the summary).
    pub fn note_workers(&self, site: &Site, workers: usize) {
        if let Some(s) = self.lock().get_mut(site) {
            s.workers = workers;
        }
    }

    /// The end of `site`'s backoff window, local or shared.
    pub async fn backoff(&self, site: &Site) -> Option<Instant> {
        let now = Instant::now();
        let local = self.lock().get(site).and_then(|s| s.adaptive.backoff(now));
        let shared = match &self.cluster {
            Some(c) => c
                .backoff_until(&site.to_string())
                .await
                .and_then(|t| t.duration_since(SystemTime::now()).ok())
                .map(|left| now + left),
            None => None,
        };
        local.max(shared)
    }

    /// Takes `n` cells of `site`'s budget, or says how long to wait first
    /// (`Ok` too when the budget is unlimited). Shared through Redis when a
    /// cluster is set and answers; else the local bucket.
    pub async fn try_take(&self, site: &Site, budget: Budget, n: u32) -> Result<(), Duration> {
        let rate = {
            let map = self.lock();
            let Some(s) = map.get(site) else {
                return Ok(());
            };
            match budget {
                Budget::Messages => s.message_rate,
                Budget::Connections => s.connection_rate,
            }
        };
        let Some(rate) = rate else { return Ok(()) };
        let n = n.clamp(1, rate.burst());
        if let Some(c) = &self.cluster {
            if let Some(answer) = c.take(&site.to_string(), budget, rate, n).await {
                return answer;
            }
        }
        let now = self.now_us(Instant::now());
        let interval = u64::try_from(rate.interval().as_micros()).unwrap_or(u64::MAX);
        let mut map = self.lock();
        let Some(s) = map.get_mut(site) else {
            return Ok(());
        };
        let tat = match budget {
            Budget::Messages => &mut s.messages,
            Budget::Connections => &mut s.connections,
        };
        match gcra(*tat, now, interval, rate.burst(), n) {
            Ok(new) => {
                *tat = new;
                Ok(())
            }
            Err(wait) => Err(Duration::from_micros(wait)),
        }
    }

    /// With a cluster: takes or renews `member`'s shared connection slot
    /// of `site` (its cap shared by every replica); `false` while all are
    /// taken. Without one, or while Redis does not answer: `true` (the
    /// local cap applies).
    pub async fn connection_slot(&self, site: &Site, member: &str) -> bool {
        let Some(c) = &self.cluster else { return true };
        let cap = self.cap(site);
        if cap == usize::MAX {
            return true;
        }
        c.acquire_slot(&site.to_string(), member, cap)
            .await
            .unwrap_or(true)
    }

    /// Gives `member`'s shared connection slot back (a no-op without cluster).
    pub async fn release_slot(&self, site: &Site, member: &str) {
        if let Some(c) = &self.cluster {
            c.release_slot(&site.to_string(), member).await;
        }
    }

    /// What a take's outcomes say about the destination: a throttling
    /// reply shapes it down; deliveries earn connections back.
    pub async fn record(&self, site: &Site, throttled: bool, delivered: u32) {
        let now = Instant::now();
        let (went_down, backoff_until) = {
            let mut map = self.lock();
            let Some(s) = map.get_mut(site) else { return };
            s.last_used = now;
            let before = s.adaptive.clone();
            if throttled {
                let in_use = s.workers;
                s.adaptive.on_throttle(now, s.limit, in_use, &self.options);
            } else if delivered > 0 {
                s.adaptive.on_delivered(delivered, s.limit, &self.options);
            }
            let down = s.adaptive.backoff(now).is_some() && before.backoff(now).is_none();
            (down, s.adaptive.backoff(now))
        };
        if went_down {
            let cap = self.cap(site);
            tracing::warn!(destination = %site, max_connections = cap,
                backoff = ?backoff_until.map(|t| t - now),
                "destination throttles us: fewer connections and a backoff window");
            if let (Some(c), Some(until)) = (&self.cluster, backoff_until) {
                c.set_backoff(&site.to_string(), SystemTime::now() + (until - now))
                    .await;
            }
        }
        self.refresh(now);
    }

    /// Sets `danerelay_destinations_throttled` and forgets destinations
    /// unused for a while (called by the scheduler every second).
    pub fn refresh(&self, now: Instant) {
        let mut map = self.lock();
        map.retain(|_, s| {
            s.adaptive.throttled(now) || s.workers > 0 || now - s.last_used < FORGET_AFTER
        });
        let n = map.values().filter(|s| s.adaptive.throttled(now)).count();
        self.metrics
            .destinations_throttled
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Every known destination's state, for `queue summary`.
    pub fn views(&self) -> Vec<DestinationView> {
        let now = Instant::now();
        let wall = SystemTime::now();
        let map = self.lock();
        let mut out: Vec<DestinationView> = map
            .iter()
            .map(|(site, s)| DestinationView {
                destination: site.to_string(),
                throttled: s.adaptive.throttled(now),
                backoff_until: s.adaptive.backoff(now).map(|t| {
                    (wall + (t - now))
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs())
                }),
                connections: s.workers,
                max_connections: s.adaptive.cap(s.limit),
                message_rate: s.message_rate.map(|r| r.to_string()),
                connection_rate: s.connection_rate.map(|r| r.to_string()),
            })
            .collect();
        out.sort_by(|a, b| a.destination.cmp(&b.destination));
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "shaping_tests.rs"]
mod tests;
