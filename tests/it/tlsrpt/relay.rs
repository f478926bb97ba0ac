//! The whole TLS-RPT path against real peers: a validating unbound over a
//! signed zone publishing `_smtp._tls` and TLSA records, aiosmtpd MTAs, and
//! a report receiver over SMTP (aiosmtpd, whose TLSA record does *not* match
//! its certificate) and HTTPS (Python `http.server` over TLS, test CA).
//! Three messages to a domain whose first MX fails DANE and whose second
//! passes: the counts (read with `tls-rpt preview`, also after a restart)
//! equal the sessions made; after the day, the report reaches both `rua`s,
//! parsed with Python's `email`, DKIM-verified with dkimpy, gunzipped and
//! validated against the RFC 8460 schema — and the mailed one was delivered
//! despite the receiver's DANE failure, which defers ordinary mail.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use danerelay::testing::{certs, enqueue};
use danerelay_queue::RecipientState;
use tokio_util::sync::CancellationToken;

use crate::cli::danerelay;
use crate::dane::{leaf, tlsa};
use crate::delivery::mta::Mta;
use crate::delivery::{relay_config, settled};
use crate::support::dnsenv::{DnsEnv, Zone};
use crate::support::require_python;

const HTTPS_SERVER: &str = r#"
import base64, http.server, json, ssl, sys
host, cert, key = sys.argv[1], sys.argv[2], sys.argv[3]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        print(json.dumps({"path": self.path, "type": self.headers.get("Content-Type"),
                          "body": base64.b64encode(body).decode()}), flush=True)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
srv = http.server.HTTPServer((host, 443), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print("ready", flush=True)
srv.serve_forever()
"#;

const PARSE_MAIL: &str = r#"
import base64, email, gzip, json, sys
from email import policy
msg = email.message_from_bytes(base64.b64decode(sys.stdin.read()), policy=policy.default)
out = {"subject": str(msg["Subject"]), "domain": str(msg["TLS-Report-Domain"]),
       "submitter": str(msg["TLS-Report-Submitter"]), "type": msg.get_content_type(),
       "report_type": msg.get_param("report-type")}
for part in msg.walk():
    if part.get_content_type() == "application/tlsrpt+gzip":
        out["filename"] = part.get_filename()
        out["report"] = json.loads(gzip.decompress(part.get_payload(decode=True)))
print(json.dumps(out))
"#;

/// The HTTPS report receiver; killed on drop.
struct Receiver {
    child: Child,
    got: Arc<Mutex<Vec<serde_json::Value>>>,
    _dir: tempfile::TempDir,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Receiver {
    fn start(python: &std::path::Path, ip: &str, node: &certs::Node) -> Receiver {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, node.cert_pem()).unwrap();
        std::fs::write(&key, node.key.serialize_pem()).unwrap();
        let mut child = Command::new(python)
            .args(["-c", HTTPS_SERVER, ip])
            .args([&cert, &key])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        assert_eq!(first.trim(), "ready", "https receiver did not start");
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                sink.lock()
                    .unwrap()
                    .push(serde_json::from_str(&line).unwrap());
            }
        });
        Receiver {
            child,
            got,
            _dir: dir,
        }
    }
}

