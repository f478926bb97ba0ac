//! The operator's side without a running relay: `check-config` warns when
//! no `[[dkim]]` key can sign mailed reports, and `tls-rpt preview` reads the
//! counts straight from the queue database when no admin API answers.

use std::time::Duration;

use danerelay::tlsrpt::{Failure, Policy, PolicyType, Recorder, ResultType, SessionResult};

use crate::cli::danerelay;
use crate::support::dnsenv::free_addr;

fn config(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let http = free_addr("127.0.0.1").unwrap();
    let text = format!(
        "hostname = \"relay.test\"\n[[listener]]\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n[queue]\npath = {:?}\n[http]\naddress = \"{http}\"\n{extra}",
        dir.join("queue").display()
    );
    let file = dir.join("danerelay.toml");
    std::fs::write(&file, text).unwrap();
    file
}

#[test]
fn check_config_warns_when_no_dkim_key_covers_the_report_sender() {
    let dir = tempfile::tempdir().unwrap();
    let file = config(dir.path(), "[tls_rpt]\nfrom = \"tlsrpt@reports.example\"\n");
    let out = danerelay()
        .arg("check-config")
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("warning: tls_rpt.from:") && stderr.contains("reports.example"),
        "{stderr}"
    );
    // A bad address is an error with its key path.
    let file = config(dir.path(), "[tls_rpt]\nfrom = \"no address\"\n");
    let out = danerelay()
        .arg("check-config")
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("tls_rpt.from:"), "{stderr}");
}

#[test]
fn preview_reads_the_queue_database_when_no_relay_runs() {
    let dir = tempfile::tempdir().unwrap();
    let file = config(dir.path(), "[tls_rpt]\norganization = \"Preview Org\"\n");
    let day = {
        let queue = danerelay_queue::Queue::open(
            &dir.path().join("queue"),
            danerelay_queue::QueueOptions {
                retry: vec![Duration::from_secs(300)],
                max_age: Duration::from_secs(86_400),
                lease: Duration::from_secs(3600),
            },
        )
        .unwrap();
        let recorder = Recorder::new(danerelay::tlsrpt::wall_clock());
        let dane = Policy {
            kind: PolicyType::Tlsa,
            strings: vec!["3 1 1 abcd".into()],
            mx_host: vec!["mx.a.example".into()],
        };
        for domain in ["a.example", "b.example"] {
            recorder.record(SessionResult {
                domain: domain.into(),
                policy: dane.clone(),
                failure: None,
            });
        }
        recorder.record(SessionResult {
            domain: "a.example".into(),
            policy: dane,
            failure: Some(Failure {
                result: ResultType::DaneRequired,
                sending_mta_ip: None,
                receiving_mx_hostname: Some("mx.a.example".into()),
                receiving_ip: None,
                reason: None,
            }),
        });
        recorder.persist(&queue).unwrap();
        recorder.today().to_string()
    };
    let out = danerelay()
        .args([
            "tls-rpt",
            "preview",
            "--domain",
            "A.example",
            "--date",
            &day,
            "--config",
        ])
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reports: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&stdout)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(reports.len(), 1, "{stdout}");
    let r = &reports[0];
    assert_eq!(r["organization-name"], "Preview Org");
    assert_eq!(r["contact-info"], "postmaster@relay.test");
    let p = &r["policies"][0];
    assert_eq!(p["policy"]["policy-domain"], "a.example");
    assert_eq!(p["summary"]["total-successful-session-count"], 1);
    assert_eq!(p["summary"]["total-failure-session-count"], 1);
    assert_eq!(p["failure-details"][0]["result-type"], "dane-required");

    // Both domains without --domain; nothing (and exit 0) for another day.
    let out = danerelay()
        .args(["tls-rpt", "preview", "--date", &day, "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("\"report-id\"")
            .count(),
        2
    );
    let out = danerelay()
        .args(["tls-rpt", "preview", "--date", "2001-01-01", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success() && out.stdout.is_empty());
    let out = danerelay()
        .args(["tls-rpt", "preview", "--date", "yesterday", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}
