//! The per-MX-host TLS decision: a pure function from the configured level
//! and what DNS said (with its DNSSEC status) to what the SMTP client must do.
//! Levels follow Postfix's `smtp_tls_security_level`; the DANE rules follow
//! RFC 7672 §2.

use std::fmt;

use crate::config::{InsecureMxPolicy, TlsLevel};

use super::tlsa::{usable_records, TlsaRecord};
use crate::dns::Security;

/// The TLSA lookup at `_25._tcp.<host>` as [`decide`] takes it (RFC 7672
/// §2.2.3): what `dns::lookup_tlsa` found, or that it failed. The DNSSEC
/// status of the MX and address answers comes as [`Security`]; bogus answers
/// and lookup errors are not a status: the caller defers on them before
/// asking (RFC 7672 §2.1.1), except for the TLSA lookup, see
/// [`TlsaInput::Failed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsaInput {
    /// RFC 7672 §2.2.3: a TLSA RRset was found. `base_domain` is the name the
    /// records belong to after (secure) CNAME expansion of the host name —
    /// the TLSA base domain, used as SNI and reference identifier (§3.2.3).
    /// `secure: false` means the RRset was not signed: it is ignored (§2.2).
    Records {
        secure: bool,
        records: Vec<TlsaRecord>,
        base_domain: String,
    },
    /// NXDOMAIN or NODATA (RFC 7672 §2.2.3): no TLSA, so no DANE for this
    /// host. `secure` tells whether the denial was DNSSEC-authenticated.
    NoRecords { secure: bool },
    /// RFC 7672 §2.1.1: SERVFAIL, timeout, bogus or any other failure. For a
    /// secure host this is never "no TLSA": an attacker could cause it.
    Failed(String),
}

/// What the client does with this host, with the reason where there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// RFC 7672 §2.2 / §3: secure usable TLSA records exist; TLS is mandatory
    /// and the server must authenticate with one of `target.records`.
    Authenticate(DaneTarget),
    /// TLS is mandatory, certificates are not checked.
    TlsRequired(MandatoryTls),
    /// Try STARTTLS, accept any certificate; fall back to plaintext when the
    /// server offers no TLS or the handshake fails.
    Opportunistic,
    /// No TLS at all (level `none`).
    Plaintext,
    /// Do not deliver to this host now (RFC 7672 §2.1.1: 4xx, retry later).
    Defer(DeferReason),
    /// MTA-STS `enforce` where DANE does not apply (RFC 8461 §4.2): TLS is
    /// mandatory and the certificate must be PKIX-valid for the MX host
    /// name. Never made by [`decide`]; delivery adds it (`crate::sts`).
    WebPki(WebPkiTarget),
}

/// What an MTA-STS `enforce` host must prove: a chain to `roots` valid for
/// `name` (also the SNI).
#[derive(Clone)]
pub struct WebPkiTarget {
    pub name: String,
    pub roots: std::sync::Arc<rustls::RootCertStore>,
}

impl WebPkiTarget {
    pub fn new(name: &str, roots: std::sync::Arc<rustls::RootCertStore>) -> WebPkiTarget {
        WebPkiTarget {
            name: normalize_name(name),
            roots,
        }
    }
}

/// Equal for the same name under the very same trust anchors (one store per
/// process: `mta_sts.ca_file` or the bundled roots).
impl PartialEq for WebPkiTarget {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && std::sync::Arc::ptr_eq(&self.roots, &other.roots)
    }
}

impl Eq for WebPkiTarget {}

impl fmt::Debug for WebPkiTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebPkiTarget")
            .field("name", &self.name)
            .field("roots", &self.roots.len())
            .finish()
    }
}

/// The verification parameters for one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaneTarget {
    /// TLSA base domain: the SNI name (RFC 7672 §8.1) and first reference id.
    pub base_domain: String,
    /// Names a DANE-TA(2) leaf may carry (RFC 7672 §3.2.3): the TLSA base
    /// domain, the original MX host name, and the next-hop domain when the
    /// MX RRset is secure; no duplicates.
    pub reference_names: Vec<String>,
    /// Only the usable records after digest agility ([`usable_records`]).
    pub records: Vec<TlsaRecord>,
    /// What a match proves: `dane-verified` or `dane-trusted`.
    pub assurance: Assurance,
}

