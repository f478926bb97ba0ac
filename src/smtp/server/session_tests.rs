//! Unit tests of the sans-I/O session: lines in, actions out.

use super::*;
use crate::config::SenderPolicy;
use crate::smtp::{Notify, Ret};

fn cfg() -> SessionConfig {
    SessionConfig {
        hostname: "relay.test".into(),
        starttls: true,
        auth_available: true,
        trusted: false,
        sender_policy: SenderPolicy::OwnAddress,
        max_message_size: 1000,
        max_recipients: 2,
        max_auth_failures: 2,
        limits: SessionLimits::default(),
    }
}

fn tls() -> TlsInfo {
    TlsInfo {
        version: "TLSv1.3".into(),
        cipher: "TLS_AES_128_GCM_SHA256".into(),
    }
}

fn code(a: &Action) -> u16 {
    match a {
        Action::Reply(r) | Action::Close(r) | Action::StartTls(r) | Action::ReadData(r) => r.code,
        Action::ReadChunk {
            reject: Some(r), ..
        } => r.code,
        Action::ReadChunk { reject: None, .. } => 0,
        Action::Authenticate { .. } => 1,
    }
}

fn reply(a: &Action) -> Reply {
    match a {
        Action::Reply(r) | Action::Close(r) | Action::StartTls(r) | Action::ReadData(r) => {
            r.clone()
        }
        other => panic!("not a reply: {other:?}"),
    }
}

/// A TLS session logged in as alice@example.com.
fn logged_in(c: SessionConfig) -> Session {
    let mut s = Session::new(c, Some(tls()));
    assert_eq!(code(&s.on_line(b"EHLO client\r\n")), 250);
    let a = s.on_line(b"AUTH PLAIN AGFsaWNlQGV4YW1wbGUuY29tAHB3\r\n"); // \0alice@example.com\0pw
    assert_eq!(
        a,
        Action::Authenticate {
            login: "alice@example.com".into(),
            password: "pw".into()
        }
    );
    assert_eq!(
        s.auth_result(Some("alice@example.com".into())).clone(),
        Action::Reply(Reply::auth_ok())
    );
    s
}

#[test]
fn ehlo_advertises_starttls_in_clear_and_auth_only_in_tls() {
    let mut s = Session::new(cfg(), None);
    let ehlo = reply(&s.on_line(b"EHLO c\r\n")).text.to_string();
    for ext in [
        "PIPELINING",
        "SIZE 1000",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
        "DSN",
        "STARTTLS",
    ] {
        assert!(ehlo.lines().any(|l| l == ext), "{ext} missing from {ehlo}");
    }
    assert!(!ehlo.contains("AUTH"));
    assert_eq!(
        reply(&s.on_line(b"AUTH PLAIN AGEAYg==\r\n")).to_bytes()[..10],
        b"538 5.7.11"[..]
    );
    assert!(matches!(s.on_line(b"STARTTLS\r\n"), Action::StartTls(_)));
    s.tls_established(tls());
    // Everything learnt before TLS is gone: EHLO is needed again.
    assert_eq!(code(&s.on_line(b"MAIL FROM:<a@example.com>\r\n")), 503);
    let ehlo = reply(&s.on_line(b"EHLO c\r\n")).text.to_string();
    assert!(
        ehlo.contains("AUTH PLAIN LOGIN") && !ehlo.contains("STARTTLS"),
        "{ehlo}"
    );
    assert_eq!(code(&s.on_line(b"STARTTLS\r\n")), 503);
}

#[test]
fn unauthenticated_untrusted_client_cannot_relay() {
    let mut s = Session::new(cfg(), Some(tls()));
    s.on_line(b"EHLO c\r\n");
    let r = reply(&s.on_line(b"MAIL FROM:<alice@example.com>\r\n"));
    assert_eq!(
        (r.code, r.enhanced),
        (530, Some(crate::smtp::EnhancedCode(5, 7, 0)))
    );
    assert_eq!(code(&s.on_line(b"RCPT TO:<x@example.org>\r\n")), 503);
}

#[test]
fn trusted_client_relays_without_auth_and_any_sender() {
    let mut s = Session::new(
        SessionConfig {
            trusted: true,
            ..cfg()
        },
        None,
    );
    s.on_line(b"HELO c\r\n");
    assert_eq!(
        code(&s.on_line(b"MAIL FROM:<anyone@anywhere.example>\r\n")),
        250
    );
    assert_eq!(code(&s.on_line(b"RCPT TO:<x@example.org>\r\n")), 250);
    assert!(matches!(s.on_line(b"DATA\r\n"), Action::ReadData(_)));
    assert_eq!(
        s.message_done(MessageOutcome::Queued("ABC".into())),
        Reply::queued("ABC")
    );
    assert!(s.transaction().is_none());
}

