//! The submission session as a sans-I/O state machine: command lines in,
//! [`Action`]s out. It decides every reply (RFC 5321 sequencing, RFC 4954
//! AUTH, RFC 3207 STARTTLS, relay and sender policy, limits) and never touches
//! a socket, a clock or the queue; `conn.rs` performs what it asks for and
//! reports back (`tls_established`, `auth_result`, `message_done`).

use smtp_proto::{MailFrom, RcptTo, Request};

use super::params::{self, Arrival};
use super::sasl;
use crate::auth::sender_allowed;
use crate::metrics::{LimitHit, RejectReason};
use crate::smtp::queue_edge;
use crate::smtp::wire::parse_command;
use crate::smtp::Reply;

pub use super::session_types::*;

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Command,
    AuthPlain,
    AuthLoginUser,
    AuthLoginPass {
        login: String,
    },
    /// Credentials handed to the I/O layer; waiting for `auth_result`.
    AuthPending,
    Data,
    /// Between BDAT chunks; `octets` received so far.
    Bdat {
        octets: usize,
    },
}

#[derive(Debug)]
pub struct Session {
    cfg: SessionConfig,
    state: State,
    helo: Option<String>,
    esmtp: bool,
    tls: Option<TlsInfo>,
    auth_user: Option<String>,
    /// The authenticated account is marked `relay = true` (users file).
    relay_account: bool,
    /// `X-DANERELAY-ARRIVAL` of the MAIL line being handled.
    arrival: Option<Arrival>,
    auth_failures: u32,
    tx: Option<Transaction>,
    /// Commands in a row without progress.
    junk: u32,
    /// Recipients accepted in this session so far.
    session_recipients: usize,
    events: Vec<SessionEvent>,
}

impl Session {
    /// `tls` is `Some` on an implicit-TLS listener (handshake already done).
    pub fn new(cfg: SessionConfig, tls: Option<TlsInfo>) -> Self {
        Self {
            cfg,
            state: State::Command,
            helo: None,
            esmtp: false,
            tls,
            auth_user: None,
            relay_account: false,
            arrival: None,
            auth_failures: 0,
            tx: None,
            junk: 0,
            session_recipients: 0,
            events: Vec::new(),
        }
    }

    /// Events since the last call, for metrics.
    pub fn take_events(&mut self) -> Vec<SessionEvent> {
        std::mem::take(&mut self.events)
    }

    fn event(&mut self, e: SessionEvent) {
        // Bounded: the I/O layer drains after every call.
        if self.events.len() < 64 {
            self.events.push(e);
        }
    }

    fn reject(&mut self, reason: RejectReason, reply: Reply) -> Action {
        self.event(SessionEvent::Rejected(reason));
        Action::Reply(reply)
    }

    /// Counts a command that made no progress; past the limit the session is
    /// closed with `421 4.7.0` instead of `action` (Postfix's
    /// `smtpd_junk_command_limit` / `smtpd_hard_error_limit`).
    fn junk_command(&mut self, action: Action) -> Action {
        self.junk = self.junk.saturating_add(1);
        if self.junk > self.cfg.limits.max_junk_commands {
            self.event(SessionEvent::Limit(LimitHit::JunkCommands));
            return Action::Close(Reply::too_many_junk_commands(&self.cfg.hostname));
        }
        action
    }

    pub fn greeting(&self) -> Reply {
        Reply::greeting(&self.cfg.hostname)
    }
    pub fn hostname(&self) -> &str {
        &self.cfg.hostname
    }
    pub fn helo(&self) -> Option<&str> {
        self.helo.as_deref()
    }
    pub fn esmtp(&self) -> bool {
        self.esmtp
    }
    pub fn tls(&self) -> Option<&TlsInfo> {
        self.tls.as_ref()
    }
    pub fn auth_user(&self) -> Option<&str> {
        self.auth_user.as_deref()
    }
    pub fn transaction(&self) -> Option<&Transaction> {
        self.tx.as_ref()
    }
    /// True between a first BDAT chunk and its LAST (or an abort).
    pub fn bdat_in_progress(&self) -> bool {
        matches!(self.state, State::Bdat { .. })
    }
    pub fn max_message_size(&self) -> u64 {
        self.cfg.max_message_size
    }

