//! Reuse keys: equal only where every input of the TLS decision is equal.

use super::*;
use crate::dane::DanePolicy;
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
