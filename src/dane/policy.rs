//! The per-MX-host TLS decision: a pure function from the configured level
//! and what DNS said (with its DNSSEC status) to what the SMTP client must do.
//! Levels follow Postfix's `smtp_tls_security_level`; the DANE rules follow
//! RFC 7672 §2.

use std::fmt;

use crate::config::TlsLevel;

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
}

/// The verification parameters for one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaneTarget {
    /// TLSA base domain: the SNI name (RFC 7672 §8.1) and first reference id.
    pub base_domain: String,
    /// Names a DANE-TA(2) leaf may carry (RFC 7672 §3.2.3): the TLSA base
    /// domain and the original MX host name when they differ.
    pub reference_names: Vec<String>,
    /// Only the usable records after digest agility ([`usable_records`]).
    pub records: Vec<TlsaRecord>,
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
    /// `dane-only`: the MX RRset is not DNSSEC-signed (RFC 7672 §2.2.1).
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

/// Decides the TLS treatment of one MX host (`mx_host` as it appears in the
/// MX record, or the domain itself for an implicit MX).
///
/// `dane`: an insecure MX RRset or host address means no DANE (RFC 7672
/// §2.2.1, §2.2.3) and opportunistic TLS; a failed TLSA lookup for a secure
/// host defers (§2.1.1); secure usable TLSA authenticate; secure but all
/// unusable TLSA make TLS mandatory (§2.2); anything else is opportunistic.
/// `dane-only` defers wherever `dane` would not authenticate.
pub fn decide(
    level: TlsLevel,
    mx_host: &str,
    mx: Security,
    host: Security,
    tlsa: TlsaInput,
) -> Decision {
    let dane_only = match level {
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
    if mx == Security::Insecure {
        return no_dane(DeferReason::MxInsecure);
    }
    if host == Security::Insecure {
        return no_dane(DeferReason::HostInsecure);
    }
    match tlsa {
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
            Decision::Authenticate(DaneTarget::new(&base_domain, mx_host, usable))
        }
    }
}

impl DaneTarget {
    /// Builds a target; names are compared without case or trailing dot.
    pub fn new(base_domain: &str, mx_host: &str, records: Vec<TlsaRecord>) -> Self {
        let base = normalize_name(base_domain);
        let mut reference_names = vec![base.clone()];
        let mx = normalize_name(mx_host);
        if !mx.is_empty() && mx != base {
            reference_names.push(mx);
        }
        Self {
            base_domain: base,
            reference_names,
            records,
        }
    }
}

/// Lower case, no trailing dot: the form names are compared in.
pub fn normalize_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use Security::{Insecure, Secure};

    fn good() -> TlsaRecord {
        TlsaRecord {
            usage: 3,
            selector: 1,
            matching: 1,
            data: vec![7; 32],
        }
    }

    fn pkix() -> TlsaRecord {
        TlsaRecord { usage: 1, ..good() }
    }

    fn found(records: Vec<TlsaRecord>) -> TlsaInput {
        TlsaInput::Records {
            secure: true,
            records,
            base_domain: "MX.example.net.".into(),
        }
    }

    #[test]
    fn non_dane_levels_ignore_dns() {
        for lookup in [found(vec![good()]), TlsaInput::Failed("x".into())] {
            let d = |l| decide(l, "mx.example.net", Secure, Secure, lookup.clone());
            assert_eq!(d(TlsLevel::None), Decision::Plaintext);
            assert_eq!(d(TlsLevel::May), Decision::Opportunistic);
            assert_eq!(
                d(TlsLevel::Encrypt),
                Decision::TlsRequired(MandatoryTls::EncryptLevel)
            );
        }
    }

    #[test]
    fn dane_level_table() {
        let d = |mx, host, t| decide(TlsLevel::Dane, "mx.example.net", mx, host, t);
        let auth = Decision::Authenticate(DaneTarget {
            base_domain: "mx.example.net".into(),
            reference_names: vec!["mx.example.net".into()],
            records: vec![good()],
        });
        assert_eq!(d(Secure, Secure, found(vec![good(), pkix()])), auth);
        assert_eq!(
            d(Secure, Secure, found(vec![pkix()])),
            Decision::TlsRequired(MandatoryTls::AllTlsaUnusable)
        );
        assert_eq!(
            d(Secure, Secure, TlsaInput::Failed("SERVFAIL".into())),
            Decision::Defer(DeferReason::TlsaLookupFailed("SERVFAIL".into()))
        );
        assert_eq!(
            d(Secure, Secure, TlsaInput::NoRecords { secure: true }),
            Decision::Opportunistic
        );
        let insecure = TlsaInput::Records {
            secure: false,
            records: vec![good()],
            base_domain: "mx.example.net".into(),
        };
        assert_eq!(d(Secure, Secure, insecure), Decision::Opportunistic);
        assert_eq!(d(Secure, Secure, found(vec![])), Decision::Opportunistic);
        // No TLSA lookup matters for an insecure MX RRset or host (§2.2.1, §2.2.3).
        assert_eq!(
            d(Insecure, Secure, TlsaInput::Failed("x".into())),
            Decision::Opportunistic
        );
        assert_eq!(
            d(Secure, Insecure, TlsaInput::Failed("x".into())),
            Decision::Opportunistic
        );
        assert_eq!(
            d(Secure, Insecure, found(vec![good()])),
            Decision::Opportunistic
        );
    }

    #[test]
    fn dane_only_defers_without_usable_secure_tlsa() {
        let d = |mx, host, t| decide(TlsLevel::DaneOnly, "mx.example.net", mx, host, t);
        assert!(matches!(
            d(Secure, Secure, found(vec![good()])),
            Decision::Authenticate(_)
        ));
        assert_eq!(
            d(Secure, Secure, found(vec![pkix()])),
            Decision::Defer(DeferReason::NoUsableTlsa)
        );
        assert_eq!(
            d(Secure, Secure, TlsaInput::NoRecords { secure: true }),
            Decision::Defer(DeferReason::NoSecureTlsa)
        );
        assert_eq!(
            d(Insecure, Secure, found(vec![good()])),
            Decision::Defer(DeferReason::MxInsecure)
        );
        assert_eq!(
            d(Secure, Insecure, found(vec![good()])),
            Decision::Defer(DeferReason::HostInsecure)
        );
        assert!(matches!(
            d(Secure, Secure, TlsaInput::Failed("timeout".into())),
            Decision::Defer(DeferReason::TlsaLookupFailed(_))
        ));
    }

    #[test]
    fn cname_base_domain_and_mx_name_are_both_reference_ids() {
        let t = TlsaInput::Records {
            secure: true,
            records: vec![good()],
            base_domain: "smtp.provider.example.".into(),
        };
        let Decision::Authenticate(target) =
            decide(TlsLevel::Dane, "MX.customer.example", Secure, Secure, t)
        else {
            panic!("expected authenticate");
        };
        assert_eq!(target.base_domain, "smtp.provider.example");
        assert_eq!(
            target.reference_names,
            vec!["smtp.provider.example", "mx.customer.example"]
        );
    }
}
