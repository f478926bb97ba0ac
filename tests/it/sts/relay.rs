//! The relay end to end under MTA-STS: `danerelay::start` with the real
//! resolver path (trust-ad through the test unbound, TXT `_mta-sts` from a
//! knot-served zone), the policy from the Python policy host, delivery to
//! aiosmtpd MTAs with certificates from the test CA.
//!
//! | domain                  | MX certificate        | expected                        |
//! |-------------------------|-----------------------|---------------------------------|
//! | ste.insecure.example    | right name            | delivered, `sts-verified`        |
//! | stw.insecure.example    | wrong name            | deferred 4.7.5, nothing sent     |

use danerelay::metrics::{DeliveryOutcome, DeliveryTls, Label, StsFetchResult};
use danerelay::testing::enqueue;
use danerelay_queue::RecipientState;
use tokio_util::sync::CancellationToken;

use super::harness::{policy, Lab, PolicyServer};
use crate::delivery::mta::Mta;
use crate::delivery::{relay_config, settled};
use crate::support::dnsenv::{DnsEnv, Zone};
use crate::support::require_python;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_enforces_a_policy_discovered_over_real_dns() {
    let Some(python) = require_python(&["aiosmtpd"]) else {
        return;
    };
    let lab = Lab::new();
    let n = |s: &str| format!("{s}.insecure.example");
    let mut b = DnsEnv::builder();
    for (d, mx_ip, sts_ip) in [
        ("ste", "127.0.43.31", "127.0.43.32"),
        ("stw", "127.0.43.33", "127.0.43.34"),
    ] {
        for line in [
            format!("{d} MX 10 smtp.{d}"),
            format!("smtp.{d} A {mx_ip}"),
            format!("_mta-sts.{d} TXT \"v=STSv1; id=20261205T1;\""),
            format!("_mta-sts.{d} TXT \"v=spf1 -all\""),
            format!("mta-sts.{d} A {sts_ip}"),
        ] {
            b = b.record(Zone::Insecure, &line);
        }
    }
    let Some(env) = b.start() else { return };
    let mut servers = Vec::new();
    for (d, ip) in [("ste", "127.0.43.32"), ("stw", "127.0.43.34")] {
        let cert = lab.cert(&[&format!("mta-sts.{}", n(d))], false);
        let body = policy("enforce", &[&format!("smtp.{}", n(d))]);
        let Some(s) = PolicyServer::start(lab.dir.path(), ip, &cert, &body) else {
            return;
        };
        servers.push(s);
    }
    let right = lab.cert(&[&n("smtp.ste")], false);
    let wrong = lab.cert(&["smtp.elsewhere.test"], false);
    let m_right = Mta::start(
        &python,
        "127.0.43.31",
        Some((std::slice::from_ref(&right.cert), &right.key)),
    );
    let m_wrong = Mta::start(
        &python,
        "127.0.43.33",
        Some((std::slice::from_ref(&wrong.cert), &wrong.key)),
    );

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = relay_config(dir.path(), &env);
    cfg.mta_sts.ca_file = Some(lab.ca_file.clone());
    let running = danerelay::start(cfg, CancellationToken::new())
        .await
        .unwrap();
    let q = running.queue.clone();
    let sender = "alice@relay.test";
    let ok = enqueue(&q, sender, &[&format!("bob@{}", n("ste"))]);
    let bad = enqueue(&q, sender, &[&format!("bob@{}", n("stw"))]);

    assert_eq!(settled(&q, ok).await, None, "not delivered under enforce");
    let got = m_right.wait_for(1).await;
    assert!(got[0].tls);
    let (state, reply) = settled(&q, bad).await.unwrap();
    assert_eq!(state, RecipientState::Deferred);
    assert!(
        reply.contains("4.7.5") && reply.contains("MTA-STS"),
        "{reply}"
    );
    assert!(
        m_wrong.got().is_empty(),
        "nothing sent to a host with a wrong-name certificate"
    );

    let m = &running.metrics;
    let attempts = |o: DeliveryOutcome, t: DeliveryTls| {
        m.delivery_attempts_total
            .with_label_values(&[o.label(), t.label()])
            .get()
    };
    assert_eq!(
        attempts(DeliveryOutcome::Delivered, DeliveryTls::StsVerified),
        1
    );
    assert_eq!(
        m.mta_sts_fetch_total
            .with_label_values(&[StsFetchResult::Ok.label()])
            .get(),
        2
    );
    assert!(m
        .render()
        .contains("danerelay_mta_sts_fetch_total{result=\"ok\"} 2"));
    // The policies are in the queue database for the next start.
    assert_eq!(q.state_scan("mta-sts").unwrap().len(), 2);
    running.drain().await;
}
