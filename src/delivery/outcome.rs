//! The one outcome type of a delivery attempt, per recipient, and the one
//! place every failure is mapped into it (STYLE habit 5).
//!
//! Rules (README.md "Configuration", RFC 5321 §4.2.1, RFC 7672 §2.2):
//! 2xx ⇒ delivered; 4xx ⇒ deferred; 5xx ⇒ bounced; connection problems,
//! timeouts, TLS and DANE failures, DNSSEC-bogus answers and DNS lookup
//! errors ⇒ always deferred (never bounced, never a reason to fall back).
//! Content the peer cannot take (SMTPUTF8 not offered, over its SIZE limit,
//! a body line over 998 octets) ⇒ bounced without retrying.

use std::sync::Arc;
use std::time::Duration;

use crate::smtp::client::{ClientError, Phase, RcptResult, TransactionResult};
use crate::smtp::queue_edge::reply_to_queue;
use crate::smtp::{EnhancedCode, Reply};

/// Why a recipient was deferred or bounced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    /// The peer's reply, or one synthesised here for local findings.
    pub reply: Reply,
    /// True when `reply` came from the remote server (DSN `Diagnostic-Code: smtp; …`).
    pub remote: bool,
}

impl Reason {
    fn local(code: u16, status: EnhancedCode, text: impl Into<String>) -> Reason {
        Reason {
            reply: Reply::local(code, status, text),
            remote: false,
        }
    }

    fn remote(reply: &Reply) -> Reason {
        Reason {
            reply: reply.clone(),
            remote: true,
        }
    }

    /// The RFC 3463 status for the DSN `Status:` field.
    pub fn status(&self) -> EnhancedCode {
        self.reply.status()
    }
}

/// What became of one recipient in one attempt. The queue records the same
/// three cases as `danerelay_queue::Disposition`, which cannot hold a [`Reply`];
/// [`Outcome::to_queue`] is the one conversion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The peer accepted responsibility (its 2xx reply).
    Delivered(Reply),
    /// Try again later, per `queue.retry`.
    Deferred(Reason),
    /// Permanent failure: remove the recipient and send a DSN.
    Bounced(Reason),
}

impl Outcome {
    /// Short word for logs and metrics labels.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Delivered(_) => "delivered",
            Outcome::Deferred(_) => "deferred",
            Outcome::Bounced(_) => "bounced",
        }
    }

    /// The outcome as `Queue::complete` records it: the reply on one line.
    pub fn to_queue(&self) -> danerelay_queue::Disposition {
        use danerelay_queue::Disposition as Recorded;
        match self {
            Outcome::Delivered(r) => Recorded::Delivered {
                reply: reply_to_queue(r),
            },
            Outcome::Deferred(r) => Recorded::Deferred {
                reply: reply_to_queue(&r.reply),
            },
            Outcome::Bounced(r) => Recorded::Bounced {
                reply: reply_to_queue(&r.reply),
            },
        }
    }
}

/// Everything that can stop an attempt. DNS, DANE and connection variants
/// are built by the delivery engine from its resolver, policy and connect
/// step; `Smtp` wraps what the client reported.
#[derive(Debug, Clone)]
pub enum AttemptError {
    /// Temporary DNS failure (SERVFAIL, timeout, resolver unreachable).
    DnsLookup { name: String, detail: String },
    /// The answer failed DNSSEC validation (RFC 4035 §4.3 "bogus").
    DnssecBogus { name: String, detail: String },
    /// An authoritative NXDOMAIN for the recipient domain (not bogus).
    NoSuchDomain { domain: String },
    /// RFC 7505 null MX: the domain accepts no mail.
    NullMx { domain: String },
    /// TLSA lookup for a host failed (RFC 7672 §2.2: that host is not usable).
    TlsaLookup { host: String, detail: String },
    /// The DANE policy required authenticated TLS and verification failed.
    Dane { host: String, detail: String },
    /// The policy requires TLS and the peer offered no STARTTLS (or refused it).
    TlsRequired { host: String },
    /// MTA-STS `enforce` (RFC 8461 §4.1): the MX host is not in the policy
    /// of `domain`; it is skipped.
    StsMxMismatch { host: String, domain: String },
    /// MTA-STS `enforce` (RFC 8461 §4.2): the certificate is not PKIX-valid
    /// for the MX host name.
    StsCertificate {
        host: String,
        failure: crate::sts::CertFailure,
    },
    /// TCP connect failed (refused, unreachable, reset).
    Connect { host: String, detail: String },
    /// TCP connect did not finish within `delivery.connect_timeout`.
    ConnectTimeout { host: String, after: Duration },
    /// Every candidate host was tried or skipped; carries nothing better.
    NoUsableHost { domain: String },
    /// A local problem (reading the queued body, …).
    Local { detail: String },
    /// The SMTP session failed.
    Smtp(Arc<ClientError>),
}

