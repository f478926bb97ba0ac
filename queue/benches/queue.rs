//! `cargo bench -p danerelay-queue`: durable enqueue throughput, dequeue+complete rate, and
//! enqueue rate with a large queue versus an empty one. Prints figures; not a timed test.
//!
//! Environment:
//! - `QUEUE_BENCH_PREFILL` (default 1000000): messages queued before the "full queue" run.
//!   The prefill uses 128 concurrent durable writers with 200-byte bodies.
//! - `QUEUE_BENCH_SECS` (default 4): length of each measured run.
//! - `QUEUE_BENCH_DIR` (default the system temp dir): where the queues are created.
//! - `QUEUE_BENCH_CACHE_MB`: sled cache size instead of the default (experiments).
//! - `QUEUE_BENCH_ONLY`: comma list of sections to run: storage,writers,dequeue,scale.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use danerelay_queue::*;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn opts() -> QueueOptions {
    QueueOptions {
        retry: vec![Duration::from_secs(300)],
        max_age: Duration::from_secs(5 * 86_400),
        lease: Duration::from_secs(600),
    }
}

fn envelope() -> Envelope {
    Envelope {
        auth_user: Some("bench@example.org".into()),
        client_addr: Some("127.0.0.1".parse().unwrap()),
        ..Envelope::new("bench@example.org", SystemTime::now())
    }
}

fn body(len: usize) -> Vec<u8> {
    let line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tem\r\n";
    line.iter().copied().cycle().take(len).collect()
}

fn enqueue(q: &Queue, data: &[u8]) {
    let mut w = q.begin().unwrap();
    w.write_all(data).unwrap();
    w.commit(
        envelope(),
        vec![RecipientSpec {
            address: "rcpt@example.net".into(),
            orcpt: None,
            notify: Notify::default(),
        }],
    )
    .unwrap();
}

