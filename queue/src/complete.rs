//! [`Queue::complete`]: recording the outcome of a delivery attempt durably, through the
//! group committer (`durable`): the outcomes handed in meanwhile are applied in one sled
//! transaction of the next round (see `outcome`) and synced with its new messages — or,
//! while storage fails, kept in memory for `heal`.

use std::time::SystemTime;

use crate::body::BodyReader;
use crate::error::QueueError;
use crate::id::QueueId;
use crate::lease::Leased;
use crate::lock::lock;
use crate::model::{BodyLoc, Disposition, ExpiredRecipient};
use crate::outcome::{Applied, Done, OutcomeReq};
use crate::queue::Queue;
use crate::store::KeptOutcome;

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

impl Queue {
    /// Records the outcome of an attempt for the given recipients (by `LeasedRecipient::index`)
    /// and releases the lease, in one atomic, durable step. Report every leased recipient:
    /// those left open are retried per `QueueOptions::retry`, or, when `now` is at or past
    /// `expires_at`, bounced as expired and returned in `Completion::expired`. When nothing is
    /// left open the message leaves the queue.
    ///
    /// When storage fails, the outcome is kept in memory and stored as soon as storage works
    /// again (the message stays leased meanwhile, so it is not delivered twice); the call
    /// then fails with [`QueueError::OutcomeKept`].
    pub fn complete(
        &self,
        lease: &Leased,
        outcomes: &[(u32, Disposition)],
        now: SystemTime,
    ) -> Result<Completion, QueueError> {
        let store = &self.store;
        let id = lease.id;
        let result = self.try_complete(id, lease.token, outcomes, now);
        match &result {
            Err(e) if e.is_storage() => {
                store.fail_db(e);
                lock(&store.health.kept).push(KeptOutcome {
                    id,
                    token: lease.token,
                    outcomes: outcomes.to_vec(),
                    now,
                });
                tracing::warn!(queue_id = %id, error = %e, "outcome kept in memory until the queue can store it");
                return Err(QueueError::OutcomeKept {
                    id,
                    reason: e.to_string(),
                });
            }
            Ok(_) | Err(QueueError::LeaseLost { .. } | QueueError::NotFound { .. }) => {
                lock(&store.health.live).remove(&id);
            }
            Err(_) => {}
        }
        result
    }

    /// Hands the outcome to the group committer, which applies it with the others of its
    /// round in one transaction, and waits until that round is durable.
    fn try_complete(
        &self,
        id: QueueId,
        token: u64,
        outcomes: &[(u32, Disposition)],
        now: SystemTime,
    ) -> Result<Completion, QueueError> {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        self.commit.submit_outcome(OutcomeReq {
            id,
            token,
            outcomes: outcomes.to_vec(),
            now,
            reply,
        });
        let applied = answer.recv().map_err(|_| QueueError::Sync {
            reason: "the queue's committer stopped".into(),
        })??;
        Ok(self.completed(id, applied))
    }

    /// After the durable round: the finished message's body, then its storage.
    fn completed(&self, id: QueueId, applied: Applied) -> Completion {
        let store = &self.store;
        let Applied { done, counted } = applied;
        let Done {
            rec,
            finished,
            next,
            expired,
            body,
            ..
        } = done;
        // Opened before the body's storage is released, so a DSN can still read it.
        let body = match (finished, rec.body, body) {
            (false, _, _) => None,
            (true, BodyLoc::Inline, Some(b)) => Some(BodyReader::inline(b, rec.size, rec.crc32)),
            (true, BodyLoc::Inline, None) => None,
            (true, _, _) => store.open_body(id, &rec).ok(),
        };
        if finished {
            // Only now that the removal is durable may the body's storage go.
            store.release_body(id, rec.body, counted);
        }
        Completion {
            finished,
            expired,
            next_attempt: next,
            body,
        }
    }
}
