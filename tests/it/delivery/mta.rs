//! A real receiving MTA for the delivery tests: Python aiosmtpd on
//! `<ip>:25`, with STARTTLS (a given certificate chain) or without, printing
//! one JSON line per accepted message; killed on drop.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use rustls_pki_types::CertificateDer;

const SERVER: &str = r#"
import asyncio, json, ssl, sys
from aiosmtpd.smtp import SMTP

class Handler:
    async def handle_DATA(self, server, session, envelope):
        print(json.dumps({
            "from": envelope.mail_from,
            "rcpts": envelope.rcpt_tos,
            "tls": session.ssl is not None,
            "data": envelope.original_content.decode("latin-1"),
        }), flush=True)
        return "250 2.0.0 Ok: queued"

host, port, cert, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = None
if cert != "-":
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
loop = asyncio.new_event_loop()
factory = lambda: SMTP(Handler(), hostname="mx.test", tls_context=ctx, require_starttls=False)
server = loop.run_until_complete(loop.create_server(factory, host=host, port=port))
print("ready", flush=True)
loop.run_forever()
"#;

/// One accepted message.
#[derive(Debug, Clone)]
pub struct Got {
    pub from: String,
    pub rcpts: Vec<String>,
    pub tls: bool,
    pub data: String,
}

pub struct Mta {
    child: Child,
    got: Arc<Mutex<Vec<Got>>>,
    _dir: tempfile::TempDir,
}

impl Drop for Mta {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

impl Mta {
    /// Starts aiosmtpd on `ip:25`; `tls` = the chain (leaf first) and key,
    /// or `None` for a server that offers no STARTTLS.
    pub fn start(
        python: &Path,
        ip: &str,
        tls: Option<(&[CertificateDer<'static>], &rcgen::KeyPair)>,
    ) -> Mta {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = match tls {
            Some((chain, key)) => {
                let cert_path = dir.path().join("chain.pem");
                let key_path = dir.path().join("key.pem");
                let chain_pem: String = chain.iter().map(|c| pem("CERTIFICATE", c)).collect();
                std::fs::write(&cert_path, chain_pem).unwrap();
                std::fs::write(&key_path, key.serialize_pem()).unwrap();
                (
                    cert_path.display().to_string(),
                    key_path.display().to_string(),
                )
            }
            None => ("-".to_string(), "-".to_string()),
        };
        let mut child = Command::new(python)
            .args(["-c", SERVER, ip, "25", &cert, &key])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        assert_eq!(first.trim(), "ready", "aiosmtpd on {ip}:25 did not start");
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        std::thread::spawn(move || {
            for line in out.lines() {
                let Ok(line) = line else { return };
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                sink.lock().unwrap().push(Got {
                    from: v["from"].as_str().unwrap().to_string(),
                    rcpts: serde_json::from_value(v["rcpts"].clone()).unwrap(),
                    tls: v["tls"].as_bool().unwrap(),
                    data: v["data"].as_str().unwrap().to_string(),
                });
            }
        });
        Mta {
            child,
            got,
            _dir: dir,
        }
    }

    pub fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// Waits (bounded) for `n` messages.
    pub async fn wait_for(&self, n: usize) -> Vec<Got> {
        let start = Instant::now();
        loop {
            let got = self.got();
            if got.len() >= n {
                return got;
            }
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "MTA got {} of {n} messages",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
