//! Grouping by destination: the MX host set as a sorted set, next hops,
//! failures kept apart, and each domain's policy and limit.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::*;
use crate::config::{DomainPattern, NextHop};
use crate::delivery::attempt::MAX_HOSTS;
use crate::delivery::session::SessionOptions;
use crate::dns::{AnswerKind, FakeDns, Mx, Record};
use crate::smtp::client::Timeouts;
use Security::{Insecure, Secure};

fn mx(security: Security, mx: &[(u16, &str)]) -> Result<Answer, DnsError> {
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

fn route(domain: &str, tls: Option<TlsLevel>, hop: Option<NextHop>, max: Option<usize>) -> Route {
    Route {
        domain: DomainPattern::Exact(domain.into()),
        tls,
        next_hop: hop,
        max_connections: max,
    }
}

fn site(answer: &Result<Answer, DnsError>, seed: u64) -> (Site, Security) {
    site_of(
        "example.com",
        None,
        Some(answer),
        25,
        &mut StdRng::seed_from_u64(seed),
    )
}

fn hosts(list: &[(u16, &str)]) -> Site {
    Site::Hosts {
        hosts: list.iter().map(|(p, n)| (*p, (*n).to_string())).collect(),
        port: 25,
    }
}

#[test]
fn the_mx_set_is_sorted_whatever_the_record_order_and_shuffle() {
    let want = hosts(&[(10, "a.mx.net"), (10, "b.mx.net"), (20, "backup.mx.net")]);
    let orders: [&[(u16, &str)]; 3] = [
        &[(10, "a.mx.net"), (10, "b.mx.net"), (20, "backup.mx.net")],
        &[(20, "backup.mx.net"), (10, "b.mx.net"), (10, "a.mx.net")],
        &[(10, "B.MX.net."), (20, "backup.mx.net"), (10, "a.mx.net")],
    ];
    for (i, order) in orders.into_iter().enumerate() {
        // Many seeds: the RFC 5321 §5.1 shuffle among equals must not show.
        for seed in 0..20 {
            assert_eq!(
                site(&mx(Secure, order), seed),
                (want.clone(), Secure),
                "{i}"
            );
        }
    }
}

#[test]
fn preference_and_port_are_part_of_the_site() {
    let a = site(&mx(Insecure, &[(10, "a.mx.net"), (20, "b.mx.net")]), 1).0;
    let b = site(&mx(Insecure, &[(20, "a.mx.net"), (10, "b.mx.net")]), 1).0;
    assert_ne!(
        a, b,
        "same hosts, other preferences: another order of tries"
    );
    let other_port = site_of(
        "example.com",
        None,
        Some(&mx(Insecure, &[(10, "a.mx.net"), (20, "b.mx.net")])),
        2525,
        &mut rand::rng(),
    )
    .0;
    assert_ne!(a, other_port);
    let subset = site(&mx(Insecure, &[(10, "a.mx.net")]), 1).0;
    assert_ne!(a, subset);
}

#[test]
fn the_mx_rrset_security_comes_back_per_domain() {
    let s = site(&mx(Secure, &[(10, "mx.net")]), 1);
    let i = site(&mx(Insecure, &[(10, "mx.net")]), 1);
    assert_eq!(s.0, i.0, "one site");
    assert_eq!((s.1, i.1), (Secure, Insecure));
}

#[test]
fn next_hop_routes_are_their_host_and_port() {
    let by_name = |d: &str, port| {
        let hop = NextHop {
            host: NextHopHost::Name("Smart.Host.example.".into()),
            port,
        };
        site_of(
            d,
            Some(&route(d, None, Some(hop), None)),
            None,
            25,
            &mut rand::rng(),
        )
    };
    assert_eq!(
        by_name("a.example", 587),
        (Site::NextHop("smart.host.example:587".into()), Secure)
    );
    assert_eq!(by_name("a.example", 587).0, by_name("b.example", 587).0);
    assert_ne!(by_name("a.example", 587).0, by_name("a.example", 25).0);
    let ip = NextHop {
        host: NextHopHost::Ip("2001:db8::7".parse().unwrap()),
        port: 25,
    };
    let r = route("c.example", None, Some(ip), None);
    assert_eq!(
        site_of("c.example", Some(&r), None, 25, &mut rand::rng()).0,
        Site::NextHop("[2001:db8::7]:25".into())
    );
}

#[test]
fn failures_and_null_mx_stay_alone() {
    let servfail = Err(DnsError::ServFail {
        name: "example.com".into(),
        rtype: RecordType::Mx,
    });
    let null = mx(Secure, &[(0, "")]);
    for answer in [servfail, null] {
        assert_eq!(
            site(&answer, 1),
            (Site::Domain("example.com".into()), Insecure)
        );
    }
}

fn options(routes: Vec<Route>) -> EngineOptions {
    EngineOptions {
        session: SessionOptions {
            helo_name: "relay.test".into(),
            connect_timeout: Duration::from_secs(1),
            timeouts: Timeouts::default(),
            tls_configs: Default::default(),
        },
        tls: TlsLevel::Dane,
        dane_insecure_mx: Default::default(),
        routes,
        mx_port: 25,
        max_hosts: MAX_HOSTS,
        sts: None,
    }
}

#[tokio::test]
async fn resolve_takes_policy_and_limit_per_domain() {
    let dns = FakeDns::new();
    dns.mx("a.example", Secure, &[(10, "mx.provider.net")]);
    dns.mx("b.example", Insecure, &[(10, "MX.provider.net.")]);
    dns.servfail("broken.example", RecordType::Mx);
    let opts = options(vec![route("b.example", Some(TlsLevel::May), None, Some(3))]);
    let a = resolve(&dns, &opts, 16, "A.example.").await;
    let b = resolve(&dns, &opts, 16, "b.example").await;
    assert_eq!(a.site, b.site);
    assert_eq!((a.limit, b.limit), (16, 3));
    assert_eq!(
        (a.policy, b.policy),
        (
            DomainPolicy {
                level: TlsLevel::Dane,
                mx_security: Secure
            },
            DomainPolicy {
                level: TlsLevel::May,
                mx_security: Insecure
            }
        )
    );
    let broken = resolve(&dns, &opts, 16, "broken.example").await;
    assert_eq!(broken.site, Site::Domain("broken.example".into()));
}
