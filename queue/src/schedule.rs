//! Pure scheduling decisions and the `due` index key layout.
//!
//! The `due` tree is keyed `next_attempt_ms (u64 BE) ‖ queue id (u64 BE)`, so "what is due at
//! `now`" is the range `..(now+1)‖0` and "when is the next one due" is `first()`: both
//! O(log n), whatever the queue size.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::id::QueueId;

/// Milliseconds since the Unix epoch (0 before it).
pub(crate) fn to_ms(t: SystemTime) -> u64 {
    let ms = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// `t + d`, saturating at a far-future moment instead of panicking on overflow (a configured
/// `max_age` of "1000000y" must not crash the relay).
pub fn later(t: SystemTime, d: Duration) -> SystemTime {
    t.checked_add(d)
        .unwrap_or_else(|| UNIX_EPOCH + Duration::from_secs(u64::from(u32::MAX) * 64))
}

pub(crate) fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

pub(crate) fn due_key(ms: u64, id: QueueId) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&ms.to_be_bytes());
    k[8..].copy_from_slice(&id.key());
    k
}

/// Splits a `due` key; `None` for a malformed one.
pub(crate) fn parse_due_key(k: &[u8]) -> Option<(u64, QueueId)> {
    if k.len() != 16 {
        return None;
    }
    let ms = u64::from_be_bytes(k[..8].try_into().ok()?);
    Some((ms, QueueId::from_key(&k[8..])?))
}

pub(crate) fn rcpt_key(id: QueueId, index: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&id.key());
    k[8..].copy_from_slice(&index.to_be_bytes());
    k
}

/// The delay before the next attempt after the `deferrals`-th deferred attempt (1-based).
///
/// `retry[deferrals-1]` while the schedule lasts; after that the last interval repeats,
/// scaled by `jitter` (the caller draws it uniformly from `[0.9, 1.1]`) so that messages
/// deferred together by one outage do not all come back in the same second — Postfix's
/// `maximal_backoff_time` behaviour with spreading. An empty schedule means 5 minutes
/// (`QueueOptions` validation keeps it from happening).
pub fn retry_delay(retry: &[Duration], deferrals: u32, jitter: f64) -> Duration {
    let Some(last) = retry.last() else {
        return Duration::from_secs(300);
    };
    let i = usize::try_from(deferrals.saturating_sub(1)).unwrap_or(usize::MAX);
    match retry.get(i) {
        Some(d) if i + 1 < retry.len() => *d,
        // The last interval, and each repetition of it: jittered.
        _ => Duration::try_from_secs_f64(last.as_secs_f64() * jitter.clamp(0.5, 1.5))
            .unwrap_or(*last),
    }
}

/// When to try next: after the retry delay, but never later than the expiry moment, so that a
/// message is given its last chance exactly at `max_age` rather than up to one interval late.
pub fn next_attempt(now: SystemTime, delay: Duration, expires_at: SystemTime) -> SystemTime {
    let at = later(now, delay);
    if at > expires_at && expires_at > now {
        expires_at
    } else {
        at
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn m(n: u64) -> Duration {
        Duration::from_secs(60 * n)
    }

    #[test]
    fn schedule_then_last_repeats_with_jitter() {
        let r = [m(5), m(10), m(30)];
        assert_eq!(retry_delay(&r, 1, 1.1), m(5));
        assert_eq!(retry_delay(&r, 2, 1.1), m(10));
        assert_eq!(retry_delay(&r, 3, 1.0), m(30));
        assert_eq!(retry_delay(&r, 3, 0.9), m(27));
        assert_eq!(retry_delay(&r, 7, 1.1), m(33));
        assert_eq!(retry_delay(&r, 0, 1.0), m(5));
        assert_eq!(retry_delay(&[], 3, 1.0), m(5));
        assert_eq!(retry_delay(&[Duration::MAX], 3, 1.1), Duration::MAX);
    }

    #[test]
    fn next_attempt_capped_at_expiry() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(next_attempt(now, m(5), now + m(60)), now + m(5));
        assert_eq!(next_attempt(now, m(5), now + m(2)), now + m(2));
        // Already expired: no cap (the caller expires it instead).
        assert_eq!(next_attempt(now, m(5), now - m(2)), now + m(5));
        // Absurd durations saturate instead of panicking.
        assert!(later(now, Duration::MAX) > now + m(1_000_000_000));
    }

    #[test]
    fn due_keys_sort_by_time_then_id() {
        let a: QueueId = "000000000001".parse().unwrap();
        let b: QueueId = "000000000002".parse().unwrap();
        assert!(due_key(5, b) < due_key(6, a));
        assert!(due_key(5, a) < due_key(5, b));
        assert_eq!(parse_due_key(&due_key(77, b)), Some((77, b)));
        assert_eq!(parse_due_key(b"short"), None);
    }
}
