//! One attempt against FakeDns and the in-process fake MX: host order and
//! fall-through, TLSA failures skipping a host, `dane-only`, DNS outcomes.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::*;
use crate::dns::{FakeDns, RecordType, Security};
use crate::smtp::client::{Recipient, Timeouts};
use crate::testing::FakeMx;

fn engine(dns: FakeDns, port: u16, tls: TlsLevel) -> (Engine, Metrics) {
    let metrics = Metrics::new();
    let engine = Engine {
        dns: Arc::new(dns),
        options: EngineOptions {
            session: SessionOptions {
                helo_name: "relay.test".into(),
                connect_timeout: Duration::from_secs(5),
                timeouts: Timeouts::default(),
                tls_configs: Default::default(),
            },
            tls,
            dane_insecure_mx: Default::default(),
            routes: Vec::new(),
            mx_port: port,
            max_hosts: MAX_HOSTS,
            sts: None,
        },
        metrics: metrics.clone(),
        tls_rpt: None,
    };
    (engine, metrics)
}

fn job(rcpts: &[&str]) -> Job {
    Job {
        queue_id: "TESTID".into(),
        envelope: Envelope::new(
            "alice@src.test",
            rcpts.iter().map(|r| Recipient::new(*r)).collect(),
        ),
        received_at: SystemTime::now(),
        body: Arc::new(|| {
            Ok(
                Box::new(std::io::Cursor::new(b"Subject: t\r\n\r\nhi\r\n".to_vec()))
                    as Box<dyn Read + Send>,
            )
        }),
        tls_report: false,
    }
}

fn reply(o: &RcptOutcome) -> String {
    logline::reply_text(&o.outcome)
}

#[tokio::test]
async fn an_unreachable_first_mx_falls_through_to_the_second() {
    let mx = FakeMx::start(Duration::ZERO).await;
    let dns = FakeDns::new();
    dns.mx(
        "d.test",
        Security::Insecure,
        &[(10, "down.d.test"), (20, "up.d.test")],
    );
    // Nothing listens on 127.0.25.250 at the fake MX's port.
    dns.a("down.d.test", Security::Insecure, &["127.0.25.250"]);
    dns.a("up.d.test", Security::Insecure, &["127.0.0.1"]);
    let (e, _) = engine(dns, mx.port, TlsLevel::May);
    let out = e
        .deliver("d.test", &[job(&["a@d.test", "reject@d.test"])])
        .await;
    assert_eq!(out[0][0].outcome.label(), "delivered");
    assert_eq!(
        out[0][0].relay.as_deref(),
        Some(&*format!("up.d.test[127.0.0.1]:{}", mx.port))
    );
    assert_eq!(
        out[0][1].outcome.label(),
        "bounced",
        "the peer's 5xx is final"
    );
    assert_eq!(mx.messages().len(), 1);
}

#[tokio::test]
async fn a_failed_tlsa_lookup_skips_that_host_and_defers_when_none_is_left() {
    let mx = FakeMx::start(Duration::ZERO).await;
    let dns = FakeDns::new();
    dns.mx("d.test", Security::Secure, &[(10, "mx.d.test")]);
    dns.a("mx.d.test", Security::Secure, &["127.0.0.1"]);
    dns.servfail(&format!("_{}._tcp.mx.d.test", mx.port), RecordType::Tlsa);
    let (e, metrics) = engine(dns, mx.port, TlsLevel::Dane);
    let out = e.deliver("d.test", &[job(&["a@d.test"])]).await;
    assert_eq!(out[0][0].outcome.label(), "deferred");
    assert!(reply(&out[0][0]).contains("4.7.5"), "{}", reply(&out[0][0]));
    assert_eq!(
        mx.transcript.lock().unwrap().connections,
        0,
        "never connected"
    );
    assert!(metrics
        .render()
        .contains("danerelay_dane_results_total{result=\"tempfail\"} 1"));
}

#[tokio::test]
async fn a_failed_tlsa_lookup_on_the_first_host_still_lets_the_second_deliver() {
    let mx = FakeMx::start(Duration::ZERO).await;
    let dns = FakeDns::new();
    dns.mx(
        "d.test",
        Security::Secure,
        &[(10, "a.d.test"), (20, "b.d.test")],
    );
    dns.a("a.d.test", Security::Secure, &["127.0.0.1"]);
    dns.bogus(&format!("_{}._tcp.a.d.test", mx.port), RecordType::Tlsa);
    dns.a("b.d.test", Security::Secure, &["127.0.0.1"]);
    dns.nodata(
        &format!("_{}._tcp.b.d.test", mx.port),
        RecordType::Tlsa,
        Security::Secure,
    );
    let (e, _) = engine(dns, mx.port, TlsLevel::Dane);
    let out = e.deliver("d.test", &[job(&["a@d.test"])]).await;
    assert_eq!(out[0][0].outcome.label(), "delivered");
    assert!(out[0][0].relay.as_deref().unwrap().starts_with("b.d.test["));
    // No TLSA at b and the fake MX offers no STARTTLS: opportunistic plaintext.
    assert_eq!(out[0][0].tls, Some(TlsOutcome::Plaintext));
}

