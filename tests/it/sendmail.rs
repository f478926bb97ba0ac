//! `danerelay sendmail` (issue #21) as cron and PHP's `mail()` call it
//! (`-t -i`, also through a symlink named `sendmail`), against a running
//! relay (STARTTLS listener, users file, loopback trusted) that delivers to
//! aiosmtpd through a `[[delivery.route]] next_hop`: what the receiving MTA
//! stored, and sendmail's exit codes when the relay is down (75) or refuses
//! the password (77).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tokio_util::sync::CancellationToken;

use crate::cli::danerelay;
use crate::delivery::mta::Mta;
use crate::support::require_python;

const MTA_IP: &str = "127.0.33.1";
const USER: &str = "app@example.com";
const PASSWORD: &str = "correct horse battery staple";

/// One sendmail run: exit code and stderr.
struct Run {
    code: i32,
    stderr: String,
}

fn sendmail(program: &Path, args: &[&str], env: &[(&str, String)], stdin: &str) -> Run {
    let mut cmd = Command::new(program);
    if program.file_name().is_some_and(|n| n != "sendmail") {
        cmd.arg("sendmail");
    }
    cmd.args(args)
        .env_remove("DANERELAY_USER")
        .env_remove("DANERELAY_PASSWORD_FILE")
        .env_remove("DANERELAY_SUBMIT")
        .env("LOGNAME", "cronuser")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    // A usage error exits before reading stdin: a broken pipe is no failure here.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn run(
    program: PathBuf,
    args: &[&str],
    env: Vec<(&'static str, String)>,
    stdin: &str,
) -> Run {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let stdin = stdin.to_string();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        sendmail(&program, &args, &env, &stdin)
    })
    .await
    .unwrap()
}

