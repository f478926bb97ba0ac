use super::*;

#[test]
fn every_series_is_prefixed_and_present_before_first_event() {
    let m = Metrics::new();
    m.ready.set(1);
    m.delivery_attempt(DeliveryOutcome::Delivered, DeliveryTls::DaneVerified);
    let text = m.render();
    assert!(text.contains("danerelay_ready 1"), "{text}");
    assert!(text.contains(&format!(
        "danerelay_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    )));
    assert!(text.contains(
        "danerelay_delivery_attempts_total{outcome=\"delivered\",tls=\"dane-verified\"} 1"
    ));
    assert!(
        text.contains("danerelay_delivery_attempts_total{outcome=\"bounced\",tls=\"plaintext\"} 0")
    );
    assert!(text.contains("danerelay_dane_results_total{result=\"tempfail\"} 0"));
    assert!(text.contains("danerelay_delivery_tls_handshakes_total{handshake=\"full\"} 0"));
    m.tls_handshake(TlsHandshake::Resumed);
    assert!(m
        .render()
        .contains("danerelay_delivery_tls_handshakes_total{handshake=\"resumed\"} 1"));
    for name in [
        "danerelay_smtp_sessions_total",
        "danerelay_smtp_sessions_active",
        "danerelay_messages_received_total",
        "danerelay_messages_rejected_total",
        "danerelay_auth_failures_total",
        "danerelay_received_bytes_total",
        "danerelay_smtp_limit_hits_total{limit=\"junk-commands\"} 0",
        "danerelay_messages_rejected_total{reason=\"header-limit\"} 0",
        "danerelay_queue_messages",
        "danerelay_queue_oldest_message_age_seconds",
        "danerelay_queue_storage_ok",
        "danerelay_queue_free_bytes",
        "danerelay_dnssec_validating",
        "danerelay_dnssec_mode{mode=\"trust-ad\"} 0",
        "danerelay_delivery_duration_seconds_bucket",
        "danerelay_queue_time_seconds_count",
        "danerelay_dkim_signatures_total{algorithm=\"ed25519-sha256\",result=\"failed\"} 0",
    ] {
        assert!(text.contains(name), "{name} missing");
    }
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(line.starts_with("danerelay_"), "{line}");
    }
}

/// Every metric the table declares is in the exposition before any event: a
/// labelled metric added to the table without its label enums would be
/// absent here (a Vec without children exports nothing).
#[test]
fn every_declared_metric_is_exported_from_the_start() {
    let m = Metrics::new();
    let exported: std::collections::BTreeSet<String> = m
        .registry
        .gather()
        .iter()
        .map(|f| f.name().to_string())
        .collect();
    for collector in m.collectors() {
        for desc in collector.desc() {
            assert!(
                exported.contains(&desc.fq_name),
                "{} is declared but not exported until its first event: list its label enums in the metrics! table",
                desc.fq_name
            );
        }
    }
}

/// Labelled metrics start with one series per combination of their label
/// enums' values, each at 0.
#[test]
fn labelled_metrics_start_with_every_combination_at_zero() {
    use std::collections::{BTreeMap, BTreeSet};
    let m = Metrics::new();
    for family in m.registry.gather() {
        let name = family.name();
        if name == "danerelay_build_info" {
            continue;
        }
        let mut values: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut series = BTreeSet::new();
        for metric in family.get_metric() {
            let labels: Vec<(String, String)> = metric
                .get_label()
                .iter()
                .map(|l| (l.name().to_string(), l.value().to_string()))
                .collect();
            for (k, v) in &labels {
                values.entry(k.clone()).or_default().insert(v.clone());
            }
            let value = metric
                .get_counter()
                .get_value()
                .max(metric.get_gauge().get_value());
            if !name.ends_with("_seconds") {
                assert_eq!(value, 0.0, "{name} {labels:?}");
            }
            assert!(series.insert(labels), "{name}: a series twice");
        }
        let product: usize = values.values().map(BTreeSet::len).product();
        assert_eq!(series.len(), product, "{name}: not every combination");
    }
    let values_of = |family: &str, label: &str| -> BTreeSet<String> {
        m.registry
            .gather()
            .iter()
            .filter(|f| f.name() == family)
            .flat_map(|f| f.get_metric().iter())
            .flat_map(|s| s.get_label().iter())
            .filter(|l| l.name() == label)
            .map(|l| l.value().to_string())
            .collect()
    };
    let all =
        |v: Vec<&'static str>| -> BTreeSet<String> { v.into_iter().map(String::from).collect() };
    let delivery = "danerelay_delivery_attempts_total";
    assert_eq!(values_of(delivery, "tls"), all(DeliveryTls::values()));
    assert_eq!(
        values_of(delivery, "outcome"),
        all(DeliveryOutcome::values())
    );
    let dns = "danerelay_dns_lookups_total";
    assert_eq!(values_of(dns, "type"), all(DnsType::values()));
    assert_eq!(values_of(dns, "status"), all(DnsStatus::values()));
    assert_eq!(
        values_of("danerelay_messages_rejected_total", "reason"),
        all(RejectReason::values())
    );
}
