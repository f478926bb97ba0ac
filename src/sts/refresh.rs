//! Proactive refresh (RFC 8461 §3.3, §10.2): a cached policy close to its
//! `max_age` is fetched again in the background, whether or not mail goes to
//! its domain just then, so a domain mailed now and then never falls back to
//! "no policy" between two messages (the downgrade window §10.2 warns of).
//! Expired entries are dropped: nothing would use them, and the cache stays
//! as small as the set of domains actually mailed within their `max_age`.

use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::cache::{Cached, Entry, NAMESPACE};
use super::{unix, Sts};

/// How often the cache is looked through. The refresh margin is a day (or a
/// quarter of `max_age`), so an hour leaves many chances before expiry.
pub const EVERY: Duration = Duration::from_secs(3600);

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Policies within their refresh margin that were looked up again.
    pub refreshed: usize,
    /// Expired policies removed from the cache.
    pub dropped: usize,
}

impl Sts {
    /// One pass over the cache at `now` (see the module docs). A failed
    /// refresh keeps the cached policy (`policy_for`'s rule).
    pub async fn refresh_cached(&self, now: SystemTime) -> Pass {
        let mut pass = Pass::default();
        let Some(queue) = &self.queue else {
            return pass;
        };
        let entries = match queue.state_scan(NAMESPACE) {
            Ok(e) => e,
            Err(e) => {
                warn!(error = %e, "MTA-STS cache unreadable: no refresh this time");
                return pass;
            }
        };
        let t = unix(now);
        for (domain, bytes) in entries {
            let cached = Entry::decode(&bytes).and_then(|entry| {
                let policy = entry.policy().ok()?;
                Some(Cached { entry, policy })
            });
            match cached {
                Some(c) if !c.expired(t) => {
                    if c.refresh_due(t) {
                        self.policy_for(&domain, now, false).await;
                        pass.refreshed += 1;
                    }
                }
                // Expired, or unreadable: of no use to anyone.
                _ => {
                    if queue.state_remove(NAMESPACE, &domain).is_ok() {
                        pass.dropped += 1;
                    }
                }
            }
        }
        if pass != Pass::default() {
            if let Err(e) = queue.flush() {
                warn!(error = %e, "MTA-STS cache changes not flushed");
            }
            info!(
                refreshed = pass.refreshed,
                dropped = pass.dropped,
                "MTA-STS cache refresh pass"
            );
        }
        pass
    }

    /// Runs [`Sts::refresh_cached`] every [`EVERY`] until `shutdown`.
    pub async fn run_refresh(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    self.refresh_cached(SystemTime::now()).await;
                }
            }
        }
    }
}
