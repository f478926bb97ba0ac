//! `dns.dnssec = "auto"` (the default, SPEC `[dns]`): DANE active on any
//! machine that can reach DNS, validating resolver or not.
//!
//! The resolver is probed in the background (`dns.dnssec_probe`, like
//! Postfix's): when the probe name's SOA comes back with AD=1 the resolver
//! validates and the relay trusts its AD bit (`trust-ad`, the Postfix model);
//! otherwise it validates in process from `dns.trust_anchor` or the IANA
//! root anchors (`validate`). The choice is logged once and is final.
//!
//! Nothing waits for the choice at start: listeners, the queue and `/readyz`
//! come up at once, even with no outside DNS at all. Until a mode is chosen,
//! lookups go to the resolver with DO=0 and every answer is
//! [`Security::Insecure`] — not a verdict, so [`DnsLookup::dnssec_ready`]
//! says `false` and deliveries that need one (`dane`, `dane-only`) defer
//! after a bounded wait instead of downgrading. Those interim answers are
//! never cached: the chosen mode starts with an empty cache.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use super::cache::{CacheOptions, CachingLookup};
use super::probe::{self, ProbeResult};
use super::trust_ad::{AdMode, TrustAdResolver};
use super::types::{Answer, BoxFuture, DnsError, DnsLookup, RecordType};
use super::validate::ValidatingResolver;

/// The DNSSEC mode actually in use (`danerelay_dnssec_mode{mode}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActiveMode {
    TrustAd,
    Validate,
    Off,
}

impl ActiveMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ActiveMode::TrustAd => "trust-ad",
            ActiveMode::Validate => "validate",
            ActiveMode::Off => "off",
        }
    }
}

impl std::fmt::Display for ActiveMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What settling the mode found: the mode in use and the probe's verdict
/// against it (`None` when `dns.dnssec_probe = ""`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    pub mode: ActiveMode,
    pub probe: Option<ProbeResult>,
}

/// How long a DANE delivery waits for the mode before it defers: a probe
/// that times out on every server of a typical resolv.conf (5 s each), then
/// the in-process validator's first answer, fit in it.
pub const READY_WAIT: Duration = Duration::from_secs(15);

/// How long to wait before trying again when the in-process validator
/// cannot be set up (a DS trust anchor whose keys cannot be fetched yet).
const SETUP_RETRY: Duration = Duration::from_secs(30);

#[derive(Clone)]
struct Chosen {
    mode: ActiveMode,
    lookup: Arc<dyn DnsLookup>,
}

/// The `auto` resolver: the interim resolver until [`AutoResolver::select`]
/// has chosen, then the chosen one.
pub struct AutoResolver {
    /// As configured (empty: resolv.conf, read by hickory) for `validate`.
    configured: Vec<SocketAddr>,
    /// Resolved from resolv.conf when none are configured.
    servers: Vec<SocketAddr>,
    trust_anchor: Option<PathBuf>,
    probe: String,
    timeout: Duration,
    ready_wait: Duration,
    /// Asks with AD=1/DO=1: the probe's resolver, and the `trust-ad` choice.
    trust_ad: Arc<CachingLookup<TrustAdResolver>>,
    interim: Arc<dyn DnsLookup>,
    chosen: watch::Sender<Option<Chosen>>,
}

impl std::fmt::Debug for AutoResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AutoResolver")
            .field("servers", &self.servers)
            .field("mode", &self.mode())
            .finish_non_exhaustive()
    }
}

impl AutoResolver {
    /// `servers` are the resolved name servers (never empty), `configured`
    /// the `dns.nameservers` list as written.
    pub fn new(
        configured: Vec<SocketAddr>,
        servers: Vec<SocketAddr>,
        trust_anchor: Option<PathBuf>,
        probe: String,
        timeout: Duration,
    ) -> Result<Self, DnsError> {
        let interim = TrustAdResolver::new(servers.clone(), timeout, AdMode::Off)?;
        let trust_ad = TrustAdResolver::new(servers.clone(), timeout, AdMode::TrustAd)?;
        Ok(AutoResolver {
            trust_ad: Arc::new(CachingLookup::new(trust_ad, CacheOptions::default())),
            configured,
            servers,
            trust_anchor,
            probe,
            timeout,
            ready_wait: READY_WAIT,
            interim: Arc::new(interim),
            chosen: watch::Sender::new(None),
        })
    }

    /// An `auto` resolver whose probe never runs (tests of the pending
    /// state): `interim` answers, and `dnssec_ready` waits `ready_wait`.
    #[cfg(test)]
    pub(crate) fn pending(interim: Arc<dyn DnsLookup>, ready_wait: Duration) -> Self {
        let unused: SocketAddr = ([127, 0, 0, 1], 9).into();
        let trust_ad = TrustAdResolver::new(vec![unused], Duration::from_secs(1), AdMode::TrustAd);
        AutoResolver {
            trust_ad: Arc::new(CachingLookup::new(
                trust_ad.unwrap(),
                CacheOptions::default(),
            )),
            configured: Vec::new(),
            servers: Vec::new(),
            trust_anchor: None,
            probe: ".".into(),
            timeout: Duration::from_secs(1),
            ready_wait,
            interim,
            chosen: watch::Sender::new(None),
        }
    }

    /// The mode chosen so far (`None` while the probe runs).
    pub fn mode(&self) -> Option<ActiveMode> {
        self.chosen.borrow().as_ref().map(|c| c.mode)
    }

