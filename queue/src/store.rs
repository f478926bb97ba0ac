//! The store: opening (and recovering) the sled trees and spool directory, record encoding,
//! the counters behind `counts`, corrupt-record reporting, and `commit`.
//!
//! Layout under the queue directory: `sled/` (the database) and `spool/<ID>` (bodies larger
//! than `inline_body_max`). Trees, all keyed by the big-endian queue id unless noted:
//! `meta` (envelope and scheduling state, [`MessageRecord`]), `rcpt` (id ‖ index u32 →
//! [`RecipientRecord`]), `body` (inline bodies), `due` (next-attempt ms ‖ id → empty; see
//! [`crate::schedule`]) and `lease` (id → empty, the messages leased right now, so recovery at
//! open touches only them).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use crate::body::MessageWriter;
use crate::bodylog::BodyLog;
use crate::durable::GroupCommit;
use crate::enqueue::{DueHook, NewBody, NewMessage, Records};
use crate::error::QueueError;
use crate::id::{IdGen, QueueId};
use crate::model::{
    BodyLoc, Counts, Envelope, MessageRecord, MessageState, QueueOptions, RecipientRecord,
    RecipientSpec,
};
use crate::schedule::{rcpt_key, to_ms};

/// The most recipients one message may have (the submission side caps far lower).
pub const MAX_RECIPIENTS: usize = 65_535;

/// Storage knobs with measured defaults; `Queue::open` uses `QueueTuning::default()`.
#[derive(Debug, Clone)]
pub struct QueueTuning {
    /// Bodies up to this size are buffered in memory and appended to the shared body log;
    /// larger ones are streamed to their own spool file. 0 = always a spool file.
    pub inline_body_max: usize,
    /// Store the small bodies in a sled tree instead of the body log (kept for the
    /// benchmark's comparison; slower, see the crate docs).
    pub small_bodies_in_sled: bool,
    /// Body-log segments are closed at this size (and deleted once no message needs them).
    pub body_segment_size: u64,
    /// sled's page cache, in bytes.
    pub cache_capacity: u64,
}

impl Default for QueueTuning {
    fn default() -> QueueTuning {
        QueueTuning {
            inline_body_max: 64 * 1024,
            small_bodies_in_sled: false,
            body_segment_size: 64 * 1024 * 1024,
            cache_capacity: 256 * 1024 * 1024,
        }
    }
}

/// A record that could not be read; reported (and logged) and skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptRecord {
    pub tree: &'static str,
    pub key: String,
    pub reason: String,
}

pub(crate) struct Inner {
    pub opts: QueueOptions,
    pub tuning: QueueTuning,
    pub meta: sled::Tree,
    pub rcpt: sled::Tree,
    pub body: sled::Tree,
    pub due: sled::Tree,
    pub lease: sled::Tree,
    spool_dir: PathBuf,
    pub bodylog: Arc<BodyLog>,
    ids: IdGen,
    counts: Arc<Mutex<[i64; 4]>>,
    corrupt: Mutex<Vec<CorruptRecord>>,
    hook: Arc<Mutex<Option<DueHook>>>,
    // Last: dropped after the trees, stops the committer after its final batch.
    pub commit: GroupCommit,
}

