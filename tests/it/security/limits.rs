//! Abuse limits over real sockets: each fires with its reply, its metric,
//! and leaves the server serving everyone else.

use std::time::{Duration, Instant};

use super::harness::{loopback_trusted, nothing_within, start, Client, Scenario, USER};

fn is_closed(reply: &(u16, String)) -> bool {
    reply.0 == 0
}

#[tokio::test]
async fn connections_per_ip_are_capped_with_421() {
    let srv = start(Scenario::default(), |c| c.limits.max_connections_per_ip = 2).await;
    let (a, ga) = Client::connect(srv.plain).await;
    let (_b, gb) = Client::connect(srv.plain).await;
    assert_eq!((ga.0, gb.0), (220, 220));
    let (mut c, gc) = Client::connect(srv.plain).await;
    assert_eq!(gc.0, 421);
    assert!(
        gc.1.starts_with("4.7.0 ") && gc.1.contains("from your address"),
        "{}",
        gc.1
    );
    assert!(is_closed(&c.reply().await));
    assert_eq!(srv.limit_hits("connections-per-ip"), 1);
    drop(a);
    // The slot comes back once the first client is gone.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_d, g) = Client::connect(srv.plain).await;
        if g.0 == 220 {
            break;
        }
        assert!(Instant::now() < deadline, "slot never released");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn trusted_networks_are_exempt_from_per_ip_limits() {
    let mut s = Scenario::default();
    loopback_trusted(&mut s);
    let srv = start(s, |c| c.limits.max_connections_per_ip = 1).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let (c, g) = Client::connect(srv.plain).await;
        assert_eq!(g.0, 220);
        held.push(c);
    }
}

#[tokio::test]
async fn connection_rate_per_ip_gives_421() {
    let srv = start(Scenario::default(), |c| c.limits.connection_rate_per_ip = 3).await;
    for _ in 0..3 {
        let (mut c, g) = Client::connect(srv.plain).await;
        assert_eq!(g.0, 220);
        assert_eq!(c.cmd("QUIT").await.0, 221);
    }
    let (_c, g) = Client::connect(srv.plain).await;
    assert_eq!(g.0, 421);
    assert!(g.1.contains("rate limit"), "{}", g.1);
    assert_eq!(srv.limit_hits("connection-rate"), 1);
}

#[tokio::test]
async fn commands_without_progress_end_with_421() {
    let srv = start(Scenario::default(), |c| c.limits.max_junk_commands = 5).await;
    let (mut c, _) = Client::connect(srv.plain).await;
    for cmd in ["NOOP", "RSET", "VRFY root", "HELP", "XYZZY"] {
        let (code, _) = c.cmd(cmd).await;
        assert!(
            code == 250 || code == 252 || code == 214 || code == 500,
            "{cmd}: {code}"
        );
    }
    let (code, text) = c.cmd("NOOP").await;
    assert_eq!(code, 421, "{text}");
    assert!(text.starts_with("4.7.0 "), "{text}");
    assert!(is_closed(&c.reply().await));
    assert_eq!(srv.limit_hits("junk-commands"), 1);
}

#[tokio::test]
async fn per_user_message_rate_gives_450_across_sessions() {
    let srv = start(Scenario::default(), |c| {
        c.limits.messages_per_user_per_hour = 2
    })
    .await;
    for _ in 0..2 {
        let mut c = srv.logged_in().await;
        assert_eq!(c.cmd(&format!("MAIL FROM:<{USER}>")).await.0, 250);
        assert_eq!(c.cmd("RCPT TO:<bob@example.org>").await.0, 250);
        assert_eq!(c.cmd("DATA").await.0, 354);
        c.send(b"Subject: x\r\n\r\nx\r\n.\r\n").await;
        assert_eq!(c.reply().await.0, 250);
    }
    let mut c = srv.logged_in().await;
    let (code, text) = c.cmd(&format!("MAIL FROM:<{USER}>")).await;
    assert_eq!(code, 450, "{text}");
    assert!(text.starts_with("4.7.1 "), "{text}");
    assert_eq!(srv.messages().len(), 2);
    assert_eq!(srv.rejected("rate-limit"), 1);
    assert_eq!(srv.limit_hits("user-message-rate"), 1);
}

