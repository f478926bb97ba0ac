//! Table tests for the wildcard proofs: covering, closest encloser, the
//! NSEC3 next-closer hash, and every way a proof must fail.

use super::*;
use hickory_proto::rr::RecordType;

fn n(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

fn nsec(next: &str) -> NSEC {
    NSEC::new(
        n(next),
        [RecordType::A, RecordType::RRSIG, RecordType::NSEC],
    )
}

#[test]
fn base32hex_matches_rfc_5155_appendix_a() {
    // H(example) with salt aabbccdd, 12 iterations (RFC 5155 Appendix A).
    let h = Nsec3HashAlgorithm::SHA1
        .hash(&[0xaa, 0xbb, 0xcc, 0xdd], &n("example."), 12)
        .unwrap();
    assert_eq!(base32hex(h.as_ref()), "0p9mhaveqvm6t7vbl5lop2u3t2rp3tom");
}

#[test]
fn nsec_covers_the_owner_with_the_wildcard_parent_as_closest_encloser() {
    // *.w.example expanded at a.w.example (RRSIG Labels = 2).
    let owner = n("a.w.example.");
    assert!(nsec_proves(
        &owner,
        2,
        &n("*.w.example."),
        &nsec("z.w.example.")
    ));
    // The last NSEC of the zone wraps to the apex.
    assert!(nsec_proves(
        &owner,
        2,
        &n("*.w.example."),
        &nsec("example.")
    ));
    // Not covering: the owner lies outside (before or after) the interval.
    assert!(!nsec_proves(
        &owner,
        2,
        &n("b.w.example."),
        &nsec("z.w.example.")
    ));
    assert!(!nsec_proves(
        &owner,
        2,
        &n("*.w.example."),
        &nsec("a.w.example.")
    ));
    // An exact match proves existence, not absence.
    assert!(!nsec_proves(
        &owner,
        2,
        &n("a.w.example."),
        &nsec("z.w.example.")
    ));
    // b.w.example exists: a.b.w.example could not come from *.w.example.
    let deep = n("a.b.w.example.");
    assert!(!nsec_proves(
        &deep,
        2,
        &n("b.w.example."),
        &nsec("c.w.example.")
    ));
    // ...but can from *.b.w.example (Labels = 3).
    assert!(nsec_proves(
        &deep,
        3,
        &n("b.w.example."),
        &nsec("c.w.example.")
    ));
    // A wrong Labels field (claims *.example) does not match the encloser.
    assert!(!nsec_proves(
        &owner,
        1,
        &n("*.w.example."),
        &nsec("z.w.example.")
    ));
}

fn nsec3(opt_out: bool, iterations: u16, next: Vec<u8>) -> NSEC3 {
    NSEC3::new(
        Nsec3HashAlgorithm::SHA1,
        opt_out,
        iterations,
        Vec::new(),
        next,
        [RecordType::A],
    )
}

fn hashed(name: &str, iterations: u16) -> Vec<u8> {
    Nsec3HashAlgorithm::SHA1
        .hash(&[], &n(name), iterations)
        .unwrap()
        .as_ref()
        .to_vec()
}

fn nsec3_owner(hash: &[u8], zone: &str) -> Name {
    n(&format!("{}.{zone}", base32hex(hash)))
}

#[test]
fn nsec3_covers_the_hash_of_the_next_closer_name() {
    let owner = n("x.y.w.example."); // from *.w.example: next closer y.w.example
    let low = nsec3_owner(&[0; 20], "example.");
    assert!(nsec3_proves(
        &owner,
        2,
        &low,
        &nsec3(false, 0, vec![0xff; 20])
    ));
    // Wrap-around: the last NSEC3 (highest hash) points to the lowest.
    let h = hashed("y.w.example.", 0);
    assert!(h.as_slice() < [0xfe; 20].as_slice(), "test vector");
    let top = nsec3_owner(&[0xff; 20], "example.");
    assert!(nsec3_proves(
        &owner,
        2,
        &top,
        &nsec3(false, 0, vec![0xfe; 20])
    ));
    assert!(!nsec3_proves(
        &owner,
        2,
        &top,
        &nsec3(false, 0, vec![0x00; 20])
    ));
    // A record *matching* the next closer name proves it exists.
    let exact = nsec3_owner(&h, "example.");
    assert!(!nsec3_proves(
        &owner,
        2,
        &exact,
        &nsec3(false, 0, vec![0xff; 20])
    ));
    // The hash is of the next closer name, not of the owner or the wildcard.
    let wrong = hashed("x.y.w.example.", 0);
    let just_after_wrong = nsec3_owner(&wrong, "example.");
    let mut after = wrong.clone();
    after[19] = after[19].wrapping_add(1);
    assert!(!nsec3_proves(
        &owner,
        2,
        &just_after_wrong,
        &nsec3(false, 0, after)
    ));
    // Refused: opt-out, too many iterations, another zone's chain.
    assert!(!nsec3_proves(
        &owner,
        2,
        &low,
        &nsec3(true, 0, vec![0xff; 20])
    ));
    let many = MAX_ITERATIONS + 1;
    assert!(!nsec3_proves(
        &owner,
        2,
        &low,
        &nsec3(false, many, vec![0xff; 20])
    ));
    let elsewhere = nsec3_owner(&[0; 20], "other.");
    assert!(!nsec3_proves(
        &owner,
        2,
        &elsewhere,
        &nsec3(false, 0, vec![0xff; 20])
    ));
    // The zone must hold the wildcard's parent (Labels below the apex: no).
    let child = nsec3_owner(&[0; 20], "w.example.");
    assert!(!nsec3_proves(
        &owner,
        1,
        &child,
        &nsec3(false, 0, vec![0xff; 20])
    ));
}

#[test]
fn no_expansion_and_unproven_expansions_are_refused() {
    assert!(check(&[], &[]).is_err(), "nothing to decide");
}
