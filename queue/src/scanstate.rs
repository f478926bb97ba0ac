//! The recovery scan's progress, read by every change of a message queued before open to
//! decide whether the counters already include it (see `scan` for the whole argument).

use std::collections::HashSet;

use crate::id::QueueId;

/// Where the scan is. Read by every change of an old message (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct ScanState {
    /// Key of the last message queued at open; `None` = nothing to scan.
    pub floor: Option<[u8; 8]>,
    /// Key of the last message scanned.
    pub cursor: Option<[u8; 8]>,
    pub done: bool,
    /// Body-log segments on disk at open.
    pub segments: HashSet<u64>,
}

impl ScanState {
    /// The scan of the messages up to `floor` (the last key queued at open).
    pub(crate) fn new(floor: Option<QueueId>, segments: HashSet<u64>) -> ScanState {
        ScanState {
            floor: floor.map(|id| id.key()),
            cursor: None,
            done: floor.is_none(),
            segments,
        }
    }

    /// Whether the counters (and segment references) already include message `id`, so that
    /// a change to it must be counted.
    pub(crate) fn seen(&self, id: QueueId) -> bool {
        let key = id.key();
        self.done || self.floor.is_none_or(|f| key > f) || self.cursor.is_some_and(|c| key <= c)
    }

    pub(crate) fn done(&self) -> bool {
        self.done
    }
}
