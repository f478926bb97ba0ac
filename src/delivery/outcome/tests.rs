//! The mapping table: every reply class and every error kind.
use super::*;
use crate::smtp::client::TransactionResult;

fn reply(code: u16, e: Option<EnhancedCode>) -> Reply {
    Reply {
        code,
        enhanced: e,
        text: "t".into(),
    }
}

/// (label, status, remote)
type Kind = (&'static str, Option<EnhancedCode>, bool);

fn kind(o: &Outcome) -> Kind {
    match o {
        Outcome::Delivered(r) => ("delivered", Some(r.status()), true),
        Outcome::Deferred(r) => ("deferred", Some(r.status()), r.remote),
        Outcome::Bounced(r) => ("bounced", Some(r.status()), r.remote),
    }
}

#[test]
fn replies_by_class() {
    let s = |a, b, c| Some(EnhancedCode(a, b, c));
    let cases = [
        (reply(250, None), ("delivered", s(2, 0, 0), true)),
        (reply(451, s(4, 3, 0)), ("deferred", s(4, 3, 0), true)),
        (reply(452, None), ("deferred", s(4, 0, 0), true)),
        (reply(550, s(5, 1, 1)), ("bounced", s(5, 1, 1), true)),
        (reply(554, None), ("bounced", s(5, 0, 0), true)),
        (reply(354, None), ("deferred", s(5, 0, 0), true)),
    ];
    for (r, want) in cases {
        assert_eq!(kind(&from_reply(&r)), want, "{r:?}");
    }
}

/// Each error's outcome, and whether the next MX host is tried.
fn check_errors(cases: Vec<(AttemptError, Kind, bool)>) {
    for (err, want, next) in cases {
        assert_eq!(kind(&from_error(&err)), want, "{err:?}");
        assert_eq!(try_next_host(&err), next, "next host for {err:?}");
    }
}

/// Errors before or around the session: DNS, DANE (RFC 7672 §2.1.1: DNSSEC
/// failures defer), TLS policy and connecting.
#[test]
fn local_dns_and_dane_errors_map_as_rfc_7672_says() {
    let host = || "mx.example.net".to_string();
    let s = |a, b, c| Some(EnhancedCode(a, b, c));
    check_errors(vec![
        (
            AttemptError::DnsLookup {
                name: "x".into(),
                detail: "SERVFAIL".into(),
            },
            ("deferred", s(4, 4, 3), false),
            true,
        ),
        (
            AttemptError::DnssecBogus {
                name: "x".into(),
                detail: "bad sig".into(),
            },
            ("deferred", s(4, 7, 5), false),
            true,
        ),
        (
            AttemptError::NoSuchDomain { domain: "x".into() },
            ("bounced", s(5, 1, 2), false),
            false,
        ),
        (
            AttemptError::NullMx { domain: "x".into() },
            ("bounced", s(5, 1, 10), false),
            false,
        ),
        (
            AttemptError::TlsaLookup {
                host: host(),
                detail: "timeout".into(),
            },
            ("deferred", s(4, 7, 5), false),
            true,
        ),
        (
            AttemptError::Dane {
                host: host(),
                detail: "no match".into(),
            },
            ("deferred", s(4, 7, 5), false),
            true,
        ),
        (
            AttemptError::TlsRequired { host: host() },
            ("deferred", s(4, 7, 4), false),
            true,
        ),
        (
            AttemptError::Connect {
                host: host(),
                detail: "refused".into(),
            },
            ("deferred", s(4, 4, 1), false),
            true,
        ),
        (
            AttemptError::ConnectTimeout {
                host: host(),
                after: Duration::from_secs(30),
            },
            ("deferred", s(4, 4, 1), false),
            true,
        ),
        (
            AttemptError::NoUsableHost { domain: "x".into() },
            ("deferred", s(4, 4, 4), false),
            false,
        ),
    ]);
}

/// Timeouts, I/O and TLS errors inside the session: all defer; whether
/// another host is tried depends on how far the session got.
#[test]
fn transport_errors_defer() {
    let smtp = |e: ClientError| AttemptError::from(e);
    let s = |a, b, c| Some(EnhancedCode(a, b, c));
    let io = || std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
    check_errors(vec![
        (
            smtp(ClientError::Timeout {
                phase: Phase::Greeting,
                after: Duration::from_secs(300),
            }),
            ("deferred", s(4, 4, 2), false),
            true,
        ),
        (
            smtp(ClientError::Timeout {
                phase: Phase::FinalDot,
                after: Duration::from_secs(600),
            }),
            ("deferred", s(4, 4, 2), false),
            false,
        ),
        (
            smtp(ClientError::Io {
                phase: Phase::Rcpt,
                source: io(),
            }),
            ("deferred", s(4, 4, 2), false),
            false,
        ),
        (
            smtp(ClientError::Tls { source: io() }),
            ("deferred", s(4, 7, 5), false),
            true,
        ),
        (
            smtp(ClientError::StartTlsNotOffered),
            ("deferred", s(4, 7, 4), false),
            true,
        ),
    ]);
}

/// Replies that refuse (RFC 5321 §4.2.1: 4yz defers, 5yz bounces) and
/// refusals of our own (SMTPUTF8, size, body lines).
#[test]
fn rejections_and_local_refusals_map_by_reply_class() {
    let smtp = |e: ClientError| AttemptError::from(e);
    let s = |a, b, c| Some(EnhancedCode(a, b, c));
    check_errors(vec![
        (
            smtp(ClientError::Rejected {
                phase: Phase::Rcpt,
                reply: reply(421, s(4, 4, 2)),
            }),
            ("deferred", s(4, 4, 2), true),
            true,
        ),
        (
            smtp(ClientError::Rejected {
                phase: Phase::Greeting,
                reply: reply(554, None),
            }),
            ("deferred", s(5, 0, 0), true),
            true,
        ),
        (
            smtp(ClientError::Rejected {
                phase: Phase::Mail,
                reply: reply(553, s(5, 7, 1)),
            }),
            ("bounced", s(5, 7, 1), true),
            false,
        ),
        (
            smtp(ClientError::Rejected {
                phase: Phase::Mail,
                reply: reply(451, None),
            }),
            ("deferred", s(4, 0, 0), true),
            false,
        ),
        (
            smtp(ClientError::Rejected {
                phase: Phase::Helo,
                reply: reply(550, None),
            }),
            ("bounced", s(5, 0, 0), true),
            true,
        ),
        (
            smtp(ClientError::SmtpUtf8NotOffered),
            ("bounced", s(5, 6, 7), false),
            false,
        ),
        (
            smtp(ClientError::TooBig { size: 10, limit: 5 }),
            ("bounced", s(5, 3, 4), false),
            false,
        ),
        (
            smtp(ClientError::Body(
                crate::smtp::client::BodyError::LineTooLong { line: 3 },
            )),
            ("bounced", s(5, 6, 0), false),
            false,
        ),
    ]);
}

#[test]
fn rcpt_results_and_expiry() {
    let ok = RcptResult::Reply(reply(250, None));
    assert_eq!(for_rcpt(&ok).label(), "delivered");
    let mixed = TransactionResult {
        recipients: vec![ok.clone(), RcptResult::Reply(reply(550, None))],
        phases: vec![Phase::FinalDot, Phase::Rcpt],
    };
    let labels: Vec<_> = for_transaction(&mixed).iter().map(Outcome::label).collect();
    assert_eq!(labels, ["delivered", "bounced"]);
    let gone = RcptResult::Error(Arc::new(ClientError::Closed {
        phase: Phase::FinalDot,
    }));
    assert_eq!(for_rcpt(&gone).label(), "deferred");
    let last = Reason::remote(&reply(451, Some(EnhancedCode(4, 2, 0))));
    let Outcome::Bounced(r) = expired(Some(&last)) else {
        panic!("expiry must bounce")
    };
    assert_eq!(r.status(), EnhancedCode(4, 4, 7));
    assert!(r.reply.text.contains("451 4.2.0"), "{}", r.reply.text);
}
