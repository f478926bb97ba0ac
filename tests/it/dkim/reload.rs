//! Keys at run time: a key file that vanishes makes its domain's mail `451
//! 4.3.0` (never unsigned), a changed key is picked up, and every message
//! accepted on the way is stored signed and verifies (dkimpy).

use std::sync::Arc;
use std::time::Duration;

use danerelay::smtp::server::{run_with_store, ServerOptions};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{dkimpy_verify, keygen};
use crate::smtp::harness::Client;
use crate::support::require_python;

async fn send(addr: std::net::SocketAddr, n: usize) -> (u16, String) {
    let (mut c, _) = Client::connect(addr).await;
    assert_eq!(c.cmd("EHLO client.test").await.0, 250);
    assert_eq!(c.cmd("MAIL FROM:<a@example.com>").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<r@dest.example>").await.0, 250);
    assert_eq!(c.cmd("DATA").await.0, 354);
    c.send(
        format!("From: a@example.com\r\nSubject: message {n}\r\n\r\nbody {n}\r\n.\r\n").as_bytes(),
    )
    .await;
    c.reply().await
}

/// Polls until `f` holds (the key poll runs every 50 ms).
async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    for _ in 0..100 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_key_gets_451_and_a_changed_key_is_reloaded() {
    let Some(python) = require_python(&["dkim", "nacl"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let first = keygen(d, "example.com", "s1", "ed25519");
    let text = format!(
        "hostname = \"relay.test\"\n[[listener]]\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n\
         [auth]\ntrusted_networks = [\"127.0.0.0/8\"]\nsender_policy = \"any\"\n\
         [queue]\npath = {:?}\n\
         [[dkim]]\ndomain = \"example.com\"\nselector = \"s1\"\nprivate_key = {:?}\n",
        d.join("queue").display().to_string(),
        first.path.display().to_string()
    );
    let cfg = Arc::new(danerelay::config::parse(&text).unwrap().config);
    let queue = danerelay_queue::Queue::open(&cfg.queue.path, danerelay::queue_options(&cfg.queue))
        .unwrap();
    let shutdown = CancellationToken::new();
    let addrs = run_with_store(
        cfg,
        Arc::new(queue.clone()),
        ServerOptions {
            cert_poll: Duration::from_millis(50),
            ..ServerOptions::default()
        },
        danerelay::metrics::Metrics::new(),
        shutdown.clone(),
        TaskTracker::new(),
    )
    .await
    .unwrap();
    let addr = addrs[0];

    let (code, r) = send(addr, 1).await;
    assert_eq!(code, 250, "{r}");
    // The key file vanishes (a botched rotation): refuse, never unsigned.
    std::fs::remove_file(&first.path).unwrap();
    eventually("451 once the key is gone", async || {
        let (code, r) = send(addr, 0).await;
        assert!(code == 250 || r.starts_with("4.3.0"), "{code} {r}");
        code == 451
    })
    .await;
    // A new key appears under the same name: signing resumes with it.
    let second = keygen(d, "example.com", "s1", "ed25519");
    assert_eq!(second.path, first.path);
    eventually("250 once the new key is loaded", async || {
        send(addr, 0).await.0 == 250
    })
    .await;
    let (code, r) = send(addr, 2).await;
    assert_eq!(code, 250, "{r}");

    // Every accepted message is stored signed: message 1 with the first
    // key, message 2 with the second.
    let body_of = |n: usize| {
        use std::io::Read;
        let list = queue.list(&danerelay_queue::ListFilter::default()).unwrap();
        list.into_iter()
            .map(|info| {
                let mut body = Vec::new();
                queue.body(info.id).unwrap().read_to_end(&mut body).unwrap();
                body
            })
            .find(|b| String::from_utf8_lossy(b).contains(&format!("Subject: message {n}\r\n")))
            .unwrap_or_else(|| panic!("message {n} not in the queue"))
    };
    let (m1, m2) = (body_of(1), body_of(2));
    let verdicts = tokio::task::spawn_blocking(move || {
        let one = dkimpy_verify(&python, &[first], &[m1]);
        let two = dkimpy_verify(&python, &[second], &[m2]);
        (one, two)
    })
    .await
    .unwrap();
    eprintln!("dkimpy after reload: {verdicts:?}");
    assert!(
        verdicts.0[0].len() == 1 && verdicts.0[0][0].ok,
        "{verdicts:?}"
    );
    assert!(
        verdicts.1[0].len() == 1 && verdicts.1[0][0].ok,
        "{verdicts:?}"
    );
    shutdown.cancel();
}
