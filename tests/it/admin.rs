//! The admin API and `danerelay queue …` against a running relay.

use std::process::Command;

use danerelay::config;
use danerelay::testing::enqueue;
use danerelay_queue::QueueId;
use tokio_util::sync::CancellationToken;

fn test_config(dir: &std::path::Path, token: &str) -> config::Config {
    let text = format!(
        "hostname = \"relay.test\"\n[[listener]]\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n\
         [queue]\npath = {:?}\n[http]\naddress = \"127.0.0.1:0\"\nadmin_token = {token:?}\n\
         [dns]\ndnssec = \"off\"\ndnssec_probe = \"\"\n",
        dir.join("queue").display()
    );
    config::parse(&text).unwrap().config
}

/// Runs `danerelay queue ARGS --api ADDR` (blocking, off the runtime).
pub async fn cli(api: std::net::SocketAddr, args: &[&str]) -> (i32, String) {
    let mut full: Vec<String> = vec!["queue".into()];
    full.extend(args.iter().map(|s| s.to_string()));
    full.extend(["--api".into(), api.to_string()]);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_danerelay"))
            .args(&full)
            .env_remove("DANERELAY_ADMIN_TOKEN")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_cli_round_trip_through_the_admin_api() {
    let dir = tempfile::tempdir().unwrap();
    let running =
        danerelay::start_without_delivery(test_config(dir.path(), ""), CancellationToken::new())
            .await
            .unwrap();
    let api = running.http_address;
    let a = enqueue(&running.queue, "alice@example.org", &["bob@example.net"]);
    let b = enqueue(&running.queue, "carol@example.org", &["dave@example.com"]);

    let (code, out) = cli(api, &["list"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(a.as_str()) && out.contains(b.as_str()),
        "{out}"
    );
    assert!(out.contains("-- 2 message(s)"), "{out}");

    let (code, out) = cli(api, &["hold", a.as_str()]).await;
    assert_eq!((code, out.trim()), (0, format!("{a}: held").as_str()));
    let (_, out) = cli(api, &["list", "--json"]).await;
    let list: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let state_of = |id: &QueueId| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id.as_str())
            .map(|m| m["state"].as_str().unwrap().to_string())
    };
    assert_eq!(state_of(&a).as_deref(), Some("held"));
    assert_eq!(state_of(&b).as_deref(), Some("pending"));

    let (code, out) = cli(api, &["hold", a.as_str()]).await;
    assert_eq!(code, 0);
    assert!(out.contains("unchanged"), "{out}");
    let (code, out) = cli(api, &["release", a.as_str()]).await;
    assert_eq!((code, out.trim()), (0, format!("{a}: released").as_str()));

    let (code, out) = cli(api, &["show", b.as_str()]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("carol@example.org") && out.contains("dave@example.com pending"),
        "{out}"
    );

    let (code, out) = cli(api, &["summary", "--json"]).await;
    assert_eq!(code, 0, "{out}");
    let summary: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(summary["pending"], 2);
    let domains: Vec<&str> = summary["domains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["domain"].as_str().unwrap())
        .collect();
    assert_eq!(domains.len(), 2);
    assert!(domains.contains(&"example.net") && domains.contains(&"example.com"));

    let (code, out) = cli(api, &["retry", "--all"]).await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = cli(api, &["delete", a.as_str(), "0000000000ZZ"]).await;
    assert_eq!(code, 65, "an unknown id is EX_DATAERR: {out}");
    assert!(out.contains(&format!("{a}: deleted")), "{out}");
    assert!(out.contains("0000000000ZZ: no message"), "{out}");
    let (code, out) = cli(api, &["show", "not-an-id"]).await;
    assert_eq!(code, 65, "a malformed id is EX_DATAERR: {out}");
    assert!(out.contains("not a queue id"), "{out}");
    let (_, out) = cli(api, &["list"]).await;
    assert!(
        !out.contains(a.as_str()) && out.contains("-- 1 message(s)"),
        "{out}"
    );
    running.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_is_required_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let running = danerelay::start_without_delivery(
        test_config(dir.path(), "s3cret"),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let api = running.http_address;
    let (code, out) = cli(api, &["list"]).await;
    assert_eq!(code, 77, "a refused token is EX_NOPERM: {out}");
    assert!(out.contains("403") && out.contains("bearer token"), "{out}");
    let (code, out) = cli(api, &["list", "--token", "wrong"]).await;
    assert_eq!(code, 77, "{out}");
    let (code, out) = cli(api, &["list", "--token", "s3cret"]).await;
    assert_eq!(code, 0, "{out}");
    // Health and metrics stay open: probes and Prometheus carry no token.
    let (status, _) = crate::cli::http_get(api.port(), "/healthz");
    assert_eq!(status, 200);
    running.drain().await;
}

/// `delivery.paused = true`: mail submitted over SMTP is queued and stays queued; the
/// relay never connects out, even though a next hop is up and the mail is due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_delivery_queues_and_never_connects_out() {
    let dir = tempfile::tempdir().unwrap();
    let mx = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let text = format!(
        "hostname = \"relay.test\"\n[[listener]]\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n\
         [auth]\ntrusted_networks = [\"127.0.0.0/8\"]\nsender_policy = \"any\"\n\
         [queue]\npath = {:?}\n[http]\naddress = \"127.0.0.1:0\"\n\
         [dns]\ndnssec = \"off\"\ndnssec_probe = \"\"\n\
         [delivery]\ntls = \"none\"\npaused = true\n\
         [[delivery.route]]\ndomain = \"example.net\"\nnext_hop = \"[127.0.0.1]:{}\"\n",
        dir.path().join("queue").display(),
        mx.local_addr().unwrap().port()
    );
    let cfg = config::parse(&text).unwrap().config;
    assert!(cfg.delivery.paused);
    let running = danerelay::start(cfg, CancellationToken::new())
        .await
        .unwrap();

    crate::support::smtp_dialogue(
        running.smtp_addresses[0],
        &[
            ("EHLO client.test", "250"),
            ("MAIL FROM:<alice@example.org>", "250"),
            ("RCPT TO:<bob@example.net>", "250"),
            ("DATA", "354"),
            ("Subject: paused\r\n\r\nstays queued\r\n.", "250"),
        ],
    )
    .await;

    // The message is due now; a running scheduler would connect within milliseconds.
    let connected = tokio::time::timeout(std::time::Duration::from_millis(1500), mx.accept()).await;
    assert!(
        connected.is_err(),
        "a paused relay connected to the next hop"
    );
    let counts = running.queue.counts();
    assert_eq!((counts.pending, counts.active), (1, 0), "{counts:?}");
}
