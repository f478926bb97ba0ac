//! A DNS peer that strips DNSSEC proofs: `strip_proxy.py` (stdlib Python)
//! forwards every query to an upstream server (knotd) and drops the
//! authority section of every reply — the NSEC/NSEC3 records that prove a
//! denial of existence or a wildcard expansion — so tests can check that
//! the in-process validator calls such answers bogus instead of insecure.
//! Listens on 127.0.53.4 (UDP and TCP, one port); killed on `Drop`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use super::dnsenv::free_addr;
use super::require_tool;

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/it/support/strip_proxy.py"
);

pub struct StripProxy {
    child: Child,
    pub addr: SocketAddr,
}

impl StripProxy {
    /// `None` when python3 is missing outside CI (the caller returns).
    pub fn start(upstream: SocketAddr) -> Option<StripProxy> {
        let python = require_tool("python3")?;
        let addr = free_addr("127.0.53.4").unwrap();
        let mut child = Command::new(python)
            .arg(SCRIPT)
            .arg(addr.ip().to_string())
            .arg(addr.port().to_string())
            .arg(upstream.ip().to_string())
            .arg(upstream.port().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        assert_eq!(line.trim(), "ready", "strip_proxy.py did not start");
        Some(StripProxy { child, addr })
    }
}

impl Drop for StripProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
