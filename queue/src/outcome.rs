//! What an outcome does to a stored message, in one sled transaction: per-recipient states,
//! then removal of the finished message, expiry of what is left at `max_age`, or
//! rescheduling per the retry schedule — and the lease released. Used by `complete`, and by
//! `heal` for an outcome kept in memory while storage was failing.

use std::time::SystemTime;

use sled::transaction::{Transactional, TransactionalTree};

use crate::codec::{decode, encode};
use crate::error::QueueError;
use crate::id::QueueId;
use crate::model::{
    BodyLoc, Disposition, ExpiredRecipient, MessageRecord, MessageState, RecipientRecord,
    RecipientState,
};
use crate::schedule::{later, next_attempt, rcpt_key, retry_delay, to_ms};
use crate::store::{Store, Trees};
use crate::tx::{abort, tx_err, Indexed, MessageTx, TxResult};

/// The reply recorded for recipients that reached `max_age` (RFC 3463 X.4.7, "delivery time
/// expired").
pub const EXPIRED_REPLY: &str = "4.4.7 message expired: delivery time limit reached";

/// What the transaction did, for the counters, the caller and the body's release.
pub(crate) struct Done {
    pub(crate) before: MessageState,
    pub(crate) rec: MessageRecord,
    pub(crate) finished: bool,
    pub(crate) next: Option<SystemTime>,
    pub(crate) expired: Vec<ExpiredRecipient>,
    pub(crate) body: Option<sled::IVec>,
}

impl Done {
    /// Where the body of a finished message was (released once the removal is durable).
    pub(crate) fn body_loc(&self) -> BodyLoc {
        self.rec.body
    }
}

/// One outcome as [`Queue::complete`] hands it to the group committer: applied with the
/// others of its round in one transaction and answered (through `reply`) once that round is
/// durable, or failed.
pub(crate) struct OutcomeReq {
    pub id: QueueId,
    pub token: u64,
    pub outcomes: Vec<(u32, Disposition)>,
    pub now: SystemTime,
    pub reply: std::sync::mpsc::SyncSender<Result<Applied, QueueError>>,
}

/// An outcome stored: what the transaction did, and whether the recovery scan had counted
/// the message (for the release of its body-log reference, see `scan`).
pub(crate) struct Applied {
    pub done: Done,
    pub counted: bool,
}

/// The trees an outcome's transaction writes.
type OutcomeTrees<'a> = (
    &'a TransactionalTree,
    &'a TransactionalTree,
    &'a TransactionalTree,
    &'a TransactionalTree,
    &'a TransactionalTree,
);

/// The transaction of [`Queue::complete`] on its own (`heal` for a kept outcome, and a round
/// whose batch failed): applies the outcomes under the lease `token`, then removes, expires
/// or reschedules the message.
pub(crate) fn apply_outcomes(
    store: &Store,
    t: &Trees,
    id: QueueId,
    token: u64,
    outcomes: &[(u32, Disposition)],
    now: SystemTime,
) -> Result<Done, QueueError> {
    let jitter: f64 = rand::random_range(0.9..1.1);
    let trees = (&t.meta, &t.rcpt, &t.due, &t.lease, &t.body);
    let res = trees.transaction(|(meta, rcpt, due, leases, bodies)| {
        apply_in(
            (meta, rcpt, due, leases, bodies),
            store,
            id,
            token,
            outcomes,
            now,
            jitter,
        )
    });
    res.map_err(tx_err("complete"))
        .inspect_err(|e| store.report_corrupt(e))
}

/// A round's outcomes (the group committer): one transaction for all of them, since sled's
/// cost is per transaction. If one fails on its own (lease lost, message gone, unknown
/// recipient, corrupt record) the whole transaction is dropped and each is applied in its own,
/// so that it fails alone. Counters are updated under the scan gate. `Err` only when storage
/// failed (the round fails).
pub(crate) fn apply_batch(
    store: &Store,
    t: &Trees,
    reqs: &[OutcomeReq],
) -> Result<Vec<Result<Applied, QueueError>>, QueueError> {
    if reqs.is_empty() {
        return Ok(Vec::new());
    }
    let jitter: Vec<f64> = reqs.iter().map(|_| rand::random_range(0.9..1.1)).collect();
    let gate = store.scan_gate();
    let trees = (&t.meta, &t.rcpt, &t.due, &t.lease, &t.body);
    let batch = trees.transaction(|(meta, rcpt, due, leases, bodies)| {
        let tt = (meta, rcpt, due, leases, bodies);
        reqs.iter()
            .zip(&jitter)
            .map(|(r, j)| apply_in(tt, store, r.id, r.token, &r.outcomes, r.now, *j))
            .collect::<TxResult<Vec<Done>>>()
    });
    let dones: Vec<Result<Done, QueueError>> = match batch.map_err(tx_err("complete")) {
        Ok(dones) => dones.into_iter().map(Ok).collect(),
        Err(e) if e.is_storage() => return Err(e),
        Err(_) => {
            let mut out = Vec::with_capacity(reqs.len());
            for r in reqs {
                match apply_outcomes(store, t, r.id, r.token, &r.outcomes, r.now) {
                    Err(e) if e.is_storage() => return Err(e),
                    other => out.push(other),
                }
            }
            out
        }
    };
    Ok(reqs
        .iter()
        .zip(dones)
        .map(|(r, done)| {
            let done = done?;
            let after = (!done.finished).then(|| done.rec.state());
            store.count_seen(&gate, r.id, Some(done.before), after);
            let counted = gate.seen(r.id);
            Ok(Applied { done, counted })
        })
        .collect())
}

/// One outcome inside a transaction (see [`apply_outcomes`]).
fn apply_in(
    (meta, rcpt, due, leases, bodies): OutcomeTrees<'_>,
    store: &Store,
    id: QueueId,
    token: u64,
    outcomes: &[(u32, Disposition)],
    now: SystemTime,
    jitter: f64,
) -> TxResult<Done> {
    let t = MessageTx {
        meta,
        due,
        lease: leases,
    };
    let mut rec = t.load(id)?;
    if rec.lease.map(|l| l.token) != Some(token) {
        return abort(QueueError::LeaseLost { id });
    }
    let before = Indexed::of(&rec);
    let state = rec.state();
    let mut rcpts = read_recipients(rcpt, id, rec.rcpts)?;
    apply_all(&mut rcpts, id, outcomes, now)?;
    let expires_at = later(rec.env.received_at, store.opts.max_age);
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
    let delay = retry_delay(&store.opts.retry, rec.deferrals, jitter);
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
    outcomes: &[(u32, Disposition)],
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
fn apply(r: &mut RecipientRecord, outcome: &Disposition, now: SystemTime) {
    let (state, reply) = match outcome {
        Disposition::Delivered { reply } => (RecipientState::Delivered, reply),
        Disposition::Deferred { reply } => (RecipientState::Deferred, reply),
        Disposition::Bounced { reply } => (RecipientState::Bounced, reply),
    };
    r.state = state;
    r.attempts = r.attempts.saturating_add(1);
    r.last_reply = Some(reply.clone());
    r.last_attempt = Some(now);
}