    /// Feeds one input line (line ending included).
    pub fn on_line(&mut self, line: &[u8]) -> Action {
        match std::mem::replace(&mut self.state, State::Command) {
            State::AuthPlain => self.auth_plain_response(line),
            State::AuthLoginUser => self.auth_login_user(line),
            State::AuthLoginPass { login } => self.auth_login_pass(login, line),
            State::AuthPending => {
                self.state = State::AuthPending;
                Action::Reply(Reply::bad_sequence("Authentication in progress"))
            }
            State::Data => {
                // The I/O layer reads DATA itself; a line here is a caller bug.
                self.state = State::Data;
                Action::Reply(Reply::bad_sequence("Data transfer in progress"))
            }
            state @ (State::Command | State::Bdat { .. }) => {
                self.state = state;
                let (line, arrival) = params::split_arrival(line);
                self.arrival = arrival;
                match parse_command(&line) {
                    Ok(req) => {
                        let idle = matches!(
                            req,
                            Request::Noop { .. }
                                | Request::Rset
                                | Request::Vrfy { .. }
                                | Request::Help { .. }
                                | Request::Ehlo { .. }
                                | Request::Helo { .. }
                                | Request::Expn { .. }
                                | Request::Etrn { .. }
                                | Request::Atrn { .. }
                                | Request::Burl { .. }
                                | Request::Lhlo { .. }
                        );
                        let action = self.on_request(req);
                        // 5xx refusals count too; 4xx (e.g. 452 per recipient) do not.
                        let refused = matches!(&action, Action::Reply(r) if r.code >= 500);
                        if idle || refused {
                            self.junk_command(action)
                        } else {
                            action
                        }
                    }
                    Err(e) => {
                        if matches!(e, crate::smtp::wire::CommandError::Syntax(_)) {
                            self.event(SessionEvent::Rejected(RejectReason::Syntax));
                        }
                        self.junk_command(Action::Reply(e.reply()))
                    }
                }
            }
        }
    }

    /// An over-long input line (`500 5.5.6`). A SASL exchange in progress is
    /// abandoned so the next line is read as a command again.
    pub fn on_line_too_long(&mut self) -> Action {
        if matches!(
            self.state,
            State::AuthPlain | State::AuthLoginUser | State::AuthLoginPass { .. }
        ) {
            self.state = State::Command;
        }
        self.event(SessionEvent::Limit(LimitHit::LineLength));
        self.junk_command(Action::Reply(Reply::line_too_long()))
    }

    fn on_request(&mut self, req: Request<String>) -> Action {
        if self.bdat_in_progress()
            && !matches!(
                req,
                Request::Bdat { .. } | Request::Rset | Request::Quit | Request::Noop { .. }
            )
        {
            // RFC 3030 §2: only further BDAT (or RSET/QUIT) may follow a non-LAST chunk.
            return Action::Reply(Reply::bad_sequence(
                "BDAT transfer in progress; send BDAT, RSET or QUIT",
            ));
        }
        match req {
            Request::Ehlo { host } => self.hello(host, true),
            Request::Helo { host } => self.hello(host, false),
            Request::StartTls => self.starttls(),
            Request::Auth {
                mechanism,
                initial_response,
            } => self.auth(mechanism, initial_response),
            Request::Mail { from } => self.mail(from),
            Request::Rcpt { to } => self.rcpt(to),
            Request::Data => self.data(),
            Request::Bdat {
                chunk_size,
                is_last,
            } => self.bdat(chunk_size, is_last),
            Request::Rset => {
                self.reset_transaction();
                Action::Reply(Reply::ok())
            }
            Request::Noop { .. } => Action::Reply(Reply::ok()),
            Request::Vrfy { .. } => Action::Reply(Reply::vrfy()),
            Request::Help { .. } => Action::Reply(Reply::help()),
            Request::Quit => Action::Close(Reply::closing(&self.cfg.hostname)),
            Request::Lhlo { .. }
            | Request::Expn { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. } => Action::Reply(Reply::not_implemented()),
        }
    }

    fn reset_transaction(&mut self) {
        self.tx = None;
        if self.bdat_in_progress() {
            self.state = State::Command;
        }
    }

