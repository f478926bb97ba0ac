use super::*;
use Security::{Insecure, Secure};

fn good() -> TlsaRecord {
    TlsaRecord {
        usage: 3,
        selector: 1,
        matching: 1,
        data: vec![7; 32],
    }
}

fn pkix() -> TlsaRecord {
    TlsaRecord { usage: 1, ..good() }
}

fn found(records: Vec<TlsaRecord>) -> TlsaInput {
    TlsaInput::Records {
        secure: true,
        records,
        base_domain: "MX.example.net.".into(),
    }
}

fn host(mx: Security, host: Security, tlsa: TlsaInput) -> HostDns<'static> {
    HostDns {
        mx_host: "mx.example.net",
        nexthop: Some("example.com"),
        mx,
        host,
        tlsa,
    }
}

fn at(level: TlsLevel) -> impl Fn(Security, Security, TlsaInput) -> Decision {
    move |mx, h, t| decide(DanePolicy::new(level), host(mx, h, t))
}

fn may_policy(level: TlsLevel) -> impl Fn(Security, Security, TlsaInput) -> Decision {
    move |mx, h, t| {
        let policy = DanePolicy {
            level,
            insecure_mx: InsecureMxPolicy::May,
        };
        decide(policy, host(mx, h, t))
    }
}

fn target(names: &[&str], assurance: Assurance) -> DaneTarget {
    DaneTarget {
        base_domain: "mx.example.net".into(),
        reference_names: names.iter().map(|n| n.to_string()).collect(),
        records: vec![good()],
        assurance,
    }
}

#[test]
fn non_dane_levels_ignore_dns() {
    for lookup in [found(vec![good()]), TlsaInput::Failed("x".into())] {
        let d = |l| at(l)(Secure, Secure, lookup.clone());
        assert_eq!(d(TlsLevel::None), Decision::Plaintext);
        assert_eq!(d(TlsLevel::May), Decision::Opportunistic);
        assert_eq!(
            d(TlsLevel::Encrypt),
            Decision::TlsRequired(MandatoryTls::EncryptLevel)
        );
    }
}

#[test]
fn dane_level_table() {
    let d = at(TlsLevel::Dane);
    let auth = Decision::Authenticate(target(
        &["mx.example.net", "example.com"],
        Assurance::Verified,
    ));
    assert_eq!(d(Secure, Secure, found(vec![good(), pkix()])), auth);
    assert_eq!(
        d(Secure, Secure, found(vec![pkix()])),
        Decision::TlsRequired(MandatoryTls::AllTlsaUnusable)
    );
    assert_eq!(
        d(Secure, Secure, TlsaInput::Failed("SERVFAIL".into())),
        Decision::Defer(DeferReason::TlsaLookupFailed("SERVFAIL".into()))
    );
    assert_eq!(
        d(Secure, Secure, TlsaInput::NoRecords { secure: true }),
        Decision::Opportunistic
    );
    let insecure = TlsaInput::Records {
        secure: false,
        records: vec![good()],
        base_domain: "mx.example.net".into(),
    };
    assert_eq!(d(Secure, Secure, insecure), Decision::Opportunistic);
    assert_eq!(d(Secure, Secure, found(vec![])), Decision::Opportunistic);
    // No TLSA lookup matters for an insecure host (§2.2.2).
    assert_eq!(
        d(Secure, Insecure, TlsaInput::Failed("x".into())),
        Decision::Opportunistic
    );
    assert_eq!(
        d(Insecure, Insecure, found(vec![good()])),
        Decision::Opportunistic
    );
    assert_eq!(
        d(Secure, Insecure, found(vec![good()])),
        Decision::Opportunistic
    );
}

#[test]
fn insecure_mx_with_a_secure_host_is_dane_trusted_in_every_tlsa_case() {
    // RFC 7672 §2.2.1, Postfix's smtp_tls_dane_insecure_mx_policy = dane:
    // as under a secure MX, but trusted and without the next-hop domain.
    for level in [TlsLevel::Dane, TlsLevel::DaneOnly] {
        let d = at(level);
        assert_eq!(
            d(Insecure, Secure, found(vec![good()])),
            Decision::Authenticate(target(&["mx.example.net"], Assurance::Trusted)),
            "{level}"
        );
        assert!(matches!(
            d(Insecure, Secure, TlsaInput::Failed("timeout".into())),
            Decision::Defer(DeferReason::TlsaLookupFailed(_))
        ));
    }
    let d = at(TlsLevel::Dane);
    assert_eq!(
        d(Insecure, Secure, found(vec![pkix()])),
        Decision::TlsRequired(MandatoryTls::AllTlsaUnusable)
    );
    assert_eq!(
        d(Insecure, Secure, TlsaInput::NoRecords { secure: true }),
        Decision::Opportunistic
    );
    let d = at(TlsLevel::DaneOnly);
    assert_eq!(
        d(Insecure, Secure, TlsaInput::NoRecords { secure: true }),
        Decision::Defer(DeferReason::NoSecureTlsa)
    );
    assert_eq!(
        d(Insecure, Insecure, found(vec![good()])),
        Decision::Defer(DeferReason::HostInsecure)
    );
}

