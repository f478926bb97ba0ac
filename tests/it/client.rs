//! The outbound SMTP client against the scripted fake MX (`danerelay::testing::mx`):
//! every phase, pipelining, per-recipient reply mixes, 421 mid-session,
//! timeouts under paused time, STARTTLS, connection reuse, dot-stuffing, BDAT.
#![allow(clippy::unwrap_used)]

mod aiosmtpd;
mod certs;
mod timeouts;
mod tls;

use std::sync::Arc;
use std::time::Duration;

use danerelay::delivery::outcome::{self, AttemptError, Outcome};
use danerelay::smtp::client::{
    Client, ClientError, Envelope, Phase, RcptResult, Recipient, Timeouts,
};
use danerelay::smtp::{EnhancedCode, Notify, Ret};
use danerelay::testing::mx::{self, Script, Transcript};
use rustls::pki_types::ServerName;
use tokio::io::DuplexStream;

fn envelope(rcpts: &[&str]) -> Envelope {
    Envelope::new(
        "sender@relay.test",
        rcpts.iter().map(|r| Recipient::new(*r)).collect(),
    )
}

const BODY: &[u8] = b"Subject: hi\r\n\r\nHello\r\n.leading dot\r\n..two\r\n.\r\nbye\r\n";

/// Greeting + EHLO against `script`.
async fn session(script: Script) -> (Client<DuplexStream>, mx::Shared) {
    let (io, t) = mx::start(script);
    let mut c = Client::new(io, Timeouts::default(), "relay.test");
    c.greeting().await.unwrap();
    c.ehlo().await.unwrap();
    (c, t)
}

fn snapshot(t: &mx::Shared) -> Transcript {
    t.lock().unwrap().clone()
}

fn reply_of(r: &RcptResult) -> (u16, Option<EnhancedCode>) {
    match r {
        RcptResult::Reply(r) => (r.code, r.enhanced),
        RcptResult::Error(e) => panic!("expected a reply, got error {e}"),
    }
}

/// Undoes RFC 5321 §4.5.2 transparency, as a receiving server does.
fn unstuff(wire: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in wire.split_inclusive(|b| *b == b'\n') {
        out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
    }
    out
}

#[tokio::test]
async fn pipelined_happy_path_with_dsn_parameters() {
    let (mut c, t) = session(Script::default()).await;
    assert!(c.capabilities().pipelining() && c.capabilities().dsn());
    let mut env = envelope(&[]);
    env.size = Some(BODY.len() as u64);
    env.body_8bit = true;
    env.ret = Some(Ret::Headers);
    env.envid = Some("Q1".into());
    env.recipients = vec![
        Recipient {
            address: "a@dest.test".into(),
            orcpt: Some("a@dest.test".into()),
            notify: Some(Notify {
                success: false,
                failure: true,
                delay: false,
                never: false,
            }),
        },
        Recipient::new("b@dest.test"),
    ];
    let result = c.transaction(&env, BODY).await;
    assert_eq!(result.recipients.len(), 2);
    for r in &result.recipients {
        assert_eq!(reply_of(r), (250, Some(EnhancedCode(2, 0, 0))));
        assert!(matches!(outcome::for_rcpt(r), Outcome::Delivered(_)));
    }
    c.quit().await.unwrap();
    let tr = snapshot(&t);
    let mail = format!(
        "MAIL FROM:<sender@relay.test> SIZE={} BODY=8BITMIME RET=HDRS ENVID=Q1",
        BODY.len()
    );
    let batch = vec![
        mail,
        "RCPT TO:<a@dest.test> NOTIFY=FAILURE ORCPT=rfc822;a@dest.test".to_string(),
        "RCPT TO:<b@dest.test>".to_string(),
    ];
    assert!(
        tr.batches.contains(&batch),
        "MAIL+RCPTs must travel in one write: {:?}",
        tr.batches
    );
    assert_eq!(tr.commands.first().unwrap(), "EHLO relay.test");
    assert_eq!(tr.commands.last().unwrap(), "QUIT");
    assert_eq!(tr.messages.len(), 1);
    assert_eq!(
        tr.messages[0],
        b"Subject: hi\r\n\r\nHello\r\n..leading dot\r\n...two\r\n..\r\nbye\r\n"
    );
    assert_eq!(unstuff(&tr.messages[0]), BODY);
}

