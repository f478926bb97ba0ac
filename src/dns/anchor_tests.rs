//! Unit tests of DS/DNSKEY trust-anchor parsing, matching and the DNSKEY
//! self-signature check.

use super::*;

/// IANA root KSK-2017's published DS (https://data.iana.org/root-anchors/).
const ROOT_DS: &str = "20326 8 2 E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D";

/// KSK-2017 as a DNSKEY record (hickory ships its public key).
fn root_ksk(flags: u16) -> Record {
    let key = TrustAnchors::default().get(0).unwrap().clone();
    let dnskey = DNSKEY::with_flags(flags, key);
    Record::from_rdata(
        Name::root(),
        172_800,
        RData::DNSSEC(DNSSECRData::DNSKEY(dnskey)),
    )
}

fn ds_of(text: &str) -> Vec<(Name, DS)> {
    parse(text).unwrap().ds
}

#[test]
fn parses_mixed_files_with_comments_ttls_and_parentheses() {
    let text = format!(
        "; root anchors\n\
         . IN DS {ROOT_DS} ; KSK-2017\n\
         example.  3600 IN DS ( 1234 13 2\n  E06D44B80B8F1D39A95C0B0D7C65D084\n  58E880409BBC683457104237C7F8EC8D )\n\
         \n\
         . 172800 IN DNSKEY 257 3 13 jW4b7dCspRb+K6v0qmJxg5v5ZgIt/nGopr2odE4QC0KHmNu8RWdBwI400omvPtbslcwdmev7lP1XTMk8r49nmQ== ;{{id = 1}}\n\
         Example. DS 7 8 1 ae1ea5b974d4c858b740bd03e3ced7ebfcbd1724\n"
    );
    let file = parse(&text).unwrap();
    let got: Vec<(String, u16, u8, usize)> = file
        .ds
        .iter()
        .map(|(n, d)| {
            (
                n.to_string(),
                d.key_tag(),
                u8::from(d.digest_type()),
                d.digest().len(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (".".into(), 20326, 2, 32),
            ("example.".into(), 1234, 2, 32),
            ("example.".into(), 7, 1, 20),
        ]
    );
    assert_eq!(file.ds[1].1.algorithm(), Algorithm::ECDSAP256SHA256);
    assert_eq!(count_dnskeys(&file.dnskey_text), 1);
    assert!(!TrustAnchors::from_str(&file.dnskey_text)
        .unwrap()
        .is_empty());
}

#[test]
fn rejects_malformed_and_unsupported_ds() {
    for (text, why) in [
        (". IN DS 20326 8 3 E06D44B8", "unsupported digest type 3"),
        (". IN DS 20326 8 2 E06D44B8", "digest is 4 octets"),
        (". IN DS 20326 8 2 XYZ", "bad digest"),
        (". IN DS 70000 8 2 E06D", "bad key tag"),
        (". IN DS 20326 8", "expected key tag"),
        (
            "example IN DS 1 8 1 ae1ea5b974d4c858b740bd03e3ced7ebfcbd1724",
            "must end with a dot",
        ),
        (". IN A 127.0.0.1", "not trust anchors"),
        (". 3600 IN", "no record type"),
    ] {
        let err = parse(text).unwrap_err();
        assert!(err.contains(why), "{text}: {err}");
    }
}

#[test]
fn root_ksk_2017_matches_its_published_ds() {
    let ds = ds_of(&format!(". IN DS {ROOT_DS}"));
    let key = root_ksk(257);
    let matched = match_keys(&Name::root(), &[&ds[0].1], std::slice::from_ref(&key)).unwrap();
    assert_eq!(matched.len(), 1);
    assert_eq!(matched[0].1.calculate_key_tag().unwrap(), 20326);

    // One wrong digest nibble: no match.
    let bad = ROOT_DS.replace("E06D", "E06E");
    let ds = ds_of(&format!(". IN DS {bad}"));
    let err = match_keys(&Name::root(), &[&ds[0].1], std::slice::from_ref(&key)).unwrap_err();
    assert!(err.contains("20326"), "{err}");
    // Right digest under another owner name: no match (the owner is hashed).
    let ds = ds_of(&format!(". IN DS {ROOT_DS}"));
    let other = Name::from_ascii("example.").unwrap();
    assert!(match_keys(&other, &[&ds[0].1], std::slice::from_ref(&key)).is_err());
    // Right digest, wrong key tag or algorithm: no match.
    for wrong in [
        ROOT_DS.replace("20326 8", "20327 8"),
        ROOT_DS.replace("20326 8", "20326 10"),
    ] {
        let ds = ds_of(&format!(". IN DS {wrong}"));
        assert!(match_keys(&Name::root(), &[&ds[0].1], std::slice::from_ref(&key)).is_err());
    }
    // A revoked key (RFC 5011) or a non-zone key is never an anchor.
    for flags in [257 | 0x80, 1] {
        let ds = DS::from_key(
            TrustAnchors::default().get(0).unwrap(),
            &Name::root(),
            DigestType::SHA256,
        )
        .unwrap();
        let k = root_ksk(flags);
        let RData::DNSSEC(DNSSECRData::DNSKEY(dk)) = &k.data else {
            unreachable!()
        };
        let ds = DS::new(
            dk.calculate_key_tag().unwrap(),
            ds.algorithm(),
            DigestType::SHA256,
            dk.to_digest(&Name::root(), DigestType::SHA256)
                .unwrap()
                .as_ref()
                .to_vec(),
        );
        assert!(match_keys(&Name::root(), &[&ds], &[k]).is_err(), "{flags}");
    }
}

#[test]
fn sha1_and_sha384_digests_match_too() {
    let key = root_ksk(257);
    let RData::DNSSEC(DNSSECRData::DNSKEY(dk)) = &key.data else {
        unreachable!()
    };
    for (n, digest_type) in [(1, DigestType::SHA1), (4, DigestType::SHA384)] {
        let digest = dk.to_digest(&Name::root(), digest_type).unwrap();
        let line = format!(". IN DS 20326 8 {n} {}", hex::encode(digest.as_ref()));
        let ds = ds_of(&line);
        assert_eq!(
            match_keys(&Name::root(), &[&ds[0].1], std::slice::from_ref(&key))
                .unwrap()
                .len(),
            1
        );
    }
}

/// A fresh ECDSA key for `example.`, its DNSKEY RRset signed over
/// [inception, expiration], and its SHA-256 DS.
fn signed_zone_key(inception: u32, expiration: u32) -> (Record, Record, DS) {
    use hickory_proto::dnssec::crypto::EcdsaSigningKey;
    use hickory_proto::dnssec::rdata::SigInput;
    use hickory_proto::dnssec::{SigningKey, TBS};
    use hickory_proto::rr::SerialNumber;
    let alg = Algorithm::ECDSAP256SHA256;
    let pkcs8 = EcdsaSigningKey::generate_pkcs8(alg).unwrap();
    let signer = EcdsaSigningKey::from_pkcs8(&pkcs8, alg).unwrap();
    let dnskey = DNSKEY::new(true, true, false, signer.to_public_key().unwrap());
    let owner = Name::from_ascii("example.").unwrap();
    let key = Record::from_rdata(
        owner.clone(),
        3600,
        RData::DNSSEC(DNSSECRData::DNSKEY(dnskey.clone())),
    );
    let input = SigInput {
        type_covered: RecordType::DNSKEY,
        algorithm: alg,
        num_labels: 1,
        original_ttl: 3600,
        sig_expiration: SerialNumber::new(expiration),
        sig_inception: SerialNumber::new(inception),
        key_tag: dnskey.calculate_key_tag().unwrap(),
        signer_name: owner.clone(),
    };
    let tbs = TBS::from_input(&owner, DNSClass::IN, &input, [&key].into_iter()).unwrap();
    let sig = signer.sign(&tbs).unwrap();
    let rrsig = Record::from_rdata(
        owner.clone(),
        3600,
        RData::DNSSEC(DNSSECRData::RRSIG(RRSIG::from_sig(input, sig))),
    );
    let digest = dnskey.to_digest(&owner, DigestType::SHA256).unwrap();
    let ds = DS::new(
        dnskey.calculate_key_tag().unwrap(),
        alg,
        DigestType::SHA256,
        digest.as_ref().to_vec(),
    );
    (key, rrsig, ds)
}

#[test]
fn the_dnskey_rrset_must_be_signed_by_a_matched_key_in_time() {
    let owner = Name::from_ascii("example.").unwrap();
    let now = 1_800_000_000;
    let (key, sig, ds) = signed_zone_key(now - 3600, now + 3600);
    let keys = [key];
    let matched = match_keys(&owner, &[&ds], &keys).unwrap();
    verify_self_signature(&owner, &matched, &keys, std::slice::from_ref(&sig), now).unwrap();
    // No RRSIG, or outside its validity period.
    let err = verify_self_signature(&owner, &matched, &keys, &[], now).unwrap_err();
    assert!(err.contains("not signed"), "{err}");
    for (at, why) in [(now - 7200, "not yet valid"), (now + 7200, "expired")] {
        let err = verify_self_signature(&owner, &matched, &keys, std::slice::from_ref(&sig), at)
            .unwrap_err();
        assert!(err.contains(why), "{err}");
    }
    // Signed by another key than the DS-matched one.
    let (other_key, other_sig, _) = signed_zone_key(now - 3600, now + 3600);
    let both = [keys[0].clone(), other_key];
    let err = verify_self_signature(&owner, &matched, &both, &[other_sig], now).unwrap_err();
    assert!(err.contains("not signed"), "{err}");
    // The matched key's signature no longer covers the RRset once a key
    // is slipped in beside it.
    let err = verify_self_signature(&owner, &matched, &both, std::slice::from_ref(&sig), now)
        .unwrap_err();
    assert!(err.contains("key "), "{err}");
}

/// A UDP name server on loopback that answers every query with `answers`.
async fn stub_server(answers: Vec<Record>) -> SocketAddr {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut reply = query.into_response();
            reply.add_answers(answers.clone());
            let _ = socket.send_to(&reply.to_vec().unwrap(), peer).await;
        }
    });
    addr
}

