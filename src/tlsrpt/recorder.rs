//! The recorder: delivery hands it each session's TLS result
//! ([`Recorder::record`], a short lock and no I/O), and a background task
//! adds the batch to the durable counts in the queue database
//! (`Queue::state_update`, namespace `tlsrpt`, key `c/<day>/<domain>`) every
//! `persist_every` and once more at shutdown. A crash — not a clean stop —
//! loses at most the sessions of the last `persist_every` (5 s); the counts
//! survive restarts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use danerelay_queue::{Queue, QueueError};
use tokio_util::sync::CancellationToken;

use super::day::Day;
use super::model::{DomainDay, SessionResult};
use crate::delivery::clock::Clock;

/// The queue-database namespace of everything TLS-RPT keeps.
pub const NS: &str = "tlsrpt";

/// The durable key of `domain`'s counts on `day`.
pub fn counts_key(day: Day, domain: &str) -> String {
    format!("c/{day}/{domain}")
}

fn parse_counts_key(key: &str) -> Option<(Day, &str)> {
    let rest = key.strip_prefix("c/")?;
    let (day, domain) = rest.split_once('/')?;
    Some((Day::parse(day)?, domain))
}

/// Counts sessions per policy domain and UTC day.
pub struct Recorder {
    pending: Mutex<HashMap<(Day, String), DomainDay>>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
    }
}

impl Recorder {
    pub fn new(clock: Arc<dyn Clock>) -> Arc<Recorder> {
        Arc::new(Recorder {
            pending: Mutex::new(HashMap::new()),
            clock,
        })
    }

    /// The UTC day now, by this recorder's clock.
    pub fn today(&self) -> Day {
        Day::of(self.clock.now())
    }

    /// Counts one session, on today's UTC date.
    pub fn record(&self, result: SessionResult) {
        let day = self.today();
        let mut pending = crate::sync::lock(&self.pending);
        pending
            .entry((day, result.domain))
            .or_default()
            .add(&result.policy, result.failure);
    }

    /// Adds the counts recorded since the last call to the durable ones
    /// and flushes the queue database (blocking: call off the runtime).
    /// On a storage error the batch stays in memory for the next call.
    pub fn persist(&self, queue: &Queue) -> Result<usize, QueueError> {
        let batch: Vec<_> = crate::sync::lock(&self.pending).drain().collect();
        let n = batch.len();
        let mut failed = Vec::new();
        let mut error = None;
        for ((day, domain), counts) in batch {
            if error.is_some() {
                failed.push(((day, domain), counts));
                continue;
            }
            let key = counts_key(day, &domain);
            let r = queue.state_update(NS, &key, |old| {
                let mut total = decode(&key, old);
                total.merge(counts.clone());
                serde_json::to_vec(&total).ok()
            });
            if let Err(e) = r {
                error = Some(e);
                failed.push(((day, domain), counts));
            }
        }
        let flushed = if error.is_none() {
            queue.flush()
        } else {
            Ok(())
        };
        if !failed.is_empty() {
            let mut pending = crate::sync::lock(&self.pending);
            for (k, counts) in failed {
                pending.entry(k).or_default().merge(counts);
            }
        }
        match error {
            Some(e) => Err(e),
            None => flushed.map(|()| n),
        }
    }

    /// What is recorded for `(day, domain)` and not yet persisted.
    pub fn unpersisted(&self, day: Day) -> Vec<(String, DomainDay)> {
        crate::sync::lock(&self.pending)
            .iter()
            .filter(|((d, _), _)| *d == day)
            .map(|((_, domain), c)| (domain.clone(), c.clone()))
            .collect()
    }
}

fn decode(key: &str, bytes: Option<&[u8]>) -> DomainDay {
    match bytes.map(serde_json::from_slice::<DomainDay>) {
        None => DomainDay::default(),
        Some(Ok(d)) => d,
        Some(Err(e)) => {
            tracing::warn!(%key, error = %e, "TLS-RPT counts record unreadable; starting it afresh");
            DomainDay::default()
        }
    }
}

