//! Operations end to end with the real binary: graceful drain on SIGTERM
//! (readiness, in-flight DATA, nothing lost across a restart), JSON logs
//! that follow a message by queue id, and a /metrics exposition that a real
//! Prometheus parser accepts, with the counters moved by a submission.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cli::{danerelay, free_port, http_get, wait_for_ports_or_exit, Server};
use crate::support::require_python;

struct Relay {
    server: Server,
    smtp: u16,
    http: u16,
}

fn config(dir: &Path, smtp: u16, http: u16, grace: &str, extra: &str) -> std::path::PathBuf {
    let file = dir.join("relay.toml");
    std::fs::write(
        &file,
        format!(
            "hostname = \"relay.test\"\nshutdown_grace = \"{grace}\"\n\
             [[listener]]\naddress = \"127.0.0.1:{smtp}\"\ntls = \"none\"\n\
             [auth]\ntrusted_networks = [\"127.0.0.0/8\"]\n\
             [queue]\npath = {:?}\n[http]\naddress = \"127.0.0.1:{http}\"\n\
             [dns]\ndnssec = \"off\"\ndnssec_probe = \"\"\nnameservers = [\"127.0.0.1:9\"]\n\
             [delivery]\ntls = \"none\"\n{extra}",
            dir.join("queue").display()
        ),
    )
    .unwrap();
    file
}

fn start(dir: &Path, extra: &[&str]) -> Relay {
    start_with(dir, extra, "15s", "")
}

fn start_with(dir: &Path, extra: &[&str], grace: &str, toml: &str) -> Relay {
    for _ in 0..3 {
        let (smtp, http) = (free_port(), free_port());
        let file = config(dir, smtp, http, grace, toml);
        let mut args: Vec<&str> = extra.to_vec();
        args.extend(["serve", "--config", file.to_str().unwrap()]);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("relay.log"))
            .unwrap();
        let mut server = Server(
            danerelay()
                .args(&args)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        if wait_for_ports_or_exit(&mut server.0, &[http, smtp]) {
            return Relay { server, smtp, http };
        }
    }
    let log = std::fs::read_to_string(dir.join("relay.log")).unwrap_or_default();
    panic!("the relay exited at start three times:\n{log}");
}

/// A line-oriented SMTP conversation over a plain socket.
struct Smtp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Smtp {
    fn connect(port: u16) -> Smtp {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut c = Smtp {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        };
        assert!(c.reply().starts_with("220"));
        c
    }

    /// Reads one (possibly multi-line) reply; returns its last line.
    fn reply(&mut self) -> String {
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return line.trim_end().to_string();
            }
        }
    }

    fn cmd(&mut self, line: &str) -> String {
        self.send(line);
        self.reply()
    }

    fn send(&mut self, text: &str) {
        self.writer.write_all(text.as_bytes()).unwrap();
        self.writer.write_all(b"\r\n").unwrap();
    }
}

fn sigterm(pid: u32) {
    assert!(Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success());
}

fn wait_exit(server: &mut Server) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        assert!(Instant::now() < deadline, "relay did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn queued_id(reply: &str) -> String {
    assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
    reply.rsplit(' ').next().unwrap().to_string()
}

#[test]
fn sigterm_during_data_drains_then_the_message_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut relay = start(dir.path(), &[]);
    assert_eq!(http_get(relay.http, "/readyz").0, 200);

    let mut c = Smtp::connect(relay.smtp);
    assert!(c.cmd("EHLO client.test").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<app@example.org>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<user@example.net>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send("Subject: in flight during SIGTERM\r\n\r\nfirst half");

    sigterm(relay.server.0.id());
    // Readiness turns 503 while the session is still in DATA.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = http_get(relay.http, "/readyz");
        if status == 503 {
            assert_eq!(body, "draining\n");
            break;
        }
        assert!(Instant::now() < deadline, "readiness never went 503");
        std::thread::sleep(Duration::from_millis(20));
    }
    // New connections are refused once draining.
    let refused = TcpStream::connect(("127.0.0.1", relay.smtp))
        .map(|mut s| {
            let mut buf = [0u8; 64];
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            matches!(s.read(&mut buf), Ok(0) | Err(_)) || buf.starts_with(b"421")
        })
        .unwrap_or(true);
    assert!(refused, "a new session was served while draining");

    // The DATA in progress completes and is stored durably…
    let log = || std::fs::read_to_string(dir.path().join("relay.log")).unwrap_or_default();
    c.writer
        .write_all(b"second half\r\n.\r\n")
        .unwrap_or_else(|e| panic!("session cut during drain ({e}):\n{}", log()));
    let id = queued_id(&c.reply());
    // …and, now idle, the session is told the server is going away.
    let bye = c.reply();
    assert!(bye.starts_with("421 4.3.2"), "{bye}");
    assert_eq!(wait_exit(&mut relay.server), 0);

    // Restart on the same queue: the message is there, intact.
    let relay = start(dir.path(), &[]);
    let out = danerelay()
        .args([
            "queue",
            "show",
            &id,
            "--api",
            &format!("127.0.0.1:{}", relay.http),
        ])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains("app@example.org") && shown.contains("user@example.net"),
        "{shown}"
    );
}