    /// Makes `lookup` the resolver from now on (first choice wins).
    pub(crate) fn choose(&self, mode: ActiveMode, lookup: Arc<dyn DnsLookup>) {
        self.chosen.send_if_modified(|slot| {
            if slot.is_some() {
                return false;
            }
            *slot = Some(Chosen { mode, lookup });
            true
        });
    }

    /// Probes the resolver and chooses the mode (see the module docs).
    /// Returns once a mode is in use; retries (every 30 s) only while the
    /// in-process validator cannot be set up. Run it in the background.
    pub async fn select(&self) -> Settled {
        loop {
            // A retry asks afresh: the resolver may have come up validating.
            self.trust_ad.clear();
            let probe = probe::check(self.trust_ad.as_ref(), &self.probe).await;
            if probe.validating {
                info!(
                    mode = "trust-ad",
                    probe = %self.probe,
                    "dns.dnssec = auto: the resolver validates ({}); trusting its AD bit; DANE is active",
                    probe.detail
                );
                self.choose(ActiveMode::TrustAd, self.trust_ad.clone());
                return settled(ActiveMode::TrustAd, probe);
            }
            let anchor = self.trust_anchor.as_ref().map_or_else(
                || "the IANA root anchors".to_string(),
                |p| format!("dns.trust_anchor {}", p.display()),
            );
            info!(
                mode = "validate",
                probe = %self.probe,
                "dns.dnssec = auto: the resolver does not validate ({}); validating in process from {anchor}",
                probe.detail
            );
            match self.build_validating().await {
                Ok(validating) => {
                    let probe = probe::check(validating.as_ref(), &self.probe).await;
                    if probe.validating {
                        info!(probe = %self.probe, "DNSSEC probe: in-process validation works; DANE is active");
                    } else {
                        warn!(
                            probe = %self.probe,
                            detail = %probe.detail,
                            "DNSSEC probe failed with in-process validation too (no DNS, or a resolver that strips DNSSEC records?); DANE deliveries will defer"
                        );
                    }
                    self.choose(ActiveMode::Validate, validating);
                    return settled(ActiveMode::Validate, probe);
                }
                Err(e) => {
                    warn!(error = %e, "dns.dnssec = auto: cannot set up in-process validation; DANE deliveries wait; retrying in 30 s");
                    tokio::time::sleep(SETUP_RETRY).await;
                }
            }
        }
    }

    /// The in-process validator (a DS trust anchor's DNSKEYs are fetched
    /// here, asynchronously).
    async fn build_validating(&self) -> Result<Arc<dyn DnsLookup>, DnsError> {
        let built =
            ValidatingResolver::new(&self.configured, self.trust_anchor.as_deref(), self.timeout)
                .await?;
        Ok(Arc::new(CachingLookup::new(built, CacheOptions::default())))
    }
}

fn settled(mode: ActiveMode, probe: ProbeResult) -> Settled {
    Settled {
        mode,
        probe: Some(probe),
    }
}

impl DnsLookup for AutoResolver {
    fn lookup<'a>(
        &'a self,
        name: &'a str,
        rtype: RecordType,
    ) -> BoxFuture<'a, Result<Answer, DnsError>> {
        let chosen = self.chosen.borrow().as_ref().map(|c| c.lookup.clone());
        Box::pin(async move {
            match chosen {
                Some(lookup) => lookup.lookup(name, rtype).await,
                None => self.interim.lookup(name, rtype).await,
            }
        })
    }

    fn dnssec_ready(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            let mut chosen = self.chosen.subscribe();
            let ready = tokio::time::timeout(self.ready_wait, async {
                chosen.wait_for(Option::is_some).await.is_ok()
            });
            ready.await.unwrap_or(false)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::dns::{FakeDns, Record, Security};

    fn fake() -> FakeDns {
        let dns = FakeDns::new();
        dns.records(
            "",
            RecordType::Soa,
            Security::Secure,
            vec![Record::Soa { serial: 1 }],
        );
        dns
    }

    #[tokio::test(start_paused = true)]
    async fn pending_answers_come_from_the_interim_resolver_and_are_not_ready() {
        let interim = FakeDns::new();
        interim.a("mx.test", Security::Insecure, &["192.0.2.1"]);
        let auto = AutoResolver::pending(Arc::new(interim), Duration::from_secs(15));
        assert_eq!(auto.mode(), None);
        let a = auto.lookup("mx.test", RecordType::A).await.unwrap();
        assert_eq!(a.security, Security::Insecure);
        let started = tokio::time::Instant::now();
        assert!(!auto.dnssec_ready().await, "no mode: no verdict");
        assert_eq!(started.elapsed(), Duration::from_secs(15), "bounded wait");
    }

    #[tokio::test(start_paused = true)]
    async fn a_choice_releases_waiting_deliveries_and_is_final() {
        let auto = Arc::new(AutoResolver::pending(
            Arc::new(FakeDns::new()),
            Duration::from_secs(15),
        ));
        let waiter = tokio::spawn({
            let auto = auto.clone();
            async move { auto.dnssec_ready().await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        auto.choose(ActiveMode::Validate, Arc::new(fake()));
        assert!(waiter.await.unwrap(), "released by the choice");
        assert!(auto.dnssec_ready().await);
        let soa = auto.lookup(".", RecordType::Soa).await.unwrap();
        assert_eq!(
            soa.security,
            Security::Secure,
            "answers from the chosen mode"
        );
        auto.choose(ActiveMode::TrustAd, Arc::new(FakeDns::new()));
        assert_eq!(auto.mode(), Some(ActiveMode::Validate), "first choice wins");
    }
}
