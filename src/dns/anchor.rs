//! `dns.trust_anchor` for `dns.dnssec = "validate"`: a file of DS and/or
//! DNSKEY records in zone-file syntax (README, `[dns]`), turned into hickory's
//! [`TrustAnchors`].
//!
//! hickory only takes DNSKEYs as anchors, so DS records are bootstrapped at
//! start: the DNSKEY RRset of each DS owner is fetched (DO=1, CD=1) from the
//! configured name servers in turn until one answers with keys that pass, a
//! key is kept when a DS with the same key tag and
//! algorithm carries its RFC 4034 §5.1.4 digest (SHA-1, SHA-256, SHA-384;
//! RFC 4509, RFC 6605), the key is a zone key and not revoked (RFC 5011 §7),
//! and the RRset is self-signed by a kept key within its validity period
//! (RFC 4035 §5.2, §5.3). Any failure is a [`DnsError::Setup`] naming the
//! file: never a silent fall-back to the IANA root or to "insecure".
//!
//! Records are one per line (a parenthesised record may span lines);
//! `;` starts a comment. The bootstrap query goes through hickory-net's
//! client, as every other query does (UDP, TCP when truncated, RFC 7766 §5);
//! [`load`] is async: the bootstrap never blocks a Tokio worker.

use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_proto::dnssec::rdata::{DNSSECRData, DNSKEY, DS, RRSIG};
use hickory_proto::dnssec::{Algorithm, DigestType, TrustAnchors, Verifier};
use hickory_proto::op::{DnsRequest, DnsRequestOptions, Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use tracing::{info, warn};

use super::types::DnsError;

/// One parsed anchor file: its DS records and its DNSKEY text (for
/// hickory's own parser).
#[derive(Debug, Default)]
pub(super) struct AnchorFile {
    pub ds: Vec<(Name, DS)>,
    pub dnskey_text: String,
}

/// Reads `path` and builds the anchors, fetching DNSKEYs for DS records
/// from `servers` (empty ⇒ /etc/resolv.conf).
pub(super) async fn load(
    path: &Path,
    servers: &[SocketAddr],
    timeout: Duration,
) -> Result<TrustAnchors, DnsError> {
    let fail = |reason: String| DnsError::Setup {
        detail: format!("trust anchor {}: {reason}", path.display()),
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let file = parse(&text).map_err(&fail)?;
    let mut anchors = TrustAnchors::from_str(&file.dnskey_text).map_err(|e| fail(e.to_string()))?;
    let mut count = count_dnskeys(&file.dnskey_text);
    let servers = if servers.is_empty() && !file.ds.is_empty() {
        super::system_nameservers()?
    } else {
        servers.to_vec()
    };
    for owner in ds_owners(&file.ds) {
        let ds: Vec<&DS> = file
            .ds
            .iter()
            .filter(|(o, _)| o == owner)
            .map(|(_, d)| d)
            .collect();
        let matched = bootstrap_owner(owner, &ds, &servers, timeout)
            .await
            .map_err(&fail)?;
        for (record, key) in matched {
            anchors.insert_with_name(key.public_key(), owner.into());
            info!(target: "danerelay::dns", owner = %record.name, key_tag = key.calculate_key_tag().unwrap_or(0),
                "trust anchor DNSKEY bootstrapped from DS");
            count += 1;
        }
    }
    if count == 0 {
        return Err(fail("no DS or DNSKEY records".into()));
    }
    Ok(anchors)
}

/// The distinct DS owners, in file order.
fn ds_owners(ds: &[(Name, DS)]) -> Vec<&Name> {
    let mut owners: Vec<&Name> = Vec::new();
    for (owner, _) in ds {
        if !owners.contains(&owner) {
            owners.push(owner);
        }
    }
    owners
}

/// The DS-matched, self-signed DNSKEYs of `owner`, from the first of
/// `servers` whose answer passes; every server is tried before giving up.
async fn bootstrap_owner(
    owner: &Name,
    ds: &[&DS],
    servers: &[SocketAddr],
    timeout: Duration,
) -> Result<Vec<(Record, DNSKEY)>, String> {
    let mut errors = Vec::new();
    for server in servers {
        let result = match fetch_dnskeys(owner, *server, timeout).await {
            Ok((keys, sigs)) => match_keys(owner, ds, &keys).and_then(|matched| {
                verify_self_signature(owner, &matched, &keys, &sigs, unix_now())?;
                Ok(matched)
            }),
            Err(e) => Err(e),
        };
        match result {
            Ok(matched) => return Ok(matched),
            Err(e) => {
                warn!(target: "danerelay::dns", %server, error = %e, "trust anchor DNSKEY bootstrap failed");
                errors.push(format!("{server}: {e}"));
            }
        }
    }
    Err(format!(
        "fetching DNSKEY of {owner} for the DS anchor: {}",
        if errors.is_empty() {
            "no name servers".to_string()
        } else {
            errors.join("; ")
        }
    ))
}

fn count_dnskeys(text: &str) -> usize {
    text.lines().filter(|l| !l.trim().is_empty()).count()
}

/// Splits the file into records: DS ones parsed here, the rest kept as text.
pub(super) fn parse(text: &str) -> Result<AnchorFile, String> {
    let mut file = AnchorFile::default();
    for (line_no, record) in logical_records(text) {
        let tokens: Vec<&str> = record.split_whitespace().collect();
        let Some(type_at) = type_index(&tokens) else {
            return Err(format!("line {line_no}: no record type in {record:?}"));
        };
        match tokens[type_at].to_ascii_uppercase().as_str() {
            "DS" => {
                let ds = parse_ds(&tokens[type_at + 1..])
                    .map_err(|e| format!("line {line_no}: DS: {e}"))?;
                let owner = Name::from_ascii(tokens[0])
                    .map_err(|e| format!("line {line_no}: owner {:?}: {e}", tokens[0]))?;
                if !owner.is_fqdn() {
                    return Err(format!(
                        "line {line_no}: owner {:?} must end with a dot",
                        tokens[0]
                    ));
                }
                file.ds.push((owner.to_lowercase(), ds));
            }
            "DNSKEY" => {
                file.dnskey_text.push_str(&record);
                file.dnskey_text.push('\n');
            }
            other => {
                return Err(format!(
                    "line {line_no}: {other} records are not trust anchors (DS or DNSKEY)"
                ))
            }
        }
    }
    Ok(file)
}

/// Comments removed and parenthesised records joined, with their first line.
fn logical_records(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut start = 0;
    let mut depth = 0usize;
    for (i, line) in text.lines().enumerate() {
        let content = line.split(';').next().unwrap_or("");
        if current.is_empty() {
            start = i + 1;
        }
        for c in content.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth = depth.saturating_sub(1),
                _ => current.push(c),
            }
        }
        current.push(' ');
        if depth == 0 {
            let record = current.trim().to_string();
            if !record.is_empty() {
                out.push((start, record));
            }
            current.clear();
        }
    }
    let rest = current.trim();
    if !rest.is_empty() {
        out.push((start, rest.to_string()));
    }
    out
}

