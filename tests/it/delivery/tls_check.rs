//! `danerelay tls-check DOMAIN --config FILE [--json]` against real MTAs and
//! the test unbound: one domain per verdict.

use std::process::Command;

use super::mta::Mta;
use crate::dane::{leaf, tlsa};
use crate::support::dnsenv::{DnsEnv, Zone};
use crate::support::require_python;
use danerelay::config::DnssecMode;

fn run(config: &std::path::Path, domain: &str, json: bool) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_danerelay"));
    cmd.args(["tls-check", domain, "--config"]).arg(config);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_check_reports_each_verdict() {
    let Some(python) = require_python(&["aiosmtpd"]) else {
        return;
    };
    let ee = leaf(&["mx.chk-ee.secure.example"], None, false);
    let other = leaf(&["unrelated.test"], None, false);
    let rec = |owner: &str, r: danerelay::dane::TlsaRecord| format!("_25._tcp.{owner} TLSA {r}");
    let b = DnsEnv::builder()
        .record(Zone::Secure, "chk-ee MX 10 mx.chk-ee")
        .record(Zone::Secure, "mx.chk-ee A 127.0.25.41")
        .record(Zone::Secure, &rec("mx.chk-ee", tlsa(3, 1, 1, &ee.cert)))
        .record(Zone::Secure, "chk-tls MX 10 mx.chk-tls")
        .record(Zone::Secure, "mx.chk-tls A 127.0.25.42")
        .record(Zone::Secure, "chk-plain MX 10 mx.chk-plain")
        .record(Zone::Secure, "mx.chk-plain A 127.0.25.43")
        .record(Zone::Secure, "chk-nost MX 10 mx.chk-nost")
        .record(Zone::Secure, "mx.chk-nost A 127.0.25.44")
        .record(
            Zone::Secure,
            &rec("mx.chk-nost", tlsa(3, 1, 1, &other.cert)),
        )
        .record(Zone::Secure, "chk-wrong MX 10 mx.chk-wrong")
        .record(Zone::Secure, "mx.chk-wrong A 127.0.25.46")
        .record(
            Zone::Secure,
            &rec("mx.chk-wrong", tlsa(3, 1, 1, &other.cert)),
        )
        .record(Zone::Secure, "chk-bogus MX 10 mx.chk-bogus")
        .record(Zone::Secure, "mx.chk-bogus A 127.0.25.45")
        .record(
            Zone::Secure,
            "_25._tcp.mx.chk-bogus CNAME _25._tcp.mx.bogus.example.",
        );
    let Some(env) = b.start() else { return };
    let _ee = Mta::start(
        &python,
        "127.0.25.41",
        Some((std::slice::from_ref(&ee.cert), &ee.key)),
    );
    let _tls = Mta::start(
        &python,
        "127.0.25.42",
        Some((std::slice::from_ref(&other.cert), &other.key)),
    );
    let plain = Mta::start(&python, "127.0.25.43", None);
    let _nost = Mta::start(&python, "127.0.25.44", None);
    let wrong = Mta::start(
        &python,
        "127.0.25.46",
        Some((std::slice::from_ref(&ee.cert), &ee.key)),
    );
    let bogus = Mta::start(
        &python,
        "127.0.25.45",
        Some((std::slice::from_ref(&other.cert), &other.key)),
    );

    let dir = tempfile::tempdir().unwrap();
    let unbound = env.dns_config(DnssecMode::TrustAd).nameservers[0];
    let config = dir.path().join("danerelay.toml");
    std::fs::write(
        &config,
        format!(
            "hostname = \"relay.test\"\n[[listener]]\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n[queue]\npath = {:?}\n\
             [dns]\nnameservers = [\"{unbound}\"]\ndnssec = \"trust-ad\"\n\
             [delivery]\nconnect_timeout = \"5s\"\n",
            dir.path().join("q").display()
        ),
    )
    .unwrap();

    let (code, out) = run(&config, "chk-ee.secure.example", false);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("MX DNSSEC: secure"), "{out}");
    assert!(out.contains("addresses (secure): 127.0.25.41"), "{out}");
    assert!(
        out.contains(&format!("{} — usable", tlsa(3, 1, 1, &ee.cert))),
        "{out}"
    );
    assert!(out.contains("STARTTLS offered: yes"), "{out}");
    assert!(out.contains("DANE match: 3 1 1, depth 0"), "{out}");
    assert!(out.contains("TLS: TLSv1.3 "), "{out}");
    assert!(out.contains("verdict: dane-verified"), "{out}");

    let verdict = |domain: &str| {
        let (code, out) = run(&config, domain, true);
        let v: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        (code, v)
    };
    let (code, v) = verdict("chk-ee.secure.example");
    assert_eq!(
        (code, v["hosts"][0]["verdict"].as_str()),
        (0, Some("dane-verified"))
    );
    assert_eq!(v["hosts"][0]["dane_match"], "3 1 1, depth 0");

    let (code, v) = verdict("chk-tls.secure.example");
    assert_eq!(
        (code, v["hosts"][0]["verdict"].as_str()),
        (0, Some("tls-unauthenticated")),
        "{v}"
    );
    assert_eq!(
        v["hosts"][0]["tlsa_lookup"],
        "secure at mx.chk-tls.secure.example"
    );
    assert_eq!(v["hosts"][0]["starttls_offered"], true);

    let (code, v) = verdict("chk-plain.secure.example");
    assert_eq!(
        (code, v["hosts"][0]["verdict"].as_str()),
        (0, Some("plaintext")),
        "{v}"
    );
    assert_eq!(v["hosts"][0]["starttls_offered"], false);

    let (code, v) = verdict("chk-nost.secure.example");
    assert_eq!(code, 1, "{v}");
    let text = v["hosts"][0]["verdict"].as_str().unwrap();
    assert!(
        text.starts_with("defer: ") && text.contains("4.7.4"),
        "{text}"
    );
    assert_eq!(v["hosts"][0]["starttls_offered"], false);

    let (code, v) = verdict("chk-wrong.secure.example");
    assert_eq!(code, 1, "{v}");
    let text = v["hosts"][0]["verdict"].as_str().unwrap();
    assert!(
        text.starts_with("defer: ") && text.contains("DANE verification"),
        "{text}"
    );
    assert!(v["hosts"][0]["tls_version"].is_null(), "{v}");

    let (code, v) = verdict("chk-bogus.secure.example");
    assert_eq!(code, 1, "{v}");
    let text = v["hosts"][0]["verdict"].as_str().unwrap();
    assert!(text.starts_with("defer: TLSA lookup failed"), "{text}");
    assert!(
        v["hosts"][0]["connected"].is_null(),
        "no connection without a policy: {v}"
    );

    let (code, v) = verdict("nullmx.secure.example");
    assert_eq!(code, 1, "{v}");
    assert!(v["error"].as_str().unwrap().contains("5.1.10"), "{v}");

    // tls-check never sends mail.
    assert!(plain.got().is_empty() && bogus.got().is_empty() && wrong.got().is_empty());
}
