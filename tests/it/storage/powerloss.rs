//! Power-loss testing: the relay's queue on `lossyfs`, under submission and
//! delivery load, cut at random moments (kill -9, then every write not yet
//! made durable is dropped), restarted on what survived. Checked at the end:
//! every message that got `250` was delivered byte-identical, the queue
//! opened every time without repair, and nothing was delivered twice except
//! messages in flight at a cut (at most `delivery.concurrency` per cut, each
//! repeat in a later run than the first delivery).
//!
//! `cargo test` runs a few cut points; `tests/powerloss.sh` runs many
//! (`DANERELAY_POWERLOSS_CUTS`, `DANERELAY_POWERLOSS_SEED`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::lossyfs::{CutReport, Faults, LossyFs};
use super::relay::{config, message, queued_id, start, submit, Relay};
use super::sink::Sink;
use crate::support::require_mounts;

/// Deliveries in flight at once (`delivery.concurrency`): the most a cut can
/// repeat.
const CONCURRENCY: usize = 8;

/// A small deterministic generator (xorshift), so a seed replays a run.
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below.max(1)
    }
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Every message that got 250: tag → (queue id, bytes).
type Acked = Arc<Mutex<HashMap<String, (String, Vec<u8>)>>>;

/// Submits from two threads until `stop`; records every message that got 250.
fn load(
    smtp: u16,
    stop: Arc<AtomicBool>,
    counter: Arc<AtomicUsize>,
    acked: Acked,
    seed: u64,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..2u64)
        .map(|t| {
            let (stop, counter, acked) = (stop.clone(), counter.clone(), acked.clone());
            std::thread::spawn(move || {
                let mut rng = Rng(seed ^ (t + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                while !stop.load(Ordering::SeqCst) {
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    let tag = format!("pl{n:06}");
                    // Mostly body-log sized, every fourth one spooled.
                    let size = if rng.next(4) == 0 {
                        70_000 + rng.next(60_000) as usize
                    } else {
                        500 + rng.next(20_000) as usize
                    };
                    let msg = message(&tag, size);
                    match submit(smtp, "user@example.net", &msg) {
                        Ok(reply) => {
                            if let Some(id) = queued_id(&reply) {
                                acked.lock().unwrap().insert(tag, (id, msg));
                            }
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            })
        })
        .collect()
}

fn subject_tag(data: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(data);
    text.lines()
        .find_map(|l| l.strip_prefix("Subject: "))
        .map(|s| s.trim().to_string())
}

struct Outcome {
    cuts: usize,
    acked: usize,
    delivered: usize,
    repeated: usize,
    lost: CutReport,
}

fn run(cuts: usize, seed: u64) -> Option<Outcome> {
    if !require_mounts() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let vol = dir.path().join("vol");
    std::fs::create_dir(&vol).unwrap();
    let mounted = LossyFs::mount(&vol).expect("mount lossyfs (FUSE)");
    let fs = mounted.fs.clone();
    let sink = Sink::start();
    let queue = vol.join("queue");
    let (file, smtp, http) = config(
        dir.path(),
        &queue,
        &format!("[127.0.0.1]:{}", sink.port),
        "min_free_space = \"0\"\nretry = [\"1s\"]",
        &format!("concurrency = {CONCURRENCY}"),
    );
    let log = dir.path().join("relay.log");
    let acked: Acked = Arc::default();
    let counter = Arc::new(AtomicUsize::new(0));
    let mut rng = Rng(seed | 1);
    let mut lost = CutReport::default();
    // A cut can land where everything happened to be synced; keep cutting
    // (bounded) until one has dropped unsynced data, or the run proves nothing.
    let mut cut = 0;
    while cut < cuts || (lost.files_rolled_back == 0 && cut < cuts * 4) {
        sink.epoch.store(cut, Ordering::SeqCst);
        let relay = start(&file, smtp, http, &log);
        let stop = Arc::new(AtomicBool::new(false));
        let threads = load(
            smtp,
            stop.clone(),
            counter.clone(),
            acked.clone(),
            seed ^ cut as u64,
        );
        std::thread::sleep(Duration::from_millis(150 + rng.next(700)));
        relay.kill9();
        stop.store(true, Ordering::SeqCst);
        for t in threads {
            t.join().unwrap();
        }
        let r = fs.cut();
        lost.files_rolled_back += r.files_rolled_back;
        lost.bytes_lost += r.bytes_lost;
        lost.dirs_rolled_back += r.dirs_rolled_back;
        cut += 1;
    }
    let cuts = cut;
    // The last run: no load, everything queued must go out.
    sink.epoch.store(cuts, Ordering::SeqCst);
    let relay: Relay = start(&file, smtp, http, &log);
    let acked = acked.lock().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got: std::collections::HashSet<String> = sink
            .deliveries()
            .iter()
            .filter_map(|d| subject_tag(&d.data))
            .collect();
        if acked.keys().all(|t| got.contains(t)) {
            break;
        }
        if Instant::now() >= deadline {
            let missing: Vec<_> = acked
                .iter()
                .filter(|(t, _)| !got.contains(*t))
                .map(|(t, (id, _))| format!("{t} ({id})"))
                .take(5)
                .collect();
            let kept = std::env::temp_dir().join(format!("powerloss-{seed}.log"));
            let _ = std::fs::copy(&log, &kept);
            panic!(
                "acknowledged messages never delivered (seed {seed}): {missing:?}; relay log kept in {}",
                kept.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // A moment for anything that would be delivered twice to show up.
    std::thread::sleep(Duration::from_secs(2));
    relay.kill9();
    drop(mounted);

    let deliveries = sink.deliveries();
    let mut by_tag: HashMap<String, Vec<&super::sink::Delivery>> = HashMap::new();
    for d in &deliveries {
        if let Some(tag) = subject_tag(&d.data) {
            by_tag.entry(tag).or_default().push(d);
        }
    }
    for (tag, (_, msg)) in &acked {
        let copies = &by_tag[tag];
        assert!(
            copies.iter().all(|d| d.data.ends_with(msg)),
            "{tag}: delivered bytes differ from what was accepted (seed {seed})"
        );
    }
    let mut repeated = 0;
    let mut per_epoch = HashMap::new();
    for (tag, copies) in &by_tag {
        let mut epochs: Vec<usize> = copies.iter().map(|d| d.epoch).collect();
        epochs.sort_unstable();
        for w in epochs.windows(2) {
            assert!(
                w[0] < w[1],
                "{tag} delivered twice within one run {} (seed {seed})",
                w[0]
            );
            repeated += 1;
            *per_epoch.entry(w[0]).or_insert(0usize) += 1;
        }
    }
    for (epoch, n) in per_epoch {
        assert!(
            n <= CONCURRENCY,
            "{n} messages delivered again after the cut ending run {epoch}: more than were in flight (seed {seed})"
        );
    }
    Some(Outcome {
        cuts,
        acked: acked.len(),
        delivered: by_tag.len(),
        repeated,
        lost,
    })
}

#[test]
fn power_cuts_lose_nothing_acknowledged_and_repeat_only_what_was_in_flight() {
    let cuts = env_num("DANERELAY_POWERLOSS_CUTS", 4) as usize;
    let seed = env_num("DANERELAY_POWERLOSS_SEED", 0);
    let seed = if seed == 0 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    } else {
        seed
    };
    let Some(o) = run(cuts, seed) else {
        return;
    };
    eprintln!(
        "power loss: seed {seed}, {} cuts, {} messages acknowledged, {} delivered, {} repeated \
         (in flight at a cut); the cuts dropped unsynced data from {} files ({} bytes) and names \
         in {} directories",
        o.cuts,
        o.acked,
        o.delivered,
        o.repeated,
        o.lost.files_rolled_back,
        o.lost.bytes_lost,
        o.lost.dirs_rolled_back
    );
    assert!(o.acked > 0);
    assert!(
        o.lost.files_rolled_back > 0,
        "the cuts dropped nothing: not a power-loss test"
    );
}

/// Faults the lossyfs injects into a running relay: read-only (every change
/// EROFS) and ENOSPC while deliveries complete. Both turn `/readyz` 503 and
/// submissions 451, and the relay comes back by itself; an outcome that
/// could not be stored is not delivered again.
#[test]
fn read_only_and_full_volume_faults_recover_without_restart() {
    if !require_mounts() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let vol = dir.path().join("vol");
    std::fs::create_dir(&vol).unwrap();
    let mounted = LossyFs::mount(&vol).expect("mount lossyfs (FUSE)");
    let fs = mounted.fs.clone();
    let sink = Sink::start();
    let queue = vol.join("queue");
    let (file, smtp, http) = config(
        dir.path(),
        &queue,
        &format!("[127.0.0.1]:{}", sink.port),
        "min_free_space = \"0\"\nretry = [\"1s\"]",
        "",
    );
    let relay = start(&file, smtp, http, &dir.path().join("relay.log"));
    let first = message("ro-before", 3000);
    assert!(queued_id(&submit(smtp, "user@example.net", &first).unwrap()).is_some());

    // Read-only: refused, not ready; writable again: ready, accepted.
    fs.set_faults(Faults {
        read_only: true,
        ..Faults::default()
    });
    let reply = submit(smtp, "user@example.net", &message("ro-during", 3000)).unwrap();
    assert!(reply.starts_with("451 4.3.0"), "{reply}");
    assert_eq!(
        relay.wait_readyz(503, Duration::from_secs(5)).trim(),
        "storage-error"
    );
    fs.set_faults(Faults::default());
    relay.wait_readyz(200, Duration::from_secs(10));
    let after = message("ro-after", 3000);
    assert!(queued_id(&submit(smtp, "user@example.net", &after).unwrap()).is_some());

    // A full volume (ENOSPC on every write): the same, and back by itself.
    fs.set_faults(Faults {
        enospc: true,
        ..Faults::default()
    });
    let reply = submit(smtp, "user@example.net", &message("full-during", 3000)).unwrap();
    assert!(reply.starts_with("451 4.3.0"), "{reply}");
    assert_eq!(
        relay.wait_readyz(503, Duration::from_secs(5)).trim(),
        "storage-error"
    );
    fs.set_faults(Faults::default());
    relay.wait_readyz(200, Duration::from_secs(10));

    // Everything so far gets delivered once.
    let deadline = Instant::now() + Duration::from_secs(20);
    while sink.deliveries().len() < 2 {
        assert!(Instant::now() < deadline, "not delivered after recovery");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    let tags: Vec<String> = sink
        .deliveries()
        .iter()
        .filter_map(|d| subject_tag(&d.data))
        .collect();
    assert_eq!(tags.len(), 2, "{tags:?}");
    drop(relay);
    drop(mounted);
}

/// EIO reading one stored body: that message is set aside (kept, retried
/// later), the others are delivered.
#[test]
fn eio_on_one_body_sets_it_aside_and_the_rest_flows() {
    if !require_mounts() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let vol = dir.path().join("vol");
    std::fs::create_dir(&vol).unwrap();
    let mounted = LossyFs::mount(&vol).expect("mount lossyfs (FUSE)");
    let fs = mounted.fs.clone();
    let sink = Sink::start();
    let queue = vol.join("queue");
    // Deliveries to a closed port first: the messages stay queued.
    let (file, smtp, http) = config(
        dir.path(),
        &queue,
        "[127.0.0.1]:9",
        "min_free_space = \"0\"\nretry = [\"1s\"]",
        "",
    );
    let relay = start(&file, smtp, http, &dir.path().join("relay.log"));
    let big = message("eio-big", 100_000);
    let reply = submit(smtp, "user@example.net", &big).unwrap();
    let bad = queued_id(&reply).unwrap();
    let small = message("eio-small", 2000);
    assert!(queued_id(&submit(smtp, "user@example.net", &small).unwrap()).is_some());
    relay.kill9();
    // Its spool file now fails to read; deliveries go to the sink.
    fs.set_faults(Faults {
        eio_read: Some(format!("spool/{bad}")),
        ..Faults::default()
    });
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("[127.0.0.1]:9", &format!("[127.0.0.1]:{}", sink.port));
    std::fs::write(&file, text).unwrap();
    let relay = start(&file, smtp, http, &dir.path().join("relay.log"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sink
        .deliveries()
        .iter()
        .any(|d| subject_tag(&d.data).as_deref() == Some("eio-small"))
    {
        assert!(
            Instant::now() < deadline,
            "the healthy message was not delivered"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !sink
            .deliveries()
            .iter()
            .any(|d| subject_tag(&d.data).as_deref() == Some("eio-big")),
        "a body that could not be read was delivered"
    );
    assert_eq!(
        relay.readyz().0,
        200,
        "one unreadable body is not a broken queue"
    );
    let log = std::fs::read_to_string(dir.path().join("relay.log")).unwrap();
    assert!(
        log.contains(&bad),
        "the unreadable message is reported by id"
    );
    // Readable again: it goes out.
    fs.set_faults(Faults::default());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sink
        .deliveries()
        .iter()
        .any(|d| subject_tag(&d.data).as_deref() == Some("eio-big"))
    {
        assert!(Instant::now() < deadline, "not delivered once readable");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(relay);
    drop(mounted);
}

/// The queue alone on lossyfs: a committed message survives a cut.
#[test]
fn queue_commit_survives_a_cut() {
    use std::io::Write;
    if !require_mounts() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let vol = dir.path().join("vol");
    std::fs::create_dir(&vol).unwrap();
    let mounted = LossyFs::mount(&vol).expect("mount lossyfs (FUSE)");
    let opts = danerelay::queue_options(&super::enospc::test_queue());
    let q = danerelay_queue::Queue::open(&vol.join("queue"), opts.clone()).unwrap();
    let mut ids = Vec::new();
    for i in 0..3 {
        let mut w = q.begin().unwrap();
        w.write_all(&message(&format!("c{i}"), 2000)).unwrap();
        let env = danerelay_queue::Envelope::new("a@example.org", std::time::SystemTime::now());
        let rcpt = danerelay_queue::RecipientSpec {
            address: "b@example.net".into(),
            orcpt: None,
            notify: danerelay_queue::Notify::default(),
        };
        ids.push(w.commit(env, vec![rcpt]).unwrap());
    }
    let r = mounted.fs.cut();
    eprintln!("{r:?}");
    drop(q);
    let q = danerelay_queue::Queue::open(&vol.join("queue"), opts).unwrap();
    for id in ids {
        assert!(q.show(id).unwrap().is_some(), "{id} lost");
    }
}

/// An outcome that cannot be stored (ENOSPC inside sled's flush) is kept in
/// memory: nothing is leased meanwhile, and once writes succeed the queue
/// repairs itself (sled reopened) and stores it — the delivered message is
/// gone, not due again, also after a reopen.
#[test]
fn outcome_kept_while_storage_fails_is_stored_after_recovery() {
    use std::io::Write;
    use std::time::SystemTime;
    if !require_mounts() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let vol = dir.path().join("vol");
    std::fs::create_dir(&vol).unwrap();
    let mounted = LossyFs::mount(&vol).expect("mount lossyfs (FUSE)");
    let opts = danerelay::queue_options(&super::enospc::test_queue());
    let q = danerelay_queue::Queue::open(&vol.join("queue"), opts.clone()).unwrap();
    let rcpt = || danerelay_queue::RecipientSpec {
        address: "b@example.net".into(),
        orcpt: None,
        notify: danerelay_queue::Notify::default(),
    };
    let mut ids = Vec::new();
    for i in 0..2 {
        let mut w = q.begin().unwrap();
        w.write_all(&message(&format!("k{i}"), 2000)).unwrap();
        let env = danerelay_queue::Envelope::new("a@example.org", SystemTime::now());
        ids.push(w.commit(env, vec![rcpt()]).unwrap());
    }
    let leased = q.lease_due(SystemTime::now(), 1).unwrap().pop().unwrap();
    mounted.fs.set_faults(Faults {
        enospc: true,
        ..Faults::default()
    });
    let delivered = danerelay_queue::Disposition::Delivered {
        reply: "250 ok".into(),
    };
    let r = q.complete(&leased, &[(0, delivered)], SystemTime::now());
    assert!(
        matches!(r, Err(danerelay_queue::QueueError::OutcomeKept { .. })),
        "{r:?}"
    );
    assert!(matches!(
        q.health(),
        danerelay_queue::StorageHealth::Failed { .. }
    ));
    assert!(
        q.lease_due(SystemTime::now(), 10).is_err(),
        "leased while failing"
    );
    mounted.fs.set_faults(Faults::default());
    let start = Instant::now();
    while q.health() != danerelay_queue::StorageHealth::Ok {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            q.health()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        q.show(leased.id).unwrap().is_none(),
        "kept outcome not stored"
    );
    let other = ids.into_iter().find(|id| *id != leased.id).unwrap();
    let again = q.lease_due(SystemTime::now(), 10).unwrap();
    assert_eq!(again.iter().map(|l| l.id).collect::<Vec<_>>(), vec![other]);
    drop(again);
    drop(q);
    let q = danerelay_queue::Queue::open(&vol.join("queue"), opts).unwrap();
    assert!(
        q.show(leased.id).unwrap().is_none(),
        "delivered message back after reopen"
    );
    assert!(q.show(other).unwrap().is_some());
}
