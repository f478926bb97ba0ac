//! `[cluster] redis_url`: per-destination budgets and backoff windows shared
//! by every replica through Redis, so that N replicas keep to "600/min"
//! together instead of N × 600 (the arrangement KumoMTA's shaping uses).
//!
//! What is shared: each destination's `message_rate` and `connection_rate`
//! buckets (one GCRA per budget, run atomically in a Lua script on Redis'
//! own clock, so replicas' clocks do not matter) and its adaptive backoff
//! window (a key with a TTL, so it ends by itself), and its connection
//! slots (`max_connections`: a sorted set of open connections whose members
//! expire unless renewed, so a dead replica's slots come free).
//!
//! Redis is never waited for: every call has [`CALL_TIMEOUT`]; a failure or
//! timeout makes the caller use its local budget, counts
//! `danerelay_cluster_redis_errors_total`, sets `danerelay_cluster_redis_up`
//! to 0 and logs once per change of state; Redis is then left alone for
//! [`RETRY_AFTER`] before the next call tries again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::MultiplexedConnection;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::config::Rate;
use crate::metrics::Metrics;

/// The longest any Redis call (connecting included) may take.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(250);
/// After a failure, calls go straight to the local budget for this long.
pub const RETRY_AFTER: Duration = Duration::from_secs(2);
/// Every key the relay writes starts with this.
const PREFIX: &str = "danerelay:";

/// `shaping::gcra` on Redis' clock (µs). KEYS[1] holds the theoretical
/// arrival time; ARGV = interval (µs), burst, n. Returns 0 when allowed,
/// else the µs to wait. The key expires when the bucket is full again.
const GCRA: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval * n
local allowed_until = now + interval * burst
if new_tat <= allowed_until then
  redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.floor((new_tat - now) / 1000) + 1000)
  return 0
end
return new_tat - allowed_until
";

/// Sets the backoff window's end (unix ms) unless a later one is set.
/// KEYS[1]; ARGV = until (ms), ttl (ms).
const BACKOFF: &str = r"
local old = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > old then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return 0
";

/// A connection slot of KEYS[1] (a sorted set: member → expiry, Redis ms)
/// for ARGV[1] while fewer than ARGV[2] are live, or renewed when it holds
/// one; ARGV[3] = TTL (ms). Expired slots — a replica that died holding
/// them — are dropped first. Returns 1 granted, 0 full.
const SLOT: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ttl)
  return 1
end
return 0
";

/// How long a connection slot lives without renewal (each share of mail a
/// connection carries renews it): a dead replica's slots free up after this.
pub const SLOT_TTL: Duration = Duration::from_secs(300);

/// Which budget of a destination a take is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    Messages,
    Connections,
}

/// A handle on the shared store (cheap to clone).
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    conn: Mutex<Option<MultiplexedConnection>>,
    /// Last known state (for the log line on change).
    up: AtomicBool,
    /// No Redis call before this instant (after a failure).
    resting_until: std::sync::Mutex<Option<tokio::time::Instant>>,
    metrics: Metrics,
    gcra: redis::Script,
    backoff: redis::Script,
    slot: redis::Script,
}

/// Why a Redis call gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("invalid cluster.redis_url: {0}")]
    Url(#[source] redis::RedisError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {CALL_TIMEOUT:?}")]
    Timeout,
}

impl Cluster {
    /// A handle for `url` (nothing is connected yet: Redis may come later).
    pub fn new(url: &str, metrics: Metrics) -> Result<Cluster, ClusterError> {
        let client = redis::Client::open(url).map_err(ClusterError::Url)?;
        metrics.cluster_redis_up.set(0);
        Ok(Cluster {
            inner: Arc::new(Inner {
                client,
                conn: Mutex::new(None),
                up: AtomicBool::new(false),
                resting_until: std::sync::Mutex::new(None),
                metrics,
                gcra: redis::Script::new(GCRA),
                backoff: redis::Script::new(BACKOFF),
                slot: redis::Script::new(SLOT),
            }),
        })
    }

    /// Runs one call with the connection (made on demand), within
    /// [`CALL_TIMEOUT`]; `None` (and the fallback bookkeeping) on failure.
    async fn call<T, F>(&self, f: F) -> Option<T>
    where
        F: AsyncFnOnce(&mut MultiplexedConnection) -> redis::RedisResult<T>,
    {
        let inner = &self.inner;
        let now = tokio::time::Instant::now();
        if crate::sync::lock(&inner.resting_until).is_some_and(|t| now < t) {
            return None;
        }
        let work = async {
            let mut slot = inner.conn.lock().await;
            if slot.is_none() {
                *slot = Some(inner.client.get_multiplexed_async_connection().await?);
            }
            let mut conn = slot.clone().ok_or(ClusterError::Timeout)?;
            drop(slot);
            f(&mut conn).await.map_err(ClusterError::Redis)
        };
        let result = match tokio::time::timeout(CALL_TIMEOUT, work).await {
            Ok(r) => r,
            Err(_) => Err(ClusterError::Timeout),
        };
        match result {
            Ok(v) => {
                self.mark(true, None);
                Some(v)
            }
            Err(e) => {
                *inner.conn.lock().await = None;
                *crate::sync::lock(&inner.resting_until) = Some(now + RETRY_AFTER);
                inner.metrics.cluster_redis_errors_total.inc();
                self.mark(false, Some(&e));
                None
            }
        }
    }