impl From<ClientError> for AttemptError {
    fn from(e: ClientError) -> AttemptError {
        AttemptError::Smtp(Arc::new(e))
    }
}

/// The outcome of a reply that is a recipient's final word (RFC 5321 §4.2.1).
pub fn from_reply(reply: &Reply) -> Outcome {
    if reply.is_positive() {
        Outcome::Delivered(reply.clone())
    } else if reply.is_permanent() {
        Outcome::Bounced(Reason::remote(reply))
    } else {
        // 4xx, and anything unexpected (1xx/3xx as a final word): try again.
        Outcome::Deferred(Reason::remote(reply))
    }
}

/// The outcome of one recipient's transaction result.
pub fn for_rcpt(result: &RcptResult) -> Outcome {
    match result {
        RcptResult::Reply(reply) => from_reply(reply),
        RcptResult::Error(e) => from_client_error(e),
    }
}

/// One outcome per recipient of a transaction, in envelope order.
pub fn for_transaction(result: &TransactionResult) -> Vec<Outcome> {
    result.recipients.iter().map(for_rcpt).collect()
}

/// THE mapping of every failure to an outcome.
pub fn from_error(err: &AttemptError) -> Outcome {
    use AttemptError as E;
    let defer = |code, status, text: String| Outcome::Deferred(Reason::local(code, status, text));
    match err {
        E::DnsLookup { name, detail } => defer(
            451,
            EnhancedCode(4, 4, 3),
            format!("DNS lookup for {name} failed: {detail}"),
        ),
        E::DnssecBogus { name, detail } => defer(
            451,
            EnhancedCode(4, 7, 5),
            format!("DNSSEC validation failed for {name}: {detail}"),
        ),
        E::NoSuchDomain { domain } => Outcome::Bounced(Reason::local(
            550,
            EnhancedCode(5, 1, 2),
            format!("Host or domain name not found: {domain}"),
        )),
        // RFC 7505 §4.2: 550 5.1.10 (RFC 7505 registers X.1.10).
        E::NullMx { domain } => Outcome::Bounced(Reason::local(
            550,
            EnhancedCode(5, 1, 10),
            format!("Domain {domain} does not accept mail (null MX)"),
        )),
        E::TlsaLookup { host, detail } => defer(
            451,
            EnhancedCode(4, 7, 5),
            format!("TLSA lookup for {host} failed: {detail}"),
        ),
        E::Dane { host, detail } => defer(
            451,
            EnhancedCode(4, 7, 5),
            format!("DANE verification of {host} failed: {detail}"),
        ),
        E::TlsRequired { host } => defer(
            451,
            EnhancedCode(4, 7, 4),
            format!("TLS is required, but was not offered by {host}"),
        ),
        E::StsMxMismatch { host, domain } => defer(
            451,
            EnhancedCode(4, 7, 5),
            format!("MX host {host} is not listed in the MTA-STS policy of {domain}"),
        ),
        E::StsCertificate { host, failure } => defer(
            451,
            EnhancedCode(4, 7, 5),
            format!("MTA-STS: certificate of {host} not valid: {failure}"),
        ),
        E::Connect { host, detail } => defer(
            451,
            EnhancedCode(4, 4, 1),
            format!("connect to {host} failed: {detail}"),
        ),
        E::ConnectTimeout { host, after } => defer(
            451,
            EnhancedCode(4, 4, 1),
            format!("connect to {host} timed out after {after:?}"),
        ),
        E::NoUsableHost { domain } => defer(
            451,
            EnhancedCode(4, 4, 4),
            format!("no usable mail host for {domain}"),
        ),
        E::Local { detail } => defer(451, EnhancedCode(4, 3, 0), detail.clone()),
        E::Smtp(e) => from_client_error(e),
    }
}

