//! Unit tests of the sans-I/O session: lines in, actions out.

use super::*;
use crate::config::SenderPolicy;

pub(super) fn cfg() -> SessionConfig {
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

pub(super) fn tls() -> TlsInfo {
    TlsInfo {
        version: "TLSv1.3".into(),
        cipher: "TLS_AES_128_GCM_SHA256".into(),
    }
}

pub(super) fn code(a: &Action) -> u16 {
    match a {
        Action::Reply(r) | Action::Close(r) | Action::StartTls(r) | Action::ReadData(r) => r.code,
        Action::ReadChunk {
            reject: Some(r), ..
        } => r.code,
        Action::ReadChunk { reject: None, .. } => 0,
        Action::Authenticate { .. } => 1,
    }
}

pub(super) fn reply(a: &Action) -> Reply {
    match a {
        Action::Reply(r) | Action::Close(r) | Action::StartTls(r) | Action::ReadData(r) => {
            r.clone()
        }
        other => panic!("not a reply: {other:?}"),
    }
}

/// A TLS session logged in as alice@example.com.
pub(super) fn logged_in(c: SessionConfig) -> Session {
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
        (530, Some(crate::smtp::wire::Enhanced(5, 7, 0)))
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
        (452, Some(crate::smtp::wire::Enhanced(4, 5, 3)))
    );
    let tx = s.transaction().unwrap();
    assert!(tx.body_8bit && !tx.smtputf8);
    assert_eq!(tx.ret, Some(RetParam::Full));
    assert_eq!(tx.envid.as_deref(), Some("e1"));
    assert_eq!(tx.recipients[0].orcpt.as_deref(), Some("a@x.example"));
    assert_eq!(
        tx.recipients[0].notify,
        Some(NotifyFlags {
            never: true,
            ..Default::default()
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
        (500, Some(crate::smtp::wire::Enhanced(5, 5, 2)))
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
        (451, Some(crate::smtp::wire::Enhanced(4, 3, 0)))
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

mod limits {
    use super::*;
    use crate::metrics::{LimitHit, RejectReason};
    use crate::smtp::server::limits::UserRate;
    use crate::smtp::server::session::{SessionEvent, SessionLimits};

    fn with(limits: SessionLimits) -> Session {
        Session::new(
            SessionConfig {
                trusted: true,
                max_recipients: 100,
                limits,
                ..cfg()
            },
            None,
        )
    }

    fn code(a: &Action) -> u16 {
        match a {
            Action::Reply(r) | Action::Close(r) => r.code,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn junk_commands_close_with_421_and_progress_resets_the_count() {
        let mut s = with(SessionLimits {
            max_junk_commands: 3,
            ..SessionLimits::default()
        });
        assert_eq!(code(&s.on_line(b"NOOP\r\n")), 250);
        assert_eq!(code(&s.on_line(b"RSET\r\n")), 250);
        assert_eq!(code(&s.on_line(b"FOO\r\n")), 500);
        let a = s.on_line(b"VRFY x\r\n");
        assert!(
            matches!(&a, Action::Close(r) if r.code == 421
            && r.to_bytes().starts_with(b"421 4.7.0")),
            "{a:?}"
        );
        assert!(s
            .take_events()
            .contains(&SessionEvent::Limit(LimitHit::JunkCommands)));

        // An accepted message makes progress: the count starts over.
        let mut s = with(SessionLimits {
            max_junk_commands: 2,
            ..SessionLimits::default()
        });
        for _ in 0..3 {
            assert_eq!(code(&s.on_line(b"HELO c\r\n")), 250);
            // HELO counted once per round, RSET once: reset by each message.
            assert_eq!(code(&s.on_line(b"MAIL FROM:<a@b.example>\r\n")), 250);
            assert_eq!(code(&s.on_line(b"RCPT TO:<c@d.example>\r\n")), 250);
            assert!(matches!(s.on_line(b"DATA\r\n"), Action::ReadData(_)));
            s.message_done(MessageOutcome::Queued("X".into()));
            assert_eq!(code(&s.on_line(b"RSET\r\n")), 250);
        }
    }

    #[test]
    fn recipients_per_session_are_capped_across_transactions() {
        let mut s = with(SessionLimits {
            max_recipients_per_session: 3,
            ..SessionLimits::default()
        });
        s.on_line(b"EHLO c\r\n");
        s.on_line(b"MAIL FROM:<a@b.example>\r\n");
        assert_eq!(code(&s.on_line(b"RCPT TO:<1@d.example>\r\n")), 250);
        assert_eq!(code(&s.on_line(b"RCPT TO:<2@d.example>\r\n")), 250);
        s.on_line(b"RSET\r\n");
        s.on_line(b"MAIL FROM:<a@b.example>\r\n");
        assert_eq!(code(&s.on_line(b"RCPT TO:<3@d.example>\r\n")), 250);
        let a = s.on_line(b"RCPT TO:<4@d.example>\r\n");
        assert!(
            matches!(&a, Action::Reply(r) if r.to_bytes().starts_with(b"452 4.5.3 Too many recipients in this session")),
            "{a:?}"
        );
        let ev = s.take_events();
        assert!(ev.contains(&SessionEvent::Limit(LimitHit::RecipientsPerSession)));
        assert!(ev.contains(&SessionEvent::Rejected(RejectReason::TooManyRecipients)));
    }

    #[test]
    fn user_message_rate_gives_450_4_7_1() {
        let rate = UserRate::per_hour(2);
        let mut s = Session::new(
            SessionConfig {
                limits: SessionLimits {
                    user_rate: Some(rate.clone()),
                    ..SessionLimits::default()
                },
                ..cfg()
            },
            Some(tls()),
        );
        s.on_line(b"EHLO c\r\n");
        s.auth_result(Some("alice@example.com".into()));
        for _ in 0..2 {
            assert_eq!(code(&s.on_line(b"MAIL FROM:<alice@example.com>\r\n")), 250);
            s.on_line(b"RSET\r\n");
        }
        let a = s.on_line(b"MAIL FROM:<alice@example.com>\r\n");
        assert!(
            matches!(&a, Action::Reply(r) if r.to_bytes().starts_with(b"450 4.7.1")),
            "{a:?}"
        );
        assert!(s
            .take_events()
            .contains(&SessionEvent::Rejected(RejectReason::RateLimit)));
        // The limit is per user, shared across sessions.
        assert!(!rate.allow("alice@example.com"));
        assert!(rate.allow("bob@example.com"));
    }

    #[test]
    fn header_outcomes_are_552_5_3_4() {
        let mut s = with(SessionLimits::default());
        for outcome in [
            MessageOutcome::HeaderTooLarge,
            MessageOutcome::TooManyHeaderFields,
        ] {
            let r = s.message_done(outcome);
            assert!(r.to_bytes().starts_with(b"552 5.3.4"), "{r:?}");
        }
        assert_eq!(
            s.take_events()
                .iter()
                .filter(|e| **e == SessionEvent::Rejected(RejectReason::HeaderLimit))
                .count(),
            2
        );
    }
}
