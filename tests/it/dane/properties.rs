//! Properties over arbitrary input: the parser and the verdict never panic on
//! hostile bytes (nothing from the network may panic), presentation
//! form round-trips, and names without wildcards match only themselves.

use proptest::prelude::*;
use rustls_pki_types::{CertificateDer, UnixTime};

use danerelay::dane::verify::name_matches;
use danerelay::dane::{verify_chain, TlsaRecord, Verdict};

fn record() -> impl Strategy<Value = TlsaRecord> {
    (
        0u8..5,
        0u8..3,
        0u8..4,
        proptest::collection::vec(any::<u8>(), 0..80),
    )
        .prop_map(|(usage, selector, matching, data)| TlsaRecord {
            usage,
            selector,
            matching,
            data,
        })
}

proptest! {
    #[test]
    fn parse_never_panics(text in "\\PC{0,120}") {
        let _ = TlsaRecord::parse(&text);
    }

    #[test]
    fn presentation_form_round_trips(r in record().prop_filter("data", |r| !r.data.is_empty())) {
        prop_assert_eq!(TlsaRecord::parse(&r.to_string()).unwrap(), r);
    }

    #[test]
    fn garbage_chains_never_verify(
        chain in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..4),
        records in proptest::collection::vec(record(), 0..6),
    ) {
        let chain: Vec<CertificateDer<'static>> = chain.into_iter().map(CertificateDer::from).collect();
        let verdict = verify_chain("mx.example.net", &[], &chain, &records, UnixTime::now());
        prop_assert!(!matches!(verdict, Verdict::Verified(_)), "{:?}", verdict);
        if records.iter().all(|r| !r.is_usable()) {
            prop_assert_eq!(verdict, Verdict::NoUsableTlsa);
        }
    }

    #[test]
    fn plain_names_match_only_themselves(a in "[a-z0-9]{1,8}(\\.[a-z0-9]{1,8}){0,3}", b in "[a-z0-9]{1,8}(\\.[a-z0-9]{1,8}){0,3}") {
        prop_assert!(name_matches(&a, &a.to_uppercase()));
        prop_assert_eq!(name_matches(&a, &b), a == b);
    }
}
