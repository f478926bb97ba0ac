//! TLS session resumption to repeat peers through `TlsConfigCache`: real
//! TLS 1.2 and 1.3 handshakes (tokio-rustls over an in-memory duplex)
//! against rustls servers that keep a session cache (TLS 1.2 session IDs,
//! TLS 1.3 stateful tickets) or issue stateless tickets. A session is
//! resumed only under the policy that verified it in full, and the verdict
//! is re-derived from the chain after every handshake.

use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::ring::{default_provider, Ticketer};
use rustls::{HandshakeKind, ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use danerelay::dane::{
    client_setup, DaneMatch, DaneTarget, Decision, Failure, MandatoryTls, TlsClientSetup,
    TlsConfigCache, TlsaRecord, Verdict,
};

use super::{client_verdict, leaf, tlsa, Node, Pki, MX};

const VERSIONS: [&SupportedProtocolVersion; 2] = [&rustls::version::TLS12, &rustls::version::TLS13];

/// Every kind of server the tests run against: TLS 1.2 and 1.3, each with
/// the server-side session cache and with stateless tickets; the third
/// item names the kind in assertion messages.
fn variants() -> Vec<(&'static SupportedProtocolVersion, bool, String)> {
    let mut all = Vec::new();
    for version in VERSIONS {
        for tickets in [false, true] {
            all.push((version, tickets, format!("{version:?} tickets={tickets}")));
        }
    }
    all
}

/// One server (one `ServerConfig`, so one session cache / ticket key) that
/// presents `chain` signed with `key`. `tickets`: stateless tickets (TLS 1.2
/// and 1.3); otherwise the server-side session cache (TLS 1.2 session IDs,
/// TLS 1.3 stateful tickets).
fn server(
    version: &'static SupportedProtocolVersion,
    tickets: bool,
    chain: Vec<CertificateDer<'static>>,
    key: &rcgen::KeyPair,
) -> TlsAcceptor {
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut config = ServerConfig::builder_with_provider(Arc::new(default_provider()))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, der)
        .unwrap();
    if tickets {
        config.ticketer = Ticketer::new().unwrap();
    }
    TlsAcceptor::from(Arc::new(config))
}

fn serving(version: &'static SupportedProtocolVersion, tickets: bool, n: &Node) -> TlsAcceptor {
    server(version, tickets, vec![n.cert.clone()], &n.key)
}

/// What one connection came to.
#[derive(Debug)]
struct Conn {
    ok: bool,
    kind: Option<HandshakeKind>,
    verdict: Option<Verdict>,
}

/// One connection: handshake, then the client reads what the server sends
/// until it closes (as SMTP reads the EHLO reply), which is also when a
/// TLS 1.3 client takes in the server's tickets.
async fn connect(acceptor: &TlsAcceptor, setup: &TlsClientSetup) -> Conn {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let connector = TlsConnector::from(setup.config.clone());
    let serve = async {
        if let Ok(mut s) = acceptor.accept(server_io).await {
            let _ = s.write_all(b"250 ok\r\n").await;
            let _ = s.shutdown().await;
        }
    };
    let (client, ()) = tokio::join!(
        connector.connect(setup.server_name.clone(), client_io),
        serve
    );
    let verdict = client_verdict(setup, client.as_ref().map(|s| s.get_ref().1));
    match client {
        Ok(mut s) => {
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf).await;
            Conn {
                ok: true,
                kind: s.get_ref().1.handshake_kind(),
                verdict,
            }
        }
        Err(_) => Conn {
            ok: false,
            kind: None,
            verdict,
        },
    }
}

async fn via(cache: &TlsConfigCache, acceptor: &TlsAcceptor, decision: &Decision) -> Conn {
    let setup = cache.setup(decision, MX).unwrap().expect("a TLS decision");
    connect(acceptor, &setup).await
}

fn dane(records: Vec<TlsaRecord>) -> Decision {
    Decision::Authenticate(DaneTarget::new(MX, MX, records))
}

fn ee_match() -> DaneMatch {
    DaneMatch {
        usage: 3,
        selector: 1,
        matching: 1,
        depth: 0,
    }
}

