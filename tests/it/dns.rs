//! The DNS layer against a real signed world (see `support::dnsenv`): the
//! same matrix through `trust-ad` (a validating unbound) and through
//! `validate` (hickory's own validator talking to knotd directly), then the
//! routing and TLSA decisions on top, the start-up probe, and what hickory's
//! validator does behind unbound.
//!
//! Run with `RUST_LOG=danerelay::dns=debug` to see every answer's status.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::sync::Arc;

use danerelay::config::DnssecMode;
use danerelay::delivery::routing::{plan_route, plan_route_with_port, RouteSource, RoutingError};
use danerelay::dns::{
    self, dnssec_probe, lookup_tlsa, Answer, AnswerKind, DnsError, DnsLookup, Record, RecordType,
    Security,
};

use crate::support::dnsenv::{DnsEnv, TLSA_HEX};

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

async fn ok(dns: &dyn DnsLookup, name: &str, rtype: RecordType) -> Answer {
    match dns.lookup(name, rtype).await {
        Ok(a) => a,
        Err(e) => panic!("{name} {rtype}: unexpected error {e}"),
    }
}

async fn temp_err(dns: &dyn DnsLookup, name: &str, rtype: RecordType) -> DnsError {
    match dns.lookup(name, rtype).await {
        Ok(a) => panic!("{name} {rtype}: expected a temporary failure, got {a:?}"),
        Err(e) => {
            assert!(e.is_temporary(), "{name} {rtype}: {e}");
            e
        }
    }
}

fn a(ip: &str) -> Record {
    Record::A(ip.parse().unwrap())
}