#[tokio::test]
async fn every_server_is_tried_before_the_bootstrap_fails() {
    let owner = Name::from_ascii("example.").unwrap();
    let now = unix_now();
    let (key, sig, ds) = signed_zone_key(now - 3600, now + 3600);
    let (other_key, other_sig, _) = signed_zone_key(now - 3600, now + 3600);
    let wrong = stub_server(vec![other_key, other_sig]).await;
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent = silent.local_addr().unwrap();
    let right = stub_server(vec![key.clone(), sig]).await;
    let t = Duration::from_millis(300);

    let matched = bootstrap_owner(&owner, &[&ds], &[wrong, silent, right], t)
        .await
        .unwrap();
    assert_eq!(matched.len(), 1);
    assert_eq!(matched[0].0, key);

    let err = bootstrap_owner(&owner, &[&ds], &[wrong, silent], t)
        .await
        .unwrap_err();
    assert!(err.contains(&format!("{wrong}: no DNSKEY")), "{err}");
    assert!(err.contains(&silent.to_string()), "{err}");
}

/// On a current-thread runtime a blocking bootstrap would stall every other
/// task until it gave up.
#[tokio::test]
async fn the_bootstrap_leaves_the_runtime_free() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("root.ds");
    std::fs::write(&path, format!(". IN DS {ROOT_DS}\n")).unwrap();
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let ticks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = ticks.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let servers = [silent.local_addr().unwrap()];
    let Err(err) = load(&path, &servers, Duration::from_millis(300)).await else {
        panic!("a silent server cannot bootstrap a DS anchor");
    };
    assert!(matches!(err, DnsError::Setup { .. }), "{err}");
    let ticks = ticks.load(std::sync::atomic::Ordering::SeqCst);
    assert!(ticks >= 5, "other tasks ran only {ticks} times");
}
