//! MTA-STS (RFC 8461) for recipient domains without usable DANE: discovery
//! of the `_mta-sts` TXT record, the HTTPS policy fetch ([`fetch`]), strict
//! parsing ([`policy`]), the durable cache and its refresh rules
//! ([`cache`]), the per-host decision ([`enforce`]) and the PKIX roots and
//! checks ([`pkix`]). [`Sts`] puts them together for delivery and
//! `tls-check`: [`Sts::policy_for`] answers "which policy is in force for
//! this domain now", fetching only when the rules say so and counting each
//! discovery in `danerelay_mta_sts_fetch_total{result}`.

pub mod cache;
pub mod enforce;
pub mod fetch;
pub mod pkix;
pub mod policy;
pub mod refresh;
pub mod report;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use danerelay_queue::Queue;
use rustls::RootCertStore;
use tracing::{info, warn};

use crate::config::MtaStsConfig;
use crate::dns::{AnswerKind, DnsLookup, RecordType};
use crate::metrics::{Metrics, StsFetchResult};

pub use cache::{Cached, Discovery, Entry, Plan};
pub use enforce::{host_rule, HostRule};
pub use fetch::{FetchError, Fetcher};
pub use pkix::CertFailure;
pub use policy::{Mode, MxPattern, Policy, PolicyError};
pub use report::{SessionFailure, SessionResult, SessionSink};

/// Errors setting MTA-STS up.
#[derive(Debug, thiserror::Error)]
pub enum StsError {
    #[error("mta_sts.ca_file: {0}")]
    Roots(#[from] pkix::RootsError),
    #[error("MTA-STS TLS client: {0}")]
    Tls(#[from] rustls::Error),
}

/// The policy in force for one domain, as delivery uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Active {
    pub domain: String,
    pub id: String,
    pub policy: Policy,
    /// The policy text (TLS-RPT `policy-string`: [`policy::policy_strings`]).
    pub text: String,
    /// Unix seconds of the fetch.
    pub fetched_at: u64,
}

impl Active {
    fn from_cached(domain: &str, c: Cached) -> Active {
        Active {
            domain: domain.to_string(),
            id: c.entry.id,
            policy: c.policy,
            text: c.entry.text,
            fetched_at: c.entry.fetched_at,
        }
    }

    /// The policy's lines, for TLS-RPT (RFC 8460 §4.3 `policy-string`).
    pub fn policy_strings(&self) -> Vec<String> {
        policy::policy_strings(&self.text)
    }

    /// What a connection's TLS depends on: reuse across domains needs the
    /// same (mode, id) (RFC 8461 §3.2: the id names the policy version).
    pub fn reuse_tag(&self) -> (Mode, String) {
        (self.policy.mode, self.id.clone())
    }
}

/// The result of asking for a domain's policy: the policy in force, and,
/// when discovery or fetch failed, why (for TLS-RPT, RFC 8460 §4.3.2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lookup {
    pub active: Option<Active>,
    pub failure: Option<FetchError>,
}

/// MTA-STS as configured: resolver, cache (the queue's state table; `None`
/// in one-shot commands that cannot open the queue), fetcher, roots.
#[derive(Clone)]
pub struct Sts {
    dns: Arc<dyn DnsLookup>,
    queue: Option<Queue>,
    fetcher: Fetcher,
    roots: Arc<RootCertStore>,
    metrics: Metrics,
    sink: Option<Arc<dyn SessionSink>>,
}

impl std::fmt::Debug for Sts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sts")
            .field("fetcher", &self.fetcher)
            .field("cache", &self.queue.is_some())
            .finish_non_exhaustive()
    }
}

/// Unix seconds of `t` (0 before the epoch).
pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

impl Sts {
    /// `[mta_sts]` → the service; `None` when disabled.
    pub fn from_config(
        config: &MtaStsConfig,
        dns: Arc<dyn DnsLookup>,
        queue: Option<Queue>,
        metrics: Metrics,
    ) -> Result<Option<Sts>, StsError> {
        if !config.enabled {
            return Ok(None);
        }
        let roots = pkix::load_roots(config.ca_file.as_deref())?;
        let fetcher = Fetcher::new(roots.clone(), config.fetch_timeout)?;
        Ok(Some(Sts {
            dns,
            queue,
            fetcher,
            roots,
            metrics,
            sink: None,
        }))
    }

    /// Hands every session result to `sink` (TLS-RPT, RFC 8460).
    pub fn with_sink(mut self, sink: Arc<dyn SessionSink>) -> Sts {
        self.sink = Some(sink);
        self
    }

    /// One session's result: to the sink, if there is one.
    pub fn record(&self, result: &SessionResult) {
        if let Some(sink) = &self.sink {
            sink.record(result);
        }
    }

