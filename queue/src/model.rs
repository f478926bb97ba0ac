//! The message model: what the submission side hands in (envelope, recipient specs), what the
//! delivery side hands back (outcomes), what the admin side sees (message and recipient info),
//! and the records stored in sled (`serde_json`, one per key, so a corrupt one is isolated).

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::id::QueueId;

/// Queue behaviour, from the `[queue]` config table.
#[derive(Debug, Clone)]
pub struct QueueOptions {
    /// Delays between delivery attempts; non-empty; the last one repeats (with ±10 % jitter).
    pub retry: Vec<Duration>,
    /// After this long in the queue, a deferral turns into a bounce (`4.4.7`).
    pub max_age: Duration,
    /// How long a delivery worker owns a leased message before it becomes due again.
    pub lease: Duration,
}

/// RFC 3461 §4.3 `RET`: what a failure DSN carries of the original message.
/// The one definition: the SMTP server parses it into this, the queue stores
/// it, the client and the DSN builder read it (`danerelay::smtp` re-exports it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ret {
    /// `RET=FULL`: the whole message.
    Full,
    /// `RET=HDRS`: the header section only.
    Headers,
}

/// RFC 3461 §4.1 `NOTIFY` of one recipient. `never` excludes the others. The
/// one definition, shared by the SMTP server, the queue, the client and the DSN
/// builder (`danerelay::smtp` re-exports it).
///
/// `Default` (and [`Notify::DEFAULT`]) is what applies when the submitter gave
/// no NOTIFY: RFC 3461 §4.1 leaves it to the MTA, which should notify on
/// failure and may on delay; danerelay does both (FAILURE,DELAY). Where "given
/// or not" matters (the server's transaction, the client's RCPT line) the
/// field is an `Option<Notify>`; the queue stores the default in place of
/// `None`, so an explicit `NOTIFY=FAILURE,DELAY` reads back as not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notify {
    pub success: bool,
    pub failure: bool,
    pub delay: bool,
    pub never: bool,
}

impl Notify {
    /// No NOTIFY given: failure and delay (RFC 3461 §4.1).
    pub const DEFAULT: Notify = Notify {
        success: false,
        failure: true,
        delay: true,
        never: false,
    };
}

impl Default for Notify {
    fn default() -> Notify {
        Notify::DEFAULT
    }
}

/// The envelope of an accepted message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// `""` for the null sender `<>` (bounces and other DSNs).
    pub sender: String,
    pub ret: Option<Ret>,
    pub envid: Option<String>,
    /// `BODY=8BITMIME`.
    pub body_8bit: bool,
    pub smtputf8: bool,
    pub auth_user: Option<String>,
    pub client_addr: Option<IpAddr>,
    pub received_at: SystemTime,
    /// DKIM-signed by the relay at acceptance: delivery must send the content
    /// unchanged (no 8BITMIME downgrade). Absent in records written before it.
    #[serde(default)]
    pub relay_signed: bool,
    /// A TLS-RPT report the relay generated itself (never set from client
    /// input): delivery ignores TLS failures for it, as RFC 8460 §3 asks.
    /// Absent in records written before it.
    #[serde(default)]
    pub tls_report: bool,
}

impl Envelope {
    /// A plain envelope: 7-bit, no `RET`/`ENVID` (RFC 3461 §4.3, §4.4), no
    /// submitter recorded. Set the other fields with struct update syntax:
    /// `Envelope { auth_user: Some(u), ..Envelope::new(sender, now) }`.
    pub fn new(sender: impl Into<String>, received_at: SystemTime) -> Envelope {
        Envelope {
            sender: sender.into(),
            ret: None,
            envid: None,
            body_8bit: false,
            smtputf8: false,
            auth_user: None,
            client_addr: None,
            received_at,
            relay_signed: false,
            tls_report: false,
        }
    }
}

