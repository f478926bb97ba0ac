//! The store: the one owner of the queue's state — the sled trees, the body log, the spool
//! directory, the id generator, the per-state counters behind `counts`, the corrupt-record
//! list and the wake-up (due) hook. [`crate::Queue`], its writers and the group committer
//! each hold an `Arc<Store>`; nothing else keeps copies of its handles.
//!
//! Layout under the queue directory: `sled/` (the database), `bodies/<n>` (the body log,
//! small bodies; see `bodylog`) and `spool/<ID>` (one file per body larger than
//! `inline_body_max`). Trees, all keyed by the big-endian queue id unless noted: `meta`
//! (envelope and scheduling state, [`MessageRecord`]), `rcpt` (id ‖ index u32 →
//! [`RecipientRecord`]), `body` (small bodies, only with `small_bodies_in_sled`), `due`
//! (next-attempt ms ‖ id → empty; see [`crate::schedule`]), `lease` (id → empty, the
//! messages leased right now, so recovery at open touches only them) and `state`
//! (namespace ‖ 0 ‖ key → bytes; the relay's own small records, see `kv`). `due` and `lease` are
//! kept in step with `meta` by `tx::MessageTx`.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::body::BodyReader;
use crate::bodylog::BodyLog;
use crate::codec::{decode, key_name};
use crate::error::QueueError;
use crate::fs::sync_dir;
use crate::id::{IdGen, QueueId};
use crate::lock::lock;
use crate::model::{
    BodyLoc, Counts, Disposition, LeaseRec, MessageRecord, MessageState, QueueOptions,
    RecipientRecord,
};
use crate::scanstate::ScanState;
use crate::schedule::rcpt_key;

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
    /// sled's page cache, in bytes (the relay's `queue.cache_size`). With the recovery scan in
    /// the background, the queue's memory is this plus a few MiB, however many messages
    /// are queued.
    pub cache_capacity: u64,
    /// A pause before each batch of the background recovery scan (tests act while it runs;
    /// zero otherwise).
    pub recovery_pause: std::time::Duration,
}

