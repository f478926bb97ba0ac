//! Recovery at open: leases of a crashed process return to due and spool files nobody
//! references (a writer that died before `commit`, or a message finished just before a crash)
//! are removed. Both touch only what they repair (the `lease` tree, the spool directory), not
//! every queued message: the per-state counters, the body-log references and the check for
//! missing bodies come from the scan `scan` runs in the background after open.

use std::collections::HashSet;
use std::time::SystemTime;

use sled::transaction::Transactional;

use crate::codec::decode;
use crate::error::QueueError;
use crate::id::QueueId;
use crate::model::{Counts, MessageRecord};
use crate::schedule::to_ms;
use crate::store::{Store, Trees};
use crate::tx::{abort, tx_err, Indexed, MessageTx};

/// Repairs the store at open; returns how many leases it released (the caller makes that
/// durable).
pub(crate) fn recover(store: &Store, t: &Trees, now: SystemTime) -> Result<usize, QueueError> {
    let released = release_leases(store, t, to_ms(now), |_| false)?;
    for id in spool_files(store)? {
        if t.meta
            .contains_key(id.key())
            .map_err(QueueError::db("look up message"))?
        {
            continue;
        }
        let path = store.spool_path(id);
        tracing::info!(path = %path.display(), "removing orphaned spool file");
        std::fs::remove_file(&path).map_err(QueueError::io("remove orphan", &path))?;
    }
    if released > 0 {
        tracing::info!(released, "leases of a previous process returned to due");
    }
    Ok(released)
}

/// Every lease at open belongs to a dead process: its message becomes due now. After a
/// reopen (`heal`), every lease but the ones `live` says a worker still holds.
pub(crate) fn release_leases(
    store: &Store,
    t: &Trees,
    now_ms: u64,
    live: impl Fn(QueueId) -> bool,
) -> Result<usize, QueueError> {
    let mut released = 0;
    for item in t.lease.iter().keys() {
        let k = item.map_err(QueueError::db("scan leases"))?;
        if QueueId::from_key(&k).is_some_and(&live) {
            continue;
        }
        let trees = (&t.meta, &t.due, &t.lease);
        let res = trees.transaction(|(meta, due, lease)| {
            lease.remove(&k)?;
            let Some(v) = meta.get(&k)? else {
                return Ok(false);
            };
            let mut rec: MessageRecord = match decode("meta", &k, &v) {
                Ok(r) => r,
                Err(e) => return abort(e),
            };
            let Some(id) = QueueId::from_key(&k) else {
                return Ok(false);
            };
            let before = Indexed::of(&rec);
            rec.lease = None;
            rec.next_ms = now_ms;
            MessageTx { meta, due, lease }.put(id, Some(before), &rec)?;
            Ok(true)
        });
        match res.map_err(tx_err("recover lease")) {
            Ok(true) => released += 1,
            Ok(false) => {}
            Err(e @ QueueError::Corrupt { .. }) => {
                store.report_corrupt(&e);
                // Without a readable record the lease entry means nothing.
                t.lease.remove(&k).map_err(QueueError::db("drop lease"))?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(released)
}

fn spool_files(store: &Store) -> Result<HashSet<QueueId>, QueueError> {
    let dir = store.spool_dir();
    let mut out = HashSet::new();
    for entry in std::fs::read_dir(dir).map_err(QueueError::io("list spool", dir))? {
        let entry = entry.map_err(QueueError::io("list spool", dir))?;
        let name = entry.file_name();
        match name.to_str().and_then(|n| n.parse::<QueueId>().ok()) {
            Some(id) => {
                out.insert(id);
            }
            None => tracing::warn!(file = ?name, "ignoring unexpected file in spool directory"),
        }
    }
    Ok(out)
}

/// The per-state counters from a scan of every record (after a reopen, `heal`).
pub(crate) fn count_states(t: &Trees) -> Result<Counts, QueueError> {
    let mut counts = Counts::default();
    for item in t.meta.iter() {
        let (k, v) = item.map_err(QueueError::db("scan messages"))?;
        if let Ok(rec) = decode::<MessageRecord>("meta", &k, &v) {
            *counts.slot(rec.state()) += 1;
        }
    }
    Ok(counts)
}
