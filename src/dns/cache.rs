//! A small TTL cache in front of any [`DnsLookup`]. Answers live for their
//! TTL (capped at [`CacheOptions::max_ttl`]); errors are never kept beyond
//! the in-flight query. Concurrent identical queries coalesce: the first
//! caller asks, the others wait for its result (a queue run that fans out to
//! many recipients at one domain asks DNS once). At most
//! [`CacheOptions::max_entries`] names are kept; past that the least recently
//! used one goes (O(1), `lru`).

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lru::LruCache;
use tokio::sync::OnceCell;
use tokio::time::Instant;
use tracing::trace;

use super::types::{normalize_name, Answer, BoxFuture, DnsError, DnsLookup, RecordType};
use crate::sync::lock;

#[derive(Debug, Clone, Copy)]
pub struct CacheOptions {
    /// Upper bound on how long any answer is kept.
    pub max_ttl: Duration,
    /// Most entries kept; inserting past it evicts the least recently used
    /// (0 is taken as 1).
    pub max_entries: usize,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            max_ttl: Duration::from_secs(3600),
            max_entries: 10_000,
        }
    }
}

type Key = (String, RecordType);

struct Cached {
    result: Result<Answer, DnsError>,
    expires: Instant,
}

type Slot = Arc<OnceCell<Cached>>;

/// The caching, coalescing wrapper.
pub struct CachingLookup<L> {
    inner: L,
    options: CacheOptions,
    /// A panic elsewhere while holding the lock leaves only a cache behind,
    /// so a poisoned lock is taken as it is.
    slots: Mutex<LruCache<Key, Slot>>,
}

