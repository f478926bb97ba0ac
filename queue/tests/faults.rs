//! Storage faults on a real volume: a small tmpfs that fills up (ENOSPC, also inside sled's
//! log writer) and is then grown. (Linux refuses a read-only remount while files are open for
//! writing, so read-only and I/O errors are injected by the power-loss filesystem instead,
//! see `tests/it/storage`.) The queue must refuse while it
//! cannot store, keep outcomes it could not store in memory, and come back by itself as soon
//! as writes succeed, with every acknowledged message intact.
//!
//! Needs root (mount). Without it the tests print SKIPPED, except under `CI=true`, where they
//! fail (CI runs as root).
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use common::*;
use danerelay_queue::*;

/// A tmpfs mounted for one test, unmounted on drop.
struct Tmpfs {
    _parent: tempfile::TempDir,
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("vol");
        std::fs::create_dir(&dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let test = std::thread::current().name().unwrap_or("?").to_string();
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{test}: cannot mount a tmpfs (needs root); CI=true requires it"
            );
            eprintln!("SKIPPED: {test}: cannot mount a tmpfs (needs root)");
            return None;
        }
        Some(Tmpfs {
            _parent: parent,
            dir,
        })
    }

    fn remount(&self, opts: &str) {
        // Linux refuses `ro` here while the queue holds files open for writing (EBUSY).
        let st = Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(&self.dir)
            .status()
            .unwrap();
        assert!(st.success(), "remount {opts}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

fn commit(q: &Queue, data: &[u8]) -> Result<QueueId, QueueError> {
    let mut w = q.begin()?;
    w.write_all(data).map_err(|e| QueueError::Sync {
        reason: e.to_string(),
    })?;
    w.commit(env("a@example.org"), vec![rcpt("b@example.net")])
}

fn wait_healthy(q: &Queue, within: Duration) -> Duration {
    let start = Instant::now();
    while q.health() != StorageHealth::Ok {
        assert!(
            start.elapsed() < within,
            "queue did not recover within {within:?}: {:?}",
            q.health()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

fn check_intact(q: &Queue, acked: &[(QueueId, Vec<u8>)]) {
    for (id, data) in acked {
        let got = read_all(q.body(*id).unwrap_or_else(|e| panic!("{id}: {e}")));
        assert!(got == *data, "{id}: body differs");
    }
}

/// Fills the volume with 100 KiB (spooled) and 10 KiB (body log) messages while deliveries
/// are deferred, until sled itself fails; returns what was acknowledged.
fn fill(q: &Queue, dir: &Path) -> Vec<(QueueId, Vec<u8>)> {
    let mut acked = Vec::new();
    let mut failures = 0;
    for i in 0..2000u32 {
        let len = if i % 2 == 0 { 100 * 1024 } else { 10 * 1024 };
        let data = body(len, (i % 251) as u8);
        match commit(q, &data) {
            Ok(id) => acked.push((id, data)),
            Err(_) => failures += 1,
        }
        // Disposition updates while full: the sled writes that broke sled 0.34 for good.
        if let Ok(batch) = q.lease_due(SystemTime::now() + secs(3600 * 24), 4) {
            for l in batch {
                let outcomes: Vec<_> = l.recipients.iter().map(|r| (r.index, deferred())).collect();
                let _ = q.complete(&l, &outcomes, SystemTime::now());
            }
        }
        if failures >= 20 {
            break;
        }
    }
    assert!(failures >= 20, "the volume never filled ({dir:?})");
    acked
}

#[test]
fn full_volume_refuses_then_recovers_by_itself_when_grown() {
    let Some(vol) = Tmpfs::mount("8m") else {
        return;
    };
    let q = Queue::open(&vol.dir, opts()).unwrap();
    let acked = fill(&q, &vol.dir);
    assert!(!acked.is_empty());
    assert!(
        matches!(q.health(), StorageHealth::Failed { .. }),
        "{:?}",
        q.health()
    );
    // Still full: a new message is refused at once, and nothing is leased.
    assert!(commit(&q, &body(1000, 1)).is_err());
    assert!(q.lease_due(SystemTime::now() + secs(86_400), 10).is_err());

    vol.remount("size=64m");
    let took = wait_healthy(&q, Duration::from_secs(10));
    eprintln!("recovered {took:?} after the volume was grown");
    check_intact(&q, &acked);
    let more = body(100 * 1024, 7);
    let id = commit(&q, &more).expect("a message after recovery");
    // Deliveries start again.
    assert!(!q
        .lease_due(SystemTime::now() + secs(86_400 * 2), 10)
        .unwrap()
        .is_empty());
    drop(q);

    // Nothing needs repair by hand, and nothing acknowledged was lost or doubled.
    let q = Queue::open(&vol.dir, opts()).unwrap();
    check_intact(&q, &acked);
    check_intact(&q, &[(id, more)]);
    assert_eq!(q.counts().total(), acked.len() as u64 + 1);
}

#[test]
fn free_space_below_the_minimum_is_reported() {
    let Some(vol) = Tmpfs::mount("8m") else {
        return;
    };
    let q = Queue::open(&vol.dir, opts()).unwrap();
    q.set_min_free_space(4 * 1024 * 1024);
    q.refresh_free_space().unwrap();
    assert_eq!(q.health(), StorageHealth::Ok);
    std::fs::write(vol.dir.join("hog"), vec![0u8; 5 * 1024 * 1024]).unwrap();
    let free = q.refresh_free_space().unwrap();
    assert!(free < 4 * 1024 * 1024);
    assert!(matches!(q.health(), StorageHealth::LowSpace { .. }));
    q.set_min_free_space(0);
    assert_eq!(q.health(), StorageHealth::Ok);
}
