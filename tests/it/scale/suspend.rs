//! `queue suspend` / `queue resume` against a running relay delivering to a
//! receiving MTA (the fake MX): suspended mail is never sent, stays queued
//! and is listed as suspended; other domains are unaffected; resuming (or
//! `--for` running out) delivers it at once.

use std::time::{Duration, Instant};

use danerelay::config;
use danerelay::testing::{enqueue, FakeMx};
use tokio_util::sync::CancellationToken;

use crate::admin::cli;

fn relay_config(dir: &std::path::Path, mx_port: u16) -> config::Config {
    // retry = 1h: a deferred message only moves again when resumed.
    let text = format!(
        "hostname = \"relay.test\"\n[[listener]]\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n\
         [queue]\npath = {:?}\nretry = [\"1h\"]\n[http]\naddress = \"127.0.0.1:0\"\n\
         [dns]\ndnssec = \"off\"\ndnssec_probe = \"\"\n[delivery]\ntls = \"none\"\n\
         [[delivery.route]]\ndomain = \"held.example\"\nnext_hop = \"[127.0.0.1]:{mx_port}\"\n\
         [[delivery.route]]\ndomain = \"open.example\"\nnext_hop = \"[127.0.0.1]:{mx_port}\"\n",
        dir.join("queue").display()
    );
    config::parse(&text).unwrap().config
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn received_by(mx: &FakeMx, rcpt: &str) -> bool {
    mx.messages()
        .iter()
        .any(|m| m.rcpts.iter().any(|r| r == rcpt))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_domain_waits_in_the_queue_until_resumed() {
    let mx = FakeMx::start(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let running = danerelay::start(relay_config(dir.path(), mx.port), CancellationToken::new())
        .await
        .unwrap();
    let api = running.http_address;

    let (code, out) = cli(api, &["suspend", "Held.Example."]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.trim(), "held.example: suspended until queue resume");
    let (code, out) = cli(api, &["suspend", "not a domain"]).await;
    assert_eq!(code, 65, "{out}");

    let held = enqueue(
        &running.queue,
        "alice@example.org",
        &["bob@held.example", "carol@open.example"],
    );
    // The open domain is delivered; the suspended one is not.
    wait_for("open.example delivered", || {
        received_by(&mx, "carol@open.example")
    })
    .await;
    let (_, out) = cli(api, &["show", held.as_str(), "--json"]).await;
    let m: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let bob = &m["recipients"][0];
    assert_eq!(bob["address"], "bob@held.example");
    assert_eq!(bob["state"], "deferred", "{m}");
    assert_eq!(bob["suspended"], true, "{m}");
    assert!(
        bob["last_reply"].as_str().unwrap().contains("suspended"),
        "{m}"
    );
    assert_eq!(m["recipients"][1]["state"], "delivered", "{m}");
    assert!(!received_by(&mx, "bob@held.example"));

    let (_, out) = cli(api, &["list"]).await;
    assert!(out.contains("(1 suspended)"), "{out}");
    let (_, out) = cli(api, &["summary"]).await;
    assert!(
        out.contains("suspended: held.example until queue resume"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("held.example") && l.ends_with("suspended")),
        "{out}"
    );

    // Still nothing after a while: the deferral waits for the 1h retry.
    tokio::time::sleep(Duration::from_millis(700)).await;
    // Not even tried: no RCPT for it ever reached the MX.
    let tried = |mx: &FakeMx| {
        let t = mx.transcript.lock().unwrap();
        t.commands.iter().any(|c| c.contains("bob@held.example"))
    };
    assert!(!tried(&mx));

    let (code, out) = cli(api, &["resume", "held.example"]).await;
    assert_eq!(
        (code, out.trim()),
        (0, "held.example: resumed, 1 message(s) due now")
    );
    wait_for("held.example delivered after resume", || {
        received_by(&mx, "bob@held.example")
    })
    .await;
    wait_for("queue empty", || running.queue.counts().total() == 0).await;
    let (_, out) = cli(api, &["resume", "held.example"]).await;
    assert_eq!(out.trim(), "held.example: was not suspended");
    running.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspension_for_a_while_lifts_itself_and_survives_a_restart() {
    let mx = FakeMx::start(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    // Suspended for an hour, then the relay restarts: the suspension holds.
    let running = danerelay::start(relay_config(dir.path(), mx.port), CancellationToken::new())
        .await
        .unwrap();
    let (code, out) = cli(
        running.http_address,
        &["suspend", "held.example", "--for", "1h"],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    running.drain().await;
    let running = danerelay::start(relay_config(dir.path(), mx.port), CancellationToken::new())
        .await
        .unwrap();
    let api = running.http_address;
    let (_, out) = cli(api, &["summary", "--json"]).await;
    let s: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(s["suspended"][0]["domain"], "held.example", "{s}");

    // Now three seconds: the mail waits, then goes out without a resume.
    let (code, out) = cli(api, &["suspend", "held.example", "--for", "3s"]).await;
    assert_eq!(code, 0, "{out}");
    let start = Instant::now();
    enqueue(&running.queue, "alice@example.org", &["bob@held.example"]);
    wait_for("deferred as suspended", || {
        running.queue.counts().deferred == 1
    })
    .await;
    assert!(!received_by(&mx, "bob@held.example"));
    wait_for("delivered once the suspension ran out", || {
        received_by(&mx, "bob@held.example")
    })
    .await;
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "delivered after {:?}, before the suspension ran out",
        start.elapsed()
    );
    let (_, out) = cli(api, &["summary", "--json"]).await;
    let s: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(s["suspended"], serde_json::json!([]), "{s}");
    running.drain().await;
}
