//! The policy key and the bound of [`TlsConfigCache`]; real resumed
//! handshakes are in `tests/it/dane/resume.rs`.

use super::*;
use crate::dane::{MandatoryTls, TlsaRecord};

fn rec(usage: u8, byte: u8) -> TlsaRecord {
    TlsaRecord {
        usage,
        selector: 1,
        matching: 1,
        data: vec![byte; 32],
    }
}

fn dane(base: &str, mx: &str, records: Vec<TlsaRecord>) -> Decision {
    Decision::Authenticate(DaneTarget::new(base, mx, records))
}

fn key(decision: &Decision, sni: &str) -> PolicyKey {
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    PolicyKey::new(decision, &name).unwrap()
}

fn config(cache: &TlsConfigCache, decision: &Decision, host: &str) -> Arc<ClientConfig> {
    cache.setup(decision, host).unwrap().unwrap().config
}

#[test]
fn same_policy_same_key_whatever_the_record_order() {
    let a = dane(
        "mx.example.net",
        "mx.example.net",
        vec![rec(3, 1), rec(2, 2)],
    );
    let b = dane(
        "MX.Example.Net.",
        "mx.example.net",
        vec![rec(2, 2), rec(3, 1)],
    );
    let dup = dane(
        "mx.example.net",
        "mx.example.net",
        vec![rec(3, 1), rec(2, 2), rec(3, 1)],
    );
    assert_eq!(key(&a, "mx.example.net"), key(&b, "mx.example.net"));
    assert_eq!(key(&a, "mx.example.net"), key(&dup, "mx.example.net"));
    assert_eq!(key(&a, "mx.example.net"), key(&a, "MX.EXAMPLE.NET"));
}

#[test]
fn anything_verification_depends_on_changes_the_key() {
    let base = dane("mx.example.net", "mx.example.net", vec![rec(3, 1)]);
    let k = key(&base, "mx.example.net");
    let changed = [
        // Another record, one more record, another usage.
        dane("mx.example.net", "mx.example.net", vec![rec(3, 2)]),
        dane(
            "mx.example.net",
            "mx.example.net",
            vec![rec(3, 1), rec(3, 2)],
        ),
        dane("mx.example.net", "mx.example.net", vec![rec(2, 1)]),
        // Same records, another MX name checked for DANE-TA (CNAME case).
        dane("mx.example.net", "mx.customer.example", vec![rec(3, 1)]),
    ];
    for d in &changed {
        assert_ne!(key(d, "mx.example.net"), k, "{d:?}");
    }
    // The SNI is part of the key, and the decision kind.
    assert_ne!(key(&base, "mx2.example.net"), k);
    let opp = key(&Decision::Opportunistic, "mx.example.net");
    let req = key(
        &Decision::TlsRequired(MandatoryTls::EncryptLevel),
        "mx.example.net",
    );
    assert_ne!(opp, k);
    assert_ne!(req, k);
    assert_ne!(opp, req);
    // Both reasons for mandatory unauthenticated TLS are one policy.
    assert_eq!(
        key(
            &Decision::TlsRequired(MandatoryTls::AllTlsaUnusable),
            "mx.example.net"
        ),
        req
    );
}

#[test]
fn the_data_length_is_part_of_the_encoding() {
    // Without length prefixes these two would hash the same bytes.
    let short = TlsaRecord {
        data: vec![1; 31],
        ..rec(3, 1)
    };
    let long = TlsaRecord {
        data: vec![1; 33],
        ..rec(3, 1)
    };
    let a = dane("mx.example.net", "mx.example.net", vec![short, rec(3, 1)]);
    let b = dane("mx.example.net", "mx.example.net", vec![long, rec(3, 1)]);
    assert_ne!(key(&a, "mx.example.net"), key(&b, "mx.example.net"));
}

#[test]
fn no_tls_no_key_no_config() {
    let cache = TlsConfigCache::default();
    assert!(cache
        .setup(&Decision::Plaintext, "mx.test")
        .unwrap()
        .is_none());
    let defer = Decision::Defer(crate::dane::DeferReason::MxInsecure);
    assert!(cache.setup(&defer, "mx.test").unwrap().is_none());
    assert!(cache.is_empty());
}

