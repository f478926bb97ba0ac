//! The outbound SMTP client: one session with one remote MX over any
//! already-connected stream (TCP, TLS after STARTTLS, or an in-memory duplex
//! in tests).
//!
//! [`Client`] owns the stream and its read buffer (STYLE habit 2). Each phase
//! of RFC 5321 is one small method in `phases` with its own RFC 5321
//! §4.5.3.2 timeout from [`Timeouts`]; `transaction` strings them together
//! for one message to N recipients and reports a final result per recipient.
//! Parsing and formatting are sans-I/O (`reply`, `command`, `body`).
//!
//! Typical use (the delivery engine connects, picks the TLS config from the
//! DANE policy decision and maps results with `delivery::outcome`):
//! ```text
//! let mut c = Client::new(tcp, Timeouts::default(), "relay.example.com");
//! c.greeting().await?;  c.ehlo().await?;
//! if c.capabilities().starttls() { c.starttls(cfg, name).await?; }
//! let result = c.transaction(&envelope, body).await;   // repeat for more messages
//! c.quit().await;
//! ```

mod auth;
mod blocking;
mod body;
mod command;
mod downgrade;
mod phases;
mod reply;
mod transaction;
mod transport;

use std::fmt;
use std::time::Duration;

use bytes::BytesMut;

use crate::smtp::Reply;

pub use blocking::BlockingBody;
pub use body::{BodyEncoder, BodyError, MAX_LINE};
pub use command::{mail_from_line, rcpt_to_line, xtext, Envelope, Recipient};
pub use downgrade::Downgrade;
pub use reply::{Capabilities, ReplyError, ReplyRead, ReplyReader};
pub use transaction::{RcptResult, TransactionResult};
pub use transport::{TlsInfo, Transport};

/// RFC 5321 §4.5.3.2 client timeouts, one per phase. `Default` is the RFC's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Initial 220 message: 5 minutes.
    pub greeting: Duration,
    /// EHLO/HELO reply (RFC 5321 does not name it; treated like MAIL): 5 minutes.
    pub ehlo: Duration,
    /// STARTTLS reply plus the TLS handshake (Postfix `smtp_starttls_timeout`): 5 minutes.
    pub starttls: Duration,
    /// MAIL reply: 5 minutes.
    pub mail: Duration,
    /// Each RCPT reply: 5 minutes.
    pub rcpt: Duration,
    /// DATA initiation (the 354): 2 minutes.
    pub data: Duration,
    /// Each block of message data sent (and each non-final BDAT reply): 3 minutes.
    pub data_block: Duration,
    /// The reply after the final dot (or `BDAT … LAST`): 10 minutes.
    pub final_dot: Duration,
    /// RSET reply (Postfix `smtp_rset_timeout`): 20 seconds.
    pub rset: Duration,
    /// QUIT reply (Postfix `smtp_quit_timeout`): 5 minutes.
    pub quit: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        const MIN: u64 = 60;
        Timeouts {
            greeting: Duration::from_secs(5 * MIN),
            ehlo: Duration::from_secs(5 * MIN),
            starttls: Duration::from_secs(5 * MIN),
            mail: Duration::from_secs(5 * MIN),
            rcpt: Duration::from_secs(5 * MIN),
            data: Duration::from_secs(2 * MIN),
            data_block: Duration::from_secs(3 * MIN),
            final_dot: Duration::from_secs(10 * MIN),
            rset: Duration::from_secs(20),
            quit: Duration::from_secs(5 * MIN),
        }
    }
}

/// The step of the session an error or reply belongs to (read like
/// Postfix's "in reply to RCPT TO command").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    Greeting,
    Ehlo,
    Helo,
    StartTls,
    TlsHandshake,
    /// RFC 4954 AUTH (submission to a relay only).
    Auth,
    Mail,
    Rcpt,
    Data,
    DataBlock,
    FinalDot,
    Bdat,
    Rset,
    Quit,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Greeting => "greeting",
            Phase::Ehlo => "EHLO",
            Phase::Helo => "HELO",
            Phase::StartTls => "STARTTLS",
            Phase::TlsHandshake => "TLS handshake",
            Phase::Auth => "AUTH",
            Phase::Mail => "MAIL FROM",
            Phase::Rcpt => "RCPT TO",
            Phase::Data => "DATA",
            Phase::DataBlock => "message data",
            Phase::FinalDot => "end of DATA",
            Phase::Bdat => "BDAT",
            Phase::Rset => "RSET",
            Phase::Quit => "QUIT",
        })
    }
}

