//! The AUTH failure throttle: a delay before answering each failed AUTH,
//! growing with a client network's recent failures, so password guessing
//! from one place gets slow while others log in unhindered.

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};

/// Counts AUTH failures per client network across connections and says how
/// long to wait before answering the next failure: 100 ms doubling per recent
/// failure, capped at 5 s.
///
/// A GCRA from `governor` keyed by [`throttle_key`]: each failure spends one
/// of [`FAILURE_BURST`] cells and one cell comes back every
/// `THROTTLE_WINDOW / FAILURE_BURST`, so a burst of failures is forgotten
/// within 15 minutes. IPv6 clients are keyed by their /64 (RFC 4291 §2.5.4:
/// one end site's interfaces share it, so rotating addresses within it buys
/// nothing). Memory stays bounded without a global reset: once the map is
/// large, only keys whose budget is fully restored are swept, so a flood from
/// many networks never clears another client's count.
pub struct FailureThrottle<C: governor::clock::Clock = governor::clock::DefaultClock> {
    rate: RateLimiter<IpAddr, HashMapStateStore<IpAddr>, C, StateInformationMiddleware>,
    /// Map size at which the next sweep runs; doubles when a sweep frees
    /// little, so a flood of live keys costs amortised O(1) per failure.
    sweep_at: AtomicUsize,
}

const THROTTLE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Failures remembered at most: the 7th recent failure already waits the 5 s cap.
const FAILURE_BURST: NonZeroU32 = NonZeroU32::new(7).expect("non-zero");
/// Keys kept before a sweep of fully recovered ones.
const THROTTLE_SWEEP_AT: usize = 100_000;

/// The throttle's key for `ip`: an IPv4 address as is (also when it arrives
/// IPv4-mapped), an IPv6 address as its /64.
pub fn throttle_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let net = u128::from(v6) & !u128::from(u64::MAX);
            IpAddr::V6(Ipv6Addr::from(net))
        }
        v4 => v4,
    }
}

impl<C: governor::clock::Clock> std::fmt::Debug for FailureThrottle<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailureThrottle")
            .field("keys", &self.rate.len())
            .finish_non_exhaustive()
    }
}

impl Default for FailureThrottle {
    fn default() -> Self {
        Self::with_clock(governor::clock::DefaultClock::default())
    }
}

impl<C: governor::clock::Clock> FailureThrottle<C> {
    /// A throttle reading time from `clock` (tests pass a fake one).
    pub fn with_clock(clock: C) -> Self {
        let period = THROTTLE_WINDOW / FAILURE_BURST.get();
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_hour(FAILURE_BURST))
            .allow_burst(FAILURE_BURST);
        Self {
            rate: RateLimiter::hashmap_with_clock(quota, clock).with_middleware(),
            sweep_at: AtomicUsize::new(THROTTLE_SWEEP_AT),
        }
    }

    /// Records a failure from `ip` and returns the delay to apply before replying.
    pub fn record_failure(&self, ip: IpAddr) -> Duration {
        self.sweep();
        match self.rate.check_key(&throttle_key(ip)) {
            Ok(state) => {
                let recent = FAILURE_BURST.get() - state.remaining_burst_capacity();
                failure_delay(recent)
            }
            // Budget spent: more failures than the burst within the window.
            Err(_) => failure_delay(u32::MAX),
        }
    }

    /// Keys (client networks) remembered now.
    pub fn len(&self) -> usize {
        self.rate.len()
    }

    /// True when no client network is remembered.
    pub fn is_empty(&self) -> bool {
        self.rate.is_empty()
    }

    fn sweep(&self) {
        let at = self.sweep_at.load(Ordering::Relaxed);
        if self.rate.len() < at {
            return;
        }
        self.rate.retain_recent();
        self.rate.shrink_to_fit();
        let next = (self.rate.len() * 2).max(THROTTLE_SWEEP_AT);
        self.sweep_at.store(next, Ordering::Relaxed);
    }
}

/// Delay before answering the `n`th recent failure (n ≥ 1).
pub fn failure_delay(n: u32) -> Duration {
    let exp = n.saturating_sub(1).min(6);
    Duration::from_millis(100u64 << exp).min(Duration::from_secs(5))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn fake_throttle() -> (FailureThrottle<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (FailureThrottle::with_clock(clock.clone()), clock)
    }

    #[test]
    fn throttle_grows_per_ip() {
        let (t, _) = fake_throttle();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(t.record_failure(a), Duration::from_millis(100));
        assert_eq!(t.record_failure(a), Duration::from_millis(200));
        assert_eq!(t.record_failure(b), Duration::from_millis(100));
        assert_eq!(t.record_failure(a), Duration::from_millis(400));
        assert_eq!(failure_delay(30), Duration::from_secs(5));
    }

    #[test]
    fn throttle_caps_at_five_seconds_and_forgets_within_the_window() {
        let (t, clock) = fake_throttle();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..20 {
            t.record_failure(a);
        }
        assert_eq!(t.record_failure(a), Duration::from_secs(5));
        clock.advance(THROTTLE_WINDOW);
        assert_eq!(t.record_failure(a), Duration::from_millis(100));
    }

    #[test]
    fn ipv6_addresses_in_one_64_share_a_budget() {
        let (t, _) = fake_throttle();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            t.record_failure(ip("2001:db8:1:2::1")),
            Duration::from_millis(100)
        );
        assert_eq!(
            t.record_failure(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")),
            Duration::from_millis(200)
        );
        assert_eq!(
            t.record_failure(ip("2001:db8:1:3::1")),
            Duration::from_millis(100)
        );
        // IPv4 stays per address, also when it arrives IPv4-mapped.
        assert_eq!(
            t.record_failure(ip("192.0.2.1")),
            Duration::from_millis(100)
        );
        assert_eq!(
            t.record_failure(ip("::ffff:192.0.2.1")),
            Duration::from_millis(200)
        );
        assert_eq!(
            t.record_failure(ip("192.0.2.2")),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn flood_from_many_networks_keeps_other_clients_throttled() {
        let (t, _) = fake_throttle();
        let victim: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            t.record_failure(victim);
        }
        for i in 0..(THROTTLE_SWEEP_AT as u128 + 10) {
            let net = Ipv6Addr::from((0x2001_0db8_u128 << 96) | (i << 64));
            t.record_failure(IpAddr::V6(net));
        }
        assert_eq!(t.record_failure(victim), Duration::from_millis(800));
    }
}
