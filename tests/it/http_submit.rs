//! `POST /api/v1/messages` (issue #21) with real HTTP clients — curl and
//! Python's urllib — against a running relay (TLS, users file, own-address
//! sender policy) that delivers to aiosmtpd: the raw and the composed form
//! (attachments decoded by Python's `email` package from what the receiving
//! MTA stored, DKIM signatures verified there by dkimpy), and the JSON errors for bad JSON, missing fields, an
//! oversize message, a wrong password, a sender the policy refuses and a
//! user over `limits.messages_per_user_per_hour`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use base64::Engine;
use tokio_util::sync::CancellationToken;

use crate::cli::danerelay;
use crate::delivery::mta::Mta;
use crate::support::{require_python, require_tool};

const MTA_IP: &str = "127.0.33.2";
const USER: &str = "app@example.com";
const PASSWORD: &str = "s3cret-for-http";

/// Python urllib: one request per JSON line on stdin, one JSON answer per line.
const CLIENT: &str = r#"
import base64, json, ssl, sys, urllib.request, urllib.error
url = sys.argv[1]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
out = []
for case in json.load(sys.stdin):
    req = urllib.request.Request(url, data=case["body"].encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    token = base64.b64encode(("%s:%s" % (case["user"], case["password"])).encode()).decode()
    req.add_header("Authorization", "Basic " + token)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
            out.append({"status": r.status, "body": json.loads(r.read()), "www": None})
    except urllib.error.HTTPError as e:
        out.append({"status": e.code, "body": json.loads(e.read()), "www": e.headers.get("WWW-Authenticate")})
print(json.dumps(out))
"#;

/// Python's email package on what aiosmtpd stored.
const PARSE: &str = r#"
import email, email.policy, json, sys
m = email.message_from_bytes(sys.stdin.buffer.read(), policy=email.policy.default)
atts = [{"filename": p.get_filename(), "type": p.get_content_type(),
         "b64": __import__("base64").b64encode(p.get_payload(decode=True)).decode()}
        for p in m.iter_attachments()]
body = m.get_body(preferencelist=("plain",))
html = m.get_body(preferencelist=("html",))
print(json.dumps({"subject": m["subject"], "from": m["from"], "to": m["to"], "cc": m["cc"],
    "bcc": m["bcc"], "reply_to": m["reply-to"], "x_order": m["x-order"],
    "text": body.get_content() if body else None, "html": html.get_content() if html else None,
    "attachments": atts}))
"#;

fn python_json(python: &Path, script: &str, args: &[&str], stdin: &[u8]) -> serde_json::Value {
    let mut child = Command::new(python)
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applications_submit_over_https() {
    let Some(python) = require_python(&["aiosmtpd", "dkim", "nacl"]) else {
        return;
    };
    let Some(curl) = require_tool("curl") else {
        return;
    };
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
    let key = crate::dkim::keygen(d, "example.com", "h1", "ed25519");
    let text = format!(
        "hostname = \"relay.test\"\nshutdown_grace = \"2s\"\n\
         [[listener]]\naddress = \"127.0.0.1:0\"\ntls = \"starttls\"\n\
         [tls]\ncertificate = {crt:?}\nprivate_key = {key:?}\n\
         [auth]\nusers_file = {users:?}\nsender_policy = \"own-address\"\n\
         [limits]\nmax_message_size = \"64KiB\"\nmessages_per_user_per_hour = 3\n\
         [queue]\npath = {queue:?}\nretry = [\"1h\"]\n[dns]\ndnssec = \"off\"\ndnssec_probe = \"\"\n\
         [http]\naddress = \"127.0.0.1:0\"\nsubmission_address = \"127.0.0.1:0\"\n\
         [delivery]\nconnect_timeout = \"5s\"\n\
         [[delivery.route]]\ndomain = \"dest.example\"\nnext_hop = \"[{MTA_IP}]:25\"\ntls = \"none\"\n\
         [[dkim]]\ndomain = \"example.com\"\nselector = \"h1\"\nprivate_key = {dkim:?}\n",
        crt = d.join("tls.crt").display().to_string(),
        key = d.join("tls.key").display().to_string(),
        users = d.join("users.toml").display().to_string(),
        queue = d.join("queue").display().to_string(),
        dkim = key.path.display().to_string(),
    );
    let loaded = danerelay::config::parse(&text).unwrap();
    let mta = Mta::start(&python, MTA_IP, None);
    let running = danerelay::start(loaded.config, CancellationToken::new())
        .await
        .unwrap();
    let url = format!(
        "https://127.0.0.1:{}/api/v1/messages",
        running.submission_address.unwrap().port()
    );

    // curl, raw form.
    // A 2,500-octet line, as template engines write: re-encoded at
    // acceptance exactly as over SMTP, never refused later.
    let long_line = "x".repeat(2500);
    let raw = serde_json::json!({"from": USER, "to": ["raw@dest.example"],
        "raw": format!("From: App <app@example.com>\nTo: raw@dest.example\nSubject: raw form\n\nsent with curl\n{long_line}\n")});
    let out = tokio::task::spawn_blocking({
        let (curl, url) = (curl.clone(), url.clone());
        move || {
            let mut child = Command::new(curl)
                .args([
                    "-sk",
                    "-w",
                    "\n%{http_code}",
                    "-u",
                    &format!("{USER}:{PASSWORD}"),
                ])
                .args([
                    "-H",
                    "Content-Type: application/json",
                    "--data-binary",
                    "@-",
                    &url,
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(raw.to_string().as_bytes())
                .unwrap();
            child.wait_with_output().unwrap()
        }
    })
    .await
    .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = printed.rsplit_once('\n').unwrap();
    assert_eq!(code, "201", "{printed}");
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert!(
        v["queue_id"].as_str().is_some_and(|s| !s.is_empty()),
        "{printed}"
    );

    // urllib: composed form and every error.
    let blob: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&blob);
    let composed = serde_json::json!({"from": "App <app@example.com>", "to": ["to@dest.example"],
        "cc": ["cc@dest.example"], "bcc": ["secret@dest.example"], "reply_to": "help@example.com",
        "subject": "Grüße, composed", "text": "plain text body\n", "html": "<p>html body</p>",
        "headers": {"X-Order": "42"},
        "attachments": [{"filename": "data.bin", "content_type": "application/octet-stream", "content_base64": b64},
                        {"filename": "note.txt", "content_type": "text/plain", "content_base64": "aMOpbGxvCg=="}]});
    let big = "x".repeat(70 * 1024);
    let case = |body: String, password: &str| serde_json::json!({"body": body, "user": USER, "password": password});
    let cases = serde_json::json!([
        case(composed.to_string(), PASSWORD),
        case("{\"from\": ".into(), PASSWORD),
        case(serde_json::json!({"to": ["a@dest.example"], "text": "x"}).to_string(), PASSWORD),
        case(serde_json::json!({"from": USER, "to": ["a@dest.example"], "raw": format!("Subject: big\n\n{big}\n")}).to_string(), PASSWORD),
        case(serde_json::json!({"from": USER, "to": ["a@dest.example"], "text": "x"}).to_string(), "wrong"),
        case(serde_json::json!({"from": "boss@example.com", "to": ["a@dest.example"], "text": "x"}).to_string(), PASSWORD),
        case(serde_json::json!({"from": USER, "to": 5}).to_string(), PASSWORD),
        // The third message this hour is the last one limits allow.
        case(serde_json::json!({"from": USER, "to": ["third@dest.example"], "text": "3"}).to_string(), PASSWORD),
        case(serde_json::json!({"from": USER, "to": ["fourth@dest.example"], "text": "4"}).to_string(), PASSWORD),
    ]);
    let answers = tokio::task::spawn_blocking({
        let (python, url) = (python.clone(), url.clone());
        move || python_json(&python, CLIENT, &[&url], cases.to_string().as_bytes())
    })
    .await
    .unwrap();
    eprintln!("{answers:#}");
    let status = |i: usize| answers[i]["status"].as_u64().unwrap();
    let field = |i: usize| answers[i]["body"]["field"].clone();
    assert_eq!(status(0), 201);
    assert!(answers[0]["body"]["queue_id"].is_string());
    assert_eq!(status(1), 400);
    assert!(answers[1]["body"]["error"].is_string());
    assert_eq!((status(2), field(2)), (422, "from".into()));
    assert_eq!(status(3), 413);
    assert_eq!(status(4), 401);
    assert!(answers[4]["www"].as_str().unwrap().starts_with("Basic"));
    assert_eq!((status(5), field(5)), (403, "from".into()));
    assert_eq!((status(6), field(6)), (400, "to".into()));
    assert_eq!(status(7), 201);
    assert_eq!(status(8), 429);

    let got = mta.wait_for(3).await;
    let raw_got = got
        .iter()
        .find(|g| g.rcpts == ["raw@dest.example"])
        .unwrap();
    assert_eq!(raw_got.from, USER);
    assert!(
        raw_got.data.contains("\r\nSubject: raw form\r\n"),
        "{}",
        raw_got.data
    );
    assert!(raw_got.data.contains("Message-ID: "), "{}", raw_got.data);
    assert!(
        raw_got.data.split("\r\n").all(|l| l.len() <= 998)
            && raw_got
                .data
                .contains("Content-Transfer-Encoding: quoted-printable"),
        "{}",
        raw_got.data
    );
    assert!(
        raw_got.data.starts_with("DKIM-Signature: ")
            && raw_got.data.contains("\r\nReceived: from http-submission"),
        "{}",
        raw_got.data
    );

    let c = got
        .iter()
        .find(|g| g.rcpts.contains(&"to@dest.example".to_string()))
        .unwrap();
    let mut rcpts = c.rcpts.clone();
    rcpts.sort();
    assert_eq!(
        rcpts,
        ["cc@dest.example", "secret@dest.example", "to@dest.example"]
    );
    assert!(!c.data.contains("secret@"), "{}", c.data);
    let bytes: Vec<u8> = c.data.chars().map(|ch| ch as u32 as u8).collect();
    let parsed = tokio::task::spawn_blocking({
        let python = python.clone();
        move || python_json(&python, PARSE, &[], &bytes)
    })
    .await
    .unwrap();
    eprintln!("{parsed:#}");
    assert_eq!(parsed["subject"], "Grüße, composed");
    assert_eq!(parsed["bcc"], serde_json::Value::Null);
    assert_eq!(parsed["x_order"], "42");
    assert!(parsed["reply_to"]
        .as_str()
        .unwrap()
        .contains("help@example.com"));
    assert!(parsed["from"].as_str().unwrap().contains("app@example.com"));
    assert_eq!(
        parsed["text"].as_str().unwrap().trim_end(),
        "plain text body"
    );
    assert!(parsed["html"]
        .as_str()
        .unwrap()
        .contains("<p>html body</p>"));
    let atts = parsed["attachments"].as_array().unwrap();
    assert_eq!(atts.len(), 2, "{parsed}");
    assert_eq!(atts[0]["filename"], "data.bin");
    assert_eq!(atts[0]["b64"], b64);
    assert_eq!(atts[1]["filename"], "note.txt");
    assert_eq!(atts[1]["b64"], "aMOpbGxvCg==");

    // Signed at acceptance like SMTP submissions: dkimpy verifies both as stored.
    let stored: Vec<Vec<u8>> = [raw_got, c]
        .iter()
        .map(|g| g.data.chars().map(|ch| ch as u32 as u8).collect())
        .collect();
    let verdicts = tokio::task::spawn_blocking({
        let python = python.clone();
        move || crate::dkim::dkimpy_verify(&python, &[key], &stored)
    })
    .await
    .unwrap();
    for v in &verdicts {
        assert_eq!(v.len(), 1, "{verdicts:?}");
        assert!(v[0].ok && v[0].d == "example.com", "{verdicts:?}");
    }
    running.drain().await;
}