#[tokio::test]
async fn dane_only_defers_an_insecure_destination_without_connecting() {
    let mx = FakeMx::start(Duration::ZERO).await;
    let dns = FakeDns::new();
    dns.mx("d.test", Security::Insecure, &[(10, "mx.d.test")]);
    dns.a("mx.d.test", Security::Insecure, &["127.0.0.1"]);
    let (e, _) = engine(dns, mx.port, TlsLevel::DaneOnly);
    let out = e.deliver("d.test", &[job(&["a@d.test"])]).await;
    assert_eq!(out[0][0].outcome.label(), "deferred");
    assert_eq!(mx.transcript.lock().unwrap().connections, 0);
}

#[tokio::test]
async fn dns_failures_defer_and_nxdomain_bounces() {
    let dns = FakeDns::new();
    dns.servfail("sf.test", RecordType::Mx);
    dns.bogus("bog.test", RecordType::Mx);
    dns.nxdomain("nx.test", RecordType::Mx, Security::Secure);
    let (e, _) = engine(dns, 25, TlsLevel::Dane);
    for (domain, label, status) in [
        ("sf.test", "deferred", "4.4.3"),
        ("bog.test", "deferred", "4.7.5"),
        ("nx.test", "bounced", "5.1.2"),
    ] {
        let out = e.deliver(domain, &[job(&[&format!("a@{domain}")])]).await;
        assert_eq!(out[0][0].outcome.label(), label, "{domain}");
        assert!(
            reply(&out[0][0]).contains(status),
            "{domain}: {}",
            reply(&out[0][0])
        );
        assert_eq!(out[0][0].relay, None);
    }
}

#[tokio::test]
async fn several_messages_share_one_session_and_a_4xx_stays_with_its_recipient() {
    let mx = FakeMx::start(Duration::ZERO).await;
    let dns = FakeDns::new();
    dns.mx("d.test", Security::Insecure, &[(10, "mx.d.test")]);
    dns.a("mx.d.test", Security::Insecure, &["127.0.0.1"]);
    let (e, _) = engine(dns, mx.port, TlsLevel::May);
    let jobs = [
        job(&["a@d.test", "later@d.test"]),
        job(&["b@d.test"]),
        job(&["c@d.test"]),
    ];
    let out = e.deliver("d.test", &jobs).await;
    let labels: Vec<Vec<&str>> = out
        .iter()
        .map(|o| o.iter().map(|r| r.outcome.label()).collect())
        .collect();
    assert_eq!(
        labels,
        [
            vec!["delivered", "deferred"],
            vec!["delivered"],
            vec!["delivered"]
        ]
    );
    assert_eq!(mx.transcript.lock().unwrap().connections, 1);
    assert_eq!(mx.messages().len(), 3);
}

#[tokio::test]
async fn only_max_hosts_are_tried_per_attempt() {
    let mx = FakeMx::start(Duration::ZERO).await;
    let dns = FakeDns::new();
    dns.mx(
        "d.test",
        Security::Insecure,
        &[
            (10, "down1.d.test"),
            (20, "down2.d.test"),
            (30, "up.d.test"),
        ],
    );
    dns.a("down1.d.test", Security::Insecure, &["127.0.25.250"]);
    dns.a("down2.d.test", Security::Insecure, &["127.0.25.251"]);
    dns.a("up.d.test", Security::Insecure, &["127.0.0.1"]);
    let (mut e, _) = engine(dns, mx.port, TlsLevel::May);
    e.options.max_hosts = 2;
    let out = e.deliver("d.test", &[job(&["a@d.test"])]).await;
    assert_eq!(
        out[0][0].outcome.label(),
        "deferred",
        "the third host is not tried"
    );
    assert!(mx.messages().is_empty());
    e.options.max_hosts = 3;
    let out = e.deliver("d.test", &[job(&["a@d.test"])]).await;
    assert_eq!(out[0][0].outcome.label(), "delivered");
    assert_eq!(mx.messages().len(), 1);
}

