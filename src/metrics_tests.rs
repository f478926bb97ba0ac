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