#[test]
fn json_logs_follow_a_message_by_queue_id() {
    let dir = tempfile::tempdir().unwrap();
    let mut relay = start(dir.path(), &["--log-format", "json"]);
    let mut c = Smtp::connect(relay.smtp);
    assert!(c.cmd("EHLO client.test").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<app@example.org>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<user@example.net>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    let id = queued_id(&c.cmd("Subject: json\r\n\r\nhello\r\n."));
    assert!(c.cmd("QUIT").starts_with("221"));
    sigterm(relay.server.0.id());
    assert_eq!(wait_exit(&mut relay.server), 0);
    let log = std::fs::read_to_string(dir.path().join("relay.log")).unwrap();
    let events: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(events
        .iter()
        .all(|e| e["level"].is_string() && e["timestamp"].is_string()));
    let accepted: Vec<_> = events
        .iter()
        .filter(|e| e["queue_id"].as_str() == Some(id.as_str()))
        .collect();
    assert!(
        !accepted.is_empty(),
        "no event carries queue_id {id}:\n{log}"
    );
}

#[test]
fn metrics_exposition_parses_with_the_prometheus_client_parser() {
    let Some(python) = require_python(&["prometheus_client"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut relay = start(dir.path(), &[]);
    let mut c = Smtp::connect(relay.smtp);
    assert!(c.cmd("EHLO client.test").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<app@example.org>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<user@example.net>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    queued_id(&c.cmd("Subject: metrics\r\n\r\nhello\r\n."));
    assert!(c.cmd("QUIT").starts_with("221"));

    let (status, text) = http_get(relay.http, "/metrics");
    assert_eq!(status, 200);
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        key = s.name + json.dumps(s.labels, sort_keys=True)
        out[key] = s.value
print(json.dumps(out))
"#;
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client rejected the exposition: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let samples: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let value = |key: &str| {
        samples[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} missing"))
    };
    assert_eq!(value("danerelay_ready{}"), 1.0);
    assert!(value("danerelay_messages_received_total{}") >= 1.0);
    assert!(value("danerelay_received_bytes_total{}") > 0.0);
    assert_eq!(
        value("danerelay_dane_results_total{\"result\": \"mismatch\"}"),
        0.0
    );
    for key in samples.as_object().unwrap().keys() {
        assert!(key.starts_with("danerelay_"), "{key}");
    }
    sigterm(relay.server.0.id());
    assert_eq!(wait_exit(&mut relay.server), 0);
}

/// A peer that accepts a whole transaction but never answers the final dot:
/// the delivery is in flight when SIGTERM comes. Returns its port and a flag
/// raised once the dot arrived.
fn tarpit_mx() -> (u16, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got_dot = std::sync::Arc::new(AtomicBool::new(false));
    let flag = got_dot.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut w) = conn else { return };
            let flag = flag.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(w.try_clone().unwrap());
                let _ = w.write_all(b"220 tarpit ESMTP\r\n");
                let mut in_data = false;
                let mut line = String::new();
                while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                    let l = line.trim_end().to_string();
                    line.clear();
                    if in_data {
                        if l == "." {
                            flag.store(true, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_secs(3600));
                        }
                        continue;
                    }
                    let reply: &[u8] = match l.get(..4).unwrap_or("").to_ascii_uppercase().as_str()
                    {
                        "EHLO" => b"250 tarpit\r\n",
                        "DATA" => {
                            in_data = true;
                            b"354 go ahead\r\n"
                        }
                        "QUIT" => return,
                        _ => b"250 ok\r\n",
                    };
                    let _ = w.write_all(reply);
                }
            });
        }
    });
    (port, got_dot)
}

#[test]
fn sigterm_during_a_delivery_loses_nothing_and_marks_nothing_delivered() {
    use std::sync::atomic::Ordering;
    let (mx_port, got_dot) = tarpit_mx();
    let dir = tempfile::tempdir().unwrap();
    let route = format!(
        "[[delivery.route]]\ndomain = \"slow.test\"\nnext_hop = \"[127.0.0.1]:{mx_port}\"\n"
    );
    let mut relay = start_with(dir.path(), &[], "3s", &route);
    let mut c = Smtp::connect(relay.smtp);
    assert!(c.cmd("EHLO client.test").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<app@example.org>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<user@slow.test>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    let id = queued_id(&c.cmd("Subject: slow peer\r\n\r\nhello\r\n."));
    assert!(c.cmd("QUIT").starts_with("221"));

    let deadline = Instant::now() + Duration::from_secs(30);
    while !got_dot.load(Ordering::SeqCst) {
        assert!(
            Instant::now() < deadline,
            "the delivery never reached the peer"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The peer holds the final reply; SIGTERM now, mid-delivery.
    let stopped = Instant::now();
    sigterm(relay.server.0.id());
    assert_eq!(wait_exit(&mut relay.server), 0);
    assert!(
        stopped.elapsed() < Duration::from_secs(10),
        "the drain overran shutdown_grace: {:?}",
        stopped.elapsed()
    );

    // Restart: the message is still queued, its recipient still open.
    let relay = start_with(dir.path(), &[], "3s", "");
    let out = danerelay()
        .args([
            "queue",
            "show",
            &id,
            "--api",
            &format!("127.0.0.1:{}", relay.http),
        ])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    let rcpt = shown
        .lines()
        .find(|l| l.contains("user@slow.test"))
        .unwrap_or_else(|| panic!("{shown}"));
    assert!(
        rcpt.contains(" pending ") || rcpt.contains(" deferred "),
        "an unanswered delivery must stay open: {rcpt}"
    );
}