/// `dns.dnssec = "auto"` before its probe has chosen a mode: DANE-level
/// mail defers (after the bounded wait) without a single lookup or
/// connection, because the interim answers carry no verdict; mail that
/// needs none (`may`) goes out on them.
#[tokio::test]
async fn dane_deliveries_defer_while_the_dnssec_mode_is_pending() {
    let mx = FakeMx::start(Duration::ZERO).await;
    let interim = FakeDns::new();
    interim.mx("d.test", Security::Insecure, &[(10, "mx.d.test")]);
    interim.a("mx.d.test", Security::Insecure, &["127.0.0.1"]);
    // Real time (the fake MX is a real socket): a short wait stands in for READY_WAIT.
    let wait = Duration::from_millis(200);
    let pending = Arc::new(crate::dns::AutoResolver::pending(Arc::new(interim), wait));
    let (mut e, _) = engine(FakeDns::new(), mx.port, TlsLevel::Dane);
    e.dns = pending.clone();
    let started = std::time::Instant::now();
    let out = e.deliver("d.test", &[job(&["a@d.test"])]).await;
    assert_eq!(out[0][0].outcome.label(), "deferred");
    let text = reply(&out[0][0]);
    assert!(text.contains("4.4.3") && text.contains("auto"), "{text}");
    assert!(started.elapsed() >= wait, "waited for the mode first");
    assert_eq!(
        mx.transcript.lock().unwrap().connections,
        0,
        "never connected"
    );

    e.options.tls = TlsLevel::May;
    let out = e.deliver("d.test", &[job(&["a@d.test"])]).await;
    assert_eq!(out[0][0].outcome.label(), "delivered", "no verdict needed");

    // Once the mode is chosen, DANE-level mail goes out on its verdicts.
    let chosen = FakeDns::new();
    chosen.mx("d.test", Security::Insecure, &[(10, "mx.d.test")]);
    chosen.a("mx.d.test", Security::Insecure, &["127.0.0.1"]);
    pending.choose(crate::dns::ActiveMode::Validate, Arc::new(chosen));
    e.options.tls = TlsLevel::Dane;
    let out = e.deliver("d.test", &[job(&["a@d.test"])]).await;
    assert_eq!(out[0][0].outcome.label(), "delivered");
}

#[tokio::test]
async fn each_session_is_counted_for_tls_rpt_under_its_policy() {
    use crate::tlsrpt::{PolicyType, Recorder, ResultType};
    let mx = FakeMx::start(Duration::ZERO).await;
    let dns = FakeDns::new();
    dns.mx(
        "d.test",
        Security::Secure,
        &[(10, "a.d.test"), (20, "b.d.test")],
    );
    dns.a("a.d.test", Security::Secure, &["127.0.0.1"]);
    dns.bogus(&format!("_{}._tcp.a.d.test", mx.port), RecordType::Tlsa);
    dns.a("b.d.test", Security::Secure, &["127.0.0.1"]);
    dns.nodata(
        &format!("_{}._tcp.b.d.test", mx.port),
        RecordType::Tlsa,
        Security::Secure,
    );
    let (mut e, _) = engine(dns, mx.port, TlsLevel::Dane);
    let recorder = Recorder::new(Arc::new(crate::delivery::clock::SystemClock));
    e.tls_rpt = Some(recorder.clone());
    for _ in 0..2 {
        let out = e.deliver("d.test", &[job(&["a@d.test"])]).await;
        assert_eq!(out[0][0].outcome.label(), "delivered");
    }
    let counts = recorder.unpersisted(recorder.today());
    assert_eq!(counts.len(), 1);
    assert_eq!(counts[0].0, "d.test");
    let policies = &counts[0].1.policies;
    assert_eq!(policies.len(), 2, "{policies:?}");
    // a.d.test: bogus TLSA, skipped before connecting.
    let (p, c) = &policies[0];
    assert_eq!(p.kind, PolicyType::Tlsa);
    assert_eq!(p.mx_host, vec!["a.d.test".to_string()]);
    assert_eq!((c.success, c.failure_total()), (0, 2));
    assert_eq!(c.failures[0].0.result, ResultType::DnssecInvalid);
    assert_eq!(
        c.failures[0].0.receiving_mx_hostname.as_deref(),
        Some("a.d.test")
    );
    // b.d.test: no TLSA, and the fake MX offers no STARTTLS.
    let (p, c) = &policies[1];
    assert_eq!(p.kind, PolicyType::NoPolicyFound);
    assert_eq!((c.success, c.failure_total()), (0, 2));
    assert_eq!(c.failures[0].0.result, ResultType::StarttlsNotSupported);
    assert_eq!(
        c.failures[0].0.receiving_ip,
        Some("127.0.0.1".parse().unwrap())
    );
}

#[test]
fn tls_reports_go_opportunistic_but_never_above_the_configured_level() {
    assert_eq!(report_level(TlsLevel::DaneOnly), TlsLevel::May);
    assert_eq!(report_level(TlsLevel::Dane), TlsLevel::May);
    assert_eq!(report_level(TlsLevel::Encrypt), TlsLevel::May);
    assert_eq!(report_level(TlsLevel::May), TlsLevel::May);
    assert_eq!(report_level(TlsLevel::None), TlsLevel::None);
}
