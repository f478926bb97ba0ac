//! The whole product through the real binary: `danerelay serve` with a
//! config file, a user added with `danerelay user add`, a message submitted
//! with Python's smtplib (STARTTLS + AUTH), delivered over DANE to a real
//! MTA — and the operator's round trip on the way: the first attempt defers
//! (the MX is down), `queue hold` → `queue list` shows it held → the MX comes
//! up → `queue release` → delivered, `dane-verified`.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::mta::Mta;
use crate::cli::{danerelay, free_port, wait_for_port, Server};
use crate::dane::{leaf, tlsa};
use crate::support::dnsenv::{DnsEnv, Zone};
use crate::support::require_python;

const USER: &str = "app@full.secure.example";
const PASSWORD: &str = "s3cret full path";
const RCPT: &str = "someone@dest.secure.example";
const MX_IP: &str = "127.0.25.31";

fn queue_cmd(http: u16, args: &[&str]) -> (bool, String) {
    let mut full: Vec<String> = vec!["queue".into()];
    full.extend(args.iter().map(|s| s.to_string()));
    full.extend(["--api".into(), format!("127.0.0.1:{http}")]);
    let out = danerelay().args(&full).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// The one message's state in `queue list --json`, `None` once it left.
fn listed_state(http: u16) -> Option<(String, String)> {
    let (ok, out) = queue_cmd(http, &["list", "--json"]);
    assert!(ok, "{out}");
    let list: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let m = list.as_array().unwrap().first()?;
    Some((
        m["id"].as_str().unwrap().to_string(),
        m["state"].as_str().unwrap().to_string(),
    ))
}

fn wait_until(what: &str, log: &std::path::Path, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}; relay log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn submit_hold_release_and_deliver_over_dane_through_serve() {
    let Some(python) = require_python(&["aiosmtpd"]) else {
        return;
    };
    let mx = leaf(&["smtp.dest.secure.example"], None, false);
    let Some(env) = DnsEnv::builder()
        .record(Zone::Secure, "dest MX 10 smtp.dest")
        .record(Zone::Secure, &format!("smtp.dest A {MX_IP}"))
        .record(
            Zone::Secure,
            &format!("_25._tcp.smtp.dest TLSA {}", tlsa(3, 1, 1, &mx.cert)),
        )
        .start()
    else {
        return;
    };

    // The relay's own certificate, users file and config.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cert = danerelay::testing::certs::self_signed(&["relay.test"]);
    std::fs::write(d.join("tls.crt"), cert.cert_pem()).unwrap();
    std::fs::write(d.join("tls.key"), cert.key_pem()).unwrap();
    let mut add = danerelay()
        .args(["user", "add", USER, "--users"])
        .arg(d.join("users.toml"))
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(add.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    assert!(add.wait().unwrap().success());

    let (smtp, http) = (free_port(), free_port());
    let config = d.join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "hostname = \"relay.test\"\nshutdown_grace = \"5s\"\n\
             [[listener]]\naddress = \"127.0.0.1:{smtp}\"\ntls = \"starttls\"\n\
             [tls]\ncertificate = {crt:?}\nprivate_key = {key:?}\n\
             [auth]\nusers_file = {users:?}\nsender_policy = \"own-address\"\n\
             [queue]\npath = {queue:?}\nretry = [\"1h\"]\n\
             [dns]\nnameservers = [\"{ns}\"]\ndnssec = \"trust-ad\"\ndnssec_probe = \".\"\n\
             [delivery]\ntls = \"dane\"\nconnect_timeout = \"3s\"\n\
             [http]\naddress = \"127.0.0.1:{http}\"\n",
            crt = d.join("tls.crt").display().to_string(),
            key = d.join("tls.key").display().to_string(),
            users = d.join("users.toml").display().to_string(),
            queue = d.join("queue").display().to_string(),
            ns = env.unbound_addr,
        ),
    )
    .unwrap();
    let check = danerelay()
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let log = d.join("relay.log");
    let mut relay = Server(
        danerelay()
            .args(["serve", "--config"])
            .arg(&config)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_for_port(http);
    wait_for_port(smtp);

    // Submit as a mail client would: STARTTLS, AUTH, own address.
    let submit = format!(
        r#"
import smtplib, ssl
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP("127.0.0.1", {smtp}, timeout=30)
s.starttls(context=ctx)
s.login("{USER}", "{PASSWORD}")
code, reply = s.docmd("MAIL FROM:<{USER}>")
assert code == 250, reply
code, reply = s.docmd("RCPT TO:<{RCPT}>")
assert code == 250, reply
code, reply = s.data(b"From: <{USER}>\r\nTo: <{RCPT}>\r\nSubject: full path\r\n\r\nover DANE\r\n")
print(code, reply.decode())
s.quit()
"#
    );
    let out = Command::new(&python)
        .args(["-c", &submit])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && printed.starts_with("250 2.0.0 Ok: queued as "),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = printed.trim().rsplit(' ').next().unwrap().to_string();

    // The MX is down: the first attempt defers (connection refused).
    wait_until("the first attempt to defer", &log, || {
        listed_state(http).is_some_and(|(_, s)| s == "deferred")
    });
    let (ok, out) = queue_cmd(http, &["hold", &id]);
    assert!(ok && out.contains("held"), "{out}");
    assert_eq!(listed_state(http), Some((id.clone(), "held".into())));

    let mta = Mta::start(
        &python,
        MX_IP,
        Some((std::slice::from_ref(&mx.cert), &mx.key)),
    );
    let (ok, out) = queue_cmd(http, &["release", &id]);
    assert!(ok && out.contains("released"), "{out}");
    wait_until("delivery after release", &log, || !mta.got().is_empty());
    let got = mta.got();
    assert_eq!(got.len(), 1);
    assert!(got[0].tls, "delivered without TLS");
    assert_eq!(got[0].from, USER);
    assert_eq!(got[0].rcpts, vec![RCPT.to_string()]);
    assert!(got[0].data.contains("Subject: full path"));
    assert!(got[0].data.contains("Received: from"), "{}", got[0].data);
    wait_until("the message to leave the queue", &log, || {
        listed_state(http).is_none()
    });

    let text = std::fs::read_to_string(&log).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains(&id) && l.contains("status=sent"))
        .unwrap_or_else(|| panic!("no delivery line for {id}:\n{text}"));
    assert!(line.contains("dane-verified (3 1 1"), "{line}");
    assert!(line.contains(&format!("[{MX_IP}]:25")), "{line}");

    // The counters moved: one submission, one deferral, one DANE delivery.
    let (status, metrics) = crate::cli::http_get(http, "/metrics");
    assert_eq!(status, 200);
    for expected in [
        "danerelay_messages_received_total 1",
        "danerelay_auth_failures_total 0",
        "danerelay_dnssec_validating 1",
        "danerelay_delivery_attempts_total{outcome=\"delivered\",tls=\"dane-verified\"} 1",
        "danerelay_delivery_attempts_total{outcome=\"deferred\",tls=\"none\"} 1",
        "danerelay_dane_results_total{result=\"ok\"} 1",
        "danerelay_delivery_tls_handshakes_total{handshake=\"full\"} 1",
        "danerelay_delivery_tls_handshakes_total{handshake=\"resumed\"} 0",
        "danerelay_queue_time_seconds_count 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == expected),
            "{expected:?} not in:\n{metrics}"
        );
    }
    let _ = relay.0.kill();
}
