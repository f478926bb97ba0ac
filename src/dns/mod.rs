//! DNS lookups that carry their DNSSEC status (README.md: `dns.dnssec`).
//!
//! Everything the delivery side learns from DNS comes through the injected
//! [`DnsLookup`] trait as an [`Answer`] with a [`Security`] (`Secure` or
//! `Insecure`); bogus, SERVFAIL and timeouts are [`DnsError`]s, all
//! temporary. [`start`] picks the implementation from `dns.dnssec`:
//!
//! * `auto` (default) — [`AutoResolver`]: probes the resolver in the
//!   background and then uses `trust-ad` if it validates, else `validate`;
//! * `trust-ad` — [`TrustAdResolver`]: AD=1/DO=1 queries to a validating
//!   recursive resolver, trusting the AD bit (the Postfix model);
//! * `validate` — [`ValidatingResolver`]: hickory validates in process;
//! * `off` — [`TrustAdResolver`] in [`AdMode::Off`]: all insecure.
//!
//! All wrapped in [`CachingLookup`] (TTL cache, coalescing). [`lookup_tlsa`]
//! implements RFC 7672 §2.2.3; MX routing lives in `delivery::routing`.
//! Every answer is logged at debug with its status (target `danerelay::dns`).
//! `FakeDns` (tests and the `test-util` feature only) answers from a table.

mod addresses;
mod anchor;
mod auto;
mod cache;
#[cfg(any(test, feature = "test-util"))]
pub mod fake;
mod probe;
mod tlsa;
mod trust_ad;
mod types;
mod validate;
mod wildcard;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, warn};

use crate::config::{DnsConfig, DnssecMode};

pub use addresses::host_addresses;
pub use auto::{ActiveMode, AutoResolver, Settled, READY_WAIT};
pub use cache::{CacheOptions, CachingLookup};
#[cfg(any(test, feature = "test-util"))]
pub use fake::FakeDns;
pub use probe::{dnssec_probe, ProbeResult};
pub use tlsa::{lookup_tlsa, tlsa_owner, TlsaLookup};
pub use trust_ad::{AdMode, TrustAdResolver};
pub use types::{
    normalize_name, Answer, AnswerKind, BoxFuture, DnsError, DnsLookup, Mx, Record, RecordType,
    Security, Tlsa, TlsaRecord,
};
pub use validate::ValidatingResolver;

/// Per-query timeout (per server and transport).
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The resolver as configured, and the start-up work that settles its
/// DNSSEC mode.
pub struct Resolver {
    pub lookup: Arc<dyn DnsLookup>,
    /// The mode in use now: `None` while `auto` is still choosing.
    pub mode: Option<ActiveMode>,
    /// Runs the start-up probe and, in `auto`, chooses the mode. Never
    /// awaited before the relay is up: `serve` spawns it, `tls-check` (a
    /// one-shot) awaits it.
    pub settle: BoxFuture<'static, Settled>,
}

/// The resolver the relay uses: the mode's implementation behind the cache.
/// Must be called inside a Tokio runtime. It sends no query itself, except
/// that `validate` with a DS trust anchor bootstraps its DNSKEYs here
/// (without blocking a worker; `auto` does that later, in `settle`).
pub async fn start(config: &DnsConfig) -> Result<Resolver, DnsError> {
    let cache = CacheOptions::default();
    let probe = config.dnssec_probe.clone();
    let (lookup, mode): (Arc<dyn DnsLookup>, ActiveMode) = match config.dnssec {
        DnssecMode::Auto => {
            let auto = Arc::new(AutoResolver::new(
                config.nameservers.clone(),
                servers(config)?,
                config.trust_anchor.clone(),
                // check-config refuses auto without a probe; "." is its default.
                probe.unwrap_or_else(|| ".".into()),
                QUERY_TIMEOUT,
            )?);
            let selector = auto.clone();
            return Ok(Resolver {
                lookup: auto,
                mode: None,
                settle: Box::pin(async move { selector.select().await }),
            });
        }
        DnssecMode::TrustAd | DnssecMode::Off => {
            let (ad, active) = if config.dnssec == DnssecMode::Off {
                warn!("dns.dnssec = \"off\": every answer is treated as insecure; DANE will never engage");
                (AdMode::Off, ActiveMode::Off)
            } else {
                (AdMode::TrustAd, ActiveMode::TrustAd)
            };
            let resolver = TrustAdResolver::new(servers(config)?, QUERY_TIMEOUT, ad)?;
            (Arc::new(CachingLookup::new(resolver, cache)), active)
        }
        DnssecMode::Validate => (
            Arc::new(CachingLookup::new(
                ValidatingResolver::new(
                    &config.nameservers,
                    config.trust_anchor.as_deref(),
                    QUERY_TIMEOUT,
                )
                .await?,
                cache,
            )),
            ActiveMode::Validate,
        ),
    };
    let probed = lookup.clone();
    Ok(Resolver {
        lookup,
        mode: Some(mode),
        settle: Box::pin(async move {
            let probe = match probe {
                Some(name) => Some(dnssec_probe(probed.as_ref(), &name).await),
                None => None,
            };
            Settled { mode, probe }
        }),
    })
}

/// [`start`] for callers that only need lookups: in `auto` the mode is
/// chosen by a task spawned on the current runtime.
pub async fn connect(config: &DnsConfig) -> Result<Arc<dyn DnsLookup>, DnsError> {
    let resolver = start(config).await?;
    if resolver.mode.is_none() {
        tokio::spawn(resolver.settle);
    }
    Ok(resolver.lookup)
}

/// `dns.nameservers`, or those of /etc/resolv.conf when empty.
fn servers(config: &DnsConfig) -> Result<Vec<std::net::SocketAddr>, DnsError> {
    if config.nameservers.is_empty() {
        system_nameservers()
    } else {
        Ok(config.nameservers.clone())
    }
}

/// Name servers from /etc/resolv.conf.
pub(crate) fn system_nameservers() -> Result<Vec<std::net::SocketAddr>, DnsError> {
    let (config, _) =
        hickory_resolver::system_conf::read_system_conf().map_err(|e| DnsError::Setup {
            detail: format!("/etc/resolv.conf: {e}"),
        })?;
    let servers: Vec<_> = config
        .name_servers()
        .iter()
        .map(|ns| {
            let port = ns.connections.first().map_or(53, |c| c.port);
            std::net::SocketAddr::new(ns.ip, port)
        })
        .collect();
    if servers.is_empty() {
        return Err(DnsError::Setup {
            detail: "/etc/resolv.conf lists no name servers".into(),
        });
    }
    Ok(servers)
}

/// The debug line every answer gets: name, type, outcome and DNSSEC status.
pub(crate) fn log_result(name: &str, rtype: RecordType, result: &Result<Answer, DnsError>) {
    match result {
        Ok(a) => debug!(
            name = %a.name,
            %rtype,
            outcome = a.kind.as_str(),
            records = a.records().len(),
            security = %a.security,
            canonical = %a.canonical_name,
            ttl = a.ttl,
            "dns answer"
        ),
        Err(e) => debug!(name, %rtype, error = %e, "dns lookup failed (temporary)"),
    }
}