fn from_client_error(err: &ClientError) -> Outcome {
    use ClientError as C;
    let defer = |status, text: String| Outcome::Deferred(Reason::local(451, status, text));
    let bounce = |status, text: String| Outcome::Bounced(Reason::local(550, status, text));
    match err {
        C::Rejected { phase, reply } => rejected(*phase, reply),
        C::Timeout { .. } | C::Io { .. } | C::Closed { .. } => {
            defer(EnhancedCode(4, 4, 2), err.to_string())
        }
        C::BadReply { .. } | C::Protocol { .. } => defer(EnhancedCode(4, 5, 0), err.to_string()),
        C::StartTlsNotOffered => defer(EnhancedCode(4, 7, 4), err.to_string()),
        C::Tls { .. } => defer(EnhancedCode(4, 7, 5), err.to_string()),
        // RFC 6531 §3.4 / RFC 3463 X.6.7 (registered by RFC 6533).
        C::SmtpUtf8NotOffered => bounce(EnhancedCode(5, 6, 7), err.to_string()),
        C::TooBig { .. } => {
            Outcome::Bounced(Reason::local(552, EnhancedCode(5, 3, 4), err.to_string()))
        }
        C::Body(_) => bounce(EnhancedCode(5, 6, 0), err.to_string()),
        C::BodyRead { .. } | C::Unusable => defer(EnhancedCode(4, 3, 0), err.to_string()),
    }
}

/// A refusal at session level. A 5xx greeting means "not this host" (RFC
/// 5321 §3.1; Postfix skips such hosts), and a refused STARTTLS leaves the
/// message undelivered rather than undeliverable: both defer. Every other
/// 5xx is the peer's final word on the message.
fn rejected(phase: Phase, reply: &Reply) -> Outcome {
    match phase {
        Phase::Greeting | Phase::StartTls | Phase::TlsHandshake | Phase::Rset | Phase::Quit => {
            Outcome::Deferred(Reason::remote(reply))
        }
        _ => from_reply(reply),
    }
}

/// Whether the engine should go on to the next candidate host after this
/// error (RFC 5321 §5.1: try the next MX when one cannot be reached). True
/// for failures before the peer judged the message: DNS of that host,
/// connect, greeting, EHLO, TLS/DANE, a 421 anywhere. False once MAIL/RCPT/DATA
/// got an answer, and for domain-level results (null MX, no such domain).
pub fn try_next_host(err: &AttemptError) -> bool {
    use AttemptError as E;
    match err {
        E::TlsaLookup { .. } | E::Dane { .. } | E::TlsRequired { .. } => true,
        E::StsMxMismatch { .. } | E::StsCertificate { .. } => true,
        E::Connect { .. } | E::ConnectTimeout { .. } => true,
        E::DnsLookup { .. } | E::DnssecBogus { .. } => true,
        E::NoSuchDomain { .. } | E::NullMx { .. } | E::NoUsableHost { .. } | E::Local { .. } => {
            false
        }
        E::Smtp(e) => match &**e {
            ClientError::Rejected { reply, .. } if reply.is_closing() => true,
            ClientError::Rejected { phase, .. } => {
                matches!(
                    phase,
                    Phase::Greeting | Phase::Ehlo | Phase::Helo | Phase::StartTls
                )
            }
            ClientError::Timeout { phase, .. }
            | ClientError::Io { phase, .. }
            | ClientError::Closed { phase } => {
                matches!(
                    phase,
                    Phase::Greeting
                        | Phase::Ehlo
                        | Phase::Helo
                        | Phase::StartTls
                        | Phase::TlsHandshake
                )
            }
            ClientError::BadReply { phase, .. } | ClientError::Protocol { phase, .. } => {
                matches!(
                    phase,
                    Phase::Greeting | Phase::Ehlo | Phase::Helo | Phase::StartTls
                )
            }
            ClientError::StartTlsNotOffered | ClientError::Tls { .. } => true,
            _ => false,
        },
    }
}

/// The outcome for a message still undelivered at `queue.max_age`: a
/// bounce with `4.4.7` (RFC 3463: delivery time expired), carrying the last
/// reason in its text.
pub fn expired(last: Option<&Reason>) -> Outcome {
    let text = match last {
        Some(r) => format!("delivery time expired; last error: {}", r.reply.one_line()),
        None => "delivery time expired".to_string(),
    };
    Outcome::Bounced(Reason::local(451, EnhancedCode(4, 4, 7), text))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
