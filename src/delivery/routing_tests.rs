//! Table tests for the routing decisions, with the in-process fake resolver.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::net::IpAddr;

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::*;
use crate::config::NextHop;
use crate::dns::{FakeDns, Mx, Record};
use Security::{Insecure, Secure};

fn mx_answer(security: Security, mx: &[(u16, &str)]) -> Result<Answer, DnsError> {
    Ok(Answer {
        name: "example.com".into(),
        rtype: RecordType::Mx,
        canonical_name: "example.com".into(),
        kind: AnswerKind::Records(
            mx.iter()
                .map(|(p, e)| {
                    Record::Mx(Mx {
                        preference: *p,
                        exchange: (*e).into(),
                    })
                })
                .collect(),
        ),
        security,
        ttl: 300,
    })
}

fn denial(kind: AnswerKind, security: Security) -> Result<Answer, DnsError> {
    Ok(Answer {
        name: "example.com".into(),
        rtype: RecordType::Mx,
        canonical_name: "example.com".into(),
        kind,
        security,
        ttl: 300,
    })
}

fn servfail() -> Result<Answer, DnsError> {
    Err(DnsError::ServFail {
        name: "example.com".into(),
        rtype: RecordType::Mx,
    })
}

fn names(t: &MxTargets) -> Vec<&str> {
    t.hosts.iter().map(|(n, _)| n.as_str()).collect()
}

#[test]
fn mx_decision_table() {
    let rng = &mut StdRng::seed_from_u64(7);
    // (case, MX answer, expected hosts or expected error status)
    type Case = (
        &'static str,
        Result<Answer, DnsError>,
        Result<Vec<&'static str>, &'static str>,
    );
    let cases: Vec<Case> = vec![
        (
            "preference order",
            mx_answer(
                Secure,
                &[(20, "b.example"), (10, "a.example"), (30, "c.example")],
            ),
            Ok(vec!["a.example", "b.example", "c.example"]),
        ),
        (
            "single MX",
            mx_answer(Insecure, &[(5, "mx.example")]),
            Ok(vec!["mx.example"]),
        ),
        (
            "no MX RRset: implicit MX",
            denial(AnswerKind::NoData, Secure),
            Ok(vec!["example.com"]),
        ),
        ("null MX", mx_answer(Secure, &[(0, "")]), Err("5.1.10")),
        (
            "null MX mixed with real MX: the null one is ignored",
            mx_answer(Secure, &[(0, ""), (10, "mx.example")]),
            Ok(vec!["mx.example"]),
        ),
        (
            "NXDOMAIN",
            denial(AnswerKind::NxDomain, Secure),
            Err("5.1.2"),
        ),
        (
            "SERVFAIL: temporary, never implicit MX",
            servfail(),
            Err("4.4.3"),
        ),
        (
            "bogus: temporary",
            Err(DnsError::Bogus {
                name: "example.com".into(),
                rtype: RecordType::Mx,
                detail: "x".into(),
            }),
            Err("4.4.3"),
        ),
    ];
    for (case, answer, expected) in cases {
        let got = mx_targets("example.com", &answer, rng);
        match (got, expected) {
            (Ok(t), Ok(hosts)) => assert_eq!(names(&t), hosts, "{case}"),
            (Err(e), Err(status)) => {
                assert_eq!(e.enhanced_status(), status, "{case}");
                assert_eq!(e.is_permanent(), status.starts_with('5'), "{case}");
            }
            (got, expected) => panic!("{case}: got {got:?}, expected {expected:?}"),
        }
    }
}

#[test]
fn mx_security_and_implicit_mx_carry_the_rrset_status() {
    let rng = &mut StdRng::seed_from_u64(1);
    let t = mx_targets("example.com", &mx_answer(Secure, &[(1, "mx.example")]), rng).unwrap();
    assert_eq!((t.source, t.security), (RouteSource::Mx, Secure));
    let t = mx_targets("example.com", &denial(AnswerKind::NoData, Insecure), rng).unwrap();
    assert_eq!((t.source, t.security), (RouteSource::ImplicitMx, Insecure));
}

