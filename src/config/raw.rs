//! The configuration file exactly as written: serde structs that refuse
//! unknown keys, with every default of `config/danerelay.toml` spelt out here.
//! Leaves that need parsing (durations, sizes, addresses) are small newtypes
//! whose error messages quote the offending value; cross-field rules live in
//! `validate.rs`.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub hostname: String,
    pub shutdown_grace: Dur,
    pub listener: Vec<RawListener>,
    pub tls: RawTls,
    pub auth: RawAuth,
    pub limits: RawLimits,
    pub queue: RawQueue,
    pub dns: RawDns,
    pub delivery: RawDelivery,
    pub http: RawHttp,
    pub dkim: Vec<super::dkim::RawDkim>,
    pub mta_sts: RawMtaSts,
    pub tls_rpt: super::tls_rpt::RawTlsRpt,
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            hostname: String::new(),
            shutdown_grace: Dur(Ok(Duration::from_secs(25))),
            listener: vec![
                RawListener {
                    address: Some(Addr(Ok(SocketAddr::from(([0, 0, 0, 0], 587))))),
                    tls: RawListenerTls::Starttls,
                },
                RawListener {
                    address: Some(Addr(Ok(SocketAddr::from(([0, 0, 0, 0], 465))))),
                    tls: RawListenerTls::Implicit,
                },
            ],
            tls: RawTls::default(),
            auth: RawAuth::default(),
            limits: RawLimits::default(),
            queue: RawQueue::default(),
            dns: RawDns::default(),
            delivery: RawDelivery::default(),
            http: RawHttp::default(),
            dkim: Vec::new(),
            mta_sts: RawMtaSts::default(),
            tls_rpt: super::tls_rpt::RawTlsRpt::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    /// Required; `Option` so that its absence is reported by `validate`.
    #[serde(default)]
    pub address: Option<Addr>,
    #[serde(default = "RawListener::default_tls")]
    pub tls: RawListenerTls,
}

