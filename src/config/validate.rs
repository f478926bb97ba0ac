//! Raw → typed configuration. Collects *every* problem with its key path
//! (`listener[1].address: invalid socket address "0.0.0.0:99999"`) instead of
//! stopping at the first, because an operator fixing a config wants the whole
//! list in one go.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::raw::*;
use super::*;

/// One problem, with the key path it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key path (`limits.max_recipients`, `listener[1].address`);
    /// empty for problems with the file as a whole.
    pub path: String,
    pub message: String,
}

impl ConfigError {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// A valid configuration plus the things worth telling the operator that do
/// not stop it from running (e.g. a certificate file that is not there *yet*).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<ConfigError>,
}

/// Reads and validates a configuration file.
pub fn load_file(path: &Path) -> Result<Loaded, Vec<ConfigError>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![ConfigError::new(
            "",
            format!("cannot read {}: {e}", path.display()),
        )]
    })?;
    parse(&text)
}

/// Parses and validates configuration text.
pub fn parse(text: &str) -> Result<Loaded, Vec<ConfigError>> {
    let (raw, mut errors) = deserialize_collecting(text);
    let Some(raw) = raw else {
        return Err(errors);
    };
    let mut loaded = from_raw(raw, false);
    if let Err(more) = &mut loaded {
        errors.append(more);
    }
    if errors.is_empty() {
        loaded
    } else {
        Err(errors)
    }
}

/// Validates raw values. `self_signed_ok` is true only for the embedded
/// development default, the one place a TLS listener may run on a generated
/// certificate.
pub(super) fn from_raw(raw: RawConfig, self_signed_ok: bool) -> Result<Loaded, Vec<ConfigError>> {
    let mut v = Validator {
        self_signed_ok,
        ..Validator::default()
    };
    let config = v.config(raw);
    let errors = v.errors;
    if errors.is_empty() {
        Ok(Loaded {
            config,
            warnings: v.warnings,
        })
    } else {
        Err(errors)
    }
}

/// Deserializes with `deny_unknown_fields`, but keeps going after an unknown
/// key or a wrongly typed value: the offending key is reported, removed, and
/// deserialization retried, so every such mistake is listed, not just the first.
fn deserialize_collecting(text: &str) -> (Option<RawConfig>, Vec<ConfigError>) {
    let mut errors = Vec::new();
    let mut value = match text.parse::<toml::Table>() {
        Ok(v) => toml::Value::Table(v),
        Err(e) => {
            let msg = e.message().to_string();
            let at = e
                .span()
                .map(|s| {
                    let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                    format!(" (line {line})")
                })
                .unwrap_or_default();
            return (None, vec![ConfigError::new("", format!("{msg}{at}"))]);
        }
    };
    // Each retry removes one key, so this terminates; the bound is a backstop.
    for _ in 0..256 {
        match serde_path_to_error::deserialize::<_, RawConfig>(value.clone()) {
            Ok(raw) => return (Some(raw), errors),
            Err(err) => {
                let segments: Vec<String> = err
                    .path()
                    .iter()
                    .map(|s| match s {
                        serde_path_to_error::Segment::Seq { index } => format!("[{index}]"),
                        serde_path_to_error::Segment::Map { key } => key.clone(),
                        _ => String::new(),
                    })
                    .collect();
                let message = err.inner().to_string();
                let message = message.lines().next().unwrap_or_default().to_string();
                // The path ends at the offending key (for an unknown field,
                // serde_path_to_error already includes the key itself).
                errors.push(ConfigError::new(join_path(&segments), message));
                let removed = match segments.split_last() {
                    Some((last, parent)) if !last.starts_with('[') => {
                        remove_key(&mut value, parent, last)
                    }
                    _ => false,
                };
                if !removed {
                    return (None, errors);
                }
            }
        }
    }
    (None, errors)
}

fn join_path(segments: &[String]) -> String {
    let mut out = String::new();
    for s in segments {
        if !out.is_empty() && !s.starts_with('[') {
            out.push('.');
        }
        out.push_str(s);
    }
    out
}

