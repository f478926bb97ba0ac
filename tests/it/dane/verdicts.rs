//! `verify_chain` against every RFC 7672/7671 rule they state.

use rustls_pki_types::{CertificateDer, UnixTime};

use danerelay::dane::{verify_chain, DaneMatch, Failure, TlsaRecord, Verdict};

use super::{ca, cn_only_leaf, leaf, tlsa, Pki, MX};

fn check(chain: &[CertificateDer<'_>], records: &[TlsaRecord]) -> Verdict {
    verify_chain(MX, &[], chain, records, UnixTime::now())
}

fn verified(usage: u8, selector: u8, matching: u8, depth: usize) -> Verdict {
    Verdict::Verified(DaneMatch {
        usage,
        selector,
        matching,
        depth,
    })
}

#[test]
fn dane_ee_matches_the_leaf_for_every_selector_and_matching_type() {
    let ee = leaf(&[MX], None, false);
    let chain = vec![ee.cert.clone()];
    for (s, m) in [(0, 1), (1, 1), (1, 2), (0, 0), (1, 0), (0, 2)] {
        let r = tlsa(3, s, m, &ee.cert);
        assert_eq!(check(&chain, &[r]), verified(3, s, m, 0), "3 {s} {m}");
    }
}

#[test]
fn dane_ee_ignores_expiry_and_names() {
    // RFC 7672 §3.1.1: the key is the identity; dates and names are not checked.
    let ee = leaf(&["unrelated.example.org"], None, true);
    let chain = vec![ee.cert.clone()];
    assert_eq!(
        check(&chain, &[tlsa(3, 1, 1, &ee.cert)]),
        verified(3, 1, 1, 0)
    );
}

#[test]
fn dane_ee_matches_only_the_leaf() {
    // A DANE-EE record for the intermediate must not authenticate the chain.
    let pki = Pki::new();
    let r = tlsa(3, 1, 1, &pki.inter.cert);
    assert_eq!(check(&pki.chain(), &[r]), Verdict::Failed(Failure::NoMatch));
}

#[test]
fn dane_ta_at_depth_1_and_2() {
    let pki = Pki::new();
    for (s, m) in [(0, 1), (1, 1), (1, 2)] {
        let at_inter = tlsa(2, s, m, &pki.inter.cert);
        assert_eq!(
            check(&pki.full_chain(), &[at_inter]),
            verified(2, s, m, 1),
            "2 {s} {m} @1"
        );
        let at_root = tlsa(2, s, m, &pki.root.cert);
        assert_eq!(
            check(&pki.full_chain(), &[at_root]),
            verified(2, s, m, 2),
            "2 {s} {m} @2"
        );
    }
}

#[test]
fn dane_ta_digest_of_a_root_the_server_does_not_send_fails() {
    // RFC 7672 §3.2.1: with a digest record the server must send the TA.
    let pki = Pki::new();
    let r = tlsa(2, 0, 1, &pki.root.cert);
    assert_eq!(check(&pki.chain(), &[r]), Verdict::Failed(Failure::NoMatch));
}

#[test]
fn dane_ta_supplied_only_in_dns() {
    // RFC 7672 §3.2.2: a Full(0) record is the anchor; the chain lacks it.
    let pki = Pki::new();
    for s in [0, 1] {
        let r = tlsa(2, s, 0, &pki.root.cert);
        assert_eq!(
            check(&pki.chain(), &[r]),
            verified(2, s, 0, 2),
            "2 {s} 0 root"
        );
        let r = tlsa(2, s, 0, &pki.inter.cert);
        let leaf_only = vec![pki.leaf.cert.clone()];
        assert_eq!(
            check(&leaf_only, &[r]),
            verified(2, s, 0, 1),
            "2 {s} 0 intermediate"
        );
    }
}

#[test]
fn dane_ta_full_key_of_another_ca_fails() {
    let pki = Pki::new();
    let other = ca("Other Root", None, false);
    for s in [0, 1] {
        let r = tlsa(2, s, 0, &other.cert);
        assert!(
            matches!(
                check(&pki.chain(), &[r]),
                Verdict::Failed(Failure::NoMatch | Failure::TaChain { .. })
            ),
            "2 {s} 0 of an unrelated CA must not verify"
        );
    }
}

#[test]
fn dane_ta_with_wrong_leaf_name_fails() {
    let pki = Pki::with(false, &["mx.attacker.example"]);
    let r = tlsa(2, 0, 1, &pki.root.cert);
    assert!(matches!(
        check(&pki.full_chain(), &[r]),
        Verdict::Failed(Failure::NameMismatch { .. })
    ));
}

#[test]
fn dane_ta_name_rules() {
    // RFC 7672 §3.2.3: the original MX name is a reference id too; wildcards
    // cover exactly one leftmost label.
    let pki = Pki::with(false, &["*.example.net"]);
    let r = tlsa(2, 0, 1, &pki.root.cert);
    let run = |base: &str, mx: &[String]| {
        verify_chain(
            base,
            mx,
            &pki.full_chain(),
            std::slice::from_ref(&r),
            UnixTime::now(),
        )
    };
    assert_eq!(run("mx.example.net", &[]), verified(2, 0, 1, 2));
    assert_eq!(run("MX.Example.Net.", &[]), verified(2, 0, 1, 2));
    assert!(matches!(
        run("a.mx.example.net", &[]),
        Verdict::Failed(Failure::NameMismatch { .. })
    ));
    assert!(matches!(
        run("example.net", &[]),
        Verdict::Failed(Failure::NameMismatch { .. })
    ));
    // CNAME: the base domain differs, the MX host name matches.
    assert_eq!(
        run("smtp.provider.example", &["mx.example.net".into()]),
        verified(2, 0, 1, 2)
    );
}

#[test]
fn dane_ta_with_expired_intermediate_fails() {
    let pki = Pki::with(true, &[MX]);
    let r = tlsa(2, 0, 1, &pki.root.cert);
    match check(&pki.full_chain(), &[r]) {
        Verdict::Failed(Failure::TaChain { error, .. }) => {
            assert!(error.contains("Expired"), "{error}")
        }
        other => panic!("expected a TA chain failure, got {other:?}"),
    }
}

#[test]
fn dane_ta_anchors_only_the_matched_certificate() {
    // The TA is in the chain, but the leaf was issued by someone else: an
    // attacker appending the genuine root to their own chain gains nothing.
    let pki = Pki::new();
    let evil_ca = ca("DANE Test Intermediate", None, false);
    let evil_leaf = leaf(&[MX], Some(&evil_ca), false);
    let chain = vec![
        evil_leaf.cert.clone(),
        pki.inter.cert.clone(),
        pki.root.cert.clone(),
    ];
    let r = tlsa(2, 0, 1, &pki.root.cert);
    assert!(matches!(
        check(&chain, &[r]),
        Verdict::Failed(Failure::TaChain { .. })
    ));
}

#[test]
fn wrong_digest_fails() {
    let ee = leaf(&[MX], None, false);
    let mut r = tlsa(3, 1, 1, &ee.cert);
    r.data[0] ^= 0xff;
    assert_eq!(
        check(std::slice::from_ref(&ee.cert), &[r]),
        Verdict::Failed(Failure::NoMatch)
    );
}

#[test]
fn truncated_digest_is_unusable() {
    let ee = leaf(&[MX], None, false);
    for m in [1, 2] {
        let mut r = tlsa(3, 1, m, &ee.cert);
        r.data.pop();
        assert_eq!(
            check(std::slice::from_ref(&ee.cert), &[r]),
            Verdict::NoUsableTlsa,
            "3 1 {m}"
        );
    }
}

#[test]
fn only_pkix_usages_are_unusable() {
    // RFC 7672 §3.1.3: even records that would match are not used.
    let pki = Pki::new();
    let records = [tlsa(0, 0, 1, &pki.root.cert), tlsa(1, 1, 1, &pki.leaf.cert)];
    assert_eq!(check(&pki.full_chain(), &records), Verdict::NoUsableTlsa);
}

#[test]
fn one_bad_and_one_good_record_verify() {
    let pki = Pki::new();
    let mut bad = tlsa(3, 1, 1, &pki.leaf.cert);
    bad.data[5] ^= 1;
    let good = tlsa(2, 1, 1, &pki.inter.cert);
    let truncated = TlsaRecord {
        data: vec![1, 2, 3],
        ..tlsa(3, 0, 2, &pki.leaf.cert)
    };
    let records = [bad, truncated, tlsa(1, 0, 1, &pki.leaf.cert), good];
    assert_eq!(check(&pki.chain(), &records), verified(2, 1, 1, 1));
}

#[test]
fn digest_agility_uses_only_the_strongest_digest() {
    // RFC 7671 §9: with SHA2-512 present for (3, 1), SHA2-256 is ignored.
    let ee = leaf(&[MX], None, false);
    let chain = [ee.cert.clone()];
    let sha256 = tlsa(3, 1, 1, &ee.cert);
    let mut wrong512 = tlsa(3, 1, 2, &ee.cert);
    wrong512.data[0] ^= 1;
    assert_eq!(
        check(&chain, &[sha256.clone(), wrong512]),
        Verdict::Failed(Failure::NoMatch)
    );
    let good512 = tlsa(3, 1, 2, &ee.cert);
    let mut wrong256 = sha256.clone();
    wrong256.data[0] ^= 1;
    assert_eq!(check(&chain, &[wrong256, good512]), verified(3, 1, 2, 0));
    // Agility is per (usage, selector): a 3 0 2 record does not silence 3 1 1.
    let mut other_selector = tlsa(3, 0, 2, &ee.cert);
    other_selector.data[0] ^= 1;
    assert_eq!(
        check(&chain, &[other_selector, sha256]),
        verified(3, 1, 1, 0)
    );
}

#[test]
fn empty_chain_fails() {
    let ee = leaf(&[MX], None, false);
    assert_eq!(
        check(&[], &[tlsa(3, 1, 1, &ee.cert)]),
        Verdict::Failed(Failure::EmptyChain)
    );
}

#[test]
fn dane_ta_accepts_a_chain_sent_out_of_order() {
    let pki = Pki::new();
    let chain = vec![
        pki.leaf.cert.clone(),
        pki.root.cert.clone(),
        pki.inter.cert.clone(),
    ];
    let r = tlsa(2, 1, 1, &pki.root.cert);
    assert_eq!(check(&chain, &[r]), verified(2, 1, 1, 2));
}

#[test]
fn dane_ta_checks_the_leaf_dates_too() {
    // Unlike DANE-EE (RFC 7672 §3.1.1), a DANE-TA chain is validated fully.
    let pki = Pki::new();
    let expired = leaf(&[MX], Some(&pki.inter), true);
    let chain = vec![expired.cert.clone(), pki.inter.cert.clone()];
    match check(&chain, &[tlsa(2, 0, 1, &pki.inter.cert)]) {
        Verdict::Failed(Failure::TaChain { error, .. }) => {
            assert!(error.contains("Expired"), "{error}")
        }
        other => panic!("expected a TA chain failure, got {other:?}"),
    }
}

#[test]
fn dane_ta_name_from_cn_only_without_dns_sans() {
    // RFC 7672 §3.2.3: the CN is consulted only when there are no DNS SANs.
    let pki = Pki::new();
    let r = tlsa(2, 0, 1, &pki.inter.cert);
    let cn_leaf = cn_only_leaf(MX, &pki.inter);
    assert_eq!(
        check(
            &[cn_leaf.cert.clone(), pki.inter.cert.clone()],
            std::slice::from_ref(&r)
        ),
        verified(2, 0, 1, 1)
    );
    // pki.leaf has SAN mx.example.net and CN "smtp server": the CN is ignored.
    let run = |base: &str| {
        verify_chain(
            base,
            &[],
            &pki.chain(),
            std::slice::from_ref(&r),
            UnixTime::now(),
        )
    };
    assert!(matches!(
        run("smtp server"),
        Verdict::Failed(Failure::NameMismatch { .. })
    ));
}
