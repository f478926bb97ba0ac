//! Delivery under MTA-STS: one attempt of the delivery engine, the policy
//! from the Python policy host, receiving MTAs (the fake MX) with
//! certificates from the test CA.

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use danerelay::config::TlsLevel;
use danerelay::delivery::attempt::{Engine, Job, RcptOutcome};
use danerelay::delivery::logline::reply_text;
use danerelay::dns::{RecordType, Security};
use danerelay::metrics::{DeliveryOutcome, DeliveryTls, Label, StsFetchResult};
use danerelay::smtp::client::{Envelope, Recipient};
use danerelay::testing::certs::{tlsa_3_1_1, Node};
use danerelay::testing::engine_options;
use danerelay::testing::mx::Script;
use danerelay::testing::FakeMx;

use super::harness::{policy, Lab, PolicyServer};

fn engine(lab: &Lab, port: u16, tls: TlsLevel) -> Engine {
    let mut options = engine_options(port, tls);
    options.sts = Some(lab.sts(Some(lab.queue()), Duration::from_secs(10)));
    Engine {
        dns: lab.dns.clone(),
        options,
        metrics: lab.metrics.clone(),
        tls_rpt: None,
    }
}

fn job(rcpt: &str) -> Job {
    Job {
        queue_id: "STSTEST".into(),
        envelope: Envelope::new("alice@src.test", vec![Recipient::new(rcpt)]),
        received_at: SystemTime::now(),
        tls_report: false,
        body: Arc::new(|| {
            Ok(
                Box::new(std::io::Cursor::new(b"Subject: t\r\n\r\nhi\r\n".to_vec()))
                    as Box<dyn Read + Send>,
            )
        }),
    }
}

/// A receiving MTA offering STARTTLS with `cert`.
async fn mx(cert: &Node) -> FakeMx {
    FakeMx::listen(Script {
        tls: Some(cert.acceptor()),
        ..Script::by_local_part()
    })
    .await
}

/// `domain`'s MX hosts (preference, name), all at 127.0.0.1, insecure.
fn route(lab: &Lab, domain: &str, hosts: &[(u16, &str)]) {
    lab.dns.mx(domain, Security::Insecure, hosts);
    for (_, h) in hosts {
        lab.dns.a(h, Security::Insecure, &["127.0.0.1"]);
        lab.dns.nodata(h, RecordType::Aaaa, Security::Insecure);
    }
}

/// A domain publishing `policy` through a server at `ip`.
fn sts_domain(lab: &Lab, domain: &str, ip: &str, body: &str) -> Option<PolicyServer> {
    lab.publish(domain, "1", ip);
    lab.server(domain, ip, body)
}

async fn deliver_one(e: &Engine, domain: &str) -> RcptOutcome {
    let mut out = e.deliver(domain, &[job(&format!("bob@{domain}"))]).await;
    out.remove(0).remove(0)
}

fn attempts(lab: &Lab, o: DeliveryOutcome, t: DeliveryTls) -> u64 {
    lab.metrics
        .delivery_attempts_total
        .with_label_values(&[o.label(), t.label()])
        .get()
}

