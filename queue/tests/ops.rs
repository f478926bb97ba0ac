//! One test (or a few) per queue operation, against a real queue in a temp dir.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::*;
use danerelay_queue::*;

#[test]
fn enqueue_then_show_and_lease_returns_everything() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    let data = body(10 * 1024, 1);
    let e = env("alice@example.org");
    let id = enqueue_env(&q, e.clone(), &data, &["b@example.net", "c@Example.COM"]);

    let info = q.show(id).unwrap().unwrap();
    assert_eq!(info.envelope, e);
    assert_eq!(info.size, data.len() as u64);
    assert_eq!(info.state, MessageState::Pending);
    assert_eq!(info.recipients.len(), 2);
    assert_eq!(info.recipients[1].address, "c@Example.COM");
    assert_eq!(info.recipients[1].domain(), "example.com");
    assert_eq!(
        info.recipients[0].orcpt.as_deref(),
        Some("rfc822;b@example.net")
    );
    assert!(info
        .recipients
        .iter()
        .all(|r| r.state == RecipientState::Pending && r.attempts == 0));
    assert_eq!(q.counts().pending, 1);
    assert!(spool_files(dir.path()).is_empty(), "10 KiB stays inline");

    let mut leased = q.lease_due(SystemTime::now(), 10).unwrap();
    assert_eq!(leased.len(), 1);
    let l = leased.pop().unwrap();
    assert_eq!(l.id, id);
    assert_eq!(l.envelope, e);
    assert_eq!(l.size, data.len() as u64);
    assert_eq!(l.recipients.len(), 2);
    assert_eq!(l.recipients[0].index, 0);
    assert_eq!(read_all(q.body(l.id).unwrap()), data);
    let again = read_all(q.body(id).unwrap());
    assert_eq!(again, data);
    assert_eq!(q.counts().active, 1);
    assert_eq!(q.counts().pending, 0);
}

#[test]
fn large_body_is_spooled_streamed_and_intact() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    let chunk = body(64 * 1024, 7);
    let mut w = q.begin().unwrap();
    let id = w.id();
    for _ in 0..400 {
        w.write_all(&chunk).unwrap(); // 25 MiB in total
    }
    assert_eq!(w.size(), 400 * 64 * 1024);
    // Already on disk while being written, not in memory.
    assert_eq!(spool_files(dir.path()), vec![id.to_string()]);
    let id2 = w
        .commit(env("a@example.org"), vec![rcpt("b@example.net")])
        .unwrap();
    assert_eq!(id, id2);
    let meta = std::fs::metadata(dir.path().join("spool").join(id.as_str())).unwrap();
    assert_eq!(meta.len(), 400 * 64 * 1024);

    let l = q.lease_due(SystemTime::now(), 1).unwrap().pop().unwrap();
    let got = read_all(q.body(l.id).unwrap());
    assert_eq!(got.len(), 400 * 64 * 1024);
    assert!(got.chunks(chunk.len()).all(|c| c == chunk.as_slice()));
    let done = q
        .complete(&l, &[(0, delivered())], SystemTime::now())
        .unwrap();
    assert!(done.finished);
    assert!(spool_files(dir.path()).is_empty(), "spool file removed");
}

#[test]
fn dropped_writer_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    let mut w = q.begin().unwrap();
    let id = w.id();
    w.write_all(&body(300 * 1024, 2)).unwrap();
    assert_eq!(spool_files(dir.path()).len(), 1);
    drop(w);
    assert!(spool_files(dir.path()).is_empty());
    assert!(q.show(id).unwrap().is_none());
    assert_eq!(q.counts().total(), 0);
}

#[test]
fn commit_without_recipients_is_refused_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    let mut w = q.begin().unwrap();
    let id = w.id();
    w.write_all(&body(200 * 1024, 3)).unwrap();
    let err = w.commit(env("a@example.org"), vec![]).unwrap_err();
    assert!(matches!(err, QueueError::NoRecipients), "{err}");
    assert!(spool_files(dir.path()).is_empty());
    assert!(q.show(id).unwrap().is_none());
    assert!(q.lease_due(SystemTime::now(), 10).unwrap().is_empty());
}

