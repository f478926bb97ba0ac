//! Raw → typed configuration. Collects *every* problem with its key path
//! (`listener[1].address: invalid socket address "0.0.0.0:99999"`) instead of
//! stopping at the first, because an operator fixing a config wants the whole
//! list in one go.
//!
//! This file holds the error type, the collecting deserializer and the
//! `Validator`'s shared checks; the sections are validated in
//! `validate/server.rs` (listeners, TLS, auth, limits) and
//! `validate/delivery.rs` (queue, DNS, delivery, routes).

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use super::raw::*;
use super::*;

mod delivery;
mod server;

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
        let config = Config {
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
                submission_address: match raw.http.submission_address.trim() {
                    "" => None,
                    text => self.take(
                        "http.submission_address",
                        text.parse()
                            .map(Some)
                            .map_err(|_| format!("{text:?} is not \"ip:port\"")),
                    ),
                },
            },
            dkim: super::dkim::validate(raw.dkim, &mut self.errors, &mut self.warnings),
            mta_sts: self.mta_sts(raw.mta_sts),
            tls_rpt: super::tls_rpt::TlsRptConfig::defaults(""),
        };
        let mut config = config;
        config.tls_rpt = super::tls_rpt::validate(
            raw.tls_rpt,
            &config.hostname,
            &config.dkim,
            &mut self.errors,
            &mut self.warnings,
        );
        self.submission(&config);
        config
    }

    /// HTTP submission authenticates every request against the users file,
    /// over TLS with a real certificate.
    fn submission(&mut self, config: &Config) {
        if config.http.submission_address.is_none() {
            return;
        }
        if config.auth.users_file.is_none() {
            self.err(
                "http.submission_address",
                "needs auth.users_file (every request authenticates with a users-file account)",
            );
        }
        if matches!(config.tls, TlsSource::SelfSigned) && !self.self_signed_ok {
            self.err(
                "http.submission_address",
                "needs tls.certificate and tls.private_key (it is served over TLS)",
            );
        }
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