impl<L: DnsLookup> CachingLookup<L> {
    pub fn new(inner: L, options: CacheOptions) -> Self {
        CachingLookup {
            inner,
            options,
            slots: Mutex::new(LruCache::new(
                NonZeroUsize::new(options.max_entries).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }

    /// Drops every entry (tests, or an operator's flush).
    pub fn clear(&self) {
        lock(&self.slots).clear();
    }

    /// Entries held now (fresh, expired or in flight).
    pub fn len(&self) -> usize {
        lock(&self.slots).len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        lock(&self.slots).is_empty()
    }

    /// The slot for `key`: the existing one unless it holds an expired value.
    fn slot(&self, key: &Key) -> Slot {
        let now = Instant::now();
        let mut slots = lock(&self.slots);
        match slots.get(key) {
            Some(slot) if slot.get().is_none_or(|c| c.expires > now) => slot.clone(),
            _ => {
                // An evicted in-flight slot still answers its waiters; only
                // later callers ask again.
                let slot = Slot::default();
                slots.put(key.clone(), slot.clone());
                slot
            }
        }
    }

    async fn cached(&self, name: &str, rtype: RecordType) -> Result<Answer, DnsError> {
        let key = (normalize_name(name), rtype);
        let slot = self.slot(&key);
        let hit = slot.initialized();
        let cached = slot
            .get_or_init(|| async {
                let result = self.inner.lookup(&key.0, rtype).await;
                let ttl = match &result {
                    Ok(answer) => Duration::from_secs(answer.ttl.into()).min(self.options.max_ttl),
                    Err(_) => Duration::ZERO,
                };
                Cached {
                    result,
                    expires: Instant::now() + ttl,
                }
            })
            .await;
        if hit {
            trace!(name = %key.0, %rtype, "dns cache hit");
            super::log_result(&key.0, rtype, &cached.result);
        }
        cached.result.clone()
    }
}

impl<L: DnsLookup> DnsLookup for CachingLookup<L> {
    fn lookup<'a>(
        &'a self,
        name: &'a str,
        rtype: RecordType,
    ) -> BoxFuture<'a, Result<Answer, DnsError>> {
        Box::pin(self.cached(name, rtype))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::dns::fake::FakeDns;
    use crate::dns::types::Security;

    struct Counting {
        inner: FakeDns,
        calls: AtomicUsize,
        delay: Duration,
    }

    impl DnsLookup for Counting {
        fn lookup<'a>(
            &'a self,
            name: &'a str,
            rtype: RecordType,
        ) -> BoxFuture<'a, Result<Answer, DnsError>> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(self.delay).await;
                self.inner.lookup(name, rtype).await
            })
        }
    }

    fn counting(fake: FakeDns) -> Arc<CachingLookup<Counting>> {
        counting_with(fake, CacheOptions::default())
    }

    fn counting_with(fake: FakeDns, options: CacheOptions) -> Arc<CachingLookup<Counting>> {
        Arc::new(CachingLookup::new(
            Counting {
                inner: fake,
                calls: AtomicUsize::new(0),
                delay: Duration::from_millis(50),
            },
            options,
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn max_entries_caps_the_cache_evicting_the_least_recently_used() {
        let fake = FakeDns::new();
        for i in 0..10 {
            fake.a(
                &format!("mx{i}.example.net"),
                Security::Secure,
                &["192.0.2.1"],
            );
        }
        let options = CacheOptions {
            max_entries: 3,
            ..CacheOptions::default()
        };
        let cache = counting_with(fake, options);
        for name in ["mx0.example.net", "mx1.example.net", "mx2.example.net"] {
            cache.lookup(name, RecordType::A).await.unwrap();
        }
        // Touch mx0, so mx1 is the least recently used when mx3 arrives.
        cache
            .lookup("mx0.example.net", RecordType::A)
            .await
            .unwrap();
        cache
            .lookup("mx3.example.net", RecordType::A)
            .await
            .unwrap();
        assert_eq!(cache.len(), 3);
        assert_eq!(calls(&cache), 4);
        cache
            .lookup("mx0.example.net", RecordType::A)
            .await
            .unwrap();
        assert_eq!(calls(&cache), 4, "mx0 was kept");
        cache
            .lookup("mx1.example.net", RecordType::A)
            .await
            .unwrap();
        assert_eq!(calls(&cache), 5, "mx1 was evicted");
        for i in 4..10 {
            let name = format!("mx{i}.example.net");
            cache.lookup(&name, RecordType::A).await.unwrap();
            assert!(cache.len() <= 3, "{} entries", cache.len());
        }
    }

    fn calls(c: &CachingLookup<Counting>) -> usize {
        c.inner.calls.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn concurrent_identical_queries_coalesce() {
        let fake = FakeDns::new();
        fake.a("mx.example.net", Security::Secure, &["192.0.2.1"]);
        let cache = counting(fake);
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let c = cache.clone();
                tokio::spawn(async move { c.lookup("MX.example.net.", RecordType::A).await })
            })
            .collect();
        for t in tasks {
            let answer = t.await.unwrap().unwrap();
            assert_eq!(answer.addresses().count(), 1);
        }
        assert_eq!(calls(&cache), 1);
        // Another type is another query.
        cache
            .lookup("mx.example.net", RecordType::Aaaa)
            .await
            .unwrap();
        assert_eq!(calls(&cache), 2);
    }

    #[tokio::test]
    async fn answers_expire_after_their_ttl() {
        let fake = FakeDns::new();
        fake.a("mx.example.net", Security::Secure, &["192.0.2.1"]);
        fake.set_ttl(1);
        let cache = counting(fake);
        cache.lookup("mx.example.net", RecordType::A).await.unwrap();
        cache.lookup("mx.example.net", RecordType::A).await.unwrap();
        assert_eq!(calls(&cache), 1, "still fresh within the TTL");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        cache.lookup("mx.example.net", RecordType::A).await.unwrap();
        assert_eq!(calls(&cache), 2, "expired after 1 s");
    }

    #[tokio::test]
    async fn errors_are_not_cached() {
        let fake = FakeDns::new();
        fake.servfail("broken.example", RecordType::Mx);
        let cache = counting(fake);
        assert!(cache
            .lookup("broken.example", RecordType::Mx)
            .await
            .is_err());
        assert!(cache
            .lookup("broken.example", RecordType::Mx)
            .await
            .is_err());
        assert_eq!(calls(&cache), 2);
    }
}