#[tokio::test(flavor = "multi_thread")]
async fn enforce_with_a_valid_certificate_is_sts_verified() {
    let lab = Lab::new();
    let Some(_s) = sts_domain(
        &lab,
        "e1.test",
        "127.0.43.11",
        &policy("enforce", &["*.e1.test"]),
    ) else {
        return;
    };
    route(&lab, "e1.test", &[(10, "mx.e1.test")]);
    let mx = mx(&lab.cert(&["mx.e1.test"], false)).await;
    let e = engine(&lab, mx.port, TlsLevel::Dane);
    let got = deliver_one(&e, "e1.test").await;
    assert_eq!(
        got.outcome.label(),
        "delivered",
        "{}",
        reply_text(&got.outcome)
    );
    let tls = got.tls.unwrap();
    assert_eq!(tls.label(), "sts-verified");
    assert!(tls.to_string().starts_with("sts-verified TLSv1."), "{tls}");
    assert_eq!(mx.messages().len(), 1);
    assert_eq!(
        attempts(&lab, DeliveryOutcome::Delivered, DeliveryTls::StsVerified),
        1
    );
    assert_eq!(lab.fetches(StsFetchResult::Ok), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn enforce_with_a_wrong_name_or_expired_certificate_defers_and_sends_nothing() {
    let lab = Lab::new();
    let Some(_s) = sts_domain(
        &lab,
        "e2.test",
        "127.0.43.12",
        &policy("enforce", &["mx.e2.test"]),
    ) else {
        return;
    };
    route(&lab, "e2.test", &[(10, "mx.e2.test")]);
    for cert in [
        lab.cert(&["other.e2.test"], false),
        lab.cert(&["mx.e2.test"], true),
        danerelay::testing::certs::self_signed(&["mx.e2.test"]),
    ] {
        let mx = mx(&cert).await;
        let e = engine(&lab, mx.port, TlsLevel::Dane);
        let got = deliver_one(&e, "e2.test").await;
        assert_eq!(got.outcome.label(), "deferred");
        let text = reply_text(&got.outcome);
        assert!(
            text.starts_with("451 4.7.5") && text.contains("MTA-STS"),
            "{text}"
        );
        assert!(
            mx.messages().is_empty(),
            "never delivered without a valid certificate"
        );
        assert_eq!(
            mx.transcript.lock().unwrap().connections,
            1,
            "no plaintext retry"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn enforce_skips_mx_hosts_outside_the_policy() {
    let lab = Lab::new();
    let Some(_s) = sts_domain(
        &lab,
        "e3.test",
        "127.0.43.13",
        &policy("enforce", &["good.e3.test"]),
    ) else {
        return;
    };
    // The preferred MX is not in the policy (an attacker's, say).
    route(
        &lab,
        "e3.test",
        &[(10, "evil.e3.test"), (20, "good.e3.test")],
    );
    let mx = mx(&lab.cert(&["good.e3.test", "evil.e3.test"], false)).await;
    let e = engine(&lab, mx.port, TlsLevel::Dane);
    let got = deliver_one(&e, "e3.test").await;
    assert_eq!(got.outcome.label(), "delivered");
    assert!(got.relay.unwrap().starts_with("good.e3.test["));
    assert_eq!(
        mx.transcript.lock().unwrap().connections,
        1,
        "evil never contacted"
    );
    // Only unlisted hosts: deferred, nobody contacted.
    route(&lab, "e3.test", &[(10, "evil.e3.test")]);
    let got = deliver_one(&e, "e3.test").await;
    assert_eq!(got.outcome.label(), "deferred");
    let text = reply_text(&got.outcome);
    assert!(text.contains("not listed in the MTA-STS policy"), "{text}");
    assert_eq!(mx.transcript.lock().unwrap().connections, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn enforce_without_starttls_defers_never_plaintext() {
    let lab = Lab::new();
    let Some(_s) = sts_domain(
        &lab,
        "e4.test",
        "127.0.43.14",
        &policy("enforce", &["mx.e4.test"]),
    ) else {
        return;
    };
    route(&lab, "e4.test", &[(10, "mx.e4.test")]);
    let mx = FakeMx::listen(Script::by_local_part()).await; // no STARTTLS
    let e = engine(&lab, mx.port, TlsLevel::May);
    let got = deliver_one(&e, "e4.test").await;
    assert_eq!(
        got.outcome.label(),
        "deferred",
        "{}",
        reply_text(&got.outcome)
    );
    assert!(mx.messages().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn testing_mode_delivers_as_without_a_policy() {
    let lab = Lab::new();
    let Some(_s) = sts_domain(
        &lab,
        "t1.test",
        "127.0.43.15",
        &policy("testing", &["mx.t1.test"]),
    ) else {
        return;
    };
    route(&lab, "t1.test", &[(10, "mx.t1.test")]);
    let mx = mx(&lab.cert(&["wrong.t1.test"], false)).await;
    let e = engine(&lab, mx.port, TlsLevel::Dane);
    let got = deliver_one(&e, "t1.test").await;
    assert_eq!(got.outcome.label(), "delivered");
    assert_eq!(got.tls.unwrap().label(), "tls-unauthenticated");
    assert_eq!(mx.messages().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_dane_and_mta_sts_both_present_dane_decides() {
    let lab = Lab::new();
    // The enforce policy does not even list the MX: DANE still decides.
    let Some(_s) = sts_domain(
        &lab,
        "d1.test",
        "127.0.43.16",
        &policy("enforce", &["other.d1.test"]),
    ) else {
        return;
    };
    let name = "mx.d1.test";
    lab.dns.mx("d1.test", Security::Secure, &[(10, name)]);
    lab.dns.a(name, Security::Secure, &["127.0.0.1"]);
    lab.dns.nodata(name, RecordType::Aaaa, Security::Secure);
    // A self-signed certificate: not PKIX-valid, but pinned by TLSA.
    let cert = danerelay::testing::certs::self_signed(&[name]);
    let mx = mx(&cert).await;
    lab.dns.tlsa(
        &format!("_{}._tcp.{name}", mx.port),
        Security::Secure,
        vec![tlsa_3_1_1(&cert.cert)],
    );
    let e = engine(&lab, mx.port, TlsLevel::Dane);
    let got = deliver_one(&e, "d1.test").await;
    assert_eq!(
        got.outcome.label(),
        "delivered",
        "{}",
        reply_text(&got.outcome)
    );
    assert_eq!(got.tls.unwrap().label(), "dane-verified");
    // And a DANE failure is not rescued by MTA-STS: TLSA that does not match.
    let other = danerelay::testing::certs::self_signed(&[name]);
    lab.dns.tlsa(
        &format!("_{}._tcp.{name}", mx.port),
        Security::Secure,
        vec![tlsa_3_1_1(&other.cert)],
    );
    let got = deliver_one(&e, "d1.test").await;
    assert_eq!(got.outcome.label(), "deferred");
    assert!(
        reply_text(&got.outcome).contains("DANE"),
        "{}",
        reply_text(&got.outcome)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_change_is_picked_up_before_mail_waits() {
    let lab = Lab::new();
    let Some(server) = sts_domain(
        &lab,
        "r1.test",
        "127.0.43.17",
        &policy("enforce", &["old.r1.test"]),
    ) else {
        return;
    };
    route(&lab, "r1.test", &[(10, "new.r1.test")]);
    let mx = mx(&lab.cert(&["new.r1.test"], false)).await;
    let e = engine(&lab, mx.port, TlsLevel::Dane);
    // Cached under id 1 with the old MX; the domain moved and updated its
    // policy but not yet its TXT id: the re-check before deferring finds it.
    let first = e.options.sts.as_ref().unwrap();
    assert!(first
        .policy_for("r1.test", SystemTime::now(), false)
        .await
        .active
        .is_some());
    server.set_policy(&policy("enforce", &["new.r1.test"]));
    let got = deliver_one(&e, "r1.test").await;
    assert_eq!(
        got.outcome.label(),
        "delivered",
        "{}",
        reply_text(&got.outcome)
    );
    assert_eq!(got.tls.unwrap().label(), "sts-verified");
    assert_eq!(server.requests(), 2);
}

/// The TLS-RPT counts of `domain` today, as `(policy type, successes, failure result types)`.
fn rpt_counts(
    rec: &danerelay::tlsrpt::Recorder,
    domain: &str,
) -> Vec<(String, u64, Vec<(String, u64)>)> {
    rec.unpersisted(rec.today())
        .into_iter()
        .filter(|(d, _)| d == domain)
        .flat_map(|(_, day)| day.policies)
        .map(|(p, c)| {
            let kind = serde_json::to_value(p.kind).unwrap();
            let failures = c
                .failures
                .iter()
                .map(|(f, n)| (f.result.as_str().to_string(), *n))
                .collect();
            (kind.as_str().unwrap().to_string(), c.success, failures)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_under_a_policy_count_once_for_tls_rpt_as_sts() {
    let lab = Lab::new();
    let Some(_a) = sts_domain(
        &lab,
        "r1.test",
        "127.0.43.21",
        &policy("enforce", &["mx.r1.test"]),
    ) else {
        return;
    };
    let Some(_b) = sts_domain(
        &lab,
        "r2.test",
        "127.0.43.22",
        &policy("testing", &["mx.r2.test"]),
    ) else {
        return;
    };
    route(&lab, "r1.test", &[(10, "mx.r1.test")]);
    route(&lab, "r2.test", &[(10, "mx.r2.test")]);
    // r2's MX shows a certificate for another name: `testing` delivers and
    // reports what `enforce` would have refused.
    let mx = mx(&lab.cert(&["mx.r1.test", "other.r2.test"], false)).await;
    let recorder =
        danerelay::tlsrpt::Recorder::new(Arc::new(danerelay::delivery::clock::SystemClock));
    let mut e = engine(&lab, mx.port, TlsLevel::Dane);
    e.tls_rpt = Some(recorder.clone());
    assert_eq!(
        deliver_one(&e, "r1.test").await.outcome.label(),
        "delivered"
    );
    assert_eq!(
        deliver_one(&e, "r2.test").await.outcome.label(),
        "delivered"
    );
    assert_eq!(mx.messages().len(), 2);
    assert_eq!(
        rpt_counts(&recorder, "r1.test"),
        vec![("sts".to_string(), 1, vec![])],
        "one sts success, not also no-policy-found"
    );
    assert_eq!(
        rpt_counts(&recorder, "r2.test"),
        vec![(
            "sts".to_string(),
            0,
            vec![("certificate-host-mismatch".to_string(), 1)]
        )]
    );
}
