//! Operator operations and open/recovery, against a real queue in a temp dir.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use danerelay_queue::*;

#[test]
fn hold_and_release() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    let id = enqueue(&q, b"h\r\n", &["x@example.net"]);
    assert!(q.hold(id).unwrap());
    assert!(!q.hold(id).unwrap());
    assert_eq!(q.counts().held, 1);
    assert_eq!(q.counts().pending, 0);
    assert!(q
        .lease_due(SystemTime::now() + secs(1_000_000), 10)
        .unwrap()
        .is_empty());
    assert_eq!(q.next_due().unwrap(), None);
    assert_eq!(q.show(id).unwrap().unwrap().next_attempt, None);
    assert!(!q.retry_now(id).unwrap(), "held messages are not retried");
    assert!(q.release(id).unwrap());
    assert!(!q.release(id).unwrap());
    assert_eq!(q.counts().pending, 1);
    assert_eq!(q.lease_due(SystemTime::now(), 10).unwrap().len(), 1);
}

#[test]
fn hold_during_delivery_keeps_it_out_of_the_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    let id = enqueue(&q, b"h\r\n", &["x@example.net"]);
    let now = SystemTime::now();
    let l = q.lease_due(now, 1).unwrap().pop().unwrap();
    assert!(q.hold(id).unwrap());
    let c = q.complete(&l, &[(0, deferred())], now).unwrap();
    assert!(!c.finished);
    assert_eq!(c.next_attempt, None);
    assert_eq!(q.counts().held, 1);
    assert_eq!(q.counts().active, 0);
    assert!(q.lease_due(now + secs(100_000), 1).unwrap().is_empty());
    q.release(id).unwrap();
    assert_eq!(q.lease_due(SystemTime::now(), 1).unwrap().len(), 1);
}

#[test]
fn delete_removes_even_while_leased() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    let big = enqueue(&q, &body(100 * 1024, 9), &["x@example.net"]);
    let small = enqueue(&q, b"s\r\n", &["x@example.net"]);
    assert_eq!(spool_files(dir.path()).len(), 1);
    let l = q.lease_due(SystemTime::now(), 1).unwrap().pop().unwrap();
    assert_eq!(l.id, big);
    assert!(q.delete(big).unwrap());
    assert!(!q.delete(big).unwrap());
    assert!(spool_files(dir.path()).is_empty());
    assert!(matches!(
        q.complete(&l, &[(0, delivered())], SystemTime::now()),
        Err(QueueError::NotFound { .. })
    ));
    assert!(q.delete(small).unwrap());
    assert_eq!(q.counts(), Counts::default());
    assert_eq!(q.next_due().unwrap(), None);
}

#[test]
fn retry_now_and_retry_all() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    let a = enqueue(&q, b"a\r\n", &["x@example.net"]);
    let b = enqueue(&q, b"b\r\n", &["x@example.net"]);
    let now = SystemTime::now();
    for l in q.lease_due(now, 2).unwrap() {
        q.complete(&l, &[(0, deferred())], now).unwrap();
    }
    assert!(q.lease_due(SystemTime::now(), 2).unwrap().is_empty());
    assert!(q.retry_now(a).unwrap());
    let got = q.lease_due(SystemTime::now(), 5).unwrap();
    assert_eq!(got.iter().map(|l| l.id).collect::<Vec<_>>(), vec![a]);
    assert!(!q.retry_now(a).unwrap(), "leased: nothing to do");
    assert_eq!(q.retry_all().unwrap(), 1);
    let got = q.lease_due(SystemTime::now(), 5).unwrap();
    assert_eq!(got.iter().map(|l| l.id).collect::<Vec<_>>(), vec![b]);
    let missing: QueueId = "000000000007".parse().unwrap();
    assert!(matches!(
        q.retry_now(missing),
        Err(QueueError::NotFound { .. })
    ));
}

