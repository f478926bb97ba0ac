//! DSNs built here, parsed back with `mail-parser`.
use super::*;
use mail_parser::{MessageParser, MimeHeaders};

const ORIGINAL: &[u8] =
    b"From: a@example.org\r\nTo: b@example.net\r\nSubject: hello\r\n\r\nsecret body\r\n";

fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn bounced(addr: &str, notify: Option<Notify>) -> DsnRecipient {
    let reply = Reply {
        code: 550,
        enhanced: Some(EnhancedCode(5, 1, 1)),
        text: "No such user".into(),
    };
    let mut r = DsnRecipient::from_outcome(
        addr,
        Some("rfc822;Orig@Example.NET"),
        notify,
        &Outcome::Bounced(Reason {
            reply,
            remote: true,
        }),
    );
    r.remote_mta = Some("mx.example.net".into());
    r.last_attempt = Some(t(1_800_000_000));
    r
}

fn input<'a>(rcpts: &'a [DsnRecipient], ret: Option<Ret>, sender: &'a str) -> DsnInput<'a> {
    DsnInput {
        reporting_mta: "relay.example.com",
        original_sender: sender,
        envid: Some("ENV-1"),
        ret,
        arrival: t(1_799_990_000),
        now: t(1_800_000_000),
        queue_id: "Q1",
        recipients: rcpts,
        original: ORIGINAL,
        streamed: None,
    }
}

/// The `message/delivery-status` part split into its field groups.
fn groups(text: &str) -> Vec<Vec<(String, String)>> {
    let unfolded = text.replace("\r\n ", " ");
    unfolded
        .split("\r\n\r\n")
        .filter(|g| !g.trim().is_empty())
        .map(|g| {
            g.lines()
                .filter_map(|l| l.split_once(": "))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

fn field<'a>(g: &'a [(String, String)], name: &str) -> Option<&'a str> {
    g.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[test]
fn failure_dsn_with_headers_only_parses_back() {
    let rcpts = [bounced("b@example.net", None)];
    let dsn = build(&input(&rcpts, None, "a@example.org")).unwrap();
    assert_eq!(
        (dsn.sender.as_str(), dsn.recipient.as_str()),
        ("", "a@example.org")
    );
    let msg = MessageParser::default().parse(&dsn.message).unwrap();
    assert_eq!(msg.subject(), Some("Undelivered Mail Returned to Sender"));
    let ct = msg.content_type().unwrap();
    assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("report")));
    assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
    assert_eq!(
        msg.header_raw("Auto-Submitted").map(str::trim),
        Some("auto-replied")
    );
    assert_eq!(
        msg.to().unwrap().first().unwrap().address(),
        Some("a@example.org")
    );

    let kinds: Vec<String> = msg.parts[1..]
        .iter()
        .map(|p| {
            let c = p.content_type().unwrap();
            format!("{}/{}", c.ctype(), c.subtype().unwrap_or(""))
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "text/plain",
            "message/delivery-status",
            "text/rfc822-headers"
        ]
    );
    let human = msg.parts[1].text_contents().unwrap();
    assert!(
        human.contains("<b@example.net> (host mx.example.net): failed: 550 5.1.1 No such user"),
        "{human}"
    );

    let status = groups(std::str::from_utf8(msg.parts[2].contents()).unwrap());
    assert_eq!(status.len(), 2, "{status:?}");
    assert_eq!(
        field(&status[0], "Reporting-MTA"),
        Some("dns; relay.example.com")
    );
    assert_eq!(field(&status[0], "Original-Envelope-Id"), Some("ENV-1"));
    assert_eq!(
        field(&status[0], "Arrival-Date"),
        Some("Fri, 15 Jan 2027 05:13:20 +0000")
    );
    let r = &status[1];
    assert_eq!(field(r, "Final-Recipient"), Some("rfc822; b@example.net"));
    assert_eq!(
        field(r, "Original-Recipient"),
        Some("rfc822; Orig@Example.NET")
    );
    assert_eq!(field(r, "Action"), Some("failed"));
    assert_eq!(field(r, "Status"), Some("5.1.1"));
    assert_eq!(field(r, "Remote-MTA"), Some("dns; mx.example.net"));
    assert_eq!(
        field(r, "Diagnostic-Code"),
        Some("smtp; 550 5.1.1 No such user")
    );
    assert_eq!(
        field(r, "Last-Attempt-Date"),
        Some("Fri, 15 Jan 2027 08:00:00 +0000")
    );

    let headers = msg.parts[3].text_contents().unwrap();
    assert!(headers.contains("Subject: hello"), "{headers}");
    assert!(
        !headers.contains("secret body"),
        "RET=HDRS/default must not return the body"
    );
}

