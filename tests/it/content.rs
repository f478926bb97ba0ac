//! Issue #18, what applications actually send: messages submitted with
//! Python's smtplib into the in-process server and its real queue, then
//! delivered by the relay's client to real peers — aiosmtpd, and Postfix's
//! smtp-sink with `-8` (no 8BITMIME, no SMTPUTF8) — and what the peer stored
//! parsed with Python's `email` package: every decoded part equals the original.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use danerelay::delivery::outcome;
use danerelay::smtp::client::{Client, Envelope, Recipient, Timeouts};
use tokio::net::TcpStream;

use crate::delivery::mta::Mta;
use crate::smtp::harness::{start, Scenario, Server};
use crate::support::{require_python, require_tool};

/// Compares every leaf part of two messages as Python's `email` decodes
/// them (line ends normalised: a text part's CRLF is its canonical form).
const COMPARE: &str = r#"
import email, sys
def leaves(path):
    m = email.message_from_bytes(open(path, "rb").read())
    out = []
    for p in m.walk():
        if p.is_multipart() or p.get_content_type() == "message/rfc822":
            continue
        out.append((p.get_content_type(), p.get_content_charset(),
                    (p.get_payload(decode=True) or b"").replace(b"\r\n", b"\n").rstrip(b"\n")))
    return out
a, b = leaves(sys.argv[1]), leaves(sys.argv[2])
if len(a) != len(b):
    sys.exit("part count %d != %d" % (len(a), len(b)))
for i, (x, y) in enumerate(zip(a, b)):
    if x[0] != y[0] or x[2] != y[2] or (x[1] and x[1] != y[1]):
        sys.exit("part %d differs: %r %r (%d octets) vs %r %r (%d octets)" % (i, x[0], x[1], len(x[2]), y[0], y[1], len(y[2])))
print("OK", len(a))
"#;