impl Default for QueueTuning {
    fn default() -> QueueTuning {
        QueueTuning {
            inline_body_max: 64 * 1024,
            small_bodies_in_sled: false,
            body_segment_size: 64 * 1024 * 1024,
            cache_capacity: 64 * 1024 * 1024,
            recovery_pause: std::time::Duration::ZERO,
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

/// Runs whenever a message becomes due now.
pub(crate) type DueHook = Arc<dyn Fn() + Send + Sync>;

/// One opening of the sled database and its trees. A storage error can leave sled 0.34
/// failed for good (its log writer keeps the first I/O error forever), so the committer
/// reopens it (see `heal`); `gen` tells the openings apart, so that a write made through an
/// old one is never reported durable by a sync of a new one.
pub(crate) struct Trees {
    pub gen: u64,
    pub db: sled::Db,
    pub meta: sled::Tree,
    pub rcpt: sled::Tree,
    pub body: sled::Tree,
    pub due: sled::Tree,
    pub lease: sled::Tree,
    /// Side records of the rest of the relay (see `kv`), keyed `namespace \0 key`.
    pub state: sled::Tree,
}

/// An outcome `complete` could not store: kept in memory and applied again once storage
/// works (see `heal`), so the message is not delivered a second time.
#[derive(Debug, Clone)]
pub(crate) struct KeptOutcome {
    pub id: QueueId,
    pub token: u64,
    pub outcomes: Vec<(u32, Disposition)>,
    pub now: std::time::SystemTime,
}

/// Whether the queue can store right now, and what the committer must repair.
#[derive(Default)]
pub(crate) struct Health {
    failed: AtomicBool,
    /// The failure touched sled: it must be reopened (sled 0.34 never recovers by itself).
    reopen: AtomicBool,
    reason: Mutex<Option<String>>,
    /// Leases handed out and not yet given back durably: re-asserted after a reopen, since a
    /// lease record is not synced and may not have reached the disk.
    pub live: Mutex<HashMap<QueueId, LeaseRec>>,
    /// Outcomes that could not be stored yet.
    pub kept: Mutex<Vec<KeptOutcome>>,
    /// Messages of failed rounds whose records may have reached sled: removed after a reopen.
    pub unacked: Mutex<Vec<(QueueId, MessageRecord)>>,
    /// `min_free_space` in bytes (0 = off) and the free space last measured.
    pub min_free: AtomicU64,
    pub free: AtomicU64,
}

pub(crate) struct Store {
    pub opts: QueueOptions,
    pub tuning: QueueTuning,
    trees: RwLock<Option<Arc<Trees>>>,
    pub bodylog: BodyLog,
    pub ids: IdGen,
    pub health: Health,
    dir: PathBuf,
    spool_dir: PathBuf,
    counts: Mutex<[i64; 4]>,
    /// The background recovery scan's progress (see `scan`).
    scan: RwLock<ScanState>,
    corrupt: Mutex<Vec<CorruptRecord>>,
    hook: Mutex<Option<DueHook>>,
}

fn state_slot(s: MessageState) -> usize {
    match s {
        MessageState::Pending => 0,
        MessageState::Deferred => 1,
        MessageState::Held => 2,
        MessageState::Active => 3,
    }
}

/// Opens sled and its trees, as opening number `gen`.
pub(crate) fn open_trees(dir: &Path, tuning: &QueueTuning, gen: u64) -> Result<Trees, QueueError> {
    let db = open_sled(dir, tuning)?;
    let tree = |name: &str| db.open_tree(name).map_err(QueueError::db("open tree"));
    Ok(Trees {
        gen,
        meta: tree("meta")?,
        rcpt: tree("rcpt")?,
        body: tree("body")?,
        due: tree("due")?,
        lease: tree("lease")?,
        state: tree("state")?,
        db,
    })
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

impl Store {
    /// Opens (creating if needed) the directories, sled and the body log under `path`.
    /// Counters start at zero (recovery fills them in).
    pub(crate) fn open(
        path: &Path,
        opts: QueueOptions,
        tuning: QueueTuning,
    ) -> Result<Store, QueueError> {
        let spool_dir = path.join("spool");
        for dir in [path, &spool_dir] {
            std::fs::create_dir_all(dir).map_err(QueueError::io("create directory", dir))?;
        }
        // A queue directory created just now must keep its name too: without this a power cut
        // soon after the first start loses the whole queue (found by the power-loss test).
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        let trees = open_trees(&path.join("sled"), &tuning, 0)?;
        let bodylog = BodyLog::open(&path.join("bodies"), tuning.body_segment_size)?;
        sync_dir(path)?;
        let floor = trees
            .meta
            .last()
            .map_err(QueueError::db("read last id"))?
            .and_then(|(k, _)| QueueId::from_key(&k));
        let scan = ScanState::new(floor, bodylog.segment_set()?);
        Ok(Store {
            opts,
            tuning,
            trees: RwLock::new(Some(Arc::new(trees))),
            bodylog,
            ids: IdGen::new(floor),
            health: Health::default(),
            dir: path.to_path_buf(),
            spool_dir,
            counts: Mutex::new([0; 4]),
            scan: RwLock::new(scan),
            corrupt: Mutex::new(Vec::new()),
            hook: Mutex::new(None),
        })
    }

    /// The database as opened now; fails while the committer is reopening it.
    pub(crate) fn trees(&self) -> Result<Arc<Trees>, QueueError> {
        self.trees
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| QueueError::Unavailable {
                reason: self
                    .failure()
                    .unwrap_or_else(|| "storage is reopening".into()),
            })
    }

    /// Takes the database away (to reopen it); the caller drops it.
    pub(crate) fn take_trees(&self) -> Option<Arc<Trees>> {
        self.trees.write().unwrap_or_else(|e| e.into_inner()).take()
    }

    pub(crate) fn put_trees(&self, trees: Arc<Trees>) {
        *self.trees.write().unwrap_or_else(|e| e.into_inner()) = Some(trees);
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records a storage failure (first reason wins until healed); the committer notices,
    /// stops acknowledging anything and repairs the store as soon as writes succeed again.
    pub(crate) fn fail(&self, reason: impl std::fmt::Display) {
        let mut r = lock(&self.health.reason);
        if r.is_none() {
            let reason = reason.to_string();
            tracing::error!(error = %reason, "queue storage failed: refusing new mail until writes succeed again");
            *r = Some(reason);
        }
        self.health.failed.store(true, Ordering::Release);
    }

    /// [`Store::fail`] for a failure that touched sled (or may have): `heal` reopens it.
    pub(crate) fn fail_db(&self, reason: impl std::fmt::Display) {
        self.health.reopen.store(true, Ordering::Release);
        self.fail(reason);
    }

    /// Whether the failure being healed needs sled reopened.
    pub(crate) fn needs_reopen(&self) -> bool {
        self.health.reopen.load(Ordering::Acquire)
    }

    /// Whether a storage failure is unrepaired.
    pub(crate) fn failed(&self) -> bool {
        self.health.failed.load(Ordering::Acquire)
    }

    pub(crate) fn failure(&self) -> Option<String> {
        lock(&self.health.reason).clone()
    }

    /// Storage works again (the committer, after repairing).
    pub(crate) fn healed(&self) {
        let was = lock(&self.health.reason).take();
        self.health.reopen.store(false, Ordering::Release);
        self.health.failed.store(false, Ordering::Release);
        if let Some(reason) = was {
            tracing::info!(after = %reason, "queue storage works again: accepting mail");
        }
    }

    pub(crate) fn spool_dir(&self) -> &Path {
        &self.spool_dir
    }

    pub(crate) fn spool_path(&self, id: QueueId) -> PathBuf {
        self.spool_dir.join(id.as_str())
    }

    pub(crate) fn set_hook(&self, hook: DueHook) {
        *lock(&self.hook) = Some(hook);
    }

    /// Runs the wake-up hook: something became due now.
    pub(crate) fn notify_due(&self) {
        let hook = lock(&self.hook).clone();
        if let Some(h) = hook {
            h();
        }
    }

    /// Moves one message between states in the counters (`None` = absent).
    pub(crate) fn count(&self, from: Option<MessageState>, to: Option<MessageState>) {
        self.count_many(from, to, 1);
    }

    /// Moves `n` messages between states in the counters: the one place they change.
    pub(crate) fn count_many(&self, from: Option<MessageState>, to: Option<MessageState>, n: i64) {
        if from == to {
            return;
        }
        let mut c = lock(&self.counts);
        if let Some(s) = from {
            c[state_slot(s)] -= n;
        }
        if let Some(s) = to {
            c[state_slot(s)] += n;
        }
    }

    /// Adds the messages the recovery scan counted.
    pub(crate) fn add_counts(&self, counts: &Counts) {
        let mut c = lock(&self.counts);
        for s in MessageState::ALL {
            c[state_slot(s)] += i64::try_from(counts.get(s)).unwrap_or(i64::MAX);
        }
    }

    /// Held (shared) from before a transaction that changes a message's state until its
    /// counters are updated, which happens only if [`ScanState::seen`] says the recovery scan
    /// counted the message already. Never held while waiting for anything else (durability,
    /// another gate): the scan takes it exclusively for each batch.
    pub(crate) fn scan_gate(&self) -> RwLockReadGuard<'_, ScanState> {
        self.scan.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The scan's own, exclusive hold on its state (one batch).
    pub(crate) fn scan_gate_mut(&self) -> RwLockWriteGuard<'_, ScanState> {
        self.scan.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn scan_done(&self) -> bool {
        self.scan_gate().done()
    }

    /// [`Store::count`] for a change made under `gate`: only if the scan counted `id` already.
    pub(crate) fn count_seen(
        &self,
        gate: &ScanState,
        id: QueueId,
        from: Option<MessageState>,
        to: Option<MessageState>,
    ) {
        if gate.seen(id) {
            self.count(from, to);
        }
    }

    /// Replaces the counters (`heal`, from a scan of every record).
    pub(crate) fn reset_counts(&self, counts: Counts) {
        let mut c = lock(&self.counts);
        for s in MessageState::ALL {
            c[state_slot(s)] = i64::try_from(counts.get(s)).unwrap_or(i64::MAX);
        }
    }

    pub(crate) fn counts(&self) -> Counts {
        let c = lock(&self.counts);
        let mut out = Counts::default();
        for s in MessageState::ALL {
            *out.slot(s) = u64::try_from(c[state_slot(s)]).unwrap_or(0);
        }
        out
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

    pub(crate) fn corrupt_records(&self) -> Vec<CorruptRecord> {
        lock(&self.corrupt).clone()
    }

    pub(crate) fn drop_bad_due_key(&self, k: &[u8]) -> Result<(), QueueError> {
        self.report_corrupt(&QueueError::Corrupt {
            tree: "due",
            key: key_name(k),
            reason: "malformed schedule key".into(),
        });
        self.trees()?
            .due
            .remove(k)
            .map_err(QueueError::db("drop due"))?;
        Ok(())
    }

    pub(crate) fn decode_meta(&self, k: &[u8], v: &[u8]) -> Result<MessageRecord, QueueError> {
        decode("meta", k, v).inspect_err(|e| self.report_corrupt(e))
    }

    pub(crate) fn record(&self, id: QueueId) -> Result<Option<MessageRecord>, QueueError> {
        match self
            .trees()?
            .meta
            .get(id.key())
            .map_err(QueueError::db("read message"))?
        {
            Some(v) => self.decode_meta(&id.key(), &v).map(Some),
            None => Ok(None),
        }
    }

    /// The readable recipient records of a message, with their indexes.
    pub(crate) fn recipients(
        &self,
        id: QueueId,
        count: u32,
    ) -> Result<Vec<(u32, RecipientRecord)>, QueueError> {
        let t = self.trees()?;
        let mut out = Vec::with_capacity(count as usize);
        for i in 0..count {
            let k = rcpt_key(id, i);
            let Some(v) = t.rcpt.get(k).map_err(QueueError::db("read recipient"))? else {
                continue;
            };
            match decode::<RecipientRecord>("rcpt", &k, &v) {
                Ok(r) => out.push((i, r)),
                Err(e) => self.report_corrupt(&e),
            }
        }
        Ok(out)
    }

    /// Where a message's body is: its bytes (inline), or a file and an offset.
    fn locate_body(&self, id: QueueId, rec: &MessageRecord) -> Result<Located, QueueError> {
        match rec.body {
            BodyLoc::Inline => self
                .trees()?
                .body
                .get(id.key())
                .map_err(QueueError::db("read body"))?
                .map(Located::Inline)
                .ok_or_else(|| QueueError::Corrupt {
                    tree: "body",
                    key: id.to_string(),
                    reason: "inline body missing".into(),
                }),
            BodyLoc::Spool => Ok(Located::File(self.spool_path(id), 0)),
            BodyLoc::Log { seg, off } => Ok(Located::File(self.bodylog.path(seg), off)),
        }
    }

    pub(crate) fn open_body(
        &self,
        id: QueueId,
        rec: &MessageRecord,
    ) -> Result<BodyReader, QueueError> {
        match self.locate_body(id, rec)? {
            Located::Inline(data) => Ok(BodyReader::inline(data, rec.size, rec.crc32)),
            Located::File(path, off) => BodyReader::spool(&path, off, rec.size, rec.crc32),
        }
    }

    /// Fails where [`Store::open_body`] would fail to open the body, without reading it.
    pub(crate) fn check_body(&self, id: QueueId, rec: &MessageRecord) -> Result<(), QueueError> {
        match self.locate_body(id, rec)? {
            Located::Inline(_) => Ok(()),
            Located::File(path, _) => File::open(&path)
                .map(drop)
                .map_err(QueueError::io("open body file", &path)),
        }
    }

    /// Frees a removed message's body storage (after the removal is durable). `counted`: the
    /// recovery scan had counted the message's segment reference when it was removed
    /// ([`ScanState::seen`] under the removal's gate).
    pub(crate) fn release_body(&self, id: QueueId, loc: BodyLoc, counted: bool) {
        match loc {
            BodyLoc::Inline => {}
            BodyLoc::Log { seg, .. } if counted => self.bodylog.release(seg),
            BodyLoc::Log { .. } => {}
            BodyLoc::Spool => {
                let path = self.spool_path(id);
                if let Err(e) = std::fs::remove_file(&path) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        tracing::warn!(path = %path.display(), error = %e, "could not remove spool file");
                    }
                }
            }
        }
    }
}

enum Located {
    Inline(sled::IVec),
    File(PathBuf, u64),
}