#[test]
fn equal_preferences_are_shuffled_and_never_cross_levels() {
    let answer = mx_answer(
        Secure,
        &[
            (10, "a.example"),
            (10, "b.example"),
            (10, "c.example"),
            (20, "z.example"),
        ],
    );
    let mut orders = HashSet::new();
    for seed in 0..200 {
        let t = mx_targets("example.com", &answer, &mut StdRng::seed_from_u64(seed)).unwrap();
        let n = names(&t);
        assert_eq!(n[3], "z.example", "preference 20 always last");
        orders.insert(n[..3].join(","));
    }
    assert_eq!(
        orders.len(),
        6,
        "all permutations of the equal MX appear: {orders:?}"
    );
}

fn addr(
    name: &str,
    rtype: RecordType,
    security: Security,
    ips: &[&str],
) -> Result<Answer, DnsError> {
    let records: Vec<Record> = ips
        .iter()
        .map(|i| match i.parse::<IpAddr>().unwrap() {
            IpAddr::V4(a) => Record::A(a),
            IpAddr::V6(a) => Record::Aaaa(a),
        })
        .collect();
    Ok(Answer {
        name: name.into(),
        rtype,
        canonical_name: name.into(),
        kind: if records.is_empty() {
            AnswerKind::NoData
        } else {
            AnswerKind::Records(records)
        },
        security,
        ttl: 60,
    })
}

#[test]
fn host_address_table() {
    let h = "mx.example";
    let fail = || {
        Err(DnsError::ServFail {
            name: h.into(),
            rtype: RecordType::Aaaa,
        })
    };
    // (case, A, AAAA, expected (addresses, security) or error)
    let cases: Vec<(&str, _, _, Option<(usize, Security)>)> = vec![
        (
            "both secure",
            addr(h, RecordType::A, Secure, &["192.0.2.1"]),
            addr(h, RecordType::Aaaa, Secure, &["2001:db8::1"]),
            Some((2, Secure)),
        ),
        (
            "A secure, AAAA secure NODATA",
            addr(h, RecordType::A, Secure, &["192.0.2.1"]),
            addr(h, RecordType::Aaaa, Secure, &[]),
            Some((1, Secure)),
        ),
        (
            "A secure, AAAA insecure: insecure",
            addr(h, RecordType::A, Secure, &["192.0.2.1"]),
            addr(h, RecordType::Aaaa, Insecure, &["2001:db8::1"]),
            Some((2, Insecure)),
        ),
        (
            "A insecure",
            addr(h, RecordType::A, Insecure, &["192.0.2.1"]),
            addr(h, RecordType::Aaaa, Secure, &[]),
            Some((1, Insecure)),
        ),
        (
            "AAAA fails, A secure stands",
            addr(h, RecordType::A, Secure, &["192.0.2.1"]),
            fail(),
            Some((1, Secure)),
        ),
        (
            "no addresses at all",
            addr(h, RecordType::A, Secure, &[]),
            addr(h, RecordType::Aaaa, Secure, &[]),
            Some((0, Insecure)),
        ),
        (
            "nothing and a failure: error",
            addr(h, RecordType::A, Secure, &[]),
            fail(),
            None,
        ),
    ];
    for (case, a, aaaa, expected) in cases {
        match (host_addresses(h, &a, &aaaa), expected) {
            (Ok(got), Some((n, sec))) => {
                assert_eq!((got.addresses.len(), got.security), (n, sec), "{case}");
                if n > 0 {
                    assert!(got.addresses[0].is_ipv4(), "{case}: IPv4 first");
                }
            }
            (Err(e), None) => assert!(e.is_temporary(), "{case}"),
            (got, expected) => panic!("{case}: got {got:?}, expected {expected:?}"),
        }
    }
}

fn route(pattern: DomainPattern, tls: Option<TlsLevel>, next_hop: Option<NextHop>) -> Route {
    Route {
        domain: pattern,
        tls,
        next_hop,
        max_connections: None,
        message_rate: None,
        connection_rate: None,
    }
}