#[test]
fn sender_policy_enforced_after_auth() {
    let mut s = logged_in(cfg());
    let r = reply(&s.on_line(b"MAIL FROM:<bob@example.com>\r\n"));
    assert_eq!(
        (r.code, r.enhanced),
        (553, Some(crate::smtp::EnhancedCode(5, 7, 1)))
    );
    assert_eq!(code(&s.on_line(b"MAIL FROM:<alice@example.com>\r\n")), 250);
}

#[test]
fn only_another_relay_may_say_when_a_message_arrived() {
    // A normal account: 555 for the parameter, sender policy as usual.
    let mut s = logged_in(cfg());
    let a = s.on_line(b"MAIL FROM:<alice@example.com> X-DANERELAY-ARRIVAL=1700000000\r\n");
    assert_eq!(
        (code(&a), reply(&a).status().to_string()),
        (555, "5.5.4".into())
    );
    assert_eq!(code(&s.on_line(b"MAIL FROM:<>\r\n")), 553);
    let a = s.on_line(b"MAIL FROM:<alice@example.com>\r\n");
    assert_eq!(code(&a), 250);
    assert!(!s.transaction().unwrap().handoff);

    // A relay account: anyone's mail, bounces too, with its arrival time.
    let mut s = logged_in(cfg());
    s.set_relay_account(true);
    let a = s.on_line(b"MAIL FROM:<> X-DANERELAY-ARRIVAL=1700000000 RET=HDRS\r\n");
    assert_eq!(code(&a), 250, "{a:?}");
    let tx = s.transaction().unwrap();
    assert_eq!(
        (tx.arrival, tx.handoff, tx.ret),
        (Some(1_700_000_000), true, Some(Ret::Headers))
    );
    assert_eq!(code(&s.on_line(b"RSET\r\n")), 250);
    let a = s.on_line(b"MAIL FROM:<bob@elsewhere.example> X-DANERELAY-ARRIVAL=soon\r\n");
    assert_eq!(code(&a), 501);
    let a = s.on_line(b"MAIL FROM:<bob@elsewhere.example>\r\n");
    assert_eq!(code(&a), 250);
    let tx = s.transaction().unwrap();
    assert_eq!((tx.arrival, tx.handoff), (None, true));

    // A trusted network without AUTH hands on too; logged in as a normal user it does not.
    let mut s = Session::new(
        SessionConfig {
            trusted: true,
            ..cfg()
        },
        None,
    );
    assert_eq!(code(&s.on_line(b"EHLO c\r\n")), 250);
    assert_eq!(
        code(&s.on_line(b"MAIL FROM:<> X-DANERELAY-ARRIVAL=5\r\n")),
        250
    );
    assert_eq!(s.transaction().unwrap().arrival, Some(5));
    let mut s = logged_in(SessionConfig {
        trusted: true,
        ..cfg()
    });
    let a = s.on_line(b"MAIL FROM:<alice@example.com> X-DANERELAY-ARRIVAL=5\r\n");
    assert_eq!(code(&a), 555);
    // The flag only counts for a logged-in session.
    let mut s = Session::new(cfg(), Some(tls()));
    s.set_relay_account(true);
    assert_eq!(code(&s.on_line(b"EHLO c\r\n")), 250);
    assert_eq!(
        code(&s.on_line(b"MAIL FROM:<> X-DANERELAY-ARRIVAL=5\r\n")),
        530
    );
}

