//! Crash test: a child process (this test binary re-invoked with `QUEUE_CRASH_CHILD` set)
//! enqueues from several threads in a loop and prints every id `commit` returned; the parent
//! kills it with SIGKILL at random moments, reopens the queue and checks that every printed
//! message is present and intact, and that nothing half-written is visible.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::*;
use danerelay_queue::*;

const CHILD_ENV: &str = "QUEUE_CRASH_CHILD";

/// Deterministic body for (seed, len): CRLF lines of pseudo-random letters.
fn gen_body(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        if v.len() % 80 == 78 {
            v.extend_from_slice(b"\r\n");
            continue;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(b'A' + (x % 26) as u8);
    }
    v.truncate(len);
    v
}

/// The child: enqueue forever, print `ENQ <id> <seed> <len>` after each successful commit.
/// Not a test of its own: `enqueued_messages_survive_sigkill` runs it with `--ignored`.
#[test]
#[ignore = "child process of enqueued_messages_survive_sigkill"]
fn crash_child() {
    let dir = std::env::var(CHILD_ENV).expect("QUEUE_CRASH_CHILD names the queue directory");
    let q = Queue::open(std::path::Path::new(&dir), opts()).unwrap();
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let q = q.clone();
            let out = Arc::clone(&out);
            std::thread::spawn(move || {
                let base = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64;
                for i in 0u64.. {
                    let seed = base ^ (t << 56) ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                    // Mostly inline bodies, every 5th one spooled.
                    let len = if i % 5 == 4 {
                        70_000 + (seed % 200_000) as usize
                    } else {
                        100 + (seed % 20_000) as usize
                    };
                    let data = gen_body(seed, len);
                    let mut w = q.begin().unwrap();
                    for chunk in data.chunks(4096) {
                        w.write_all(chunk).unwrap();
                    }
                    let id = w
                        .commit(env("crash@example.org"), vec![rcpt("x@example.net")])
                        .unwrap();
                    let mut o = out.lock().unwrap();
                    writeln!(o, "ENQ {id} {seed} {len}").unwrap();
                    o.flush().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn enqueued_messages_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked: HashMap<QueueId, (u64, usize)> = HashMap::new();
    for round in 0..5u64 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                lines.push(line);
            }
            lines
        });
        // A random moment: 300..1100 ms into the run (opening takes part of it).
        let jitter = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u64
            % 800;
        std::thread::sleep(Duration::from_millis(300 + jitter + round * 37));
        let status = child.try_wait().unwrap();
        assert!(
            status.is_none(),
            "round {round}: the child must still be enqueueing when killed, it exited: {status:?}"
        );
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        let mut new = 0;
        for line in reader.join().unwrap() {
            // libtest's "test crash_child ... " may precede the first line, unterminated.
            let Some(start) = line.find("ENQ ") else {
                continue;
            };
            let parts: Vec<&str> = line[start..].split(' ').collect();
            // A line cut by the kill is not an acknowledgement; only complete ones count.
            if parts.len() == 4 && parts[0] == "ENQ" {
                if let (Ok(id), Ok(seed), Ok(len)) = (
                    parts[1].parse::<QueueId>(),
                    parts[2].parse::<u64>(),
                    parts[3].parse::<usize>(),
                ) {
                    acked.insert(id, (seed, len));
                    new += 1;
                }
            }
        }
        eprintln!("round {round}: {new} enqueues acknowledged before SIGKILL");

        let q = Queue::open(dir.path(), opts()).unwrap();
        assert!(q.corrupt_records().is_empty(), "{:?}", q.corrupt_records());
        for (id, (seed, len)) in &acked {
            let info = q
                .show(*id)
                .unwrap()
                .unwrap_or_else(|| panic!("acknowledged message {id} lost"));
            assert_eq!(info.size, *len as u64, "{id}");
            assert_eq!(info.recipients.len(), 1);
            assert_eq!(info.envelope.sender, "crash@example.org");
            let got = read_all(q.body(*id).unwrap());
            assert!(got == gen_body(*seed, *len), "body of {id} damaged");
        }
        // Nothing half-written: every message present (acknowledged or not) is whole.
        let all = q.list(&ListFilter::default()).unwrap();
        assert_eq!(all.len() as u64, q.counts().total());
        for m in &all {
            assert_eq!(m.recipients.len(), 1, "{}", m.id);
            let body = read_all(q.body(m.id).unwrap()); // CRC-checked to the end
            assert_eq!(body.len() as u64, m.size);
        }
        // Every spool file belongs to a message (orphans of the killed writers are gone).
        let listed: std::collections::HashSet<String> =
            all.iter().map(|m| m.id.to_string()).collect();
        for f in spool_files(dir.path()) {
            assert!(listed.contains(&f), "orphan spool file {f}");
        }
    }
    assert!(
        acked.len() > 20,
        "the child should have enqueued something: {}",
        acked.len()
    );
}