#[test]
fn route_matching() {
    let routes = vec![
        route(
            DomainPattern::Exact("example.com".into()),
            Some(TlsLevel::DaneOnly),
            None,
        ),
        route(
            DomainPattern::Subdomains("example.com".into()),
            Some(TlsLevel::Encrypt),
            None,
        ),
        route(
            DomainPattern::Subdomains("example.org".into()),
            Some(TlsLevel::May),
            None,
        ),
    ];
    let tls = |d: &str| match_route(&routes, d).and_then(|r| r.tls);
    assert_eq!(tls("example.com"), Some(TlsLevel::DaneOnly));
    assert_eq!(tls("mail.example.com"), Some(TlsLevel::Encrypt));
    assert_eq!(tls("a.b.example.com"), Some(TlsLevel::Encrypt));
    assert_eq!(
        tls("example.org"),
        None,
        "*.example.org does not match the apex"
    );
    assert_eq!(
        tls("badexample.com"),
        None,
        "suffix must fall on a label boundary"
    );
    assert_eq!(tls("example.net"), None);
}

fn fake_secure_domain() -> FakeDns {
    let dns = FakeDns::new();
    dns.mx(
        "example.com",
        Secure,
        &[(10, "mx1.example.com"), (20, "mx2.example.net")],
    );
    dns.a("mx1.example.com", Secure, &["192.0.2.1"]);
    dns.nodata("mx1.example.com", RecordType::Aaaa, Secure);
    dns.a("mx2.example.net", Insecure, &["192.0.2.2"]);
    dns.aaaa("mx2.example.net", Insecure, &["2001:db8::2"]);
    dns
}

#[tokio::test]
async fn plan_carries_mx_and_address_security_per_host() {
    let dns = fake_secure_domain();
    let plan = plan_route(&dns, "Example.COM.", &[]).await.unwrap();
    assert_eq!(plan.domain, "example.com");
    assert_eq!(plan.source, RouteSource::Mx);
    let hosts: Vec<_> = plan
        .hosts
        .iter()
        .map(|h| {
            (
                h.name.as_str(),
                h.port,
                h.mx_security,
                h.address_security,
                h.addresses.len(),
                h.dnssec_secure(),
            )
        })
        .collect();
    assert_eq!(
        hosts,
        vec![
            ("mx1.example.com", 25, Secure, Secure, 1, true),
            ("mx2.example.net", 25, Secure, Insecure, 2, false),
        ]
    );
}

#[tokio::test]
async fn mx_port_applies_to_mx_hosts_only() {
    let dns = fake_secure_domain();
    dns.a("smarthost.example.net", Secure, &["192.0.2.50"]);
    let plan = plan_route_with_port(&dns, "example.com", &[], 2525)
        .await
        .unwrap();
    assert!(plan.hosts.iter().all(|h| h.port == 2525));
    let routes = vec![route(
        DomainPattern::Exact("example.com".into()),
        None,
        Some(NextHop {
            host: NextHopHost::Name("smarthost.example.net".into()),
            port: 587,
        }),
    )];
    let plan = plan_route_with_port(&dns, "example.com", &routes, 2525)
        .await
        .unwrap();
    assert_eq!(plan.hosts[0].port, 587);
}

#[tokio::test]
async fn insecure_mx_makes_every_host_insecure() {
    let dns = fake_secure_domain();
    dns.mx("example.com", Insecure, &[(10, "mx1.example.com")]);
    let plan = plan_route(&dns, "example.com", &[]).await.unwrap();
    assert!(!plan.hosts[0].dnssec_secure());
    assert_eq!(plan.hosts[0].address_security, Secure);
}

#[tokio::test]
async fn servfail_on_mx_defers_without_trying_the_domain_address() {
    let dns = FakeDns::new();
    dns.servfail("example.com", RecordType::Mx);
    dns.a("example.com", Secure, &["192.0.2.9"]);
    let err = plan_route(&dns, "example.com", &[]).await.unwrap_err();
    assert!(!err.is_permanent());
    assert_eq!(
        dns.queries(),
        vec![("example.com".to_string(), RecordType::Mx)]
    );
}