#[test]
fn two_workers_never_lease_the_same_message() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    let mut ids = HashSet::new();
    for i in 0..60 {
        ids.insert(enqueue(&q, &body(500, i), &["x@example.net"]));
    }
    let now = SystemTime::now();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let q = q.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                for _ in 0..20 {
                    got.extend(q.lease_due(now, 3).unwrap().into_iter().map(|l| l.id));
                }
                got
            })
        })
        .collect();
    let all: Vec<QueueId> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let unique: HashSet<QueueId> = all.iter().copied().collect();
    assert_eq!(all.len(), unique.len(), "a message was leased twice");
    assert_eq!(unique, ids);
    assert!(q.lease_due(now, 100).unwrap().is_empty());
    assert_eq!(q.counts().active, 60);
}

#[test]
fn lease_respects_max_and_due_time() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    let a = enqueue(&q, b"a\r\n", &["x@example.net"]);
    let b = enqueue(&q, b"b\r\n", &["x@example.net"]);
    let past = SystemTime::now() - secs(60);
    assert!(q.lease_due(past, 10).unwrap().is_empty(), "not due yet");
    let first = q.lease_due(SystemTime::now(), 1).unwrap();
    assert_eq!(first.iter().map(|l| l.id).collect::<Vec<_>>(), vec![a]);
    let second = q.lease_due(SystemTime::now(), 5).unwrap();
    assert_eq!(second.iter().map(|l| l.id).collect::<Vec<_>>(), vec![b]);
}

#[test]
fn delivered_everywhere_finishes_and_removes() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    let id = enqueue(&q, b"hello\r\n", &["x@example.net", "y@example.net"]);
    let l = q.lease_due(SystemTime::now(), 1).unwrap().pop().unwrap();
    let c = q
        .complete(&l, &[(0, delivered()), (1, delivered())], SystemTime::now())
        .unwrap();
    assert!(c.finished);
    assert!(c.expired.is_empty());
    assert_eq!(c.next_attempt, None);
    assert_eq!(read_all(c.body.unwrap()), b"hello\r\n");
    assert!(q.show(id).unwrap().is_none());
    assert_eq!(q.counts(), Counts::default());
    assert_eq!(q.next_due().unwrap(), None);
    assert!(matches!(
        q.complete(&l, &[], SystemTime::now()),
        Err(QueueError::NotFound { .. })
    ));
}

#[test]
fn mixed_outcomes_keep_only_open_recipients() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    let id = enqueue(&q, b"m\r\n", &["d@a.example", "t@b.example", "p@c.example"]);
    let now = SystemTime::now();
    let l = q.lease_due(now, 1).unwrap().pop().unwrap();
    let c = q
        .complete(
            &l,
            &[(0, delivered()), (1, deferred()), (2, bounced())],
            now,
        )
        .unwrap();
    assert!(!c.finished);
    assert!(c.body.is_none());
    let next = c.next_attempt.unwrap();
    assert_eq!(next.duration_since(now).unwrap().as_secs(), 60);

    let info = q.show(id).unwrap().unwrap();
    assert_eq!(info.state, MessageState::Deferred);
    assert_eq!(info.deferrals, 1);
    let states: Vec<_> = info.recipients.iter().map(|r| r.state).collect();
    assert_eq!(
        states,
        [
            RecipientState::Delivered,
            RecipientState::Deferred,
            RecipientState::Bounced
        ]
    );
    assert_eq!(
        info.recipients[1].last_reply.as_deref(),
        Some("451 4.3.0 try later")
    );
    assert_eq!(info.recipients[1].attempts, 1);
    assert_eq!(q.counts().deferred, 1);

    assert!(q.lease_due(now + secs(59), 5).unwrap().is_empty());
    let l2 = q.lease_due(now + secs(61), 5).unwrap().pop().unwrap();
    assert_eq!(l2.recipients.len(), 1);
    assert_eq!(l2.recipients[0].index, 1);
    assert_eq!(l2.recipients[0].attempts, 1);
    assert_eq!(l2.deferrals, 1);
    let bad = q.complete(&l2, &[(7, delivered())], now + secs(61));
    assert!(matches!(
        bad,
        Err(QueueError::NoSuchRecipient { index: 7, .. })
    ));
    let c2 = q
        .complete(&l2, &[(1, delivered())], now + secs(61))
        .unwrap();
    assert!(c2.finished);
}