fn assert_full(c: &Conn, what: &str) {
    assert!(c.ok, "{what}: {c:?}");
    assert!(
        matches!(
            c.kind,
            Some(HandshakeKind::Full | HandshakeKind::FullWithHelloRetryRequest)
        ),
        "{what}: {c:?}"
    );
}

fn assert_resumed(c: &Conn, what: &str) {
    assert!(c.ok, "{what}: {c:?}");
    assert_eq!(c.kind, Some(HandshakeKind::Resumed), "{what}: {c:?}");
}

#[tokio::test]
async fn repeat_peer_resumes_and_still_names_the_matched_record() {
    let ee = leaf(&["whatever.example"], None, false);
    let pki = Pki::new();
    for (version, tickets, what) in variants() {
        // DANE-EE: the leaf key.
        let cache = TlsConfigCache::default();
        let s = serving(version, tickets, &ee);
        let d = dane(vec![tlsa(3, 1, 1, &ee.cert)]);
        let first = via(&cache, &s, &d).await;
        assert_full(&first, &what);
        assert_eq!(first.verdict, Some(Verdict::Verified(ee_match())), "{what}");
        for _ in 0..3 {
            let again = via(&cache, &s, &d).await;
            assert_resumed(&again, &what);
            assert_eq!(again.verdict, Some(Verdict::Verified(ee_match())), "{what}");
        }
        // DANE-TA: the chain above the leaf comes back from the
        // session too, so the anchor and its depth are found again.
        for (chain, anchor, depth) in [
            (pki.chain(), &pki.inter.cert, 1),
            (pki.full_chain(), &pki.root.cert, 2),
        ] {
            let s = server(version, tickets, chain, &pki.leaf.key);
            let d = dane(vec![tlsa(2, 0, 1, anchor)]);
            let m = DaneMatch {
                usage: 2,
                selector: 0,
                matching: 1,
                depth,
            };
            let first = via(&cache, &s, &d).await;
            assert_full(&first, &what);
            assert_eq!(first.verdict, Some(Verdict::Verified(m)), "{what}");
            let again = via(&cache, &s, &d).await;
            assert_resumed(&again, &what);
            assert_eq!(again.verdict, Some(Verdict::Verified(m)), "{what}");
        }
    }
}

#[tokio::test]
async fn changed_tlsa_rrset_means_a_full_handshake_and_full_verification() {
    let a = leaf(&[MX], None, false);
    let b = leaf(&[MX], None, false);
    for (version, tickets, what) in variants() {
        let cache = TlsConfigCache::default();
        // The server keeps presenting `a` and accepts resumption throughout.
        let s = serving(version, tickets, &a);
        let old = dane(vec![tlsa(3, 1, 1, &a.cert)]);
        assert_full(&via(&cache, &s, &old).await, &what);
        assert_resumed(&via(&cache, &s, &old).await, &what);

        // Key rollover published (a and b): a new policy, verified afresh.
        let rollover = dane(vec![tlsa(3, 1, 1, &b.cert), tlsa(3, 1, 1, &a.cert)]);
        let c = via(&cache, &s, &rollover).await;
        assert_full(&c, &what);
        assert_eq!(c.verdict, Some(Verdict::Verified(ee_match())), "{what}");

        // Only b now: the server's a no longer matches, and no session
        // from the old policy is offered to paper over it.
        let new = dane(vec![tlsa(3, 1, 1, &b.cert)]);
        let c = via(&cache, &s, &new).await;
        assert!(!c.ok, "{what}: must not connect: {c:?}");
        assert_eq!(c.verdict, Some(Verdict::Failed(Failure::NoMatch)), "{what}");

        // The old session did exist: under the old policy it resumes.
        assert_resumed(&via(&cache, &s, &old).await, &what);

        // The server moves to b: verified in full under the new policy,
        // then resumed under it.
        let s_b = serving(version, tickets, &b);
        let c = via(&cache, &s_b, &new).await;
        assert_full(&c, &what);
        assert_eq!(c.verdict, Some(Verdict::Verified(ee_match())), "{what}");
        assert_resumed(&via(&cache, &s_b, &new).await, &what);
    }
}

