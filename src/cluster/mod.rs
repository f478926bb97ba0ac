//! `[cluster] redis_url`: per-destination budgets and backoff shared by
//! every replica through Redis. (Skeleton: the Redis client comes next;
//! until then no [`Cluster`] can be made and every limit is local.)

use std::time::{Duration, SystemTime};

use crate::config::Rate;
use crate::delivery::shaping::Budget;

/// A handle on the shared store (cheap to clone).
#[derive(Clone)]
pub struct Cluster {
    _private: (),
}

impl Cluster {
    /// Takes `n` cells of the shared budget `budget` of `destination`:
    /// `None` when Redis did not answer (use the local budget).
    pub async fn take(
        &self,
        _destination: &str,
        _budget: Budget,
        _rate: Rate,
        _n: u32,
    ) -> Option<Result<(), Duration>> {
        None
    }

    /// The shared backoff window's end, if one is set.
    pub async fn backoff_until(&self, _destination: &str) -> Option<SystemTime> {
        None
    }

    /// Publishes a backoff window to the other replicas.
    pub async fn set_backoff(&self, _destination: &str, _until: SystemTime) {}
}
