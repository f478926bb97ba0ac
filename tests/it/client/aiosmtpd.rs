//! The client against a real receiving MTA: Python aiosmtpd with STARTTLS
//! on 127.0.0.1 (ephemeral port). Proves the wire format (dot-stuffing,
//! parameters, STARTTLS, reuse) against an implementation that is not ours.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};

use danerelay::delivery::outcome;
use danerelay::smtp::client::{Client, Envelope, Recipient, Timeouts};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use super::certs::client_config;
use crate::support::require_python;

const SERVER: &str = r#"
import asyncio, json, ssl, sys
from aiosmtpd.smtp import SMTP

class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("reject"):
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        print(json.dumps({
            "from": envelope.mail_from,
            "options": envelope.mail_options,
            "rcpts": envelope.rcpt_tos,
            "tls": session.ssl is not None,
            "data": envelope.original_content.decode("latin-1"),
        }), flush=True)
        return "250 2.0.0 Ok: queued"

ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
loop = asyncio.new_event_loop()
factory = lambda: SMTP(Handler(), tls_context=ctx, require_starttls=True, enable_SMTPUTF8=True)
server = loop.run_until_complete(loop.create_server(factory, host="127.0.0.1", port=0))
print(server.sockets[0].getsockname()[1], flush=True)
loop.run_forever()
"#;

/// Kills the server when the test ends, pass or fail.
struct Peer {
    child: Child,
    out: BufReader<ChildStdout>,
    _dir: tempfile::TempDir,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Peer {
    fn start(python: &std::path::Path) -> Peer {
        let dir = tempfile::tempdir().unwrap();
        let mx = danerelay::testing::certs::self_signed(&["mx.test"]);
        let (cert, key) = (mx.cert_pem(), mx.key_pem());
        let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_path, cert).unwrap();
        std::fs::write(&key_path, key).unwrap();
        let mut child = Command::new(python)
            .arg("-c")
            .arg(SERVER)
            .arg(&cert_path)
            .arg(&key_path)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        Peer {
            child,
            out,
            _dir: dir,
        }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "aiosmtpd exited");
        line
    }
}

#[tokio::test]
async fn delivers_over_starttls_to_aiosmtpd_with_reuse_and_dot_stuffing() {
    let Some(python) = require_python(&["aiosmtpd"]) else {
        return;
    };
    let mut peer = Peer::start(&python);
    let port: u16 = peer.line().trim().parse().unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut c = Client::new(tcp, Timeouts::default(), "relay.test");
    c.greeting().await.unwrap();
    c.ehlo().await.unwrap();
    let name = ServerName::try_from("mx.test").unwrap();
    let info = c.starttls(client_config(true), name).await.unwrap();
    assert!(info.version.starts_with("TLSv1."), "{info:?}");

    let first_body = b"Subject: one\r\n\r\n.starts with a dot\r\n.\r\n..\r\nend\r\n";
    let mut env = Envelope::new(
        "sender@relay.test",
        vec![
            Recipient::new("ok@dest.test"),
            Recipient::new("reject@dest.test"),
        ],
    );
    env.body_8bit = true;
    env.size = Some(first_body.len() as u64);
    let first = c.transaction(&env, &first_body[..]).await;
    let labels: Vec<_> = first
        .recipients
        .iter()
        .map(|r| outcome::for_rcpt(r).label())
        .collect();
    assert_eq!(labels, ["delivered", "bounced"]);

    let second_body = "Subject: two\r\n\r\nGrüße\r\n".as_bytes();
    let env2 = Envelope::new("sender@relay.test", vec![Recipient::new("ok2@dest.test")]);
    let second = c.transaction(&env2, second_body).await;
    assert!(
        second.recipients[0].is_delivered(),
        "{:?}",
        second.recipients[0]
    );
    c.quit().await.unwrap();

    let got: serde_json::Value = serde_json::from_str(&peer.line()).unwrap();
    assert_eq!(got["from"], "sender@relay.test");
    assert_eq!(got["rcpts"], serde_json::json!(["ok@dest.test"]));
    assert_eq!(got["tls"], true);
    let options: Vec<String> = serde_json::from_value(got["options"].clone()).unwrap();
    assert!(
        options.contains(&"BODY=8BITMIME".to_string()),
        "{options:?}"
    );
    assert!(
        options.contains(&format!("SIZE={}", first_body.len())),
        "{options:?}"
    );
    assert_eq!(got["data"].as_str().unwrap().as_bytes(), &first_body[..]);

    let got: serde_json::Value = serde_json::from_str(&peer.line()).unwrap();
    assert_eq!(got["rcpts"], serde_json::json!(["ok2@dest.test"]));
    let data = got["data"].as_str().unwrap();
    // latin-1 round trip of the UTF-8 octets: compare bytes.
    let octets: Vec<u8> = data.chars().map(|c| c as u32 as u8).collect();
    assert_eq!(octets, second_body);
}
