//! The fsyncs sled 0.34 leaves out (see `durable` for why), and the panic guard every call
//! into sled from the committer goes through.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::QueueError;
use crate::fs::sync_dir;
use crate::store::Trees;

/// A panic inside sled must not leave every writer waiting forever: it fails the round.
pub(crate) fn guarded<T>(
    what: &str,
    f: impl FnOnce() -> Result<T, QueueError>,
) -> Result<T, QueueError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(QueueError::Sync {
            reason: format!("panic while {what}"),
        })
    })
}

/// Flushes sled and syncs the files it leaves unsynced.
pub(crate) struct SledSyncer {
    db: sled::Db,
    log: File,
    log_path: PathBuf,
    blob_dir: PathBuf,
    /// Blob files already synced, with the length they had then: sled may still be writing a
    /// blob when we list it, so one whose length changed is synced again.
    synced_blobs: HashMap<OsString, u64>,
}

impl SledSyncer {
    pub(crate) fn new(trees: &Trees, sled_dir: &Path) -> Result<SledSyncer, QueueError> {
        let log_path = sled_dir.join("db");
        let log = File::open(&log_path).map_err(QueueError::io("open sled log", &log_path))?;
        Ok(SledSyncer {
            db: trees.db.clone(),
            log,
            log_path,
            blob_dir: sled_dir.join("blobs"),
            synced_blobs: HashMap::new(),
        })
    }

    /// Flushes sled and syncs its files (the body log is the caller's business).
    pub(crate) fn sync_sled(&mut self) -> Result<(), QueueError> {
        self.db.flush().map_err(QueueError::db("flush"))?;
        self.log
            .sync_data()
            .map_err(QueueError::io("fdatasync sled log", &self.log_path))?;
        self.sync_blobs()
    }

    fn sync_blobs(&mut self) -> Result<(), QueueError> {
        let entries = match std::fs::read_dir(&self.blob_dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(QueueError::io("list sled blobs", &self.blob_dir)(e)),
        };
        let mut present = HashMap::new();
        let mut new_entries = false;
        for entry in entries {
            let entry = entry.map_err(QueueError::io("list sled blobs", &self.blob_dir))?;
            let name = entry.file_name();
            let path = entry.path();
            let len = match entry.metadata() {
                Ok(m) => m.len(),
                // sled garbage-collected it meanwhile: nothing to make durable.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(QueueError::io("stat sled blob", &path)(e)),
            };
            if self.synced_blobs.get(&name) != Some(&len) {
                match File::open(&path) {
                    Ok(f) => f
                        .sync_data()
                        .map_err(QueueError::io("fdatasync sled blob", &path))?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(QueueError::io("open sled blob", &path)(e)),
                }
                new_entries = true;
            }
            present.insert(name, len);
        }
        if new_entries {
            sync_dir(&self.blob_dir)?;
        }
        self.synced_blobs = present;
        Ok(())
    }
}
