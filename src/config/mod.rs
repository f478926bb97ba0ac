//! Configuration: the TOML file (or the embedded development default) turned
//! into a typed, validated [`Config`]. Raw serde structs live in `raw.rs`;
//! `validate.rs` turns them into these types and reports *every* problem with
//! its key path.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

/// The validated configuration every other module reads.
#[derive(Debug, Clone)]
pub struct Config {
    /// EHLO name, banner and `Received:` host name.
    pub hostname: String,
    /// Time given to sessions and deliveries after SIGTERM.
    pub shutdown_grace: Duration,
    pub listeners: Vec<ListenerConfig>,
    /// Where the server certificate comes from.
    pub tls: TlsSource,
    pub auth: AuthConfig,
    pub limits: Limits,
    pub queue: QueueConfig,
    pub dns: DnsConfig,
    pub delivery: DeliveryConfig,
    pub http: HttpConfig,
    /// `[[dkim]]` signing keys; empty = no signing.
    pub dkim: Vec<crate::dkim::key::KeyConfig>,
    pub mta_sts: MtaStsConfig,
    /// `[tls_rpt]`: RFC 8460 reports.
    pub tls_rpt: tls_rpt::TlsRptConfig,
}

/// `[mta_sts]`: RFC 8461 for domains without usable DANE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MtaStsConfig {
    pub enabled: bool,
    /// PEM bundle that replaces the bundled Mozilla roots for policy hosts
    /// and MX certificates; `None` = the bundled roots.
    pub ca_file: Option<PathBuf>,
    /// Bound on one whole policy fetch (connect, TLS, request, body).
    pub fetch_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    pub address: SocketAddr,
    pub tls: ListenerTls,
}

/// `listener.tls`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerTls {
    /// RFC 3207: plaintext greeting, STARTTLS offered (port 587 style).
    StartTls,
    /// RFC 8314: TLS from the first byte (port 465 style).
    Implicit,
    /// No TLS at all; only sensible for trusted in-cluster clients.
    None,
}

/// `[tls]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// PEM chain and key, re-read when the files change.
    Files {
        certificate: PathBuf,
        private_key: PathBuf,
    },
    /// Development default: a self-signed certificate generated at start.
    SelfSigned,
}

/// `[auth]`
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// `None` = no users file (only trusted networks can relay).
    pub users_file: Option<PathBuf>,
    pub trusted_networks: Vec<IpNet>,
    pub sender_policy: SenderPolicy,
}

/// `auth.sender_policy`: what envelope sender an authenticated user may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenderPolicy {
    /// Exactly the login address (case-insensitive domain).
    OwnAddress,
    /// Any address in the login address's domain.
    OwnDomain,
    /// Anything (trusted applications sending on behalf of others).
    Any,
}

/// `[limits]`
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub max_connections: usize,
    pub max_auth_failures: u32,
    /// RFC 5321 §4.5.3.2 server timeout per command (default 5 min).
    pub command_timeout: Duration,
    /// Concurrent connections from one client address (trusted networks exempt).
    pub max_connections_per_ip: usize,
    /// New connections per minute from one client address (trusted networks exempt).
    pub connection_rate_per_ip: u32,
    /// Commands in a row that make no progress (NOOP, RSET, VRFY, HELP,
    /// unknown or refused commands) before `421` and close.
    pub max_junk_commands: u32,
    /// Mail transactions (MAIL commands) one authenticated user may start per hour.
    pub messages_per_user_per_hour: u32,
    /// Whole-session deadline, however busy the client keeps it (slowloris).
    pub session_timeout: Duration,
    /// Deadline for one message's content (DATA or all BDAT chunks).
    pub data_timeout: Duration,
    /// Largest header section (octets, up to the blank line).
    pub max_header_size: u64,
    /// Most header fields in one message.
    pub max_header_fields: usize,
    /// Recipients accepted over a whole session.
    pub max_recipients_per_session: usize,
}

impl Default for Limits {
    /// The documented `[limits]` defaults (config/danerelay.toml).
    fn default() -> Self {
        Limits {
            max_message_size: 25 * 1024 * 1024,
            max_recipients: 100,
            max_connections: 1000,
            max_auth_failures: 3,
            command_timeout: Duration::from_secs(300),
            max_connections_per_ip: 20,
            connection_rate_per_ip: 60,
            max_junk_commands: 50,
            messages_per_user_per_hour: 500,
            session_timeout: Duration::from_secs(3600),
            data_timeout: Duration::from_secs(600),
            max_header_size: 128 * 1024,
            max_header_fields: 500,
            max_recipients_per_session: 1000,
        }
    }
}

