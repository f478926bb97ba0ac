//! The vocabulary of the DNS layer: what a caller asks ([`RecordType`]), what
//! it gets back ([`Answer`] with its [`Security`] and [`AnswerKind`]) and how a
//! lookup fails ([`DnsError`]). No I/O here.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::pin::Pin;

/// The DNSSEC status of an answer (RFC 4033 §5). `Bogus` and
/// `Indeterminate` never reach a caller as a status: they are
/// [`DnsError::Bogus`], a temporary failure (RFC 7672 §2.1.1: a bogus answer
/// must defer delivery, never downgrade it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Security {
    /// Every RRset of the answer (including a CNAME chain, or the denial of
    /// existence) validated up to a trust anchor.
    Secure,
    /// Provably unsigned, or DNSSEC is off: DANE must not engage.
    Insecure,
}

impl Security {
    /// Both parts secure ⇒ secure (a chain is as strong as its weakest link).
    pub fn and(self, other: Security) -> Security {
        if self == Security::Secure && other == Security::Secure {
            Security::Secure
        } else {
            Security::Insecure
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Security::Secure => "secure",
            Security::Insecure => "insecure",
        }
    }
}

impl fmt::Display for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The record types the relay asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordType {
    A,
    Aaaa,
    Mx,
    Tlsa,
    Cname,
    /// Only used by the start-up DNSSEC probe.
    Soa,
    /// MTA-STS (RFC 8461 §3.1) and TLS-RPT (RFC 8460 §3) discovery.
    Txt,
}

impl RecordType {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordType::A => "A",
            RecordType::Aaaa => "AAAA",
            RecordType::Mx => "MX",
            RecordType::Tlsa => "TLSA",
            RecordType::Cname => "CNAME",
            RecordType::Soa => "SOA",
            RecordType::Txt => "TXT",
        }
    }
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An MX record. `exchange` is lower-case without the trailing dot; the RFC
/// 7505 null MX has `exchange == ""` (the root).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mx {
    pub preference: u16,
    pub exchange: String,
}

/// One TLSA record (RFC 6698 §2.1), as the DNS delivers it. The DANE engine
/// uses this very type (`dane::TlsaRecord`, which adds the presentation
/// parser and the usability rules), so answers flow into the verdict
/// without conversion and without `dns` depending on `dane`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TlsaRecord {
    pub usage: u8,
    pub selector: u8,
    pub matching: u8,
    pub data: Vec<u8>,
}

/// The record type's short name in answers.
pub use TlsaRecord as Tlsa;

/// One record of the requested type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Record {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Mx(Mx),
    Tlsa(Tlsa),
    /// Target name, lower-case without the trailing dot.
    Cname(String),
    /// Only the serial: the probe needs nothing else.
    Soa {
        serial: u32,
    },
    /// One TXT record: its character-strings, in order (RFC 1035 §3.3.14).
    Txt(Vec<Vec<u8>>),
}

/// What the name holds for the requested type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerKind {
    /// At least one record (never empty).
    Records(Vec<Record>),
    /// The name exists but has no RRset of this type (RFC 2308 NODATA).
    NoData,
    /// The name does not exist (RCODE 3).
    NxDomain,
}

impl AnswerKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            AnswerKind::Records(_) => "records",
            AnswerKind::NoData => "nodata",
            AnswerKind::NxDomain => "nxdomain",
        }
    }
}

/// A successful lookup: records or a denial, with its DNSSEC status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The name asked for (normalised: lower-case, no trailing dot).
    pub name: String,
    pub rtype: RecordType,
    /// The owner name after following any CNAME chain (= `name` when none).
    pub canonical_name: String,
    pub kind: AnswerKind,
    /// Status of the answer as a whole: the records (or the denial) and every
    /// CNAME on the way.
    pub security: Security,
    /// Seconds the answer may be cached (minimum of the RRsets, or the
    /// negative TTL of a denial).
    pub ttl: u32,
}

impl Answer {
    pub fn records(&self) -> &[Record] {
        match &self.kind {
            AnswerKind::Records(r) => r,
            AnswerKind::NoData | AnswerKind::NxDomain => &[],
        }
    }

