//! New messages on their way into the queue, as the group committer handles them.
//!
//! A writer (blocking [`crate::MessageWriter::commit`] or non-blocking [`crate::Queue::submit`])
//! prepares a [`NewMessage`] — envelope and recipient records encoded, body in memory or already
//! synced to its spool file — and hands it to the committer. One committer round then, for every
//! message handed in since the last round:
//!
//! 1. appends the in-memory bodies to the body log ([`place`]),
//! 2. `fdatasync`s the body log (a body is durable before any record can point at it),
//! 3. inserts the messages' records into sled, in one transaction ([`insert_all`]),
//! 4. flushes sled and `fdatasync`s its files,
//!
//! and only then reports each message queued ([`finish`]). So a message costs one round, shared
//! with every message (and every other durability request) that arrived meanwhile, and no thread
//! of its own: the submission server hands small bodies over whole from its async task.

use std::time::SystemTime;

use sled::transaction::Transactional;

use crate::codec::encode;
use crate::error::QueueError;
use crate::id::QueueId;
use crate::lock::lock;
use crate::model::{
    BodyLoc, Envelope, MessageRecord, MessageState, RecipientRecord, RecipientSpec,
};
use crate::schedule::{rcpt_key, to_ms};
use crate::store::{QueueTuning, Store, Trees};
use crate::tx::{tx_err, Indexed, MessageTx};

/// The most recipients one message may have (the submission side caps far lower).
pub const MAX_RECIPIENTS: usize = 65_535;

/// Runs when a message is durably queued (or could not be); on the committer's thread, so it
/// must not block (send on a channel, wake a task).
pub(crate) type Done = Box<dyn FnOnce(Result<QueueId, QueueError>) + Send>;

/// Where a new message's body is before its round.
pub(crate) enum NewBody {
    /// In memory, for the body log.
    Log(Vec<u8>),
    /// In memory, for sled's `body` tree (`QueueTuning::small_bodies_in_sled`).
    Inline(Vec<u8>),
    /// Already written and synced to `spool/<ID>`.
    Spool,
}

impl NewBody {
    /// A whole body in memory, bound for where `tuning` keeps small bodies.
    pub(crate) fn in_memory(bytes: Vec<u8>, tuning: &QueueTuning) -> NewBody {
        if tuning.small_bodies_in_sled {
            NewBody::Inline(bytes)
        } else {
            NewBody::Log(bytes)
        }
    }
}

/// A message waiting for the committer's next round.
pub(crate) struct NewMessage {
    id: QueueId,
    body: NewBody,
    /// Complete but for `body`, which the round fills in.
    rec: MessageRecord,
    rcpt_rows: Vec<([u8; 12], Vec<u8>)>,
    done: Done,
}

impl NewMessage {
    /// Validates and encodes a new message; returns a constructor taking its `done`.
    pub(crate) fn prepare(
        id: QueueId,
        body: NewBody,
        size: u64,
        crc32: u32,
        env: Envelope,
        rcpts: Vec<RecipientSpec>,
    ) -> Result<impl FnOnce(Done) -> NewMessage, QueueError> {
        if rcpts.is_empty() {
            return Err(QueueError::NoRecipients);
        }
        if rcpts.len() > MAX_RECIPIENTS {
            return Err(QueueError::TooManyRecipients {
                count: rcpts.len(),
                max: MAX_RECIPIENTS,
            });
        }
        let rec = MessageRecord {
            env,
            // Set by the committer once the body has its place.
            body: BodyLoc::Spool,
            size,
            crc32,
            rcpts: u32::try_from(rcpts.len()).unwrap_or(u32::MAX),
            hold: false,
            deferrals: 0,
            next_ms: to_ms(SystemTime::now()),
            lease: None,
            delay_warned: false,
        };
        let mut rcpt_rows = Vec::with_capacity(rcpts.len());
        for (i, spec) in (0u32..).zip(rcpts) {
            rcpt_rows.push((
                rcpt_key(id, i),
                encode("recipient", &RecipientRecord::new(spec))?,
            ));
        }
        Ok(move |done| NewMessage {
            id,
            body,
            rec,
            rcpt_rows,
            done,
        })
    }

    /// Reports a message that never got a place.
    pub(crate) fn fail(self, e: QueueError) {
        (self.done)(Err(e));
    }
}

/// A message whose body has a place (step 1 done).
pub(crate) struct Placed {
    msg: NewMessage,
    loc: BodyLoc,
}