#[test]
fn retry_schedule_then_last_interval_repeats_with_jitter() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    enqueue(&q, b"r\r\n", &["x@example.net"]);
    let mut now = SystemTime::now();
    let mut gaps = Vec::new();
    for _ in 0..6 {
        let l = q.lease_due(now, 1).unwrap().pop().expect("due");
        let c = q.complete(&l, &[(0, deferred())], now).unwrap();
        let next = c.next_attempt.unwrap();
        gaps.push(next.duration_since(now).unwrap());
        now = next + Duration::from_millis(1);
    }
    assert_eq!(gaps[0], secs(60));
    assert_eq!(gaps[1], secs(120));
    for g in &gaps[2..] {
        assert!(*g >= secs(540) && *g <= secs(660), "{g:?}");
    }
    // With jitter, four draws from [540, 660] s are not all exactly 600 s.
    assert!(
        gaps[2..].iter().any(|g| g.as_millis() != 600_000),
        "{gaps:?}"
    );
}

#[test]
fn deferral_after_max_age_expires_and_returns_the_recipients() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    let mut e = env("alice@example.org");
    e.received_at = SystemTime::now() - secs(86_400) - secs(5);
    let id = enqueue_env(&q, e, b"old\r\n", &["x@example.net", "y@example.net"]);
    let now = SystemTime::now();
    let l = q.lease_due(now, 1).unwrap().pop().unwrap();
    assert!(l.expires_at <= now);
    let c = q
        .complete(&l, &[(0, delivered()), (1, deferred())], now)
        .unwrap();
    assert!(c.finished);
    assert_eq!(c.expired.len(), 1);
    assert_eq!(c.expired[0].address, "y@example.net");
    assert_eq!(c.expired[0].index, 1);
    assert_eq!(
        c.expired[0].last_reply.as_deref(),
        Some("451 4.3.0 try later")
    );
    assert_eq!(
        read_all(c.body.unwrap()),
        b"old\r\n",
        "body kept for the DSN"
    );
    assert!(q.show(id).unwrap().is_none());
}

#[test]
fn next_attempt_never_scheduled_past_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    let mut e = env("alice@example.org");
    e.received_at = SystemTime::now() - secs(86_400) + secs(30);
    enqueue_env(&q, e.clone(), b"x\r\n", &["x@example.net"]);
    let now = SystemTime::now();
    let l = q.lease_due(now, 1).unwrap().pop().unwrap();
    let c = q.complete(&l, &[(0, deferred())], now).unwrap();
    let next = c.next_attempt.unwrap();
    assert_eq!(next, l.expires_at);
    let l = q.lease_due(next, 1).unwrap().pop().unwrap();
    let c = q.complete(&l, &[(0, deferred())], next).unwrap();
    assert_eq!(c.expired.len(), 1);
}

