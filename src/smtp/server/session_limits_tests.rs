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