/// Runs `writers` threads enqueueing `data` for `secs`; returns (enqueues/s, syncs per enqueue).
fn run_writers(q: &Queue, writers: usize, data: &[u8], secs: f64) -> (f64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let (_, sync0) = q.sync_stats();
    let start = Instant::now();
    let handles: Vec<_> = (0..writers)
        .map(|_| {
            let (q, stop, done, data) = (q.clone(), stop.clone(), done.clone(), data.to_vec());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    enqueue(&q, &data);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (_, sync) = q.sync_stats();
    let n = done.load(Ordering::Relaxed) as f64;
    (n / elapsed, (sync - sync0) as f64 / n.max(1.0))
}

/// Enqueues exactly `n` messages with 128 writers.
fn fill(q: &Queue, n: u64, data: &[u8]) {
    let next = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..128)
        .map(|_| {
            let (q, next, data) = (q.clone(), next.clone(), data.to_vec());
            std::thread::spawn(move || {
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    enqueue(&q, &data);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

fn open(dir: &Path, mut tuning: QueueTuning) -> Queue {
    if let Ok(mb) = std::env::var("QUEUE_BENCH_CACHE_MB") {
        tuning.cache_capacity = mb.parse::<u64>().unwrap() * 1024 * 1024;
    }
    Queue::open_tuned(dir, opts(), tuning).unwrap()
}

/// Bytes this process caused to be written to storage (`/proc/self/io`), 0 if unavailable.
fn write_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("write_bytes: "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn section(name: &str) -> bool {
    match std::env::var("QUEUE_BENCH_ONLY") {
        Ok(list) => list.split(',').any(|s| s == name),
        Err(_) => true,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let secs = env_num("QUEUE_BENCH_SECS", 4) as f64;
    let prefill = env_num("QUEUE_BENCH_PREFILL", 1_000_000);
    let base = std::env::var("QUEUE_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    let ten_k = body(10 * 1024);
    println!("danerelay-queue benchmark ({secs} s per run, 10 KiB bodies, 1 recipient)");

    if section("storage") {
        println!("\n## body storage, 128 writers (3 interleaved runs each, fresh queue per run)");
        let kinds = [
            ("body log", 64 * 1024, false),
            ("sled tree", 64 * 1024, true),
            ("file per body", 0, false),
        ];
        let mut rates = vec![Vec::new(); kinds.len()];
        let mut bytes = vec![Vec::new(); kinds.len()];
        for _ in 0..3 {
            for (k, (_, inline, in_sled)) in kinds.iter().enumerate() {
                let dir = tempfile::tempdir_in(&base).unwrap();
                let q = open(
                    dir.path(),
                    QueueTuning {
                        inline_body_max: *inline,
                        small_bodies_in_sled: *in_sled,
                        ..QueueTuning::default()
                    },
                );
                let written = write_bytes();
                let (rate, _) = run_writers(&q, 128, &ten_k, secs);
                let per = (write_bytes() - written) as f64 / (rate * secs);
                rates[k].push(rate);
                bytes[k].push(per);
            }
        }
        for (k, (name, _, _)) in kinds.iter().enumerate() {
            let rate = median(&mut rates[k]);
            let kib = median(&mut bytes[k]) / 1024.0;
            println!(
                "{name:>14}: median {rate:>6.0} durable enqueues/s {:.0?}, \
                 ~{kib:.1} KiB written per 10 KiB message",
                rates[k]
            );
        }
    }

    if section("writers") {
        println!("\n## durable enqueue, 10 KiB");
        for writers in [1, 16, 128] {
            let dir = tempfile::tempdir_in(&base).unwrap();
            let q = open(dir.path(), QueueTuning::default());
            let (rate, spe) = run_writers(&q, writers, &ten_k, secs);
            println!("{writers:>4} writers: {rate:>8.0} enqueues/s ({spe:.3} syncs/enqueue)");
        }
    }

    if section("dequeue") {
        println!("\n## lease + complete (delivered), 16 workers");
        let dir = tempfile::tempdir_in(&base).unwrap();
        let q = open(dir.path(), QueueTuning::default());
        let n = 20_000;
        fill(&q, n, &ten_k);
        let start = Instant::now();
        let handles: Vec<_> = (0..16)
            .map(|_| {
                let q = q.clone();
                std::thread::spawn(move || {
                    let mut done = 0u64;
                    loop {
                        let batch = q.lease_due(SystemTime::now(), 8).unwrap();
                        if batch.is_empty() {
                            return done;
                        }
                        for l in batch {
                            let mut body = q.body(l.id).unwrap();
                            std::io::copy(&mut body, &mut std::io::sink()).unwrap();
                            let outcome = Disposition::Delivered {
                                reply: "250 2.0.0 ok".into(),
                            };
                            let c = q.complete(&l, &[(0, outcome)], SystemTime::now()).unwrap();
                            assert!(c.finished);
                            done += 1;
                        }
                    }
                })
            })
            .collect();
        let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        let rate = total as f64 / start.elapsed().as_secs_f64();
        assert_eq!(total, n);
        assert_eq!(q.counts().total(), 0);
        println!("{n} messages: {rate:.0} lease+read+complete/s (each complete durable)");
    }

    if section("scale") {
        println!("\n## enqueue rate with {prefill} messages queued vs empty, 128 writers");
        // Two queues side by side, measured alternately, so that the machine's changing load
        // (other processes) hits both alike; the medians are compared.
        let empty_dir = tempfile::tempdir_in(&base).unwrap();
        let empty_q = open(empty_dir.path(), QueueTuning::default());
        let dir = tempfile::tempdir_in(&base).unwrap();
        let q = open(dir.path(), QueueTuning::default());
        let t = Instant::now();
        fill(&q, prefill, &body(200));
        let fill_secs = t.elapsed().as_secs_f64();
        println!(
            "  prefill: {prefill} messages (200 B, durable, 128 writers) in {fill_secs:.0} s ({:.0}/s)",
            prefill as f64 / fill_secs
        );
        let (mut empty, mut full) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            empty.push(run_writers(&empty_q, 128, &ten_k, secs).0);
            full.push(run_writers(&q, 128, &ten_k, secs).0);
        }
        let (e, f) = (median(&mut empty), median(&mut full));
        println!("  empty queue: {empty:.0?} enqueues/s, median {e:.0}");
        println!("  full queue:  {full:.0?} enqueues/s, median {f:.0}");
        println!(
            "  ratio full/empty {:.2} ({:+.0} %)",
            f / e,
            (f / e - 1.0) * 100.0
        );
        drop(empty_q);
        // The scheduler's hot path on the full queue.
        let t = Instant::now();
        for _ in 0..10_000 {
            assert!(q.next_due().unwrap().is_some());
        }
        let next_due_us = t.elapsed().as_secs_f64() * 1e6 / 10_000.0;
        let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
        let t = Instant::now();
        for _ in 0..10_000 {
            assert!(q.lease_due(an_hour_ago, 100).unwrap().is_empty());
        }
        let idle_us = t.elapsed().as_secs_f64() * 1e6 / 10_000.0;
        let t = Instant::now();
        let leased = q.lease_due(SystemTime::now(), 100).unwrap();
        let lease_ms = t.elapsed().as_secs_f64() * 1e3;
        println!(
            "  full queue: next_due {next_due_us:.1} µs, lease_due with nothing due {idle_us:.1} µs, \
             lease_due(100) {lease_ms:.1} ms ({} leased)",
            leased.len()
        );
        drop(leased);
        drop(q);
        let t = Instant::now();
        let q = open(dir.path(), QueueTuning::default());
        let open_s = t.elapsed().as_secs_f64();
        while !q.recovered() {
            std::thread::sleep(Duration::from_millis(5));
        }
        println!(
            "  reopen: Queue::open {open_s:.2} s; background recovery scan of {} messages over after {:.1} s",
            q.counts().total(),
            t.elapsed().as_secs_f64()
        );
    }
}
