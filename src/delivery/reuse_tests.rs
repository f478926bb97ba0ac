//! Reuse keys: equal only where every input of the TLS decision is equal.

use super::*;
use crate::dane::DanePolicy;
use crate::delivery::decision::{host_decision, DomainSts};
use crate::dns::{FakeDns, Tlsa};
use Security::{Insecure, Secure};

fn tlsa(byte: u8) -> Tlsa {
    Tlsa {
        usage: 3,
        selector: 1,
        matching: 1,
        data: vec![byte; 32],
    }
}

fn host(name: &str, mx: Security) -> CandidateHost {
    CandidateHost {
        name: name.into(),
        canonical_name: name.into(),
        preference: 10,
        port: 25,
        mx_security: mx,
        addresses: vec!["127.0.0.1".parse().unwrap()],
        address_security: Secure,
    }
}

fn policy(level: TlsLevel, mx_security: Security) -> DomainPolicy {
    DomainPolicy { level, mx_security }
}

/// The key of a session opened for a domain with `p` to `h`.
async fn opened(dns: &FakeDns, p: DomainPolicy, h: &CandidateHost) -> ReuseKey {
    let h = CandidateHost {
        mx_security: p.mx_security,
        ..h.clone()
    };
    let (decision, _) = host_decision(dns, DanePolicy::new(p.level), None, &h).await;
    ReuseKey::new(p.level, &h, &decision).unwrap()
}

#[tokio::test]
async fn same_policy_same_host_shares() {
    let dns = FakeDns::new();
    dns.tlsa("_25._tcp.mx.provider.net", Secure, vec![tlsa(1)]);
    let mx = host("mx.provider.net", Secure);
    for p in [
        policy(TlsLevel::Dane, Secure),
        policy(TlsLevel::Dane, Insecure),
        policy(TlsLevel::May, Insecure),
        policy(TlsLevel::None, Secure),
        policy(TlsLevel::Encrypt, Secure),
    ] {
        let session = opened(&dns, p, &mx).await;
        assert_eq!(
            key_for(&dns, p, (DanePolicy::new(p.level), None), &mx).await,
            Some(session),
            "{p:?}"
        );
    }
}

#[tokio::test]
async fn any_difference_in_the_policy_is_another_key() {
    let dns = FakeDns::new();
    dns.tlsa("_25._tcp.mx.provider.net", Secure, vec![tlsa(1)]);
    let mx = host("mx.provider.net", Secure);
    let dane = opened(&dns, policy(TlsLevel::Dane, Secure), &mx).await;
    // A domain whose MX RRset is insecure gets no DANE on the same host
    // (RFC 7672 §2.2.1): it must not ride the authenticated session.
    for other in [
        policy(TlsLevel::Dane, Insecure),
        policy(TlsLevel::DaneOnly, Secure),
        policy(TlsLevel::May, Secure),
        policy(TlsLevel::Encrypt, Secure),
        policy(TlsLevel::None, Secure),
    ] {
        assert_ne!(
            key_for(&dns, other, (DanePolicy::new(other.level), None), &mx).await,
            Some(dane.clone()),
            "{other:?}"
        );
    }
    // Same level and DNSSEC status, but the TLSA RRset changed since.
    dns.tlsa("_25._tcp.mx.provider.net", Secure, vec![tlsa(2)]);
    assert_ne!(
        key_for(
            &dns,
            policy(TlsLevel::Dane, Secure),
            (DanePolicy::new(TlsLevel::Dane), None),
            &mx
        )
        .await,
        Some(dane)
    );
}

#[tokio::test]
async fn another_host_or_port_is_another_key() {
    let dns = FakeDns::new();
    let p = policy(TlsLevel::May, Insecure);
    let a = opened(&dns, p, &host("a.provider.net", Insecure)).await;
    let b = opened(&dns, p, &host("b.provider.net", Insecure)).await;
    assert_ne!(a, b);
    let mut other_port = host("a.provider.net", Insecure);
    other_port.port = 2525;
    assert_ne!(
        key_for(&dns, p, (DanePolicy::new(p.level), None), &other_port).await,
        Some(a)
    );
}

#[tokio::test]
async fn a_deferring_decision_has_no_key() {
    let dns = FakeDns::new();
    dns.servfail("_25._tcp.mx.provider.net", crate::dns::RecordType::Tlsa);
    let mx = host("mx.provider.net", Secure);
    assert_eq!(
        key_for(
            &dns,
            policy(TlsLevel::Dane, Secure),
            (DanePolicy::new(TlsLevel::Dane), None),
            &mx
        )
        .await,
        None
    );
}

fn sts(mode: &str, id: &str, mx: &str) -> DomainSts {
    let text = format!("version: STSv1\nmode: {mode}\nmx: {mx}\nmax_age: 86400\n");
    DomainSts {
        active: crate::sts::Active {
            domain: "example.com".into(),
            id: id.into(),
            policy: crate::sts::policy::parse_policy(&text).unwrap(),
            text,
            fetched_at: 0,
        },
        roots: std::sync::Arc::new(rustls::RootCertStore::empty()),
    }
}

#[tokio::test]
async fn an_mta_sts_policy_is_part_of_the_key() {
    // No TLSA: DANE does not apply, MTA-STS decides (RFC 8461 §2).
    let dns = FakeDns::new();
    let mx = host("mx.provider.net", Insecure);
    let p = policy(TlsLevel::Dane, Insecure);
    let route = (DanePolicy::new(p.level), None);
    let enforce = sts("enforce", "1", "mx.provider.net");
    let opened_enforce = key_for_sts(&dns, p, route, &mx, Some(&enforce)).await;
    assert!(opened_enforce.is_some());
    // A domain without a policy does not ride an enforce session, and back.
    let plain = key_for(&dns, p, route, &mx).await;
    assert_ne!(plain, opened_enforce);
    // The same policy (same mode and id) shares; another id does not.
    assert_eq!(
        key_for_sts(&dns, p, route, &mx, Some(&enforce.clone())).await,
        opened_enforce
    );
    let newer = sts("enforce", "2", "mx.provider.net");
    assert_ne!(
        key_for_sts(&dns, p, route, &mx, Some(&newer)).await,
        opened_enforce
    );
    let testing = sts("testing", "1", "mx.provider.net");
    assert_ne!(
        key_for_sts(&dns, p, route, &mx, Some(&testing)).await,
        opened_enforce
    );
    // A host the enforce policy does not list is never shared.
    let elsewhere = sts("enforce", "1", "mx.other.net");
    assert_eq!(
        key_for_sts(&dns, p, route, &mx, Some(&elsewhere)).await,
        None
    );
}