#[tokio::test]
async fn auth_brute_force_is_slowed_then_cut_off() {
    let srv = start(Scenario::default(), |c| c.limits.max_auth_failures = 3).await;
    let mut c = srv.logged_in().await; // a good login does not count
    drop(c.cmd("QUIT").await);
    let mut delays = Vec::new();
    for round in 0..2 {
        let (c0, _) = Client::connect(srv.starttls).await;
        let mut c = c0.starttls(&srv.ca_pem).await;
        for attempt in 0..3 {
            let t = Instant::now();
            let (code, text) = c.login(USER, &format!("guess-{round}-{attempt}")).await;
            delays.push(t.elapsed());
            assert_eq!(code, if attempt < 2 { 535 } else { 421 }, "{text}");
        }
        assert!(is_closed(&c.reply().await));
    }
    // The throttle grows per client address: 100 ms, 200 ms, 400 ms, … (capped at 5 s).
    assert!(delays[0] >= Duration::from_millis(100), "{delays:?}");
    assert!(delays[5] >= Duration::from_millis(3200), "{delays:?}");
    assert!(delays[5] > delays[1], "{delays:?}");
    assert_eq!(srv.metrics.auth_failures_total.get(), 6);
    assert_eq!(srv.limit_hits("auth-failures"), 2);
    // The right password still works afterwards (no lock-out of the user).
    let mut c = srv.logged_in().await;
    assert_eq!(c.cmd("QUIT").await.0, 221);
}

