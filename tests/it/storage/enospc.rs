//! Issue #24 end to end: the queue on an 8 MiB tmpfs, 100 KiB submissions,
//! deliveries deferring (so outcome updates hit ENOSPC inside sled too).
//! Once full every submission gets `451 4.3.0` and `/readyz` 503; after the
//! volume is grown the relay recovers by itself within seconds, and every
//! message that got `250` is intact. Also `queue.min_free_space`: `452
//! 4.3.1` and `/readyz` 503 `low-disk` before the volume is full.

use std::time::Duration;

use super::relay::{config, message, queued_id, start, stored, submit, Tmpfs};
use crate::support::require_mounts;

#[test]
fn full_queue_volume_refuses_then_recovers_without_restart_when_grown() {
    if !require_mounts() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let vol = Tmpfs::mount(&dir.path().join("vol"), "8m");
    let queue = vol.0.join("queue");
    // Deliveries defer at once (nothing listens on port 9) and retry every
    // second: outcome updates keep writing to sled while the volume fills.
    let (file, smtp, http) = config(
        dir.path(),
        &queue,
        "[127.0.0.1]:9",
        "min_free_space = \"0\"\nretry = [\"1s\"]",
        "",
    );
    let log = dir.path().join("relay.log");
    let relay = start(&file, smtp, http, &log);
    assert_eq!(relay.readyz().0, 200);
    assert_eq!(relay.metric("danerelay_queue_storage_ok"), Some(1.0));

    let mut accepted = Vec::new();
    let mut refused = 0;
    for i in 0..400 {
        let tag = format!("m{i:04}");
        let msg = message(&tag, 100 * 1024);
        let reply = submit(smtp, "user@example.net", &msg).unwrap();
        match queued_id(&reply) {
            Some(id) => accepted.push((id, msg)),
            None => {
                assert!(reply.starts_with("451 4.3.0"), "refused with {reply}");
                refused += 1;
                if refused >= 10 {
                    break;
                }
            }
        }
    }
    assert!(refused >= 10, "the volume never filled");
    assert!(!accepted.is_empty());
    let body = relay.wait_readyz(503, Duration::from_secs(5));
    assert_eq!(body.trim(), "storage-error");
    assert_eq!(relay.metric("danerelay_queue_storage_ok"), Some(0.0));

    vol.remount("size=64m");
    let started = std::time::Instant::now();
    relay.wait_readyz(200, Duration::from_secs(15));
    eprintln!(
        "ready again {:?} after the volume was grown",
        started.elapsed()
    );
    assert_eq!(relay.metric("danerelay_queue_storage_ok"), Some(1.0));
    let after = message("after", 100 * 1024);
    let reply = submit(smtp, "user@example.net", &after).unwrap();
    let id = queued_id(&reply).unwrap_or_else(|| panic!("after recovery: {reply}"));
    accepted.push((id, after));
    relay.kill9();

    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("queue storage failing"), "{logged}");
    assert!(logged.contains("queue storage works again"), "{logged}");
    eprintln!(
        "{}",
        logged
            .lines()
            .filter(|l| l.contains("storage")
                || l.contains("sled")
                || l.contains("reopen")
                || l.contains("kept"))
            .take(15)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let q = danerelay_queue::Queue::open(&queue, danerelay::queue_options(&test_queue()))
        .expect("the queue opens without manual repair");
    for (id, msg) in &accepted {
        let got = stored(&q, id).unwrap_or_else(|| panic!("{id} lost"));
        assert!(got.ends_with(msg), "{id}: stored message differs");
    }
    assert_eq!(q.counts().total(), accepted.len() as u64);
}

#[test]
fn free_space_under_the_minimum_answers_452_and_low_disk() {
    if !require_mounts() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let vol = Tmpfs::mount(&dir.path().join("vol"), "16m");
    let queue = vol.0.join("queue");
    let (file, smtp, http) = config(
        dir.path(),
        &queue,
        "[127.0.0.1]:9",
        "min_free_space = \"8MiB\"",
        "",
    );
    let relay = start(&file, smtp, http, &dir.path().join("relay.log"));
    assert_eq!(relay.readyz().0, 200);
    let reply = submit(smtp, "user@example.net", &message("before", 2000)).unwrap();
    assert!(queued_id(&reply).is_some(), "{reply}");

    let hog = vol.0.join("hog");
    std::fs::write(&hog, vec![0u8; 10 << 20]).unwrap();
    let body = relay.wait_readyz(503, Duration::from_secs(5));
    assert_eq!(body.trim(), "low-disk");
    assert!(relay.metric("danerelay_queue_free_bytes").unwrap() < (8 << 20) as f64);
    assert_eq!(relay.metric("danerelay_queue_storage_ok"), Some(1.0));
    let reply = submit(smtp, "user@example.net", &message("low", 2000)).unwrap();
    assert!(reply.starts_with("452 4.3.1"), "{reply}");

    std::fs::remove_file(&hog).unwrap();
    relay.wait_readyz(200, Duration::from_secs(5));
    let reply = submit(smtp, "user@example.net", &message("again", 2000)).unwrap();
    assert!(queued_id(&reply).is_some(), "{reply}");
}

/// The `[queue]` the relay config above validates to, for opening the queue
/// with the same options after the relay stopped.
pub fn test_queue() -> danerelay::config::QueueConfig {
    danerelay::config::QueueConfig {
        path: Default::default(),
        retry: vec![Duration::from_secs(1)],
        max_age: Duration::from_secs(5 * 86400),
        delay_warning: None,
        min_free_space: 0,
        cache_size: 16 << 20,
    }
}
