//! The recovery scan after open runs in the background: the queue delivers, accepts and
//! changes messages meanwhile, and once the scan is over the counters and the body log are
//! exactly what a scan of a quiet queue finds.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

use common::*;
use danerelay_queue::*;

fn tuning(pause_ms: u64) -> QueueTuning {
    QueueTuning {
        body_segment_size: 64 * 1024,
        recovery_pause: Duration::from_millis(pause_ms),
        ..QueueTuning::default()
    }
}

fn wait_recovered(q: &Queue) {
    let t = Instant::now();
    while !q.recovered() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "recovery scan never finished"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn segments(dir: &std::path::Path) -> HashSet<u64> {
    std::fs::read_dir(dir.join("bodies"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_str().unwrap().parse().unwrap())
        .collect()
}

/// What a scan of the queue at rest finds: the counters after reopening and recovering.
fn counts_at_rest(dir: &std::path::Path) -> Counts {
    let q = Queue::open_tuned(dir, opts(), tuning(0)).unwrap();
    wait_recovered(&q);
    q.counts()
}

#[test]
fn counts_after_a_restart_once_recovered_match_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open_tuned(dir.path(), opts(), tuning(0)).unwrap();
    let ids: Vec<QueueId> = (0..1200)
        .map(|i| enqueue(&q, &body(300, i as u8), &["x@example.net"]))
        .collect();
    for id in ids.iter().step_by(3) {
        assert!(q.hold(*id).unwrap());
    }
    let now = SystemTime::now();
    let leased = q.lease_due(now, 300).unwrap();
    for l in &leased[..100] {
        q.complete(l, &[(0, deferred())], now).unwrap();
    }
    for l in &leased[100..200] {
        assert!(q.complete(l, &[(0, delivered())], now).unwrap().finished);
    }
    // 100 stay leased: at the next open they are due again (pending).
    let before = q.counts();
    assert_eq!(
        (before.held, before.deferred, before.active, before.total()),
        (400, 100, 100, 1100)
    );
    drop(q);
    let q = Queue::open_tuned(dir.path(), opts(), tuning(200)).unwrap();
    assert!(
        !q.recovered(),
        "1,100 records are scanned in batches, after a pause"
    );
    wait_recovered(&q);
    let c = q.counts();
    assert_eq!(
        (c.pending, c.deferred, c.held, c.active),
        (before.pending + 100, 100, 400, 0)
    );
    assert!(q.corrupt_records().is_empty());
}

#[test]
fn messages_due_at_open_are_delivered_while_the_scan_waits() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    let a = enqueue(&q, &body(500, 1), &["x@example.net"]);
    let b = enqueue(&q, &body(500, 2), &["y@example.net"]);
    let now = SystemTime::now();
    assert_eq!(q.lease_due(now, 10).unwrap().len(), 2);
    drop(q); // a crash with both leased
    let q = Queue::open_tuned(dir.path(), opts(), tuning(3000)).unwrap();
    let leased = q.lease_due(SystemTime::now(), 10).unwrap();
    assert_eq!(
        leased.iter().map(|l| l.id).collect::<HashSet<_>>(),
        HashSet::from([a, b])
    );
    for l in &leased {
        assert_eq!(read_all(q.body(l.id).unwrap()).len(), 500);
        let c = q
            .complete(l, &[(0, delivered())], SystemTime::now())
            .unwrap();
        assert!(c.finished);
        assert_eq!(read_all(c.body.unwrap()).len(), 500);
    }
    let c = enqueue(&q, &body(500, 3), &["z@example.net"]);
    assert!(!q.recovered(), "the scan is still paused");
    // Only the new message is counted so far: the old ones left before the scan saw them.
    assert_eq!(q.counts().pending, 1);
    wait_recovered(&q);
    assert_eq!(q.counts().total(), 1);
    assert_eq!(read_all(q.body(c).unwrap()), body(500, 3));
}

