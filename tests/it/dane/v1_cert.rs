//! X.509 v1 (and v3 unique-ID) leaf certificates, common for self-signed
//! DANE-EE servers: rustls-webpki cannot parse them, so the handshake
//! signature is checked against the leaf's SubjectPublicKeyInfo instead.
//! rcgen cannot make such certificates, so the TBSCertificate is built here
//! by hand and signed with the rcgen key; the server is OpenSSL (Python's
//! `ssl`) in a live TLS 1.2 and 1.3 handshake.

use rcgen::{KeyPair, PublicKeyData};
use rustls::SignatureScheme;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use danerelay::dane::{ring_provider, DaneMatch, DaneTarget, Decision, MandatoryTls, Verdict};

use super::handshake::{handshake, server, VERSIONS};
use super::openssl_peer::run_presenting;
use super::{tlsa, MX};

/// One DER TLV.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

fn seq(parts: &[Vec<u8>]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

/// `CN=<cn>` as a Name.
fn name(cn: &str) -> Vec<u8> {
    let common_name = [0x06, 0x03, 0x55, 0x04, 0x03].to_vec();
    tlv(
        0x30,
        &tlv(0x31, &seq(&[common_name, tlv(0x0c, cn.as_bytes())])),
    )
}

/// A self-signed ECDSA P-256 certificate for `cn`: version 1 (no version
/// field, no extensions) or, with `unique_ids`, version 3 carrying an
/// issuerUniqueID and a subjectUniqueID.
fn hand_made(cn: &str, key: &KeyPair, unique_ids: bool) -> CertificateDer<'static> {
    let ecdsa_sha256 = seq(&[tlv(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02])]);
    let validity = seq(&[tlv(0x17, b"200101000000Z"), tlv(0x18, b"20991231235959Z")]);
    let mut tbs = Vec::new();
    if unique_ids {
        tbs.push(tlv(0xa0, &tlv(0x02, &[2])));
    }
    tbs.extend([
        tlv(0x02, &[0x01, 0x23, 0x45]),
        ecdsa_sha256.clone(),
        name(cn),
        validity,
        name(cn),
        key.subject_public_key_info(),
    ]);
    if unique_ids {
        tbs.push(tlv(0x81, &[0x00, 0x11, 0x22]));
        tbs.push(tlv(0x82, &[0x00, 0x33, 0x44]));
    }
    let tbs = seq(&tbs);
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signer = ring_provider()
        .key_provider
        .load_private_key(der)
        .unwrap()
        .choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256])
        .unwrap();
    let mut signature = vec![0u8];
    signature.extend(signer.sign(&tbs).unwrap());
    CertificateDer::from(seq(&[tbs, ecdsa_sha256, tlv(0x03, &signature)]))
}

#[test]
fn the_hand_made_certificates_are_what_webpki_refuses() {
    let key = KeyPair::generate().unwrap();
    for (unique_ids, version) in [(false, 0), (true, 2)] {
        let cert = hand_made(MX, &key, unique_ids);
        let (rest, parsed) = x509_parser::parse_x509_certificate(&cert).unwrap();
        assert!(rest.is_empty());
        assert_eq!(parsed.version().0, version);
        if !unique_ids {
            assert!(webpki::EndEntityCert::try_from(&cert).is_err());
        }
    }
}

#[tokio::test]
async fn dane_ee_authenticates_v1_and_unique_id_leaves_in_a_live_handshake() {
    let key = KeyPair::generate().unwrap();
    for unique_ids in [false, true] {
        let cert = hand_made(MX, &key, unique_ids);
        for (version, selector) in [("1.2", 1), ("1.3", 1), ("1.3", 0)] {
            let rec = tlsa(3, selector, 1, &cert);
            let decision = Decision::Authenticate(DaneTarget::new(MX, MX, vec![rec]));
            let Some((result, verdict, server)) =
                run_presenting(std::slice::from_ref(&cert), &key, version, &decision).await
            else {
                return;
            };
            let case = format!("TLS {version}, 3 {selector} 1, unique ids {unique_ids}");
            assert_eq!(result, Ok(()), "{case}: server said {server}");
            assert_eq!(
                verdict,
                Some(Verdict::Verified(DaneMatch {
                    usage: 3,
                    selector,
                    matching: 1,
                    depth: 0,
                })),
                "{case}"
            );
            assert!(server.starts_with("ok "), "{case}: {server}");
        }
        // Opportunistic TLS checks the same handshake signature.
        let Some((result, _, server)) = run_presenting(
            std::slice::from_ref(&cert),
            &key,
            "1.3",
            &Decision::Opportunistic,
        )
        .await
        else {
            return;
        };
        assert_eq!(result, Ok(()), "opportunistic: server said {server}");
    }
}

#[tokio::test]
async fn a_v1_leaf_replayed_without_its_key_still_fails() {
    // The server presents the genuine v1 certificate but signs with another
    // key: the check against the leaf's SPKI must refuse it in every mode.
    let genuine_key = KeyPair::generate().unwrap();
    let cert = hand_made(MX, &genuine_key, false);
    let impostor = KeyPair::generate().unwrap();
    let dane = Decision::Authenticate(DaneTarget::new(MX, MX, vec![tlsa(3, 1, 1, &cert)]));
    for decision in [
        dane,
        Decision::Opportunistic,
        Decision::TlsRequired(MandatoryTls::EncryptLevel),
    ] {
        for (version, _) in VERSIONS {
            let out = handshake(server(version, vec![cert.clone()], &impostor), &decision).await;
            let err = out.ok.expect_err("handshake signature must be checked");
            assert!(
                err.to_lowercase().contains("signature"),
                "{decision:?} {version:?}: {err}"
            );
        }
        // With the genuine key the same in-process server is accepted.
        for (version, _) in VERSIONS {
            let out = handshake(server(version, vec![cert.clone()], &genuine_key), &decision).await;
            assert_eq!(out.ok, Ok(()), "{decision:?} {version:?}");
        }
    }
}
