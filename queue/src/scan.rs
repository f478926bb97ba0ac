//! The background half of recovery: one pass over the message records that were queued at
//! open, in key order and in small batches, while the queue already accepts and delivers.
//! It counts the records per state (for [`crate::Queue::counts`]), counts the references to
//! each body-log segment (so that a segment is deleted only once nothing needs it), and reports
//! records whose body is missing. Nothing of it is kept per message.
//!
//! `Queue::open` used to do all of this before returning, which with 1,000,000 queued
//! messages took about 3 s and pulled every record through sled's cache; now open only
//! returns the leases of the previous process to due and removes orphaned spool files.
//!
//! ## Why the counters stay exact while records change under the scan
//! A message is *old* when its id is at most `floor`, the last id queued at open; new
//! messages (larger ids) are counted as they come. An old message is *seen* once the scan's
//! cursor has passed it. Every change of an old message's state (`lease_due`, `complete`,
//! `abandon`, admin changes, `delete`) holds [`Store::scan_gate`] (a read lock) from before
//! its transaction until its counters are updated, and updates them only if the message is
//! already seen; each batch of the scan holds the write lock. So a change lies wholly before
//! the batch that reads its record (which then reads the new state) or wholly after it (and is
//! counted as a change). The body of a removed message releases its segment reference only
//! if the message was seen when it was removed; old segments are deleted only when the scan
//! is over (`BodyLog::end_recovery`).

use std::ops::Bound;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::codec::{decode, key_name};
use crate::error::QueueError;
use crate::id::QueueId;
use crate::model::{BodyLoc, Counts, MessageRecord};
use crate::store::{Store, Trees};

/// Records per batch: short enough that a writer waits at most a millisecond or two.
const BATCH: usize = 512;
/// Batches `open` scans itself (16,384 records, some 20 ms of a release build).
const INLINE_BATCHES: usize = 32;
/// Pause before a batch that failed (storage being repaired) is tried again.
const RETRY: Duration = Duration::from_millis(200);

/// Scans up to [`INLINE_BATCHES`] batches at once (a small queue is then fully counted when
/// `open` returns), then starts the background scan for the rest, if any; it stops by itself
/// when done or when the queue is dropped.
pub(crate) fn start(store: &Arc<Store>, t: &Trees) -> Result<(), QueueError> {
    let started = std::time::Instant::now();
    if store.tuning.recovery_pause.is_zero() {
        for _ in 0..INLINE_BATCHES {
            if !batch(store, t)? {
                finished(store, started);
                return Ok(());
            }
        }
    }
    if store.scan_done() {
        return Ok(());
    }
    let weak = Arc::downgrade(store);
    let pause = store.tuning.recovery_pause;
    std::thread::Builder::new()
        .name("queue-recover".into())
        .spawn(move || run(&weak, pause))
        .map(drop)
        .map_err(QueueError::io("spawn recovery scan", store.dir()))
}

fn run(weak: &Weak<Store>, pause: Duration) {
    let started = std::time::Instant::now();
    loop {
        std::thread::sleep(pause);
        let Some(store) = weak.upgrade() else {
            return; // the queue was closed
        };
        let result = store.trees().and_then(|t| batch(&store, &t));
        match result {
            Ok(true) => continue,
            Ok(false) => return finished(&store, started),
            Err(e) => {
                tracing::warn!(error = %e, "queue recovery scan: batch failed, retrying");
                drop(store);
                std::thread::sleep(RETRY);
            }
        }
    }
}

/// Logs the end of the scan, with the number of messages now queued (benches read it).
fn finished(store: &Store, started: std::time::Instant) {
    let counts = store.counts();
    tracing::info!(elapsed = ?started.elapsed(), messages = counts.total(), ?counts, "queue recovery scan finished");
}

/// Runs the rest of the scan now, on `t` (`heal`, before it recounts).
pub(crate) fn finish(store: &Store, t: &Trees) -> Result<(), QueueError> {
    while batch(store, t)? {}
    Ok(())
}

/// Scans the next batch; `false` once the scan is over (then old body-log segments nothing
/// refers to are deleted).
fn batch(store: &Store, t: &Trees) -> Result<bool, QueueError> {
    let mut st = store.scan_gate_mut();
    let Some(floor) = st.floor.filter(|_| !st.done) else {
        return Ok(false);
    };
    let lower = st.cursor.map_or(Bound::Unbounded, Bound::Excluded);
    let mut counts = Counts::default();
    let mut refs = Vec::new();
    let (mut last, mut n) = (None, 0);
    for item in t.meta.range((lower, Bound::Included(floor))).take(BATCH) {
        let (k, v) = item.map_err(QueueError::db("scan messages"))?;
        n += 1;
        last = k.as_ref().try_into().ok().or(last);
        let rec: MessageRecord = match decode("meta", &k, &v) {
            Ok(r) => r,
            Err(e) => {
                store.report_corrupt(&e);
                continue;
            }
        };
        let missing = match rec.body {
            BodyLoc::Log { seg, .. } if st.segments.contains(&seg) => {
                refs.push(seg);
                None
            }
            BodyLoc::Log { .. } => Some("body log segment missing"),
            BodyLoc::Spool => QueueId::from_key(&k)
                .filter(|id| !store.spool_path(*id).exists())
                .map(|_| "spool file missing"),
            BodyLoc::Inline => None,
        };
        if let Some(reason) = missing {
            store.report_corrupt(&QueueError::Corrupt {
                tree: "meta",
                key: key_name(&k),
                reason: reason.into(),
            });
        }
        *counts.slot(rec.state()) += 1;
    }
    store.add_counts(&counts);
    for seg in refs {
        store.bodylog.add_ref(seg);
    }
    match last {
        Some(k) if n == BATCH && k < floor => {
            st.cursor = Some(k);
            Ok(true)
        }
        _ => {
            st.cursor = Some(floor);
            st.done = true;
            store.bodylog.end_recovery();
            Ok(false)
        }
    }
}
