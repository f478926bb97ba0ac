//! The TLSA record as plain data, its presentation-form parser, and the two
//! pure rules that decide which records a client may use: usability
//! (RFC 7672 §3.1, RFC 6698 §2.1) and digest algorithm agility (RFC 7671 §9).

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256, Sha512};
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::DaneError;

/// Certificate usage DANE-TA(2) (RFC 7218 name).
pub const DANE_TA: u8 = 2;
/// Certificate usage DANE-EE(3).
pub const DANE_EE: u8 = 3;
/// Selector Cert(0): the whole certificate DER.
pub const SEL_CERT: u8 = 0;
/// Selector SPKI(1): the SubjectPublicKeyInfo DER.
pub const SEL_SPKI: u8 = 1;
/// Matching type Full(0): the association data is the selected content itself.
pub const MATCH_FULL: u8 = 0;
/// Matching type SHA2-256(1).
pub const MATCH_SHA256: u8 = 1;
/// Matching type SHA2-512(2).
pub const MATCH_SHA512: u8 = 2;

/// One TLSA record (RFC 6698 §2.1): the data type lives with the DNS
/// answers; its rules (parser, usability, agility) are implemented here.
pub use crate::dns::TlsaRecord;

/// Why a record cannot be used (it is then ignored, but its presence still
/// makes TLS mandatory: RFC 7672 §2.2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    /// RFC 7672 §3.1.3: PKIX-TA(0) and PKIX-EE(1) are not used for SMTP.
    #[error("PKIX usage {0} is not used for SMTP (RFC 7672 §3.1.3)")]
    PkixUsage(u8),
    /// RFC 6698 §2.1.1: an unassigned usage is unusable.
    #[error("unknown certificate usage {0}")]
    UnknownUsage(u8),
    /// RFC 6698 §2.1.2.
    #[error("unknown selector {0}")]
    UnknownSelector(u8),
    /// RFC 6698 §2.1.3.
    #[error("unknown matching type {0}")]
    UnknownMatching(u8),
    /// RFC 7671 §9 / RFC 6698 §2.1.3: a digest of the wrong length can never
    /// match; treating it as unusable (not as "failed") avoids a lock-out.
    #[error("digest is {got} bytes, matching type {matching} needs {expected}")]
    DigestLength {
        matching: u8,
        expected: usize,
        got: usize,
    },
    /// A Full(0) record must hold a parseable certificate (selector 0) or
    /// SubjectPublicKeyInfo (selector 1), RFC 6698 §2.1.2.
    #[error("full {what} in the record does not parse")]
    MalformedFull { what: &'static str },
}

impl TlsaRecord {
    /// Parses the presentation form `"U S M HEX"` (RFC 6698 §2.2). The hex
    /// may be split by whitespace, as zone files allow.
    pub fn parse(text: &str) -> Result<Self, DaneError> {
        let err = |reason: &str| DaneError::TlsaSyntax {
            input: text.to_owned(),
            reason: reason.to_owned(),
        };
        let mut fields = text.split_whitespace();
        let mut number = |what: &str| -> Result<u8, DaneError> {
            let field = fields
                .next()
                .ok_or_else(|| err(&format!("missing {what}")))?;
            field
                .parse::<u8>()
                .map_err(|_| err(&format!("{what} {field:?} is not a number 0-255")))
        };
        let usage = number("usage")?;
        let selector = number("selector")?;
        let matching = number("matching type")?;
        let hex_text: String = fields.collect();
        if hex_text.is_empty() {
            return Err(err("missing certificate association data"));
        }
        let data = hex::decode(&hex_text).map_err(|e| err(&format!("bad hex data: {e}")))?;
        Ok(Self {
            usage,
            selector,
            matching,
            data,
        })
    }

    /// RFC 7672 §3.1 and RFC 6698 §2.1: only DANE-TA(2) and DANE-EE(3) with a
    /// known selector and matching type and well-formed data are usable.
    pub fn usability(&self) -> Result<(), Unusable> {
        match self.usage {
            DANE_TA | DANE_EE => {}
            0 | 1 => return Err(Unusable::PkixUsage(self.usage)),
            other => return Err(Unusable::UnknownUsage(other)),
        }
        if self.selector > SEL_SPKI {
            return Err(Unusable::UnknownSelector(self.selector));
        }
        let expected = match self.matching {
            MATCH_FULL => return self.full_parses(),
            MATCH_SHA256 => 32,
            MATCH_SHA512 => 64,
            other => return Err(Unusable::UnknownMatching(other)),
        };
        if self.data.len() != expected {
            return Err(Unusable::DigestLength {
                matching: self.matching,
                expected,
                got: self.data.len(),
            });
        }
        Ok(())
    }

    /// Whether [`TlsaRecord::usability`] accepts the record.
    pub fn is_usable(&self) -> bool {
        self.usability().is_ok()
    }

    fn full_parses(&self) -> Result<(), Unusable> {
        let ok = match self.selector {
            SEL_CERT => matches!(
                x509_parser::parse_x509_certificate(&self.data),
                Ok((rest, _)) if rest.is_empty()
            ),
            _ => matches!(
                SubjectPublicKeyInfo::from_der(&self.data),
                Ok((rest, _)) if rest.is_empty()
            ),
        };
        if ok {
            Ok(())
        } else {
            let what = if self.selector == SEL_CERT {
                "certificate"
            } else {
                "public key"
            };
            Err(Unusable::MalformedFull { what })
        }
    }