/// The durable queue. Cheap to clone; all clones share one database.
#[derive(Clone)]
pub struct Queue {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("spool_dir", &self.inner.spool_dir)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn state_slot(s: MessageState) -> usize {
    match s {
        MessageState::Pending => 0,
        MessageState::Deferred => 1,
        MessageState::Held => 2,
        MessageState::Active => 3,
    }
}

pub(crate) fn encode<T: Serialize>(what: &'static str, v: &T) -> Result<Vec<u8>, QueueError> {
    serde_json::to_vec(v).map_err(|e| QueueError::Encode {
        what,
        reason: e.to_string(),
    })
}

pub(crate) fn decode<T: DeserializeOwned>(
    tree: &'static str,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, QueueError> {
    serde_json::from_slice(bytes).map_err(|e| QueueError::Corrupt {
        tree,
        key: key_name(key),
        reason: e.to_string(),
    })
}

/// A key as an operator can read it: the queue id (plus suffix) when it parses, else hex.
pub(crate) fn key_name(key: &[u8]) -> String {
    match (key.len(), QueueId::from_key(key)) {
        (8, Some(id)) => id.to_string(),
        (12, Some(id)) => format!(
            "{id}#{}",
            u32::from_be_bytes([key[8], key[9], key[10], key[11]])
        ),
        (16, _) => match crate::schedule::parse_due_key(key) {
            Some((ms, id)) => format!("{ms}:{id}"),
            None => hex(key),
        },
        _ => hex(key),
    }
}

fn hex(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// Maps a transaction failure onto the queue error.
pub(crate) fn tx_err(op: &'static str) -> impl FnOnce(TransactionError<QueueError>) -> QueueError {
    move |e| match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(source) => QueueError::Db { op, source },
    }
}

pub(crate) fn abort<T>(e: QueueError) -> Result<T, ConflictableTransactionError<QueueError>> {
    Err(ConflictableTransactionError::Abort(e))
}

/// Opens sled. A queue closed a moment ago in this process may still have sled's background
/// I/O threads holding the directory lock for a few milliseconds, so a lock conflict is retried
/// briefly before it is reported (a second process keeps failing, as it must).
fn open_sled(dir: &Path, tuning: &QueueTuning) -> Result<sled::Db, QueueError> {
    let config = sled::Config::new()
        .path(dir)
        .cache_capacity(tuning.cache_capacity)
        // Our committer decides when to flush (and then really syncs).
        .flush_every_ms(None);
    let mut tries = 0;
    loop {
        match config.open() {
            Err(sled::Error::Io(e)) if tries < 200 && e.to_string().contains("acquire lock") => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other.map_err(QueueError::db("open")),
        }
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
        let sled_dir = path.join("sled");
        let spool_dir = path.join("spool");
        for dir in [path, &spool_dir] {
            std::fs::create_dir_all(dir).map_err(QueueError::io("create directory", dir))?;
        }
        let db = open_sled(&sled_dir, &tuning)?;
        let tree = |name: &str| db.open_tree(name).map_err(QueueError::db("open tree"));
        let (meta, rcpt, body, due, lease) = (
            tree("meta")?,
            tree("rcpt")?,
            tree("body")?,
            tree("due")?,
            tree("lease")?,
        );
        let bodylog = Arc::new(BodyLog::open(
            &path.join("bodies"),
            tuning.body_segment_size,
        )?);
        crate::durable::sync_dir(path)?;
        let counts = Arc::new(Mutex::new([0; 4]));
        let hook = Arc::new(Mutex::new(None));
        let records = Records {
            meta: meta.clone(),
            rcpt: rcpt.clone(),
            due: due.clone(),
            body: body.clone(),
            bodylog: Arc::clone(&bodylog),
            counts: Arc::clone(&counts),
            hook: Arc::clone(&hook),
        };
        let commit = GroupCommit::start(db.clone(), &sled_dir, records)?;
        let floor = meta
            .last()
            .map_err(QueueError::db("read last id"))?
            .and_then(|(k, _)| QueueId::from_key(&k));
        let inner = Inner {
            opts,
            tuning,
            meta,
            rcpt,
            body,
            due,
            lease,
            spool_dir,
            bodylog,
            ids: IdGen::new(floor),
            counts,
            corrupt: Mutex::new(Vec::new()),
            hook,
            commit,
        };
        let q = Queue {
            inner: Arc::new(inner),
        };
        crate::recover::recover(&q.inner, SystemTime::now())?;
        Ok(q)
    }

    /// Starts a message; write the raw message into the returned writer, then `commit`.
    pub fn begin(&self) -> Result<MessageWriter, QueueError> {
        Ok(self.begin_with_id(self.reserve_id()))
    }

    /// A fresh queue id for a message about to be written (with [`Queue::begin_with_id`] or
    /// [`Queue::submit`]); an id that is never used leaves nothing behind.
    pub fn reserve_id(&self) -> QueueId {
        self.inner.ids.next()
    }

    /// [`Queue::begin`] for an id from [`Queue::reserve_id`].
    pub fn begin_with_id(&self, id: QueueId) -> MessageWriter {
        MessageWriter::new(Arc::clone(&self.inner), id)
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
        let body = if self.inner.tuning.small_bodies_in_sled {
            NewBody::Inline(body)
        } else {
            NewBody::Log(body)
        };
        match self
            .inner
            .new_message(id, body, size, crc.finalize(), env, rcpts)
        {
            Ok(build) => self.inner.commit.submit(build(Box::new(done))),
            Err(e) => done(Err(e)),
        }
    }

    /// The largest body [`Queue::submit`] is meant for (`QueueTuning::inline_body_max`).
    pub fn whole_body_max(&self) -> usize {
        self.inner.tuning.inline_body_max
    }

    /// Makes everything done so far durable (at shutdown; `commit` needs no extra flush).
    pub fn flush(&self) -> Result<(), QueueError> {
        self.inner.commit.wait_durable()
    }

    /// Number of messages per state, maintained in memory (O(1)).
    pub fn counts(&self) -> Counts {
        let c = lock(&self.inner.counts);
        let mut out = Counts::default();
        for s in MessageState::ALL {
            *out.slot(s) = u64::try_from(c[state_slot(s)]).unwrap_or(0);
        }
        out
    }

    /// Group-commit statistics: `(durability requests, flush+sync rounds)` since open. The
    /// second staying well below the first under load is group commit at work.
    pub fn sync_stats(&self) -> (u64, u64) {
        (self.inner.commit.requests(), self.inner.commit.syncs())
    }

    /// Records found unreadable since open (at open and during operations), oldest first.
    pub fn corrupt_records(&self) -> Vec<CorruptRecord> {
        lock(&self.inner.corrupt).clone()
    }

    /// Registers a callback run whenever a message becomes due now (new message, release,
    /// retry-now, abandoned lease), so a scheduler can sleep until `next_due` without polling.
    /// It runs on the caller's thread and must not block (e.g. `tokio::sync::Notify::notify_one`).
    pub fn on_due(&self, hook: impl Fn() + Send + Sync + 'static) {
        *lock(&self.inner.hook) = Some(Arc::new(hook));
    }
}

impl Inner {
    pub(crate) fn spool_dir(&self) -> &Path {
        &self.spool_dir
    }