/// One recipient as accepted by `RCPT TO`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientSpec {
    pub address: String,
    /// RFC 3461 §4.2 `ORCPT`, stored as received (`rfc822;user@example.com`).
    pub orcpt: Option<String>,
    pub notify: Notify,
}

/// Where a recipient stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecipientState {
    /// Not attempted yet.
    Pending,
    /// Attempted, got a temporary failure, will be retried.
    Deferred,
    /// Done: accepted by the next hop.
    Delivered,
    /// Done: permanent failure or expired (`4.4.7`).
    Bounced,
}

impl RecipientState {
    /// Still to be delivered.
    pub fn is_open(self) -> bool {
        matches!(self, RecipientState::Pending | RecipientState::Deferred)
    }
}

/// Where a message stands (the `state` label of `danerelay_queue_messages`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageState {
    /// Waiting for its first attempt.
    Pending,
    /// At least one attempt was deferred; waiting for the next.
    Deferred,
    /// On hold by an operator: never leased until released.
    Held,
    /// Leased to a delivery worker right now.
    Active,
}

impl MessageState {
    pub const ALL: [MessageState; 4] = [
        MessageState::Pending,
        MessageState::Deferred,
        MessageState::Held,
        MessageState::Active,
    ];

    /// The lowercase name used in metrics labels and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageState::Pending => "pending",
            MessageState::Deferred => "deferred",
            MessageState::Held => "held",
            MessageState::Active => "active",
        }
    }
}

/// What the queue records for one recipient after one delivery attempt (its
/// disposition): the delivery side's `Outcome` (which carries the structured reply and
/// where it came from) with the reply reduced to one line. The delivery side
/// converts into it in one place; the queue never builds one itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// 2xx: the next hop took responsibility. The reply is kept for `show`.
    Delivered { reply: String },
    /// Temporary failure: retried per `QueueOptions::retry` until `max_age`.
    Deferred { reply: String },
    /// Permanent failure: the caller sends (or has sent) the DSN.
    Bounced { reply: String },
}

/// Number of messages per state (for `danerelay_queue_messages{state}`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub pending: u64,
    pub deferred: u64,
    pub held: u64,
    pub active: u64,
}

impl Counts {
    pub fn get(&self, state: MessageState) -> u64 {
        match state {
            MessageState::Pending => self.pending,
            MessageState::Deferred => self.deferred,
            MessageState::Held => self.held,
            MessageState::Active => self.active,
        }
    }

    pub(crate) fn slot(&mut self, state: MessageState) -> &mut u64 {
        match state {
            MessageState::Pending => &mut self.pending,
            MessageState::Deferred => &mut self.deferred,
            MessageState::Held => &mut self.held,
            MessageState::Active => &mut self.active,
        }
    }

    pub fn total(&self) -> u64 {
        self.pending + self.deferred + self.held + self.active
    }
}

/// One recipient as `show` and `list` report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecipientInfo {
    /// Position in the message (what outcomes refer to).
    pub index: u32,
    pub address: String,
    pub orcpt: Option<String>,
    pub notify: Notify,
    pub state: RecipientState,
    pub attempts: u32,
    pub last_reply: Option<String>,
    pub last_attempt: Option<SystemTime>,
}

impl RecipientInfo {
    /// The domain part of the address, lowercased (what `list` filters on).
    pub fn domain(&self) -> String {
        domain_of(&self.address)
    }
}

pub(crate) fn domain_of(address: &str) -> String {
    address
        .rsplit_once('@')
        .map_or("", |(_, d)| d)
        .to_ascii_lowercase()
}

/// One message as `show` and `list` report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageInfo {
    pub id: QueueId,
    pub envelope: Envelope,
    pub size: u64,
    pub state: MessageState,
    /// Number of attempts that ended deferred.
    pub deferrals: u32,
    /// When it is next due (`None` while held).
    pub next_attempt: Option<SystemTime>,
    pub delay_warned: bool,
    pub recipients: Vec<RecipientInfo>,
}

