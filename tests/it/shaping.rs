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

/// A receiving MTA that is not ours: aiosmtpd, printing each message's
/// recipients and arrival (monotonic seconds) as a JSON line.
const SINK: &str = r#"
import asyncio, json, time
from aiosmtpd.smtp import SMTP

class Handler:
    async def handle_DATA(self, server, session, envelope):
        print(json.dumps({"rcpts": envelope.rcpt_tos, "at": time.monotonic()}), flush=True)
        return "250 2.0.0 Ok: queued"

loop = asyncio.new_event_loop()
server = loop.run_until_complete(loop.create_server(lambda: SMTP(Handler()), host="127.0.0.1", port=0))
print(server.sockets[0].getsockname()[1], flush=True)
loop.run_forever()
"#;

/// aiosmtpd as a child process; killed with the test.
struct Sink {
    child: std::process::Child,
    port: u16,
    got: Arc<Mutex<Vec<(String, f64)>>>,
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sink {
    fn start(python: &std::path::Path) -> Sink {
        use std::io::BufRead;
        let mut child = std::process::Command::new(python)
            .args(["-c", SINK])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| panic!("{line:?}"));
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                let at = v["at"].as_f64().unwrap();
                for r in v["rcpts"].as_array().unwrap() {
                    g.lock()
                        .unwrap()
                        .push((r.as_str().unwrap().to_string(), at));
                }
            }
        });
        Sink { child, port, got }
    }

    /// Arrival times of the messages for `domain`, in order.
    fn at(&self, domain: &str) -> Vec<f64> {
        let got = self.got.lock().unwrap();
        got.iter()
            .filter(|(r, _)| r.ends_with(&format!("@{domain}")))
            .map(|(_, at)| *at)
            .collect()
    }

    async fn wait_for(&self, domain: &str, n: usize) -> Vec<f64> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let at = self.at(domain);
            if at.len() >= n {
                return at;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} for {domain}",
                at.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Against aiosmtpd: a route's `message_rate` holds at the receiving MTA,
/// and a suspended domain's mail waits until `queue resume`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_and_suspension_hold_at_a_real_receiving_mta() {
    let Some(python) = crate::support::require_python(&["aiosmtpd"]) else {
        return;
    };
    let sink = Sink::start(&python);
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "hostname = \"relay.test\"\n[[listener]]\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n\
         [queue]\npath = {:?}\nretry = [\"1h\"]\n[http]\naddress = \"127.0.0.1:0\"\n\
         [dns]\ndnssec = \"off\"\ndnssec_probe = \"\"\n[delivery]\ntls = \"none\"\n\
         [[delivery.route]]\ndomain = \"dest.test\"\nnext_hop = \"[127.0.0.1]:{port}\"\n\
         message_rate = \"2/sec\"\n\
         [[delivery.route]]\ndomain = \"held.test\"\nnext_hop = \"[127.0.0.1]:{port}\"\n",
        dir.path().join("queue").display(),
        port = sink.port
    );
    let relay = danerelay::start(
        config::parse(&text).unwrap().config,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let api = format!("127.0.0.1:{}", relay.http_address.port());
    let cli = |args: &[&str]| {
        let out = danerelay()
            .args(args)
            .args(["--api", &api])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    cli(&["queue", "suspend", "held.test"]);
    for i in 0..2 {
        enqueue(&relay.queue, "app@src.test", &[&format!("h{i}@held.test")]);
    }
    for i in 0..8 {
        enqueue(&relay.queue, "app@src.test", &[&format!("u{i}@dest.test")]);
    }
    // 2/sec with a burst of 2: the last of 8 no sooner than 3 s after the first.
    let at = sink.wait_for("dest.test", 8).await;
    let span = at[7] - at[0];
    assert!(span >= 2.5, "8 messages at 2/sec took {span:.2}s");
    for i in 0..at.len() {
        for j in i + 1..at.len() {
            let allowed = 2.0 + (at[j] - at[i]) * 2.0 + 1.0;
            assert!(
                (j - i + 1) as f64 <= allowed,
                "{} in {:.2}s",
                j - i + 1,
                at[j] - at[i]
            );
        }
    }
    // Suspended: nothing reached the MTA, and the summary says why.
    assert!(sink.at("held.test").is_empty());
    let (_, body) = http_get(relay.http_address.port(), "/api/queue/summary");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["suspended"][0]["domain"], "held.test", "{v}");
    cli(&["queue", "resume", "held.test"]);
    sink.wait_for("held.test", 2).await;
    assert_eq!(relay.queue.counts().total(), 0);
    relay.drain().await;
}
