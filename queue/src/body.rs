//! [`BodyReader`]: a stored body as delivery reads it — bytes from sled's `body` tree, a
//! `spool/<ID>` file, or a slice of a body-log segment (see `bodylog`) — checked against the
//! CRC-32 stored with the envelope once read to its end, so a damaged body is an error, never
//! silently delivered.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use crate::error::QueueError;

enum Source {
    Inline {
        data: sled::IVec,
        pos: usize,
    },
    /// A spool file, or a slice of a body-log segment.
    File(std::io::Take<BufReader<File>>),
}

/// Reads a stored body: exactly the bytes given to the [`crate::MessageWriter`]. Reading to the end
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
