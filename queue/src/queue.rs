//! [`Queue`]: the handle callers hold — opening (and recovering), the submission side
//! (`begin`, `submit`) and the O(1) statistics. The delivery side lives in `lease` and
//! `complete`, the operator side in `admin`, each as more `impl Queue`.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use crate::durable::GroupCommit;
use crate::enqueue::{NewBody, NewMessage};
use crate::error::QueueError;
use crate::id::QueueId;
use crate::model::{Counts, Envelope, QueueOptions, RecipientSpec};
use crate::recover::recover;
use crate::scan;
use crate::store::{CorruptRecord, QueueTuning, Store};
use crate::writer::MessageWriter;

/// Whether the queue can store new mail now ([`Queue::health`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageHealth {
    /// Writes succeed and free space is above the minimum.
    Ok,
    /// Free space on the queue's volume is below [`Queue::set_min_free_space`]: storing still
    /// works, but new mail should be refused (RFC 3463 4.3.1) before the volume is full.
    LowSpace { free: u64, min: u64 },
    /// A write or sync failed and the store is not repaired yet; the committer retries by
    /// itself until writes succeed again. Nothing new is stored or leased meanwhile.
    Failed { reason: String },
}

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
    /// leases held by a dead process become due now and orphaned spool files are removed.
    /// The messages queued before are then counted — the first 16,384 before `open`
    /// returns, the rest in the background (see [`Queue::recovered`]) —, which reports unreadable records and records whose body is
    /// missing (see [`Queue::corrupt_records`]) instead of failing.
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
        let store = Arc::new(Store::open(path, opts, tuning)?);
        let commit = GroupCommit::start(Arc::clone(&store))?;
        let trees = store.trees()?;
        if recover(&store, &trees, SystemTime::now())? > 0 {
            commit.wait_durable(trees.gen)?;
        }
        scan::start(&store, &trees)?;
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
        let gen = self.store.trees()?.gen;
        self.commit.wait_durable(gen)
    }

    /// Number of messages per state, maintained in memory (O(1)). Until
    /// [`Queue::recovered`], messages queued before open are still being counted.
    pub fn counts(&self) -> Counts {
        self.store.counts()
    }

    /// Whether the background recovery scan after open is over: [`Queue::counts`] is complete
    /// and body-log segments from before open nothing needs are deleted. Delivery, admin
    /// changes and new mail do not wait for it.
    pub fn recovered(&self) -> bool {
        self.store.scan_done()
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

    /// Whether the queue can store new mail now (cheap: no I/O; free space as last measured
    /// by [`Queue::refresh_free_space`]).
    pub fn health(&self) -> StorageHealth {
        let h = &self.store.health;
        if self.store.failed() {
            return StorageHealth::Failed {
                reason: self.store.failure().unwrap_or_default(),
            };
        }
        let (free, min) = (
            h.free.load(Ordering::Relaxed),
            h.min_free.load(Ordering::Relaxed),
        );
        if min > 0 && free < min {
            return StorageHealth::LowSpace { free, min };
        }
        StorageHealth::Ok
    }

    /// Sets the free space below which [`Queue::health`] reports `LowSpace` (0 = never).
    pub fn set_min_free_space(&self, bytes: u64) {
        self.store.health.min_free.store(bytes, Ordering::Relaxed);
    }

    /// Measures the free space (for unprivileged users) on the queue's volume, remembers it
    /// for [`Queue::health`] and returns it.
    pub fn refresh_free_space(&self) -> Result<u64, QueueError> {
        let dir = self.store.dir();
        let free = fs2::available_space(dir).map_err(QueueError::io("statvfs", dir))?;
        self.store.health.free.store(free, Ordering::Relaxed);
        Ok(free)
    }

    /// Registers a callback run whenever a message becomes due now (new message, release,
    /// retry-now, abandoned lease), so a scheduler can sleep until `next_due` without polling.
    /// It runs on the caller's thread and must not block (e.g. `tokio::sync::Notify::notify_one`).
    pub fn on_due(&self, hook: impl Fn() + Send + Sync + 'static) {
        self.store.set_hook(Arc::new(hook));
    }
}