fn gunzip(gz: &[u8]) -> serde_json::Value {
    use std::io::Read;
    let mut text = String::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_string(&mut text)
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn preview(http: std::net::SocketAddr, day: &str) -> Vec<serde_json::Value> {
    let out = danerelay()
        .args([
            "tls-rpt",
            "preview",
            "--date",
            day,
            "--domain",
            "dest.secure.example",
        ])
        .args(["--api", &http.to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::Deserializer::from_str(&stdout)
        .into_iter::<serde_json::Value>()
        .map(Result::unwrap)
        .collect()
}

/// The `tlsa` policy of `mx` in a report.
fn policy<'a>(report: &'a serde_json::Value, mx: &str) -> &'a serde_json::Value {
    report["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["policy"]["mx-host"][0] == mx)
        .unwrap_or_else(|| panic!("no policy for {mx}: {report:#}"))
}

fn assert_counts(report: &serde_json::Value) {
    assert_eq!(
        report["policies"].as_array().unwrap().len(),
        2,
        "{report:#}"
    );
    let good = policy(report, "good.dest.secure.example");
    assert_eq!(good["policy"]["policy-type"], "tlsa");
    assert_eq!(good["summary"]["total-successful-session-count"], 3);
    assert_eq!(good["summary"]["total-failure-session-count"], 0);
    let bad = policy(report, "bad.dest.secure.example");
    assert_eq!(bad["summary"]["total-successful-session-count"], 0);
    assert_eq!(bad["summary"]["total-failure-session-count"], 3);
    let f = &bad["failure-details"][0];
    assert_eq!(f["result-type"], "tlsa-invalid");
    assert_eq!(f["receiving-ip"], "127.0.26.11");
    assert_eq!(f["receiving-mx-hostname"], "bad.dest.secure.example");
    assert_eq!(f["failed-session-count"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_count_the_sessions_made_and_reach_mailto_and_https_receivers() {
    let Some(python) = require_python(&["aiosmtpd", "dkim", "nacl", "jsonschema"]) else {
        return;
    };
    let s = |name: &str| format!("{name}.secure.example");
    let good = leaf(&[&s("good.dest")], None, false);
    let bad = leaf(&[&s("bad.dest")], None, false);
    let other = leaf(&["unrelated.test"], None, false);
    let rmx = leaf(&[&s("mx.reports")], None, false);
    let ca = certs::ca("TLS-RPT test CA", None, false);
    let web = certs::leaf(&[&s("rua.reports")], Some(&ca), false);
    let rec = |owner: &str, r: danerelay::dane::TlsaRecord| format!("_25._tcp.{owner} TLSA {r}");
    let mut b = DnsEnv::builder();
    for line in [
        "dest MX 10 bad.dest".to_string(),
        "dest MX 20 good.dest".into(),
        "bad.dest A 127.0.26.11".into(),
        rec("bad.dest", tlsa(3, 1, 1, &other.cert)),
        "good.dest A 127.0.26.12".into(),
        rec("good.dest", tlsa(3, 1, 1, &good.cert)),
        format!(
            "_smtp._tls.dest TXT \"v=TLSRPTv1; rua=mailto:tlsrpt@{},https://{}/v1/tlsrpt\"",
            s("reports"),
            s("rua.reports")
        ),
        "reports MX 10 mx.reports".into(),
        "mx.reports A 127.0.26.13".into(),
        rec("mx.reports", tlsa(3, 1, 1, &other.cert)),
        "rua.reports A 127.0.26.14".into(),
    ] {
        b = b.record(Zone::Secure, &line);
    }
    let Some(env) = b.start() else { return };
    let _m_bad = Mta::start(
        &python,
        "127.0.26.11",
        Some((std::slice::from_ref(&bad.cert), &bad.key)),
    );
    let m_good = Mta::start(
        &python,
        "127.0.26.12",
        Some((std::slice::from_ref(&good.cert), &good.key)),
    );
    let m_reports = Mta::start(
        &python,
        "127.0.26.13",
        Some((std::slice::from_ref(&rmx.cert), &rmx.key)),
    );
    let https = Receiver::start(&python, "127.0.26.14", &web);

    let dir = tempfile::tempdir().unwrap();
    let key = crate::dkim::keygen(dir.path(), "relay.test", "rpt", "ed25519");
    let mut cfg = relay_config(dir.path(), &env);
    cfg.dkim = vec![danerelay::dkim::key::KeyConfig {
        domain: "relay.test".into(),
        selector: "rpt".into(),
        private_key: key.path.clone(),
        subdomains: false,
    }];
    cfg.tls_rpt.from_signed = true;
    cfg.tls_rpt.max_delay = Duration::ZERO;
    cfg.tls_rpt.extra_roots = vec![ca.cert.clone()];
    let running = danerelay::start(cfg.clone(), CancellationToken::new())
        .await
        .unwrap();

    // Three messages, each in its own session (the idle session lingers 2 s).
    for i in 0..3 {
        let id = enqueue(
            &running.queue,
            "app@relay.test",
            &[&format!("u{i}@dest.secure.example")],
        );
        assert_eq!(
            settled(&running.queue, id).await,
            None,
            "message {i} delivered"
        );
        tokio::time::sleep(Duration::from_millis(2600)).await;
    }
    assert_eq!(m_good.got().len(), 3);
    // Ordinary mail to the report receiver's domain defers: its TLSA do not match.
    let plain = enqueue(
        &running.queue,
        "app@relay.test",
        &[&format!("tlsrpt@{}", s("reports"))],
    );
    let (state, reply) = settled(&running.queue, plain).await.unwrap();
    assert_eq!(state, RecipientState::Deferred, "{reply}");
    running.queue.delete(plain).unwrap();

    let today = danerelay::tlsrpt::Day::of(SystemTime::now()).to_string();
    let seen = preview(running.http_address, &today);
    assert_eq!(seen.len(), 1);
    assert_counts(&seen[0]);
    crate::tlsrpt::schema::validate(&python, &seen[0]).unwrap();

    // A restart keeps the counts.
    running.drain().await;
    let running = danerelay::start(cfg.clone(), CancellationToken::new())
        .await
        .unwrap();
    let seen = preview(running.http_address, &today);
    assert_counts(&seen[0]);
    // (The reports domain was counted too, by the deferred message.)

    // The day is over: report time.
    let resolver = danerelay::dns::start(&cfg.dns).await.unwrap();
    let sender = danerelay::tlsrpt::sender::Sender {
        queue: running.queue.clone(),
        dns: resolver.lookup,
        config: cfg.tls_rpt.clone(),
        submitter: "relay.test".into(),
        signer: Arc::new(
            danerelay::dkim::Signer::load(&cfg.dkim, running.metrics.clone()).unwrap(),
        ),
        recorder: running.tls_rpt.clone().unwrap(),
        metrics: running.metrics.clone(),
        tls: danerelay::tlsrpt::https::client_config(&cfg.tls_rpt.extra_roots),
        // A day and a bit ahead: today's reports are due.
        clock: Arc::new(|| SystemTime::now() + Duration::from_secs(86_400 + 60)),
    };
    sender.round().await;

    // HTTPS: one POST of the gzip'd report.
    let start = Instant::now();
    while https.got.lock().unwrap().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(30), "no POST");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let post = https.got.lock().unwrap()[0].clone();
    assert_eq!(post["path"], "/v1/tlsrpt");
    assert_eq!(post["type"], "application/tlsrpt+gzip");
    let body = base64::engine::general_purpose::STANDARD
        .decode(post["body"].as_str().unwrap())
        .unwrap();
    let posted = gunzip(&body);
    assert_counts(&posted);
    crate::tlsrpt::schema::validate(&python, &posted).unwrap();
    assert_eq!(
        posted["report-id"],
        format!("{today}_dest.secure.example@relay.test")
    );

    // mailto: delivered despite the DANE failure at the receiver's MX.
    let got = m_reports.wait_for(1).await;
    assert_eq!(got[0].rcpts, vec![format!("tlsrpt@{}", s("reports"))]);
    assert_eq!(got[0].from, "noreply-smtp-tls-reporting@relay.test");
    assert!(got[0].tls, "opportunistic TLS still used");
    let raw = got[0].data.chars().map(|c| c as u8).collect::<Vec<u8>>();
    let verdicts = crate::dkim::dkimpy_verify(
        &python,
        std::slice::from_ref(&key),
        std::slice::from_ref(&raw),
    );
    assert!(
        verdicts[0].iter().any(|v| v.ok && v.d == "relay.test"),
        "{verdicts:?}"
    );
    let b64 = base64::engine::general_purpose::STANDARD.encode(&raw);
    let (ok, out) = crate::tlsrpt::schema::run_python(&python, PARSE_MAIL, &[], b64.as_bytes());
    assert!(ok, "{out}");
    let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(parsed["type"], "multipart/report");
    assert_eq!(parsed["report_type"], "tlsrpt");
    assert_eq!(parsed["domain"], "dest.secure.example");
    assert_eq!(parsed["submitter"], "relay.test");
    assert_eq!(
        parsed["subject"],
        format!("Report Domain: dest.secure.example Submitter: relay.test Report-ID: <{today}_dest.secure.example@relay.test>")
    );
    assert!(parsed["filename"].as_str().unwrap().ends_with(".json.gz"));
    assert_eq!(parsed["report"], posted, "the same report to both ruas");
    assert!(running
        .metrics
        .render()
        .contains("danerelay_tls_rpt_reports_total{result=\"sent\",transport=\"https\"} 1"));
    // Sent state is durable: another round sends nothing more.
    sender.round().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(https.got.lock().unwrap().len(), 1);
    running.drain().await;
}
