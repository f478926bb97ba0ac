//! STARTTLS against the fake MX: upgrade, EHLO again, a refusing verifier
//! (as DANE refuses a mismatch), not offered, refused, and injection.

use danerelay::testing::certs;

use super::certs::client_config;
use super::*;
fn name() -> ServerName<'static> {
    ServerName::try_from("mx.test").unwrap()
}

#[tokio::test]
async fn starttls_upgrades_then_ehlo_again_then_delivers() {
    let script = Script {
        tls: Some(certs::self_signed(&["mx.test"]).acceptor()),
        ..Script::default()
    };
    let (mut c, t) = session(script).await;
    assert!(c.capabilities().starttls());
    let info = c.starttls(client_config(true), name()).await.unwrap();
    assert_eq!(info.version, "TLSv1.3");
    assert!(info.cipher.starts_with("TLS_"), "{}", info.cipher);
    assert_eq!(info.peer_certificates.len(), 1);
    assert_eq!(c.tls(), Some(&info));
    assert!(
        c.capabilities().pipelining(),
        "capabilities relearnt after TLS"
    );
    let result = c.transaction(&envelope(&["a@dest.test"]), BODY).await;
    assert!(result.recipients[0].is_delivered());
    c.quit().await.unwrap();
    let tr = snapshot(&t);
    assert_eq!(
        tr.commands[..4],
        ["EHLO relay.test", "STARTTLS", "<TLS>", "EHLO relay.test"]
    );
    assert_eq!(unstuff(&tr.messages[0]), BODY);
}

#[tokio::test]
async fn a_refusing_verifier_fails_the_handshake_and_defers_4_7_5() {
    let script = Script {
        tls: Some(certs::self_signed(&["mx.test"]).acceptor()),
        ..Script::default()
    };
    let (mut c, t) = session(script).await;
    let err = c.starttls(client_config(false), name()).await.unwrap_err();
    assert!(
        matches!(err.tls_error(), Some(rustls::Error::InvalidCertificate(_))),
        "{err:?}"
    );
    assert!(
        !c.is_usable(),
        "never continue in plaintext on the same stream"
    );
    let Outcome::Deferred(reason) = outcome::from_error(&err.into()) else {
        panic!()
    };
    assert_eq!(reason.status(), EnhancedCode(4, 7, 5));
    assert!(!snapshot(&t).commands.iter().any(|c| c.starts_with("MAIL")));
}

#[tokio::test]
async fn starttls_not_offered_is_reported_and_leaves_the_session_usable() {
    let (mut c, _t) = session(Script::default()).await;
    let err = c.starttls(client_config(true), name()).await.unwrap_err();
    assert!(matches!(err, ClientError::StartTlsNotOffered));
    assert!(c.is_usable());
}

#[tokio::test]
async fn data_after_the_starttls_reply_is_refused_as_injection() {
    // CVE-2011-0411 class: plaintext pipelined behind the 220 must never be
    // read as if it came over TLS.
    let script = Script::default()
        .with("STARTTLS")
        .rule("STARTTLS", "220 2.0.0 go ahead\r\n250 2.0.0 injected");
    let (mut c, _t) = session(script).await;
    let err = c
        .starttls(
            client_config(true),
            ServerName::try_from("mx.test").unwrap(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Protocol {
                phase: Phase::StartTls,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!c.is_usable());
}

#[tokio::test]
async fn starttls_refused_with_454_leaves_plaintext_possible() {
    let script = Script::default()
        .with("STARTTLS")
        .rule("STARTTLS", "454 4.7.0 TLS not available");
    let (mut c, _t) = session(script).await;
    let err = c
        .starttls(
            client_config(true),
            ServerName::try_from("mx.test").unwrap(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Rejected { phase: Phase::StartTls, reply } if reply.code == 454)
    );
    assert!(
        c.is_usable(),
        "opportunistic TLS may go on in plaintext on this session"
    );
    assert_eq!(outcome::from_error(&err.into()).label(), "deferred");
    assert!(c
        .transaction(&envelope(&["a@dest.test"]), BODY)
        .await
        .recipients[0]
        .is_delivered());
}