/// The matrix both modes must pass.
async fn matrix(dns: &dyn DnsLookup, mode: &str) {
    use Security::{Insecure, Secure};
    // Secure MX + secure A + secure TLSA.
    let mx = ok(dns, "secure.example", RecordType::Mx).await;
    assert_eq!(mx.security, Secure, "{mode}: MX");
    let hosts: Vec<_> = mx
        .mx()
        .map(|m| (m.preference, m.exchange.as_str()))
        .collect();
    assert_eq!(hosts, vec![(10, "mx.secure.example")], "{mode}");
    let addr = ok(dns, "mx.secure.example", RecordType::A).await;
    assert_eq!(
        (addr.records(), addr.security),
        (&[a("127.0.0.25")][..], Secure),
        "{mode}: A"
    );
    let tlsa = ok(dns, "_25._tcp.mx.secure.example", RecordType::Tlsa).await;
    assert_eq!(tlsa.security, Secure, "{mode}: TLSA");
    let t: Vec<_> = tlsa.tlsa().collect();
    assert_eq!(t.len(), 1, "{mode}");
    assert_eq!(
        (t[0].usage, t[0].selector, t[0].matching),
        (3, 1, 1),
        "{mode}"
    );
    assert_eq!(hex::encode(&t[0].data), TLSA_HEX, "{mode}");

    // NODATA and NXDOMAIN, secure.
    let nodata = ok(dns, "mx.secure.example", RecordType::Aaaa).await;
    assert_eq!(
        (&nodata.kind, nodata.security),
        (&AnswerKind::NoData, Secure),
        "{mode}: secure NODATA"
    );
    let nx = ok(dns, "nope.secure.example", RecordType::A).await;
    assert_eq!(
        (&nx.kind, nx.security),
        (&AnswerKind::NxDomain, Secure),
        "{mode}: secure NXDOMAIN"
    );

    // Insecure child zone (delegated without DS).
    let mx = ok(dns, "insecure.example", RecordType::Mx).await;
    assert_eq!(
        (mx.mx().count(), mx.security),
        (1, Insecure),
        "{mode}: insecure MX"
    );
    let addr = ok(dns, "mx.insecure.example", RecordType::A).await;
    assert_eq!(
        (addr.records(), addr.security),
        (&[a("127.0.0.27")][..], Insecure),
        "{mode}"
    );
    let tlsa = ok(dns, "_25._tcp.mx.insecure.example", RecordType::Tlsa).await;
    assert_eq!(
        (tlsa.tlsa().count(), tlsa.security),
        (1, Insecure),
        "{mode}: insecure TLSA"
    );
    let nodata = ok(dns, "mx.insecure.example", RecordType::Aaaa).await;
    assert_eq!(
        (&nodata.kind, nodata.security),
        (&AnswerKind::NoData, Insecure),
        "{mode}: insecure NODATA"
    );

    // Bogus: tampered and expired signatures ⇒ temporary failure.
    for name in ["bogus.example", "expired.example"] {
        temp_err(dns, name, RecordType::Mx).await;
    }
    for name in ["mx.bogus.example", "mx.expired.example"] {
        temp_err(dns, name, RecordType::A).await;
    }
    temp_err(dns, "_25._tcp.mx.bogus.example", RecordType::Tlsa).await;

    // Secure CNAME → A, and the TLSA base domain it leads to.
    let alias = ok(dns, "mxalias.secure.example", RecordType::A).await;
    assert_eq!(alias.canonical_name, "mx.secure.example", "{mode}");
    assert_eq!(
        (alias.records(), alias.security),
        (&[a("127.0.0.25")][..], Secure),
        "{mode}: CNAME→A"
    );
    let found = lookup_tlsa(
        dns,
        "mxalias.secure.example",
        &alias.canonical_name,
        alias.security,
        25,
    )
    .await
    .unwrap();
    assert!(found.has_secure_tlsa(), "{mode}: {found:?}");
    assert_eq!(
        found.base_domain, "mx.secure.example",
        "{mode}: expanded name first"
    );

    // Secure CNAME → TLSA (the TLSA owner itself is an alias).
    let tlsa = ok(dns, "_25._tcp.tlsalias.secure.example", RecordType::Tlsa).await;
    assert_eq!(tlsa.canonical_name, "_25._tcp.mx.secure.example", "{mode}");
    assert_eq!(
        (tlsa.tlsa().count(), tlsa.security),
        (1, Secure),
        "{mode}: CNAME→TLSA"
    );

    // CNAME → TLSA across zone cuts: secure.example → example. (and back),
    // and a secure CNAME into the insecure zone (the chain is insecure).
    for (name, target) in [
        ("_25._tcp.xtlsa.secure.example", "_25._tcp.mx.example"),
        ("_25._tcp.hop2.secure.example", "_25._tcp.mx.secure.example"),
    ] {
        let tlsa = ok(dns, name, RecordType::Tlsa).await;
        assert_eq!(tlsa.canonical_name, target, "{mode}");
        assert_eq!(
            (tlsa.tlsa().count(), tlsa.security),
            (1, Secure),
            "{mode}: {name}"
        );
    }
    let tlsa = ok(
        dns,
        "_25._tcp.tlsainsecure.secure.example",
        RecordType::Tlsa,
    )
    .await;
    assert_eq!(
        (tlsa.tlsa().count(), tlsa.security),
        (1, Insecure),
        "{mode}: secure→insecure CNAME"
    );
    let host = ok(dns, "xhost.secure.example", RecordType::A).await;
    assert_eq!(
        (host.canonical_name.as_str(), host.security),
        ("mx.example", Secure),
        "{mode}"
    );

    // A reply too large for UDP (TC=1) arrives complete over TCP.
    let big = ok(dns, "big.secure.example", RecordType::A).await;
    assert_eq!(
        (big.records().len(), big.security),
        (100, Secure),
        "{mode}: TCP fallback"
    );

    // CNAME at a mail domain is followed.
    let mx = ok(dns, "cnamedomain.secure.example", RecordType::Mx).await;
    assert_eq!(mx.canonical_name, "target.secure.example", "{mode}");
    assert_eq!((mx.mx().count(), mx.security), (1, Secure), "{mode}");
}

