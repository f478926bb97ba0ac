//! The Prometheus Operator resources (not checkable by kubernetes-validate):
//! the ServiceMonitor scrapes the HTTP port once per pod, and the alerts are
//! well formed and use only metrics danerelay exports. promtool unit-tests
//! the alerts' behaviour in deploy/validate.sh.

use std::collections::BTreeSet;

use super::base::*;

/// Every metric danerelay exports or will export (the operations issue).
const METRICS: &[&str] = &[
    "danerelay_ready",
    "danerelay_build_info",
    "danerelay_queue_messages",
    "danerelay_queue_oldest_message_age_seconds",
    "danerelay_queue_storage_ok",
    "danerelay_queue_free_bytes",
    "danerelay_delivery_attempts_total",
    "danerelay_dane_results_total",
    "danerelay_dnssec_validating",
    "danerelay_messages_received_total",
    "danerelay_smtp_sessions_active",
];

#[test]
fn service_monitor_scrapes_the_metrics_port() {
    let b = base();
    let sm = b.get("ServiceMonitor", "danerelay");
    assert_eq!(sm["apiVersion"].as_str(), Some("monitoring.coreos.com/v1"));
    let headless = b.get("Service", "danerelay-headless");
    assert!(labels_match(
        &sm["spec"]["selector"]["matchLabels"],
        &headless["metadata"]["labels"]
    ));
    let svc = b.get("Service", "danerelay");
    assert!(
        !labels_match(
            &sm["spec"]["selector"]["matchLabels"],
            &svc["metadata"]["labels"]
        ),
        "one scrape per pod, not two"
    );
    let endpoints = seq(&sm["spec"]["endpoints"]);
    assert_eq!(endpoints.len(), 1);
    let port_name = endpoints[0]["port"].as_str().unwrap();
    let port = seq(&headless["spec"]["ports"])
        .iter()
        .find(|p| p["name"].as_str() == Some(port_name))
        .unwrap();
    let relay = b.container("danerelay");
    assert_eq!(
        resolve_port(relay, &port["targetPort"]),
        b.config().http.address.port()
    );
    assert_eq!(endpoints[0]["path"].as_str(), Some("/metrics"));
    let job_label = sm["spec"]["jobLabel"].as_str().unwrap();
    assert_eq!(
        headless["metadata"]["labels"][job_label].as_str(),
        Some("danerelay")
    );
}

#[test]
fn alerts_are_well_formed_and_use_real_metrics() {
    let b = base();
    let rule = b.get("PrometheusRule", "danerelay");
    assert_eq!(
        rule["apiVersion"].as_str(),
        Some("monitoring.coreos.com/v1")
    );
    let mut alerts = BTreeSet::new();
    let mut used = BTreeSet::new();
    for group in seq(&rule["spec"]["groups"]) {
        assert!(group["name"].as_str().is_some());
        for r in seq(&group["rules"]) {
            let name = r["alert"].as_str().unwrap();
            assert!(alerts.insert(name.to_string()), "{name} twice");
            let expr = r["expr"].as_str().unwrap();
            let severity = r["labels"]["severity"].as_str().unwrap();
            assert!(["warning", "critical"].contains(&severity), "{name}");
            for key in ["summary", "description"] {
                assert!(r["annotations"][key].as_str().is_some(), "{name} {key}");
            }
            if let Some(f) = r["for"].as_str() {
                humantime::parse_duration(f).unwrap();
            }
            let mut rest = expr;
            while let Some(at) = rest.find("danerelay_") {
                let tail = &rest[at..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(tail.len());
                used.insert(tail[..end].to_string());
                rest = &tail[end..];
            }
            if expr.contains("up{") {
                assert!(expr.contains("up{job=\"danerelay\"}"), "{name}: job label");
            }
        }
    }
    for m in &used {
        assert!(
            METRICS.contains(&m.as_str()),
            "{m} is not a danerelay metric"
        );
    }
    for needed in [
        "DanerelayDown",
        "DanerelayDnssecNotValidating",
        "DanerelayQueueGrowing",
        "DanerelayQueueStorageFailing",
        "DanerelayQueueDiskLow",
        "DanerelayQueueMessageDelayed",
        "DanerelayDaneTempfails",
        "DanerelayDeliveriesFailing",
    ] {
        assert!(alerts.contains(needed), "{needed} missing");
    }
}