#[tokio::test]
async fn without_pipelining_each_command_waits_for_its_reply() {
    let (mut c, t) = session(Script::default().without("PIPELINING").without("DSN")).await;
    let mut env = envelope(&["a@dest.test", "b@dest.test"]);
    env.recipients[0].notify = Some(Notify::DEFAULT);
    let result = c.transaction(&env, BODY).await;
    assert!(result.recipients.iter().all(RcptResult::is_delivered));
    let tr = snapshot(&t);
    assert!(tr.batches.iter().all(|b| b.len() == 1), "{:?}", tr.batches);
    // No DSN offered: no NOTIFY passed on.
    assert!(
        tr.commands.contains(&"RCPT TO:<a@dest.test>".to_string()),
        "{:?}",
        tr.commands
    );
}

#[tokio::test]
async fn helo_fallback_sends_no_extension_parameters() {
    let script = Script {
        ehlo_reply: Some("502 5.5.2 what is EHLO".into()),
        ..Script::default()
    };
    let (mut c, t) = session(script).await;
    assert_eq!(c.capabilities().extensions, 0);
    let mut env = envelope(&["a@dest.test"]);
    env.size = Some(10);
    env.body_8bit = true;
    env.ret = Some(Ret::Full);
    let result = c.transaction(&env, BODY).await;
    assert!(result.recipients[0].is_delivered());
    let tr = snapshot(&t);
    assert_eq!(
        tr.commands[..3],
        [
            "EHLO relay.test",
            "HELO relay.test",
            "MAIL FROM:<sender@relay.test>"
        ]
    );
}

#[tokio::test]
async fn per_recipient_mix_of_2xx_4xx_5xx() {
    let script = Script::default()
        .rule("RCPT TO:<b@", "450 4.2.1 Mailbox busy")
        .rule("RCPT TO:<c@", "550 5.1.1 No such user");
    let (mut c, t) = session(script).await;
    let result = c
        .transaction(
            &envelope(&["a@dest.test", "b@dest.test", "c@dest.test"]),
            BODY,
        )
        .await;
    let labels: Vec<_> = result
        .recipients
        .iter()
        .map(|r| outcome::for_rcpt(r).label())
        .collect();
    assert_eq!(labels, ["delivered", "deferred", "bounced"]);
    assert_eq!(
        reply_of(&result.recipients[2]),
        (550, Some(EnhancedCode(5, 1, 1)))
    );
    let Outcome::Bounced(reason) = outcome::for_rcpt(&result.recipients[2]) else {
        panic!()
    };
    assert!(reason.remote);
    assert_eq!(
        snapshot(&t).messages.len(),
        1,
        "DATA still goes to the accepted recipient"
    );
}

#[tokio::test]
async fn data_reply_applies_to_every_accepted_recipient() {
    let mut script = Script::default().rule("RCPT TO:<c@", "550 5.1.1 No such user");
    script.final_replies.push_back("554 5.7.1 Spam".into());
    let (mut c, _t) = session(script).await;
    let result = c
        .transaction(
            &envelope(&["a@dest.test", "c@dest.test", "d@dest.test"]),
            BODY,
        )
        .await;
    let codes: Vec<_> = result.recipients.iter().map(|r| reply_of(r).1).collect();
    let s = |a, b, c| Some(EnhancedCode(a, b, c));
    assert_eq!(codes, [s(5, 7, 1), s(5, 1, 1), s(5, 7, 1)]);
}

#[tokio::test]
async fn nobody_accepted_means_no_data_and_rset_before_the_next_message() {
    let script = Script::default().rule("RCPT TO:<x@", "550 5.1.1 No");
    let (mut c, t) = session(script).await;
    let first = c.transaction(&envelope(&["x@dest.test"]), BODY).await;
    assert_eq!(outcome::for_rcpt(&first.recipients[0]).label(), "bounced");
    assert!(c.is_usable());
    let second = c.transaction(&envelope(&["a@dest.test"]), BODY).await;
    assert!(second.recipients[0].is_delivered());
    let tr = snapshot(&t);
    assert!(
        !tr.commands
            .iter()
            .take_while(|c| *c != "RSET")
            .any(|c| c == "DATA"),
        "{:?}",
        tr.commands
    );
    let rset = tr
        .commands
        .iter()
        .position(|c| c == "RSET")
        .expect("RSET before the 2nd MAIL");
    assert!(
        tr.commands[rset + 1].starts_with("MAIL FROM"),
        "{:?}",
        tr.commands
    );
}

#[tokio::test]
async fn mail_refused_applies_to_all_recipients() {
    let script = Script::default()
        .without("PIPELINING")
        .rule("MAIL", "553 5.7.1 Sender not allowed");
    let (mut c, t) = session(script).await;
    let result = c
        .transaction(&envelope(&["a@dest.test", "b@dest.test"]), BODY)
        .await;
    for r in &result.recipients {
        assert_eq!(reply_of(r), (553, Some(EnhancedCode(5, 7, 1))));
    }
    assert!(!snapshot(&t).commands.iter().any(|c| c.starts_with("RCPT")));
}

