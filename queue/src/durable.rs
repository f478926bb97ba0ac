//! Durability: group commit and the fsyncs sled 0.34 leaves out.
//!
//! `sled::Db::flush` writes its log buffers with `pwrite` and then only
//! `sync_file_range(WAIT_BEFORE|WRITE|WAIT_AFTER)`, which pushes the pages to the device but
//! neither flushes the device's volatile cache nor persists the file size/extent metadata of a
//! growing log, so an acknowledged write can vanish on power loss. Large values go to
//! `blobs/<lsn>` files that sled writes without any sync at all. After every `flush` the
//! committer therefore `fdatasync`s sled's log file, every blob file it has not synced yet,
//! and the blob directory when it gained entries.
//!
//! The same round first `fdatasync`s the body-log segments written since the last round
//! (see `bodylog`), and stores the new messages handed in since the last round (see
//! `enqueue`): their bodies are appended and synced before their records go into sled.
//!
//! Group commit: writers apply their sled transaction (or hand in a new message), then take a
//! ticket and wait. One committer thread repeatedly takes everything requested so far, runs one
//! flush + syncs for the whole batch, and wakes every writer whose ticket it covered. 128
//! concurrent writers therefore cost a handful of syncs, not 128, and a writer is only woken
//! after a sync that started after its write.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crate::enqueue::{self, NewMessage, Placed};
use crate::error::QueueError;
use crate::fs::sync_dir;
use crate::lock::{lock, wait};
use crate::store::Store;

#[derive(Default)]
struct State {
    /// Highest ticket handed out.
    requested: u64,
    /// New messages for the next round.
    messages: Vec<NewMessage>,
    /// Every ticket up to here is durable.
    synced: u64,
    /// Tickets up to here belonged to a batch whose sync failed.
    failed_through: u64,
    last_error: Option<String>,
    shutdown: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Number of flush+sync rounds run (each covers a whole batch).
    syncs: AtomicU64,
    /// New messages handed in.
    submitted: AtomicU64,
    work: Condvar,
    done: Condvar,
}

/// The group-commit handle; dropping it stops the committer thread after a last batch.
pub(crate) struct GroupCommit {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl GroupCommit {
    /// Starts the committer thread; it shares the queue's [`Store`] (trees, body log, counters
    /// and wake-up hook) with everybody else.
    pub(crate) fn start(
        db: sled::Db,
        sled_dir: &Path,
        store: Arc<Store>,
    ) -> Result<GroupCommit, QueueError> {
        let mut syncer = SledSyncer::new(db, sled_dir)?;
        // Everything sled created while opening is made durable first: it writes `conf`
        // without any sync, and creates `db`, `blobs/` and snapshots in its directory.
        let conf = sled_dir.join("conf");
        if conf.exists() {
            File::open(&conf)
                .and_then(|f| f.sync_all())
                .map_err(QueueError::io("fsync sled conf", &conf))?;
        }
        // Bodies first: a record reaching the disk must never point at a body that did not.
        store.bodylog.sync()?;
        syncer.sync_sled()?;
        sync_dir(sled_dir)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            syncs: AtomicU64::new(0),
            submitted: AtomicU64::new(0),
            work: Condvar::new(),
            done: Condvar::new(),
        });
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("queue-commit".into())
            .spawn(move || run(&worker, &mut syncer, &store))
            .map_err(QueueError::io("spawn committer", sled_dir))?;
        Ok(GroupCommit {
            shared,
            thread: Some(thread),
        })
    }

    /// Flush+sync rounds so far.
    pub(crate) fn syncs(&self) -> u64 {
        self.shared.syncs.load(Ordering::Relaxed)
    }

    /// Durability requests so far (new messages, completions, admin changes).
    pub(crate) fn requests(&self) -> u64 {
        lock(&self.shared.state).requested + self.shared.submitted.load(Ordering::Relaxed)
    }

    /// Returns once everything written to sled before this call is on stable storage.
    pub(crate) fn wait_durable(&self) -> Result<(), QueueError> {
        let mut st = lock(&self.shared.state);
        if st.shutdown {
            return Err(closing());
        }
        st.requested += 1;
        let ticket = st.requested;
        self.shared.work.notify_one();
        loop {
            if st.synced >= ticket {
                return Ok(());
            }
            if st.failed_through >= ticket {
                return Err(QueueError::Sync {
                    reason: st.last_error.clone().unwrap_or_default(),
                });
            }
            st = wait(&self.shared.done, st);
        }
    }

    /// Hands a new message to the next round; its `done` runs once it is durable (or failed).
    /// Never blocks on I/O.
    pub(crate) fn submit(&self, msg: NewMessage) {
        let mut st = lock(&self.shared.state);
        if st.shutdown {
            drop(st);
            msg.fail(closing());
            return;
        }
        st.messages.push(msg);
        self.shared.submitted.fetch_add(1, Ordering::Relaxed);
        self.shared.work.notify_one();
    }
}

/// The error each message of a failed round reports.
fn batch_failed(e: &QueueError) -> QueueError {
    QueueError::Sync {
        reason: e.to_string(),
    }
}

fn closing() -> QueueError {
    QueueError::Sync {
        reason: "queue is closing".into(),
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        lock(&self.shared.state).shutdown = true;
        self.shared.work.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A panic inside sled must not leave every writer waiting forever: it fails the round.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, QueueError>) -> Result<T, QueueError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(QueueError::Sync {
            reason: format!("panic while {what}"),
        })
    })
}

