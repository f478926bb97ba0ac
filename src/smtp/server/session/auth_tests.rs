//! Unit tests of the AUTH dialogues (RFC 4954) and the sender policy that
//! applies once logged in (RFC 6409 §6.1).

use super::super::tests::{cfg, code, logged_in, reply, tls};
use super::*;

#[test]
fn sender_policy_enforced_after_auth() {
    let mut s = logged_in(cfg());
    let r = reply(&s.on_line(b"MAIL FROM:<bob@example.com>\r\n"));
    assert_eq!(
        (r.code, r.enhanced),
        (553, Some(crate::smtp::wire::Enhanced(5, 7, 1)))
    );
    assert_eq!(code(&s.on_line(b"MAIL FROM:<alice@example.com>\r\n")), 250);
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
            (421, Some(crate::smtp::wire::Enhanced(4, 7, 0)))
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
        (500, Some(crate::smtp::wire::Enhanced(5, 5, 6)))
    );
    assert_eq!(code(&s.on_line(b"NOOP\r\n")), 250, "back to commands");
}