fn remove_key(root: &mut toml::Value, parent: &[String], key: &str) -> bool {
    let mut cur = root;
    for seg in parent {
        let index = seg
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .and_then(|s| s.parse::<usize>().ok());
        let next = match (index, cur) {
            (Some(i), toml::Value::Array(items)) => items.get_mut(i),
            (None, toml::Value::Table(table)) => table.get_mut(seg.as_str()),
            _ => None,
        };
        match next {
            Some(v) => cur = v,
            None => return false,
        }
    }
    match cur {
        toml::Value::Table(table) => table.remove(key).is_some(),
        _ => false,
    }
}

#[derive(Default)]
struct Validator {
    self_signed_ok: bool,
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigError>,
}

impl Validator {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError::new(path, message));
    }

    fn take<T: Default>(&mut self, path: &str, value: Result<T, String>) -> T {
        value.unwrap_or_else(|e| {
            self.err(path, e);
            T::default()
        })
    }

    fn positive(&mut self, path: &str, n: u64) -> usize {
        if n == 0 {
            self.err(path, "must be at least 1");
        }
        usize::try_from(n).unwrap_or(usize::MAX)
    }

    /// `None` when the value did not parse (already reported), so that
    /// dependent checks do not pile follow-on errors onto it.
    fn duration_opt(&mut self, path: &str, d: Dur, allow_zero: bool) -> Option<Duration> {
        let d = d.0.map_err(|e| self.err(path, e)).ok()?;
        if !allow_zero && d.is_zero() {
            self.err(path, "must be longer than 0s");
        }
        Some(d)
    }

    fn duration(&mut self, path: &str, d: Dur, allow_zero: bool) -> Duration {
        self.duration_opt(path, d, allow_zero).unwrap_or_default()
    }

    fn config(&mut self, raw: RawConfig) -> Config {
        let hostname = if raw.hostname.is_empty() {
            os_hostname()
        } else {
            raw.hostname.clone()
        };
        if !is_hostname(&hostname) {
            self.err("hostname", format!("{hostname:?} is not a valid host name"));
        }
        let listeners = self.listeners(&raw.listener);
        let tls = self.tls(&raw.tls, &listeners);
        let helo_name = if raw.delivery.helo_name.is_empty() {
            hostname.clone()
        } else {
            raw.delivery.helo_name.clone()
        };
        if !raw.delivery.helo_name.is_empty() && !is_hostname(&helo_name) {
            self.err(
                "delivery.helo_name",
                format!("{helo_name:?} is not a valid host name"),
            );
        }
        Config {
            hostname,
            shutdown_grace: self.duration("shutdown_grace", raw.shutdown_grace, true),
            listeners,
            tls,
            auth: self.auth(raw.auth),
            limits: self.limits(raw.limits),
            queue: self.queue(raw.queue),
            dns: self.dns(raw.dns),
            delivery: self.delivery(raw.delivery, helo_name),
            http: HttpConfig {
                address: self
                    .take("http.address", raw.http.address.0.map(Some))
                    .unwrap_or(std::net::SocketAddr::from(([127, 0, 0, 1], 9587))),
                admin_token: Some(raw.http.admin_token).filter(|t| !t.is_empty()),
            },
        }
    }

    fn listeners(&mut self, raw: &[RawListener]) -> Vec<ListenerConfig> {
        if raw.is_empty() {
            self.err("listener", "at least one [[listener]] is required");
        }
        let mut out: Vec<ListenerConfig> = Vec::new();
        for (i, l) in raw.iter().enumerate() {
            let path = format!("listener[{i}].address");
            let Some(addr) = l.address.clone() else {
                self.err(&path, "missing (e.g. \"0.0.0.0:587\")");
                continue;
            };
            let Ok(address) = addr.0.map_err(|e| self.err(&path, e)) else {
                continue;
            };
            if let Some(j) = out.iter().position(|o| o.address == address) {
                self.err(&path, format!("{address} is already used by listener[{j}]"));
            }
            let tls = match l.tls {
                RawListenerTls::Starttls => ListenerTls::StartTls,
                RawListenerTls::Implicit => ListenerTls::Implicit,
                RawListenerTls::None => ListenerTls::None,
            };
            out.push(ListenerConfig { address, tls });
        }
        out
    }

    fn tls(&mut self, raw: &RawTls, listeners: &[ListenerConfig]) -> TlsSource {
        let needs_tls = listeners.iter().position(|l| l.tls != ListenerTls::None);
        match (raw.certificate.is_empty(), raw.private_key.is_empty()) {
            (true, true) => {
                if let Some(i) = needs_tls.filter(|_| !self.self_signed_ok) {
                    self.err(
                        "tls.certificate",
                        format!("required: listener[{i}] uses TLS (only the development default generates a self-signed certificate)"),
                    );
                }
                TlsSource::SelfSigned
            }
            (false, true) => {
                self.err("tls.private_key", "required when tls.certificate is set");
                TlsSource::SelfSigned
            }
            (true, false) => {
                self.err("tls.certificate", "required when tls.private_key is set");
                TlsSource::SelfSigned
            }
            (false, false) => {
                let certificate = PathBuf::from(&raw.certificate);
                let private_key = PathBuf::from(&raw.private_key);
                if let Some(bytes) = self.read_file("tls.certificate", &certificate) {
                    if CertificateDer::pem_slice_iter(&bytes)
                        .next()
                        .is_none_or(|c| c.is_err())
                    {
                        self.err(
                            "tls.certificate",
                            format!("{} holds no PEM certificate", certificate.display()),
                        );
                    }
                }
                if let Some(bytes) = self.read_file("tls.private_key", &private_key) {
                    if PrivateKeyDer::from_pem_slice(&bytes).is_err() {
                        self.err(
                            "tls.private_key",
                            format!("{} holds no PEM private key", private_key.display()),
                        );
                    }
                }
                TlsSource::Files {
                    certificate,
                    private_key,
                }
            }
        }
    }

    /// A file that exists but cannot be read is an error; one that does not
    /// exist yet is a warning (Kubernetes mounts secrets after the config is
    /// checked; `serve` refuses to start without it).
    fn read_file(&mut self, path: &str, file: &Path) -> Option<Vec<u8>> {
        match std::fs::read(file) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.warnings.push(ConfigError::new(
                    path,
                    format!("{} does not exist (yet); serve needs it", file.display()),
                ));
                None
            }
            Err(e) => {
                self.err(path, format!("cannot read {}: {e}", file.display()));
                None
            }
        }
    }

    fn auth(&mut self, raw: RawAuth) -> AuthConfig {
        let users_file =
            Some(PathBuf::from(&raw.users_file)).filter(|_| !raw.users_file.is_empty());
        if let Some(file) = &users_file {
            let _ = self.read_file("auth.users_file", file);
        }
        let trusted_networks = raw
            .trusted_networks
            .into_iter()
            .enumerate()
            .filter_map(|(i, n)| {
                n.0.map_err(|e| self.err(format!("auth.trusted_networks[{i}]"), e))
                    .ok()
            })
            .map(|n| n.trunc())
            .collect();
        AuthConfig {
            users_file,
            trusted_networks,
            sender_policy: match raw.sender_policy {
                RawSenderPolicy::OwnAddress => SenderPolicy::OwnAddress,
                RawSenderPolicy::OwnDomain => SenderPolicy::OwnDomain,
                RawSenderPolicy::Any => SenderPolicy::Any,
            },
        }
    }

    fn limits(&mut self, raw: RawLimits) -> Limits {
        let max_message_size = self.take("limits.max_message_size", raw.max_message_size.0);
        if max_message_size < 1024 {
            self.err("limits.max_message_size", "must be at least 1KiB");
        }
        Limits {
            max_message_size,
            max_recipients: self.positive("limits.max_recipients", raw.max_recipients),
            max_connections: self.positive("limits.max_connections", raw.max_connections),
            max_auth_failures: u32::try_from(
                self.positive("limits.max_auth_failures", raw.max_auth_failures),
            )
            .unwrap_or(u32::MAX),
            command_timeout: self.duration("limits.command_timeout", raw.command_timeout, false),
            max_connections_per_ip: self
                .positive("limits.max_connections_per_ip", raw.max_connections_per_ip),
            connection_rate_per_ip: self
                .positive_u32("limits.connection_rate_per_ip", raw.connection_rate_per_ip),
            max_junk_commands: self.positive_u32("limits.max_junk_commands", raw.max_junk_commands),
            messages_per_user_per_hour: self.positive_u32(
                "limits.messages_per_user_per_hour",
                raw.messages_per_user_per_hour,
            ),
            session_timeout: self.duration("limits.session_timeout", raw.session_timeout, false),
            data_timeout: self.duration("limits.data_timeout", raw.data_timeout, false),
            max_header_size: self.header_size(raw.max_header_size, max_message_size),
            max_header_fields: self.positive("limits.max_header_fields", raw.max_header_fields),
            max_recipients_per_session: self.positive(
                "limits.max_recipients_per_session",
                raw.max_recipients_per_session,
            ),
        }
    }

    fn positive_u32(&mut self, path: &str, n: u64) -> u32 {
        match u32::try_from(n) {
            Ok(v) => {
                self.positive(path, n);
                v
            }
            Err(_) => {
                self.err(path, format!("must be at most {}", u32::MAX));
                u32::MAX
            }
        }
    }

    /// A header section needs room for a few fields; it is never larger than
    /// the message may be, so a small `max_message_size` caps it silently.
    fn header_size(&mut self, raw: Size, max_message_size: u64) -> u64 {
        let path = "limits.max_header_size";
        let size = self.take(path, raw.0);
        if size < 1024 {
            self.err(path, "must be at least 1KiB");
        }
        size.min(max_message_size.max(1024))
    }

    fn queue(&mut self, raw: RawQueue) -> QueueConfig {
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
        QueueConfig {
            path: PathBuf::from(raw.path),
            retry,
            max_age: max_age.unwrap_or_default(),
            delay_warning: Some(delay_warning).filter(|d| !d.is_zero()),
        }
    }

    fn dns(&mut self, raw: RawDns) -> DnsConfig {
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
        DnsConfig {
            nameservers,
            dnssec,
            trust_anchor,
            dnssec_probe: Some(probe).filter(|p| !p.is_empty()),
        }
    }

    fn delivery(&mut self, raw: RawDelivery, helo_name: String) -> DeliveryConfig {
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

    fn route(&mut self, i: usize, raw: RawRoute) -> Option<Route> {
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
        if raw.tls.is_none() && next_hop.is_none() {
            self.warnings.push(ConfigError::new(
                path,
                "sets neither tls nor next_hop and changes nothing",
            ));
        }
        Some(Route {
            domain,
            tls: raw.tls.map(tls_level),
            next_hop,
        })
    }
}

