//! What an operator can switch off in the scheduler without restarting it:
//! one destination (`queue suspend`, [`Suspensions`]) or all leasing while
//! the replica's queue is handed to another relay (`queue drain`). The
//! scheduler asks the gate; the admin API and the drain set it.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::watch;

use super::suspend::Suspensions;

/// Shared switches; `Default` lets everything through. Cheap to clone.
#[derive(Clone)]
pub struct Gate {
    suspensions: Option<Suspensions>,
    stopped: Arc<watch::Sender<bool>>,
}

impl Default for Gate {
    fn default() -> Gate {
        Gate {
            suspensions: None,
            stopped: Arc::new(watch::Sender::new(false)),
        }
    }
}

impl Gate {
    /// A gate that obeys `suspensions`.
    pub fn new(suspensions: Suspensions) -> Gate {
        Gate {
            suspensions: Some(suspensions),
            ..Gate::default()
        }
    }

    pub fn suspensions(&self) -> Option<&Suspensions> {
        self.suspensions.as_ref()
    }

    /// Whether the recipients of `domain` (lower case) must wait.
    pub fn is_suspended(&self, domain: &str, now: SystemTime) -> bool {
        self.suspensions
            .as_ref()
            .is_some_and(|s| s.is_suspended(domain, now))
    }

    /// True while local delivery is stopped (a drain).
    pub fn stopped(&self) -> bool {
        *self.stopped.borrow()
    }

    /// Stops (or restarts) leasing for local delivery.
    pub fn set_stopped(&self, stopped: bool) {
        self.stopped.send_replace(stopped);
    }

    /// Returns once local delivery is not stopped (at once if it is not).
    pub async fn resumed(&self) {
        let mut rx = self.stopped.subscribe();
        let _ = rx.wait_for(|stopped| !*stopped).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_waiter_wakes_when_the_switch_flips() {
        let gate = Gate::default();
        assert!(!gate.stopped());
        gate.set_stopped(true);
        let g = gate.clone();
        let waiter = tokio::spawn(async move { g.resumed().await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        gate.set_stopped(false);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
        assert!(!gate.is_suspended("example.com", SystemTime::now()));
    }
}
