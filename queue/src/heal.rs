//! Repair after a storage failure, in process: run by the committer (see `durable`) every few
//! hundred milliseconds while the queue is failed, until it succeeds.
//!
//! sled 0.34 keeps the first I/O error of its log writer forever (ENOSPC during a flush makes
//! every later write fail), so a failure that touched sled reopens the database: the old
//! opening is dropped (it flushes what it can), the directory is opened again, and sled's own
//! crash recovery takes the log back to its last intact write. What the old opening held in
//! memory only is then restored from what the queue knows:
//!
//! - leases still held by live delivery workers are written again (lease records are never
//!   synced), and every other lease returns to due;
//! - the records of messages from failed rounds (never acknowledged) are removed, in case
//!   they reached the disk;
//! - outcomes `complete` could not store are applied (a lease that is gone means the outcome
//!   reached the disk after all).
//!
//! All of it is synced before the queue reports itself healthy; the counters are then
//! recounted. A failure outside sled (a spool file that did not fit) needs no reopen: a probe
//! write that succeeds is enough.

use std::io::Write;
use std::sync::Arc;
use std::time::SystemTime;

use sled::transaction::Transactional;

use crate::enqueue::remove_records;
use crate::error::QueueError;
use crate::fs::sync_dir;
use crate::id::QueueId;
use crate::lock::lock;
use crate::model::{BodyLoc, MessageRecord};
use crate::outcome::apply_outcomes;
use crate::recover::{count_states, release_leases};
use crate::scan;
use crate::schedule::to_ms;
use crate::sledsync::{guarded, SledSyncer};
use crate::store::{open_trees, KeptOutcome, Store, Trees};
use crate::tx::{tx_err, Indexed, MessageTx};

/// Bytes the probe writes and syncs: more than a sled log flush of a busy round needs.
const PROBE_BYTES: usize = 1 << 20;

/// Tries to repair the store; returns the new opening's generation. On error the store stays
/// failed and the caller tries again later.
pub(crate) fn heal(store: &Store, syncer: &mut Option<SledSyncer>) -> Result<u64, QueueError> {
    probe(store)?;
    let current = store.trees().ok().map(|t| t.gen);
    if !store.needs_reopen() {
        if let Some(gen) = current {
            return Ok(gen);
        }
    }
    let gen = guarded("reopening the queue database", || reopen(store, syncer))?;
    Ok(gen)
}

/// Writes, syncs and removes a probe file: fails while the volume is full, read-only or
/// failing, without touching anything that matters.
fn probe(store: &Store) -> Result<(), QueueError> {
    let path = store.dir().join(".probe");
    let result = std::fs::File::create(&path)
        .and_then(|mut f| {
            f.write_all(&vec![0u8; PROBE_BYTES])?;
            f.sync_all()
        })
        .map_err(QueueError::io("probe write", &path));
    let _ = std::fs::remove_file(&path);
    result
}

fn reopen(store: &Store, syncer: &mut Option<SledSyncer>) -> Result<u64, QueueError> {
    static NEXT_GEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let gen = NEXT_GEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let sled_dir = store.dir().join("sled");
    // Every handle on the old opening must go before sled lets the directory be opened again
    // (`open_trees` waits briefly for operations still holding one).
    *syncer = None;
    drop(store.take_trees());
    let trees = open_trees(&sled_dir, &store.tuning, gen)?;
    let mut new_syncer = SledSyncer::new(&trees, &sled_dir)?;
    // The rest of the recovery scan, if it was not over, before anything is changed: the
    // references to body-log segments from before open must all be counted (the counters are
    // recounted below anyway).
    scan::finish(store, &trees)?;
    let repaired = repair(store, &trees)?;
    store.bodylog.sync()?;
    new_syncer.sync_sled()?;
    sync_dir(&sled_dir)?;
    let released = forget(store, repaired);
    store.reset_counts(count_states(&trees)?);
    store.put_trees(Arc::new(trees));
    *syncer = Some(new_syncer);
    // The recovery scan finished before the recount, so every message was counted.
    for (id, loc) in released {
        store.release_body(id, loc, true);
    }
    tracing::info!(gen, "queue database reopened after a storage error");
    Ok(gen)
}

/// What `repair` handled: forgotten once it is durable.
struct Repaired {
    unacked: Vec<(QueueId, MessageRecord)>,
    kept: Vec<KeptOutcome>,
    /// Bodies of messages a kept outcome finished, released once that is durable.
    finished: Vec<(QueueId, BodyLoc)>,
}

/// Restores what the failed opening held only in memory (see the module docs).
fn repair(store: &Store, t: &Trees) -> Result<Repaired, QueueError> {
    let live = lock(&store.health.live).clone();
    let released = release_leases(store, t, to_ms(SystemTime::now()), |id| {
        live.contains_key(&id)
    })?;
    if released > 0 {
        tracing::info!(
            released,
            "leases lost with the failed opening returned to due"
        );
    }
    for (id, lease) in &live {
        let trees = (&t.meta, &t.due, &t.lease);
        let res = trees.transaction(|(meta, due, leases)| {
            let tx = MessageTx {
                meta,
                due,
                lease: leases,
            };
            let Some(mut rec) = tx.get(*id)? else {
                return Ok(());
            };
            if rec.lease != Some(*lease) {
                let before = Indexed::of(&rec);
                rec.lease = Some(*lease);
                rec.next_ms = lease.until_ms;
                tx.put(*id, Some(before), &rec)?;
            }
            Ok(())
        });
        match res.map_err(tx_err("restore lease")) {
            Ok(()) => {}
            Err(e @ QueueError::Corrupt { .. }) => store.report_corrupt(&e),
            Err(e) => return Err(e),
        }
    }
    let unacked = lock(&store.health.unacked).clone();
    for (id, rec) in &unacked {
        if remove_records(t, *id, rec)? {
            tracing::info!(queue_id = %id, "removed an unacknowledged message that reached the disk");
        }
    }
    let kept = lock(&store.health.kept).clone();
    let mut finished = Vec::new();
    for k in &kept {
        match apply_outcomes(store, t, k.id, k.token, &k.outcomes, k.now) {
            Ok(done) => {
                tracing::info!(queue_id = %k.id, finished = done.finished, "kept outcome stored");
                if done.finished {
                    finished.push((k.id, done.body_loc()));
                }
            }
            // It reached the disk before the failure after all.
            Err(QueueError::LeaseLost { .. } | QueueError::NotFound { .. }) => {}
            Err(e @ QueueError::Corrupt { .. }) => store.report_corrupt(&e),
            Err(e) => return Err(e),
        }
    }
    Ok(Repaired {
        unacked,
        kept,
        finished,
    })
}

/// Drops what was repaired from the lists (entries added meanwhile stay for the next
/// repair); returns the bodies to release.
fn forget(store: &Store, done: Repaired) -> Vec<(QueueId, BodyLoc)> {
    lock(&store.health.unacked).retain(|(id, _)| !done.unacked.iter().any(|(u, _)| u == id));
    let mut live = lock(&store.health.live);
    let mut kept = lock(&store.health.kept);
    kept.retain(|k| !done.kept.iter().any(|d| d.id == k.id && d.token == k.token));
    for k in &done.kept {
        live.remove(&k.id);
    }
    done.finished
}