/// Every kind of change, to messages the scan has and has not reached, while it runs in
/// small steps; afterwards the counters equal a quiet rescan, every remaining body reads
/// back (no segment deleted under it) and segments nothing needs are gone.
#[test]
fn changes_during_the_scan_are_counted_once_and_segments_stay_right() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open_tuned(dir.path(), opts(), tuning(0)).unwrap();
    let ids: Vec<QueueId> = (0..3000)
        .map(|i| enqueue(&q, &body(700, i as u8), &["x@example.net"]))
        .collect();
    for id in ids.iter().skip(1).step_by(4) {
        q.hold(*id).unwrap();
    }
    let old_segments = segments(dir.path());
    assert!(old_segments.len() > 20, "{old_segments:?}");
    drop(q);
    // Six batches, 15 ms apart: the changes below land before, between and after them.
    let q = Queue::open_tuned(dir.path(), opts(), tuning(15)).unwrap();
    let admin = {
        let (q, ids) = (q.clone(), ids.clone());
        std::thread::spawn(move || {
            // From both ends, so that some changes hit records the scan has not reached.
            // (A message delivered meanwhile is gone: `false`.)
            for id in ids.iter().rev().step_by(4).take(200) {
                q.delete(*id).unwrap();
            }
            for id in ids.iter().step_by(4).take(200) {
                q.delete(*id).unwrap();
            }
            for id in ids.iter().skip(1).step_by(8) {
                q.release(*id).unwrap();
            }
        })
    };
    let mut finished = 0;
    for round in 0..60u8 {
        enqueue(&q, &body(700, round), &["n@example.net"]);
        let now = SystemTime::now();
        for (i, l) in q.lease_due(now, 40).unwrap().into_iter().enumerate() {
            let outcome = if i % 2 == 0 { delivered() } else { deferred() };
            match q.complete(&l, &[(0, outcome)], now) {
                Ok(c) => finished += usize::from(c.finished),
                // Deleted by the operator while leased.
                Err(QueueError::NotFound { .. }) => {}
                Err(e) => panic!("complete {}: {e}", l.id),
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    admin.join().unwrap();
    assert!(finished > 100, "{finished} delivered during the scan");
    wait_recovered(&q);
    let live = q.counts();
    // Every body still queued reads back whole (CRC-checked).
    let all = q.list(&ListFilter::default()).unwrap();
    assert_eq!(all.len() as u64, live.total());
    for m in &all {
        assert_eq!(read_all(q.body(m.id).unwrap()).len(), 700, "{}", m.id);
    }
    // Old segments nobody refers to are gone once the scan is over.
    let left = segments(dir.path());
    let needed = all.iter().filter(|m| ids.contains(&m.id)).count();
    assert!(
        left.intersection(&old_segments).count() <= needed,
        "{} old segments left for {needed} old messages",
        left.intersection(&old_segments).count()
    );
    drop(q);
    assert_eq!(counts_at_rest(dir.path()), live);
}

#[test]
fn old_segments_wait_for_the_scan_then_go() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open_tuned(dir.path(), opts(), tuning(0)).unwrap();
    let ids: Vec<QueueId> = (0..400)
        .map(|i| enqueue(&q, &body(2000, i as u8), &["x@example.net"]))
        .collect();
    drop(q);
    let old = segments(dir.path());
    let q = Queue::open_tuned(dir.path(), opts(), tuning(3000)).unwrap();
    // Delete all but the last message before the scan starts: nothing was counted yet, so
    // no reference is released and no old segment may go while the scan could still need it.
    for id in &ids[..399] {
        assert!(q.delete(*id).unwrap());
    }
    assert!(!q.recovered());
    assert!(old.is_subset(&segments(dir.path())));
    wait_recovered(&q);
    let left: HashSet<u64> = segments(dir.path()).intersection(&old).copied().collect();
    assert_eq!(left.len(), 1, "only the last message's segment: {left:?}");
    assert_eq!(read_all(q.body(ids[399]).unwrap()), body(2000, 143));
    assert_eq!(q.counts().total(), 1);
}
