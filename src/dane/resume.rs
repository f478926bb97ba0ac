//! TLS session resumption to repeat peers: a bounded cache of client configs,
//! one per security policy, each with its own in-memory session store.
//!
//! A session may only be resumed under exactly the policy that verified it
//! in full, so the cache key is the policy itself ([`PolicyKey`]): the
//! decision kind (DANE, TLS required, opportunistic), the server name (SNI),
//! and under DANE a SHA-256 digest of the usable TLSA RRset (canonically
//! ordered) and of the names a DANE-TA leaf may carry. A changed TLSA RRset
//! is a different key, so the next connection has no session to offer and
//! is verified in full — Postfix likewise mixes the TLSA digests into its
//! TLS session cache key. Sessions are never shared between an opportunistic
//! (unverified) and a DANE connection, nor between server names.
//!
//! Lifetimes: rustls honours the server's ticket lifetime (at most 7 days);
//! on top of that a config, and with it every session it holds, is dropped
//! once it is [`TlsConfigCache::max_age`] old (default one hour, Postfix's
//! `smtp_tls_session_cache_timeout`). At most `capacity` configs are kept
//! (default 1,000); the least recently used goes first.
//!
//! A resumed handshake runs no certificate verifier. The DANE verdict a
//! delivery logs is re-derived from the peer chain after every handshake
//! ([`TlsClientSetup::verdict`]); rustls restores the chain verified in full
//! from the resumed session.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::client::{Resumption, Tls12Resumption};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use sha2::{Digest, Sha256};

use super::policy::{normalize_name, DaneTarget, Decision};
use super::verifier::{client_config, Plan, TlsClientSetup};
use super::DaneError;
use crate::sync::lock;

/// Default number of cached configs (peers × policies).
pub const DEFAULT_CAPACITY: usize = 1000;

/// Default age after which a config and its sessions are dropped (Postfix's
/// `smtp_tls_session_cache_timeout` default).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(3600);

/// Sessions per config. One config serves one server name; rustls keeps up
/// to 8 TLS 1.3 tickets per name (each used once) and one TLS 1.2 session,
/// and sizes its store as `n / 8` names, so 8 means exactly one name.
const SESSIONS_PER_CONFIG: usize = 8;

/// The security policy a session is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PolicyKey {
    kind: PolicyKind,
    /// The SNI as rustls stores sessions under it, lower case.
    server_name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum PolicyKind {
    /// DANE with this digest of the usable TLSA RRset and reference names.
    Dane([u8; 32]),
    /// TLS mandatory, certificate not checked (`encrypt`, all TLSA unusable).
    TlsRequired,
    /// Opportunistic, certificate not checked.
    Opportunistic,
    /// MTA-STS `enforce`: PKIX under the process's one MTA-STS root store.
    WebPki,
}

impl PolicyKey {
    /// The key for `decision` connecting to `server_name`; `None` for the
    /// decisions without TLS.
    pub fn new(decision: &Decision, server_name: &ServerName<'_>) -> Option<PolicyKey> {
        let kind = match decision {
            Decision::Plaintext | Decision::Defer(_) => return None,
            Decision::Authenticate(target) => PolicyKind::Dane(dane_digest(target)),
            Decision::TlsRequired(_) => PolicyKind::TlsRequired,
            Decision::Opportunistic => PolicyKind::Opportunistic,
            Decision::WebPki(_) => PolicyKind::WebPki,
        };
        Some(PolicyKey {
            kind,
            server_name: server_name.to_str().to_ascii_lowercase(),
        })
    }
}

/// SHA-256 over everything [`super::verify_chain`] depends on besides the
/// chain and the clock: the base domain, the reference names (sorted, no
/// duplicates) and the records (sorted, no duplicates), each length-prefixed
/// so no two different policies encode alike.
fn dane_digest(target: &DaneTarget) -> [u8; 32] {
    fn field(h: &mut Sha256, bytes: &[u8]) {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    }
    let mut names: Vec<String> = target
        .reference_names
        .iter()
        .map(|n| normalize_name(n))
        .collect();
    names.sort();
    names.dedup();
    let mut records: Vec<_> = target.records.iter().collect();
    records.sort_by(|a, b| {
        (a.usage, a.selector, a.matching, &a.data).cmp(&(b.usage, b.selector, b.matching, &b.data))
    });
    records.dedup();
    let mut h = Sha256::new();
    h.update(b"danerelay DANE policy v1\0");
    field(&mut h, normalize_name(&target.base_domain).as_bytes());
    h.update((names.len() as u64).to_be_bytes());
    for name in &names {
        field(&mut h, name.as_bytes());
    }
    h.update((records.len() as u64).to_be_bytes());
    for r in records {
        h.update([r.usage, r.selector, r.matching]);
        field(&mut h, &r.data);
    }
    h.finalize().into()
}

