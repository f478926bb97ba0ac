//! The lab: a test CA, a policy server per test (its own 127.0.43.x
//! address on port 443), a queue for the durable cache, and an [`Sts`]
//! over the fake DNS.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use danerelay::config::MtaStsConfig;
use danerelay::dns::{DnsLookup, Security};
use danerelay::metrics::{Label, Metrics, StsFetchResult};
use danerelay::sts::Sts;
use danerelay::testing::certs::{self, Node};
use danerelay::testing::FakeDns;
use danerelay_queue::{Queue, QueueOptions};

use crate::support::require_python;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/sts/policy_server.py");

/// An enforce policy listing `mx`.
pub fn policy(mode: &str, mx: &[&str]) -> String {
    let mut p = format!("version: STSv1\r\nmode: {mode}\r\n");
    for m in mx {
        p.push_str(&format!("mx: {m}\r\n"));
    }
    p.push_str("max_age: 86400\r\n");
    p
}

/// `policy_server.py` on `ip`:443; killed on drop.
pub struct PolicyServer {
    child: Child,
    pub state: PathBuf,
}

impl PolicyServer {
    /// Serves `policy` with a certificate `cert` (key included).
    pub fn start(dir: &Path, ip: &str, cert: &Node, policy: &str) -> Option<PolicyServer> {
        let python = require_python(&["ssl"])?;
        let state = dir.join(format!("server-{ip}"));
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(state.join("cert.pem"), cert.cert_pem()).unwrap();
        std::fs::write(state.join("key.pem"), cert.key_pem()).unwrap();
        std::fs::write(state.join("policy.txt"), policy).unwrap();
        std::fs::write(state.join("behaviour"), "ok").unwrap();
        let mut child = Command::new(python)
            .arg(SCRIPT)
            .args([ip, "443"])
            .arg(state.join("cert.pem"))
            .arg(state.join("key.pem"))
            .arg(&state)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        assert_eq!(
            line.trim(),
            "ready",
            "policy_server.py did not start on {ip}"
        );
        Some(PolicyServer { child, state })
    }

    pub fn behave(&self, behaviour: &str) {
        std::fs::write(self.state.join("behaviour"), behaviour).unwrap();
    }

    pub fn set_policy(&self, policy: &str) {
        std::fs::write(self.state.join("policy.txt"), policy).unwrap();
    }

    /// Requests served so far.
    pub fn requests(&self) -> usize {
        std::fs::read_to_string(self.state.join("requests.log"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }
}

impl Drop for PolicyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CA, its file, DNS, metrics, a queue directory.
pub struct Lab {
    pub dir: tempfile::TempDir,
    pub ca: Node,
    pub ca_file: PathBuf,
    pub dns: Arc<FakeDns>,
    pub metrics: Metrics,
}

impl Lab {
    pub fn new() -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let ca = certs::ca("danerelay MTA-STS test CA", None, false);
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.cert_pem()).unwrap();
        Lab {
            dir,
            ca,
            ca_file,
            dns: Arc::new(FakeDns::new()),
            metrics: Metrics::new(),
        }
    }

    /// A certificate from the test CA for `names` (expired if asked).
    pub fn cert(&self, names: &[&str], expired: bool) -> Node {
        certs::leaf(names, Some(&self.ca), expired)
    }

    /// `domain` publishes `_mta-sts` with `id` and its policy host at `ip`.
    pub fn publish(&self, domain: &str, id: &str, ip: &str) {
        self.dns.txt(
            &format!("_mta-sts.{domain}"),
            Security::Insecure,
            &[&format!("v=STSv1; id={id};"), "v=spf1 -all"],
        );
        self.dns
            .a(&format!("mta-sts.{domain}"), Security::Insecure, &[ip]);
    }

    /// A policy server for `domain` at `ip` with a right certificate.
    pub fn server(&self, domain: &str, ip: &str, policy: &str) -> Option<PolicyServer> {
        let cert = self.cert(&[&format!("mta-sts.{domain}")], false);
        PolicyServer::start(self.dir.path(), ip, &cert, policy)
    }

    pub fn queue(&self) -> Queue {
        let opts = QueueOptions {
            retry: vec![Duration::from_secs(3600)],
            max_age: Duration::from_secs(86400),
            lease: Duration::from_secs(3600),
        };
        Queue::open(&self.dir.path().join("queue"), opts).unwrap()
    }

    /// MTA-STS over the lab's DNS and CA, caching in `queue`.
    pub fn sts(&self, queue: Option<Queue>, timeout: Duration) -> Sts {
        let config = MtaStsConfig {
            enabled: true,
            ca_file: Some(self.ca_file.clone()),
            fetch_timeout: timeout,
        };
        let dns: Arc<dyn DnsLookup> = self.dns.clone();
        Sts::from_config(&config, dns, queue, self.metrics.clone())
            .unwrap()
            .unwrap()
    }

    /// `danerelay_mta_sts_fetch_total{result}`.
    pub fn fetches(&self, result: StsFetchResult) -> u64 {
        self.metrics
            .mta_sts_fetch_total
            .with_label_values(&[result.label()])
            .get()
    }
}
