//! DNS lookups that carry their DNSSEC status (README.md: `dns.dnssec`).
//!
//! Everything the delivery side learns from DNS comes through the injected
//! [`DnsLookup`] trait as an [`Answer`] with a [`Security`] (`Secure` or
//! `Insecure`); bogus, SERVFAIL and timeouts are [`DnsError`]s, all
//! temporary. [`connect`] picks the implementation from `dns.dnssec`:
//!
//! * `trust-ad` — [`TrustAdResolver`]: AD=1/DO=1 queries to a validating
//!   recursive resolver, trusting the AD bit (the Postfix model);
//! * `validate` — [`ValidatingResolver`]: hickory validates in process;
//! * `off` — [`TrustAdResolver`] in [`AdMode::Off`]: all insecure.
//!
//! All wrapped in [`CachingLookup`] (TTL cache, coalescing). [`lookup_tlsa`]
//! implements RFC 7672 §2.2.3; MX routing lives in `delivery::routing`.
//! Every answer is logged at debug with its status (target `danerelay::dns`).
//! `FakeDns` (tests and the `test-util` feature only) answers from a table.

mod anchor;
mod cache;
#[cfg(any(test, feature = "test-util"))]
pub mod fake;
mod probe;
mod tlsa;
mod trust_ad;
mod types;
mod validate;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, warn};

use crate::config::{DnsConfig, DnssecMode};

pub use cache::{CacheOptions, CachingLookup};
#[cfg(any(test, feature = "test-util"))]
pub use fake::FakeDns;
pub use probe::{dnssec_probe, ProbeResult};
pub use tlsa::{lookup_tlsa, tlsa_owner, TlsaLookup};
pub use trust_ad::{AdMode, TrustAdResolver};
pub use types::{
    normalize_name, Answer, AnswerKind, BoxFuture, DnsError, DnsLookup, Mx, Record, RecordType,
    Security, Tlsa,
};
pub use validate::ValidatingResolver;

/// Per-query timeout (per server and transport).
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The resolver the relay uses, as configured: the mode's implementation
/// behind the cache. Must be called inside a Tokio runtime; a DS trust
/// anchor's DNSKEY bootstrap runs on it without blocking a worker.
pub async fn connect(config: &DnsConfig) -> Result<Arc<dyn DnsLookup>, DnsError> {
    match config.dnssec {
        DnssecMode::Validate => {
            let resolver = ValidatingResolver::new(
                &config.nameservers,
                config.trust_anchor.as_deref(),
                QUERY_TIMEOUT,
            )
            .await?;
            Ok(Arc::new(CachingLookup::new(
                resolver,
                CacheOptions::default(),
            )))
        }
        DnssecMode::TrustAd | DnssecMode::Off => ad_resolver(config),
    }
}

/// `trust-ad` and `off`: no I/O at construction.
fn ad_resolver(config: &DnsConfig) -> Result<Arc<dyn DnsLookup>, DnsError> {
    let mode = if config.dnssec == DnssecMode::Off {
        warn!("dns.dnssec = \"off\": every answer is treated as insecure; DANE will never engage");
        AdMode::Off
    } else {
        AdMode::TrustAd
    };
    let servers = if config.nameservers.is_empty() {
        system_nameservers()?
    } else {
        config.nameservers.clone()
    };
    Ok(Arc::new(CachingLookup::new(
        TrustAdResolver::new(servers, QUERY_TIMEOUT, mode)?,
        CacheOptions::default(),
    )))
}

/// Name servers from /etc/resolv.conf.
fn system_nameservers() -> Result<Vec<std::net::SocketAddr>, DnsError> {
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