fn compare(python: &Path, dir: &Path, original: &[u8], got: &[u8]) {
    let (a, b) = (dir.join("original.eml"), dir.join("got.eml"));
    std::fs::write(&a, original).unwrap();
    std::fs::write(&b, got).unwrap();
    let out = Command::new(python)
        .args(["-c", COMPARE])
        .arg(&a)
        .arg(&b)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Submits `message` with smtplib; returns `(code, reply)`.
fn submit(
    python: &Path,
    port: u16,
    rcpts: &[&str],
    message: &[u8],
    options: &[&str],
) -> (u16, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.eml");
    std::fs::write(&path, message).unwrap();
    let script = format!(
        r#"
import smtplib
s = smtplib.SMTP("127.0.0.1", {port}, timeout=60)
s.ehlo("app.test")
try:
    s.sendmail("app@example.com", {rcpts:?}, open({path:?}, "rb").read(), mail_options={options:?})
    print("250 ok")
except smtplib.SMTPDataError as e:
    print(e.smtp_code, e.smtp_error.decode())
s.quit()
"#,
        path = path.display().to_string(),
    );
    let out = Command::new(python).args(["-c", &script]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, reply) = text.split_once(' ').unwrap();
    (code.parse().unwrap(), reply.to_string())
}

async fn server() -> Server {
    start(Scenario {
        trusted: vec!["127.0.0.0/8".parse().unwrap()],
        max_message_size: 40 * 1024 * 1024,
        max_recipients: 10,
        ..Default::default()
    })
    .await
}

/// The one queued message's envelope and body, removed from the queue view.
fn take_queued(
    srv: &Server,
    seen: &mut Vec<String>,
) -> (danerelay_queue::Envelope, Vec<String>, Vec<u8>) {
    let m = srv
        .messages()
        .into_iter()
        .find(|m| !seen.contains(&m.id))
        .expect("a new queued message");
    seen.push(m.id.clone());
    let rcpts = m
        .info
        .recipients
        .iter()
        .map(|r| r.address.clone())
        .collect();
    (m.info.envelope, rcpts, m.body)
}

/// Delivers as the scheduler would (same envelope flags) to `addr`.
async fn deliver(
    addr: &str,
    env: &danerelay_queue::Envelope,
    rcpts: &[String],
    body: &[u8],
) -> outcome::Outcome {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut c = Client::new(tcp, Timeouts::default(), "relay.test");
    c.greeting().await.unwrap();
    c.ehlo().await.unwrap();
    let mut e = Envelope::new(
        env.sender.clone(),
        rcpts.iter().map(Recipient::new).collect(),
    );
    e.size = Some(body.len() as u64);
    e.body_8bit = env.body_8bit;
    e.smtputf8 = env.smtputf8;
    e.relay_signed = env.relay_signed;
    let r = c.transaction(&e, body).await;
    let _ = c.quit().await;
    outcome::for_rcpt(&r.recipients[0])
}

fn latin1(data: &str) -> Vec<u8> {
    data.chars().map(|c| c as u32 as u8).collect()
}

fn longest_line(m: &[u8]) -> usize {
    m.split(|&b| b == b'\n')
        .map(|l| l.len().saturating_sub(1))
        .max()
        .unwrap_or(0)
}

fn html_line(octets: usize) -> String {
    let mut s = String::from("<p>");
    while s.len() < octets {
        s.push_str("Grüße aus <b>Köln</b>, ");
    }
    s.push_str("</p>");
    s
}

/// The messages of item 1: (name, recipients, bytes).
fn long_line_messages() -> Vec<(&'static str, Vec<&'static str>, Vec<u8>)> {
    // One 3,000-character base64 line (a PDF header, repeated).
    let b64 = "JVBERi0xLjQK".repeat(250);
    let alternative = format!(
        "From: app@example.com\r\nTo: a@dest.test, b@dest.test\r\nSubject: report\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"=_outer\"\r\n\r\n--=_outer\r\n\
Content-Type: multipart/alternative; boundary=\"=_alt\"\r\n\r\n--=_alt\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße, short.\r\n--=_alt\r\n\
Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n<html>\r\n{}\r\n</html>\r\n--=_alt--\r\n\
--=_outer\r\nContent-Type: application/pdf; name=r.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}\r\n--=_outer--\r\n",
        html_line(2_500)
    );
    let plain = format!(
        "From: app@example.com\r\nTo: c@dest.test\r\nSubject: plain\r\n\r\nLine one\r\n{}\r\n. dot line\r\n",
        "0123456789 ".repeat(230)
    );
    let big = format!(
        "From: app@example.com\r\nTo: c@dest.test\r\nSubject: big\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nsee html\r\n\
--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{}\r\n--b--\r\n",
        (0..60).map(|_| html_line(5_000)).collect::<Vec<_>>().join("\r\n")
    );
    vec![
        (
            "alternative",
            vec!["a@dest.test", "b@dest.test"],
            alternative.into_bytes(),
        ),
        ("plain", vec!["c@dest.test"], plain.into_bytes()),
        ("big (streamed)", vec!["c@dest.test"], big.into_bytes()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lines_are_reencoded_at_submission_and_arrive_identical() {
    let Some(python) = require_python(&["aiosmtpd"]) else {
        return;
    };
    let srv = server().await;
    let port = srv.plain.port();
    let mta = Mta::start(&python, "127.0.25.71", None);
    let dir = tempfile::tempdir().unwrap();
    let mut seen = Vec::new();
    for (i, (name, rcpts, msg)) in long_line_messages().into_iter().enumerate() {
        let (code, reply) = submit(&python, port, &rcpts, &msg, &[]);
        assert_eq!(code, 250, "{name}: {reply}");
        let (env, to, body) = take_queued(&srv, &mut seen);
        assert!(longest_line(&body) <= 998, "{name} queued with a long line");
        let out = deliver("127.0.25.71:25", &env, &to, &body).await;
        assert_eq!(out.label(), "delivered", "{name}: {out:?}");
        let start = Instant::now();
        while mta.got().len() <= i {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{name} never arrived"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let got = latin1(&mta.got()[i].data);
        assert!(longest_line(&got) <= 998);
        compare(&python, dir.path(), &msg, &got);
        // RFC 5321 §4.4: `for` only with exactly one recipient.
        let text = String::from_utf8_lossy(&got);
        let received = &text[..text.find("\r\nFrom:").unwrap()];
        assert_eq!(
            received.contains(&format!("for <{}>;", rcpts[0])),
            rcpts.len() == 1,
            "{name}: {received}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_cannot_be_fixed_is_refused_before_any_250() {
    let Some(python) = require_python(&[]) else {
        return;
    };
    let srv = server().await;
    let token = format!(
        "From: app@example.com\r\nX-Token: {}\r\n\r\nbody\r\n",
        "A".repeat(1_500)
    );
    let broken = format!(
        "From: app@example.com\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed\r\n\r\n{}\r\n",
        "x".repeat(1_200)
    );
    for msg in [token, broken] {
        let (code, reply) = submit(
            &python,
            srv.plain.port(),
            &["c@dest.test"],
            msg.as_bytes(),
            &[],
        );
        assert_eq!(code, 550, "{reply}");
        assert!(reply.starts_with("5.6.0 "), "{reply}");
    }
    assert!(srv.messages().is_empty());
}

/// Postfix's smtp-sink without 8BITMIME (and so without SMTPUTF8), dumping
/// each transaction into `dir`.
struct Sink {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sink {
    fn start(smtp_sink: &Path) -> Sink {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        // smtp-sink drops to `nobody` when started as root.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let port = crate::cli::free_port();
        let child = Command::new(smtp_sink)
            .args(["-8", "-u", "nobody", "-d"])
            .arg(format!("{}/%H%M%S.", dir.path().display()))
            .arg(format!("127.0.0.1:{port}"))
            .arg("10")
            .spawn()
            .unwrap();
        crate::cli::wait_for_port(port);
        Sink { child, port, dir }
    }

    /// The dumped transactions so far: (MAIL arguments, message).
    fn dumps(&self) -> Vec<(String, Vec<u8>)> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        paths.sort();
        paths
            .iter()
            .map(|p| {
                let mut raw = Vec::new();
                std::fs::File::open(p)
                    .unwrap()
                    .read_to_end(&mut raw)
                    .unwrap();
                let text = String::from_utf8_lossy(&raw);
                let mail = text
                    .lines()
                    .find_map(|l| l.strip_prefix("X-Mail-Args: "))
                    .unwrap_or_default()
                    .to_string();
                (mail, raw)
            })
            .collect()
    }
}

fn wait_dumps(sink: &Sink, n: usize) -> Vec<(String, Vec<u8>)> {
    let start = Instant::now();
    loop {
        let d = sink.dumps();
        if d.len() >= n {
            return d;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "smtp-sink got {} of {n}",
            d.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_bit_parts_go_out_quoted_printable_to_a_peer_without_8bitmime() {
    let (Some(python), Some(smtp_sink)) = (require_python(&[]), require_tool("smtp-sink")) else {
        return;
    };
    let srv = server().await;
    let sink = Sink::start(&smtp_sink);
    let mut msg = b"From: app@example.com\r\nTo: c@dest.test\r\nSubject: 8bit\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln\r\n--b\r\n\
Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\nK\xf6ln \xe9t\xe9\r\n--b\r\n\
Content-Type: message/rfc822\r\n\r\nSubject: inner\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\xc3\x84rger\r\n--b--\r\n"
        .to_vec();
    msg.extend_from_slice(b"");
    let (code, reply) = submit(
        &python,
        srv.plain.port(),
        &["c@dest.test"],
        &msg,
        &["BODY=8BITMIME"],
    );
    assert_eq!(code, 250, "{reply}");
    let mut seen = Vec::new();
    let (env, to, body) = take_queued(&srv, &mut seen);
    assert!(env.body_8bit);
    let addr = format!("127.0.0.1:{}", sink.port);
    let out = deliver(&addr, &env, &to, &body).await;
    assert_eq!(out.label(), "delivered", "{out:?}");
    let (mail, got) = wait_dumps(&sink, 1).remove(0);
    assert!(!mail.contains("BODY="), "{mail}");
    assert!(got.is_ascii(), "{}", String::from_utf8_lossy(&got));
    compare(&python, tempfile::tempdir().unwrap().path(), &msg, &got);

    // A message the relay signed goes out as it is (the signature covers it).
    let signed = danerelay_queue::Envelope {
        relay_signed: true,
        ..env.clone()
    };
    let out = deliver(&addr, &signed, &to, &body).await;
    assert_eq!(out.label(), "delivered", "{out:?}");
    // (Dump names sort by second, then at random: tell them by content.)
    let dumps = wait_dumps(&sink, 2);
    assert_eq!(dumps.iter().filter(|(_, got)| got.is_ascii()).count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtputf8_only_when_needed_and_a_5_6_7_bounce_when_the_peer_lacks_it() {
    let (Some(python), Some(smtp_sink)) = (require_python(&[]), require_tool("smtp-sink")) else {
        return;
    };
    let srv = server().await;
    let sink = Sink::start(&smtp_sink);
    let addr = format!("127.0.0.1:{}", sink.port);
    let mut seen = Vec::new();

    // UTF-8 in a header field: it needs SMTPUTF8 (RFC 6532), the peer has none.
    let utf8 = "From: app@example.com\r\nSubject: Grüße\r\n\r\nhi\r\n";
    let (code, reply) = submit(
        &python,
        srv.plain.port(),
        &["c@dest.test"],
        utf8.as_bytes(),
        &["SMTPUTF8", "BODY=8BITMIME"],
    );
    assert_eq!(code, 250, "{reply}");
    let (env, to, body) = take_queued(&srv, &mut seen);
    assert!(env.smtputf8);
    let out = deliver(&addr, &env, &to, &body).await;
    assert_eq!(out.label(), "bounced", "{out:?}");
    assert!(
        format!("{out:?}").contains("EnhancedCode(5, 6, 7)"),
        "{out:?}"
    );

    // All ASCII: SMTPUTF8 was asked for but is not needed, so not sent.
    let ascii = "From: app@example.com\r\nSubject: plain\r\n\r\nhi\r\n";
    let (code, reply) = submit(
        &python,
        srv.plain.port(),
        &["c@dest.test"],
        ascii.as_bytes(),
        &["SMTPUTF8"],
    );
    assert_eq!(code, 250, "{reply}");
    let (env, to, body) = take_queued(&srv, &mut seen);
    assert!(!env.smtputf8);
    let out = deliver(&addr, &env, &to, &body).await;
    assert_eq!(out.label(), "delivered", "{out:?}");
    let (mail, _) = wait_dumps(&sink, 1).remove(0);
    assert!(!mail.contains("SMTPUTF8"), "{mail}");
}