/// Step 1: gives the body its place (appending it to the body log if it goes there); a
/// message whose body cannot be placed is reported failed here.
pub(crate) fn place(store: &Store, mut msg: NewMessage) -> Option<Placed> {
    let loc = match &mut msg.body {
        NewBody::Log(bytes) => match store.bodylog.append(bytes) {
            Ok((seg, off)) => {
                // The bytes are in the log now; the record only needs their place.
                *bytes = Vec::new();
                BodyLoc::Log { seg, off }
            }
            Err(e) => {
                msg.fail(e);
                return None;
            }
        },
        NewBody::Inline(_) => BodyLoc::Inline,
        NewBody::Spool => BodyLoc::Spool,
    };
    Some(Placed { msg, loc })
}

/// Step 3a: encodes a placed message's envelope record, now that its body has a place.
pub(crate) fn encode_record(p: &mut Placed) -> Result<Vec<u8>, QueueError> {
    p.msg.rec.body = p.loc;
    encode("message", &p.msg.rec)
}

/// Step 3b: inserts the records of a round's messages in one sled transaction (not yet
/// durable). One transaction per round, not per message: sled's per-transaction cost
/// dominated the round otherwise. Fails as a whole — only a storage error can fail it.
pub(crate) fn insert_all(
    store: &Store,
    t: &Trees,
    batch: &[(Placed, Vec<u8>)],
) -> Result<(), QueueError> {
    if batch.is_empty() {
        return Ok(());
    }
    let trees = (&t.meta, &t.rcpt, &t.due, &t.lease, &t.body);
    trees
        .transaction(|(meta, rcpt, due, lease, bodies)| {
            let t = MessageTx { meta, due, lease };
            for (p, meta_bytes) in batch {
                let id = p.msg.id;
                t.put_encoded(id, None, &p.msg.rec, meta_bytes)?;
                for (k, v) in &p.msg.rcpt_rows {
                    rcpt.insert(k, v.as_slice())?;
                }
                if let NewBody::Inline(b) = &p.msg.body {
                    bodies.insert(&id.key(), b.as_slice())?;
                }
            }
            Ok(())
        })
        .map_err(tx_err("enqueue"))?;
    let n = i64::try_from(batch.len()).unwrap_or(i64::MAX);
    store.count_many(None, Some(MessageState::Pending), n);
    Ok(())
}

/// An inserted message whose round failed to sync: it was never acknowledged, so it must not
/// be delivered either. Its records are taken out of sled now (best effort: sled may be the
/// thing that failed) and listed for `heal`, which removes them from the reopened database
/// in case they reached the disk anyway.
pub(crate) fn unacked(store: &Store, t: &Trees, p: &Placed) {
    let id = p.msg.id;
    let mut rec = p.msg.rec.clone();
    rec.body = p.loc;
    lock(&store.health.unacked).push((id, rec.clone()));
    match remove_records(t, id, &rec) {
        Ok(true) => store.count(Some(MessageState::Pending), None),
        Ok(false) => {}
        Err(e) => {
            tracing::debug!(queue_id = %id, error = %e, "could not remove the records of an unacknowledged message yet")
        }
    }
}

/// Removes a message's records if they are there; whether they were.
pub(crate) fn remove_records(
    t: &Trees,
    id: QueueId,
    rec: &MessageRecord,
) -> Result<bool, QueueError> {
    let trees = (&t.meta, &t.rcpt, &t.due, &t.lease, &t.body);
    trees
        .transaction(|(meta, rcpt, due, lease, bodies)| {
            let t = MessageTx { meta, due, lease };
            // Whatever it says now (it may have been leased meanwhile), else what was inserted.
            let stored = match t.get(id) {
                Ok(None) => return Ok(false),
                Ok(Some(r)) => r,
                Err(sled::transaction::ConflictableTransactionError::Abort(_)) => rec.clone(),
                Err(e) => return Err(e),
            };
            t.remove(id, Indexed::of(&stored))?;
            for i in 0..rec.rcpts {
                rcpt.remove(&rcpt_key(id, i))?;
            }
            bodies.remove(&id.key())?;
            Ok(true)
        })
        .map_err(tx_err("undo enqueue"))
}

/// Ends a message's round: reports the result and, on failure, frees its body.
pub(crate) fn finish(store: &Store, p: Placed, result: Result<(), QueueError>) {
    if result.is_err() {
        if let BodyLoc::Log { seg, .. } = p.loc {
            store.bodylog.release(seg);
        }
    }
    let id = p.msg.id;
    (p.msg.done)(result.map(|()| id));
}