/// Completions go through the group commit: concurrent ones share rounds (and one sled
/// transaction per round), and one that fails on its own (a lost lease) fails alone.
#[test]
fn concurrent_completions_share_rounds_and_a_lost_lease_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    let stale_id = enqueue(&q, b"stale\r\n", &["s@example.net"]);
    let stale = q.lease_due(SystemTime::now(), 1).unwrap().pop().unwrap();
    q.abandon(&stale).unwrap();
    let fresh = q.lease_due(SystemTime::now(), 1).unwrap().pop().unwrap();
    assert_eq!(fresh.id, stale_id);
    for i in 0..160 {
        enqueue(&q, &body(1000, i as u8), &["x@example.net"]);
    }
    let now = SystemTime::now();
    let mut leased = q.lease_due(now, 1000).unwrap();
    assert_eq!(leased.len(), 160);
    let (req0, sync0) = q.sync_stats();
    let stale = std::sync::Arc::new(stale);
    let handles: Vec<_> = (0..32)
        .map(|t| {
            let mine: Vec<Leased> = leased.drain(..5).collect();
            let (q, stale) = (q.clone(), stale.clone());
            std::thread::spawn(move || {
                let lost = (t == 7).then(|| q.complete(&stale, &[(0, delivered())], now));
                let done: Vec<bool> = mine
                    .iter()
                    .enumerate()
                    .map(|(i, l)| {
                        let d = if i % 5 == 0 { deferred() } else { delivered() };
                        q.complete(l, &[(0, d)], now).unwrap().finished
                    })
                    .collect();
                (lost, done)
            })
        })
        .collect();
    let mut finished = 0;
    for h in handles {
        let (lost, done) = h.join().unwrap();
        if let Some(lost) = lost {
            let err = lost.unwrap_err();
            assert!(matches!(err, QueueError::LeaseLost { .. }), "{err}");
        }
        finished += done.iter().filter(|f| **f).count();
    }
    assert_eq!(finished, 128);
    let (req, syncs) = q.sync_stats();
    assert_eq!(req - req0, 161, "one durability request per completion");
    assert!(
        syncs - sync0 < 160,
        "completions should share rounds: {} rounds for 161",
        syncs - sync0
    );
    let c = q.counts();
    assert_eq!((c.deferred, c.active, c.total()), (32, 1, 33));
    // The fresh lease still holds and completes.
    assert!(
        q.complete(&fresh, &[(0, delivered())], now)
            .unwrap()
            .finished
    );
}

#[test]
fn expired_lease_becomes_due_and_old_holder_loses_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts();
    o.lease = secs(10);
    let q = Queue::open(dir.path(), o).unwrap();
    enqueue(&q, b"x\r\n", &["x@example.net"]);
    let now = SystemTime::now();
    let old = q.lease_due(now, 1).unwrap().pop().unwrap();
    assert!(q.lease_due(now + secs(5), 1).unwrap().is_empty());
    let new = q.lease_due(now + secs(11), 1).unwrap().pop().unwrap();
    assert_eq!(new.id, old.id);
    let err = q.complete(&old, &[(0, delivered())], now).unwrap_err();
    assert!(matches!(err, QueueError::LeaseLost { .. }), "{err}");
    assert!(q.complete(&new, &[(0, delivered())], now).unwrap().finished);
}

#[test]
fn abandon_returns_lease_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    let id = enqueue(&q, b"a\r\n", &["x@example.net"]);
    let l = q.lease_due(SystemTime::now(), 1).unwrap().pop().unwrap();
    q.abandon(&l).unwrap();
    assert_eq!(q.counts().pending, 1);
    let info = q.show(id).unwrap().unwrap();
    assert_eq!(info.recipients[0].attempts, 0);
    assert_eq!(info.deferrals, 0);
    let l2 = q.lease_due(SystemTime::now(), 1).unwrap().pop().unwrap();
    assert!(matches!(q.abandon(&l), Err(QueueError::LeaseLost { .. })));
    assert_eq!(l2.id, id);
}

#[test]
fn delay_warning_is_marked_once() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    let id = enqueue(&q, b"a\r\n", &["x@example.net"]);
    let now = SystemTime::now();
    let l = q.lease_due(now, 1).unwrap().pop().unwrap();
    assert!(!l.delay_warned);
    assert!(q.mark_delay_warned(&l).unwrap());
    assert!(!q.mark_delay_warned(&l).unwrap());
    q.complete(&l, &[(0, deferred())], now).unwrap();
    assert!(q.show(id).unwrap().unwrap().delay_warned);
    let l = q.lease_due(now + secs(61), 1).unwrap().pop().unwrap();
    assert!(l.delay_warned);
}

