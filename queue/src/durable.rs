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
//! `enqueue`): their bodies are appended and synced before their records go into sled. Then
//! it applies the delivery outcomes handed in (`Queue::complete`), all in one transaction
//! (see `outcome::apply_batch`).
//!
//! Group commit: writers apply their sled transaction (or hand in a new message), then take a
//! ticket and wait. One committer thread repeatedly takes everything requested so far, runs one
//! flush + syncs for the whole batch, and wakes every writer whose ticket it covered. 128
//! concurrent writers therefore cost a handful of syncs, not 128, and a writer is only woken
//! after a sync that started after its write.

//! Failure: a round that fails (or a writer that hits a storage error, see `Store::fail`)
//! puts the queue into a failed state: every waiting ticket and message is failed, new ones
//! are refused at once, and the committer tries to repair the store (`heal`) every few
//! hundred milliseconds until writes succeed again — without a restart.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::enqueue::{self, NewMessage, Placed};
use crate::error::QueueError;
use crate::fs::sync_dir;
use crate::heal;
use crate::lock::{lock, wait, wait_timeout};
use crate::outcome::{self, Applied, OutcomeReq};
use crate::sledsync::{guarded, SledSyncer};
use crate::store::{Store, Trees};

#[derive(Default)]
struct State {
    /// Highest ticket handed out.
    requested: u64,
    /// New messages for the next round.
    messages: Vec<NewMessage>,
    /// Delivery outcomes for the next round.
    outcomes: Vec<OutcomeReq>,
    /// Every ticket up to here is durable.
    synced: u64,
    /// Tickets up to here belonged to a batch whose sync failed.
    failed_through: u64,
    last_error: Option<String>,
    /// The sled opening (`Trees::gen`) rounds sync now.
    gen: u64,
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
    store: Arc<Store>,
    thread: Option<JoinHandle<()>>,
}

/// First pause between repair attempts; it doubles up to [`HEAL_MAX`].
const HEAL_FIRST: Duration = Duration::from_millis(250);
const HEAL_MAX: Duration = Duration::from_secs(2);

