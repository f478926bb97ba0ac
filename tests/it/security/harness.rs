//! Starts the submission server with `[limits]` adjusted per test and a
//! [`Metrics`] the test can read; reuses the submission tests' certificate,
//! config and raw client (`smtp/harness.rs`).

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use danerelay::config::Config;
use danerelay::metrics::Metrics;
use danerelay::smtp::server::{run_with_store, ServerOptions};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use super::smtp_harness::{Client, Scenario, Server, PASSWORD, USER};

pub struct Srv {
    pub srv: Server,
    pub metrics: Metrics,
}

impl Deref for Srv {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.srv
    }
}

impl Srv {
    pub fn rejected(&self, reason: &str) -> u64 {
        self.metrics
            .messages_rejected_total
            .with_label_values(&[reason])
            .get()
    }

    pub fn limit_hits(&self, limit: &str) -> u64 {
        self.metrics
            .smtp_limit_hits_total
            .with_label_values(&[limit])
            .get()
    }

    /// Connected over STARTTLS and logged in as [`USER`].
    pub async fn logged_in(&self) -> Client {
        let (c, _) = Client::connect(self.starttls).await;
        let mut c = c.starttls(&self.ca_pem).await;
        assert_eq!(c.login(USER, PASSWORD).await.0, 235);
        c
    }
}

/// 127.0.0.1 as a trusted network (relays without AUTH).
pub fn loopback_trusted(s: &mut Scenario) {
    s.trusted = vec!["127.0.0.1/32".parse().unwrap()];
}

/// Starts a server for `scenario`, then lets `tweak` adjust the config.
pub async fn start(s: Scenario, tweak: impl FnOnce(&mut Config)) -> Srv {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = super::smtp_harness::config(&s, dir.path());
    tweak(&mut cfg);
    let opts = danerelay_queue::QueueOptions {
        retry: cfg.queue.retry.clone(),
        max_age: cfg.queue.max_age,
        lease: Duration::from_secs(60),
    };
    let queue = danerelay_queue::Queue::open(&cfg.queue.path, opts).unwrap();
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let metrics = Metrics::new();
    let addrs = run_with_store(
        Arc::new(cfg),
        Arc::new(queue.clone()),
        ServerOptions::default(),
        metrics.clone(),
        shutdown.clone(),
        tracker.clone(),
    )
    .await
    .unwrap();
    let ca_pem = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
    Srv {
        srv: Server {
            starttls: addrs[0],
            implicit: addrs[1],
            plain: addrs[2],
            queue,
            ca_pem,
            _dir: dir,
            shutdown,
            tracker,
        },
        metrics,
    }
}

/// Reads whatever the server sends within `wait` (for "no early reply").
pub async fn nothing_within(stream: &mut tokio::net::TcpStream, wait: Duration) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(wait, stream.read(&mut buf)).await {
        Ok(Ok(n)) => buf[..n].to_vec(),
        _ => Vec::new(),
    }
}