/// Every durable count record: `(day, domain, counts)`, in key order.
pub fn stored(queue: &Queue) -> Result<Vec<(Day, String, DomainDay)>, QueueError> {
    Ok(queue
        .state_scan(NS)?
        .into_iter()
        .filter_map(|(key, value)| {
            let (day, domain) = parse_counts_key(&key)?;
            Some((day, domain.to_string(), decode(&key, Some(&value))))
        })
        .collect())
}

/// The counts of `day` (durable plus not yet persisted), by domain, sorted.
pub fn counts_for(
    queue: &Queue,
    recorder: Option<&Recorder>,
    day: Day,
) -> Result<Vec<(String, DomainDay)>, QueueError> {
    let mut by_domain: std::collections::BTreeMap<String, DomainDay> = stored(queue)?
        .into_iter()
        .filter(|(d, _, _)| *d == day)
        .map(|(_, domain, c)| (domain, c))
        .collect();
    for (domain, c) in recorder.map(|r| r.unpersisted(day)).unwrap_or_default() {
        by_domain.entry(domain).or_default().merge(c);
    }
    Ok(by_domain.into_iter().collect())
}

/// Persists every `every`, and once more when `shutdown` fires.
pub async fn run_persist(
    recorder: Arc<Recorder>,
    queue: Queue,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let last = tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = tick.tick() => false,
        };
        let (r, q) = (recorder.clone(), queue.clone());
        match tokio::task::spawn_blocking(move || r.persist(&q)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "TLS-RPT counts not persisted; kept in memory")
            }
            Err(e) => tracing::warn!(error = %e, "TLS-RPT persist task failed"),
        }
        if last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::model::{Policy, ResultType};
    use super::*;
    use crate::delivery::clock::SystemClock;

    fn opts() -> danerelay_queue::QueueOptions {
        danerelay_queue::QueueOptions {
            retry: vec![Duration::from_secs(60)],
            max_age: Duration::from_secs(3600),
            lease: Duration::from_secs(60),
        }
    }

    fn session(domain: &str, failure: Option<ResultType>) -> SessionResult {
        SessionResult {
            domain: domain.into(),
            policy: Policy::no_policy(),
            failure: failure.map(|result| super::super::model::Failure {
                result,
                sending_mta_ip: None,
                receiving_mx_hostname: Some("mx.example.net".into()),
                receiving_ip: None,
                reason: None,
            }),
        }
    }

    #[test]
    fn counts_add_up_across_persists_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let today = Day::of(std::time::SystemTime::now());
        {
            let q = Queue::open(dir.path(), opts()).unwrap();
            let r = Recorder::new(Arc::new(SystemClock));
            r.record(session("a.test", None));
            r.record(session("a.test", Some(ResultType::StarttlsNotSupported)));
            assert_eq!(r.persist(&q).unwrap(), 1);
            r.record(session("a.test", None));
            r.record(session("b.test", None));
            // Before the second persist, a reader sees both halves.
            let seen = counts_for(&q, Some(&r), today).unwrap();
            assert_eq!(seen[0].1.policies[0].1.success, 2);
            assert_eq!(r.persist(&q).unwrap(), 2);
            assert_eq!(r.persist(&q).unwrap(), 0);
        }
        let q = Queue::open(dir.path(), opts()).unwrap();
        let all = counts_for(&q, None, today).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].0, "a.test");
        let c = &all[0].1.policies[0].1;
        assert_eq!((c.success, c.failure_total()), (2, 1));
        assert_eq!(all[1].1.policies[0].1.success, 1);
        assert!(counts_for(&q, None, today.prev()).unwrap().is_empty());
    }

    #[test]
    fn a_corrupt_record_is_replaced_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path(), opts()).unwrap();
        let r = Recorder::new(Arc::new(SystemClock));
        q.state_put(NS, &counts_key(r.today(), "a.test"), b"{not json")
            .unwrap();
        r.record(session("a.test", None));
        r.persist(&q).unwrap();
        let all = counts_for(&q, None, r.today()).unwrap();
        assert_eq!(all[0].1.policies[0].1.success, 1);
    }

    #[test]
    fn keys_parse_back() {
        let day = Day::parse("2026-12-04").unwrap();
        assert_eq!(
            parse_counts_key(&counts_key(day, "x.test")),
            Some((day, "x.test"))
        );
        assert_eq!(parse_counts_key("o/2026-12-04/x.test"), None);
    }
}