#[test]
fn on_due_hook_fires_for_new_and_released_messages() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    let fired = Arc::new(AtomicUsize::new(0));
    let f = Arc::clone(&fired);
    q.on_due(move || {
        f.fetch_add(1, Ordering::SeqCst);
    });
    let id = enqueue(&q, b"a\r\n", &["x@example.net"]);
    assert_eq!(fired.load(Ordering::SeqCst), 1);
    q.hold(id).unwrap();
    assert_eq!(fired.load(Ordering::SeqCst), 1);
    q.release(id).unwrap();
    assert_eq!(fired.load(Ordering::SeqCst), 2);
}

#[test]
fn null_sender_dsn_is_an_ordinary_message() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    let id = enqueue_env(&q, env(""), b"DSN\r\n", &["alice@example.org"]);
    assert_eq!(q.show(id).unwrap().unwrap().envelope.sender, "");
}

#[test]
fn concurrent_commits_share_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    let (req0, sync0) = q.sync_stats();
    let handles: Vec<_> = (0..32)
        .map(|t| {
            let q = q.clone();
            std::thread::spawn(move || {
                (0..8)
                    .map(|i| enqueue(&q, &body(2048, (t * 8 + i) as u8), &["x@example.net"]))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let ids: HashSet<QueueId> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert_eq!(ids.len(), 256);
    let (req, syncs) = q.sync_stats();
    // One durability point per enqueue: body and records go in the same round.
    assert_eq!(req - req0, 256);
    assert!(
        syncs - sync0 < 256,
        "group commit should batch: {} syncs for 256 commits",
        syncs - sync0
    );
    assert_eq!(q.counts().pending, 256);
}

#[test]
fn body_log_segments_are_removed_when_no_message_needs_them() {
    let dir = tempfile::tempdir().unwrap();
    let tuning = QueueTuning {
        body_segment_size: 8 * 1024,
        ..QueueTuning::default()
    };
    let q = Queue::open_tuned(dir.path(), opts(), tuning.clone()).unwrap();
    let ids: Vec<QueueId> = (0..6)
        .map(|i| enqueue(&q, &body(5000, i), &["x@example.net"]))
        .collect();
    let segs = segments(dir.path());
    assert!(
        segs.len() >= 3,
        "5000-byte bodies in 8 KiB segments: {segs:?}"
    );
    // Deliver the first three: their segments go, except the one still shared or current.
    let now = SystemTime::now();
    for l in q.lease_due(now, 3).unwrap() {
        assert_eq!(
            read_all(q.body(l.id).unwrap()),
            body(5000, ids.iter().position(|i| *i == l.id).unwrap() as u8)
        );
        q.complete(&l, &[(0, delivered())], now).unwrap();
    }
    let after = segments(dir.path());
    assert!(after.len() < segs.len(), "{segs:?} -> {after:?}");
    drop(q);
    // Reopen: the rest still reads back intact; a stray segment nobody references is removed.
    std::fs::write(dir.path().join("bodies").join("1"), b"stray").unwrap();
    let q = Queue::open_tuned(dir.path(), opts(), tuning).unwrap();
    // Segments from before open are counted, and the stray one removed, by the recovery
    // scan after open.
    while !q.recovered() {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(
        !after.contains(&1),
        "segment 1 only held the first, delivered, body"
    );
    assert!(
        !segments(dir.path()).contains(&1),
        "stray segment removed once recovered"
    );
    for (i, id) in ids.iter().enumerate().skip(3) {
        assert_eq!(read_all(q.body(*id).unwrap()), body(5000, i as u8));
    }
    assert!(q.corrupt_records().is_empty());
}

/// Compile-time: what callers move across threads (`spawn_blocking`, worker pools) can go.
#[test]
fn handles_can_cross_threads() {
    fn send_sync_clone<T: Send + Sync + Clone>() {}
    fn send<T: Send>() {}
    send_sync_clone::<Queue>();
    send::<MessageWriter>();
    send::<Leased>();
    send::<BodyReader>();
    send::<QueueError>();
}

#[test]
fn extended_lease_is_not_handed_out_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts();
    o.lease = secs(10);
    let q = Queue::open(dir.path(), o).unwrap();
    enqueue(&q, b"x\r\n", &["x@example.net"]);
    let now = SystemTime::now();
    let mut l = q.lease_due(now, 1).unwrap().pop().unwrap();
    q.extend_lease(&mut l, now + secs(8)).unwrap();
    assert_eq!(l.lease_until, now + secs(18));
    assert!(
        q.lease_due(now + secs(12), 1).unwrap().is_empty(),
        "still leased"
    );
    assert_eq!(q.counts().active, 1);
    assert!(
        q.complete(&l, &[(0, delivered())], now + secs(15))
            .unwrap()
            .finished
    );
}

#[test]
fn absurd_durations_do_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let o = QueueOptions {
        retry: vec![Duration::MAX],
        max_age: Duration::MAX,
        lease: Duration::MAX,
    };
    let q = Queue::open(dir.path(), o).unwrap();
    enqueue(&q, b"x\r\n", &["x@example.net"]);
    let now = SystemTime::now();
    let l = q.lease_due(now, 1).unwrap().pop().unwrap();
    let c = q.complete(&l, &[(0, deferred())], now).unwrap();
    assert!(!c.finished);
    assert!(c.next_attempt.unwrap() > now + secs(1_000_000_000));
}

#[test]
fn segments_survive_concurrent_enqueue_and_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let tuning = QueueTuning {
        body_segment_size: 16 * 1024,
        ..QueueTuning::default()
    };
    let q = Queue::open_tuned(dir.path(), opts(), tuning).unwrap();
    let writers: Vec<_> = (0..8u8)
        .map(|t| {
            let q = q.clone();
            std::thread::spawn(move || {
                for i in 0..25u8 {
                    enqueue(
                        &q,
                        &body(3000, t.wrapping_mul(31).wrapping_add(i)),
                        &["x@example.net"],
                    );
                }
            })
        })
        .collect();
    // Deliver while the writers are rolling segments.
    let mut delivered_n = 0;
    let mut idle = 0;
    while idle < 50 {
        let batch = q.lease_due(SystemTime::now(), 4).unwrap();
        if batch.is_empty() {
            idle += 1;
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        idle = 0;
        for l in batch {
            let got = read_all(q.body(l.id).unwrap()); // CRC-checked: the segment was not deleted under it
            assert_eq!(got.len(), 3000);
            assert!(
                q.complete(&l, &[(0, delivered())], SystemTime::now())
                    .unwrap()
                    .finished
            );
            delivered_n += 1;
        }
    }
    for w in writers {
        w.join().unwrap();
    }
    for l in q.lease_due(SystemTime::now(), 1000).unwrap() {
        q.complete(&l, &[(0, delivered())], SystemTime::now())
            .unwrap();
        delivered_n += 1;
    }
    assert_eq!(delivered_n, 200);
    assert_eq!(q.counts().total(), 0);
    assert_eq!(
        segments(dir.path()).len(),
        1,
        "only the current segment is left"
    );
}

/// `submit` hands a whole body over without blocking; returns what `done` got.
fn submit_wait(q: &Queue, data: &[u8], rcpts: &[&str]) -> Result<QueueId, QueueError> {
    let id = q.reserve_id();
    let (tx, rx) = std::sync::mpsc::channel();
    q.submit(
        id,
        data.to_vec(),
        env("alice@example.org"),
        rcpts.iter().map(|r| rcpt(r)).collect(),
        move |r| tx.send(r).unwrap(),
    );
    let got = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    if let Ok(queued) = &got {
        assert_eq!(*queued, id, "the reserved id is the queue id");
    }
    got
}

#[test]
fn submitted_message_is_queued_whole_under_its_reserved_id() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    let data = body(10 * 1024, 3);
    let id = submit_wait(&q, &data, &["b@example.net", "c@example.com"]).unwrap();
    let info = q.show(id).unwrap().unwrap();
    assert_eq!(info.size, data.len() as u64);
    assert_eq!(info.recipients.len(), 2);
    assert_eq!(q.counts().pending, 1);
    assert_eq!(read_all(q.body(id).unwrap()), data);
    let l = q.lease_due(SystemTime::now(), 10).unwrap().pop().unwrap();
    assert_eq!(l.id, id);
    assert_eq!(read_all(q.body(l.id).unwrap()), data);
}

#[test]
fn submitted_message_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let data = body(4096, 9);
    let id = {
        let q = open(dir.path());
        submit_wait(&q, &data, &["b@example.net"]).unwrap()
    };
    let q = open(dir.path());
    assert_eq!(q.counts().pending, 1);
    assert_eq!(read_all(q.body(id).unwrap()), data);
}

