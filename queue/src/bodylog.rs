//! The body log: small bodies appended to shared segment files `bodies/<n>` and made durable
//! by the group committer with one `fdatasync` per segment per round, however many bodies the
//! round covers.
//!
//! Why not sled: sled 0.34 keeps values inside its B-tree leaves (16 entries, rewritten whole
//! after 10 deltas), so a 10 KiB body is written to disk several times over; we measured
//! 1.5–3.6 MB flushed per batch of ~37 messages of 10 KiB. Why not a file per body: each one
//! costs its own `fdatasync` and a directory `fsync`. See the crate docs for the figures.
//!
//! A segment is never rewritten. It is deleted once no queued message refers to it (the
//! reference counts live in memory and are rebuilt from the `meta` tree by the recovery scan
//! after open, see `scan`), and only after the removal of the last reference is durable.
//! Segments that existed at open are deleted only once that scan is over.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::QueueError;
use crate::fs::sync_dir;
use crate::lock::lock;

struct Current {
    n: u64,
    file: Arc<File>,
    len: u64,
}

#[derive(Default)]
struct Pending {
    /// Segments written to since the last sync, registered by each writer after its write.
    files: HashMap<u64, Arc<File>>,
    /// A segment was created since the last sync: the directory needs an fsync too.
    new_entries: bool,
}

pub(crate) struct BodyLog {
    dir: PathBuf,
    /// A segment is closed once it would grow past this.
    segment_max: u64,
    current: Mutex<Current>,
    pending: Mutex<Pending>,
    refs: Mutex<HashMap<u64, u64>>,
    /// The highest segment at open: segments up to it are counted by the recovery scan.
    old_max: u64,
    /// The recovery scan still runs: no segment up to `old_max` is deleted.
    recovering: AtomicBool,
}

impl BodyLog {
    /// Opens the log in `dir`; new bodies go to a fresh segment after the highest existing.
    pub(crate) fn open(dir: &Path, segment_max: u64) -> Result<BodyLog, QueueError> {
        std::fs::create_dir_all(dir).map_err(QueueError::io("create directory", dir))?;
        let highest = segments(dir)?.into_iter().max().unwrap_or(0);
        let current = create(dir, highest + 1)?;
        sync_dir(dir)?;
        Ok(BodyLog {
            dir: dir.to_path_buf(),
            segment_max,
            current: Mutex::new(current),
            pending: Mutex::new(Pending::default()),
            refs: Mutex::new(HashMap::new()),
            old_max: highest,
            recovering: AtomicBool::new(true),
        })
    }

    pub(crate) fn path(&self, seg: u64) -> PathBuf {
        self.dir.join(seg.to_string())
    }

    /// Appends a body and counts a reference to its segment (the caller `release`s it if the
    /// message is not queued after all); returns (segment, offset). Durable after the next
    /// `sync`. The reference is taken under the same lock as the offset, so a segment can
    /// never be deleted between a writer's reservation and its record.
    pub(crate) fn append(&self, data: &[u8]) -> Result<(u64, u64), QueueError> {
        let mut retired = None;
        let (n, file, off) = {
            let mut cur = lock(&self.current);
            if cur.len > 0 && cur.len + data.len() as u64 > self.segment_max {
                retired = Some(cur.n);
                *cur = create(&self.dir, cur.n + 1)?;
                lock(&self.pending).new_entries = true;
            }
            let off = cur.len;
            cur.len += data.len() as u64;
            *lock(&self.refs).entry(cur.n).or_insert(0) += 1;
            (cur.n, Arc::clone(&cur.file), off)
        };
        if let Some(old) = retired {
            // Every message in it may already be gone.
            self.delete_if_unreferenced(old, n);
        }
        // Outside the lock: concurrent writers copy their bodies in parallel.
        if let Err(e) = file.write_all_at(data, off) {
            self.release(n);
            return Err(QueueError::io("append body", self.path(n))(e));
        }
        lock(&self.pending).files.entry(n).or_insert(file);
        Ok((n, off))
    }

    /// Makes every body appended before this call durable.
    pub(crate) fn sync(&self) -> Result<(), QueueError> {
        let (files, new_entries) = {
            let mut p = lock(&self.pending);
            (
                std::mem::take(&mut p.files),
                std::mem::take(&mut p.new_entries),
            )
        };
        for f in files.values() {
            f.sync_data()
                .map_err(QueueError::io("fdatasync body log", &self.dir))?;
        }
        if new_entries {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Counts a queued message whose body is in `seg` (the recovery scan).
    pub(crate) fn add_ref(&self, seg: u64) {
        *lock(&self.refs).entry(seg).or_insert(0) += 1;
    }

    /// Drops a reference (the message's removal is durable); deletes a segment nobody needs.
    pub(crate) fn release(&self, seg: u64) {
        let current = lock(&self.current).n;
        {
            let mut refs = lock(&self.refs);
            let Some(count) = refs.get_mut(&seg) else {
                return;
            };
            *count = count.saturating_sub(1);
        }
        self.delete_if_unreferenced(seg, current);
    }

    /// Deletes a closed segment with no references. Never holds `refs` and `current` at once
    /// (`append` takes them in the order current → refs).
    fn delete_if_unreferenced(&self, seg: u64, current: u64) {
        if seg == current || (seg <= self.old_max && self.recovering.load(Ordering::Acquire)) {
            return;
        }
        {
            let mut refs = lock(&self.refs);
            if refs.get(&seg).is_some_and(|c| *c > 0) {
                return;
            }
            refs.remove(&seg);
        }
        let path = self.path(seg);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "could not remove body segment")
            }
        }
    }

    /// The recovery scan is over (every reference counted): removes the segments from before
    /// open that nothing refers to. Later segments are looked after by `release`.
    pub(crate) fn end_recovery(&self) {
        self.recovering.store(false, Ordering::Release);
        let on_disk = match segments(&self.dir) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "could not list the body log; unreferenced segments stay until the next open");
                return;
            }
        };
        for seg in on_disk.into_iter().filter(|s| *s <= self.old_max) {
            self.delete_if_unreferenced(seg, u64::MAX);
        }
    }

    /// The segments on disk now.
    pub(crate) fn segment_set(&self) -> Result<std::collections::HashSet<u64>, QueueError> {
        Ok(segments(&self.dir)?.into_iter().collect())
    }
}

fn create(dir: &Path, n: u64) -> Result<Current, QueueError> {
    let path = dir.join(n.to_string());
    let file = File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(QueueError::io("create body segment", &path))?;
    Ok(Current {
        n,
        file: Arc::new(file),
        len: 0,
    })
}

fn segments(dir: &Path) -> Result<Vec<u64>, QueueError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(QueueError::io("list body log", dir))? {
        let entry = entry.map_err(QueueError::io("list body log", dir))?;
        if let Some(n) = entry.file_name().to_str().and_then(|s| s.parse().ok()) {
            out.push(n);
        }
    }
    Ok(out)
}