#[test]
fn one_config_per_policy_reused() {
    let cache = TlsConfigCache::default();
    let d = dane("mx.example.net", "mx.example.net", vec![rec(3, 1)]);
    let first = config(&cache, &d, "mx.example.net");
    let again = config(&cache, &d, "mx.example.net");
    assert!(Arc::ptr_eq(&first, &again));
    let opp = config(&cache, &Decision::Opportunistic, "mx.example.net");
    assert!(!Arc::ptr_eq(&first, &opp));
    let changed = dane("mx.example.net", "mx.example.net", vec![rec(3, 2)]);
    assert!(!Arc::ptr_eq(
        &first,
        &config(&cache, &changed, "mx.example.net")
    ));
    assert_eq!(cache.len(), 3);
    // The setup still carries the DANE target and the fallback rule.
    let s = cache.setup(&d, "ignored.example").unwrap().unwrap();
    assert!(s.dane.is_some() && !s.plaintext_fallback);
    assert_eq!(s.server_name.to_str(), "mx.example.net");
    let s = cache
        .setup(&Decision::Opportunistic, "mx.test")
        .unwrap()
        .unwrap();
    assert!(s.dane.is_none() && s.plaintext_fallback);
}

#[test]
fn bound_holds_and_least_recently_used_goes_first() {
    let cache = TlsConfigCache::new(3, DEFAULT_MAX_AGE);
    let host = |i: usize| format!("mx{i}.example.net");
    let opp = Decision::Opportunistic;
    let a = config(&cache, &opp, &host(0));
    let b = config(&cache, &opp, &host(1));
    let _ = config(&cache, &opp, &host(2));
    // Touch host 0; host 1 is now the least recently used.
    assert!(Arc::ptr_eq(&a, &config(&cache, &opp, &host(0))));
    let _ = config(&cache, &opp, &host(3));
    assert_eq!(cache.len(), 3);
    assert!(Arc::ptr_eq(&a, &config(&cache, &opp, &host(0))), "kept");
    assert!(!Arc::ptr_eq(&b, &config(&cache, &opp, &host(1))), "evicted");
    assert_eq!(cache.len(), 3);
}

#[test]
fn default_bound_holds_past_capacity() {
    let cache = TlsConfigCache::default();
    for i in 0..DEFAULT_CAPACITY + 50 {
        let d = dane(
            "mx.example.net",
            "mx.example.net",
            vec![rec(3, 1), {
                let mut r = rec(3, 0);
                r.data[..8].copy_from_slice(&(i as u64).to_be_bytes());
                r
            }],
        );
        config(&cache, &d, "mx.example.net");
        assert!(cache.len() <= DEFAULT_CAPACITY);
    }
    assert_eq!(cache.len(), DEFAULT_CAPACITY);
}

#[test]
fn expired_configs_are_replaced_with_an_empty_session_store() {
    let cache = TlsConfigCache::new(10, Duration::ZERO);
    let first = config(&cache, &Decision::Opportunistic, "mx.test");
    let second = config(&cache, &Decision::Opportunistic, "mx.test");
    assert!(!Arc::ptr_eq(&first, &second));
    assert_eq!(cache.len(), 1);
}

#[test]
fn expired_entries_make_room_before_live_ones() {
    let cache = TlsConfigCache::new(2, Duration::from_millis(50));
    let opp = Decision::Opportunistic;
    let _ = config(&cache, &opp, "old1.test");
    let _ = config(&cache, &opp, "old2.test");
    std::thread::sleep(Duration::from_millis(60));
    let fresh = config(&cache, &opp, "new.test");
    // Both expired entries went; only the new one is left.
    assert_eq!(cache.len(), 1);
    assert!(Arc::ptr_eq(&fresh, &config(&cache, &opp, "new.test")));
}

#[test]
fn configs_share_the_provider_and_send_no_early_data() {
    let cache = TlsConfigCache::default();
    let c = config(&cache, &Decision::Opportunistic, "mx.test");
    assert!(!c.enable_early_data);
    assert!(Arc::ptr_eq(
        c.crypto_provider(),
        crate::dane::ring_provider()
    ));
    let fresh = crate::dane::client_setup(&Decision::Opportunistic, "mx.test")
        .unwrap()
        .unwrap();
    assert!(Arc::ptr_eq(
        fresh.config.crypto_provider(),
        crate::dane::ring_provider()
    ));
}
