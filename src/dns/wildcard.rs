//! Our own check of wildcard expansions in a validated answer, for the
//! answers hickory 0.26.3's validator wrongly calls bogus (measured in
//! `tests/it/dns.rs`: one-label expansions in NSEC zones, and any wildcard
//! behind a CNAME, where hickory checks the proof against the query name
//! instead of the CNAME target).
//!
//! An RRset whose RRSIG Labels field is smaller than its owner's label count
//! was synthesised from the wildcard `*.<owner's last Labels labels>`
//! (RFC 4035 §5.3.2). It is secure only with proof that the owner name
//! itself does not exist (RFC 4035 §5.3.4), which needs (RFC 4592 §4.4):
//!
//! * NSEC: a secure NSEC that covers the owner name and whose closest
//!   encloser (the longest ancestor the owner shares with the NSEC's owner
//!   or next name) is exactly the wildcard's parent — otherwise a closer name
//!   exists and the wildcard could not have matched;
//! * NSEC3 (RFC 5155 §8.8): a secure NSEC3 that covers the hash of the
//!   *next closer* name (the owner cut to Labels + 1 labels). Opt-out NSEC3
//!   and more than [`MAX_ITERATIONS`] iterations are refused (fail closed).
//!
//! Pure functions over hickory records that already carry their signature
//! verdict (`Record::proof`); nothing here ever makes an answer secure by
//! itself — `validate` still requires every record of the chain to be
//! secure.

use std::cmp::Ordering;

use hickory_proto::dnssec::rdata::{DNSSECRData, NSEC, NSEC3};
use hickory_proto::dnssec::{Nsec3HashAlgorithm, Proof};
use hickory_proto::rr::{Name, RData, Record};

/// RFC 9276 §3.2: validators may treat more iterations as insecure; we
/// refuse them (the answer stays bogus).
pub const MAX_ITERATIONS: u16 = 100;

/// The wildcard-expanded owners in `answers`: `(owner, labels)` from each
/// RRSIG whose Labels field is below the owner's label count.
pub(crate) fn expansions(answers: &[Record]) -> Vec<(Name, u8)> {
    let mut found: Vec<(Name, u8)> = Vec::new();
    for r in answers {
        if let RData::DNSSEC(DNSSECRData::RRSIG(sig)) = &r.data {
            let labels = sig.input().num_labels;
            if labels < r.name.num_labels() && !found.iter().any(|(n, _)| *n == r.name) {
                found.push((r.name.clone(), labels));
            }
        }
    }
    found
}

/// `Ok` when every wildcard expansion in `answers` is proven by a secure
/// NSEC or NSEC3 record of `authorities`; `Err(reason)` otherwise, and
/// when there is no expansion at all (nothing for this check to decide).
pub(crate) fn check(answers: &[Record], authorities: &[Record]) -> Result<(), String> {
    let expanded = expansions(answers);
    if expanded.is_empty() {
        return Err("no wildcard expansion in the answer".into());
    }
    for (owner, labels) in &expanded {
        if !proven(owner, *labels, authorities) {
            return Err(format!(
                "no NSEC/NSEC3 proves that {owner} does not exist (wildcard expansion, RFC 4035 §5.3.4)"
            ));
        }
    }
    Ok(())
}

fn proven(owner: &Name, labels: u8, authorities: &[Record]) -> bool {
    authorities
        .iter()
        .filter(|r| r.proof == Proof::Secure)
        .any(|r| match &r.data {
            RData::DNSSEC(DNSSECRData::NSEC(nsec)) => nsec_proves(owner, labels, &r.name, nsec),
            RData::DNSSEC(DNSSECRData::NSEC3(nsec3)) => nsec3_proves(owner, labels, &r.name, nsec3),
            _ => false,
        })
}

/// RFC 4035 §5.3.4 with RFC 4592 §4.4's closest encloser.
pub(crate) fn nsec_proves(owner: &Name, labels: u8, nsec_owner: &Name, nsec: &NSEC) -> bool {
    let next = nsec.next_domain_name();
    let covers = match nsec_owner.cmp(next) {
        // The last NSEC of the zone points back at the apex.
        Ordering::Less => nsec_owner < owner && owner < next,
        _ => nsec_owner < owner && next.zone_of(owner),
    };
    let encloser = common_labels(owner, nsec_owner).max(common_labels(owner, next));
    covers && encloser == labels
}

/// RFC 5155 §8.8: a non-opt-out NSEC3 of the owner's zone that covers the
/// hash of the next closer name.
pub(crate) fn nsec3_proves(owner: &Name, labels: u8, nsec3_owner: &Name, nsec3: &NSEC3) -> bool {
    if nsec3.opt_out()
        || nsec3.iterations() > MAX_ITERATIONS
        || nsec3.hash_algorithm() != Nsec3HashAlgorithm::SHA1
        || nsec3_owner.num_labels() < 1
    {
        return false;
    }
    let zone = nsec3_owner.base_name();
    // The zone must hold the wildcard: its apex is at or above the parent.
    if !zone.zone_of(owner) || zone.num_labels() > labels {
        return false;
    }
    let next_closer = owner.trim_to(usize::from(labels) + 1);
    let Ok(digest) = nsec3
        .hash_algorithm()
        .hash(nsec3.salt(), &next_closer, nsec3.iterations())
    else {
        return false;
    };
    let hashed = base32hex(digest.as_ref());
    let Some(first) = nsec3_owner.iter().next() else {
        return false;
    };
    let from = String::from_utf8_lossy(first).to_ascii_lowercase();
    let to = base32hex(nsec3.next_hashed_owner_name());
    // base32hex keeps the octets' order, so the strings compare as the hashes.
    if from < to {
        from < hashed && hashed < to
    } else {
        hashed > from || hashed < to
    }
}

/// How many trailing labels two names share (case-insensitively).
fn common_labels(a: &Name, b: &Name) -> u8 {
    let most = a.num_labels().min(b.num_labels());
    (0..=most)
        .rev()
        .find(|&k| a.trim_to(usize::from(k)) == b.trim_to(usize::from(k)))
        .unwrap_or(0)
}

/// RFC 4648 §7 "base32hex", lower case, no padding (the NSEC3 owner label).
fn base32hex(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

#[cfg(test)]
#[path = "wildcard_tests.rs"]
mod tests;