/// What a DANE match proves about the host (the Postfix log words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Assurance {
    /// The MX RRset and the host's records are all secure: the server is
    /// the domain's authenticated MX (`dane-verified`).
    Verified,
    /// RFC 7672 §2.2.1: the server matched the TLSA records of a secure MX
    /// host that an insecure MX RRset named (`dane-trusted`).
    Trusted,
}

impl Assurance {
    /// The outcome word for logs, metrics and `tls-check`.
    pub fn label(self) -> &'static str {
        match self {
            Assurance::Verified => "dane-verified",
            Assurance::Trusted => "dane-trusted",
        }
    }
}

/// Why TLS is mandatory but unauthenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MandatoryTls {
    /// Level `encrypt`.
    EncryptLevel,
    /// RFC 7672 §2.2: secure TLSA records exist but none is usable, which
    /// still proves the server supports TLS.
    AllTlsaUnusable,
}

/// Why a host is deferred.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeferReason {
    /// RFC 7672 §2.1.1: the TLSA lookup for a secure host failed.
    TlsaLookupFailed(String),
    /// `dane-only` with `dane_insecure_mx = "may"`: the MX RRset is not
    /// DNSSEC-signed (RFC 7672 §2.2.1).
    MxInsecure,
    /// `dane-only`: the host's address records are not signed (§2.2.3).
    HostInsecure,
    /// `dane-only`: no secure TLSA RRset for the host.
    NoSecureTlsa,
    /// `dane-only`: secure TLSA records exist but none is usable.
    NoUsableTlsa,
}

impl fmt::Display for DeferReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TlsaLookupFailed(why) => write!(f, "TLSA lookup failed: {why}"),
            Self::MxInsecure => f.write_str("MX RRset is not DNSSEC-signed (dane-only)"),
            Self::HostInsecure => f.write_str("host address is not DNSSEC-signed (dane-only)"),
            Self::NoSecureTlsa => f.write_str("no DNSSEC-signed TLSA records (dane-only)"),
            Self::NoUsableTlsa => f.write_str("no usable TLSA records (dane-only)"),
        }
    }
}

/// What DNS said about one host, as [`decide`] takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDns<'a> {
    /// The host as it appears in the MX record (or the domain itself for an
    /// implicit MX, or a configured next hop).
    pub mx_host: &'a str,
    /// The next-hop domain (the recipient domain of an MX or implicit-MX
    /// route); `None` for a configured next hop, whose name is `mx_host`.
    pub nexthop: Option<&'a str>,
    /// DNSSEC status of the MX RRset (of its denial for an implicit MX).
    pub mx: Security,
    /// DNSSEC status of the host's address records.
    pub host: Security,
    pub tlsa: TlsaInput,
}

/// The configured policy [`decide`] applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DanePolicy {
    /// `delivery.tls` or the route's `tls`.
    pub level: TlsLevel,
    /// `delivery.dane_insecure_mx`.
    pub insecure_mx: InsecureMxPolicy,
}

impl DanePolicy {
    /// `level` with the default `dane_insecure_mx = "dane"`.
    pub fn new(level: TlsLevel) -> Self {
        Self {
            level,
            insecure_mx: InsecureMxPolicy::Dane,
        }
    }

    /// Whether the level uses DANE at all (`dane`, `dane-only`).
    pub fn is_dane(self) -> bool {
        matches!(self.level, TlsLevel::Dane | TlsLevel::DaneOnly)
    }

    /// Whether a host may be looked up for TLSA (RFC 7672 §2.2.2): secure
    /// addresses, and a secure MX RRset unless `dane_insecure_mx = "dane"`
    /// lets a secure host stand on its own (§2.2.1).
    pub fn wants_tlsa(self, mx: Security, host: Security) -> bool {
        self.is_dane()
            && host == Security::Secure
            && (mx == Security::Secure || self.insecure_mx == InsecureMxPolicy::Dane)
    }
}