/// Index of the type token: after the owner, an optional TTL and class.
fn type_index(tokens: &[&str]) -> Option<usize> {
    let mut i = 1;
    while i < tokens.len() && i < 3 {
        let t = tokens[i];
        let is_ttl = t.bytes().all(|b| b.is_ascii_digit());
        let is_class = DNSClass::from_str(&t.to_ascii_uppercase()).is_ok();
        if is_ttl || is_class {
            i += 1;
        } else {
            break;
        }
    }
    (i < tokens.len()).then_some(i)
}

/// RFC 4034 §5.3: `key-tag algorithm digest-type hex-digest` (the digest
/// may be split by spaces).
fn parse_ds(fields: &[&str]) -> Result<DS, String> {
    let [tag, alg, digest_type, digest @ ..] = fields else {
        return Err("expected key tag, algorithm, digest type and digest".into());
    };
    let tag: u16 = tag.parse().map_err(|_| format!("bad key tag {tag:?}"))?;
    let alg: u8 = alg.parse().map_err(|_| format!("bad algorithm {alg:?}"))?;
    let digest_type: u8 = digest_type
        .parse()
        .map_err(|_| format!("bad digest type {digest_type:?}"))?;
    let algorithm = Algorithm::from_u8(alg);
    if !algorithm.is_supported() {
        return Err(format!("unsupported algorithm {alg}"));
    }
    let digest_type = DigestType::from(digest_type);
    let expected = match digest_type {
        DigestType::SHA1 => 20,
        DigestType::SHA256 => 32,
        DigestType::SHA384 => 48,
        _ => return Err(format!("unsupported digest type {}", u8::from(digest_type))),
    };
    let digest = hex::decode(digest.concat()).map_err(|e| format!("bad digest: {e}"))?;
    if digest.len() != expected {
        return Err(format!(
            "digest is {} octets, {} wants {expected}",
            digest.len(),
            u8::from(digest_type)
        ));
    }
    Ok(DS::new(tag, algorithm, digest_type, digest))
}

