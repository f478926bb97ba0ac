//! The back of the configuration: `[queue]`, `[dns]`, `[delivery]` and its
//! `[[delivery.route]]` entries.

use super::super::raw::*;
use super::super::*;
use super::{parse_next_hop, tls_level, Validator};

/// sled's cache below this thrashes on every lookup.
const MIN_CACHE_SIZE: u64 = 1024 * 1024;

impl Validator {
    /// `[mta_sts]`: a `ca_file` must hold at least one PEM certificate.
    pub(super) fn mta_sts(&mut self, raw: RawMtaSts) -> MtaStsConfig {
        let fetch_timeout = self.duration("mta_sts.fetch_timeout", raw.fetch_timeout, false);
        let ca_file = Some(PathBuf::from(&raw.ca_file)).filter(|_| !raw.ca_file.trim().is_empty());
        if let Some(file) = &ca_file {
            if let Some(pem) = self.read_file("mta_sts.ca_file", file) {
                if let Err(e) = crate::sts::pkix::parse_pem(&pem) {
                    self.err("mta_sts.ca_file", format!("{}: {e}", file.display()));
                }
            }
        }
        MtaStsConfig {
            enabled: raw.enabled,
            ca_file,
            fetch_timeout,
        }
    }

    pub(super) fn queue(&mut self, raw: RawQueue) -> QueueConfig {
        if raw.path.is_empty() {
            self.err("queue.path", "must not be empty");
        }
        if raw.retry.is_empty() {
            self.err("queue.retry", "needs at least one interval");
        }
        let retry: Vec<Duration> = raw
            .retry
            .into_iter()
            .enumerate()
            .map(|(i, d)| self.duration(&format!("queue.retry[{i}]"), d, false))
            .collect();
        let max_age = self.duration_opt("queue.max_age", raw.max_age, false);
        if let (Some(first), Some(max_age)) = (retry.first(), max_age) {
            if max_age < *first {
                self.err(
                    "queue.max_age",
                    format!(
                        "{} is shorter than the first retry interval ({}): mail would expire before its first retry",
                        humantime::format_duration(max_age),
                        humantime::format_duration(*first)
                    ),
                );
            }
        }
        let delay_warning = self.duration("queue.delay_warning", raw.delay_warning, true);
        let min_free_space = self.take("queue.min_free_space", raw.min_free_space.0);
        let cache_size = raw.cache_size.0.and_then(|n| match n {
            n if n < MIN_CACHE_SIZE => Err(format!(
                "{n} bytes is too small for the queue database's cache: at least \"1MiB\""
            )),
            n => Ok(n),
        });
        let cache_size = self.take("queue.cache_size", cache_size);
        QueueConfig {
            path: PathBuf::from(raw.path),
            retry,
            max_age: max_age.unwrap_or_default(),
            delay_warning: Some(delay_warning).filter(|d| !d.is_zero()),
            min_free_space,
            cache_size,
        }
    }

    pub(super) fn dns(&mut self, raw: RawDns) -> DnsConfig {
        let nameservers = raw
            .nameservers
            .into_iter()
            .enumerate()
            .filter_map(|(i, a)| {
                a.0.map_err(|e| self.err(format!("dns.nameservers[{i}]"), e))
                    .ok()
            })
            .collect();
        let dnssec = match raw.dnssec {
            RawDnssec::Auto => DnssecMode::Auto,
            RawDnssec::TrustAd => DnssecMode::TrustAd,
            RawDnssec::Validate => DnssecMode::Validate,
            RawDnssec::Off => DnssecMode::Off,
        };
        let trust_anchor =
            Some(PathBuf::from(&raw.trust_anchor)).filter(|_| !raw.trust_anchor.is_empty());
        if let Some(file) = &trust_anchor {
            let _ = self.read_file("dns.trust_anchor", file);
        }
        let probe = raw.dnssec_probe.trim().to_string();
        if !probe.is_empty() && probe != "." && !is_hostname(probe.trim_end_matches('.')) {
            self.err(
                "dns.dnssec_probe",
                format!("{probe:?} is not a domain name"),
            );
        }
        if probe.is_empty() && dnssec == DnssecMode::Auto {
            // auto decides by the probe: without one there is nothing to decide by.
            self.err(
                "dns.dnssec_probe",
                "must name a zone when dns.dnssec = \"auto\" (the probe chooses the mode)",
            );
        }
        DnsConfig {
            nameservers,
            dnssec,
            trust_anchor,
            dnssec_probe: Some(probe).filter(|p| !p.is_empty()),
        }
    }

    pub(super) fn delivery(&mut self, raw: RawDelivery, helo_name: String) -> DeliveryConfig {
        let concurrency = self.positive("delivery.concurrency", raw.concurrency);
        let per_destination = self.positive("delivery.per_destination", raw.per_destination);
        if per_destination > concurrency {
            self.warnings.push(ConfigError::new(
                "delivery.per_destination",
                format!("{per_destination} exceeds delivery.concurrency ({concurrency}); the total cap wins"),
            ));
        }
        let routes = raw
            .route
            .into_iter()
            .enumerate()
            .filter_map(|(i, r)| self.route(i, r))
            .collect();
        DeliveryConfig {
            concurrency,
            per_destination,
            tls: tls_level(raw.tls),
            dane_insecure_mx: match raw.dane_insecure_mx {
                RawInsecureMx::Dane => InsecureMxPolicy::Dane,
                RawInsecureMx::May => InsecureMxPolicy::May,
            },
            helo_name,
            connect_timeout: self.duration("delivery.connect_timeout", raw.connect_timeout, false),
            max_hosts: self.positive("delivery.max_hosts", raw.max_hosts),
            paused: raw.paused,
            routes,
        }
    }

    pub(super) fn route(&mut self, i: usize, raw: RawRoute) -> Option<Route> {
        let path = format!("delivery.route[{i}]");
        let domain_text = raw.domain.trim().trim_end_matches('.').to_ascii_lowercase();
        let domain = if let Some(suffix) = domain_text.strip_prefix("*.") {
            is_hostname(suffix).then(|| DomainPattern::Subdomains(suffix.to_string()))
        } else {
            is_hostname(&domain_text).then(|| DomainPattern::Exact(domain_text.clone()))
        };
        let next_hop = if raw.next_hop.is_empty() {
            Some(None)
        } else {
            match parse_next_hop(&raw.next_hop) {
                Some(h) => Some(Some(h)),
                None => {
                    self.err(
                        format!("{path}.next_hop"),
                        format!(
                            "invalid next hop {:?} (expected \"host:port\" or \"[ip]:port\")",
                            raw.next_hop
                        ),
                    );
                    None
                }
            }
        };
        let Some(domain) = domain else {
            self.err(
                format!("{path}.domain"),
                format!(
                    "invalid domain {:?} (expected \"example.com\" or \"*.example.com\")",
                    raw.domain
                ),
            );
            return None;
        };
        let next_hop = next_hop?;
        if raw.tls.is_none() && next_hop.is_none() && raw.max_connections == 0 {
            self.warnings.push(ConfigError::new(
                path,
                "sets neither tls, next_hop nor max_connections and changes nothing",
            ));
        }
        Some(Route {
            domain,
            tls: raw.tls.map(tls_level),
            next_hop,
            max_connections: usize::try_from(raw.max_connections).ok().filter(|n| *n > 0),
        })
    }
}