#[tokio::test]
async fn a_server_without_the_session_is_verified_in_full_under_the_same_policy() {
    // Same name, same TLSA, same cached config: a second server (say an
    // attacker's) that cannot resume the session and presents a certificate
    // the TLSA do not match fails, concurrently with the genuine server
    // resuming — the verdict is per connection, not per config.
    let genuine = leaf(&[MX], None, false);
    let impostor = leaf(&[MX], None, false);
    for (version, tickets, what) in variants() {
        let cache = TlsConfigCache::default();
        let good = serving(version, tickets, &genuine);
        let bad = serving(version, tickets, &impostor);
        let d = dane(vec![tlsa(3, 1, 1, &genuine.cert)]);
        assert_full(&via(&cache, &good, &d).await, &what);
        let (g, b) = tokio::join!(via(&cache, &good, &d), via(&cache, &bad, &d));
        assert_resumed(&g, &what);
        assert_eq!(g.verdict, Some(Verdict::Verified(ee_match())), "{what}");
        assert!(!b.ok, "{what}: {b:?}");
        assert_eq!(b.verdict, Some(Verdict::Failed(Failure::NoMatch)), "{what}");
    }
}

#[tokio::test]
async fn sessions_are_not_shared_across_decision_kinds_or_names() {
    let cert = leaf(&[MX, "mx2.example.net"], None, false);
    for (version, tickets, what) in variants() {
        let cache = TlsConfigCache::default();
        let s = serving(version, tickets, &cert);
        let opp = Decision::Opportunistic;
        assert_full(&via(&cache, &s, &opp).await, &what);
        assert_resumed(&via(&cache, &s, &opp).await, &what);

        // An unverified (opportunistic) session is never resumed under
        // DANE, though the TLSA match the very certificate.
        let d = dane(vec![tlsa(3, 1, 1, &cert.cert)]);
        let c = via(&cache, &s, &d).await;
        assert_full(&c, &what);
        assert_eq!(c.verdict, Some(Verdict::Verified(ee_match())), "{what}");
        // Nor under mandatory TLS; and the DANE session not under either.
        let req = Decision::TlsRequired(MandatoryTls::EncryptLevel);
        assert_full(&via(&cache, &s, &req).await, &what);
        assert_resumed(&via(&cache, &s, &d).await, &what);

        // Same records, another TLSA base domain (so another SNI).
        let other_base = Decision::Authenticate(DaneTarget::new(
            "mx2.example.net",
            MX,
            vec![tlsa(3, 1, 1, &cert.cert)],
        ));
        let c = via(&cache, &s, &other_base).await;
        assert_full(&c, &what);
        assert_eq!(c.verdict, Some(Verdict::Verified(ee_match())), "{what}");
        // Same base domain and records, another MX name (CNAME case):
        // another set of names a DANE-TA leaf may carry.
        let other_mx = Decision::Authenticate(DaneTarget::new(
            MX,
            "mx.customer.example",
            vec![tlsa(3, 1, 1, &cert.cert)],
        ));
        assert_full(&via(&cache, &s, &other_mx).await, &what);
        // Opportunistic to another host name.
        let setup = cache.setup(&opp, "mx2.example.net").unwrap().unwrap();
        assert_full(&connect(&s, &setup).await, &what);
    }
}

#[tokio::test]
async fn expired_and_uncached_configs_never_resume() {
    let ee = leaf(&[MX], None, false);
    for version in VERSIONS {
        let what = format!("{version:?}");
        let s = serving(version, true, &ee);
        let d = dane(vec![tlsa(3, 1, 1, &ee.cert)]);
        let expired = TlsConfigCache::new(10, Duration::ZERO);
        assert_full(&via(&expired, &s, &d).await, &what);
        let c = via(&expired, &s, &d).await;
        assert_full(&c, &what);
        assert_eq!(c.verdict, Some(Verdict::Verified(ee_match())));
        for _ in 0..2 {
            let setup = client_setup(&d, MX).unwrap().unwrap();
            assert_full(&connect(&s, &setup).await, &what);
        }
    }
}
