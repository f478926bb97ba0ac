//! `queue drain` between two `danerelay serve` processes: A holds mail for
//! an unreachable destination, B (STARTTLS, a `relay = true` account,
//! delivery paused so it keeps what it gets) receives every message with
//! its envelope, DSN parameters and arrival time; A ends empty. A `kill -9`
//! of A in the middle, a restart and a second drain lose nothing and
//! duplicate at most the one message in flight.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cli::{danerelay, free_port, http_get, wait_for_port, Server};

const RELAY_USER: &str = "relay@b.test";
const RELAY_PASSWORD: &str = "hand it over";

struct Relay {
    server: Option<Server>,
    smtp: u16,
    http: u16,
    config: PathBuf,
    log: PathBuf,
}

impl Relay {
    fn start(dir: &Path, text: &str, smtp: u16, http: u16) -> Relay {
        let config = dir.join("danerelay.toml");
        std::fs::write(&config, text).unwrap();
        let mut r = Relay {
            server: None,
            smtp,
            http,
            config,
            log: dir.join("log"),
        };
        r.restart();
        r
    }

    fn restart(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = danerelay()
            .args(["serve", "--config"])
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.server = Some(Server(child));
        wait_for_port(self.smtp);
        wait_for_port(self.http);
    }

    /// kill -9.
    fn kill(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.0.kill().unwrap();
            s.0.wait().unwrap();
            std::mem::forget(s);
        }
    }

    fn queue(&self, args: &[&str]) -> (i32, String) {
        let out = danerelay()
            .arg("queue")
            .args(args)
            .args(["--api", &format!("127.0.0.1:{}", self.http)])
            .env_remove("DANERELAY_ADMIN_TOKEN")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }

    fn list(&self) -> Vec<serde_json::Value> {
        let (code, out) = self.queue(&["list", "--json"]);
        assert_eq!(code, 0, "{out}");
        serde_json::from_str::<serde_json::Value>(out.trim())
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// B: receives over STARTTLS with AUTH, keeps everything queued.
fn relay_b(dir: &Path) -> Relay {
    let cert = danerelay::testing::certs::self_signed(&["b.test"]);
    std::fs::write(dir.join("tls.crt"), cert.cert_pem()).unwrap();
    std::fs::write(dir.join("tls.key"), cert.key_pem()).unwrap();
    let users = dir.join("users.toml");
    let mut add = danerelay()
        .args(["user", "add", RELAY_USER, "--relay", "--users"])
        .arg(&users)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(add.stdin.take().unwrap(), "{RELAY_PASSWORD}").unwrap();
    assert!(add.wait().unwrap().success());
    let mut add = danerelay()
        .args(["user", "add", "app@b.test", "--users"])
        .arg(&users)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(add.stdin.take().unwrap(), "app password").unwrap();
    assert!(add.wait().unwrap().success());
    let (smtp, http) = (free_port(), free_port());
    let text = format!(
        "hostname = \"b.test\"\n[[listener]]\naddress = \"127.0.0.1:{smtp}\"\ntls = \"starttls\"\n\
         [tls]\ncertificate = {:?}\nprivate_key = {:?}\n\
         [auth]\nusers_file = {users:?}\nsender_policy = \"own-address\"\n\
         [queue]\npath = {:?}\n[http]\naddress = \"127.0.0.1:{http}\"\n\
         [dns]\ndnssec = \"off\"\ndnssec_probe = \"\"\n[delivery]\npaused = true\n",
        dir.join("tls.crt"),
        dir.join("tls.key"),
        dir.join("queue"),
    );
    Relay::start(dir, &text, smtp, http)
}

/// A: takes mail from loopback, defers it (the destination is unreachable).
fn relay_a(dir: &Path) -> Relay {
    let (smtp, http) = (free_port(), free_port());
    let text = format!(
        "hostname = \"a.test\"\n[[listener]]\naddress = \"127.0.0.1:{smtp}\"\ntls = \"none\"\n\
         [auth]\ntrusted_networks = [\"127.0.0.0/8\"]\nsender_policy = \"any\"\n\
         [queue]\npath = {:?}\nretry = [\"1h\"]\n[http]\naddress = \"127.0.0.1:{http}\"\n\
         [dns]\ndnssec = \"off\"\ndnssec_probe = \"\"\n[delivery]\ntls = \"none\"\n\
         [[delivery.route]]\ndomain = \"dest.example\"\nnext_hop = \"[127.0.0.1]:{}\"\n",
        dir.join("queue"),
        free_port(), // nothing listens there
    );
    Relay::start(dir, &text, smtp, http)
}

/// Submits `n` messages to A over one plain SMTP session (trusted network),
/// message `i` to `m<i>@dest.example` with DSN parameters; the first from `<>`.
fn submit(port: u16, n: usize) {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let mut reply = || loop {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        if l.as_bytes().get(3) != Some(&b'-') {
            return l;
        }
    };
    assert!(reply().starts_with("220"));
    let mut cmd = |c: String, want: &str| {
        w.write_all(c.as_bytes()).unwrap();
        let got = reply();
        assert!(got.starts_with(want), "{c}: {got}");
    };
    cmd("EHLO app.test\r\n".into(), "250");
    for i in 0..n {
        let from = if i == 0 { "" } else { "app@example.org" };
        cmd(
            format!("MAIL FROM:<{from}> RET=HDRS ENVID=env{i}\r\n"),
            "250",
        );
        cmd(
            format!("RCPT TO:<m{i}@dest.example> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;orig{i}@dest.example\r\n"),
            "250",
        );
        cmd("DATA\r\n".into(), "354");
        cmd(format!("Subject: m{i}\r\n\r\nbody {i}\r\n.\r\n"), "250");
    }
    cmd("QUIT\r\n".into(), "221");
}

fn wait_until(what: &str, log: &dyn Fn() -> String, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}; log:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The one recipient of each listed message, with the message.
fn by_recipient(list: &[serde_json::Value]) -> HashMap<String, Vec<serde_json::Value>> {
    let mut out: HashMap<String, Vec<serde_json::Value>> = HashMap::new();
    for m in list {
        let rcpt = m["recipients"][0]["address"].as_str().unwrap().to_string();
        out.entry(rcpt).or_default().push(m.clone());
    }
    out
}

/// `queue drain --to B` as the relay account (password in a file under `dir`).
fn drain_args(dir: &Path, b: &Relay) -> Vec<String> {
    let p = dir.join("relay.password");
    std::fs::write(&p, format!("{RELAY_PASSWORD}\n")).unwrap();
    let to = format!("127.0.0.1:{}", b.smtp);
    let pw = p.to_str().unwrap().to_string();
    [
        "drain",
        "--to",
        &to,
        "--user",
        RELAY_USER,
        "--password-file",
        &pw,
    ]
    .map(String::from)
    .to_vec()
}

#[test]
fn drain_hands_every_message_over_with_envelope_dsn_and_arrival() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let b = relay_b(db.path());
    let a = relay_a(da.path());
    submit(a.smtp, 6);
    let before = a.list();
    assert_eq!(before.len(), 6);
    let held = before[1]["id"].as_str().unwrap().to_string();
    assert_eq!(a.queue(&["hold", &held]).0, 0);
    wait_until("A deferred its mail", &|| a.log(), || {
        a.list().iter().filter(|m| m["state"] == "deferred").count() == 5
    });

    let args = drain_args(da.path(), &b);
    let (code, out) = a.queue(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{out}\nA:\n{}\nB:\n{}", a.log(), b.log());
    assert!(
        out.contains("done: handed over 6, kept 0, remaining 0"),
        "{out}"
    );
    assert!(a.list().is_empty());
    let (status, body) = http_get(a.http, "/readyz");
    assert_eq!((status, body.trim()), (503, "draining"));
    // New mail is refused while draining.
    let mut s = TcpStream::connect(("127.0.0.1", a.smtp)).unwrap();
    let mut greeting = String::new();
    BufReader::new(&mut s).read_line(&mut greeting).unwrap();
    assert!(greeting.starts_with("421 4.3.2"), "{greeting}");

    let got = by_recipient(&b.list());
    assert_eq!(got.len(), 6, "{got:?}");
    for m in &before {
        let rcpt = &m["recipients"][0];
        let on_b = &got[rcpt["address"].as_str().unwrap()];
        assert_eq!(on_b.len(), 1);
        let b = &on_b[0];
        for field in ["sender", "envid", "ret", "received_at", "size"] {
            if field == "size" {
                // B added its own Received: line, nothing else.
                assert!(b["size"].as_u64() > m["size"].as_u64(), "{b} vs {m}");
                continue;
            }
            assert_eq!(b[field], m[field], "{field}: {b} vs {m}");
        }
        assert_eq!(b["recipients"][0]["notify"], "success,delay", "{b}");
        assert_eq!(b["recipients"][0]["orcpt"], rcpt["orcpt"], "{b}");
        assert_eq!(b["auth_user"], RELAY_USER);
        assert_eq!(b["state"], "pending", "{b}");
    }
    assert_eq!(got["m0@dest.example"][0]["sender"], "");

    // `--stop` ends draining: ready and accepting again.
    let (code, out) = a.queue(&["drain", "--stop"]);
    assert_eq!(code, 0, "{out}");
    wait_until("A ready", &|| a.log(), || {
        http_get(a.http, "/readyz").0 == 200
    });
    submit(a.smtp, 1);

    // The parameter from a normal account on B: 555 5.5.4.
    if let Some(python) = crate::support::require_python(&[]) {
        let script = format!(
            "import smtplib, ssl\n\
             c = ssl.create_default_context(); c.check_hostname = False; c.verify_mode = ssl.CERT_NONE\n\
             s = smtplib.SMTP('127.0.0.1', {}); s.starttls(context=c); s.login('app@b.test', 'app password')\n\
             print(s.mail('app@b.test', ['X-DANERELAY-ARRIVAL=1700000000'])[0])\n\
             s.rset(); print(s.mail('app@b.test')[0]); s.quit()\n",
            b.smtp
        );
        let out = Command::new(python).args(["-c", &script]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            text.split_whitespace().collect::<Vec<_>>(),
            ["555", "250"],
            "{text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_drain_killed_midway_resumes_and_loses_nothing() {
    const N: usize = 150;
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let b = relay_b(db.path());
    let mut a = relay_a(da.path());
    submit(a.smtp, N);
    assert_eq!(a.list().len(), N);
    let owned = drain_args(da.path(), &b);
    let args: Vec<&str> = owned.iter().map(String::as_str).collect();
    let (code, out) = a.queue(&[&args[..], &["--no-wait"]].concat());
    assert_eq!(code, 0, "{out}");
    // Kill A once some, not all, are over.
    let handed = |a: &Relay| {
        let (_, body) = http_get(a.http, "/api/drain");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["handed_over"]
            .as_u64()
            .unwrap()
    };
    wait_until("part of the drain", &|| a.log(), || handed(&a) >= 10);
    a.kill();
    a.restart();
    // Still draining after the restart: not ready, nothing delivered or accepted.
    assert_eq!(http_get(a.http, "/readyz").0, 503);
    let remaining = a.list().len();
    assert!(remaining > 0 && remaining < N, "{remaining} left");

    let (code, out) = a.queue(&args);
    assert_eq!(code, 0, "{out}\n{}", a.log());
    assert!(a.list().is_empty());
    let got = by_recipient(&b.list());
    assert_eq!(got.len(), N, "every message arrived");
    let copies: usize = got.values().map(Vec::len).sum();
    assert!(copies <= N + 1, "{copies} copies of {N} messages");
}
