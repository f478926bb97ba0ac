//! Recording the outcome of a delivery attempt: per-recipient states, then in the same sled
//! transaction either removal of the finished message, expiry of what is left at `max_age`,
//! or rescheduling per the retry schedule — and the lease released.

use std::time::SystemTime;

use sled::transaction::Transactional;

use crate::body::BodyReader;
use crate::delivery::{Leased, EXPIRED_REPLY};
use crate::error::QueueError;
use crate::model::{
    BodyLoc, ExpiredRecipient, MessageRecord, MessageState, Outcome, RecipientRecord,
    RecipientState,
};
use crate::schedule::{due_key, later, next_attempt, rcpt_key, retry_delay, to_ms};
use crate::store::{abort, decode, encode, tx_err, Queue};

/// What [`Queue::complete`] did.
#[derive(Debug)]
pub struct Completion {
    /// Every recipient is done; the message left the queue.
    pub finished: bool,
    /// Recipients that were still open at `max_age` and are now bounced: send a 4.4.7 DSN.
    pub expired: Vec<ExpiredRecipient>,
    /// When the remaining recipients are next due (`None` when finished or held).
    pub next_attempt: Option<SystemTime>,
    /// The body of a finished message, still readable after its removal (for a DSN with
    /// RET=FULL or the original headers).
    pub body: Option<BodyReader>,
}

struct Done {
    before: MessageState,
    rec: MessageRecord,
    finished: bool,
    next: Option<SystemTime>,
    expired: Vec<ExpiredRecipient>,
    body: Option<sled::IVec>,
}

impl Queue {
    /// Records the outcome of an attempt for the given recipients (by `LeasedRecipient::index`)
    /// and releases the lease, in one atomic, durable step. Report every leased recipient:
    /// those left open are retried per `QueueOptions::retry`, or, when `now` is at or past
    /// `expires_at`, bounced as expired and returned in `Completion::expired`. When nothing is
    /// left open the message leaves the queue.
    pub fn complete(
        &self,
        lease: &Leased,
        outcomes: &[(u32, Outcome)],
        now: SystemTime,
    ) -> Result<Completion, QueueError> {
        let inner = &self.inner;
        let id = lease.id;
        let jitter: f64 = rand::random_range(0.9..1.1);
        let res = (
            &inner.meta,
            &inner.rcpt,
            &inner.due,
            &inner.lease,
            &inner.body,
        )
            .transaction(|(meta, rcpt, due, leases, bodies)| {
                let Some(v) = meta.get(id.key())? else {
                    return abort(QueueError::NotFound { id });
                };
                let mut rec: MessageRecord = match decode("meta", &id.key(), &v) {
                    Ok(r) => r,
                    Err(e) => return abort(e),
                };
                if rec.lease.map(|l| l.token) != Some(lease.token) {
                    return abort(QueueError::LeaseLost { id });
                }
                let before = rec.state();
                let mut rcpts = Vec::with_capacity(rec.rcpts as usize);
                for i in 0..rec.rcpts {
                    let k = rcpt_key(id, i);
                    let r = match rcpt.get(k)? {
                        Some(v) => decode::<RecipientRecord>("rcpt", &k, &v).ok(),
                        None => None,
                    };
                    rcpts.push(r);
                }
                for (index, outcome) in outcomes {
                    let Some(slot) = rcpts.get_mut(*index as usize) else {
                        return abort(QueueError::NoSuchRecipient { id, index: *index });
                    };
                    if let Some(r) = slot.as_mut().filter(|r| r.state.is_open()) {
                        apply(r, outcome, now);
                    }
                }
                let expires_at = later(rec.env.received_at, inner.opts.max_age);
                let open = rcpts.iter().flatten().any(|r| r.state.is_open());
                let mut expired = Vec::new();
                if open && now >= expires_at {
                    for (i, r) in (0u32..).zip(rcpts.iter_mut()) {
                        if let Some(r) = r.as_mut().filter(|r| r.state.is_open()) {
                            expired.push(ExpiredRecipient {
                                index: i,
                                address: r.address.clone(),
                                orcpt: r.orcpt.clone(),
                                notify: r.notify,
                                last_reply: r.last_reply.clone(),
                            });
                            r.state = RecipientState::Bounced;
                            r.last_reply = Some(EXPIRED_REPLY.to_string());
                        }
                    }
                }
                let finished = !open || !expired.is_empty();
                if rec.scheduled() {
                    due.remove(&due_key(rec.next_ms, id))?;
                }
                leases.remove(&id.key())?;
                if finished {
                    meta.remove(&id.key())?;
                    for i in 0..rec.rcpts {
                        rcpt.remove(&rcpt_key(id, i))?;
                    }
                    let body = bodies.remove(&id.key())?;
                    return Ok(Done {
                        before,
                        rec,
                        finished: true,
                        next: None,
                        expired,
                        body,
                    });
                }
                for (i, r) in (0u32..).zip(&rcpts) {
                    if let Some(r) = r {
                        match encode("recipient", r) {
                            Ok(b) => rcpt.insert(&rcpt_key(id, i), b)?,
                            Err(e) => return abort(e),
                        };
                    }
                }
                rec.deferrals = rec.deferrals.saturating_add(1);
                let delay = retry_delay(&inner.opts.retry, rec.deferrals, jitter);
                let next = next_attempt(now, delay, expires_at);
                rec.lease = None;
                rec.next_ms = to_ms(next);
                if rec.scheduled() {
                    due.insert(&due_key(rec.next_ms, id), &[])?;
                }
                match encode("message", &rec) {
                    Ok(b) => meta.insert(&id.key(), b)?,
                    Err(e) => return abort(e),
                };
                let next = rec.scheduled().then_some(next);
                Ok(Done {
                    before,
                    rec,
                    finished: false,
                    next,
                    expired,
                    body: None,
                })
            });
        let done = match res.map_err(tx_err("complete")) {
            Ok(d) => d,
            Err(e) => {
                inner.report_corrupt(&e);
                return Err(e);
            }
        };
        let Done {
            before,
            rec,
            finished,
            next,
            expired,
            body,
        } = done;
        if finished {
            inner.count(Some(before), None);
        } else {
            inner.count(Some(before), Some(rec.state()));
        }
        // Opened before the body's storage is released, so a DSN can still read it.
        let body = match (finished, rec.body, body) {
            (false, _, _) => None,
            (true, BodyLoc::Inline, Some(b)) => Some(BodyReader::inline(b, rec.size, rec.crc32)),
            (true, BodyLoc::Inline, None) => None,
            (true, _, _) => inner.open_body(id, &rec).ok(),
        };
        inner.commit.wait_durable()?;
        if finished {
            // Only now that the removal is durable may the body's storage go.
            inner.release_body(id, rec.body);
        }
        Ok(Completion {
            finished,
            expired,
            next_attempt: next,
            body,
        })
    }
}

/// One recipient's outcome onto its record.
fn apply(r: &mut RecipientRecord, outcome: &Outcome, now: SystemTime) {
    let (state, reply) = match outcome {
        Outcome::Delivered { reply } => (RecipientState::Delivered, reply),
        Outcome::Deferred { reply } => (RecipientState::Deferred, reply),
        Outcome::Bounced { reply } => (RecipientState::Bounced, reply),
    };
    r.state = state;
    r.attempts = r.attempts.saturating_add(1);
    r.last_reply = Some(reply.clone());
    r.last_attempt = Some(now);
}