fn header<'a>(data: &'a str, name: &str) -> Option<&'a str> {
    let head = data.split("\r\n\r\n").next().unwrap_or("");
    head.split("\r\n")
        .find(|l| {
            l.len() > name.len()
                && l[..name.len()].eq_ignore_ascii_case(name)
                && l.as_bytes()[name.len()] == b':'
        })
        .map(|l| l[name.len() + 1..].trim())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_and_php_submit_through_sendmail() {
    let Some(python) = require_python(&["aiosmtpd"]) else {
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
    std::fs::write(d.join("good.pw"), format!("{PASSWORD}\n")).unwrap();
    std::fs::write(d.join("bad.pw"), "wrong\n").unwrap();
    let text = format!(
        "hostname = \"relay.test\"\nshutdown_grace = \"2s\"\n\
         [[listener]]\naddress = \"127.0.0.1:0\"\ntls = \"starttls\"\n\
         [tls]\ncertificate = {crt:?}\nprivate_key = {key:?}\n\
         [auth]\nusers_file = {users:?}\ntrusted_networks = [\"127.0.0.0/8\"]\nsender_policy = \"any\"\n\
         [queue]\npath = {queue:?}\nretry = [\"1h\"]\n[dns]\ndnssec = \"off\"\ndnssec_probe = \"\"\n\
         [http]\naddress = \"127.0.0.1:0\"\n\
         [delivery]\nconnect_timeout = \"5s\"\n\
         [[delivery.route]]\ndomain = \"dest.example\"\nnext_hop = \"[{MTA_IP}]:25\"\ntls = \"none\"\n",
        crt = d.join("tls.crt").display().to_string(),
        key = d.join("tls.key").display().to_string(),
        users = d.join("users.toml").display().to_string(),
        queue = d.join("queue").display().to_string(),
    );
    let loaded = danerelay::config::parse(&text).unwrap();
    let mta = Mta::start(&python, MTA_IP, None);
    let running = danerelay::start(loaded.config, CancellationToken::new())
        .await
        .unwrap();
    let submit = format!("127.0.0.1:{}", running.smtp_addresses[0].port());
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_danerelay"));
    let link = d.join("sendmail");
    std::os::unix::fs::symlink(&bin, &link).unwrap();
    let env = |auth: Option<&str>| {
        let mut v = vec![("DANERELAY_SUBMIT", submit.clone())];
        if let Some(pw) = auth {
            v.push(("DANERELAY_USER", USER.to_string()));
            v.push(("DANERELAY_PASSWORD_FILE", d.join(pw).display().to_string()));
        }
        v
    };

    // cron: `-t -i` through `danerelay sendmail`, trusted network, no From:.
    let cron = "To: Ops <ops@dest.example>\nCc: team@dest.example\nBcc: audit@dest.example\nSubject: cron output\n\nfirst line\n.\nafter a lone dot\n";
    let r = run(bin.clone(), &["-t", "-i"], env(None), cron).await;
    assert_eq!(r.code, 0, "{}", r.stderr);

    // PHP mail(): the `sendmail` symlink, `-t -i -f`, with AUTH; -F names an added From:.
    let php = "To: customer@dest.example\r\nSubject: Your order\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThanks!\r\n";
    let r = run(
        link.clone(),
        &[
            "-t",
            "-i",
            "-F",
            "Web Shop",
            "-f",
            USER,
            "copy@dest.example",
        ],
        env(Some("good.pw")),
        php,
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);

    // Without -i a lone dot ends the message; recipients as arguments.
    let dotted = "From: script@example.org\nSubject: dot\n\nbefore\n.\nnot sent\n";
    let r = run(
        bin.clone(),
        &["-oem", "-odi", "rcpt@dest.example"],
        env(None),
        dotted,
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);

    // --config: the relay's first listener (STARTTLS), whatever DANERELAY_SUBMIT says.
    let client_config = d.join("client.toml");
    std::fs::write(
        &client_config,
        format!(
            "hostname = \"relay.test\"\n[[listener]]\naddress = \"0.0.0.0:{}\"\ntls = \"starttls\"\n[tls]\ncertificate = {:?}\nprivate_key = {:?}\n",
            running.smtp_addresses[0].port(),
            d.join("tls.crt").display().to_string(),
            d.join("tls.key").display().to_string(),
        ),
    )
    .unwrap();
    let shown = client_config.display().to_string();
    let elsewhere = vec![("DANERELAY_SUBMIT", "127.0.0.1:1".to_string())];
    let by_config = "Subject: by config\n\nvia --config\n";
    let r = run(
        bin.clone(),
        &["--config", &shown, "-i", "cfg@dest.example"],
        elsewhere,
        by_config,
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);

    let got = mta.wait_for(4).await;
    let find = |subject: &str| {
        got.iter()
            .find(|g| header(&g.data, "Subject") == Some(subject))
            .unwrap_or_else(|| panic!("{subject} not delivered: {got:?}"))
    };
    let c = find("cron output");
    assert_eq!(c.from, format!("cronuser@{}", gethostname_str()));
    let mut rcpts = c.rcpts.clone();
    rcpts.sort();
    assert_eq!(
        rcpts,
        [
            "audit@dest.example",
            "ops@dest.example",
            "team@dest.example"
        ]
    );
    assert!(header(&c.data, "Bcc").is_none(), "{}", c.data);
    assert!(!c.data.contains("audit@"), "{}", c.data);
    assert!(header(&c.data, "Date").is_some(), "{}", c.data);
    assert!(header(&c.data, "Message-ID").is_some(), "{}", c.data);
    assert!(
        header(&c.data, "From").unwrap().contains("cronuser@"),
        "{}",
        c.data
    );
    assert!(
        c.data
            .contains("\r\nfirst line\r\n.\r\nafter a lone dot\r\n"),
        "{}",
        c.data
    );

    let p = find("Your order");
    assert_eq!(p.from, USER);
    // With -t, a recipient on the command line is added (Postfix).
    assert_eq!(p.rcpts, ["customer@dest.example", "copy@dest.example"]);
    assert!(!p.data.contains("copy@"), "{}", p.data);
    let from = header(&p.data, "From").unwrap();
    assert!(
        from.contains("Web Shop") && from.contains("<app@example.com>"),
        "{from}"
    );

    assert_eq!(find("by config").rcpts, ["cfg@dest.example"]);

    let t = find("dot");
    assert_eq!(t.rcpts, ["rcpt@dest.example"]);
    assert_eq!(header(&t.data, "From"), Some("script@example.org"));
    assert!(t.data.ends_with("\r\n\r\nbefore\r\n"), "{}", t.data);

    // Wrong password: 77, reason on stderr, nothing queued.
    let r = run(
        bin.clone(),
        &["-t"],
        env(Some("bad.pw")),
        "To: x@dest.example\n\nx\n",
    )
    .await;
    assert_eq!(r.code, 77, "{}", r.stderr);
    assert!(r.stderr.contains("535"), "{}", r.stderr);
    // Usage errors: 64.
    let r = run(bin.clone(), &["-bp"], env(None), "").await;
    assert_eq!(r.code, 64, "{}", r.stderr);
    let r = run(bin.clone(), &["-i"], env(None), "Subject: x\n\nx\n").await;
    assert_eq!(r.code, 64, "{}", r.stderr);

    running.drain().await;
    // Relay down: 75 (try again), and the reason.
    let r = run(bin.clone(), &["-t", "-i"], env(None), cron).await;
    assert_eq!(r.code, 75, "{}", r.stderr);
    assert!(r.stderr.contains("cannot connect"), "{}", r.stderr);
    assert_eq!(mta.got().len(), 4);
}

fn gethostname_str() -> String {
    gethostname::gethostname().into_string().unwrap()
}
