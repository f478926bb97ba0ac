//! Real TLS 1.2 and 1.3 handshakes (tokio-rustls over an in-memory duplex)
//! through the client configs `client_setup` builds for each decision.

use std::sync::Arc;

use rustls::crypto::ring::default_provider;
use rustls::server::ResolvesServerCert;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ProtocolVersion, ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use danerelay::dane::{
    client_setup, DaneMatch, DaneTarget, Decision, Failure, MandatoryTls, TlsaRecord, Verdict,
};

use super::{client_verdict, leaf, tlsa, Pki, MX};

pub(super) const VERSIONS: [(&SupportedProtocolVersion, ProtocolVersion); 2] = [
    (&rustls::version::TLS12, ProtocolVersion::TLSv1_2),
    (&rustls::version::TLS13, ProtocolVersion::TLSv1_3),
];

/// A server that sends `chain` and signs with `key` (which need not match).
pub(super) fn server(
    version: &'static SupportedProtocolVersion,
    chain: Vec<CertificateDer<'static>>,
    key: &rcgen::KeyPair,
) -> TlsAcceptor {
    let provider = default_provider();
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signer = provider.key_provider.load_private_key(der).unwrap();
    // CertifiedKey::new skips rustls' key/cert consistency check on purpose.
    let resolver: Arc<dyn ResolvesServerCert> =
        Arc::new(SingleCertAndKey::from(CertifiedKey::new(chain, signer)));
    let config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    TlsAcceptor::from(Arc::new(config))
}

/// What the client saw: the handshake result, negotiated version, the DANE
/// verdict, and the SNI the server received.
pub(super) struct Outcome {
    pub(super) ok: Result<(), String>,
    version: Option<ProtocolVersion>,
    verdict: Option<Verdict>,
    sni: Option<String>,
}

pub(super) async fn handshake(acceptor: TlsAcceptor, decision: &Decision) -> Outcome {
    let setup = client_setup(decision, MX).unwrap().expect("a TLS decision");
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let connector = TlsConnector::from(setup.config.clone());
    let (client, server) = tokio::join!(
        connector.connect(setup.server_name.clone(), client_io),
        acceptor.accept(server_io)
    );
    let sni = server
        .ok()
        .and_then(|s| s.get_ref().1.server_name().map(str::to_owned));
    let verdict = client_verdict(&setup, client.as_ref().map(|s| s.get_ref().1));
    let (ok, version) = match client {
        Ok(s) => (Ok(()), s.get_ref().1.protocol_version()),
        Err(e) => (Err(e.to_string()), None),
    };
    Outcome {
        ok,
        version,
        verdict,
        sni,
    }
}

fn authenticate(base: &str, records: Vec<TlsaRecord>) -> Decision {
    Decision::Authenticate(DaneTarget::new(base, MX, records))
}

#[tokio::test]
async fn dane_ee_verified() {
    let ee = leaf(&["whatever.example"], None, true);
    for (version, expected) in VERSIONS {
        let d = authenticate(MX, vec![tlsa(3, 1, 1, &ee.cert)]);
        let out = handshake(server(version, vec![ee.cert.clone()], &ee.key), &d).await;
        assert_eq!(out.ok, Ok(()));
        assert_eq!(out.version, Some(expected));
        let m = DaneMatch {
            usage: 3,
            selector: 1,
            matching: 1,
            depth: 0,
        };
        assert_eq!(out.verdict, Some(Verdict::Verified(m)));
        assert_eq!(out.sni.as_deref(), Some(MX));
    }
}

#[tokio::test]
async fn dane_ta_verified_with_sni_the_tlsa_base_domain() {
    let pki = Pki::new();
    for (version, expected) in VERSIONS {
        // CNAME case: base domain differs from the MX name the leaf carries.
        let d = authenticate("smtp.provider.example", vec![tlsa(2, 0, 1, &pki.root.cert)]);
        let out = handshake(server(version, pki.full_chain(), &pki.leaf.key), &d).await;
        assert_eq!(out.ok, Ok(()));
        assert_eq!(out.version, Some(expected));
        let m = DaneMatch {
            usage: 2,
            selector: 0,
            matching: 1,
            depth: 2,
        };
        assert_eq!(out.verdict, Some(Verdict::Verified(m)));
        assert_eq!(out.sni.as_deref(), Some("smtp.provider.example"));
    }
}

