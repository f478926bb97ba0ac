//! [`MessageWriter`]: streams one message body into the queue, then commits it.
//!
//! A body up to `QueueTuning::inline_body_max` (64 KiB by default) is buffered in memory and
//! handed to the group committer whole, which appends it to the body log (see `bodylog`) and
//! syncs it in the same round as the message's records, so it costs no file creation and no
//! fsync of its own (see the crate docs for the measurement). The first write that would
//! exceed it moves the buffer to `spool/<ID>` and streams the rest there, so a 25 MiB body
//! never sits in memory; before the message's records go into sled, the spool file is
//! `fdatasync`ed and the spool directory `fsync`ed: sled must never point at a body that could
//! be lost. A CRC-32 of the body is stored with the envelope and checked when the body is
//! read to its end (see [`crate::BodyReader`]).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;

use crate::durable::GroupCommit;
use crate::enqueue::{NewBody, NewMessage};
use crate::error::QueueError;
use crate::fs::sync_dir;
use crate::id::QueueId;
use crate::model::{Envelope, RecipientSpec};
use crate::store::Store;

/// Streams one message body into the queue; see [`MessageWriter::commit`].
pub struct MessageWriter {
    store: Arc<Store>,
    commit: Arc<GroupCommit>,
    id: QueueId,
    buf: Vec<u8>,
    file: Option<BufWriter<File>>,
    size: u64,
    crc: crc32fast::Hasher,
    /// Set once the spool file belongs to a committed message (Drop must not remove it).
    committed: bool,
}

/// A written body as the writer hands it over: its bytes or synced spool file, size and CRC.
pub(crate) struct Finished {
    pub body: NewBody,
    pub size: u64,
    pub crc32: u32,
}

impl MessageWriter {
    pub(crate) fn new(store: Arc<Store>, commit: Arc<GroupCommit>, id: QueueId) -> MessageWriter {
        MessageWriter {
            store,
            commit,
            id,
            buf: Vec::new(),
            file: None,
            size: 0,
            crc: crc32fast::Hasher::new(),
            committed: false,
        }
    }

    /// The id the message will have once committed (also names its spool file).
    pub fn id(&self) -> QueueId {
        self.id
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Makes the message durable: body, envelope and recipients are on stable storage when
    /// this returns `Ok` (one fsync shared with concurrent callers). On `Err` nothing of the
    /// message is left behind.
    pub fn commit(
        mut self,
        env: Envelope,
        rcpts: Vec<RecipientSpec>,
    ) -> Result<QueueId, QueueError> {
        let body = self.finish().inspect_err(|e| self.store.fail(e))?;
        let build = NewMessage::prepare(self.id, body.body, body.size, body.crc32, env, rcpts)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.commit.submit(build(Box::new(move |r| {
            let _ = tx.send(r);
        })));
        let id = rx.recv().map_err(|_| QueueError::Sync {
            reason: "queue committer stopped".into(),
        })??;
        self.committed = true;
        Ok(id)
    }

    /// Hands the body over for commit: the buffered bytes, or — when it went to a spool file —
    /// that file flushed and `fdatasync`ed, and the spool directory `fsync`ed.
    pub(crate) fn finish(&mut self) -> Result<Finished, QueueError> {
        let buf = std::mem::take(&mut self.buf);
        let body = match self.file.take() {
            Some(w) => {
                let path = self.spool_path();
                let file = w
                    .into_inner()
                    .map_err(|e| QueueError::io("write spool file", &path)(e.into_error()))?;
                file.sync_data()
                    .map_err(QueueError::io("fdatasync spool file", &path))?;
                sync_dir(self.store.spool_dir())?;
                NewBody::Spool
            }
            None => NewBody::in_memory(buf, &self.store.tuning),
        };
        Ok(Finished {
            body,
            size: self.size,
            crc32: self.crc.clone().finalize(),
        })
    }

    fn spool_path(&self) -> PathBuf {
        self.store.spool_path(self.id)
    }

    /// A spool file could not be written: the volume is full or failing, so the queue
    /// cannot take new mail until a probe write succeeds again.
    fn spool_failed(&self, e: &io::Error) {
        self.store
            .fail(QueueError::io("write spool file", self.spool_path())(
                clone_io(e),
            ));
    }

    /// Moves the in-memory buffer to a spool file.
    fn spill(&mut self) -> io::Result<()> {
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(self.spool_path())?;
        let mut w = BufWriter::with_capacity(128 * 1024, file);
        w.write_all(&self.buf)?;
        self.buf = Vec::new();
        self.file = Some(w);
        Ok(())
    }
}

impl Write for MessageWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.file.is_none() && self.buf.len() + data.len() > self.store.tuning.inline_body_max {
            self.spill().inspect_err(|e| self.spool_failed(e))?;
        }
        if let Some(f) = &mut self.file {
            if let Err(e) = f.write_all(data) {
                self.spool_failed(&e);
                return Err(e);
            }
        } else {
            self.buf.extend_from_slice(data);
        }
        self.crc.update(data);
        self.size += data.len() as u64;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush().inspect_err(|e| {
                self.store.fail(QueueError::io(
                    "write spool file",
                    self.store.spool_path(self.id),
                )(clone_io(e)))
            }),
            None => Ok(()),
        }
    }
}

impl Drop for MessageWriter {
    fn drop(&mut self) {
        if !self.committed {
            // Abort: the partial body must not outlive the writer. A crash before this runs
            // leaves an orphan that `Queue::open` removes.
            self.file = None;
            let path = self.spool_path();
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove aborted spool file");
                }
            }
        }
    }
}

impl std::fmt::Debug for MessageWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageWriter")
            .field("id", &self.id)
            .field("size", &self.size)
            .field("spooled", &self.file.is_some())
            .finish()
    }
}

fn clone_io(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}