fn tls_level(raw: RawTlsLevel) -> TlsLevel {
    match raw {
        RawTlsLevel::None => TlsLevel::None,
        RawTlsLevel::May => TlsLevel::May,
        RawTlsLevel::Encrypt => TlsLevel::Encrypt,
        RawTlsLevel::Dane => TlsLevel::Dane,
        RawTlsLevel::DaneOnly => TlsLevel::DaneOnly,
    }
}

/// `host`, `host:port` or `[ip]:port`; the port defaults to 25.
pub fn parse_next_hop(text: &str) -> Option<NextHop> {
    let text = text.trim();
    if let Some(rest) = text.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        let ip: IpAddr = ip.parse().ok()?;
        let port = match after {
            "" => 25,
            p => p.strip_prefix(':')?.parse().ok().filter(|p| *p != 0)?,
        };
        return Some(NextHop {
            host: NextHopHost::Ip(ip),
            port,
        });
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().ok().filter(|p| *p != 0)?),
        None => (text, 25),
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    is_hostname(&host).then_some(NextHop {
        host: NextHopHost::Name(host),
        port,
    })
}

/// LDH host name check (RFC 1123), dots between non-empty labels.
pub fn is_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// The machine's host name, as the OS reports it.
pub fn os_hostname() -> String {
    gethostname::gethostname()
        .into_string()
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| is_hostname(h))
        .unwrap_or_else(|| "localhost".to_string())
}
