//! Conversions between hickory's wire types and ours, shared by the
//! `trust-ad`/`off` client and the `validate` resolver: names, record types,
//! rdata, and following a CNAME chain through an answer section.

use hickory_proto::rr::{Name, RData, Record as HRecord, RecordType as HType};

use super::types::{normalize_name, DnsError, Mx, Record, RecordType, Tlsa};

pub(crate) fn to_hickory_type(rtype: RecordType) -> HType {
    match rtype {
        RecordType::A => HType::A,
        RecordType::Aaaa => HType::AAAA,
        RecordType::Mx => HType::MX,
        RecordType::Tlsa => HType::TLSA,
        RecordType::Cname => HType::CNAME,
        RecordType::Soa => HType::SOA,
        RecordType::Txt => HType::TXT,
    }
}

/// Parses `name` as an absolute name (a trailing dot is implied; IDNs are
/// converted to A-labels).
pub(crate) fn to_fqdn(name: &str) -> Result<Name, DnsError> {
    let invalid = |detail: String| DnsError::InvalidName {
        name: name.to_string(),
        detail,
    };
    if name.is_empty() || name == "." {
        return Ok(Name::root());
    }
    let mut parsed = Name::from_utf8(name).map_err(|e| invalid(e.to_string()))?;
    parsed.set_fqdn(true);
    Ok(parsed)
}

/// The query name as it appears on the wire (A-labels, lower case, no
/// trailing dot), so CNAME chains of IDN names can be matched.
pub(crate) fn wire_name(name: &str) -> String {
    to_fqdn(name).map_or_else(|_| normalize_name(name), |n| name_to_string(&n))
}

pub(crate) fn name_to_string(name: &Name) -> String {
    normalize_name(&name.to_ascii())
}

/// Converts rdata of the type we asked for; `None` for anything else
/// (RRSIGs, other types in the section).
pub(crate) fn convert_rdata(rtype: RecordType, data: &RData) -> Option<Record> {
    match (rtype, data) {
        (RecordType::A, RData::A(a)) => Some(Record::A(a.0)),
        (RecordType::Aaaa, RData::AAAA(a)) => Some(Record::Aaaa(a.0)),
        (RecordType::Mx, RData::MX(mx)) => Some(Record::Mx(Mx {
            preference: mx.preference,
            exchange: name_to_string(&mx.exchange),
        })),
        (RecordType::Tlsa, RData::TLSA(t)) => Some(Record::Tlsa(Tlsa {
            usage: t.cert_usage.into(),
            selector: t.selector.into(),
            matching: t.matching.into(),
            data: t.cert_data.clone(),
        })),
        (RecordType::Cname, RData::CNAME(c)) => Some(Record::Cname(name_to_string(&c.0))),
        (RecordType::Soa, RData::SOA(soa)) => Some(Record::Soa { serial: soa.serial }),
        (RecordType::Txt, RData::TXT(txt)) => Some(Record::Txt(
            txt.txt_data.iter().map(|s| s.to_vec()).collect(),
        )),
        _ => None,
    }
}

/// The result of walking an answer section from the query name.
pub(crate) struct Chain<'r> {
    pub canonical_name: String,
    /// Records of the requested type at the canonical name.
    pub records: Vec<Record>,
    /// Every hickory record used: CNAMEs on the way and the final RRset.
    pub used: Vec<&'r HRecord>,
}

impl Chain<'_> {
    /// Records of the requested type that the chain from the query name
    /// does not reach mean a broken answer, not NODATA: calling it NODATA
    /// would turn, say, an existing TLSA RRset into "no TLSA" (a downgrade).
    pub(crate) fn check_connected(
        &self,
        qname: &str,
        rtype: RecordType,
        answers: &[HRecord],
    ) -> Result<(), DnsError> {
        let stray = answers
            .iter()
            .any(|r| convert_rdata(rtype, &r.data).is_some());
        if self.records.is_empty() && stray && rtype != RecordType::Cname {
            return Err(DnsError::Transport {
                name: normalize_name(qname),
                rtype,
                detail: "answer records do not connect to the query name (incomplete CNAME chain)"
                    .into(),
            });
        }
        Ok(())
    }
}

/// Follows CNAMEs from `qname` (RFC 1034 §3.6.2) through `answers`, bounded
/// so that a CNAME loop cannot spin.
pub(crate) fn follow_chain<'r>(
    qname: &str,
    rtype: RecordType,
    answers: &'r [HRecord],
) -> Chain<'r> {
    let mut current = normalize_name(qname);
    let mut used = Vec::new();
    for _ in 0..16 {
        let here: Vec<&HRecord> = answers
            .iter()
            .filter(|r| name_to_string(&r.name) == current)
            .collect();
        let records: Vec<(Record, &HRecord)> = here
            .iter()
            .filter_map(|r| convert_rdata(rtype, &r.data).map(|c| (c, *r)))
            .collect();
        if !records.is_empty() || rtype == RecordType::Cname {
            used.extend(records.iter().map(|(_, r)| *r));
            return Chain {
                canonical_name: current,
                records: records.into_iter().map(|(c, _)| c).collect(),
                used,
            };
        }
        let next = here.iter().find_map(|r| match &r.data {
            RData::CNAME(c) => Some((name_to_string(&c.0), *r)),
            _ => None,
        });
        match next {
            Some((target, record)) if target != current => {
                used.push(record);
                current = target;
            }
            _ => break,
        }
    }
    Chain {
        canonical_name: current,
        records: Vec::new(),
        used,
    }
}

/// The answer TTL: the smallest TTL among the records used.
pub(crate) fn min_ttl(used: &[&HRecord]) -> u32 {
    used.iter().map(|r| r.ttl).min().unwrap_or(0)
}