/// `list` filters; `Default` lists everything.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub state: Option<MessageState>,
    /// Only messages with an open (pending/deferred) recipient in this domain (case-insensitive).
    pub domain: Option<String>,
    /// Only messages at least this old (by `received_at`).
    pub min_age: Option<Duration>,
    /// Only messages at most this old.
    pub max_age: Option<Duration>,
    /// Stop after this many.
    pub limit: Option<usize>,
    /// Start after this id (paging: pass the last id of the previous page).
    pub after: Option<QueueId>,
}

/// A recipient handed to a delivery worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasedRecipient {
    /// Pass back in `complete`'s outcomes.
    pub index: u32,
    pub address: String,
    pub orcpt: Option<String>,
    pub notify: Notify,
    pub attempts: u32,
}

/// A recipient that was still open when the message reached `max_age`: it is now bounced and
/// the caller owes the sender a DSN with status 4.4.7 (RFC 3463).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredRecipient {
    pub index: u32,
    pub address: String,
    pub orcpt: Option<String>,
    pub notify: Notify,
    /// The last reply seen for it, for the DSN's `Diagnostic-Code`.
    pub last_reply: Option<String>,
}

/// Where the body lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum BodyLoc {
    /// In the `body` tree under the message key (`QueueTuning::small_bodies_in_sled`).
    Inline,
    /// In the body log: segment `bodies/<seg>` from byte `off`, `size` bytes.
    Log { seg: u64, off: u64 },
    /// In `spool/<ID>`.
    Spool,
}

/// The lease currently held on a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LeaseRec {
    pub token: u64,
    pub until_ms: u64,
}

/// The `meta` tree's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MessageRecord {
    pub env: Envelope,
    pub body: BodyLoc,
    pub size: u64,
    pub crc32: u32,
    pub rcpts: u32,
    pub hold: bool,
    pub deferrals: u32,
    /// Key of this message in the `due` index (ms since the Unix epoch); meaningless when held.
    pub next_ms: u64,
    pub lease: Option<LeaseRec>,
    pub delay_warned: bool,
}

impl MessageRecord {
    pub fn state(&self) -> MessageState {
        if self.hold {
            MessageState::Held
        } else if self.lease.is_some() {
            MessageState::Active
        } else if self.deferrals > 0 {
            MessageState::Deferred
        } else {
            MessageState::Pending
        }
    }

    /// Whether the `due` index holds an entry `(next_ms, id)` for it.
    pub fn scheduled(&self) -> bool {
        !self.hold
    }
}

/// The `rcpt` tree's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RecipientRecord {
    pub address: String,
    pub orcpt: Option<String>,
    pub notify: Notify,
    pub state: RecipientState,
    pub attempts: u32,
    pub last_reply: Option<String>,
    pub last_attempt: Option<SystemTime>,
}

impl RecipientRecord {
    pub fn new(spec: RecipientSpec) -> RecipientRecord {
        RecipientRecord {
            address: spec.address,
            orcpt: spec.orcpt,
            notify: spec.notify,
            state: RecipientState::Pending,
            attempts: 0,
            last_reply: None,
            last_attempt: None,
        }
    }

    pub fn info(&self, index: u32) -> RecipientInfo {
        RecipientInfo {
            index,
            address: self.address.clone(),
            orcpt: self.orcpt.clone(),
            notify: self.notify,
            state: self.state,
            attempts: self.attempts,
            last_reply: self.last_reply.clone(),
            last_attempt: self.last_attempt,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod envelope_tests {
    use super::*;

    /// Records written before `relay_signed` existed still decode (as unsigned).
    #[test]
    fn an_old_envelope_record_decodes() {
        let mut v = serde_json::to_value(Envelope::new("a@b", SystemTime::UNIX_EPOCH)).unwrap();
        v.as_object_mut().unwrap().remove("relay_signed").unwrap();
        let env: Envelope = serde_json::from_value(v).unwrap();
        assert!(!env.relay_signed);
    }
}