/// `[queue]`
#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub path: PathBuf,
    /// Retry intervals; the last one repeats (with jitter). Never empty.
    pub retry: Vec<Duration>,
    pub max_age: Duration,
    /// `None` when configured as `"0s"`.
    pub delay_warning: Option<Duration>,
    /// Below this free space on the queue volume new mail gets `452 4.3.1`; 0 = off.
    pub min_free_space: u64,
    /// sled's page cache in bytes (at least 1 MiB): the queue's memory, however long it is.
    pub cache_size: u64,
}

/// `[dns]`
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// Empty = use /etc/resolv.conf.
    pub nameservers: Vec<SocketAddr>,
    pub dnssec: DnssecMode,
    /// `None` = the IANA root anchor.
    pub trust_anchor: Option<PathBuf>,
    /// `None` = no start-up probe.
    pub dnssec_probe: Option<String>,
}

/// `dns.dnssec`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnssecMode {
    /// `trust-ad` when the resolver passes the start-up probe, else
    /// `validate`; chosen in the background (`dns::auto`). The default.
    Auto,
    /// Trust the AD bit of a validating resolver (the Postfix model).
    TrustAd,
    /// Validate in process with hickory's validator.
    Validate,
    /// Everything is insecure; DANE never engages.
    Off,
}

/// `[delivery]`
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub concurrency: usize,
    pub per_destination: usize,
    pub tls: TlsLevel,
    /// `delivery.dane_insecure_mx`: what an insecure MX RRset does to DANE.
    pub dane_insecure_mx: InsecureMxPolicy,
    /// Resolved: never empty (falls back to `hostname`).
    pub helo_name: String,
    pub connect_timeout: Duration,
    /// MX hosts tried per delivery attempt (Postfix's smtp_mx_address_limit
    /// idea): bounds how long one attempt can take against a broken domain.
    pub max_hosts: usize,
    /// Accept and queue, deliver nothing (no delivery scheduler runs).
    pub paused: bool,
    pub routes: Vec<Route>,
}

/// The outbound TLS security level, as Postfix's `smtp_tls_security_level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsLevel {
    /// Plaintext only.
    None,
    /// Opportunistic STARTTLS, unauthenticated.
    May,
    /// TLS mandatory, unauthenticated.
    Encrypt,
    /// DANE where secure usable TLSA exist, else opportunistic.
    Dane,
    /// DANE mandatory: no usable secure TLSA ⇒ defer.
    DaneOnly,
}

impl TlsLevel {
    /// The level as the configuration spells it (`dane-only`).
    pub fn as_str(self) -> &'static str {
        match self {
            TlsLevel::None => "none",
            TlsLevel::May => "may",
            TlsLevel::Encrypt => "encrypt",
            TlsLevel::Dane => "dane",
            TlsLevel::DaneOnly => "dane-only",
        }
    }
}

impl std::fmt::Display for TlsLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `delivery.dane_insecure_mx`, as Postfix's
/// `smtp_tls_dane_insecure_mx_policy`: whether a DNSSEC-secure MX host with
/// TLSA records is still authenticated by them when the MX RRset that named
/// it is insecure (RFC 7672 §2.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InsecureMxPolicy {
    /// Authenticate with the host's TLSA records exactly as under a secure
    /// MX (fail closed); the result is `dane-trusted`, and the next-hop
    /// domain is no reference identifier.
    #[default]
    Dane,
    /// No DANE for any host of an insecure MX RRset: opportunistic TLS
    /// under `dane`, a deferral under `dane-only`.
    May,
}

/// One `[[delivery.route]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub domain: DomainPattern,
    pub tls: Option<TlsLevel>,
    pub next_hop: Option<NextHop>,
    /// `route.max_connections`: this domain's connection limit instead of
    /// `delivery.per_destination` (`None` for 0). Domains sharing one MX
    /// host set share one limit, the smallest of theirs (SPEC "Delivery").
    pub max_connections: Option<usize>,
}

/// `route.domain`: an exact domain or `*.example.com` (subdomains only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainPattern {
    /// Lower-case, no trailing dot.
    Exact(String),
    /// The suffix after `*.`, lower-case.
    Subdomains(String),
}

/// `route.next_hop`: bypasses MX lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextHop {
    pub host: NextHopHost,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextHopHost {
    /// A host name whose A/AAAA records are used directly.
    Name(String),
    /// `[ip]:port`
    Ip(std::net::IpAddr),
}

/// `[http]`
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub address: SocketAddr,
    /// `None` = `/api` only from loopback.
    pub admin_token: Option<String>,
    /// `POST /api/v1/messages` over TLS on this address; `None` = off.
    pub submission_address: Option<SocketAddr>,
}

mod dev;
pub mod dkim;
pub mod raw;
pub mod tls_rpt;
mod validate;

pub use dev::development;
pub use validate::{
    is_hostname, load_file, os_hostname, parse, parse_next_hop, ConfigError, Loaded,
};

#[cfg(test)]
mod tests;