/// The bounded config cache; one per delivery engine, shared by all its
/// connections.
pub struct TlsConfigCache {
    capacity: usize,
    max_age: Duration,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<PolicyKey, Entry>,
    /// Bumped on every lookup: the least recently used entry has the
    /// smallest `used`.
    clock: u64,
}

struct Entry {
    config: Arc<ClientConfig>,
    created: Instant,
    used: u64,
}

impl Default for TlsConfigCache {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY, DEFAULT_MAX_AGE)
    }
}

impl fmt::Debug for TlsConfigCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfigCache")
            .field("capacity", &self.capacity)
            .field("max_age", &self.max_age)
            .field("len", &self.len())
            .finish()
    }
}

impl TlsConfigCache {
    /// At most `capacity` configs (at least 1), each dropped with its
    /// sessions once `max_age` old (`Duration::ZERO`: nothing is ever
    /// resumed).
    pub fn new(capacity: usize, max_age: Duration) -> Self {
        Self {
            capacity: capacity.max(1),
            max_age,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The configured bound on the number of configs.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The configured maximum age of a config and its sessions.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// Configs held now (expired ones included until they are replaced or
    /// evicted).
    pub fn len(&self) -> usize {
        lock(&self.inner).entries.len()
    }

    /// Whether no config is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Like [`super::client_setup`], but the config comes from the cache, so
    /// a connection under the same [`PolicyKey`] as an earlier one offers
    /// that one's session (TLS 1.3 ticket or TLS 1.2 session) for
    /// resumption. Read the verdict with [`TlsClientSetup::verdict`] after
    /// the handshake, resumed or not.
    pub fn setup(
        &self,
        decision: &Decision,
        host: &str,
    ) -> Result<Option<TlsClientSetup>, DaneError> {
        let Some(plan) = Plan::new(decision, host)? else {
            return Ok(None);
        };
        let Some(key) = PolicyKey::new(decision, &plan.server_name) else {
            return Ok(None);
        };
        let config = self.config_for(key, &plan)?;
        Ok(Some(plan.into_setup(config)))
    }

    /// Drops the config (and every session it holds) that [`Self::setup`]
    /// hands out for `decision` and `host`, so the next connection under
    /// that policy is verified in full. For a resumed session whose chain
    /// no longer verifies: it must not be offered again.
    pub fn evict(&self, decision: &Decision, host: &str) -> Result<(), DaneError> {
        let Some(plan) = Plan::new(decision, host)? else {
            return Ok(());
        };
        if let Some(key) = PolicyKey::new(decision, &plan.server_name) {
            lock(&self.inner).entries.remove(&key);
        }
        Ok(())
    }

    fn config_for(&self, key: PolicyKey, plan: &Plan) -> Result<Arc<ClientConfig>, DaneError> {
        let now = Instant::now();
        let mut inner = lock(&self.inner);
        inner.clock += 1;
        let tick = inner.clock;
        if let Some(e) = inner.entries.get_mut(&key) {
            if now.duration_since(e.created) < self.max_age {
                e.used = tick;
                return Ok(e.config.clone());
            }
        }
        // New or expired: a fresh config with an empty session store.
        let config = Arc::new(client_config(plan.verifier()?, resumption())?);
        if !inner.entries.contains_key(&key) && inner.entries.len() >= self.capacity {
            inner.make_room(now, self.max_age);
        }
        inner.entries.insert(
            key,
            Entry {
                config: config.clone(),
                created: now,
                used: tick,
            },
        );
        Ok(config)
    }
}

impl Inner {
    /// Drops every expired entry, then the least recently used one if that
    /// freed nothing.
    fn make_room(&mut self, now: Instant, max_age: Duration) {
        let before = self.entries.len();
        self.entries
            .retain(|_, e| now.duration_since(e.created) < max_age);
        if self.entries.len() < before {
            return;
        }
        let lru = self
            .entries
            .iter()
            .min_by_key(|(_, e)| e.used)
            .map(|(k, _)| k.clone());
        if let Some(k) = lru {
            self.entries.remove(&k);
        }
    }
}

/// Session resumption for one cached config: TLS 1.3 tickets and TLS 1.2
/// session IDs or tickets, held in memory for one server name.
fn resumption() -> Resumption {
    Resumption::in_memory_sessions(SESSIONS_PER_CONFIG)
        .tls12_resumption(Tls12Resumption::SessionIdOrTickets)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "resume_tests.rs"]
mod tests;
