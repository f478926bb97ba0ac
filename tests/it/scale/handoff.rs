//! The receiving side of a handoff, in process: from a trusted network, a
//! message sent with `X-DANERELAY-ARRIVAL` keeps that arrival as its
//! received time and is stored as it came (a `Received:` line, but no
//! `Message-ID:`/`Date:` and no DKIM signature, though its From: domain has a
//! key); the same message without the parameter is signed and completed.

use std::io::Read;
use std::time::{Duration, SystemTime};

use danerelay::config;
use tokio_util::sync::CancellationToken;

use crate::dkim::keygen;

async fn send(addr: std::net::SocketAddr, mail_from: &str) {
    crate::support::smtp_dialogue(
        addr,
        &[
            ("EHLO a.test", "250"),
            (mail_from, "250"),
            ("RCPT TO:<bob@example.net>", "250"),
            ("DATA", "354"),
            (
                "From: <app@signed.example>\r\nSubject: handed\r\n\r\nbody\r\n.",
                "250",
            ),
            ("QUIT", "221"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handoff_keeps_its_arrival_and_is_neither_signed_nor_completed() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "signed.example", "s1", "ed25519");
    let text = format!(
        "hostname = \"b.test\"\n[[listener]]\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n\
         [auth]\ntrusted_networks = [\"127.0.0.0/8\"]\nsender_policy = \"any\"\n\
         [queue]\npath = {:?}\n[http]\naddress = \"127.0.0.1:0\"\n\
         [dns]\ndnssec = \"off\"\ndnssec_probe = \"\"\n\
         [[dkim]]\ndomain = \"signed.example\"\nselector = \"s1\"\nprivate_key = {:?}\n",
        dir.path().join("queue"),
        key.path,
    );
    let cfg = config::parse(&text).unwrap().config;
    let running = danerelay::start_without_delivery(cfg, CancellationToken::new())
        .await
        .unwrap();
    let addr = running.smtp_addresses[0];
    send(addr, "MAIL FROM:<> X-DANERELAY-ARRIVAL=1700000000").await;
    send(addr, "MAIL FROM:<app@signed.example>").await;

    let list = running
        .queue
        .list(&danerelay_queue::ListFilter::default())
        .unwrap();
    assert_eq!(list.len(), 2);
    let body = |id| {
        let mut s = String::new();
        running
            .queue
            .body(id)
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        s
    };
    let handed = list.iter().find(|m| m.envelope.sender.is_empty()).unwrap();
    assert_eq!(
        handed.envelope.received_at,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    );
    let text = body(handed.id);
    assert!(text.starts_with("Received: "), "{text}");
    for absent in ["DKIM-Signature:", "Message-ID:", "Date:"] {
        assert!(!text.contains(absent), "{absent} in {text}");
    }
    let submitted = list.iter().find(|m| !m.envelope.sender.is_empty()).unwrap();
    let text = body(submitted.id);
    for present in ["DKIM-Signature:", "Message-ID:", "Date:"] {
        assert!(text.contains(present), "{present} missing in {text}");
    }
    let age = SystemTime::now()
        .duration_since(submitted.envelope.received_at)
        .unwrap();
    assert!(age < Duration::from_secs(60), "{age:?}");
    running.drain().await;
}