#[test]
fn auth_login_dialogue_cancel_and_failures() {
    let mut s = Session::new(cfg(), Some(tls()));
    s.on_line(b"EHLO c\r\n");
    assert_eq!(reply(&s.on_line(b"AUTH LOGIN\r\n")).text, "VXNlcm5hbWU6");
    assert_eq!(
        reply(&s.on_line(b"YWxpY2VAZXhhbXBsZS5jb20=\r\n")).text,
        "UGFzc3dvcmQ6"
    );
    assert_eq!(
        s.on_line(b"c2VjcmV0\r\n"),
        Action::Authenticate {
            login: "alice@example.com".into(),
            password: "secret".into()
        }
    );
    assert_eq!(code(&s.auth_result(None)), 535);
    // Cancel with "*".
    s.on_line(b"AUTH PLAIN\r\n");
    assert_eq!(code(&s.on_line(b"*\r\n")), 501);
    assert_eq!(code(&s.on_line(b"AUTH CRAM-MD5\r\n")), 504);
    // Second failure reaches max_auth_failures = 2: 421 4.7.0 and close.
    s.on_line(b"AUTH PLAIN AGEAYg==\r\n");
    match s.auth_result(None) {
        Action::Close(r) => assert_eq!(
            (r.code, r.enhanced),
            (421, Some(crate::smtp::EnhancedCode(4, 7, 0)))
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn over_long_line_abandons_a_sasl_exchange() {
    let mut s = Session::new(cfg(), Some(tls()));
    s.on_line(b"EHLO c\r\n");
    assert_eq!(code(&s.on_line(b"AUTH LOGIN\r\n")), 334);
    let r = reply(&s.on_line_too_long());
    assert_eq!(
        (r.code, r.enhanced),
        (500, Some(crate::smtp::EnhancedCode(5, 5, 6)))
    );
    assert_eq!(code(&s.on_line(b"NOOP\r\n")), 250, "back to commands");
}

#[test]
fn limits_and_parameters() {
    let mut s = logged_in(cfg());
    assert_eq!(
        code(&s.on_line(b"MAIL FROM:<alice@example.com> SIZE=1001\r\n")),
        552
    );
    assert_eq!(
        code(&s.on_line(b"MAIL FROM:<alice@example.com> REQUIRETLS\r\n")),
        555
    );
    assert_eq!(
        code(
            &s.on_line(
                b"MAIL FROM:<alice@example.com> SIZE=10 BODY=8BITMIME RET=FULL ENVID=e1\r\n"
            )
        ),
        250
    );
    assert_eq!(code(&s.on_line(b"MAIL FROM:<alice@example.com>\r\n")), 503);
    assert_eq!(
        code(&s.on_line(b"RCPT TO:<a@x.example> NOTIFY=NEVER ORCPT=rfc822;a@x.example\r\n")),
        250
    );
    assert_eq!(
        code(&s.on_line("RCPT TO:<ü@x.example>\r\n".as_bytes())),
        553
    );
    assert_eq!(code(&s.on_line(b"RCPT TO:<b@x.example>\r\n")), 250);
    let r = reply(&s.on_line(b"RCPT TO:<c@x.example>\r\n"));
    assert_eq!(
        (r.code, r.enhanced),
        (452, Some(crate::smtp::EnhancedCode(4, 5, 3)))
    );
    let tx = s.transaction().unwrap();
    assert!(tx.body_8bit && !tx.smtputf8);
    assert_eq!(tx.ret, Some(Ret::Full));
    assert_eq!(tx.envid.as_deref(), Some("e1"));
    assert_eq!(tx.recipients[0].orcpt.as_deref(), Some("a@x.example"));
    assert_eq!(
        tx.recipients[0].notify,
        Some(Notify {
            success: false,
            failure: false,
            delay: false,
            never: true,
        })
    );
    assert_eq!(tx.recipients[1].notify, None);
    assert_eq!(code(&s.on_line(b"RSET\r\n")), 250);
    assert!(s.transaction().is_none());
}

#[test]
fn smtputf8_addresses_need_the_parameter() {
    let mut s = Session::new(
        SessionConfig {
            trusted: true,
            ..cfg()
        },
        None,
    );
    s.on_line(b"EHLO c\r\n");
    assert_eq!(
        code(&s.on_line("MAIL FROM:<jöran@example.com>\r\n".as_bytes())),
        553
    );
    assert_eq!(
        code(&s.on_line("MAIL FROM:<jöran@example.com> SMTPUTF8\r\n".as_bytes())),
        250
    );
    assert_eq!(
        code(&s.on_line("RCPT TO:<用户@例子.example>\r\n".as_bytes())),
        250
    );
    assert_eq!(
        s.transaction().unwrap().recipients[0].address,
        "用户@例子.example"
    );
}

#[test]
fn helo_clients_get_no_extension_parameters() {
    let mut s = Session::new(
        SessionConfig {
            trusted: true,
            ..cfg()
        },
        None,
    );
    assert_eq!(reply(&s.on_line(b"HELO c\r\n")).text, "relay.test");
    assert_eq!(
        code(&s.on_line(b"MAIL FROM:<a@b.example> BODY=8BITMIME\r\n")),
        555
    );
    assert_eq!(code(&s.on_line(b"MAIL FROM:<a@b.example>\r\n")), 250);
}

#[test]
fn sequence_and_unknown_commands() {
    let mut s = Session::new(
        SessionConfig {
            trusted: true,
            ..cfg()
        },
        None,
    );
    assert_eq!(code(&s.on_line(b"MAIL FROM:<a@b.example>\r\n")), 503);
    s.on_line(b"EHLO c\r\n");
    assert_eq!(code(&s.on_line(b"DATA\r\n")), 503);
    let r = reply(&s.on_line(b"FROB\r\n"));
    assert_eq!(
        (r.code, r.enhanced),
        (500, Some(crate::smtp::EnhancedCode(5, 5, 2)))
    );
    assert_eq!(code(&s.on_line(b"VRFY x\r\n")), 252);
    assert_eq!(code(&s.on_line(b"NOOP\r\n")), 250);
    assert_eq!(code(&s.on_line(b"HELP\r\n")), 214);
    assert_eq!(code(&s.on_line(b"EXPN x\r\n")), 502);
    assert!(matches!(s.on_line(b"QUIT\r\n"), Action::Close(r) if r.code == 221));
}

#[test]
fn bdat_chunks_and_sequence() {
    let mut s = Session::new(
        SessionConfig {
            trusted: true,
            ..cfg()
        },
        None,
    );
    s.on_line(b"EHLO c\r\n");
    // BDAT without a transaction: the chunk is still consumed, then 503.
    assert!(
        matches!(s.on_line(b"BDAT 5\r\n"), Action::ReadChunk { size: 5, reject: Some(r), .. } if r.code == 503)
    );
    s.on_line(b"MAIL FROM:<a@b.example>\r\n");
    s.on_line(b"RCPT TO:<c@d.example>\r\n");
    assert_eq!(
        s.on_line(b"BDAT 5\r\n"),
        Action::ReadChunk {
            size: 5,
            last: false,
            reject: None
        }
    );
    assert_eq!(s.chunk_done(5), Reply::chunk_received(5));
    assert_eq!(code(&s.on_line(b"DATA\r\n")), 503);
    assert_eq!(code(&s.on_line(b"MAIL FROM:<a@b.example>\r\n")), 503);
    assert_eq!(
        s.on_line(b"BDAT 0 LAST\r\n"),
        Action::ReadChunk {
            size: 0,
            last: true,
            reject: None
        }
    );
    assert_eq!(s.message_done(MessageOutcome::BareLineEnding).code, 550);
    assert!(!s.bdat_in_progress());
    assert_eq!(code(&s.on_line(b"RCPT TO:<c@d.example>\r\n")), 503);
}

#[test]
fn storage_failure_is_451() {
    let mut s = Session::new(
        SessionConfig {
            trusted: true,
            ..cfg()
        },
        None,
    );
    let r = s.message_done(MessageOutcome::StorageFailed);
    assert_eq!(
        (r.code, r.enhanced),
        (451, Some(crate::smtp::EnhancedCode(4, 3, 0)))
    );
    assert_eq!(s.message_done(MessageOutcome::TooLarge).code, 552);
}

proptest::proptest! {
    /// Whatever a client sends, in any state, the session answers with a
    /// value and never panics.
    #[test]
    fn arbitrary_lines_never_panic(lines in proptest::collection::vec(
        proptest::prop_oneof![
            proptest::string::string_regex("(EHLO|HELO|MAIL FROM:|RCPT TO:|AUTH PLAIN|AUTH LOGIN|BDAT|DATA|RSET|STARTTLS)[ -~]{0,40}").unwrap(),
            proptest::string::string_regex(".{0,60}").unwrap(),
        ], 0..30)) {
        for trusted in [false, true] {
            let mut s = Session::new(SessionConfig { trusted, ..cfg() }, Some(tls()));
            for l in &lines {
                let mut bytes = l.as_bytes().to_vec();
                bytes.extend_from_slice(b"\r\n");
                match s.on_line(&bytes) {
                    Action::Authenticate { .. } => { let _ = s.auth_result(None); }
                    Action::ReadData(_) => { let _ = s.message_done(MessageOutcome::TooLarge); }
                    Action::ReadChunk { reject: None, last: false, size } => { let _ = s.chunk_done(size); }
                    Action::ReadChunk { reject: None, last: true, .. } => { let _ = s.message_done(MessageOutcome::BareLineEnding); }
                    _ => {}
                }
            }
        }
    }
}

/// The `[limits]` table (config/danerelay.toml) as the session applies it.
#[path = "session_limits_tests.rs"]
mod limits;