/// The DNSKEY records whose digest a DS carries (RFC 4034 §5.1.4, §5.2).
pub(super) fn match_keys(
    owner: &Name,
    ds: &[&DS],
    keys: &[Record],
) -> Result<Vec<(Record, DNSKEY)>, String> {
    let mut matched = Vec::new();
    for record in keys {
        let RData::DNSSEC(DNSSECRData::DNSKEY(key)) = &record.data else {
            continue;
        };
        if key.revoke() {
            continue;
        }
        let Ok(tag) = key.calculate_key_tag() else {
            continue;
        };
        let covered = ds.iter().any(|d| {
            d.key_tag() == tag
                && d.algorithm() == key.algorithm()
                && d.covers(owner, key).unwrap_or(false)
        });
        if covered {
            matched.push((record.clone(), key.clone()));
        }
    }
    if matched.is_empty() {
        let tags: Vec<String> = ds.iter().map(|d| d.key_tag().to_string()).collect();
        return Err(format!(
            "no DNSKEY of {owner} matches DS key tag(s) {} ({} DNSKEY(s) received)",
            tags.join(", "),
            keys.len()
        ));
    }
    Ok(matched)
}

/// The DNSKEY RRset must carry a valid RRSIG by one of the matched keys.
pub(super) fn verify_self_signature(
    owner: &Name,
    matched: &[(Record, DNSKEY)],
    keys: &[Record],
    sigs: &[Record],
    now: u32,
) -> Result<(), String> {
    let mut reasons = Vec::new();
    for sig_record in sigs {
        let RData::DNSSEC(DNSSECRData::RRSIG(sig)) = &sig_record.data else {
            continue;
        };
        for (_, key) in matched {
            let Ok(tag) = key.calculate_key_tag() else {
                continue;
            };
            if sig.input().key_tag != tag || sig.input().algorithm != key.algorithm() {
                continue;
            }
            match check_one(owner, key, sig, keys, now) {
                Ok(()) => return Ok(()),
                Err(e) => reasons.push(format!("key {tag}: {e}")),
            }
        }
    }
    Err(format!(
        "DNSKEY RRset of {owner} is not signed by a DS-matched key ({} RRSIG(s){}{})",
        sigs.len(),
        if reasons.is_empty() { "" } else { ": " },
        reasons.join("; ")
    ))
}

fn check_one(
    owner: &Name,
    key: &DNSKEY,
    sig: &RRSIG,
    keys: &[Record],
    now: u32,
) -> Result<(), String> {
    let input = sig.input();
    // RFC 4034 §3.1.5: serial-number arithmetic (RFC 1982) on the times.
    let after = |a: u32, b: u32| (a.wrapping_sub(b) as i32) >= 0;
    if !after(now, input.sig_inception.get()) {
        return Err("signature not yet valid".into());
    }
    if !after(input.sig_expiration.get(), now) {
        return Err("signature expired".into());
    }
    key.verify_rrsig(owner, DNSClass::IN, sig, keys.iter())
        .map_err(|e| e.to_string())
}

fn unix_now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

/// (DNSKEY records, RRSIGs over them) for `owner` from `server`.
async fn fetch_dnskeys(
    owner: &Name,
    server: SocketAddr,
    timeout: Duration,
) -> Result<(Vec<Record>, Vec<Record>), String> {
    let reply = super::trust_ad::exchange(server, dnskey_request(owner), timeout)
        .await
        .map_err(|e| e.to_string())?
        .into_message();
    if reply.metadata.response_code != ResponseCode::NoError {
        return Err(format!("answered {}", reply.metadata.response_code));
    }
    let (mut keys, mut sigs) = (Vec::new(), Vec::new());
    for r in reply.answers {
        if !r.name.eq_ignore_root_case(owner) {
            continue;
        }
        match &r.data {
            RData::DNSSEC(DNSSECRData::DNSKEY(_)) => keys.push(r),
            RData::DNSSEC(DNSSECRData::RRSIG(s))
                if s.input().type_covered == RecordType::DNSKEY =>
            {
                sigs.push(r)
            }
            _ => {}
        }
    }
    if keys.is_empty() {
        return Err(format!("no DNSKEY records for {owner}"));
    }
    Ok((keys, sigs))
}

/// DNSKEY query with DO=1 (RFC 3225) and CD=1: we check the keys ourselves,
/// so a validating upstream must not withhold them (RFC 4035 §3.2.2).
fn dnskey_request(owner: &Name) -> DnsRequest {
    let mut msg = Message::query();
    msg.add_query(Query::query(owner.clone(), RecordType::DNSKEY));
    msg.metadata.recursion_desired = true;
    msg.metadata.checking_disabled = true;
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    edns.set_dnssec_ok(true);
    msg.set_edns(edns);
    let mut options = DnsRequestOptions::default();
    options.edns_set_dnssec_ok = true;
    options.edns_payload_len = 1232;
    DnsRequest::new(msg, options)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "anchor_tests.rs"]
mod tests;
