//! The values the sans-I/O [`Session`](super::session::Session) exchanges
//! with the I/O layer: its configuration and limits, what it asks for
//! ([`Action`]), what it is told ([`MessageOutcome`], [`TlsInfo`]), the
//! transaction it builds, and the events it reports for metrics.

use std::sync::Arc;

use super::limits::UserRate;
use crate::config::SenderPolicy;
use crate::metrics::{LimitHit, RejectReason};
use crate::smtp::Reply;
use crate::smtp::{Notify, Ret};

/// What the session needs to know about its listener and peer.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub hostname: String,
    /// STARTTLS may be offered (a `starttls` listener with a certificate).
    pub starttls: bool,
    /// A users file is configured, so AUTH can be offered inside TLS.
    pub auth_available: bool,
    /// The client address is in `auth.trusted_networks`.
    pub trusted: bool,
    pub sender_policy: SenderPolicy,
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub max_auth_failures: u32,
    pub limits: SessionLimits,
}

/// The per-session abuse limits of `[limits]` (config/danerelay.toml).
#[derive(Debug, Clone)]
pub struct SessionLimits {
    /// Commands in a row without progress before `421 4.7.0`.
    pub max_junk_commands: u32,
    /// Recipients accepted over the whole session.
    pub max_recipients_per_session: usize,
    /// Transactions per authenticated user (shared by all sessions).
    pub user_rate: Option<Arc<UserRate>>,
    /// Asked at MAIL whether the store can take new mail now (full or failing disk).
    pub storage: Option<StorageGate>,
}

/// The store, as MAIL asks it whether new mail can be stored now.
#[derive(Clone)]
pub struct StorageGate(pub Arc<dyn super::store::MessageStore>);

impl std::fmt::Debug for StorageGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StorageGate")
    }
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            max_junk_commands: 50,
            max_recipients_per_session: 1000,
            user_rate: None,
            storage: None,
        }
    }
}

/// Something the I/O layer should count (metrics), drained with
/// [`Session::take_events`](super::session::Session::take_events).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEvent {
    Rejected(RejectReason),
    Limit(LimitHit),
    AuthFailed,
}

/// The negotiated TLS parameters, for EHLO decisions and `Received:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// e.g. `TLSv1.3`
    pub version: String,
    /// IANA cipher suite name, e.g. `TLS_AES_256_GCM_SHA384`
    pub cipher: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub address: String,
    /// RFC 3461 ORCPT address, xtext-decoded (type `rfc822` implied).
    pub orcpt: Option<String>,
    /// RFC 3461 NOTIFY as given on RCPT; `None` = not given.
    pub notify: Option<Notify>,
}

/// One mail transaction (MAIL .. end of data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    pub sender: String,
    pub body_8bit: bool,
    pub smtputf8: bool,
    pub ret: Option<Ret>,
    pub envid: Option<String>,
    pub recipients: Vec<Recipient>,
    /// Handed on by another relay (a `relay = true` account, or a trusted
    /// client sending `X-DANERELAY-ARRIVAL`): stored as it came — no new
    /// `Message-ID:`/`Date:`, no second DKIM signature.
    pub handoff: bool,
    /// `X-DANERELAY-ARRIVAL`: when the first relay accepted it (Unix seconds).
    pub arrival: Option<u64>,
}

/// What the I/O layer must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send the reply; keep reading commands.
    Reply(Reply),
    /// Send the reply and close the connection.
    Close(Reply),
    /// Send the reply (220), discard any buffered plaintext (RFC 3207 §6 —
    /// command injection), do the TLS handshake, then call
    /// [`Session::tls_established`](super::session::Session::tls_established).
    StartTls(Reply),
    /// Verify these credentials (off the runtime) and call [`Session::auth_result`](super::session::Session::auth_result).
    Authenticate { login: String, password: String },
    /// Send the 354 reply, read the message until `<CRLF>.<CRLF>`, then call
    /// [`Session::message_done`](super::session::Session::message_done).
    ReadData(Reply),
    /// Read exactly `size` octets of BDAT chunk. With `reject`, discard them and
    /// send that reply; otherwise append them to the message and call
    /// [`Session::chunk_done`](super::session::Session::chunk_done) (not last) or [`Session::message_done`](super::session::Session::message_done) (last).
    ReadChunk {
        size: usize,
        last: bool,
        reject: Option<Reply>,
    },
}

/// How a message transfer ended, as the I/O layer saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageOutcome {
    /// Durable in the queue under this id.
    Queued(String),
    TooLarge,
    /// RFC 5321 §2.3.8: a CR or LF not part of CRLF (SMTP smuggling defence).
    BareLineEnding,
    /// The queue failed; nothing was stored.
    StorageFailed,
    /// The header section exceeded `limits.max_header_size`.
    HeaderTooLarge,
    /// More header fields than `limits.max_header_fields`.
    TooManyHeaderFields,
    /// Lines over 998 octets that cannot be re-encoded or folded (issue #18).
    Unencodable(String),
}