fn run(shared: &Shared, syncer: &mut SledSyncer, store: &Store) {
    loop {
        let (target, messages) = {
            let mut st = lock(&shared.state);
            while st.requested == st.synced.max(st.failed_through)
                && st.messages.is_empty()
                && !st.shutdown
            {
                st = wait(&shared.work, st);
            }
            if st.requested == st.synced.max(st.failed_through)
                && st.messages.is_empty()
                && st.shutdown
            {
                return;
            }
            (st.requested, std::mem::take(&mut st.messages))
        };
        let queued = !messages.is_empty();
        let result = round(syncer, store, messages);
        shared.syncs.fetch_add(1, Ordering::Relaxed);
        let mut st = lock(&shared.state);
        match result {
            Ok(()) => st.synced = target,
            Err(e) => {
                tracing::error!(error = %e, "queue sync failed; batch not acknowledged");
                st.failed_through = target;
                st.last_error = Some(e.to_string());
            }
        }
        shared.done.notify_all();
        drop(st);
        if queued {
            store.notify_due();
        }
    }
}

/// One round: places the new messages' bodies, syncs them, inserts the records, and syncs
/// sled — which also covers every ticket taken before the round began.
fn round(
    syncer: &mut SledSyncer,
    store: &Store,
    messages: Vec<NewMessage>,
) -> Result<(), QueueError> {
    let started = std::time::Instant::now();
    let count = messages.len();
    let placed: Vec<Placed> = messages
        .into_iter()
        .filter_map(|msg| enqueue::place(store, msg))
        .collect();
    if let Err(e) = guarded("syncing bodies", || store.bodylog.sync()) {
        for p in placed {
            enqueue::finish(store, p, Err(batch_failed(&e)));
        }
        return Err(e);
    }
    let mut encoded = Vec::with_capacity(placed.len());
    for mut p in placed {
        match enqueue::encode_record(&mut p) {
            Ok(meta) => encoded.push((p, meta)),
            Err(e) => enqueue::finish(store, p, Err(e)),
        }
    }
    let inserted = match guarded("storing messages", || enqueue::insert_all(store, &encoded)) {
        Ok(()) => encoded.into_iter().map(|(p, _)| p).collect(),
        Err(e) => {
            // Nothing of theirs is in sled; the round still syncs for the other writers.
            for (p, _) in encoded {
                enqueue::finish(store, p, Err(batch_failed(&e)));
            }
            Vec::new()
        }
    };
    let result = guarded("syncing", || syncer.sync_sled());
    tracing::trace!(messages = count, elapsed = ?started.elapsed(), "queue commit round");
    match result {
        Ok(()) => {
            for p in inserted {
                enqueue::finish(store, p, Ok(()));
            }
            Ok(())
        }
        Err(e) => {
            for p in inserted {
                enqueue::undo(store, &p);
                enqueue::finish(store, p, Err(batch_failed(&e)));
            }
            Err(e)
        }
    }
}

/// Flushes sled and syncs the files it leaves unsynced.
struct SledSyncer {
    db: sled::Db,
    log: File,
    log_path: PathBuf,
    blob_dir: PathBuf,
    /// Blob files already synced, with the length they had then: sled may still be writing a
    /// blob when we list it, so one whose length changed is synced again.
    synced_blobs: HashMap<OsString, u64>,
}

impl SledSyncer {
    fn new(db: sled::Db, sled_dir: &Path) -> Result<SledSyncer, QueueError> {
        let log_path = sled_dir.join("db");
        let log = File::open(&log_path).map_err(QueueError::io("open sled log", &log_path))?;
        Ok(SledSyncer {
            db,
            log,
            log_path,
            blob_dir: sled_dir.join("blobs"),
            synced_blobs: HashMap::new(),
        })
    }

    /// Flushes sled and syncs its files (the body log is the caller's business).
    fn sync_sled(&mut self) -> Result<(), QueueError> {
        self.db.flush().map_err(QueueError::db("flush"))?;
        self.log
            .sync_data()
            .map_err(QueueError::io("fdatasync sled log", &self.log_path))?;
        self.sync_blobs()
    }

    fn sync_blobs(&mut self) -> Result<(), QueueError> {
        let entries = match std::fs::read_dir(&self.blob_dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(QueueError::io("list sled blobs", &self.blob_dir)(e)),
        };
        let mut present = HashMap::new();
        let mut new_entries = false;
        for entry in entries {
            let entry = entry.map_err(QueueError::io("list sled blobs", &self.blob_dir))?;
            let name = entry.file_name();
            let path = entry.path();
            let len = match entry.metadata() {
                Ok(m) => m.len(),
                // sled garbage-collected it meanwhile: nothing to make durable.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(QueueError::io("stat sled blob", &path)(e)),
            };
            if self.synced_blobs.get(&name) != Some(&len) {
                match File::open(&path) {
                    Ok(f) => f
                        .sync_data()
                        .map_err(QueueError::io("fdatasync sled blob", &path))?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(QueueError::io("open sled blob", &path)(e)),
                }
                new_entries = true;
            }
            present.insert(name, len);
        }
        if new_entries {
            sync_dir(&self.blob_dir)?;
        }
        self.synced_blobs = present;
        Ok(())
    }
}