async fn submit(c: &mut Client, body: &[u8]) -> (u16, String) {
    assert_eq!(c.cmd("MAIL FROM:<a@relay.test>").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<b@example.org>").await.0, 250);
    assert_eq!(c.cmd("DATA").await.0, 354);
    c.send(body).await;
    c.send(b".\r\n").await;
    c.reply().await
}

#[tokio::test]
async fn header_size_and_field_count_limits_give_552() {
    let mut s = Scenario::default();
    loopback_trusted(&mut s);
    let srv = start(s, |c| {
        c.limits.max_header_size = 2048;
        c.limits.max_header_fields = 10;
    })
    .await;
    let (mut c, _) = Client::connect(srv.plain).await;
    assert_eq!(c.cmd("EHLO c").await.0, 250);
    let big = format!("Subject: {}\r\n\r\nbody\r\n", "x".repeat(3000));
    let (code, text) = submit(&mut c, big.as_bytes()).await;
    assert_eq!((code, &text[..5]), (552, "5.3.4"), "{text}");
    let many: String = (0..11)
        .map(|i| format!("X-F{i}: v\r\n"))
        .collect::<String>()
        + "\r\nbody\r\n";
    let (code, text) = submit(&mut c, many.as_bytes()).await;
    assert_eq!((code, &text[..5]), (552, "5.3.4"), "{text}");
    // Ten fields and a big body are fine: only the header section is limited.
    let ok: String = (0..10)
        .map(|i| format!("X-F{i}: v\r\n"))
        .collect::<String>()
        + "\r\n"
        + &format!("{}\r\n", "y".repeat(70)).repeat(100);
    let (code, text) = submit(&mut c, ok.as_bytes()).await;
    assert_eq!(code, 250, "{text}");
    assert_eq!(srv.messages().len(), 1);
    assert_eq!(srv.rejected("header-limit"), 2);
    assert_eq!(srv.limit_hits("header-size"), 1);
    assert_eq!(srv.limit_hits("header-fields"), 1);
}

#[tokio::test]
async fn recipients_per_message_and_per_session() {
    let mut s = Scenario::default();
    loopback_trusted(&mut s);
    s.max_recipients = 3;
    let srv = start(s, |c| c.limits.max_recipients_per_session = 4).await;
    let (mut c, _) = Client::connect(srv.plain).await;
    assert_eq!(c.cmd("EHLO c").await.0, 250);
    assert_eq!(c.cmd("MAIL FROM:<a@relay.test>").await.0, 250);
    for i in 0..3 {
        assert_eq!(c.cmd(&format!("RCPT TO:<r{i}@example.org>")).await.0, 250);
    }
    let (code, text) = c.cmd("RCPT TO:<r3@example.org>").await;
    assert_eq!((code, text.as_str()), (452, "4.5.3 Too many recipients"));
    assert_eq!(c.cmd("RSET").await.0, 250);
    assert_eq!(c.cmd("MAIL FROM:<a@relay.test>").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<r4@example.org>").await.0, 250);
    let (code, text) = c.cmd("RCPT TO:<r5@example.org>").await;
    assert_eq!(
        (code, text.as_str()),
        (452, "4.5.3 Too many recipients in this session")
    );
    assert_eq!(srv.limit_hits("recipients-per-message"), 1);
    assert_eq!(srv.limit_hits("recipients-per-session"), 1);
    assert_eq!(srv.rejected("too-many-recipients"), 2);
}

/// Slowloris over a real socket: a byte every 100 ms never trips the 400 ms
/// command timeout, but the 1 s DATA deadline ends the session.
#[tokio::test]
async fn trickling_client_hits_the_data_deadline() {
    use tokio::io::AsyncWriteExt;
    let mut s = Scenario::default();
    loopback_trusted(&mut s);
    s.command_timeout = Duration::from_millis(400);
    let srv = start(s, |c| c.limits.data_timeout = Duration::from_secs(1)).await;
    let mut raw = tokio::net::TcpStream::connect(srv.plain).await.unwrap();
    raw.write_all(b"HELO c\r\nMAIL FROM:<a@relay.test>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    while !got.ends_with(b"354 End data with <CR><LF>.<CR><LF>\r\n") {
        let more = nothing_within(&mut raw, Duration::from_secs(5)).await;
        assert!(!more.is_empty(), "{got:?}");
        got.extend(more);
    }
    let t = Instant::now();
    let mut reply = Vec::new();
    for _ in 0..30 {
        if raw.write_all(b"x").await.is_err() {
            break;
        }
        reply.extend(nothing_within(&mut raw, Duration::from_millis(100)).await);
        if !reply.is_empty() {
            break;
        }
    }
    let text = String::from_utf8_lossy(&reply);
    assert!(text.starts_with("421 4.4.2 "), "{text:?}");
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(srv.limit_hits("data-timeout"), 1);
    assert!(srv.messages().is_empty());
}

#[tokio::test]
async fn session_metrics_count_sessions_messages_and_bytes() {
    let mut s = Scenario::default();
    loopback_trusted(&mut s);
    let srv = start(s, |_| {}).await;
    let (mut c, _) = Client::connect(srv.plain).await;
    assert_eq!(c.cmd("EHLO c").await.0, 250);
    let body = b"Subject: m\r\n\r\nhello\r\n";
    assert_eq!(submit(&mut c, body).await.0, 250);
    assert_eq!(srv.metrics.smtp_sessions_active.get(), 1);
    assert_eq!(c.cmd("QUIT").await.0, 221);
    let mut tls = srv.logged_in().await;
    assert_eq!(tls.cmd("QUIT").await.0, 221);
    let deadline = Instant::now() + Duration::from_secs(5);
    while srv.metrics.smtp_sessions_active.get() != 0 {
        assert!(Instant::now() < deadline, "sessions_active stuck");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total = |l: &str, t: &str| {
        srv.metrics
            .smtp_sessions_total
            .with_label_values(&[l, t])
            .get()
    };
    assert_eq!(total("none", "plaintext"), 1);
    assert_eq!(total("starttls", "tls"), 1);
    assert_eq!(srv.metrics.messages_received_total.get(), 1);
    assert_eq!(srv.metrics.received_bytes_total.get(), body.len() as u64);
    let text = srv.metrics.render();
    assert!(
        text.contains("danerelay_smtp_sessions_total{listener=\"starttls\",tls=\"tls\"} 1"),
        "{text}"
    );
}