impl RawListener {
    fn default_tls() -> RawListenerTls {
        RawListenerTls::Starttls
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RawListenerTls {
    Starttls,
    Implicit,
    None,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTls {
    pub certificate: String,
    pub private_key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAuth {
    pub users_file: String,
    pub trusted_networks: Vec<Net>,
    pub sender_policy: RawSenderPolicy,
}

impl Default for RawAuth {
    fn default() -> Self {
        RawAuth {
            users_file: String::new(),
            trusted_networks: Vec::new(),
            sender_policy: RawSenderPolicy::OwnAddress,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RawSenderPolicy {
    OwnAddress,
    OwnDomain,
    Any,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    pub max_message_size: Size,
    pub max_recipients: u64,
    pub max_connections: u64,
    pub max_auth_failures: u64,
    pub command_timeout: Dur,
    pub max_connections_per_ip: u64,
    pub connection_rate_per_ip: u64,
    pub max_junk_commands: u64,
    pub messages_per_user_per_hour: u64,
    pub session_timeout: Dur,
    pub data_timeout: Dur,
    pub max_header_size: Size,
    pub max_header_fields: u64,
    pub max_recipients_per_session: u64,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            max_message_size: Size(Ok(25 * 1024 * 1024)),
            max_recipients: 100,
            max_connections: 1000,
            max_auth_failures: 3,
            command_timeout: Dur(Ok(Duration::from_secs(300))),
            max_connections_per_ip: 20,
            connection_rate_per_ip: 60,
            max_junk_commands: 50,
            messages_per_user_per_hour: 500,
            session_timeout: Dur(Ok(Duration::from_secs(3600))),
            data_timeout: Dur(Ok(Duration::from_secs(600))),
            max_header_size: Size(Ok(128 * 1024)),
            max_header_fields: 500,
            max_recipients_per_session: 1000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawQueue {
    pub path: String,
    pub retry: Vec<Dur>,
    pub max_age: Dur,
    pub delay_warning: Dur,
    pub min_free_space: Size,
    pub cache_size: Size,
}

impl Default for RawQueue {
    fn default() -> Self {
        let retry = [5 * 60, 10 * 60, 30 * 60, 3600, 2 * 3600, 4 * 3600]
            .into_iter()
            .map(|s| Dur(Ok(Duration::from_secs(s))))
            .collect();
        RawQueue {
            path: "/var/lib/danerelay/queue".into(),
            retry,
            max_age: Dur(Ok(Duration::from_secs(5 * 86400))),
            delay_warning: Dur(Ok(Duration::from_secs(4 * 3600))),
            min_free_space: Size(Ok(512 * 1024 * 1024)),
            cache_size: Size(Ok(64 * 1024 * 1024)),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDns {
    pub nameservers: Vec<Addr>,
    pub dnssec: RawDnssec,
    pub trust_anchor: String,
    pub dnssec_probe: String,
}

impl Default for RawDns {
    fn default() -> Self {
        RawDns {
            nameservers: Vec::new(),
            dnssec: RawDnssec::Auto,
            trust_anchor: String::new(),
            dnssec_probe: ".".into(),
        }
    }
}

/// `[mta_sts]` (RFC 8461).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMtaSts {
    pub enabled: bool,
    pub ca_file: String,
    pub fetch_timeout: Dur,
}

impl Default for RawMtaSts {
    fn default() -> Self {
        RawMtaSts {
            enabled: true,
            ca_file: String::new(),
            fetch_timeout: Dur(Ok(Duration::from_secs(60))),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RawDnssec {
    Auto,
    TrustAd,
    Validate,
    Off,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDelivery {
    pub concurrency: u64,
    pub per_destination: u64,
    pub tls: RawTlsLevel,
    pub dane_insecure_mx: RawInsecureMx,
    pub helo_name: String,
    pub connect_timeout: Dur,
    pub max_hosts: u64,
    pub paused: bool,
    pub route: Vec<RawRoute>,
}

impl Default for RawDelivery {
    fn default() -> Self {
        RawDelivery {
            concurrency: 256,
            per_destination: 16,
            tls: RawTlsLevel::Dane,
            dane_insecure_mx: RawInsecureMx::Dane,
            helo_name: String::new(),
            connect_timeout: Dur(Ok(Duration::from_secs(30))),
            max_hosts: 5,
            paused: false,
            route: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RawTlsLevel {
    None,
    May,
    Encrypt,
    Dane,
    DaneOnly,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RawInsecureMx {
    Dane,
    May,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    #[serde(default)]
    pub domain: String,
    #[serde(default)]
    pub tls: Option<RawTlsLevel>,
    #[serde(default)]
    pub next_hop: String,
    #[serde(default)]
    pub max_connections: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHttp {
    pub address: Addr,
    pub admin_token: String,
    /// `"ip:port"` for HTTP submission; `""` = off.
    pub submission_address: String,
}

impl Default for RawHttp {
    fn default() -> Self {
        RawHttp {
            address: Addr(Ok(SocketAddr::from(([127, 0, 0, 1], 9587)))),
            admin_token: String::new(),
            submission_address: String::new(),
        }
    }
}

// Leaves keep a parse failure as a value instead of failing deserialization,
// so that one bad value does not hide the others: `validate` reports each
// with its key path.

/// A humantime duration such as `"5m"` or `"4h 30m"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dur(pub Result<Duration, String>);

/// A byte size: an integer, or a string such as `"25MiB"`, `"512KiB"`, `"10MB"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Size(pub Result<u64, String>);

/// A socket address `ip:port` (IPv6 as `[::1]:25`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr(pub Result<SocketAddr, String>);

/// A CIDR such as `10.0.0.0/8`; a bare address means a single host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Net(pub Result<IpNet, String>);

/// Parses `"25MiB"`-style sizes. Binary (KiB, MiB, GiB) and decimal (KB, MB,
/// GB) units; a bare number is bytes.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1000 * 1000,
        "mib" => 1 << 20,
        "g" | "gb" => 1000 * 1000 * 1000,
        "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

macro_rules! str_visitor {
    ($ty:ident, $expecting:literal, $parse:expr) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$ty, E> {
                        #[allow(clippy::redundant_closure_call)]
                        Ok($ty(
                            ($parse)(v).ok_or_else(|| format!("invalid {} {v:?}", $expecting))
                        ))
                    }
                    fn visit_u64<E: de::Error>(self, v: u64) -> Result<$ty, E> {
                        self.visit_str(&v.to_string())
                    }
                    fn visit_i64<E: de::Error>(self, v: i64) -> Result<$ty, E> {
                        self.visit_str(&v.to_string())
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

str_visitor!(Dur, "duration", |v: &str| humantime::parse_duration(v).ok());
str_visitor!(Size, "size", parse_size);
str_visitor!(Addr, "socket address", |v: &str| v
    .parse::<SocketAddr>()
    .ok());
str_visitor!(Net, "network", |v: &str| v
    .parse::<IpNet>()
    .ok()
    .or_else(|| v.parse::<std::net::IpAddr>().ok().map(IpNet::from)));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("25MiB"), Some(25 * 1024 * 1024));
        assert_eq!(parse_size("10 KB"), Some(10_000));
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("3 parsecs"), None);
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("99999999999999GiB"), None);
    }
}