#[test]
fn insecure_mx_under_may_policy_turns_dane_off() {
    let d = may_policy(TlsLevel::Dane);
    assert_eq!(
        d(Insecure, Secure, found(vec![good()])),
        Decision::Opportunistic
    );
    assert_eq!(
        d(Insecure, Secure, TlsaInput::Failed("x".into())),
        Decision::Opportunistic
    );
    // A secure MX is unaffected by the insecure-MX policy.
    assert!(matches!(
        d(Secure, Secure, found(vec![good()])),
        Decision::Authenticate(DaneTarget {
            assurance: Assurance::Verified,
            ..
        })
    ));
    let d = may_policy(TlsLevel::DaneOnly);
    assert_eq!(
        d(Insecure, Secure, found(vec![good()])),
        Decision::Defer(DeferReason::MxInsecure)
    );
    assert_eq!(
        d(Insecure, Insecure, found(vec![good()])),
        Decision::Defer(DeferReason::MxInsecure)
    );
}

#[test]
fn wants_tlsa_only_where_dane_can_apply() {
    let dane = DanePolicy::new(TlsLevel::Dane);
    let may = DanePolicy {
        insecure_mx: InsecureMxPolicy::May,
        ..dane
    };
    assert!(dane.wants_tlsa(Secure, Secure));
    assert!(dane.wants_tlsa(Insecure, Secure));
    assert!(!dane.wants_tlsa(Secure, Insecure));
    assert!(!dane.wants_tlsa(Insecure, Insecure));
    assert!(may.wants_tlsa(Secure, Secure));
    assert!(!may.wants_tlsa(Insecure, Secure));
    assert!(DanePolicy::new(TlsLevel::DaneOnly).wants_tlsa(Secure, Secure));
    for level in [TlsLevel::None, TlsLevel::May, TlsLevel::Encrypt] {
        assert!(
            !DanePolicy::new(level).wants_tlsa(Secure, Secure),
            "{level}"
        );
    }
}

#[test]
fn dane_only_defers_without_usable_secure_tlsa() {
    let d = at(TlsLevel::DaneOnly);
    assert!(matches!(
        d(Secure, Secure, found(vec![good()])),
        Decision::Authenticate(_)
    ));
    assert_eq!(
        d(Secure, Secure, found(vec![pkix()])),
        Decision::Defer(DeferReason::NoUsableTlsa)
    );
    assert_eq!(
        d(Secure, Secure, TlsaInput::NoRecords { secure: true }),
        Decision::Defer(DeferReason::NoSecureTlsa)
    );
    assert_eq!(
        d(Secure, Insecure, found(vec![good()])),
        Decision::Defer(DeferReason::HostInsecure)
    );
    assert!(matches!(
        d(Secure, Secure, TlsaInput::Failed("timeout".into())),
        Decision::Defer(DeferReason::TlsaLookupFailed(_))
    ));
}

#[test]
fn cname_base_domain_mx_name_and_nexthop_are_reference_ids() {
    let t = TlsaInput::Records {
        secure: true,
        records: vec![good()],
        base_domain: "smtp.provider.example.".into(),
    };
    let dns = HostDns {
        mx_host: "MX.customer.example",
        nexthop: Some("Customer.Example."),
        mx: Secure,
        host: Secure,
        tlsa: t,
    };
    let Decision::Authenticate(target) = decide(DanePolicy::new(TlsLevel::Dane), dns.clone())
    else {
        panic!("expected authenticate");
    };
    assert_eq!(target.base_domain, "smtp.provider.example");
    assert_eq!(
        target.reference_names,
        vec![
            "smtp.provider.example",
            "mx.customer.example",
            "customer.example"
        ]
    );
    // A configured next hop has no separate next-hop domain; duplicates go.
    let next_hop = HostDns {
        nexthop: None,
        ..dns.clone()
    };
    let Decision::Authenticate(target) = decide(DanePolicy::new(TlsLevel::Dane), next_hop) else {
        panic!("expected authenticate");
    };
    assert_eq!(
        target.reference_names,
        vec!["smtp.provider.example", "mx.customer.example"]
    );
    let same = DaneTarget::new("mx.example.", "MX.example", vec![good()]).with_nexthop("");
    assert_eq!(same.reference_names, vec!["mx.example"]);
}

#[test]
fn defer_reasons_say_what_is_missing() {
    for (reason, text) in [
        (
            DeferReason::TlsaLookupFailed("SERVFAIL".into()),
            "TLSA lookup failed: SERVFAIL",
        ),
        (
            DeferReason::MxInsecure,
            "MX RRset is not DNSSEC-signed (dane-only)",
        ),
        (
            DeferReason::HostInsecure,
            "host address is not DNSSEC-signed (dane-only)",
        ),
        (
            DeferReason::NoSecureTlsa,
            "no DNSSEC-signed TLSA records (dane-only)",
        ),
        (
            DeferReason::NoUsableTlsa,
            "no usable TLSA records (dane-only)",
        ),
    ] {
        assert_eq!(reason.to_string(), text);
    }
    assert_eq!(Assurance::Verified.label(), "dane-verified");
    assert_eq!(Assurance::Trusted.label(), "dane-trusted");
}