#[tokio::test]
async fn reply_421_mid_session_defers_and_ends_the_session() {
    let script = Script::default()
        .rule("RCPT TO:<a@", "550 5.1.1 Gone")
        .rule("RCPT TO:<b@", "421 4.3.2 Shutting down");
    let (mut c, t) = session(script).await;
    let result = c
        .transaction(
            &envelope(&["a@dest.test", "b@dest.test", "c@dest.test"]),
            BODY,
        )
        .await;
    assert_eq!(
        outcome::for_rcpt(&result.recipients[0]).label(),
        "bounced",
        "earlier 5xx stands"
    );
    for r in &result.recipients[1..] {
        let Outcome::Deferred(reason) = outcome::for_rcpt(r) else {
            panic!("{r:?}")
        };
        assert_eq!((reason.reply.code, reason.remote), (421, true));
        assert_eq!(reason.status(), EnhancedCode(4, 3, 2));
    }
    assert!(!c.is_usable());
    let again = c.transaction(&envelope(&["a@dest.test"]), BODY).await;
    assert!(
        matches!(&again.recipients[0], RcptResult::Error(e) if matches!(**e, ClientError::Unusable))
    );
    assert!(!snapshot(&t).commands.contains(&"DATA".to_string()));
}

#[tokio::test]
async fn connection_reuse_two_messages_one_session() {
    let mut script = Script::default();
    script.final_replies.extend([
        "250 2.0.0 Ok: queued as ONE".to_string(),
        "250 2.0.0 Ok: queued as TWO".to_string(),
    ]);
    let (mut c, t) = session(script).await;
    let first = c
        .transaction(
            &envelope(&["a@dest.test"]),
            &b"Subject: 1\r\n\r\none\r\n"[..],
        )
        .await;
    let second = c
        .transaction(
            &envelope(&["b@dest.test"]),
            &b"Subject: 2\r\n\r\ntwo\r\n"[..],
        )
        .await;
    let text = |r: &RcptResult| match r {
        RcptResult::Reply(r) => r.text.clone(),
        RcptResult::Error(e) => panic!("{e}"),
    };
    assert!(text(&first.recipients[0]).ends_with("ONE"));
    assert!(text(&second.recipients[0]).ends_with("TWO"));
    c.quit().await.unwrap();
    let tr = snapshot(&t);
    assert_eq!(
        tr.commands.iter().filter(|c| c.starts_with("EHLO")).count(),
        1
    );
    assert_eq!(
        tr.commands.iter().filter(|c| c.starts_with("MAIL")).count(),
        2
    );
    assert!(
        !tr.commands.contains(&"RSET".to_string()),
        "a completed DATA needs no RSET"
    );
    assert_eq!(
        tr.messages,
        [
            b"Subject: 1\r\n\r\none\r\n".to_vec(),
            b"Subject: 2\r\n\r\ntwo\r\n".to_vec()
        ]
    );
}

#[tokio::test]
async fn bdat_when_chunking_is_offered() {
    let (mut c, t) = session(Script::default().with("CHUNKING")).await;
    // Over one 64 KiB chunk, with leading dots that BDAT must not stuff.
    let mut body = b"Subject: big\r\n\r\n".to_vec();
    for i in 0..3000 {
        body.extend_from_slice(format!(".line {i:05} {}\r\n", "x".repeat(20)).as_bytes());
    }
    let result = c.transaction(&envelope(&["a@dest.test"]), &body[..]).await;
    assert!(
        result.recipients[0].is_delivered(),
        "{:?}",
        result.recipients[0]
    );
    let tr = snapshot(&t);
    assert!(!tr.commands.contains(&"DATA".to_string()));
    assert!(tr.bdat.len() >= 2, "{:?}", tr.bdat);
    assert!(tr.bdat.last().unwrap().ends_with(" LAST"));
    assert!(tr.bdat[..tr.bdat.len() - 1]
        .iter()
        .all(|b| !b.ends_with("LAST")));
    assert_eq!(tr.messages, [body]);
}

#[tokio::test]
async fn smtputf8_message_to_a_peer_without_it_bounces_5_6_7_without_sending() {
    let (mut c, t) = session(Script::default().without("SMTPUTF8")).await;
    let mut env = envelope(&["jörg@dest.test"]);
    env.smtputf8 = true;
    let result = c.transaction(&env, BODY).await;
    let Outcome::Bounced(reason) = outcome::for_rcpt(&result.recipients[0]) else {
        panic!()
    };
    assert_eq!(reason.status(), EnhancedCode(5, 6, 7));
    assert!(!snapshot(&t).commands.iter().any(|c| c.starts_with("MAIL")));
    // The session is still good for the next message.
    assert!(c.is_usable());
    assert!(c
        .transaction(&envelope(&["a@dest.test"]), BODY)
        .await
        .recipients[0]
        .is_delivered());
}