#[test]
fn list_filters_by_state_domain_age_and_limit() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    let mut old = env("a@example.org");
    old.received_at = SystemTime::now() - secs(7200);
    let a = enqueue_env(&q, old, b"a\r\n", &["x@one.example", "y@two.example"]);
    let b = enqueue(&q, b"b\r\n", &["z@TWO.example"]);
    let c = enqueue(&q, b"c\r\n", &["w@three.example"]);
    q.hold(c).unwrap();

    let ids =
        |f: ListFilter| -> Vec<QueueId> { q.list(&f).unwrap().into_iter().map(|m| m.id).collect() };
    assert_eq!(ids(ListFilter::default()), vec![a, b, c]);
    assert_eq!(
        ids(ListFilter {
            state: Some(MessageState::Held),
            ..Default::default()
        }),
        vec![c]
    );
    assert_eq!(
        ids(ListFilter {
            domain: Some("two.EXAMPLE".into()),
            ..Default::default()
        }),
        vec![a, b]
    );
    assert_eq!(
        ids(ListFilter {
            min_age: Some(secs(3600)),
            ..Default::default()
        }),
        vec![a]
    );
    assert_eq!(
        ids(ListFilter {
            max_age: Some(secs(3600)),
            ..Default::default()
        }),
        vec![b, c]
    );
    assert_eq!(
        ids(ListFilter {
            limit: Some(2),
            ..Default::default()
        }),
        vec![a, b]
    );
    assert_eq!(
        ids(ListFilter {
            limit: Some(2),
            after: Some(a),
            ..Default::default()
        }),
        vec![b, c],
        "paging"
    );
    let d = q.domains().unwrap();
    assert_eq!(d[0].domain, "two.example");
    assert_eq!((d[0].messages, d[0].recipients), (2, 2));
    assert_eq!(d.len(), 3);
}

#[test]
fn counts_oldest_age_and_next_due() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    assert_eq!(q.next_due().unwrap(), None);
    assert_eq!(q.oldest_age(SystemTime::now()).unwrap(), None);
    let a = enqueue(&q, b"a\r\n", &["x@example.net"]);
    enqueue(&q, b"b\r\n", &["x@example.net"]);
    let due = q.next_due().unwrap().unwrap();
    assert!(due <= SystemTime::now());
    let age = q.oldest_age(a.time() + secs(42)).unwrap().unwrap();
    assert_eq!(age, secs(42));
    let now = SystemTime::now();
    let l = q.lease_due(now, 1).unwrap().pop().unwrap();
    let c = q.complete(&l, &[(0, deferred())], now).unwrap();
    assert_eq!(
        q.counts(),
        Counts {
            pending: 1,
            deferred: 1,
            held: 0,
            active: 0
        }
    );
    // The pending one is due now, before the deferred one.
    assert!(q.next_due().unwrap().unwrap() < c.next_attempt.unwrap());
    q.lease_due(SystemTime::now(), 1).unwrap();
    let next = q.next_due().unwrap().unwrap();
    // Millisecond resolution in the index.
    let gap = next.duration_since(now).unwrap();
    assert!(
        gap > Duration::from_millis(59_998) && gap <= secs(60),
        "deferred one is next (the lease runs 300 s): {gap:?}"
    );
}

#[test]
fn reopen_recovers_leases_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c);
    {
        let q = open(dir.path());
        a = enqueue(&q, b"a\r\n", &["x@example.net"]);
        b = enqueue(&q, &body(200 * 1024, 4), &["x@example.net"]);
        c = enqueue(&q, b"c\r\n", &["x@example.net"]);
        q.hold(c).unwrap();
        let leased = q.lease_due(SystemTime::now(), 10).unwrap();
        assert_eq!(leased.len(), 2);
        assert_eq!(q.counts().active, 2);
        // The process "dies" holding both leases.
    }
    let q = open(dir.path());
    assert_eq!(
        q.counts(),
        Counts {
            pending: 2,
            deferred: 0,
            held: 1,
            active: 0
        }
    );
    let got: Vec<_> = q
        .lease_due(SystemTime::now(), 10)
        .unwrap()
        .into_iter()
        .map(|l| (l.id, read_all(q.body(l.id).unwrap()).len()))
        .collect();
    assert_eq!(got, vec![(a, 3), (b, 200 * 1024)]);
    assert!(q.corrupt_records().is_empty());
    // New ids sort after the old ones.
    let d = enqueue(&q, b"d\r\n", &["x@example.net"]);
    assert!(d > c);
}

#[test]
fn orphan_spool_files_are_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let q = open(dir.path());
        enqueue(&q, &body(100 * 1024, 5), &["x@example.net"]);
    }
    let orphan = dir.path().join("spool").join("00000000000Z");
    std::fs::write(&orphan, b"half a body").unwrap();
    let q = open(dir.path());
    assert_eq!(spool_files(dir.path()).len(), 1);
    assert!(!orphan.exists());
    assert_eq!(q.counts().pending, 1);
}

