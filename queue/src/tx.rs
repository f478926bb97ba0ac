//! Sled transaction helpers, and [`MessageTx`]: every transaction that writes a message record
//! (enqueue, lease, complete, admin, recovery) goes through it, so the `due` and `lease`
//! indexes always say what the record says.
//!
//! The invariant, kept in [`MessageTx::reindex`] and nowhere else: `due` holds
//! `(next_ms, id)` exactly while the record is scheduled (not held), and `lease` holds `id`
//! exactly while the record carries a lease.

use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

use crate::codec::{decode, encode};
use crate::error::QueueError;
use crate::id::QueueId;
use crate::model::MessageRecord;
use crate::schedule::due_key;

pub(crate) type TxResult<T> = Result<T, ConflictableTransactionError<QueueError>>;

/// Maps a transaction failure onto the queue error.
pub(crate) fn tx_err(op: &'static str) -> impl FnOnce(TransactionError<QueueError>) -> QueueError {
    move |e| match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(source) => QueueError::Db { op, source },
    }
}

pub(crate) fn abort<T>(e: QueueError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(e))
}

/// Where a record puts its message in the indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Indexed {
    /// The `due` entry's time, `None` while held.
    due_ms: Option<u64>,
    /// Whether the `lease` tree lists it.
    leased: bool,
}

impl Indexed {
    pub(crate) fn of(rec: &MessageRecord) -> Indexed {
        Indexed {
            due_ms: rec.scheduled().then_some(rec.next_ms),
            leased: rec.lease.is_some(),
        }
    }
}

/// The `meta`, `due` and `lease` trees inside one transaction.
pub(crate) struct MessageTx<'a> {
    pub meta: &'a TransactionalTree,
    pub due: &'a TransactionalTree,
    pub lease: &'a TransactionalTree,
}

impl MessageTx<'_> {
    /// The record of `id`, if any; a record that cannot be decoded aborts the transaction.
    pub(crate) fn get(&self, id: QueueId) -> TxResult<Option<MessageRecord>> {
        match self.meta.get(id.key())? {
            Some(v) => decode("meta", &id.key(), &v).map(Some).or_else(abort),
            None => Ok(None),
        }
    }

    /// [`MessageTx::get`], aborting with `NotFound` when there is no record.
    pub(crate) fn load(&self, id: QueueId) -> TxResult<MessageRecord> {
        match self.get(id)? {
            Some(rec) => Ok(rec),
            None => abort(QueueError::NotFound { id }),
        }
    }

    /// Stores `rec` for `id`; `before` is where the stored record had it in the indexes
    /// (`None` for a new message).
    pub(crate) fn put(
        &self,
        id: QueueId,
        before: Option<Indexed>,
        rec: &MessageRecord,
    ) -> TxResult<()> {
        let bytes = encode("message", rec).or_else(abort)?;
        self.put_encoded(id, before, rec, &bytes)
    }

    /// [`MessageTx::put`] with `rec` already encoded (the committer encodes outside its
    /// transaction so that one message's failure does not abort the round).
    pub(crate) fn put_encoded(
        &self,
        id: QueueId,
        before: Option<Indexed>,
        rec: &MessageRecord,
        bytes: &[u8],
    ) -> TxResult<()> {
        self.meta.insert(&id.key(), bytes)?;
        self.reindex(id, before, Some(Indexed::of(rec)))
    }

    /// Removes the record of `id` and its index entries (recipients and body are the
    /// caller's).
    pub(crate) fn remove(&self, id: QueueId, before: Indexed) -> TxResult<()> {
        self.meta.remove(&id.key())?;
        self.reindex(id, Some(before), None)
    }

    /// Moves the index entries of `id` from `before` to `after` (`None` = no record).
    fn reindex(
        &self,
        id: QueueId,
        before: Option<Indexed>,
        after: Option<Indexed>,
    ) -> TxResult<()> {
        let (old_due, new_due) = (before.and_then(|b| b.due_ms), after.and_then(|a| a.due_ms));
        if old_due != new_due {
            if let Some(ms) = old_due {
                self.due.remove(&due_key(ms, id))?;
            }
            if let Some(ms) = new_due {
                self.due.insert(&due_key(ms, id), &[])?;
            }
        }
        let was_leased = before.is_some_and(|b| b.leased);
        match after {
            // A removed message leaves no lease entry behind, whatever its record said.
            None => {
                self.lease.remove(&id.key())?;
            }
            Some(a) if a.leased && !was_leased => {
                self.lease.insert(&id.key(), &[])?;
            }
            Some(a) if !a.leased && was_leased => {
                self.lease.remove(&id.key())?;
            }
            Some(_) => {}
        }
        Ok(())
    }
}