#[test]
fn submit_without_recipients_fails_at_once_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    let (req0, _) = q.sync_stats();
    let err = submit_wait(&q, b"x\r\n", &[]).unwrap_err();
    assert!(matches!(err, QueueError::NoRecipients), "{err:?}");
    assert_eq!(q.counts().pending, 0);
    assert_eq!(q.sync_stats().0, req0, "never reached the committer");
}

#[test]
fn concurrent_submits_share_rounds_and_wake_the_scheduler() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    let woken = Arc::new(AtomicUsize::new(0));
    let w = woken.clone();
    q.on_due(move || {
        w.fetch_add(1, Ordering::SeqCst);
    });
    let (_, rounds0) = q.sync_stats();
    let (tx, rx) = std::sync::mpsc::channel();
    for i in 0..200u32 {
        let tx = tx.clone();
        q.submit(
            q.reserve_id(),
            body(1024 + i as usize, i as u8),
            env("alice@example.org"),
            vec![rcpt("b@example.net")],
            move |r| tx.send(r).unwrap(),
        );
    }
    let ids: HashSet<QueueId> = (0..200)
        .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap())
        .collect();
    assert_eq!(ids.len(), 200);
    assert_eq!(q.counts().pending, 200);
    let rounds = q.sync_stats().1 - rounds0;
    assert!(
        rounds < 200,
        "{rounds} rounds for 200 messages handed in at once"
    );
    assert!(woken.load(Ordering::SeqCst) >= 1);
    for id in ids {
        assert!(q.show(id).unwrap().is_some());
    }
}

