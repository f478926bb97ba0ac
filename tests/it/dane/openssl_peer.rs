//! Interop with a foreign TLS stack: Python's `ssl` (OpenSSL) as the server
//! on 127.0.0.1:0, the DANE client config as the client. Shows that the SNI
//! on the wire is the TLSA base domain and that verdicts hold against an
//! implementation other than rustls.

use std::io::{BufRead, BufReader, Lines};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};

use rustls_pki_types::CertificateDer;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use danerelay::dane::{client_setup, DaneMatch, DaneTarget, Decision, Failure, Verdict};

use super::{client_verdict, pem, tlsa, Pki, MX};
use crate::support::require_tool;

const SERVER: &str = r#"
import socket, ssl, sys
cert, key, version = sys.argv[1:4]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
v = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}[version]
ctx.minimum_version = v
ctx.maximum_version = v
ctx.load_cert_chain(cert, key)
seen = []
ctx.sni_callback = lambda sock, name, c: seen.append(name)
srv = socket.socket()
srv.settimeout(30)
srv.bind(("127.0.0.1", 0))
srv.listen(1)
print(srv.getsockname()[1], flush=True)
conn, _ = srv.accept()
try:
    tls = ctx.wrap_socket(conn, server_side=True)
    print("ok", seen[0] if seen else "-", tls.version(), flush=True)
    tls.close()
except Exception as e:
    print("error", e, flush=True)
"#;

/// The Python server process; killed when the test ends, pass or fail.
struct Peer {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Peer {
    fn start(
        python: &Path,
        dir: &Path,
        chain: &[CertificateDer<'_>],
        key_pair: &rcgen::KeyPair,
        version: &str,
    ) -> (Self, u16) {
        let cert = dir.join("chain.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, pem(chain)).unwrap();
        std::fs::write(&key, key_pair.serialize_pem()).unwrap();
        let mut child = Command::new(python)
            .arg("-c")
            .arg(SERVER)
            .args([&cert, &key])
            .arg(version)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut peer = Self {
            child,
            lines: BufReader::new(stdout).lines(),
        };
        let port = peer.line().parse().unwrap();
        (peer, port)
    }

    fn line(&mut self) -> String {
        self.lines.next().expect("python printed a line").unwrap()
    }
}

/// Handshakes once with a Python server on `version` presenting `pki`'s
/// full chain; returns the client result, the DANE verdict and the server's
/// report line (`ok SNI VERSION` or `error …`). `None` when python3 is absent
/// (outside CI only).
async fn run(
    pki: &Pki,
    version: &str,
    decision: &Decision,
) -> Option<(Result<(), String>, Option<Verdict>, String)> {
    run_presenting(&pki.full_chain(), &pki.leaf.key, version, decision).await
}

/// [`run`] with a server presenting `chain` (leaf first) and `key`.
pub async fn run_presenting(
    chain: &[CertificateDer<'_>],
    key: &rcgen::KeyPair,
    version: &str,
    decision: &Decision,
) -> Option<(Result<(), String>, Option<Verdict>, String)> {
    let python = require_tool("python3")?;
    let dir = tempfile::tempdir().unwrap();
    let (mut peer, port) = Peer::start(&python, dir.path(), chain, key, version);
    let setup = client_setup(decision, MX).unwrap().unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let tls = TlsConnector::from(setup.config.clone())
        .connect(setup.server_name.clone(), tcp)
        .await;
    let verdict = client_verdict(&setup, tls.as_ref().map(|s| s.get_ref().1));
    let result = tls.map(drop).map_err(|e| e.to_string());
    let server_said = peer.line();
    Some((result, verdict, server_said))
}

#[tokio::test]
async fn openssl_server_dane_ta_verified_with_base_domain_sni() {
    let pki = Pki::new();
    for (version, wire) in [("1.2", "TLSv1.2"), ("1.3", "TLSv1.3")] {
        let target = DaneTarget::new(
            "smtp.provider.example",
            MX,
            vec![tlsa(2, 1, 2, &pki.root.cert)],
        );
        let Some((result, verdict, server)) =
            run(&pki, version, &Decision::Authenticate(target)).await
        else {
            return;
        };
        assert_eq!(result, Ok(()), "server said {server}");
        let m = DaneMatch {
            usage: 2,
            selector: 1,
            matching: 2,
            depth: 2,
        };
        assert_eq!(verdict, Some(Verdict::Verified(m)));
        assert_eq!(server, format!("ok smtp.provider.example {wire}"));
    }
}

#[tokio::test]
async fn openssl_server_dane_failure_aborts() {
    let pki = Pki::new();
    let mut wrong = tlsa(3, 0, 1, &pki.leaf.cert);
    wrong.data[31] ^= 1;
    for version in ["1.2", "1.3"] {
        let target = DaneTarget::new(MX, MX, vec![wrong.clone()]);
        let Some((result, verdict, server)) =
            run(&pki, version, &Decision::Authenticate(target)).await
        else {
            return;
        };
        assert!(result.is_err(), "must not connect; server said {server}");
        assert_eq!(verdict, Some(Verdict::Failed(Failure::NoMatch)));
        assert!(server.starts_with("error"), "{server}");
    }
}
