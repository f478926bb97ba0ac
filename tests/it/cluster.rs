//! `[cluster] redis_url` against a real `redis-server` (started here on a
//! free loopback port, no persistence): two relays in one process, each with
//! its own queue, share one destination's `message_rate` — the receiving
//! MTA (the fake MX, which times every message) sees their combined rate
//! within the limit plus one burst. With Redis gone they keep delivering on
//! their own limits and say so in `/metrics`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use danerelay::config;
use danerelay::testing::{enqueue, FakeMx};
use tokio_util::sync::CancellationToken;

use crate::support::require_tool;

/// A `redis-server` of the test's own, killed on drop.
struct Redis {
    child: Child,
    port: u16,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_redis(server: &std::path::Path) -> Redis {
    let port = free_port();
    let child = Command::new(server)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server starts");
    let redis = Redis { child, port };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    redis
}

/// A relay whose mail for dest.test goes to `mx_port` at 5/sec, with
/// `redis_url` shared.
async fn relay(dir: &std::path::Path, mx_port: u16, redis_url: &str) -> danerelay::Running {
    relay_shaped(dir, mx_port, redis_url, "message_rate = \"5/sec\"").await
}

/// A relay whose mail for dest.test goes to `mx_port`, shaped by `shape`.
async fn relay_shaped(
    dir: &std::path::Path,
    mx_port: u16,
    redis_url: &str,
    shape: &str,
) -> danerelay::Running {
    let text = format!(
        "hostname = \"relay.test\"\n[[listener]]\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n\
         [queue]\npath = {:?}\nretry = [\"1h\"]\n[http]\naddress = \"127.0.0.1:0\"\n\
         [dns]\ndnssec = \"off\"\ndnssec_probe = \"\"\n\
         [delivery]\ntls = \"none\"\n\
         [[delivery.route]]\ndomain = \"dest.test\"\nnext_hop = \"[127.0.0.1]:{mx_port}\"\n\
         {shape}\n\
         [cluster]\nredis_url = \"{redis_url}\"\n",
        dir.join("queue").display()
    );
    let cfg = config::parse(&text).unwrap().config;
    danerelay::start(cfg, CancellationToken::new())
        .await
        .unwrap()
}

/// Sorted acceptance times at the fake MX, once `n` messages are there.
async fn delivered(mx: &FakeMx, n: usize) -> Vec<Instant> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while mx.messages().len() < n {
        assert!(
            Instant::now() < deadline,
            "{} of {n} delivered",
            mx.messages().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut at: Vec<Instant> = mx.messages().iter().map(|m| m.at).collect();
    at.sort();
    at
}

/// The most messages in any window, over what `per_sec` with `burst`
/// allows in it (+1 for timing at the sink rather than at the bucket).
fn worst_excess(at: &[Instant], per_sec: f64, burst: f64) -> f64 {
    let mut worst = f64::MIN;
    for i in 0..at.len() {
        for j in i..at.len() {
            let allowed = burst + (at[j] - at[i]).as_secs_f64() * per_sec + 1.0;
            worst = worst.max((j - i + 1) as f64 - allowed);
        }
    }
    worst
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_share_one_rate_through_redis_and_fall_back_without_it() {
    let Some(server) = require_tool("redis-server") else {
        return;
    };
    let mut redis = start_redis(&server);
    let url = format!("redis://127.0.0.1:{}/0", redis.port);
    let mx = FakeMx::start(Duration::ZERO).await;
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = relay(d1.path(), mx.port, &url).await;
    let b = relay(d2.path(), mx.port, &url).await;
    for i in 0..12 {
        enqueue(&a.queue, "app@src.test", &[&format!("a{i}@dest.test")]);
        enqueue(&b.queue, "app@src.test", &[&format!("b{i}@dest.test")]);
    }
    let at = delivered(&mx, 24).await;
    let span = at[23] - at[0];
    // 24 messages at 5/s shared, one burst of 5: at least 19/5 s. Alone,
    // each relay would have needed only 7/5 s.
    assert!(span >= Duration::from_millis(3600), "{span:?}");
    let excess = worst_excess(&at, 5.0, 5.0);
    assert!(
        excess <= 0.0,
        "the combined rate overran by {excess} messages"
    );
    for r in [&a, &b] {
        assert_eq!(r.metrics.cluster_redis_up.get(), 1);
        assert_eq!(r.metrics.cluster_redis_errors_total.get(), 0);
    }

    // Redis goes away: both keep delivering on their own 5/sec.
    let _ = redis.child.kill();
    let _ = redis.child.wait();
    for i in 0..4 {
        enqueue(&a.queue, "app@src.test", &[&format!("c{i}@dest.test")]);
        enqueue(&b.queue, "app@src.test", &[&format!("d{i}@dest.test")]);
    }
    delivered(&mx, 32).await;
    for r in [&a, &b] {
        assert_eq!(r.metrics.cluster_redis_up.get(), 0);
        assert!(r.metrics.cluster_redis_errors_total.get() >= 1);
        let (status, text) = crate::cli::http_get(r.http_address.port(), "/metrics");
        assert_eq!(status, 200);
        assert!(text.contains("danerelay_cluster_redis_up 0"), "{text}");
    }
    a.drain().await;
    b.drain().await;
}

/// `max_connections = 2` shared: two relays with mail waiting never hold
/// more than two connections to the destination together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_share_one_connection_limit_through_redis() {
    let Some(server) = require_tool("redis-server") else {
        return;
    };
    let redis = start_redis(&server);
    let url = format!("redis://127.0.0.1:{}/0", redis.port);
    let mx = FakeMx::start(Duration::from_millis(300)).await;
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = relay_shaped(d1.path(), mx.port, &url, "max_connections = 2").await;
    let b = relay_shaped(d2.path(), mx.port, &url, "max_connections = 2").await;
    for i in 0..8 {
        enqueue(&a.queue, "app@src.test", &[&format!("a{i}@dest.test")]);
        enqueue(&b.queue, "app@src.test", &[&format!("b{i}@dest.test")]);
    }
    delivered(&mx, 16).await;
    let max = mx.transcript.lock().unwrap().max_active;
    assert!(max <= 2, "{max} connections at once from two relays");
    assert_eq!(a.metrics.cluster_redis_up.get(), 1);
    a.drain().await;
    b.drain().await;
}