/// Calls `on_key` with the `key` field of every tracing event emitted on this thread; lets a
/// test act at an exact point inside a queue call (here: between a batch's lease transaction
/// and the hand-out of its messages).
struct OnKey<F>(F);

impl<F: Fn(&str) + Send + Sync + 'static> tracing::Subscriber for OnKey<F> {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Key(Option<String>);
        impl tracing::field::Visit for Key {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                if f.name() == "key" {
                    self.0 = Some(format!("{v:?}"));
                }
            }
        }
        let mut key = Key(None);
        event.record(&mut key);
        if let Some(k) = key.0 {
            (self.0)(&k);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn one_bad_message_does_not_strand_the_rest_of_its_lease_batch() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    let a = enqueue(&q, b"first\r\n", &["b@example.net"]);
    // Larger than `inline_body_max`: a spool file of its own, which we then lose.
    let bad = enqueue(&q, &body(100 * 1024, 1), &["b@example.net"]);
    let c = enqueue(&q, b"third\r\n", &["b@example.net"]);
    std::fs::remove_file(dir.path().join("spool").join(bad.as_str())).unwrap();
    // An operator deletes the bodiless message just as the batch parks it on hold, so
    // handing it out fails after the batch's lease transaction committed.
    let deleter = q.clone();
    let sub = OnKey(move |key: &str| {
        if key == bad.as_str() {
            deleter.delete(bad).unwrap();
        }
    });
    let leased = tracing::subscriber::with_default(sub, || q.lease_due(SystemTime::now(), 10));
    let ids: Vec<_> = leased.unwrap().iter().map(|l| l.id).collect();
    assert_eq!(
        ids,
        vec![a, c],
        "the messages around the bad one are handed out"
    );
    assert_eq!(q.counts().active, 2);
    assert!(q.show(bad).unwrap().is_none());
}
