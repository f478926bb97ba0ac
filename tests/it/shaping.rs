//! Adaptive shaping as an operator sees it: a relay delivering through a
//! route to a receiving MTA that greets with `421 4.7.0` shows the
//! destination throttled in `danerelay queue summary` (and its JSON API)
//! and in `danerelay_destinations_throttled`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use danerelay::config;
use danerelay::testing::mx::Script;
use danerelay::testing::{enqueue, FakeMx};
use tokio_util::sync::CancellationToken;

use crate::cli::{danerelay, http_get};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_destination_shows_in_queue_summary_and_metrics() {
    let greetings = VecDeque::from(["421 4.7.0 mx.test too busy".to_string()]);
    let mx = FakeMx::listen(Script {
        greetings: Some(Arc::new(Mutex::new(greetings))),
        ..Script::by_local_part()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "hostname = \"relay.test\"\n[[listener]]\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n\
         [queue]\npath = {:?}\nretry = [\"1h\"]\n[http]\naddress = \"127.0.0.1:0\"\n\
         [dns]\ndnssec = \"off\"\ndnssec_probe = \"\"\n[delivery]\ntls = \"none\"\n\
         [[delivery.route]]\ndomain = \"dest.test\"\nnext_hop = \"[127.0.0.1]:{}\"\n\
         max_connections = 4\nmessage_rate = \"600/min\"\n",
        dir.path().join("queue").display(),
        mx.port
    );
    let relay = danerelay::start(
        config::parse(&text).unwrap().config,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    enqueue(&relay.queue, "app@src.test", &["bob@dest.test"]);
    let port = relay.http_address.port();
    let deadline = Instant::now() + Duration::from_secs(30);
    let summary = loop {
        let (status, body) = http_get(port, "/api/queue/summary");
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if v["destinations"][0]["throttled"] == true {
            break v;
        }
        assert!(Instant::now() < deadline, "never throttled: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let d = &summary["destinations"][0];
    assert_eq!(
        d["destination"],
        format!("next hop [127.0.0.1]:{}", mx.port)
    );
    assert_eq!(d["max_connections"], 1, "{d}");
    assert_eq!(d["message_rate"], "600/min", "{d}");
    assert!(d["backoff_until"].as_u64().is_some(), "{d}");
    let (_, metrics) = http_get(port, "/metrics");
    assert!(
        metrics.contains("danerelay_destinations_throttled 1"),
        "{metrics}"
    );
    let out = danerelay()
        .args(["queue", "summary", "--api", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    let row = shown
        .lines()
        .find(|l| l.starts_with("next hop [127.0.0.1]"))
        .unwrap_or_else(|| panic!("{shown}"));
    assert!(row.contains(" yes ") && row.contains("600/min"), "{row}");
    relay.drain().await;
}
