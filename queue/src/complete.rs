//! Recording the outcome of a delivery attempt: per-recipient states, then in the same sled
//! transaction either removal of the finished message, expiry of what is left at `max_age`,
//! or rescheduling per the retry schedule — and the lease released.

use std::time::SystemTime;

use sled::transaction::{Transactional, TransactionalTree};

use crate::body::BodyReader;
use crate::codec::{decode, encode};
use crate::error::QueueError;
use crate::id::QueueId;
use crate::lease::{Leased, EXPIRED_REPLY};
use crate::model::{
    BodyLoc, ExpiredRecipient, MessageRecord, MessageState, Outcome, RecipientRecord,
    RecipientState,
};
use crate::queue::Queue;
use crate::schedule::{later, next_attempt, rcpt_key, retry_delay, to_ms};
use crate::tx::{abort, tx_err, Indexed, MessageTx, TxResult};

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
        let store = &self.store;
        let id = lease.id;
        let jitter: f64 = rand::random_range(0.9..1.1);
        let trees = (
            &store.meta,
            &store.rcpt,
            &store.due,
            &store.lease,
            &store.body,
        );
        let res = trees.transaction(|(meta, rcpt, due, leases, bodies)| {
            let t = MessageTx {
                meta,
                due,
                lease: leases,
            };
            let mut rec = t.load(id)?;
            if rec.lease.map(|l| l.token) != Some(lease.token) {
                return abort(QueueError::LeaseLost { id });
            }
            let before = Indexed::of(&rec);
            let state = rec.state();
            let mut rcpts = read_recipients(rcpt, id, rec.rcpts)?;
            apply_all(&mut rcpts, id, outcomes, now)?;
            let expires_at = later(rec.env.received_at, self.store.opts.max_age);
            let open = rcpts.iter().flatten().any(|r| r.state.is_open());
            let expired = if open && now >= expires_at {
                expire(&mut rcpts)
            } else {
                Vec::new()
            };
            let finished = !open || !expired.is_empty();
            if finished {
                t.remove(id, before)?;
                for i in 0..rec.rcpts {
                    rcpt.remove(&rcpt_key(id, i))?;
                }
                let (body, next, before) = (bodies.remove(&id.key())?, None, state);
                return Ok(Done {
                    before,
                    rec,
                    finished,
                    next,
                    expired,
                    body,
                });
            }
            write_recipients(rcpt, id, &rcpts)?;
            rec.deferrals = rec.deferrals.saturating_add(1);
            let delay = retry_delay(&self.store.opts.retry, rec.deferrals, jitter);
            let next = next_attempt(now, delay, expires_at);
            rec.lease = None;
            rec.next_ms = to_ms(next);
            t.put(id, Some(before), &rec)?;
            let next = rec.scheduled().then_some(next);
            let (body, before) = (None, state);
            Ok(Done {
                before,
                rec,
                finished,
                next,
                expired,
                body,
            })
        });
        let done = res
            .map_err(tx_err("complete"))
            .inspect_err(|e| store.report_corrupt(e))?;
        self.completed(id, done)
    }

    /// After the transaction: counters, the finished message's body, durability, storage.
    fn completed(&self, id: QueueId, done: Done) -> Result<Completion, QueueError> {
        let store = &self.store;
        let Done {
            before,
            rec,
            finished,
            next,
            expired,
            body,
        } = done;
        if finished {
            store.count(Some(before), None);
        } else {
            store.count(Some(before), Some(rec.state()));
        }
        // Opened before the body's storage is released, so a DSN can still read it.
        let body = match (finished, rec.body, body) {
            (false, _, _) => None,
            (true, BodyLoc::Inline, Some(b)) => Some(BodyReader::inline(b, rec.size, rec.crc32)),
            (true, BodyLoc::Inline, None) => None,
            (true, _, _) => store.open_body(id, &rec).ok(),
        };
        self.commit.wait_durable()?;
        if finished {
            // Only now that the removal is durable may the body's storage go.
            store.release_body(id, rec.body);
        }
        Ok(Completion {
            finished,
            expired,
            next_attempt: next,
            body,
        })
    }
}

/// A message's recipient records by index; an unreadable or missing one is `None`.
fn read_recipients(
    rcpt: &TransactionalTree,
    id: QueueId,
    count: u32,
) -> TxResult<Vec<Option<RecipientRecord>>> {
    let mut rcpts = Vec::with_capacity(count as usize);
    for i in 0..count {
        let k = rcpt_key(id, i);
        let r = match rcpt.get(k)? {
            Some(v) => decode::<RecipientRecord>("rcpt", &k, &v).ok(),
            None => None,
        };
        rcpts.push(r);
    }
    Ok(rcpts)
}

/// Puts each outcome onto its (still open) recipient.
fn apply_all(
    rcpts: &mut [Option<RecipientRecord>],
    id: QueueId,
    outcomes: &[(u32, Outcome)],
    now: SystemTime,
) -> TxResult<()> {
    for (index, outcome) in outcomes {
        let Some(slot) = rcpts.get_mut(*index as usize) else {
            return abort(QueueError::NoSuchRecipient { id, index: *index });
        };
        if let Some(r) = slot.as_mut().filter(|r| r.state.is_open()) {
            apply(r, outcome, now);
        }
    }
    Ok(())
}

fn write_recipients(
    rcpt: &TransactionalTree,
    id: QueueId,
    rcpts: &[Option<RecipientRecord>],
) -> TxResult<()> {
    for (i, r) in (0u32..).zip(rcpts) {
        if let Some(r) = r {
            let bytes = encode("recipient", r).or_else(abort)?;
            rcpt.insert(&rcpt_key(id, i), bytes)?;
        }
    }
    Ok(())
}

/// Bounces every recipient still open at `max_age` and returns them (RFC 3463 4.4.7).
fn expire(rcpts: &mut [Option<RecipientRecord>]) -> Vec<ExpiredRecipient> {
    let mut expired = Vec::new();
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
    expired
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
