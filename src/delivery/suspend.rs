//! Destinations suspended by hand (`danerelay queue suspend DOMAIN [--for D]`):
//! the scheduler connects to nobody for a suspended recipient domain and
//! defers its recipients with [`suspended_outcome`] instead, so the mail
//! stays queued and ages normally (`queue.max_age` still bounces it with
//! 4.4.7). Resuming — by hand or when `--for` runs out — makes that
//! domain's waiting messages due at once.
//!
//! Suspensions live in the queue's state tree (namespace [`NAMESPACE`]),
//! flushed before the call returns, so they survive restarts; an in-memory
//! copy answers the scheduler without touching the disk.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use danerelay_queue::{ListFilter, Queue, QueueError};
use serde::{Deserialize, Serialize};

use super::outcome::{Outcome, Reason};
use crate::smtp::{EnhancedCode, Reply};

/// The queue state namespace of suspensions (key: the lower-cased domain).
pub const NAMESPACE: &str = "suspend";

/// Why a suspension could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum SuspendError {
    #[error("not a domain name: {0:?}")]
    BadDomain(String),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// One suspension: `until: None` lasts until `queue resume`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspension {
    /// Seconds since the Unix epoch.
    pub until: Option<u64>,
}

impl Suspension {
    /// Whether it still holds at `now` (an expiry at exactly `now` has run out).
    pub fn active(&self, now: SystemTime) -> bool {
        self.until.is_none_or(|u| secs(now) < u)
    }
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// The deferral a suspended recipient gets: local, temporary (RFC 3463
/// X.3.2 "system not accepting network messages" — here: by our choice).
pub fn suspended_outcome(domain: &str) -> Outcome {
    Outcome::Deferred(Reason {
        reply: Reply::local(
            451,
            EnhancedCode(4, 3, 2),
            format!("delivery to {domain} suspended by the operator"),
        ),
        remote: false,
    })
}

/// Normalises an operator's domain argument: lower case, no trailing dot,
/// letters/digits/`-`/`.` only (an IDN is given in its A-label form).
pub fn normalise(domain: &str) -> Result<String, SuspendError> {
    let d = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    let ok = !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(d)
    } else {
        Err(SuspendError::BadDomain(domain.to_string()))
    }
}

/// The suspended domains: durable in the queue, mirrored in memory. Cheap to clone.
#[derive(Clone)]
pub struct Suspensions {
    queue: Queue,
    map: Arc<Mutex<BTreeMap<String, Suspension>>>,
}

impl Suspensions {
    /// Loads the stored suspensions (blocking: call at start-up or off the runtime).
    pub fn load(queue: Queue) -> Result<Suspensions, QueueError> {
        let mut map = BTreeMap::new();
        for (domain, value) in queue.state_scan(NAMESPACE)? {
            match serde_json::from_slice::<Suspension>(&value) {
                Ok(s) => {
                    map.insert(domain, s);
                }
                Err(e) => {
                    tracing::warn!(domain, error = %e, "unreadable suspension record ignored")
                }
            }
        }
        Ok(Suspensions {
            queue,
            map: Arc::new(Mutex::new(map)),
        })
    }

    /// Whether deliveries to `domain` (lower case) are suspended at `now`.
    pub fn is_suspended(&self, domain: &str, now: SystemTime) -> bool {
        crate::sync::lock(&self.map)
            .get(domain)
            .is_some_and(|s| s.active(now))
    }

    /// Every suspension still active at `now`.
    pub fn list(&self, now: SystemTime) -> Vec<(String, Suspension)> {
        crate::sync::lock(&self.map)
            .iter()
            .filter(|(_, s)| s.active(now))
            .map(|(d, s)| (d.clone(), *s))
            .collect()
    }

    /// Suspends `domain` (for `duration`, or until resumed), durably. Blocking.
    pub fn suspend(
        &self,
        domain: &str,
        duration: Option<Duration>,
        now: SystemTime,
    ) -> Result<(String, Suspension), SuspendError> {
        let domain = normalise(domain)?;
        let s = Suspension {
            until: duration.map(|d| secs(now).saturating_add(d.as_secs().max(1))),
        };
        let value = serde_json::to_vec(&s).unwrap_or_default();
        self.queue.state_put(NAMESPACE, &domain, &value)?;
        self.queue.flush()?;
        crate::sync::lock(&self.map).insert(domain.clone(), s);
        tracing::info!(domain, until = ?s.until, "deliveries suspended");
        Ok((domain, s))
    }

    /// Lifts the suspension of `domain` and makes its waiting messages due now;
    /// returns whether it was suspended and how many messages moved. Blocking.
    pub fn resume(&self, domain: &str) -> Result<(bool, usize), SuspendError> {
        let domain = normalise(domain)?;
        let was = crate::sync::lock(&self.map).remove(&domain).is_some();
        let stored = self.queue.state_remove(NAMESPACE, &domain)?;
        self.queue.flush()?;
        let moved = self.wake(&domain)?;
        tracing::info!(domain, moved, "deliveries resumed");
        Ok((was || stored, moved))
    }