    pub(crate) fn spool_path(&self, id: QueueId) -> PathBuf {
        self.spool_dir.join(id.as_str())
    }

    pub(crate) fn notify_due(&self) {
        let hook = lock(&*self.hook).clone();
        if let Some(h) = hook {
            h();
        }
    }

    /// Moves one message between states in the counters (`None` = absent).
    pub(crate) fn count(&self, from: Option<MessageState>, to: Option<MessageState>) {
        if from == to {
            return;
        }
        let mut c = lock(&self.counts);
        if let Some(s) = from {
            c[state_slot(s)] -= 1;
        }
        if let Some(s) = to {
            c[state_slot(s)] += 1;
        }
    }

    pub(crate) fn reset_counts(&self, counts: [i64; 4]) {
        *lock(&self.counts) = counts;
    }

    pub(crate) fn report_corrupt(&self, err: &QueueError) {
        if let QueueError::Corrupt { tree, key, reason } = err {
            tracing::error!(tree, key = %key, reason = %reason, "corrupt queue record skipped");
            let mut list = lock(&self.corrupt);
            if !list.iter().any(|c| c.tree == *tree && c.key == *key) {
                list.push(CorruptRecord {
                    tree,
                    key: key.clone(),
                    reason: reason.clone(),
                });
            }
        }
    }

    /// Validates and encodes a new message; returns a constructor taking its `done`.
    pub(crate) fn new_message(
        &self,
        id: QueueId,
        body: NewBody,
        size: u64,
        crc32: u32,
        env: Envelope,
        rcpts: Vec<RecipientSpec>,
    ) -> Result<impl FnOnce(crate::enqueue::Done) -> NewMessage, QueueError> {
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

    /// The blocking commit of a [`MessageWriter`]: one committer round.
    pub(crate) fn commit_message(
        &self,
        w: &mut MessageWriter,
        env: Envelope,
        rcpts: Vec<RecipientSpec>,
    ) -> Result<QueueId, QueueError> {
        let buf = std::mem::take(&mut w.buf);
        let body = if w.finish_spool()? {
            NewBody::Spool
        } else if self.tuning.small_bodies_in_sled {
            NewBody::Inline(buf)
        } else {
            NewBody::Log(buf)
        };
        let crc = w.crc.clone().finalize();
        let build = self.new_message(w.id, body, w.size, crc, env, rcpts)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.commit.submit(build(Box::new(move |r| {
            let _ = tx.send(r);
        })));
        let id = rx.recv().map_err(|_| QueueError::Sync {
            reason: "queue committer stopped".into(),
        })??;
        w.committed = true;
        Ok(id)
    }
}