/// Routing on top of the real resolver: null MX, implicit MX, bogus.
async fn routing_matrix(dns: &dyn DnsLookup, mode: &str) {
    let plan = plan_route(dns, "secure.example", &[]).await.unwrap();
    assert_eq!(plan.source, RouteSource::Mx, "{mode}");
    assert!(plan.hosts[0].dnssec_secure(), "{mode}: {plan:?}");
    let host = &plan.hosts[0];
    let found = lookup_tlsa(
        dns,
        &host.name,
        &host.canonical_name,
        host.address_security,
        host.port,
    )
    .await
    .unwrap();
    assert!(found.has_secure_tlsa(), "{mode}");

    let plan = plan_route(dns, "insecure.example", &[]).await.unwrap();
    assert!(!plan.hosts[0].dnssec_secure(), "{mode}");

    let err = plan_route(dns, "nullmx.secure.example", &[])
        .await
        .unwrap_err();
    assert_eq!(
        err,
        RoutingError::NullMx {
            domain: "nullmx.secure.example".into()
        },
        "{mode}"
    );
    assert_eq!(err.enhanced_status(), "5.1.10");

    let plan = plan_route(dns, "nomx.secure.example", &[]).await.unwrap();
    assert_eq!(plan.source, RouteSource::ImplicitMx, "{mode}");
    assert_eq!(plan.hosts[0].name, "nomx.secure.example", "{mode}");
    assert!(
        plan.hosts[0].dnssec_secure(),
        "{mode}: secure denial + secure A"
    );

    for domain in ["bogus.example", "expired.example"] {
        let err = plan_route(dns, domain, &[]).await.unwrap_err();
        assert!(!err.is_permanent(), "{mode}: {domain}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_ad_via_unbound_passes_the_matrix() {
    init_logs();
    let Some(env) = DnsEnv::start() else { return };
    let dns = dns::connect(&env.dns_config(DnssecMode::TrustAd))
        .await
        .unwrap();
    matrix(dns.as_ref(), "trust-ad").await;
    routing_matrix(dns.as_ref(), "trust-ad").await;
    assert!(dnssec_probe(dns.as_ref(), ".").await.validating);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_against_knot_passes_the_matrix() {
    init_logs();
    let Some(env) = DnsEnv::start() else { return };
    let dns = dns::connect(&env.dns_config(DnssecMode::Validate))
        .await
        .unwrap();
    matrix(dns.as_ref(), "validate").await;
    routing_matrix(dns.as_ref(), "validate").await;
    assert!(dnssec_probe(dns.as_ref(), ".").await.validating);
}

/// `dns.dnssec = "auto"` (the default): a resolver that passes the probe
/// (the validating unbound) ⇒ `trust-ad`; one that never sets AD (knotd,
/// authoritative only) ⇒ in-process `validate`, which still proves the
/// secure TLSA secure. Either way the full matrix holds once chosen, and
/// nothing about building the resolver waits for the probe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_trusts_a_validating_resolver_and_validates_itself_behind_any_other() {
    init_logs();
    let Some(env) = DnsEnv::start() else { return };
    let mut behind_knot = env.dns_config(DnssecMode::Auto);
    behind_knot.nameservers = vec![env.knot_addr];
    for (config, want) in [
        (env.dns_config(DnssecMode::Auto), dns::ActiveMode::TrustAd),
        (behind_knot, dns::ActiveMode::Validate),
    ] {
        let dns::Resolver {
            lookup,
            mode,
            settle,
        } = dns::start(&config).await.unwrap();
        assert_eq!(mode, None, "{want}: pending until the probe has run");
        let settled = settle.await;
        assert_eq!(settled.mode, want);
        assert!(settled.probe.unwrap().validating, "{want}");
        assert!(lookup.dnssec_ready().await, "{want}");
        matrix(lookup.as_ref(), &format!("auto → {want}")).await;
        let tlsa = ok(
            lookup.as_ref(),
            "_25._tcp.mx.secure.example",
            RecordType::Tlsa,
        )
        .await;
        assert_eq!(
            (tlsa.tlsa().count(), tlsa.security),
            (1, Security::Secure),
            "{want}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_and_off_mode_report_no_validation() {
    init_logs();
    let Some(env) = DnsEnv::start() else { return };
    // `off` through the validating unbound: everything insecure.
    let off = dns::connect(&env.dns_config(DnssecMode::Off))
        .await
        .unwrap();
    let mx = ok(off.as_ref(), "secure.example", RecordType::Mx).await;
    assert_eq!(mx.security, Security::Insecure);
    assert!(!dnssec_probe(off.as_ref(), ".").await.validating);
    // `trust-ad` pointed at a non-validating server (knotd sets no AD bit).
    let mut config = env.dns_config(DnssecMode::TrustAd);
    config.nameservers = vec![env.knot_addr];
    let plain = dns::connect(&config).await.unwrap();
    let probe = dnssec_probe(plain.as_ref(), ".").await;
    assert!(!probe.validating, "{probe:?}");
    // An unreachable resolver is a temporary failure, not a crash; a dead
    // first server falls through to the next one.
    let dead: std::net::SocketAddr = "127.0.53.3:9".parse().unwrap();
    let short = std::time::Duration::from_millis(300);
    let only_dead = dns::TrustAdResolver::new(vec![dead], short, dns::AdMode::TrustAd).unwrap();
    temp_err(&only_dead, "secure.example", RecordType::Mx).await;
    let servers = vec![dead, env.unbound_addr];
    let second = dns::TrustAdResolver::new(servers, short, dns::AdMode::TrustAd).unwrap();
    let mx = ok(&second, "secure.example", RecordType::Mx).await;
    assert_eq!(mx.security, Security::Secure);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_records_are_served_and_signed() {
    init_logs();
    use crate::support::dnsenv::Zone;
    let port = 2525;
    let Some(env) = DnsEnv::builder()
        .record(Zone::Secure, "extra 60 IN A 127.0.0.77")
        .record(Zone::Secure, "shop MX 10 smtp.shop")
        .record(Zone::Secure, "smtp.shop A 127.0.0.1")
        .record(
            Zone::Secure,
            &format!("_{port}._tcp.smtp.shop TLSA 3 1 1 {TLSA_HEX}"),
        )
        .start()
    else {
        return;
    };
    assert!(
        env.trust_anchor.starts_with(env.dir()),
        "everything lives in the temp dir"
    );
    let dns: Arc<dyn DnsLookup> = dns::connect(&env.dns_config(DnssecMode::TrustAd))
        .await
        .unwrap();
    let answer = ok(dns.as_ref(), "extra.secure.example", RecordType::A).await;
    assert_eq!(
        (answer.records(), answer.security),
        (&[a("127.0.0.77")][..], Security::Secure)
    );
    // The pattern a delivery test uses: its own MX on its own port.
    let plan = plan_route_with_port(dns.as_ref(), "shop.secure.example", &[], port)
        .await
        .unwrap();
    let host = &plan.hosts[0];
    assert_eq!(
        (host.name.as_str(), host.port),
        ("smtp.shop.secure.example", port)
    );
    assert!(host.dnssec_secure());
    let tlsa = lookup_tlsa(
        dns.as_ref(),
        &host.name,
        &host.canonical_name,
        host.address_security,
        host.port,
    )
    .await
    .unwrap();
    assert!(tlsa.has_secure_tlsa(), "{tlsa:?}");
    // Dropping the environment kills both servers.
    let (knot, unbound) = (env.knot_addr, env.unbound_addr);
    drop(env);
    for server in [knot, unbound] {
        let probe = dns::TrustAdResolver::new(
            vec![server],
            std::time::Duration::from_millis(300),
            dns::AdMode::Off,
        )
        .unwrap();
        temp_err(&probe, "secure.example", RecordType::Mx).await;
    }
}

/// Wildcard-synthesised answers (RFC 4592) in `validate` mode, NSEC and
/// NSEC3 zones, talking to knotd directly and through unbound: TLSA asked
/// directly and behind a secure CNAME, A and MX (one label and two labels
/// below the wildcard's parent) and wildcard NODATA all come back secure, as
/// unbound (trust-ad) says. hickory 0.26.3 alone calls the one-label NSEC
/// expansions and every wildcard behind a CNAME bogus; `dns::wildcard`
/// checks those proofs itself (RFC 4035 §5.3.4, RFC 5155 §8.8). Through a
/// peer that strips the proofs, the same answers are bogus.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_proves_wildcard_expansions() {
    use crate::support::strip_proxy::StripProxy;
    init_logs();
    let Some(env) = DnsEnv::start() else { return };
    let Some(proxy) = StripProxy::start(env.knot_addr) else {
        return;
    };
    let trust_ad = dns::connect(&env.dns_config(DnssecMode::TrustAd))
        .await
        .unwrap();
    let direct = dns::connect(&env.dns_config(DnssecMode::Validate))
        .await
        .unwrap();
    let mut config = env.dns_config(DnssecMode::Validate);
    config.nameservers = vec![env.unbound_addr];
    let behind = dns::connect(&config).await.unwrap();
    config.nameservers = vec![proxy.addr];
    let stripped = dns::connect(&config).await.unwrap();
    for zone in ["secure.example", "nsec3.example"] {
        for (name, rtype, canonical, kind) in [
            (
                "_25._tcp.wild",
                RecordType::Tlsa,
                "_25._tcp.wild",
                "records",
            ),
            (
                "_25._tcp.xwild",
                RecordType::Tlsa,
                "_25._tcp.wild",
                "records",
            ),
            ("a.wc", RecordType::A, "a.wc", "records"),
            ("deep.er.wc", RecordType::A, "deep.er.wc", "records"),
            ("a.wc", RecordType::Mx, "a.wc", "records"),
            ("a.wc", RecordType::Aaaa, "a.wc", "nodata"),
        ] {
            let name = format!("{name}.{zone}");
            let want = (kind, Security::Secure, format!("{canonical}.{zone}"));
            for (label, dns) in [
                ("trust-ad", &trust_ad),
                ("validate direct", &direct),
                ("validate behind unbound", &behind),
            ] {
                let a = ok(dns.as_ref(), &name, rtype).await;
                assert_eq!(
                    (a.kind.as_str(), a.security, a.canonical_name),
                    want.clone(),
                    "{label}: {name} {rtype}"
                );
            }
            let err = temp_err(stripped.as_ref(), &name, rtype).await;
            assert!(
                matches!(err, DnsError::Bogus { .. }),
                "without the proof: {name} {rtype}: {err}"
            );
        }
    }
    // Plain (non-wildcard) CNAME → TLSA through unbound: secure as before.
    for name in [
        "_25._tcp.tlsalias.secure.example",
        "_25._tcp.xtlsa.secure.example",
        "_25._tcp.hop2.secure.example",
    ] {
        let answer = ok(behind.as_ref(), name, RecordType::Tlsa).await;
        assert_eq!(
            (answer.tlsa().count(), answer.security),
            (1, Security::Secure),
            "{name}"
        );
    }
}

/// `dns.trust_anchor` as DS records (README.md: `dns.trust_anchor`): at start the DNSKEYs
/// are fetched from knotd and matched to the DS; validation then passes the
/// whole matrix (secure answers secure, bogus ⇒ temporary failure). A DS
/// that matches no key, or no server to fetch from, stops the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_with_a_ds_trust_anchor() {
    init_logs();
    let Some(env) = DnsEnv::start() else { return };
    let ds = std::fs::read_to_string(env.root_ds()).unwrap();
    assert!(ds.contains("DS"), "{ds}");
    let mut config = env.dns_config(DnssecMode::Validate);
    config.trust_anchor = Some(env.root_ds());
    let dns = dns::connect(&config).await.unwrap();
    matrix(dns.as_ref(), "validate (DS anchor)").await;
    assert!(dnssec_probe(dns.as_ref(), ".").await.validating);

    // DS and DNSKEY lines mixed with comments in one file.
    let key = std::fs::read_to_string(&env.trust_anchor).unwrap();
    let mixed = env.dir().join("mixed.anchor");
    std::fs::write(&mixed, format!("; test root\n{ds}\n; its key\n{key}\n")).unwrap();
    config.trust_anchor = Some(mixed);
    let dns = dns::connect(&config).await.unwrap();
    let mx = ok(dns.as_ref(), "secure.example", RecordType::Mx).await;
    assert_eq!(mx.security, Security::Secure);
    temp_err(dns.as_ref(), "bogus.example", RecordType::Mx).await;

    // The same DS with one digest octet changed matches nothing.
    let fields: Vec<&str> = ds.split_whitespace().collect();
    let digest = fields.last().unwrap();
    let flipped = format!(
        "{}{}",
        if digest.starts_with('0') { "1" } else { "0" },
        &digest[1..]
    );
    let wrong = env.dir().join("wrong.ds");
    std::fs::write(&wrong, ds.replace(digest, &flipped)).unwrap();
    config.trust_anchor = Some(wrong.clone());
    let err = dns::connect(&config)
        .await
        .err()
        .expect("a non-matching DS must stop the start");
    let text = err.to_string();
    assert!(matches!(err, DnsError::Setup { .. }), "{text}");
    assert!(
        text.contains("wrong.ds") && text.contains("no DNSKEY"),
        "{text}"
    );

    // No server answering the DNSKEY query: a start-up error too.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    config.trust_anchor = Some(env.root_ds());
    config.nameservers = vec![silent.local_addr().unwrap()];
    let err = dns::ValidatingResolver::new(
        &config.nameservers,
        config.trust_anchor.as_deref(),
        std::time::Duration::from_millis(300),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, DnsError::Setup { .. }), "{err}");
    assert!(err.to_string().contains("root.ds"), "{err}");
}

/// A negative answer from a signed zone whose proof was stripped on the way
/// (no SOA, no NSEC/NSEC3: a man in the middle, or a broken middlebox) is
/// bogus — a temporary failure — never "insecure", which would switch DANE
/// off for the host. Positive answers still validate through the same
/// stripping peer, so the failure is about the missing proof alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_calls_a_stripped_denial_bogus_not_insecure() {
    use crate::support::strip_proxy::StripProxy;
    init_logs();
    let Some(env) = DnsEnv::start() else { return };
    let Some(proxy) = StripProxy::start(env.knot_addr) else {
        return;
    };
    let mut config = env.dns_config(DnssecMode::Validate);
    config.nameservers = vec![proxy.addr];
    let dns = dns::connect(&config).await.unwrap();
    let addr = ok(dns.as_ref(), "mx.secure.example", RecordType::A).await;
    assert_eq!(
        addr.security,
        Security::Secure,
        "positive answers need no authority"
    );
    for (name, rtype) in [
        ("nope.secure.example", RecordType::A),             // NXDOMAIN
        ("mx.secure.example", RecordType::Aaaa),            // NODATA
        ("_25._tcp.nomx.secure.example", RecordType::Tlsa), // NXDOMAIN, a TLSA lookup
        ("nomx.secure.example", RecordType::Mx),            // NODATA, implicit MX
    ] {
        let err = temp_err(dns.as_ref(), name, rtype).await;
        assert!(
            matches!(err, DnsError::Bogus { .. }),
            "{name} {rtype}: {err}"
        );
    }
}
