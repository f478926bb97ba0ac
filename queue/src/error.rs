//! The queue's one error type. Every variant carries what an operator needs to find the
//! problem (the operation, the path or the record key); none of them is ever a panic.

use std::path::PathBuf;

use crate::id::QueueId;

/// Everything that can go wrong inside the queue.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// sled refused an operation (I/O error underneath, or corruption it detected itself).
    #[error("queue database error during {op}: {source}")]
    Db {
        op: &'static str,
        #[source]
        source: sled::Error,
    },
    /// A filesystem operation on a spool file, the spool directory or sled's files failed.
    #[error("queue I/O error during {op} on {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A stored record could not be decoded. It is skipped, never fatal for the rest of the queue.
    #[error("corrupt record in tree {tree} at key {key}: {reason}")]
    Corrupt {
        tree: &'static str,
        key: String,
        reason: String,
    },
    /// No message with this id (already finished, deleted, or never existed).
    #[error("no message {id} in the queue")]
    NotFound { id: QueueId },
    /// The lease was given to someone else (it expired, the message was released, deleted
    /// or the process restarted): the caller must not record outcomes for it.
    #[error("lease on message {id} is no longer held")]
    LeaseLost { id: QueueId },
    /// `commit` with an empty recipient list: a message nobody will receive is not queued.
    #[error("a message needs at least one recipient")]
    NoRecipients,
    /// More recipients than a record can index.
    #[error("too many recipients: {count} (at most {max})")]
    TooManyRecipients { count: usize, max: usize },
    /// A recipient index in an outcome does not belong to the leased message.
    #[error("message {id} has no recipient #{index}")]
    NoSuchRecipient { id: QueueId, index: u32 },
    /// `QueueOptions` that cannot work (an empty retry schedule, a zero lease).
    #[error("invalid queue options: {reason}")]
    InvalidOptions { reason: &'static str },
    /// A record could not be serialized (never expected; kept out of the panic path).
    #[error("could not encode a {what} record: {reason}")]
    Encode { what: &'static str, reason: String },
    /// The group-commit thread could not make a batch durable; nothing of the batch is
    /// acknowledged.
    #[error("durable commit failed: {reason}")]
    Sync { reason: String },
    /// Storage failed and is not repaired yet (the committer retries on its own): nothing
    /// new is stored or leased meanwhile.
    #[error("queue storage unavailable: {reason}")]
    Unavailable { reason: String },
    /// The outcome could not be stored now; the queue keeps it in memory and stores it as
    /// soon as storage works again (the message is not delivered again meanwhile).
    #[error("outcome of {id} kept in memory until storage recovers: {reason}")]
    OutcomeKept { id: QueueId, reason: String },
}

impl QueueError {
    /// Whether this is the storage failing (disk full, I/O error, failed sync), as opposed to
    /// a problem with one message or a caller's mistake.
    pub fn is_storage(&self) -> bool {
        matches!(
            self,
            QueueError::Db { .. }
                | QueueError::Io { .. }
                | QueueError::Sync { .. }
                | QueueError::Unavailable { .. }
                | QueueError::OutcomeKept { .. }
        )
    }

    pub(crate) fn db(op: &'static str) -> impl FnOnce(sled::Error) -> QueueError {
        move |source| QueueError::Db { op, source }
    }

    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> QueueError {
        let path = path.into();
        move |source| QueueError::Io { op, path, source }
    }
}
