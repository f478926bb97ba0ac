//! Recovery at open: leases of a crashed process return to due, the per-state counters are
//! rebuilt, spool files nobody references (a writer that died before `commit`, or a message
//! finished just before a crash) are removed, and messages whose spool file is missing are
//! reported as corrupt.

use std::collections::HashSet;
use std::time::SystemTime;

use sled::transaction::Transactional;

use crate::error::QueueError;
use crate::id::QueueId;
use crate::model::{BodyLoc, MessageRecord};
use crate::schedule::{due_key, to_ms};
use crate::store::{abort, decode, encode, key_name, state_slot, tx_err, Inner};

pub(crate) fn recover(inner: &Inner, now: SystemTime) -> Result<(), QueueError> {
    let released = release_leases(inner, to_ms(now))?;
    let spool_files = spool_files(inner)?;
    let segments = inner.bodylog.segment_set()?;
    let mut counts = [0i64; 4];
    let mut referenced = HashSet::new();
    for item in inner.meta.iter() {
        let (k, v) = item.map_err(QueueError::db("scan messages"))?;
        let rec: MessageRecord = match decode("meta", &k, &v) {
            Ok(r) => r,
            Err(e) => {
                inner.report_corrupt(&e);
                continue;
            }
        };
        let Some(id) = QueueId::from_key(&k) else {
            continue;
        };
        let missing = match rec.body {
            BodyLoc::Spool if spool_files.contains(&id) => {
                referenced.insert(id);
                None
            }
            BodyLoc::Spool => Some("spool file missing"),
            BodyLoc::Log { seg, .. } if segments.contains(&seg) => {
                inner.bodylog.add_ref(seg);
                None
            }
            BodyLoc::Log { .. } => Some("body log segment missing"),
            BodyLoc::Inline => None,
        };
        if let Some(reason) = missing {
            inner.report_corrupt(&QueueError::Corrupt {
                tree: "meta",
                key: key_name(&k),
                reason: reason.into(),
            });
        }
        counts[state_slot(rec.state())] += 1;
    }
    inner.reset_counts(counts);
    for id in spool_files.difference(&referenced) {
        let path = inner.spool_path(*id);
        tracing::info!(path = %path.display(), "removing orphaned spool file");
        std::fs::remove_file(&path).map_err(QueueError::io("remove orphan", &path))?;
    }
    inner.bodylog.remove_unreferenced()?;
    if released > 0 {
        tracing::info!(released, "leases of a previous process returned to due");
        inner.commit.wait_durable()?;
    }
    Ok(())
}

/// Every lease at open belongs to a dead process: its message becomes due now.
fn release_leases(inner: &Inner, now_ms: u64) -> Result<usize, QueueError> {
    let mut released = 0;
    for item in inner.lease.iter().keys() {
        let k = item.map_err(QueueError::db("scan leases"))?;
        let res = (&inner.meta, &inner.due, &inner.lease).transaction(|(meta, due, lease)| {
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
            if rec.scheduled() {
                due.remove(&due_key(rec.next_ms, id))?;
                due.insert(&due_key(now_ms, id), &[])?;
            }
            rec.lease = None;
            rec.next_ms = now_ms;
            match encode("message", &rec) {
                Ok(bytes) => meta.insert(&k, bytes)?,
                Err(e) => return abort(e),
            };
            Ok(true)
        });
        match res.map_err(tx_err("recover lease")) {
            Ok(true) => released += 1,
            Ok(false) => {}
            Err(e @ QueueError::Corrupt { .. }) => {
                inner.report_corrupt(&e);
                // Without a readable record the lease entry means nothing.
                inner
                    .lease
                    .remove(&k)
                    .map_err(QueueError::db("drop lease"))?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(released)
}

fn spool_files(inner: &Inner) -> Result<HashSet<QueueId>, QueueError> {
    let dir = inner.spool_dir();
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