#[tokio::test]
async fn implicit_mx_and_cname_at_the_domain() {
    let dns = FakeDns::new();
    dns.nodata("example.com", RecordType::Mx, Secure);
    dns.a("example.com", Secure, &["192.0.2.9"]);
    let plan = plan_route(&dns, "example.com", &[]).await.unwrap();
    assert_eq!(plan.source, RouteSource::ImplicitMx);
    assert_eq!(plan.hosts[0].name, "example.com");
    assert!(plan.hosts[0].dnssec_secure());

    // CNAME at the domain: MX of the target.
    let dns = fake_secure_domain();
    dns.cname("alias.example", Secure, "example.com");
    let plan = plan_route(&dns, "alias.example", &[]).await.unwrap();
    assert_eq!(plan.hosts[0].name, "mx1.example.com");
    // CNAME to a name without MX: implicit MX at the canonical name.
    dns.cname("www.example", Insecure, "mx1.example.com");
    let plan = plan_route(&dns, "www.example", &[]).await.unwrap();
    assert_eq!(plan.source, RouteSource::ImplicitMx);
    assert_eq!(plan.hosts[0].name, "mx1.example.com");
    assert_eq!(
        plan.hosts[0].mx_security, Insecure,
        "an insecure CNAME taints the chain"
    );
}

#[tokio::test]
async fn host_failures() {
    // One host fails temporarily: the other is still a candidate.
    let dns = fake_secure_domain();
    dns.servfail("mx1.example.com", RecordType::A);
    dns.servfail("mx1.example.com", RecordType::Aaaa);
    let plan = plan_route(&dns, "example.com", &[]).await.unwrap();
    assert_eq!(plan.hosts.len(), 1);
    assert_eq!(plan.failed_hosts[0].0, "mx1.example.com");
    // Every host fails: temporary.
    dns.bogus("mx2.example.net", RecordType::A);
    dns.bogus("mx2.example.net", RecordType::Aaaa);
    assert!(!plan_route(&dns, "example.com", &[])
        .await
        .unwrap_err()
        .is_permanent());
    // No host has any address: permanent 5.4.4.
    let dns = FakeDns::new();
    dns.mx("example.com", Secure, &[(10, "mx.example.com")]);
    dns.nodata("mx.example.com", RecordType::A, Secure);
    dns.nodata("mx.example.com", RecordType::Aaaa, Secure);
    let err = plan_route(&dns, "example.com", &[]).await.unwrap_err();
    assert_eq!(err.enhanced_status(), "5.4.4");
}

#[tokio::test]
async fn next_hop_bypasses_mx() {
    let dns = fake_secure_domain();
    dns.a("smarthost.example.net", Secure, &["192.0.2.50"]);
    let routes = vec![route(
        DomainPattern::Subdomains("example.com".into()),
        Some(TlsLevel::Dane),
        Some(NextHop {
            host: NextHopHost::Name("smarthost.example.net".into()),
            port: 2525,
        }),
    )];
    let plan = plan_route(&dns, "sales.example.com", &routes)
        .await
        .unwrap();
    assert_eq!(plan.source, RouteSource::NextHop);
    assert_eq!(plan.tls, Some(TlsLevel::Dane));
    assert_eq!(plan.hosts[0].name, "smarthost.example.net");
    assert_eq!(plan.hosts[0].port, 2525);
    assert!(plan.hosts[0].dnssec_secure());
    assert!(
        !dns.queries().iter().any(|(_, t)| *t == RecordType::Mx),
        "no MX lookup"
    );

    let routes = vec![route(
        DomainPattern::Exact("example.com".into()),
        None,
        Some(NextHop {
            host: NextHopHost::Ip("192.0.2.77".parse().unwrap()),
            port: 25,
        }),
    )];
    let dns = FakeDns::new();
    let plan = plan_route(&dns, "example.com", &routes).await.unwrap();
    assert_eq!(
        plan.hosts[0].addresses,
        vec!["192.0.2.77".parse::<IpAddr>().unwrap()]
    );
    assert!(!plan.hosts[0].dnssec_secure(), "a literal IP has no DNSSEC");
    assert!(dns.queries().is_empty());
}
