//! Message bodies: the streaming [`MessageWriter`] and the [`BodyReader`] handed to delivery.
//!
//! A body up to `QueueTuning::inline_body_max` (64 KiB by default) is buffered in memory and
//! stored in sled's `body` tree in the same transaction as its envelope, so it costs no file
//! creation, no extra fsync and no directory fsync (see the crate docs for the measurement).
//! The first write that would exceed it moves the buffer to `spool/<ID>` and streams the rest
//! there, so a 25 MiB body never sits in memory. Before the message's records go into sled, the
//! spool file is `fdatasync`ed and the spool directory `fsync`ed: sled must never point at a
//! body that could be lost. A CRC-32 of the body is stored with the envelope and checked when
//! the body is read to its end, so a damaged body is an error, never silently delivered.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::QueueError;
use crate::id::QueueId;
use crate::model::{Envelope, RecipientSpec};
use crate::store::Inner;

/// Streams one message body into the queue; see [`MessageWriter::commit`].
pub struct MessageWriter {
    pub(crate) inner: Arc<Inner>,
    pub(crate) id: QueueId,
    pub(crate) buf: Vec<u8>,
    pub(crate) file: Option<BufWriter<File>>,
    pub(crate) size: u64,
    pub(crate) crc: crc32fast::Hasher,
    /// Set once the spool file belongs to a committed message (Drop must not remove it).
    pub(crate) committed: bool,
}

impl MessageWriter {
    pub(crate) fn new(inner: Arc<Inner>, id: QueueId) -> MessageWriter {
        MessageWriter {
            inner,
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
        let inner = Arc::clone(&self.inner);
        inner.commit_message(&mut self, env, rcpts)
    }

    fn spool_path(&self) -> PathBuf {
        self.inner.spool_path(self.id)
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

    /// For `commit`: flushes and fsyncs the spool file (if any) and the spool directory.
    pub(crate) fn finish_spool(&mut self) -> Result<bool, QueueError> {
        let Some(w) = self.file.take() else {
            return Ok(false);
        };
        let path = self.spool_path();
        let file = w
            .into_inner()
            .map_err(|e| QueueError::io("write spool file", &path)(e.into_error()))?;
        file.sync_data()
            .map_err(QueueError::io("fdatasync spool file", &path))?;
        crate::durable::sync_dir(self.inner.spool_dir())?;
        Ok(true)
    }
}

impl Write for MessageWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.file.is_none() && self.buf.len() + data.len() > self.inner.tuning.inline_body_max {
            self.spill()?;
        }
        match &mut self.file {
            Some(f) => f.write_all(data)?,
            None => self.buf.extend_from_slice(data),
        }
        self.crc.update(data);
        self.size += data.len() as u64;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
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

enum Source {
    Inline {
        data: sled::IVec,
        pos: usize,
    },
    /// A spool file, or a slice of a body-log segment.
    File(std::io::Take<BufReader<File>>),
}

/// Reads a stored body: exactly the bytes given to the [`MessageWriter`]. Reading to the end
/// verifies the stored CRC-32 and fails with `InvalidData` on a mismatch or a short body.
pub struct BodyReader {
    source: Source,
    size: u64,
    read: u64,
    crc: crc32fast::Hasher,
    expected_crc: u32,
}

impl BodyReader {
    pub(crate) fn inline(data: sled::IVec, size: u64, crc: u32) -> BodyReader {
        BodyReader::new(Source::Inline { data, pos: 0 }, size, crc)
    }

    /// `size` bytes from `off` in the file at `path` (a spool file, or a body-log segment).
    /// Reading stops at `size`, so a file that is too short fails the CRC check at the end.
    pub(crate) fn spool(
        path: &Path,
        off: u64,
        size: u64,
        crc: u32,
    ) -> Result<BodyReader, QueueError> {
        let mut f = File::open(path).map_err(QueueError::io("open body file", path))?;
        if off > 0 {
            f.seek(SeekFrom::Start(off))
                .map_err(QueueError::io("seek body file", path))?;
        }
        let src = Source::File(BufReader::with_capacity(64 * 1024, f).take(size));
        Ok(BodyReader::new(src, size, crc))
    }

    fn new(source: Source, size: u64, expected_crc: u32) -> BodyReader {
        BodyReader {
            source,
            size,
            read: 0,
            crc: crc32fast::Hasher::new(),
            expected_crc,
        }
    }

    /// The body's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
}

impl Read for BodyReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = match &mut self.source {
            Source::Inline { data, pos } => {
                let rest = data.get(*pos..).unwrap_or_default();
                let n = rest.len().min(out.len());
                out[..n].copy_from_slice(&rest[..n]);
                *pos += n;
                n
            }
            Source::File(f) => f.read(out)?,
        };
        self.crc.update(&out[..n]);
        self.read += n as u64;
        if n == 0 && !out.is_empty() {
            let crc = self.crc.clone().finalize();
            if self.read != self.size || crc != self.expected_crc {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "queued body damaged: {} of {} bytes, crc {crc:08x} expected {:08x}",
                        self.read, self.size, self.expected_crc
                    ),
                ));
            }
        }
        Ok(n)
    }
}

impl std::fmt::Debug for BodyReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.source {
            Source::Inline { .. } => "inline",
            Source::File(_) => "file",
        };
        f.debug_struct("BodyReader")
            .field("source", &kind)
            .field("size", &self.size)
            .field("read", &self.read)
            .finish()
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