#[tokio::test]
async fn dane_failed_aborts_the_handshake() {
    let pki = Pki::new();
    let mut wrong = tlsa(3, 1, 1, &pki.leaf.cert);
    wrong.data[0] ^= 1;
    for (version, _) in VERSIONS {
        let d = authenticate(MX, vec![wrong.clone()]);
        let out = handshake(server(version, pki.chain(), &pki.leaf.key), &d).await;
        assert!(out.ok.is_err(), "must not connect");
        assert_eq!(out.verdict, Some(Verdict::Failed(Failure::NoMatch)));
    }
}

#[tokio::test]
async fn dane_ta_wrong_name_aborts_the_handshake() {
    let pki = Pki::with(false, &["mx.attacker.example"]);
    for (version, _) in VERSIONS {
        let d = authenticate(MX, vec![tlsa(2, 1, 1, &pki.inter.cert)]);
        let out = handshake(server(version, pki.chain(), &pki.leaf.key), &d).await;
        assert!(out.ok.is_err());
        assert!(matches!(
            out.verdict,
            Some(Verdict::Failed(Failure::NameMismatch { .. }))
        ));
    }
}

#[tokio::test]
async fn no_usable_records_never_authenticate() {
    // A DANE target holding only unusable records (a caller bug) fails closed.
    let ee = leaf(&[MX], None, false);
    for (version, _) in VERSIONS {
        let d = authenticate(MX, vec![tlsa(1, 1, 1, &ee.cert)]);
        let out = handshake(server(version, vec![ee.cert.clone()], &ee.key), &d).await;
        assert!(out.ok.is_err());
        assert_eq!(out.verdict, Some(Verdict::NoUsableTlsa));
    }
}

#[tokio::test]
async fn unauthenticated_modes_accept_any_certificate() {
    let stranger = leaf(&["self-signed.invalid"], None, true);
    for decision in [
        Decision::Opportunistic,
        Decision::TlsRequired(MandatoryTls::AllTlsaUnusable),
    ] {
        for (version, expected) in VERSIONS {
            let out = handshake(
                server(version, vec![stranger.cert.clone()], &stranger.key),
                &decision,
            )
            .await;
            assert_eq!(out.ok, Ok(()), "{decision:?}");
            assert_eq!(out.version, Some(expected));
            assert_eq!(out.verdict, None);
        }
    }
}

#[tokio::test]
async fn right_certificate_wrong_key_fails_in_every_mode() {
    // The server replays the genuine certificate but cannot sign with its key.
    let genuine = leaf(&[MX], None, false);
    let impostor_key = rcgen::KeyPair::generate().unwrap();
    let dane = authenticate(MX, vec![tlsa(3, 1, 1, &genuine.cert)]);
    for decision in [
        dane,
        Decision::Opportunistic,
        Decision::TlsRequired(MandatoryTls::EncryptLevel),
    ] {
        for (version, _) in VERSIONS {
            let acceptor = server(version, vec![genuine.cert.clone()], &impostor_key);
            let out = handshake(acceptor, &decision).await;
            let err = out.ok.expect_err("handshake signature must be checked");
            assert!(
                err.to_lowercase().contains("signature"),
                "{decision:?} {version:?}: {err}"
            );
        }
    }
}

#[test]
fn no_tls_for_plaintext_and_defer() {
    assert!(client_setup(&Decision::Plaintext, MX).unwrap().is_none());
    let defer = Decision::Defer(danerelay::dane::DeferReason::MxInsecure);
    assert!(client_setup(&defer, MX).unwrap().is_none());
    let opp = client_setup(&Decision::Opportunistic, MX).unwrap().unwrap();
    assert!(opp.plaintext_fallback && opp.dane.is_none());
    let auth = client_setup(&authenticate(MX, vec![]), MX)
        .unwrap()
        .unwrap();
    assert!(!auth.plaintext_fallback && auth.dane.is_some());
    assert_eq!(auth.server_name, ServerName::try_from(MX).unwrap());
    let literal = client_setup(&Decision::Opportunistic, "[127.0.0.1]")
        .unwrap()
        .unwrap();
    assert!(matches!(literal.server_name, ServerName::IpAddress(_)));
    assert!(client_setup(&Decision::Opportunistic, "not a host name!").is_err());
}
