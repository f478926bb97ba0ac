//! `tls-check` under MTA-STS: the policy and the per-host verdicts, on the
//! code delivery runs.

use std::time::Duration;

use danerelay::config::TlsLevel;
use danerelay::delivery::tls_check::check;
use danerelay::dns::{RecordType, Security};
use danerelay::testing::mx::Script;
use danerelay::testing::{engine_options, FakeMx};

use super::harness::{policy, Lab};

#[tokio::test(flavor = "multi_thread")]
async fn tls_check_shows_the_policy_and_each_hosts_verdict() {
    let lab = Lab::new();
    lab.publish("c1.test", "20261205", "127.0.43.21");
    let Some(_s) = lab.server("c1.test", "127.0.43.21", &policy("enforce", &["*.c1.test"])) else {
        return;
    };
    lab.dns.mx(
        "c1.test",
        Security::Insecure,
        &[
            (10, "mx.c1.test"),
            (20, "bad.c1.test"),
            (30, "mx.elsewhere.test"),
        ],
    );
    for h in ["mx.c1.test", "bad.c1.test", "mx.elsewhere.test"] {
        lab.dns.a(h, Security::Insecure, &["127.0.0.1"]);
        lab.dns.nodata(h, RecordType::Aaaa, Security::Insecure);
    }
    // One fake MX answers for all three names, with a certificate for the first.
    let cert = lab.cert(&["mx.c1.test"], false);
    let mx = FakeMx::listen(Script {
        tls: Some(cert.acceptor()),
        ..Script::by_local_part()
    })
    .await;
    let mut options = engine_options(mx.port, TlsLevel::Dane);
    options.sts = Some(lab.sts(Some(lab.queue()), Duration::from_secs(10)));
    let report = check(lab.dns.as_ref(), &options, "c1.test").await;
    let sts = report.mta_sts.as_ref().unwrap();
    assert_eq!(sts.mode.as_deref(), Some("enforce"));
    assert_eq!(sts.id.as_deref(), Some("20261205"));
    assert_eq!(sts.mx, ["*.c1.test"]);
    assert_eq!(sts.max_age, Some(86400));
    assert!(sts.cache_age.unwrap() < 60);
    let verdicts: Vec<(&str, &str)> = report
        .hosts
        .iter()
        .map(|h| (h.name.as_str(), h.verdict.as_str()))
        .collect();
    assert_eq!(verdicts[0], ("mx.c1.test", "sts-verified"));
    assert_eq!(verdicts[1].0, "bad.c1.test");
    assert!(
        verdicts[1].1.starts_with("defer:") && verdicts[1].1.contains("certificate-host-mismatch"),
        "{verdicts:?}"
    );
    assert_eq!(
        verdicts[2],
        (
            "mx.elsewhere.test",
            "defer: MX host not listed in the MTA-STS policy"
        )
    );
    assert!(report.deliverable());
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["mta_sts"]["mode"], "enforce");
}
