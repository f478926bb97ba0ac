//! The mail transaction of a [`Session`]: MAIL (RFC 5321 §4.1.1.2, sender
//! policy per RFC 6409 §6.1), RCPT (relay policy, recipient limits), DATA and
//! BDAT (RFC 3030), and the reply once the I/O layer has stored the message.

use smtp_proto::{MailFrom, RcptTo};

use super::*;

impl Session {
    pub(super) fn mail(&mut self, from: MailFrom<String>) -> Action {
        if self.helo.is_none() {
            return Action::Reply(Reply::bad_sequence("Send EHLO/HELO first"));
        }
        if self.tx.is_some() {
            return Action::Reply(Reply::bad_sequence("Nested MAIL command"));
        }
        // Never an open relay: trusted network or authenticated, nothing else (SPEC).
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
        let smtputf8 = from.flags & smtp_proto::MAIL_SMTPUTF8 != 0;
        if !smtputf8 && !from.address.is_ascii() {
            return Action::Reply(Reply::non_ascii_needs_smtputf8());
        }
        if let Some(user) = &self.auth_user {
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
        let ret = params::ret(from.flags);
        self.tx = Some(Transaction {
            sender: from.address,
            body_8bit: from.flags & smtp_proto::MAIL_BODY_8BITMIME != 0,
            smtputf8,
            ret,
            envid: from.env_id,
            recipients: Vec::new(),
        });
        Action::Reply(Reply::ok_sender())
    }

    pub(super) fn rcpt(&mut self, to: RcptTo<String>) -> Action {
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
        let notify = params::notify(to.flags);
        tx.recipients.push(Recipient {
            address: to.address,
            orcpt: to.orcpt,
            notify,
        });
        self.session_recipients += 1;
        Action::Reply(Reply::ok_recipient())
    }

    pub(super) fn data(&mut self) -> Action {
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

    pub(super) fn bdat(&mut self, size: usize, last: bool) -> Action {
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
