//! SMTP smuggling (CVE-2023-51764 family): every end-of-data lookalike is
//! content, never an end. The server neither answers early nor stores two
//! messages; the real `<CRLF>.<CRLF>` gets one `550 5.6.0` and the session
//! stays in sync.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::harness::{loopback_trusted, nothing_within, start, Client, Scenario};

const LOOKALIKES: &[&[u8]] = &[
    b"\n.\n",
    b"\r.\r",
    b"\n.\r\n",
    b"\r\n.\n",
    b"\r\n.\r",
    b"\r.\n",
    b"\r.\r\n",
    b"\n.\r",
    b"\r\n.\r\r\n",
    b"\r\n.\n\r\n",
    b"\n\r.\r\n",
];

const SMUGGLED: &[u8] =
    b"MAIL FROM:<ceo@relay.test>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nFrom: ceo\r\n\r\nforged\r\n";

async fn read_reply(raw: &mut TcpStream) -> Vec<u8> {
    let got = nothing_within(raw, Duration::from_secs(10)).await;
    assert!(!got.is_empty(), "no reply");
    got
}

#[tokio::test]
async fn no_end_of_data_lookalike_ends_data_or_gets_a_reply() {
    let mut s = Scenario::default();
    loopback_trusted(&mut s);
    let srv = start(s, |_| {}).await;
    for look in LOOKALIKES {
        let mut raw = TcpStream::connect(srv.plain).await.unwrap();
        assert!(read_reply(&mut raw).await.starts_with(b"220 "));
        raw.write_all(b"EHLO c\r\nMAIL FROM:<a@relay.test>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        while !got.ends_with(b"354 End data with <CR><LF>.<CR><LF>\r\n") {
            got.extend(read_reply(&mut raw).await);
        }
        let mut attack = b"Subject: hi\r\n\r\nbody".to_vec();
        attack.extend_from_slice(look);
        attack.extend_from_slice(SMUGGLED);
        raw.write_all(&attack).await.unwrap();
        let early = nothing_within(&mut raw, Duration::from_millis(300)).await;
        assert!(
            early.is_empty(),
            "{look:?}: early reply {:?}",
            String::from_utf8_lossy(&early)
        );
        raw.write_all(b".\r\nNOOP\r\n").await.unwrap();
        let mut replies = Vec::new();
        while replies.iter().filter(|&&b| b == b'\n').count() < 2 {
            replies.extend(read_reply(&mut raw).await);
        }
        let text = String::from_utf8_lossy(&replies);
        assert!(
            text.starts_with("550 5.6.0 ") && text.ends_with("\r\n250 2.0.0 Ok\r\n"),
            "{look:?}: {text}"
        );
    }
    assert!(srv.messages().is_empty(), "a smuggled message was stored");
    assert_eq!(srv.rejected("bare-line-ending"), LOOKALIKES.len() as u64);
}

/// The same with BDAT: chunk boundaries are octet counts, so an embedded
/// `<CRLF>.<CRLF>` is content (stored once, dot and all), and a bare LF is refused.
#[tokio::test]
async fn bdat_chunks_cannot_smuggle_either() {
    let mut s = Scenario::default();
    loopback_trusted(&mut s);
    let srv = start(s, |_| {}).await;
    let (mut c, _) = Client::connect(srv.plain).await;
    assert_eq!(c.cmd("EHLO c").await.0, 250);
    let mut body = b"Subject: a\r\n\r\nx\r\n.\r\n".to_vec();
    body.extend_from_slice(SMUGGLED);
    assert_eq!(c.cmd("MAIL FROM:<a@relay.test>").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<b@example.org>").await.0, 250);
    c.send(format!("BDAT {} LAST\r\n", body.len()).as_bytes())
        .await;
    c.send(&body).await;
    assert_eq!(c.reply().await.0, 250);
    assert_eq!(c.cmd("NOOP").await.0, 250, "in sync after the chunk");
    let stored = srv.messages();
    assert_eq!(stored.len(), 1, "exactly one message");
    let mut tail = b"\r\nx\r\n.\r\n".to_vec();
    tail.extend_from_slice(SMUGGLED);
    assert!(stored[0].body.ends_with(&tail), "content changed");
    assert_eq!(stored[0].info.envelope.sender, "a@relay.test");

    let bare = b"Subject: b\r\n\r\nx\n.\nMAIL FROM:<e@x>\r\n";
    assert_eq!(c.cmd("MAIL FROM:<a@relay.test>").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<b@example.org>").await.0, 250);
    c.send(format!("BDAT {} LAST\r\n", bare.len()).as_bytes())
        .await;
    c.send(bare).await;
    let (code, text) = c.reply().await;
    assert_eq!((code, &text[..5]), (550, "5.6.0"), "{text}");
    assert_eq!(srv.messages().len(), 1);
}

/// RFC 3207 §6: commands pipelined behind STARTTLS in plaintext are thrown
/// away, not executed inside the TLS session (CVE-2011-0411).
#[tokio::test]
async fn starttls_command_injection_is_discarded() {
    let srv = start(Scenario::default(), |_| {}).await;
    let (mut c, _) = Client::connect(srv.starttls).await;
    assert_eq!(c.cmd("EHLO c").await.0, 250);
    c.send(b"STARTTLS\r\nRSET\r\nMAIL FROM:<alice@example.com>\r\nRCPT TO:<x@example.org>\r\n")
        .await;
    assert_eq!(c.reply().await.0, 220);
    let mut c = c.upgrade(&srv.ca_pem).await;
    // The first reply inside TLS answers this NOOP, not an injected command.
    let (code, text) = c.cmd("NOOP").await;
    assert_eq!((code, text.as_str()), (250, "2.0.0 Ok"));
    // And the session was reset: no HELO, no transaction.
    assert_eq!(c.cmd("RCPT TO:<x@example.org>").await.0, 503);
    assert_eq!(c.cmd("MAIL FROM:<alice@example.com>").await.0, 503);
    assert!(srv.messages().is_empty());
}
