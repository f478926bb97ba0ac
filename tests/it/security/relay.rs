//! Open-relay attempts with tricky address forms: from an untrusted address
//! nothing is relayed, whatever the envelope looks like; an authenticated
//! user cannot smuggle a foreign sender past the sender policy.

use super::harness::{start, Client, Scenario, USER};

const TRICKY: &[&str] = &[
    "user%other.example@relay.test",
    "@route.example:user@other.example",
    "@a.example,@b.example:user@other.example",
    "\"user@other.example\"@relay.test",
    "\"user\\\"@other\"@other.example",
    "user@[192.0.2.1]",
    "user@[IPv6:2001:db8::1]",
    "user",
    "user@",
    "@other.example",
    "user@other.example.",
    "user!other.example!victim",
];

#[tokio::test]
async fn untrusted_clients_relay_nothing_whatever_the_address_form() {
    let srv = start(Scenario::default(), |_| {}).await;
    for addr in [srv.plain, srv.starttls] {
        let (mut c, greeting) = Client::connect(addr).await;
        assert_eq!(greeting.0, 220);
        // Claiming to be local does not make a client trusted.
        assert_eq!(c.cmd("EHLO localhost").await.0, 250);
        for a in TRICKY {
            let (code, text) = c.cmd(&format!("MAIL FROM:<{a}>")).await;
            assert!(code >= 500, "MAIL FROM:<{a}> got {code} {text}");
            let (code, text) = c.cmd(&format!("RCPT TO:<{a}>")).await;
            assert!(code >= 500, "RCPT TO:<{a}> got {code} {text}");
        }
        // Even with an empty (bounce) sender.
        assert_eq!(c.cmd("MAIL FROM:<>").await.0, 530);
        let (code, _) = c.cmd("DATA").await;
        assert_eq!(code, 503);
    }
    assert!(srv.messages().is_empty());
    assert!(srv.rejected("auth-required") >= 2);
}

#[tokio::test]
async fn authenticated_users_cannot_hide_a_foreign_sender() {
    let srv = start(Scenario::default(), |_| {}).await;
    let mut c = srv.logged_in().await;
    let foreign = [
        "alice%evil.example@example.com",
        "\"alice@example.com\"@evil.example",
        "alice@example.com@evil.example",
        "@example.com:mallory@evil.example",
        "alice@[192.0.2.1]",
        "ALICE@EXAMPLE.COM.evil.example",
        "alice@example.com.",
        "mallory@evil.example",
    ];
    for sender in foreign {
        let (code, text) = c.cmd(&format!("MAIL FROM:<{sender}>")).await;
        if code == 250 {
            // Accepted only if the parser reduced it to the login itself.
            assert_eq!(c.cmd("RCPT TO:<bob@example.org>").await.0, 250);
            assert_eq!(c.cmd("DATA").await.0, 354);
            c.send(b"Subject: x\r\n\r\nx\r\n.\r\n").await;
            assert_eq!(c.reply().await.0, 250);
        } else {
            assert!(code == 553 || code == 501, "{sender}: {code} {text}");
        }
    }
    for m in srv.messages() {
        assert!(
            m.info.envelope.sender.eq_ignore_ascii_case(USER),
            "foreign sender stored: {}",
            m.info.envelope.sender
        );
    }
    assert!(srv.rejected("sender-policy") >= 1);
}
