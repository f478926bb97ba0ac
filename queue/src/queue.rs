//! [`Queue`]: the handle callers hold — opening (and recovering), the submission side
//! (`begin`, `submit`) and the O(1) statistics. The delivery side lives in `lease` and
//! `complete`, the operator side in `admin`, each as more `impl Queue`.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use crate::durable::GroupCommit;
use crate::enqueue::{NewBody, NewMessage};
use crate::error::QueueError;
use crate::id::QueueId;
use crate::model::{Counts, Envelope, QueueOptions, RecipientSpec};
use crate::recover::recover;
use crate::store::{CorruptRecord, QueueTuning, Store};
use crate::writer::MessageWriter;

/// The durable queue. Cheap to clone; all clones share one database.
#[derive(Clone)]
pub struct Queue {
    pub(crate) store: Arc<Store>,
    /// Dropped with the last clone (or writer): stops the committer after its final batch.
    pub(crate) commit: Arc<GroupCommit>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("spool_dir", &self.store.spool_dir())
            .finish_non_exhaustive()
    }
}

impl Queue {
    /// Opens (creating if needed) the queue in directory `path`, recovering from a crash:
    /// leases held by a dead process become due now, orphaned spool files are removed, and
    /// unreadable records are reported (see [`Queue::corrupt_records`]) instead of failing.
    pub fn open(path: &Path, opts: QueueOptions) -> Result<Queue, QueueError> {
        Queue::open_tuned(path, opts, QueueTuning::default())
    }

    /// [`Queue::open`] with explicit storage tuning (benchmarks, tests).
    pub fn open_tuned(
        path: &Path,
        opts: QueueOptions,
        tuning: QueueTuning,
    ) -> Result<Queue, QueueError> {
        if opts.retry.is_empty() {
            return Err(QueueError::InvalidOptions {
                reason: "retry schedule is empty",
            });
        }
        // Under a millisecond a lease would end in the millisecond it began (the index's
        // resolution), and `lease_due` could hand the same message out twice in one call.
        if opts.lease < std::time::Duration::from_millis(1) {
            return Err(QueueError::InvalidOptions {
                reason: "lease duration is under 1 ms",
            });
        }
        let (store, db) = Store::open(path, opts, tuning)?;
        let store = Arc::new(store);
        let commit = GroupCommit::start(db, &path.join("sled"), Arc::clone(&store))?;
        if recover(&store, SystemTime::now())? > 0 {
            commit.wait_durable()?;
        }
        Ok(Queue {
            store,
            commit: Arc::new(commit),
        })
    }

    /// Starts a message; write the raw message into the returned writer, then `commit`.
    pub fn begin(&self) -> Result<MessageWriter, QueueError> {
        Ok(self.begin_with_id(self.reserve_id()))
    }

    /// A fresh queue id for a message about to be written (with [`Queue::begin_with_id`] or
    /// [`Queue::submit`]); an id that is never used leaves nothing behind.
    pub fn reserve_id(&self) -> QueueId {
        self.store.ids.next()
    }

    /// [`Queue::begin`] for an id from [`Queue::reserve_id`].
    pub fn begin_with_id(&self, id: QueueId) -> MessageWriter {
        MessageWriter::new(Arc::clone(&self.store), Arc::clone(&self.commit), id)
    }

    /// Queues a message whose whole body is in memory, without blocking: `done` runs (on the
    /// queue's committer thread, so it must not block) with the id once body, envelope and
    /// recipients are on stable storage, or with the error. `id` comes from
    /// [`Queue::reserve_id`]. Bodies larger than [`Queue::whole_body_max`] belong in a
    /// [`MessageWriter`] instead (they would sit in memory until the round).
    pub fn submit(
        &self,
        id: QueueId,
        body: Vec<u8>,
        env: Envelope,
        rcpts: Vec<RecipientSpec>,
        done: impl FnOnce(Result<QueueId, QueueError>) + Send + 'static,
    ) {
        let size = body.len() as u64;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&body);
        let body = NewBody::in_memory(body, &self.store.tuning);
        match NewMessage::prepare(id, body, size, crc.finalize(), env, rcpts) {
            Ok(build) => self.commit.submit(build(Box::new(done))),
            Err(e) => done(Err(e)),
        }
    }

    /// The largest body [`Queue::submit`] is meant for (`QueueTuning::inline_body_max`).
    pub fn whole_body_max(&self) -> usize {
        self.store.tuning.inline_body_max
    }

    /// Makes everything done so far durable (at shutdown; `commit` needs no extra flush).
    pub fn flush(&self) -> Result<(), QueueError> {
        self.commit.wait_durable()
    }

    /// Number of messages per state, maintained in memory (O(1)).
    pub fn counts(&self) -> Counts {
        self.store.counts()
    }

    /// Group-commit statistics: `(durability requests, flush+sync rounds)` since open. The
    /// second staying well below the first under load is group commit at work.
    pub fn sync_stats(&self) -> (u64, u64) {
        (self.commit.requests(), self.commit.syncs())
    }

    /// Records found unreadable since open (at open and during operations), oldest first.
    pub fn corrupt_records(&self) -> Vec<CorruptRecord> {
        self.store.corrupt_records()
    }

    /// Registers a callback run whenever a message becomes due now (new message, release,
    /// retry-now, abandoned lease), so a scheduler can sleep until `next_due` without polling.
    /// It runs on the caller's thread and must not block (e.g. `tokio::sync::Notify::notify_one`).
    pub fn on_due(&self, hook: impl Fn() + Send + Sync + 'static) {
        self.store.set_hook(Arc::new(hook));
    }
}