    /// Whether this record matches `selected` (the certificate DER or SPKI DER
    /// chosen by the selector). The caller must have checked usability.
    pub(crate) fn matches_selected(&self, selected: &[u8]) -> bool {
        match self.matching {
            MATCH_FULL => self.data == selected,
            MATCH_SHA256 => Sha256::digest(selected).as_slice() == self.data.as_slice(),
            MATCH_SHA512 => Sha512::digest(selected).as_slice() == self.data.as_slice(),
            _ => false,
        }
    }

    /// `"U S M"` — how logs name a record.
    pub fn params(&self) -> String {
        format!("{} {} {}", self.usage, self.selector, self.matching)
    }
}

impl FromStr for TlsaRecord {
    type Err = DaneError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for TlsaRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.params(), hex::encode(&self.data))
    }
}

/// The records a client actually uses, in their original order: the usable
/// ones (RFC 7672 §3.1), then, per (usage, selector), the Full(0) records
/// plus only those of the strongest digest present (RFC 7671 §9, RFC 7672
/// §5). Of the two digests defined (RFC 6698 §2.1.3) SHA2-512 is the
/// stronger, so a SHA2-512 record hides the SHA2-256 ones of its (usage,
/// selector). Unusable records never influence agility.
pub fn usable_records(records: &[TlsaRecord]) -> Vec<TlsaRecord> {
    let usable: Vec<&TlsaRecord> = records.iter().filter(|r| r.is_usable()).collect();
    let has_sha512 = |usage: u8, selector: u8| {
        usable
            .iter()
            .any(|r| r.usage == usage && r.selector == selector && r.matching == MATCH_SHA512)
    };
    usable
        .iter()
        .filter(|r| r.matching != MATCH_SHA256 || !has_sha512(r.usage, r.selector))
        .map(|r| (*r).clone())
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rec(u: u8, s: u8, m: u8, len: usize) -> TlsaRecord {
        TlsaRecord {
            usage: u,
            selector: s,
            matching: m,
            data: vec![0xab; len],
        }
    }

    #[test]
    fn parses_presentation_form_with_split_hex() {
        let r = TlsaRecord::parse("3 1 1 00ff\n 10").unwrap();
        assert_eq!(
            r,
            TlsaRecord {
                usage: 3,
                selector: 1,
                matching: 1,
                data: vec![0, 0xff, 0x10]
            }
        );
        assert_eq!(r.to_string(), "3 1 1 00ff10");
    }

    #[test]
    fn rejects_bad_syntax() {
        for bad in [
            "",
            "3 1",
            "3 1 1",
            "3 1 1 zz",
            "3 1 1 abc",
            "256 1 1 00",
            "x 1 1 00",
        ] {
            assert!(TlsaRecord::parse(bad).is_err(), "{bad:?} must not parse");
        }
    }

    #[test]
    fn usability_follows_rfc7672() {
        assert_eq!(rec(3, 1, 1, 32).usability(), Ok(()));
        assert_eq!(rec(2, 0, 2, 64).usability(), Ok(()));
        assert_eq!(rec(0, 0, 1, 32).usability(), Err(Unusable::PkixUsage(0)));
        assert_eq!(rec(1, 1, 1, 32).usability(), Err(Unusable::PkixUsage(1)));
        assert_eq!(rec(4, 1, 1, 32).usability(), Err(Unusable::UnknownUsage(4)));
        assert_eq!(
            rec(3, 2, 1, 32).usability(),
            Err(Unusable::UnknownSelector(2))
        );
        assert_eq!(
            rec(3, 1, 3, 32).usability(),
            Err(Unusable::UnknownMatching(3))
        );
        assert!(matches!(
            rec(3, 1, 1, 31).usability(),
            Err(Unusable::DigestLength { .. })
        ));
        assert!(matches!(
            rec(3, 1, 2, 32).usability(),
            Err(Unusable::DigestLength { .. })
        ));
        assert_eq!(
            rec(3, 0, 0, 10).usability(),
            Err(Unusable::MalformedFull {
                what: "certificate"
            })
        );
        assert_eq!(
            rec(2, 1, 0, 10).usability(),
            Err(Unusable::MalformedFull { what: "public key" })
        );
    }

    #[test]
    fn digest_agility_keeps_full_and_strongest_per_usage_selector() {
        let records = vec![
            rec(3, 1, 1, 32),
            rec(3, 1, 2, 64),
            rec(3, 0, 1, 32),
            rec(2, 1, 1, 32),
            rec(2, 1, 2, 63), // unusable: must not suppress the SHA-256 record
        ];
        let used = usable_records(&records);
        assert_eq!(
            used,
            vec![rec(3, 1, 2, 64), rec(3, 0, 1, 32), rec(2, 1, 1, 32)]
        );
        // SHA2-256 alone stays; Full(0) stays next to any digest.
        let full = TlsaRecord::parse(&format!("3 1 0 {}", SPKI_HEX)).unwrap();
        let records = vec![full.clone(), rec(3, 1, 1, 32), rec(3, 0, 2, 64)];
        assert_eq!(usable_records(&records), records);
        let records = vec![full.clone(), rec(3, 1, 2, 64), rec(3, 1, 1, 32)];
        assert_eq!(usable_records(&records), vec![full, rec(3, 1, 2, 64)]);
    }

    /// A P-256 SubjectPublicKeyInfo (well-formed, key bytes arbitrary).
    const SPKI_HEX: &str = "3059301306072a8648ce3d020106082a8648ce3d03010703420004\
        6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296\
        4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5";
}
