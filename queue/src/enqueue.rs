//! New messages on their way into the queue, as the group committer handles them.
//!
//! A writer (blocking [`crate::MessageWriter::commit`] or non-blocking [`crate::Queue::submit`])
//! prepares a [`NewMessage`] — envelope and recipient records encoded, body in memory or already
//! synced to its spool file — and hands it to the committer. One committer round then, for every
//! message handed in since the last round:
//!
//! 1. appends the in-memory bodies to the body log,
//! 2. `fdatasync`s the body log (a body is durable before any record can point at it),
//! 3. inserts the messages' records into sled, in one transaction,
//! 4. flushes sled and `fdatasync`s its files,
//!
//! and only then reports each message queued. So a message costs one round, shared with every
//! message (and every other durability request) that arrived meanwhile, and no thread of its
//! own: the submission server hands small bodies over whole from its async task.

use std::sync::{Arc, Mutex, MutexGuard};

use sled::transaction::Transactional;

use crate::bodylog::BodyLog;
use crate::error::QueueError;
use crate::id::QueueId;
use crate::model::{BodyLoc, MessageRecord, MessageState};
use crate::schedule::{due_key, rcpt_key};
use crate::store::{encode, state_slot, tx_err};

/// Runs when a message is durably queued (or could not be); on the committer's thread, so it
/// must not block (send on a channel, wake a task).
pub(crate) type Done = Box<dyn FnOnce(Result<QueueId, QueueError>) + Send>;

/// Runs whenever a message becomes due now.
pub(crate) type DueHook = Arc<dyn Fn() + Send + Sync>;

/// Where a new message's body is before its round.
pub(crate) enum NewBody {
    /// In memory, for the body log.
    Log(Vec<u8>),
    /// In memory, for sled's `body` tree (`QueueTuning::small_bodies_in_sled`).
    Inline(Vec<u8>),
    /// Already written and synced to `spool/<ID>`.
    Spool,
}

/// A message waiting for the committer's next round.
pub(crate) struct NewMessage {
    pub id: QueueId,
    pub body: NewBody,
    /// Complete but for `body`, which the round fills in.
    pub rec: MessageRecord,
    pub rcpt_rows: Vec<([u8; 12], Vec<u8>)>,
    pub done: Done,
}

/// A message whose body has a place (step 1 done).
pub(crate) struct Placed {
    msg: NewMessage,
    loc: BodyLoc,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the committer needs of the queue to store new messages: the trees, the body log, and
/// the in-memory counters and wake-up hook shared with [`crate::store::Inner`].
#[derive(Clone)]
pub(crate) struct Records {
    pub meta: sled::Tree,
    pub rcpt: sled::Tree,
    pub due: sled::Tree,
    pub body: sled::Tree,
    pub bodylog: Arc<BodyLog>,
    pub counts: Arc<Mutex<[i64; 4]>>,
    pub hook: Arc<Mutex<Option<DueHook>>>,
}

impl Records {
    /// Step 1: gives the body its place (appending it to the body log if it goes there); a
    /// message whose body cannot be placed is reported failed here.
    pub(crate) fn place(&self, mut msg: NewMessage) -> Option<Placed> {
        let loc = match &mut msg.body {
            NewBody::Log(bytes) => match self.bodylog.append(bytes) {
                Ok((seg, off)) => {
                    // The bytes are in the log now; the record only needs their place.
                    *bytes = Vec::new();
                    BodyLoc::Log { seg, off }
                }
                Err(e) => {
                    Records::fail(msg, e);
                    return None;
                }
            },
            NewBody::Inline(_) => BodyLoc::Inline,
            NewBody::Spool => BodyLoc::Spool,
        };
        Some(Placed { msg, loc })
    }

    /// Step 3a: encodes a placed message's envelope record, now that its body has a place.
    pub(crate) fn encode(&self, p: &mut Placed) -> Result<Vec<u8>, QueueError> {
        p.msg.rec.body = p.loc;
        encode("message", &p.msg.rec)
    }

    /// Step 3b: inserts the records of a round's messages in one sled transaction (not yet
    /// durable). One transaction per round, not per message: sled's per-transaction cost
    /// dominated the round otherwise. Fails as a whole — only a storage error can fail it.
    pub(crate) fn insert_all(&self, batch: &[(Placed, Vec<u8>)]) -> Result<(), QueueError> {
        if batch.is_empty() {
            return Ok(());
        }
        (&self.meta, &self.rcpt, &self.due, &self.body)
            .transaction(|(meta, rcpt, due, bodies)| {
                for (p, meta_bytes) in batch {
                    let id = p.msg.id;
                    meta.insert(&id.key(), meta_bytes.as_slice())?;
                    for (k, v) in &p.msg.rcpt_rows {
                        rcpt.insert(k, v.as_slice())?;
                    }
                    due.insert(&due_key(p.msg.rec.next_ms, id), &[])?;
                    if let NewBody::Inline(b) = &p.msg.body {
                        bodies.insert(&id.key(), b.as_slice())?;
                    }
                }
                Ok(())
            })
            .map_err(tx_err("enqueue"))?;
        lock(&self.counts)[state_slot(MessageState::Pending)] += batch.len() as i64;
        Ok(())
    }

    /// Takes the records of an inserted message out again, when the sync that was to make them
    /// durable failed: the message was never acknowledged, so it must not be delivered either.
    /// Best effort (the storage just failed); a record that stays is delivered after a restart.
    pub(crate) fn undo(&self, p: &Placed) {
        let id = p.msg.id;
        let rec = &p.msg.rec;
        let res = (&self.meta, &self.rcpt, &self.due, &self.body).transaction(
            |(meta, rcpt, due, bodies)| {
                meta.remove(&id.key())?;
                for i in 0..rec.rcpts {
                    rcpt.remove(&rcpt_key(id, i))?;
                }
                due.remove(&due_key(rec.next_ms, id))?;
                bodies.remove(&id.key())?;
                Ok::<_, sled::transaction::ConflictableTransactionError<QueueError>>(())
            },
        );
        match res {
            Ok(()) => lock(&self.counts)[state_slot(MessageState::Pending)] -= 1,
            Err(e) => {
                tracing::error!(queue_id = %id, error = ?e, "could not remove the records of an unacknowledged message")
            }
        }
    }

    /// Ends a message's round: reports the result and, on failure, frees its body.
    pub(crate) fn finish(&self, p: Placed, result: Result<(), QueueError>) {
        if result.is_err() {
            self.release(p.loc);
        }
        let id = p.msg.id;
        (p.msg.done)(result.map(|()| id));
    }

    /// Reports a message that never got a place.
    pub(crate) fn fail(msg: NewMessage, e: QueueError) {
        (msg.done)(Err(e));
    }

    fn release(&self, loc: BodyLoc) {
        if let BodyLoc::Log { seg, .. } = loc {
            self.bodylog.release(seg);
        }
    }

    /// Runs the wake-up hook (after a round queued new messages).
    pub(crate) fn notify_due(&self) {
        let hook = lock(&self.hook).clone();
        if let Some(h) = hook {
            h();
        }
    }
}