    /// The trust anchors for MX certificates under `enforce`.
    pub fn roots(&self) -> &Arc<RootCertStore> {
        &self.roots
    }

    /// Policy fetches go to this port (443; tests use another).
    pub fn set_port(&mut self, port: u16) {
        self.fetcher.port = port;
    }

    /// The cached entry of `domain`, if any and readable.
    pub fn cached(&self, domain: &str) -> Option<Cached> {
        let queue = self.queue.as_ref()?;
        let bytes = match queue.state_get(cache::NAMESPACE, &key(domain)) {
            Ok(b) => b?,
            Err(e) => {
                warn!(%domain, error = %e, "MTA-STS cache read failed");
                return None;
            }
        };
        let entry = Entry::decode(&bytes)?;
        let policy = entry.policy().ok()?;
        Some(Cached { entry, policy })
    }

    /// The policy in force for `domain` at `now` (RFC 8461 §5.1). `force`:
    /// fetch again even under an unchanged id (the re-check before mail is
    /// given up on). Never fails: problems mean "no policy", or the cached
    /// one while it has not expired.
    pub async fn policy_for(&self, domain: &str, now: SystemTime, force: bool) -> Lookup {
        let domain = key(domain);
        let now = unix(now);
        let cached = self.cached(&domain);
        let (found, failure) = self.discover(&domain).await;
        match cache::plan(cached.as_ref(), &found, now, force) {
            Plan::UseCached => {
                if matches!(found, Discovery::Id(_)) {
                    self.metrics.mta_sts_fetch(StsFetchResult::Cached);
                }
                let active = cached.map(|c| Active::from_cached(&domain, c));
                Lookup { active, failure }
            }
            Plan::NoPolicy => Lookup {
                active: None,
                failure,
            },
            Plan::Fetch { id } => self.fetch(&domain, id, cached, now).await,
        }
    }

    /// TXT `_mta-sts.<domain>` (§3.1), counted when it yields nothing.
    async fn discover(&self, domain: &str) -> (Discovery, Option<FetchError>) {
        let name = format!("_mta-sts.{domain}");
        let records = match self.dns.lookup(&name, RecordType::Txt).await {
            Ok(a) => match a.kind {
                AnswerKind::Records(_) => a.txt().collect::<Vec<_>>(),
                AnswerKind::NoData | AnswerKind::NxDomain => Vec::new(),
            },
            Err(e) => {
                self.metrics.mta_sts_fetch(StsFetchResult::DnsError);
                let failure = FetchError::Dns {
                    host: name,
                    detail: e.to_string(),
                };
                return (Discovery::Nothing, Some(failure));
            }
        };
        match policy::parse_txt(&records) {
            Ok(txt) => (Discovery::Id(txt.id), None),
            Err(PolicyError::NoRecord) => {
                self.metrics.mta_sts_fetch(StsFetchResult::NoPolicy);
                (Discovery::Nothing, None)
            }
            Err(e) => {
                info!(%domain, error = %e, "MTA-STS TXT record invalid: no policy discovered");
                self.metrics.mta_sts_fetch(StsFetchResult::Invalid);
                (Discovery::Nothing, Some(FetchError::Invalid(e)))
            }
        }
    }

    async fn fetch(&self, domain: &str, id: String, cached: Option<Cached>, now: u64) -> Lookup {
        match self.fetcher.fetch(self.dns.as_ref(), domain).await {
            Ok(fetched) => {
                self.metrics.mta_sts_fetch(StsFetchResult::Ok);
                let entry = Entry {
                    id,
                    fetched_at: now,
                    text: fetched.text,
                };
                info!(%domain, id = %entry.id, mode = %fetched.policy.mode,
                    max_age = fetched.policy.max_age, "MTA-STS policy fetched");
                self.store(domain, &entry);
                let c = Cached {
                    entry,
                    policy: fetched.policy,
                };
                Lookup {
                    active: Some(Active::from_cached(domain, c)),
                    failure: None,
                }
            }
            Err(e) => {
                self.metrics.mta_sts_fetch(e.metric());
                let keep = cached.filter(|c| !c.expired(now));
                warn!(%domain, error = %e, kept_cached = keep.is_some(),
                    "MTA-STS policy fetch failed");
                Lookup {
                    active: keep.map(|c| Active::from_cached(domain, c)),
                    failure: Some(e),
                }
            }
        }
    }

    fn store(&self, domain: &str, entry: &Entry) {
        let Some(queue) = &self.queue else { return };
        let stored = queue
            .state_put(cache::NAMESPACE, domain, &entry.encode())
            .and_then(|()| queue.flush());
        if let Err(e) = stored {
            warn!(%domain, error = %e, "MTA-STS cache write failed (policy used from memory)");
        }
    }
}

/// Cache key and policy domain: lower case, no trailing dot.
fn key(domain: &str) -> String {
    crate::dns::normalize_name(domain)
}