#[test]
fn corrupt_records_are_reported_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let (good, truncated);
    {
        let q = open(dir.path());
        good = enqueue(&q, b"good\r\n", &["x@example.net"]);
        truncated = enqueue(&q, &body(100 * 1024, 6), &["x@example.net"]);
        enqueue(&q, b"victim\r\n", &["x@example.net"]);
    }
    // Damage the store from outside: garbage in a message record, a malformed schedule key,
    // and a spool file cut short.
    let victim_key;
    {
        let db = sled::open(dir.path().join("sled")).unwrap();
        let meta = db.open_tree("meta").unwrap();
        victim_key = meta.last().unwrap().unwrap().0;
        meta.insert(&victim_key, &b"{not json"[..]).unwrap();
        db.open_tree("due")
            .unwrap()
            .insert(&[0u8, 0, 1][..], &[])
            .unwrap();
        db.flush().unwrap();
    }
    let spool = dir.path().join("spool").join(truncated.as_str());
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&spool)
        .unwrap();
    f.set_len(1000).unwrap();

    let q = open(dir.path());
    let corrupt = q.corrupt_records();
    assert_eq!(corrupt.len(), 1, "{corrupt:?}");
    assert_eq!(corrupt[0].tree, "meta");
    assert_eq!(
        corrupt[0].key,
        QueueId::from_key(&victim_key).unwrap().to_string()
    );
    assert_eq!(q.list(&ListFilter::default()).unwrap().len(), 2);
    assert_eq!(q.counts().total(), 2);

    let leased = q.lease_due(SystemTime::now(), 10).unwrap();
    let ids: Vec<_> = leased.iter().map(|l| l.id).collect();
    assert_eq!(ids, vec![good, truncated]);
    assert!(q.corrupt_records().iter().any(|c| c.tree == "due"));
    let mut iter = leased.into_iter();
    assert_eq!(
        read_all(q.body(iter.next().unwrap().id).unwrap()),
        b"good\r\n"
    );
    let mut damaged = Vec::new();
    let err =
        std::io::Read::read_to_end(&mut q.body(iter.next().unwrap().id).unwrap(), &mut damaged)
            .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);

    // The corrupt message can be purged by the operator.
    let victim = QueueId::from_key(&victim_key).unwrap();
    assert!(matches!(q.show(victim), Err(QueueError::Corrupt { .. })));
    assert!(q.delete(victim).unwrap());
    assert!(q.show(victim).unwrap().is_none());
}

#[test]
fn invalid_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts();
    o.retry.clear();
    assert!(matches!(
        Queue::open(dir.path(), o),
        Err(QueueError::InvalidOptions { .. })
    ));
    let mut o = opts();
    o.lease = Duration::from_micros(10);
    assert!(matches!(
        Queue::open(dir.path(), o),
        Err(QueueError::InvalidOptions { .. })
    ));
    assert!(Queue::open(dir.path(), opts()).is_ok());
}

/// `queue drain`: any message can be taken — held, deferred for later — but not one a
/// live delivery holds; a handover that fails gives it back as it was.
#[test]
fn lease_for_handoff_takes_held_and_waiting_mail_but_not_a_live_lease() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    let held = enqueue(&q, b"h\r\n", &["x@example.net"]);
    let busy = enqueue(&q, b"b\r\n", &["y@example.net"]);
    assert!(q.hold(held).unwrap());
    let now = SystemTime::now();
    let live = q.lease_due(now, 10).unwrap().pop().unwrap();
    assert_eq!(live.id, busy);
    assert!(q.lease_for_handoff(busy, now).unwrap().is_none());

    let (l, was_held) = q.lease_for_handoff(held, now).unwrap().unwrap();
    assert!(was_held);
    assert_eq!(l.recipients.len(), 1);
    assert_eq!(q.counts().active, 2);
    assert_eq!(q.counts().held, 0);
    // Not handed over: back, and held again.
    q.abandon(&l).unwrap();
    assert!(q.hold(held).unwrap());
    assert_eq!(q.counts().held, 1);

    // Handed over: completed as delivered, gone.
    let (l, _) = q.lease_for_handoff(held, now).unwrap().unwrap();
    let done = [(
        0,
        Disposition::Delivered {
            reply: "250 ok".into(),
        },
    )];
    assert!(q.complete(&l, &done, now).unwrap().finished);
    assert!(q.show(held).unwrap().is_none());
    assert!(q.lease_for_handoff(held, now).unwrap().is_none());
    // Once the live delivery ends, its message can be taken too.
    q.abandon(&live).unwrap();
    assert!(q.lease_for_handoff(busy, now).unwrap().is_some());
}
