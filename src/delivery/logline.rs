//! The one log line per recipient, in the spirit of Postfix's `smtp` lines
//! (pure formatting):
//!
//! ```text
//! queue_id=0A1B2C3D4E5F to=<bob@example.net> relay=mx.example.net[192.0.2.1]:25 delay=1.2
//!   tls=dane-verified (3 1 1, depth 0) TLSv1.3 TLS_AES_256_GCM_SHA384 status=sent (250 2.0.0 Ok)
//! ```
//! (one line; wrapped here). `relay=none` and `tls=none` when no session was
//! established for the recipient. A TLS session that resumed an earlier one
//! ends its `tls=` part with ` resumed` (the DANE match is still shown: it is
//! re-derived from the chain that session was verified with).

use std::time::Duration;

use super::outcome::Outcome;
use super::session::TlsOutcome;

/// `sent`, `deferred` or `bounced`, as Postfix's `status=`.
pub fn status_word(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Delivered(_) => "sent",
        Outcome::Deferred(_) => "deferred",
        Outcome::Bounced(_) => "bounced",
    }
}

/// The reply text shown in parentheses.
pub fn reply_text(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Delivered(r) => r.one_line(),
        Outcome::Deferred(r) | Outcome::Bounced(r) => r.reply.one_line(),
    }
}

/// Formats one recipient's line.
pub fn line(
    queue_id: &str,
    recipient: &str,
    relay: Option<&str>,
    delay: Duration,
    tls: Option<&TlsOutcome>,
    outcome: &Outcome,
) -> String {
    let tls = tls.map_or_else(|| "none".to_string(), ToString::to_string);
    format!(
        "queue_id={queue_id} to=<{recipient}> relay={} delay={:.1} tls={tls} status={} ({})",
        relay.unwrap_or("none"),
        delay.as_secs_f64(),
        status_word(outcome),
        reply_text(outcome),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dane::DaneMatch;
    use crate::delivery::outcome::{from_error, AttemptError};
    use crate::smtp::client::TlsInfo;
    use crate::smtp::{EnhancedCode, Reply};

    #[test]
    fn dane_verified_line_reads_like_postfix() {
        let tls = TlsOutcome::DaneVerified(
            DaneMatch {
                usage: 3,
                selector: 1,
                matching: 1,
                depth: 0,
            },
            TlsInfo {
                version: "TLSv1.3".into(),
                cipher: "TLS_AES_256_GCM_SHA384".into(),
                peer_certificates: Vec::new(),
                resumed: false,
            },
        );
        let ok = Outcome::Delivered(Reply::local(250, EnhancedCode(2, 0, 0), "Ok"));
        let l = line(
            "0A1B2C3D4E5F",
            "bob@example.net",
            Some("mx.example.net[192.0.2.1]:25"),
            Duration::from_millis(1234),
            Some(&tls),
            &ok,
        );
        assert_eq!(
            l,
            "queue_id=0A1B2C3D4E5F to=<bob@example.net> relay=mx.example.net[192.0.2.1]:25 \
             delay=1.2 tls=dane-verified (3 1 1, depth 0) TLSv1.3 TLS_AES_256_GCM_SHA384 \
             status=sent (250 2.0.0 Ok)"
        );
    }

    #[test]
    fn an_insecure_mx_match_is_logged_dane_trusted() {
        let m = DaneMatch {
            usage: 3,
            selector: 1,
            matching: 1,
            depth: 0,
        };
        let info = TlsInfo {
            version: "TLSv1.3".into(),
            cipher: "TLS_AES_128_GCM_SHA256".into(),
            peer_certificates: Vec::new(),
            resumed: false,
        };
        let tls = TlsOutcome::DaneTrusted(m, info);
        assert_eq!(tls.label(), "dane-trusted");
        assert_eq!(tls.dane_match(), Some(&m));
        let ok = Outcome::Delivered(Reply::local(250, EnhancedCode(2, 0, 0), "Ok"));
        let l = line(
            "ID",
            "b@customer.example",
            None,
            Duration::ZERO,
            Some(&tls),
            &ok,
        );
        assert!(
            l.contains(
                " tls=dane-trusted (3 1 1, depth 0) TLSv1.3 TLS_AES_128_GCM_SHA256 status=sent"
            ),
            "{l}"
        );
        assert_eq!(TlsOutcome::Plaintext.dane_match(), None);
    }

    #[test]
    fn a_resumed_session_says_so_after_the_cipher() {
        let info = TlsInfo {
            version: "TLSv1.3".into(),
            cipher: "TLS_AES_256_GCM_SHA384".into(),
            peer_certificates: Vec::new(),
            resumed: true,
        };
        let m = DaneMatch {
            usage: 2,
            selector: 0,
            matching: 1,
            depth: 1,
        };
        let ok = Outcome::Delivered(Reply::local(250, EnhancedCode(2, 0, 0), "Ok"));
        let dane = TlsOutcome::DaneVerified(m, info.clone());
        let l = line(
            "ID",
            "b@example.net",
            None,
            Duration::ZERO,
            Some(&dane),
            &ok,
        );
        assert!(
            l.contains(
                " tls=dane-verified (2 0 1, depth 1) TLSv1.3 TLS_AES_256_GCM_SHA384 resumed \
                 status=sent"
            ),
            "{l}"
        );
        let unauth = TlsOutcome::Unauthenticated(info);
        let l = line(
            "ID",
            "b@example.net",
            None,
            Duration::ZERO,
            Some(&unauth),
            &ok,
        );
        assert!(
            l.contains(" tls=tls-unauthenticated TLSv1.3 TLS_AES_256_GCM_SHA384 resumed status="),
            "{l}"
        );
    }

    #[test]
    fn no_session_means_relay_and_tls_none() {
        let out = from_error(&AttemptError::NullMx {
            domain: "example.org".into(),
        });
        let l = line("ID", "a@example.org", None, Duration::ZERO, None, &out);
        assert!(l.contains("relay=none"), "{l}");
        assert!(l.contains("tls=none"), "{l}");
        assert!(l.contains("status=bounced (550 5.1.10"), "{l}");
    }
}
