//! Filesystem durability helpers shared by the body log, the spool writer and the committer.

use std::fs::File;
use std::path::Path;

use crate::error::QueueError;

/// fsync of a directory, so that entries created or removed in it survive power loss.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), QueueError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(QueueError::io("fsync directory", dir))
}