/// Everything that can go wrong in a session. After any variant other than
/// `Rejected` (non-421), `SmtpUtf8NotOffered` and `TooBig` the session is
/// unusable ([`Client::is_usable`] turns false).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("timed out after {after:?} waiting in {phase}")]
    Timeout { phase: Phase, after: Duration },
    #[error("I/O error in {phase}: {source}")]
    Io {
        phase: Phase,
        #[source]
        source: std::io::Error,
    },
    #[error("connection closed by the peer in {phase}")]
    Closed { phase: Phase },
    #[error("bad reply in {phase}: {source}")]
    BadReply {
        phase: Phase,
        #[source]
        source: ReplyError,
    },
    #[error("protocol violation in {phase}: {detail}")]
    Protocol { phase: Phase, detail: String },
    /// The peer answered with an unexpected code at session level (greeting,
    /// EHLO/HELO, STARTTLS, MAIL, RSET), or 421 anywhere.
    #[error("{reply} (in reply to {phase})")]
    Rejected { phase: Phase, reply: Reply },
    #[error("STARTTLS is not offered by the peer")]
    StartTlsNotOffered,
    /// The handshake failed; a DANE verifier's refusal surfaces here too.
    #[error("TLS handshake failed: {source}")]
    Tls {
        #[source]
        source: std::io::Error,
    },
    /// RFC 6531 §3.4: an SMTPUTF8 message to a peer without SMTPUTF8. Nothing was sent.
    #[error("the message needs SMTPUTF8 but the peer does not offer it")]
    SmtpUtf8NotOffered,
    /// RFC 1870 §6: larger than the peer's fixed SIZE limit. Nothing was sent.
    #[error("message size {size} exceeds the peer's SIZE limit {limit}")]
    TooBig { size: u64, limit: u64 },
    #[error("message body cannot be sent: {0}")]
    Body(#[from] BodyError),
    #[error("reading the message body failed: {source}")]
    BodyRead {
        #[source]
        source: std::io::Error,
    },
    #[error("the session is no longer usable")]
    Unusable,
}

impl ClientError {
    /// The rustls error behind a failed handshake (a DANE verifier's
    /// `InvalidCertificate`, a protocol alert, …), when there is one.
    pub fn tls_error(&self) -> Option<&rustls::Error> {
        match self {
            ClientError::Tls { source } => source.get_ref()?.downcast_ref::<rustls::Error>(),
            _ => None,
        }
    }

    /// Whether the session can carry on after this error.
    fn keeps_session(&self) -> bool {
        match self {
            ClientError::Rejected { reply, .. } => !reply.is_closing(),
            ClientError::SmtpUtf8NotOffered
            | ClientError::TooBig { .. }
            | ClientError::StartTlsNotOffered => true,
            _ => false,
        }
    }
}

/// Where the session is between transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Ready for MAIL.
    Ready,
    /// A transaction was started and not completed: RSET before the next MAIL.
    NeedsReset,
    /// Broken (I/O error, timeout, 421, protocol error): only drop it.
    Broken,
}

/// One outbound SMTP session: the stream, its read buffer and what the
/// peer advertised.
pub struct Client<S> {
    stream: Transport<S>,
    rbuf: BytesMut,
    reader: ReplyReader,
    timeouts: Timeouts,
    helo_name: String,
    caps: Capabilities,
    tls: Option<TlsInfo>,
    state: State,
    /// Bytes written to the peer so far (for logs and tests).
    sent: u64,
}

impl<S> fmt::Debug for Client<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("helo_name", &self.helo_name)
            .field("caps", &self.caps)
            .field("tls", &self.tls)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl<S> Client<S> {
    /// Wraps an already-connected stream. Nothing is read or sent yet: call
    /// [`Client::greeting`] first.
    pub fn new(stream: S, timeouts: Timeouts, helo_name: impl Into<String>) -> Client<S> {
        Client {
            stream: Transport::Plain(stream),
            rbuf: BytesMut::with_capacity(4096),
            reader: ReplyReader::default(),
            timeouts,
            helo_name: helo_name.into(),
            caps: Capabilities::default(),
            tls: None,
            state: State::Ready,
            sent: 0,
        }
    }

    /// What the peer advertised in its last EHLO (empty after HELO).
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// The negotiated TLS parameters once STARTTLS succeeded.
    pub fn tls(&self) -> Option<&TlsInfo> {
        self.tls.as_ref()
    }

    /// False once an error broke the session; such a client can only be dropped.
    pub fn is_usable(&self) -> bool {
        self.state != State::Broken
    }

    /// The timeouts in force.
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// Octets written to the peer so far.
    pub fn bytes_sent(&self) -> u64 {
        self.sent
    }

    /// Marks the session broken when `result` is an error that ends it.
    fn track<T>(&mut self, result: Result<T, ClientError>) -> Result<T, ClientError> {
        if let Err(e) = &result {
            if !e.keeps_session() {
                self.state = State::Broken;
            }
        }
        result
    }
}