    pub fn mx(&self) -> impl Iterator<Item = &Mx> {
        self.records().iter().filter_map(|r| match r {
            Record::Mx(mx) => Some(mx),
            _ => None,
        })
    }

    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.records().iter().filter_map(|r| match r {
            Record::A(a) => Some(IpAddr::V4(*a)),
            Record::Aaaa(a) => Some(IpAddr::V6(*a)),
            _ => None,
        })
    }

    pub fn tlsa(&self) -> impl Iterator<Item = &Tlsa> {
        self.records().iter().filter_map(|r| match r {
            Record::Tlsa(t) => Some(t),
            _ => None,
        })
    }

    /// Each TXT record's character-strings joined (RFC 7208 §3.3 and RFC
    /// 8461 §3.1 read a record that way), bytes as they came.
    pub fn txt(&self) -> impl Iterator<Item = Vec<u8>> + '_ {
        self.records().iter().filter_map(|r| match r {
            Record::Txt(strings) => Some(strings.concat()),
            _ => None,
        })
    }

    pub fn is_secure(&self) -> bool {
        self.security == Security::Secure
    }
}

/// A lookup that did not produce an answer. Every variant except
/// [`DnsError::InvalidName`] is temporary: the delivery defers (README.md:
/// "DNSSEC-bogus answers and lookup errors always defer").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    #[error("{rtype} lookup for {name}: server failure (SERVFAIL)")]
    ServFail { name: String, rtype: RecordType },
    #[error("{rtype} lookup for {name}: DNSSEC validation failed (bogus): {detail}")]
    Bogus {
        name: String,
        rtype: RecordType,
        detail: String,
    },
    #[error("{rtype} lookup for {name}: timed out")]
    Timeout { name: String, rtype: RecordType },
    #[error("{rtype} lookup for {name}: response code {code}")]
    ResponseCode {
        name: String,
        rtype: RecordType,
        code: String,
    },
    #[error("{rtype} lookup for {name}: {detail}")]
    Transport {
        name: String,
        rtype: RecordType,
        detail: String,
    },
    #[error("invalid domain name {name:?}: {detail}")]
    InvalidName { name: String, detail: String },
    #[error("DNS resolver setup: {detail}")]
    Setup { detail: String },
}

impl DnsError {
    /// Whether retrying later may help (everything but a malformed name).
    pub fn is_temporary(&self) -> bool {
        !matches!(self, DnsError::InvalidName { .. })
    }
}

/// A boxed, sendable future (keeps [`DnsLookup`] object-safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The one way the rest of the relay asks DNS anything. Injected (an
/// `Arc<dyn DnsLookup>`), never global, so tests use `crate::dns::FakeDns`.
///
/// Implementations follow CNAME chains (RFC 1034 §3.6.2) and report the
/// canonical name; `name` may carry a trailing dot or upper case.
pub trait DnsLookup: Send + Sync {
    fn lookup<'a>(
        &'a self,
        name: &'a str,
        rtype: RecordType,
    ) -> BoxFuture<'a, Result<Answer, DnsError>>;

    /// Whether answers carry a DNSSEC verdict. Always, except while
    /// `dns.dnssec = "auto"` is still choosing its mode (`super::auto`):
    /// answers are then all insecure for want of a verdict, and whatever
    /// needs one (DANE) must defer, never downgrade. Waits a bounded time
    /// for the choice.
    fn dnssec_ready(&self) -> BoxFuture<'_, bool> {
        Box::pin(std::future::ready(true))
    }
}

impl<T: DnsLookup + ?Sized> DnsLookup for std::sync::Arc<T> {
    fn lookup<'a>(
        &'a self,
        name: &'a str,
        rtype: RecordType,
    ) -> BoxFuture<'a, Result<Answer, DnsError>> {
        (**self).lookup(name, rtype)
    }

    fn dnssec_ready(&self) -> BoxFuture<'_, bool> {
        (**self).dnssec_ready()
    }
}

impl<T: DnsLookup + ?Sized> DnsLookup for Box<T> {
    fn lookup<'a>(
        &'a self,
        name: &'a str,
        rtype: RecordType,
    ) -> BoxFuture<'a, Result<Answer, DnsError>> {
        (**self).lookup(name, rtype)
    }

    fn dnssec_ready(&self) -> BoxFuture<'_, bool> {
        (**self).dnssec_ready()
    }
}

/// Lower-case, without the trailing dot: the one spelling used for keys,
/// comparisons and logs.
pub fn normalize_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}