#[tokio::test]
async fn over_the_size_limit_bounces_5_3_4_without_sending() {
    let (mut c, t) = session(Script::default().without("SIZE").with("SIZE 100")).await;
    let mut env = envelope(&["a@dest.test"]);
    env.size = Some(101);
    let result = c.transaction(&env, BODY).await;
    let Outcome::Bounced(reason) = outcome::for_rcpt(&result.recipients[0]) else {
        panic!()
    };
    assert_eq!(reason.status(), EnhancedCode(5, 3, 4));
    assert!(!snapshot(&t).commands.iter().any(|c| c.starts_with("MAIL")));
}

#[tokio::test]
async fn a_line_over_998_octets_is_never_sent_and_the_data_is_abandoned() {
    let (mut c, t) = session(Script::default()).await;
    let mut body = b"Subject: long\r\n\r\n".to_vec();
    body.extend_from_slice(&vec![b'x'; 999]);
    body.extend_from_slice(b"\r\n");
    let result = c.transaction(&envelope(&["a@dest.test"]), &body[..]).await;
    let Outcome::Bounced(reason) = outcome::for_rcpt(&result.recipients[0]) else {
        panic!()
    };
    assert_eq!(reason.status(), EnhancedCode(5, 6, 0));
    assert!(!c.is_usable());
    // Give the fake a moment to see the close.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let tr = snapshot(&t);
    assert!(
        tr.messages.is_empty(),
        "the peer must never see a terminated message"
    );
    let partial = tr.incomplete.expect("the link was closed mid-data");
    assert!(partial.len() < body.len());
}

#[tokio::test]
async fn greeting_554_is_not_this_host_and_multi_line_greetings_are_fine() {
    let (io, _t) = mx::start(Script {
        greeting: "554 5.3.2 No SMTP service here".into(),
        ..Script::default()
    });
    let mut c = Client::new(io, Timeouts::default(), "relay.test");
    let err = AttemptError::from(c.greeting().await.unwrap_err());
    assert_eq!(outcome::from_error(&err).label(), "deferred");
    assert!(outcome::try_next_host(&err));

    let script = Script {
        greeting: "220-mx.test ESMTP\r\n220-more words\r\n220 ready".into(),
        ..Script::default()
    };
    let (io, _t) = mx::start(script);
    let mut c = Client::new(io, Timeouts::default(), "relay.test");
    let greeting = c.greeting().await.unwrap();
    assert_eq!(greeting.text, "mx.test ESMTP\nmore words\nready");
}

#[tokio::test]
async fn a_refused_bdat_chunk_bounces_and_the_session_is_reset_for_the_next_message() {
    let script = Script::default()
        .with("CHUNKING")
        .rule("BDAT", "552 5.3.4 Message too big");
    let (mut c, t) = session(script).await;
    let first = c.transaction(&envelope(&["a@dest.test"]), BODY).await;
    let Outcome::Bounced(reason) = outcome::for_rcpt(&first.recipients[0]) else {
        panic!("{:?}", first.recipients[0])
    };
    assert_eq!(reason.status(), EnhancedCode(5, 3, 4));
    assert!(c.is_usable());
    // The next message on the same session starts with RSET.
    let _ = c.transaction(&envelope(&["b@dest.test"]), BODY).await;
    let tr = snapshot(&t);
    let rset = tr.commands.iter().position(|c| c == "RSET").expect("RSET");
    assert!(
        tr.commands[rset - 1].starts_with("BDAT"),
        "{:?}",
        tr.commands
    );
    assert!(
        tr.commands[rset + 1].starts_with("MAIL FROM"),
        "{:?}",
        tr.commands
    );
}

#[tokio::test]
async fn a_whole_session_runs_in_a_spawned_task_with_a_blocking_body() {
    // The delivery engine spawns one task per connection: the futures must be
    // Send, with the queue's std::io::Read body behind BlockingBody.
    let (io, t) = mx::start(Script::default());
    let task = tokio::spawn(async move {
        let mut c = Client::new(io, Timeouts::default(), "relay.test");
        c.greeting().await?;
        c.ehlo().await?;
        let body = danerelay::smtp::client::BlockingBody::new(std::io::Cursor::new(BODY.to_vec()));
        let result = c.transaction(&envelope(&["a@dest.test"]), body).await;
        c.quit().await?;
        Ok::<_, ClientError>(result)
    });
    let result = task.await.unwrap().unwrap();
    assert!(result.recipients[0].is_delivered());
    assert_eq!(unstuff(&snapshot(&t).messages[0]), BODY);
}