/// Decides the TLS treatment of one host.
///
/// `dane`: an insecure host address means no DANE (RFC 7672 §2.2.2) and
/// opportunistic TLS. An insecure MX RRset means the same under
/// `dane_insecure_mx = "may"`; under `"dane"` (Postfix's default) the secure
/// host is treated as under a secure MX (§2.2.1), authenticated as
/// [`Assurance::Trusted`] and without the next-hop domain as a reference
/// identifier. For a host that gets that far: a failed TLSA lookup defers
/// (§2.1.1); secure usable TLSA authenticate; secure but all unusable TLSA
/// make TLS mandatory (§2.2); anything else is opportunistic.
/// `dane-only` defers wherever `dane` would not authenticate.
pub fn decide(policy: DanePolicy, dns: HostDns<'_>) -> Decision {
    let dane_only = match policy.level {
        TlsLevel::None => return Decision::Plaintext,
        TlsLevel::May => return Decision::Opportunistic,
        TlsLevel::Encrypt => return Decision::TlsRequired(MandatoryTls::EncryptLevel),
        TlsLevel::Dane => false,
        TlsLevel::DaneOnly => true,
    };
    let no_dane = |reason: DeferReason| {
        if dane_only {
            Decision::Defer(reason)
        } else {
            Decision::Opportunistic
        }
    };
    if dns.mx == Security::Insecure && policy.insecure_mx == InsecureMxPolicy::May {
        return no_dane(DeferReason::MxInsecure);
    }
    if dns.host == Security::Insecure {
        return no_dane(DeferReason::HostInsecure);
    }
    match dns.tlsa {
        TlsaInput::Failed(why) => Decision::Defer(DeferReason::TlsaLookupFailed(why)),
        TlsaInput::NoRecords { .. } | TlsaInput::Records { secure: false, .. } => {
            no_dane(DeferReason::NoSecureTlsa)
        }
        // An empty RRset is NODATA, not "records that are all unusable".
        TlsaInput::Records { records, .. } if records.is_empty() => {
            no_dane(DeferReason::NoSecureTlsa)
        }
        TlsaInput::Records {
            secure: true,
            records,
            base_domain,
        } => {
            let usable = usable_records(&records);
            if usable.is_empty() {
                if dane_only {
                    return Decision::Defer(DeferReason::NoUsableTlsa);
                }
                return Decision::TlsRequired(MandatoryTls::AllTlsaUnusable);
            }
            let target = DaneTarget::new(&base_domain, dns.mx_host, usable);
            Decision::Authenticate(if dns.mx == Security::Secure {
                match dns.nexthop {
                    Some(nexthop) => target.with_nexthop(nexthop),
                    None => target,
                }
            } else {
                target.trusted()
            })
        }
    }
}

impl DaneTarget {
    /// Builds a target; names are compared without case or trailing dot.
    pub fn new(base_domain: &str, mx_host: &str, records: Vec<TlsaRecord>) -> Self {
        let base = normalize_name(base_domain);
        let mut target = Self {
            base_domain: base.clone(),
            reference_names: vec![base],
            records,
            assurance: Assurance::Verified,
        };
        target.add_reference_name(mx_host);
        target
    }

    /// RFC 7672 §3.2.3: with a secure MX RRset the next-hop domain is a
    /// reference identifier too (Postfix: "nexthop, hostname").
    pub fn with_nexthop(mut self, nexthop: &str) -> Self {
        self.add_reference_name(nexthop);
        self
    }

    /// RFC 7672 §2.2.1: the MX RRset that named this host is insecure, so
    /// a match authenticates the host but not that it is the domain's MX.
    pub fn trusted(mut self) -> Self {
        self.assurance = Assurance::Trusted;
        self
    }

    fn add_reference_name(&mut self, name: &str) {
        let name = normalize_name(name);
        if !name.is_empty() && !self.reference_names.contains(&name) {
            self.reference_names.push(name);
        }
    }
}

/// Lower case, no trailing dot: the form names are compared in.
pub fn normalize_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "policy_tests.rs"]
mod tests;