    fn mark(&self, up: bool, error: Option<&ClusterError>) {
        let inner = &self.inner;
        inner.metrics.cluster_redis_up.set(i64::from(up));
        if inner.up.swap(up, Ordering::AcqRel) != up {
            match error {
                None => tracing::info!("cluster: Redis answers; destination limits are shared"),
                Some(e) => tracing::warn!(error = %e,
                    "cluster: Redis unreachable; delivering on this replica's own limits"),
            }
        }
    }

    /// Takes `n` cells of the shared budget of `destination`: `Ok` or how
    /// long to wait; `None` when Redis did not answer (use the local one).
    pub async fn take(
        &self,
        destination: &str,
        budget: Budget,
        rate: Rate,
        n: u32,
    ) -> Option<Result<(), Duration>> {
        let which = match budget {
            Budget::Messages => "messages",
            Budget::Connections => "connections",
        };
        let key = format!("{PREFIX}{which}:{destination}");
        let interval = u64::try_from(rate.interval().as_micros()).unwrap_or(u64::MAX);
        let script = &self.inner.gcra;
        let wait: u64 = self
            .call(async |c| {
                script
                    .key(&key)
                    .arg(interval)
                    .arg(rate.burst())
                    .arg(n)
                    .invoke_async(c)
                    .await
            })
            .await?;
        Some(match wait {
            0 => Ok(()),
            us => Err(Duration::from_micros(us)),
        })
    }

    /// The shared backoff window's end, while one is set.
    pub async fn backoff_until(&self, destination: &str) -> Option<SystemTime> {
        let key = format!("{PREFIX}backoff:{destination}");
        let ms: Option<u64> = self
            .call(async |c| redis::cmd("GET").arg(&key).query_async(c).await)
            .await
            .flatten();
        ms.map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
            .filter(|t| *t > SystemTime::now())
    }

    /// Publishes a backoff window to the other replicas (a later one wins).
    pub async fn set_backoff(&self, destination: &str, until: SystemTime) {
        let key = format!("{PREFIX}backoff:{destination}");
        let ms = until
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let ttl = until
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .as_millis()
            .max(1);
        let (ms, ttl) = (
            u64::try_from(ms).unwrap_or(u64::MAX),
            u64::try_from(ttl).unwrap_or(1),
        );
        let script = &self.inner.backoff;
        let _: Option<i64> = self
            .call(async |c| script.key(&key).arg(ms).arg(ttl).invoke_async(c).await)
            .await;
    }

    /// Takes (or renews) one of `limit` shared connection slots of
    /// `destination` for `member`: `Some(false)` when all are taken, `None`
    /// when Redis did not answer (use the local cap).
    pub async fn acquire_slot(
        &self,
        destination: &str,
        member: &str,
        limit: usize,
    ) -> Option<bool> {
        let key = format!("{PREFIX}slots:{destination}");
        let ttl = u64::try_from(SLOT_TTL.as_millis()).unwrap_or(u64::MAX);
        let script = &self.inner.slot;
        let granted: i64 = self
            .call(async |c| {
                let limit = u64::try_from(limit).unwrap_or(u64::MAX);
                script
                    .key(&key)
                    .arg(member)
                    .arg(limit)
                    .arg(ttl)
                    .invoke_async(c)
                    .await
            })
            .await?;
        Some(granted == 1)
    }

    /// Gives a connection slot back.
    pub async fn release_slot(&self, destination: &str, member: &str) {
        let key = format!("{PREFIX}slots:{destination}");
        let _: Option<i64> = self
            .call(async |c| {
                redis::cmd("ZREM")
                    .arg(&key)
                    .arg(member)
                    .query_async(c)
                    .await
            })
            .await;
    }

    /// Pings Redis every second until `shutdown`, so that the metric and
    /// the log follow Redis' state even while no mail is shaped.
    pub async fn watch(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let _: Option<String> = self
                .call(async |c| redis::cmd("PING").query_async(c).await)
                .await;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Nothing listens on the port: the call gives up at once or within
    /// the timeout, the caller falls back, and Redis is left alone for a
    /// while (no error counted for calls that did not try).
    #[tokio::test]
    async fn unreachable_redis_falls_back_fast_and_rests() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port(); // bound and dropped: closed now
        let metrics = Metrics::new();
        let c = Cluster::new(&format!("redis://127.0.0.1:{port}/0"), metrics.clone()).unwrap();
        let rate = Rate::parse("10/sec").unwrap().unwrap();
        let started = std::time::Instant::now();
        assert_eq!(c.take("d", Budget::Messages, rate, 1).await, None);
        assert!(started.elapsed() < CALL_TIMEOUT + Duration::from_millis(200));
        assert_eq!(metrics.cluster_redis_up.get(), 0);
        assert_eq!(metrics.cluster_redis_errors_total.get(), 1);
        assert_eq!(c.backoff_until("d").await, None);
        c.set_backoff("d", SystemTime::now() + Duration::from_secs(5))
            .await;
        assert_eq!(metrics.cluster_redis_errors_total.get(), 1, "resting");
    }

    #[test]
    fn a_url_that_is_not_redis_is_refused() {
        assert!(Cluster::new("http://x", Metrics::new()).is_err());
    }
}
