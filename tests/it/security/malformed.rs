//! Malformed input: over-long lines and messages get their codes without
//! the server buffering them; invalid UTF-8 and NUL bytes in commands get a
//! clear 5xx and the session carries on.

use super::harness::{loopback_trusted, start, Client, Scenario};

fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test]
async fn invalid_utf8_and_nul_bytes_in_commands_get_5xx() {
    let mut s = Scenario::default();
    loopback_trusted(&mut s);
    let srv = start(s, |_| {}).await;
    let (mut c, _) = Client::connect(srv.plain).await;
    assert_eq!(c.cmd("EHLO c").await.0, 250);
    let cases: &[&[u8]] = &[
        b"\xff\xfe\r\n",
        b"NOOP \xc3\x28\r\n",
        b"MAIL FROM:<a\xff@relay.test>\r\n",
        b"EHLO \xed\xa0\x80\r\n",
        b"NO\x00OP\r\n",
        b"MAIL FROM:<a\x00b@relay.test>\r\n",
        b"\x00\r\n",
        b"RCPT TO:<\x00@example.org>\r\n",
    ];
    for case in cases {
        c.send(case).await;
        let (code, text) = c.reply().await;
        assert!((500..=555).contains(&code), "{case:?}: {code} {text}");
        assert!(text.starts_with("5."), "{case:?}: no enhanced code: {text}");
    }
    // Still in sync and usable.
    assert_eq!(c.cmd("NOOP").await.0, 250);
    assert_eq!(c.cmd("MAIL FROM:<a@relay.test>").await.0, 250);
    assert_eq!(c.cmd("QUIT").await.0, 221);
    assert!(srv.messages().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_line_and_message_get_their_codes_without_memory_growth() {
    let mut s = Scenario::default();
    loopback_trusted(&mut s);
    s.max_message_size = 40 * 1024 * 1024;
    let srv = start(s, |_| {}).await;
    let (mut c, _) = Client::connect(srv.plain).await;
    assert_eq!(c.cmd("EHLO c").await.0, 250);
    let before = vm_rss_kib();
    // 64 MiB on one "command line" with no LF at all.
    let chunk = vec![b'A'; 1024 * 1024];
    let sender = {
        let mut c2 = Client::connect(srv.plain).await.0;
        assert_eq!(c2.cmd("EHLO c").await.0, 250);
        tokio::spawn(async move {
            for _ in 0..64 {
                c2.send(&chunk).await;
            }
            c2.send(b"\r\nNOOP\r\n").await;
            let first = c2.reply().await;
            let second = c2.reply().await;
            (first, second)
        })
    };
    let (first, second) = sender.await.unwrap();
    assert_eq!((first.0, &first.1[..5]), (500, "5.5.6"), "{first:?}");
    assert_eq!(second.0, 250);
    // 48 MiB of message against a 40 MiB limit.
    assert_eq!(c.cmd("MAIL FROM:<a@relay.test>").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<b@example.org>").await.0, 250);
    assert_eq!(c.cmd("DATA").await.0, 354);
    let line = format!("{}\r\n", "z".repeat(998));
    let block = line.repeat(1024);
    for _ in 0..48 {
        c.send(block.as_bytes()).await;
    }
    c.send(b".\r\n").await;
    let (code, text) = c.reply().await;
    assert_eq!((code, &text[..5]), (552, "5.3.4"), "{text}");
    assert_eq!(c.cmd("NOOP").await.0, 250);
    // A 32 MiB header section (one folded field) under the message limit:
    // refused by the header limit, never buffered.
    assert_eq!(c.cmd("MAIL FROM:<a@relay.test>").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<b@example.org>").await.0, 250);
    assert_eq!(c.cmd("DATA").await.0, 354);
    c.send(b"X-Big: start\r\n").await;
    let folded = format!(" {}\r\n", "h".repeat(997)).repeat(1024);
    for _ in 0..32 {
        c.send(folded.as_bytes()).await;
    }
    c.send(b"\r\nbody\r\n.\r\n").await;
    let (code, text) = c.reply().await;
    assert_eq!(code, 552, "{text}");
    assert!(text.starts_with("5.3.4 Message header"), "{text}");
    assert_eq!(c.cmd("NOOP").await.0, 250);
    let grown_mib = vm_rss_kib().saturating_sub(before) / 1024;
    // 144 MiB went through; buffering any of it whole would show here.
    assert!(grown_mib < 48, "RSS grew by {grown_mib} MiB");
    assert!(srv.messages().is_empty());
    assert_eq!(srv.rejected("too-large"), 1);
    assert_eq!(srv.rejected("header-limit"), 1);
    assert!(srv.limit_hits("line-length") >= 1);
}