impl GroupCommit {
    /// Starts the committer thread; it shares the queue's [`Store`] (trees, body log, counters
    /// and wake-up hook) with everybody else.
    pub(crate) fn start(store: Arc<Store>) -> Result<GroupCommit, QueueError> {
        let sled_dir = store.dir().join("sled");
        let trees = store.trees()?;
        let mut syncer = SledSyncer::new(&trees, &sled_dir)?;
        let gen = trees.gen;
        drop(trees);
        // Everything sled created while opening is made durable first: it writes `conf`
        // without any sync, and creates `db`, `blobs/` and snapshots in its directory.
        sync_conf(&sled_dir)?;
        // Bodies first: a record reaching the disk must never point at a body that did not.
        store.bodylog.sync()?;
        syncer.sync_sled()?;
        sync_dir(&sled_dir)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                gen,
                ..State::default()
            }),
            syncs: AtomicU64::new(0),
            submitted: AtomicU64::new(0),
            work: Condvar::new(),
            done: Condvar::new(),
        });
        let worker = Arc::clone(&shared);
        let worker_store = Arc::clone(&store);
        let thread = std::thread::Builder::new()
            .name("queue-commit".into())
            .spawn(move || run(&worker, Some(syncer), &worker_store))
            .map_err(QueueError::io("spawn committer", &sled_dir))?;
        Ok(GroupCommit {
            shared,
            store,
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

    /// Returns once everything written to sled (opening `gen`) before this call is on stable
    /// storage. Fails at once while storage is failed, and when sled was reopened since the
    /// write (it went to the old opening and is lost, or at least not known durable).
    pub(crate) fn wait_durable(&self, gen: u64) -> Result<(), QueueError> {
        let mut st = lock(&self.shared.state);
        if st.shutdown {
            return Err(closing());
        }
        if self.store.failed() {
            return Err(unavailable(&self.store));
        }
        if st.gen != gen {
            return Err(QueueError::Sync {
                reason: "the queue database was reopened after a storage error".into(),
            });
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

    /// Hands a delivery outcome to the next round; its `reply` is answered once the round
    /// is durable (or failed). Never blocks on I/O.
    pub(crate) fn submit_outcome(&self, req: OutcomeReq) {
        let mut st = lock(&self.shared.state);
        let refused = if st.shutdown {
            Some(closing())
        } else if self.store.failed() {
            Some(unavailable(&self.store))
        } else {
            None
        };
        if let Some(e) = refused {
            drop(st);
            let _ = req.reply.send(Err(e));
            return;
        }
        st.outcomes.push(req);
        self.shared.submitted.fetch_add(1, Ordering::Relaxed);
        self.shared.work.notify_one();
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
        if self.store.failed() {
            drop(st);
            msg.fail(unavailable(&self.store));
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

fn unavailable(store: &Store) -> QueueError {
    QueueError::Unavailable {
        reason: store.failure().unwrap_or_else(|| "storage failed".into()),
    }
}

fn sync_conf(sled_dir: &Path) -> Result<(), QueueError> {
    let conf = sled_dir.join("conf");
    if conf.exists() {
        File::open(&conf)
            .and_then(|f| f.sync_all())
            .map_err(QueueError::io("fsync sled conf", &conf))?;
    }
    Ok(())
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

fn run(shared: &Shared, mut syncer: Option<SledSyncer>, store: &Store) {
    let mut pause = HEAL_FIRST;
    loop {
        if store.failed() {
            if !fail_waiting(shared, store) {
                return;
            }
            match heal::heal(store, &mut syncer) {
                Ok(gen) => {
                    lock(&shared.state).gen = gen;
                    store.healed();
                    store.notify_due();
                    pause = HEAL_FIRST;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "queue storage still failing");
                    let st = lock(&shared.state);
                    if !st.shutdown {
                        drop(wait_timeout(&shared.work, st, pause));
                    }
                    pause = (pause * 2).min(HEAL_MAX);
                }
            }
            continue;
        }
        let (target, messages, outcomes) = {
            let mut st = lock(&shared.state);
            while st.requested == st.synced.max(st.failed_through)
                && st.messages.is_empty()
                && st.outcomes.is_empty()
                && !st.shutdown
                && !store.failed()
            {
                // Woken by work; a writer's storage failure is noticed within a second.
                st = wait_timeout(&shared.work, st, Duration::from_secs(1));
            }
            if store.failed() {
                continue;
            }
            if st.requested == st.synced.max(st.failed_through)
                && st.messages.is_empty()
                && st.outcomes.is_empty()
                && st.shutdown
            {
                return;
            }
            (
                st.requested,
                std::mem::take(&mut st.messages),
                std::mem::take(&mut st.outcomes),
            )
        };
        let queued = !messages.is_empty();
        let result = match (syncer.as_mut(), store.trees()) {
            (Some(syncer), Ok(trees)) => round(syncer, store, &trees, messages, &outcomes),
            (_, other) => {
                let e = other.err().unwrap_or_else(|| QueueError::Unavailable {
                    reason: "no database handle".into(),
                });
                for m in messages {
                    m.fail(batch_failed(&e));
                }
                Err(e)
            }
        };
        let result = match result {
            Ok(applied) => {
                answer(outcomes, Ok(applied));
                Ok(())
            }
            Err(e) => {
                answer(outcomes, Err(&e));
                Err(e)
            }
        };
        shared.syncs.fetch_add(1, Ordering::Relaxed);
        let mut st = lock(&shared.state);
        match result {
            Ok(()) => st.synced = target,
            Err(e) => {
                store.fail_db(&e);
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

/// Answers each outcome of a round: its own result once the round is durable, or the
/// round's failure.
fn answer(
    outcomes: Vec<OutcomeReq>,
    results: Result<Vec<Result<Applied, QueueError>>, &QueueError>,
) {
    match results {
        Ok(applied) => {
            for (o, r) in outcomes.into_iter().zip(applied) {
                let _ = o.reply.send(r);
            }
        }
        Err(e) => {
            for o in outcomes {
                let _ = o.reply.send(Err(batch_failed(e)));
            }
        }
    }
}

/// While storage is failed: fails every ticket and message waiting. `false` at shutdown.
fn fail_waiting(shared: &Shared, store: &Store) -> bool {
    let mut st = lock(&shared.state);
    let messages = std::mem::take(&mut st.messages);
    let outcomes = std::mem::take(&mut st.outcomes);
    st.failed_through = st.requested;
    st.last_error = store.failure();
    let shutdown = st.shutdown;
    shared.done.notify_all();
    drop(st);
    for m in messages {
        m.fail(unavailable(store));
    }
    for o in outcomes {
        let _ = o.reply.send(Err(unavailable(store)));
    }
    !shutdown
}

/// One round: places the new messages' bodies, syncs them, inserts the records, applies the
/// delivery outcomes handed in (one transaction each for both), and syncs sled — which also
/// covers every ticket taken before the round began. On failure nothing of the round is
/// acknowledged, and whatever of its new messages may have reached sled is listed for `heal`
/// to remove (its outcomes are kept by `complete`). Returns each outcome's own result.
fn round(
    syncer: &mut SledSyncer,
    store: &Store,
    trees: &Trees,
    messages: Vec<NewMessage>,
    outcomes: &[OutcomeReq],
) -> Result<Vec<Result<Applied, QueueError>>, QueueError> {
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
    let inserted: Vec<Placed> = match guarded("storing messages", || {
        enqueue::insert_all(store, trees, &encoded)
    }) {
        Ok(()) => encoded.into_iter().map(|(p, _)| p).collect(),
        Err(e) => {
            // A failed transaction leaves nothing in sled; the round fails as a whole, since
            // only storage can fail it.
            for (p, _) in encoded {
                enqueue::finish(store, p, Err(batch_failed(&e)));
            }
            return Err(e);
        }
    };
    let result = guarded("storing outcomes", || {
        outcome::apply_batch(store, trees, outcomes)
    })
    .and_then(|applied| guarded("syncing", || syncer.sync_sled()).map(|()| applied));
    tracing::trace!(messages = count, outcomes = outcomes.len(), elapsed = ?started.elapsed(), "queue commit round");
    match result {
        Ok(applied) => {
            for p in inserted {
                enqueue::finish(store, p, Ok(()));
            }
            Ok(applied)
        }
        Err(e) => {
            for p in inserted {
                enqueue::unacked(store, trees, &p);
                enqueue::finish(store, p, Err(batch_failed(&e)));
            }
            Err(e)
        }
    }
}