    /// Removes suspensions whose `--for` ran out at `now` and wakes their mail. Blocking.
    pub fn expire(&self, now: SystemTime) -> Result<Vec<String>, SuspendError> {
        let expired: Vec<String> = crate::sync::lock(&self.map)
            .iter()
            .filter(|(_, s)| !s.active(now))
            .map(|(d, _)| d.clone())
            .collect();
        for d in &expired {
            self.resume(d)?;
        }
        Ok(expired)
    }

    /// `retry_now` for every message with an open recipient in `domain`.
    fn wake(&self, domain: &str) -> Result<usize, QueueError> {
        let filter = ListFilter {
            domain: Some(domain.to_string()),
            ..ListFilter::default()
        };
        let mut moved = 0;
        for m in self.queue.list(&filter)? {
            if self.queue.retry_now(m.id)? {
                moved += 1;
            }
        }
        Ok(moved)
    }

    /// Expires `--for` suspensions once a second until `shutdown`.
    pub async fn run_expiry(self, shutdown: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let me = self.clone();
            match tokio::task::spawn_blocking(move || me.expire(SystemTime::now())).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "expiring suspensions failed"),
                Err(e) => tracing::warn!(error = %e, "expiring suspensions failed"),
            }
        }
    }
}

#[allow(clippy::unwrap_used)]
#[cfg(test)]
mod tests {
    use super::*;

    fn queue(dir: &std::path::Path) -> Queue {
        Queue::open(
            dir,
            danerelay_queue::QueueOptions {
                retry: vec![Duration::from_secs(3600)],
                max_age: Duration::from_secs(86400),
                lease: Duration::from_secs(60),
            },
        )
        .unwrap()
    }

    #[test]
    fn an_expiry_at_now_has_run_out() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        assert!(Suspension { until: None }.active(t));
        assert!(Suspension { until: Some(101) }.active(t));
        assert!(!Suspension { until: Some(100) }.active(t));
        assert!(!Suspension { until: Some(99) }.active(t));
    }

    #[test]
    fn domains_are_normalised_and_checked() {
        assert_eq!(normalise("Example.COM.").unwrap(), "example.com");
        assert_eq!(
            normalise("xn--bcher-kva.example").unwrap(),
            "xn--bcher-kva.example"
        );
        for bad in ["", ".", "a..b", "a b.example", "*.example.com", "a/b"] {
            assert!(normalise(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn suspensions_survive_a_reopen_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        {
            let s = Suspensions::load(queue(dir.path())).unwrap();
            s.suspend("Example.NET", None, now).unwrap();
            s.suspend("short.example", Some(Duration::from_secs(60)), now)
                .unwrap();
        }
        let s = Suspensions::load(queue(dir.path())).unwrap();
        assert!(s.is_suspended("example.net", now));
        assert!(s.is_suspended("short.example", now));
        assert!(!s.is_suspended("other.example", now));
        let later = now + Duration::from_secs(61);
        assert_eq!(s.list(later).len(), 1);
        assert_eq!(s.expire(later).unwrap(), vec!["short.example".to_string()]);
        assert!(!s.is_suspended("short.example", now));
        assert_eq!(s.resume("example.net").unwrap(), (true, 0));
        assert_eq!(s.resume("example.net").unwrap(), (false, 0));
        drop(s);
        let s = Suspensions::load(queue(dir.path())).unwrap();
        assert!(s.list(now).is_empty());
    }

    #[test]
    fn resume_makes_the_domains_waiting_mail_due() {
        let dir = tempfile::tempdir().unwrap();
        let q = queue(dir.path());
        let id = crate::testing::enqueue(&q, "a@example.org", &["b@example.net"]);
        let other = crate::testing::enqueue(&q, "a@example.org", &["c@example.com"]);
        let now = SystemTime::now();
        for l in q.lease_due(now, 10).unwrap() {
            let deferred = [(0, suspended_outcome("example.net").to_queue())];
            q.complete(&l, &deferred, now).unwrap();
        }
        // Both deferred for an hour; resuming example.net moves only its message.
        let s = Suspensions::load(q.clone()).unwrap();
        s.suspend("example.net", None, now).unwrap();
        assert_eq!(s.resume("example.net").unwrap(), (true, 1));
        let due: Vec<_> = q
            .lease_due(SystemTime::now() + Duration::from_secs(1), 10)
            .unwrap()
            .into_iter()
            .map(|l| l.id)
            .collect();
        assert_eq!(due, vec![id]);
        assert_ne!(id, other);
    }
}
