//! One message to N recipients over an established session, with a final
//! result per recipient. Call it again on the same [`Client`] for the next
//! message to the same destination (connection reuse); an unfinished
//! transaction is RSET first.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use super::command::Envelope;
use super::downgrade::Downgrade;
use super::{Client, ClientError, Phase, Reply};

/// The final word for one recipient.
#[derive(Debug, Clone)]
pub enum RcptResult {
    /// The peer's final reply for this recipient: the RCPT reply when it was
    /// refused, the MAIL reply when MAIL was refused, else the reply to DATA
    /// or to the end of the data. 2xx = delivered.
    Reply(Reply),
    /// The session failed (or the message could not be offered) before this
    /// recipient got a final reply.
    Error(Arc<ClientError>),
}

impl RcptResult {
    /// True when the peer took responsibility for the message (RFC 5321 §4.2.5).
    pub fn is_delivered(&self) -> bool {
        matches!(self, RcptResult::Reply(r) if r.is_positive())
    }
}

/// One result per recipient, in the order of `Envelope::recipients`.
#[derive(Debug, Clone)]
pub struct TransactionResult {
    pub recipients: Vec<RcptResult>,
    /// The phase each recipient's result came from (RCPT for a refusing
    /// RCPT reply, else MAIL or the end of data): traffic shaping tells a
    /// destination-wide "slow down" from a per-mailbox one by it.
    pub phases: Vec<Phase>,
}

/// Recipients with a refusing RCPT reply keep it; every other one gets
/// `rest`, which came from `phase`.
fn settle(n: usize, rcpt_replies: Vec<Reply>, rest: RcptResult, phase: Phase) -> TransactionResult {
    let mut replies = rcpt_replies.into_iter();
    let (recipients, phases) = (0..n)
        .map(|_| match replies.next() {
            Some(r) if !r.is_positive() => (RcptResult::Reply(r), Phase::Rcpt),
            _ => (rest.clone(), phase),
        })
        .unzip();
    TransactionResult { recipients, phases }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// Delivers one message: MAIL, RCPT (pipelined with MAIL when offered),
    /// then BDAT when the peer offers CHUNKING, else DATA. `body` is the raw
    /// message (CRLF lines, not dot-stuffed), streamed.
    pub async fn transaction<R: AsyncRead + Unpin>(
        &mut self,
        env: &Envelope,
        body: R,
    ) -> TransactionResult {
        let n = env.recipients.len();
        let mut rcpt_replies = Vec::with_capacity(n);
        if n == 0 {
            return settle(
                0,
                rcpt_replies,
                RcptResult::Error(Arc::new(ClientError::Unusable)),
                Phase::Mail,
            );
        }
        let started = if self.caps.pipelining() {
            self.envelope_pipelined(env, &mut rcpt_replies).await
        } else {
            self.envelope_stepwise(env, &mut rcpt_replies).await
        };
        match started {
            Ok(mail) if !mail.is_positive() => {
                return settle(n, Vec::new(), RcptResult::Reply(mail), Phase::Mail)
            }
            Ok(_) => {}
            Err(ClientError::Rejected {
                phase: Phase::Mail,
                reply,
            }) if !reply.is_closing() => {
                return settle(n, Vec::new(), RcptResult::Reply(reply), Phase::Mail);
            }
            // An error carries its own phase.
            Err(e) => return settle(n, rcpt_replies, RcptResult::Error(Arc::new(e)), Phase::Mail),
        }
        if !rcpt_replies.iter().any(Reply::is_positive) {
            // Nobody accepted: no DATA; the next MAIL is preceded by RSET.
            let unused = RcptResult::Error(Arc::new(ClientError::Unusable));
            return settle(n, rcpt_replies, unused, Phase::Rcpt);
        }
        // RFC 6152 §3: no 8-bit octets to a peer without 8BITMIME.
        let downgrade = env.body_8bit && !self.caps.eight_bit_mime() && !env.relay_signed;
        let phase = if self.caps.chunking() {
            Phase::Bdat
        } else {
            Phase::FinalDot
        };
        let done = match (self.caps.chunking(), downgrade) {
            (true, false) => self.bdat(body).await,
            (false, false) => self.data(body).await,
            (true, true) => self.bdat(Downgrade::new(body)).await,
            (false, true) => self.data(Downgrade::new(body)).await,
        };
        let for_accepted = match done {
            Ok(reply) => RcptResult::Reply(reply),
            Err(e) => RcptResult::Error(Arc::new(e)),
        };
        settle(n, rcpt_replies, for_accepted, phase)
    }

    /// MAIL, then the RCPTs (themselves pipelined when offered).
    async fn envelope_stepwise(
        &mut self,
        env: &Envelope,
        replies: &mut Vec<Reply>,
    ) -> Result<Reply, ClientError> {
        let mail = self.mail_from(env).await?;
        self.rcpts_into(&env.recipients, replies).await?;
        Ok(mail)
    }
}