    /// RFC 5321 §4.1.4: EHLO/HELO also resets any transaction.
    fn hello(&mut self, host: String, esmtp: bool) -> Action {
        self.reset_transaction();
        self.helo = Some(host);
        self.esmtp = esmtp;
        if !esmtp {
            return Action::Reply(Reply::new(250, None, self.cfg.hostname.clone()));
        }
        let mut lines = vec![
            self.cfg.hostname.clone(),
            "PIPELINING".to_string(),
            format!("SIZE {}", self.cfg.max_message_size),
            "8BITMIME".into(),
            "SMTPUTF8".into(),
            "ENHANCEDSTATUSCODES".into(),
            "CHUNKING".into(),
            "DSN".into(),
        ];
        if self.tls.is_none() && self.cfg.starttls {
            lines.push("STARTTLS".into());
        }
        // RFC 4954 §4: AUTH only inside TLS, and only until it succeeded.
        if self.tls.is_some() && self.cfg.auth_available && self.auth_user.is_none() {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        lines.push("HELP".into());
        Action::Reply(Reply::new(250, None, lines.join("\n")))
    }

    fn starttls(&mut self) -> Action {
        if self.tls.is_some() {
            return Action::Reply(Reply::bad_sequence("TLS already active"));
        }
        if !self.cfg.starttls {
            return Action::Reply(Reply::not_implemented());
        }
        Action::StartTls(Reply::ready_for_tls())
    }

    /// RFC 3207 §4.2: after the handshake the session starts over; nothing
    /// learned in plaintext (HELO, AUTH, transaction) survives.
    pub fn tls_established(&mut self, info: TlsInfo) {
        self.state = State::Command;
        self.helo = None;
        self.esmtp = false;
        self.auth_user = None;
        self.relay_account = false;
        self.tx = None;
        self.tls = Some(info);
    }

    fn mail(&mut self, from: MailFrom<String>) -> Action {
        if self.helo.is_none() {
            return Action::Reply(Reply::bad_sequence("Send EHLO/HELO first"));
        }
        if self.tx.is_some() {
            return Action::Reply(Reply::bad_sequence("Nested MAIL command"));
        }
        // Never an open relay: `auth.trusted_networks` or authenticated, nothing else.
        if !self.cfg.trusted && self.auth_user.is_none() {
            return self.reject(RejectReason::AuthRequired, Reply::auth_required());
        }
        if let Some(param) = params::unsupported_mail_param(&from) {
            return Action::Reply(Reply::param_not_supported(param));
        }
        // RFC 5321 §4.1.1.11: after HELO no service extension was negotiated.
        if !self.esmtp && (from.flags != 0 || from.size != 0 || from.env_id.is_some()) {
            return Action::Reply(Reply::param_not_supported("(extensions need EHLO)"));
        }
        if from.size as u64 > self.cfg.max_message_size {
            return self.reject(RejectReason::TooLarge, Reply::message_too_large());
        }
        // A full or failing queue volume: refuse before the client sends the message.
        if let Some(reply) = self.cfg.limits.storage.as_ref().and_then(|g| g.0.refusal()) {
            return self.reject(RejectReason::Storage, reply);
        }
        let smtputf8 = from.flags & smtp_proto::MAIL_SMTPUTF8 != 0;
        if !smtputf8 && !from.address.is_ascii() {
            return Action::Reply(Reply::non_ascii_needs_smtputf8());
        }
        let arrival = match self.arrival.take() {
            None => None,
            // Only another relay may say when a message arrived.
            Some(_) if !self.may_hand_over() => {
                return Action::Reply(Reply::param_not_supported(params::ARRIVAL_PARAM))
            }
            Some(Arrival::Malformed) => {
                return Action::Reply(Reply::syntax("X-DANERELAY-ARRIVAL needs Unix seconds"))
            }
            Some(Arrival::At(secs)) => Some(secs),
        };
        let handoff = self.relay_account || arrival.is_some();
        if let Some(user) = self.auth_user.as_ref().filter(|_| !self.relay_account) {
            if !sender_allowed(self.cfg.sender_policy, user, &from.address) {
                let reply = Reply::sender_not_owned(&from.address);
                return self.reject(RejectReason::SenderPolicy, reply);
            }
            // Checked last, so only transactions that would start count.
            let allowed = match &self.cfg.limits.user_rate {
                Some(rate) => rate.allow(user),
                None => true,
            };
            if !allowed {
                self.event(SessionEvent::Limit(LimitHit::UserMessageRate));
                return self.reject(RejectReason::RateLimit, Reply::user_rate_limited());
            }
        }
        let ret = queue_edge::ret_from_mail(from.flags);
        self.tx = Some(Transaction {
            sender: from.address,
            body_8bit: from.flags & smtp_proto::MAIL_BODY_8BITMIME != 0,
            smtputf8,
            ret,
            envid: from.env_id,
            recipients: Vec::new(),
            handoff,
            arrival,
        });
        Action::Reply(Reply::ok_sender())
    }

    /// A relay account, or a trusted client that did not log in as someone
    /// else: may hand mail on with its arrival time.
    fn may_hand_over(&self) -> bool {
        self.relay_account || (self.cfg.trusted && self.auth_user.is_none())
    }

    /// After a successful `auth_result`: the account is marked `relay = true`.
    pub fn set_relay_account(&mut self, relay: bool) {
        self.relay_account = relay && self.auth_user.is_some();
    }

    fn rcpt(&mut self, to: RcptTo<String>) -> Action {
        let max = self.cfg.max_recipients;
        let Some(tx) = self.tx.as_ref() else {
            return Action::Reply(Reply::bad_sequence("Need MAIL before RCPT"));
        };
        if tx.recipients.len() >= max {
            self.event(SessionEvent::Limit(LimitHit::RecipientsPerMessage));
            return self.reject(
                RejectReason::TooManyRecipients,
                Reply::too_many_recipients(),
            );
        }
        if self.session_recipients >= self.cfg.limits.max_recipients_per_session {
            self.event(SessionEvent::Limit(LimitHit::RecipientsPerSession));
            return self.reject(
                RejectReason::TooManyRecipients,
                Reply::too_many_session_recipients(),
            );
        }
        let Some(tx) = self.tx.as_mut() else {
            return Action::Reply(Reply::bad_sequence("Need MAIL before RCPT"));
        };
        if to.address.is_empty() {
            return Action::Reply(Reply::syntax("Recipient address must be local@domain"));
        }
        if !tx.smtputf8 && !to.address.is_ascii() {
            return Action::Reply(Reply::non_ascii_needs_smtputf8());
        }
        let notify = queue_edge::notify_from_rcpt(to.flags);
        tx.recipients.push(Recipient {
            address: to.address,
            orcpt: to.orcpt,
            notify,
        });
        self.session_recipients += 1;
        Action::Reply(Reply::ok_recipient())
    }

    fn data(&mut self) -> Action {
        match &self.tx {
            None => Action::Reply(Reply::bad_sequence("Need MAIL command")),
            Some(tx) if tx.recipients.is_empty() => {
                Action::Reply(Reply::bad_sequence("Need RCPT command"))
            }
            Some(_) => {
                self.state = State::Data;
                Action::ReadData(Reply::start_data())
            }
        }
    }

    fn bdat(&mut self, size: usize, last: bool) -> Action {
        let reject = match &self.tx {
            None => Some(Reply::bad_sequence("Need MAIL command")),
            Some(tx) if tx.recipients.is_empty() => Some(Reply::bad_sequence("Need RCPT command")),
            Some(_) => None,
        };
        if reject.is_none() && !self.bdat_in_progress() {
            self.state = State::Bdat { octets: 0 };
        }
        Action::ReadChunk { size, last, reject }
    }

    /// A non-LAST BDAT chunk was taken in.
    pub fn chunk_done(&mut self, octets: usize) -> Reply {
        let total = match self.state {
            State::Bdat { octets: so_far } => so_far.saturating_add(octets),
            _ => octets,
        };
        self.state = State::Bdat { octets: total };
        Reply::chunk_received(octets)
    }

    /// The message (DATA or BDAT LAST) ended; the transaction is over whatever
    /// the outcome, as RFC 5321 §4.1.1.4 and RFC 3030 §2 require.
    pub fn message_done(&mut self, outcome: MessageOutcome) -> Reply {
        self.tx = None;
        self.state = State::Command;
        let (reason, reply) = match outcome {
            MessageOutcome::Queued(id) => {
                self.junk = 0;
                return Reply::queued(&id);
            }
            MessageOutcome::TooLarge => (RejectReason::TooLarge, Reply::message_too_large()),
            MessageOutcome::BareLineEnding => {
                (RejectReason::BareLineEnding, Reply::bare_line_ending())
            }
            MessageOutcome::StorageFailed => (RejectReason::Storage, Reply::storage_failure()),
            MessageOutcome::Unencodable(why) => (RejectReason::Content, Reply::unencodable(why)),
            MessageOutcome::HeaderTooLarge => {
                self.event(SessionEvent::Limit(LimitHit::HeaderSize));
                (RejectReason::HeaderLimit, Reply::header_too_large())
            }
            MessageOutcome::TooManyHeaderFields => {
                self.event(SessionEvent::Limit(LimitHit::HeaderFields));
                (RejectReason::HeaderLimit, Reply::too_many_header_fields())
            }
        };
        self.event(SessionEvent::Rejected(reason));
        reply
    }
}

#[path = "session_auth.rs"]
mod auth;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "session_tests.rs"]
mod tests;
