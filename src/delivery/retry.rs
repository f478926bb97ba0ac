//! Retry arithmetic (pure): when the next attempt is due, when a message
//! has expired, when the one delay warning is due. Time comes in as
//! arguments and randomness as a number in `[0, 1)`, so every rule is a
//! table test.
//!
//! `[queue] retry`, `max_age`, `delay_warning` (README "Configuration", `config/danerelay.toml`) map
//! 1:1 onto [`RetryPolicy`]: `RetryPolicy::new(q.retry.clone(), q.max_age,
//! q.delay_warning)`.

use std::time::{Duration, SystemTime};

/// The last interval repeats; each repeat is stretched by up to this share
/// so that messages deferred together spread out instead of retrying in lockstep.
pub const JITTER: f64 = 0.10;

/// How a message is retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Intervals after the 1st, 2nd, … failed attempt. Never empty.
    pub schedule: Vec<Duration>,
    /// After this age a message bounces with 4.4.7.
    pub max_age: Duration,
    /// Age at which one "delayed" DSN is sent; `None` = never.
    pub delay_warning: Option<Duration>,
}

/// What to do after a failed (deferred) attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try again at this time.
    RetryAt(SystemTime),
    /// Too old: bounce the remaining recipients with 4.4.7.
    Expire,
}

impl RetryPolicy {
    /// From `[queue]`. An empty schedule becomes a single 5 minute interval
    /// (the config validator refuses empty lists; this keeps the math total).
    pub fn new(
        schedule: Vec<Duration>,
        max_age: Duration,
        delay_warning: Option<Duration>,
    ) -> RetryPolicy {
        let schedule = if schedule.is_empty() {
            vec![Duration::from_secs(300)]
        } else {
            schedule
        };
        RetryPolicy {
            schedule,
            max_age,
            delay_warning: delay_warning.filter(|d| !d.is_zero()),
        }
    }

    /// The scheduled wait after the `failures`-th failed attempt (1-based);
    /// beyond the schedule, the last interval (jitter is added by `next_attempt`).
    pub fn interval(&self, failures: u32) -> Duration {
        let index = failures.saturating_sub(1) as usize;
        let last = self.schedule.len() - 1;
        match self.schedule.get(index) {
            Some(d) if index < last => *d,
            _ => self.schedule[last],
        }
    }

    /// When to try again after `failures` failed attempts (the latest at
    /// `now`) of a message received at `received`. The retry never lands
    /// after the expiry instant: the last try happens at `max_age`, so the
    /// bounce goes out on time rather than one interval late.
    pub fn next_attempt(
        &self,
        received: SystemTime,
        failures: u32,
        now: SystemTime,
        jitter: f64,
    ) -> Next {
        let expires = received + self.max_age;
        if now >= expires {
            return Next::Expire;
        }
        let base = self.interval(failures);
        // Jitter only on repeats of the last interval, `jitter` in [0, 1) clamped.
        let repeats = failures as usize > self.schedule.len();
        let wait = if repeats {
            base.mul_f64(1.0 + jitter.clamp(0.0, 0.999_999) * JITTER)
        } else {
            base
        };
        Next::RetryAt((now + wait).min(expires))
    }

    /// Whether the message is past `max_age` at `now`.
    pub fn is_expired(&self, received: SystemTime, now: SystemTime) -> bool {
        now >= received + self.max_age
    }

    /// Whether the one "delayed" DSN is due now: enabled, not yet sent, the
    /// message is at least `delay_warning` old and not yet expired (an
    /// expired message gets the failure DSN instead).
    pub fn delay_warning_due(
        &self,
        received: SystemTime,
        now: SystemTime,
        already_sent: bool,
    ) -> bool {
        match self.delay_warning {
            Some(after) if !already_sent => {
                now >= received + after && !self.is_expired(received, now)
            }
            _ => false,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const M: u64 = 60;
    fn mins(m: u64) -> Duration {
        Duration::from_secs(m * M)
    }

    fn spec_default() -> RetryPolicy {
        // The documented defaults: retry = ["5m","10m","30m","1h","2h","4h"], max_age 5d, delay_warning 4h.
        RetryPolicy::new(
            vec![mins(5), mins(10), mins(30), mins(60), mins(120), mins(240)],
            Duration::from_secs(5 * 24 * 3600),
            Some(mins(240)),
        )
    }

    #[test]
    fn schedule_then_last_interval_repeats_with_jitter() {
        let p = spec_default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let at = |n: Next| match n {
            Next::RetryAt(t) => t.duration_since(t0).unwrap(),
            Next::Expire => panic!("unexpected expiry"),
        };
        // (failures, jitter, expected wait)
        let table = [
            (1, 0.9, mins(5)),
            (2, 0.9, mins(10)),
            (3, 0.0, mins(30)),
            (5, 0.5, mins(120)),
            (6, 0.0, mins(240)),
            (6, 0.5, mins(240)),
            (7, 0.0, mins(240)),
            (7, 0.5, mins(240) + mins(12)),
            (40, 0.5, mins(252)),
            (u32::MAX, 0.0, mins(240)),
        ];
        for (failures, jitter, want) in table {
            assert_eq!(
                at(p.next_attempt(t0, failures, t0, jitter)),
                want,
                "failures {failures} jitter {jitter}"
            );
        }
        // Jitter stays below 10% even for silly inputs.
        let w = at(p.next_attempt(t0, 9, t0, 7.0));
        assert!(w < mins(264) && w > mins(263), "{w:?}");
        assert_eq!(at(p.next_attempt(t0, 9, t0, -1.0)), mins(240));
    }

    #[test]
    fn expiry_at_max_age() {
        let p = spec_default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let day = Duration::from_secs(24 * 3600);
        // Retry would land after the expiry: clamp to the expiry instant.
        let now = t0 + 5 * day - mins(60);
        assert_eq!(
            p.next_attempt(t0, 30, now, 0.0),
            Next::RetryAt(t0 + 5 * day)
        );
        // At or past max_age: bounce (4.4.7, see outcome::expired).
        assert_eq!(p.next_attempt(t0, 31, t0 + 5 * day, 0.0), Next::Expire);
        assert_eq!(p.next_attempt(t0, 1, t0 + 6 * day, 0.0), Next::Expire);
        assert!(!p.is_expired(t0, t0 + 5 * day - Duration::from_secs(1)));
        assert!(p.is_expired(t0, t0 + 5 * day));
    }

    #[test]
    fn one_delay_warning() {
        let p = spec_default();
        let t0 = SystemTime::UNIX_EPOCH;
        let day = Duration::from_secs(24 * 3600);
        let table = [
            (mins(239), false, false),
            (mins(240), false, true),
            (mins(241), true, false),
            (day, false, true),
            (5 * day, false, false),
        ];
        for (age, sent, want) in table {
            assert_eq!(
                p.delay_warning_due(t0, t0 + age, sent),
                want,
                "age {age:?} sent {sent}"
            );
        }
        let off = RetryPolicy::new(vec![mins(5)], day, Some(Duration::ZERO));
        assert!(!off.delay_warning_due(t0, t0 + mins(600), false));
        let none = RetryPolicy::new(vec![], day, None);
        assert_eq!(none.interval(3), mins(5));
        assert!(!none.delay_warning_due(t0, t0 + mins(600), false));
    }
}
