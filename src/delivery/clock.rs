//! The delivery side's "now". The scheduler asks a [`Clock`] instead of
//! reading the wall clock, so tests can run retries and expiry on tokio's
//! paused time (`tokio::time::pause`/`advance`) instead of sleeping.

use std::time::SystemTime;

/// Where the scheduler gets the time that due dates, retries and expiry
/// are measured against.
pub trait Clock: Send + Sync {
    fn now(&self) -> SystemTime;
}

/// The wall clock: what the relay runs on.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// The wall clock plus however far tokio's clock has moved since creation:
/// under `tokio::time::pause()` it jumps with `advance` (and auto-advance),
/// together with the scheduler's sleeps. Never behind the wall clock, which
/// the queue itself stamps new messages with, so what the queue calls due
/// is due by this clock too. Tests only.
#[cfg(any(test, feature = "test-util"))]
#[derive(Debug, Clone, Copy)]
pub struct PausedClock {
    origin: tokio::time::Instant,
}

#[cfg(any(test, feature = "test-util"))]
impl PausedClock {
    /// Starts at the wall clock. Call inside a runtime.
    pub fn new() -> PausedClock {
        PausedClock {
            origin: tokio::time::Instant::now(),
        }
    }
}

#[cfg(any(test, feature = "test-util"))]
impl Default for PausedClock {
    fn default() -> PausedClock {
        PausedClock::new()
    }
}

#[cfg(any(test, feature = "test-util"))]
impl Clock for PausedClock {
    fn now(&self) -> SystemTime {
        SystemTime::now() + self.origin.elapsed()
    }
}