#[test]
fn ret_full_returns_the_whole_message_as_message_rfc822() {
    let rcpts = [bounced("b@example.net", None)];
    let dsn = build(&input(&rcpts, Some(Ret::Full), "a@example.org")).unwrap();
    let msg = MessageParser::default().parse(&dsn.message).unwrap();
    let inner = msg.parts[3].message().expect("message/rfc822 part");
    assert_eq!(inner.subject(), Some("hello"));
    assert_eq!(inner.body_text(0).unwrap().trim(), "secret body");
}

#[test]
fn delay_warning_is_delayed_with_a_4xx_status_and_headers_only() {
    let reply = Reply {
        code: 451,
        enhanced: None,
        text: "greylisted".into(),
    };
    let mut r = DsnRecipient::from_outcome(
        "c@example.net",
        None,
        None,
        &Outcome::Deferred(Reason {
            reply,
            remote: true,
        }),
    );
    r.will_retry_until = Some(t(1_800_400_000));
    let rcpts = [r];
    let dsn = build(&input(&rcpts, Some(Ret::Full), "a@example.org")).unwrap();
    let msg = MessageParser::default().parse(&dsn.message).unwrap();
    assert_eq!(msg.subject(), Some("Delayed Mail (still being retried)"));
    let status = groups(std::str::from_utf8(msg.parts[2].contents()).unwrap());
    assert_eq!(field(&status[1], "Action"), Some("delayed"));
    assert_eq!(field(&status[1], "Status"), Some("4.0.0"));
    assert!(field(&status[1], "Will-Retry-Until").is_some());
    assert!(field(&status[1], "Original-Recipient").is_none());
    assert_eq!(
        msg.parts[3].content_type().unwrap().subtype(),
        Some("rfc822-headers")
    );
}

#[test]
fn notify_and_null_sender_decide_whether_a_dsn_exists() {
    let never = Some(Notify {
        success: false,
        failure: false,
        delay: false,
        never: true,
    });
    let success_only = Some(Notify {
        success: true,
        failure: false,
        delay: false,
        never: false,
    });
    let rcpts = [bounced("b@example.net", None)];
    assert_eq!(build(&input(&rcpts, None, "")), None, "never a DSN to <>");
    assert_eq!(
        build(&input(&[bounced("b@x", never)], None, "a@example.org")),
        None
    );
    assert_eq!(
        build(&input(
            &[bounced("b@x", success_only)],
            None,
            "a@example.org"
        )),
        None
    );
    // Only the recipients that asked appear.
    let mixed = [bounced("keep@x", None), bounced("drop@x", never)];
    let dsn = build(&input(&mixed, None, "a@example.org")).unwrap();
    let text = String::from_utf8(dsn.message).unwrap();
    assert!(text.contains("keep@x") && !text.contains("drop@x"));
    // The NOTIFY table (RFC 3461 §4.1).
    let table = [
        (None, Action::Failed, true),
        (None, Action::Delayed, true),
        (None, Action::Delivered, false),
        (success_only, Action::Delivered, true),
        (success_only, Action::Relayed, true),
        (success_only, Action::Failed, false),
        (never, Action::Failed, false),
        (
            Some(Notify {
                success: false,
                failure: false,
                delay: true,
                never: false,
            }),
            Action::Delayed,
            true,
        ),
        (
            Some(Notify {
                success: false,
                failure: true,
                delay: false,
                never: false,
            }),
            Action::Delayed,
            false,
        ),
    ];
    for (notify, action, want) in table {
        assert_eq!(wanted(notify, action), want, "{notify:?} {action:?}");
    }
}

#[test]
fn long_diagnostics_are_folded_below_998_octets() {
    let mut r = bounced("b@example.net", None);
    let long = format!("{} {}", "word ".repeat(300), "x".repeat(2000));
    r.diagnostic = Some(Reply {
        code: 550,
        enhanced: None,
        text: long.clone().into(),
    });
    r.detail = long;
    let rcpts = [r];
    let dsn = build(&input(&rcpts, None, "a@example.org")).unwrap();
    assert!(dsn.message.split(|b| *b == b'\n').all(|l| l.len() <= 1000));
    assert!(
        !dsn.message
            .windows(2)
            .any(|w| w[1] == b'\n' && w[0] != b'\r'),
        "CRLF only"
    );
    let msg = MessageParser::default().parse(&dsn.message).unwrap();
    let status = groups(std::str::from_utf8(msg.parts[2].contents()).unwrap());
    let diag = field(&status[1], "Diagnostic-Code").unwrap();
    assert!(diag.starts_with("smtp; 550 word word"), "{diag}");
    assert_eq!(diag.matches('x').count(), 2000);
}

#[test]
fn dates() {
    assert_eq!(rfc5322_date(UNIX_EPOCH), "Thu, 1 Jan 1970 00:00:00 +0000");
    assert_eq!(
        rfc5322_date(t(951_782_400)),
        "Tue, 29 Feb 2000 00:00:00 +0000"
    );
    assert_eq!(
        rfc5322_date(t(1_798_761_599)),
        "Thu, 31 Dec 2026 23:59:59 +0000"
    );
}
