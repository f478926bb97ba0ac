//! Record encoding (`serde_json`, one record per key, so a corrupt one is isolated) and the
//! operator-readable names of keys in error reports.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::QueueError;
use crate::id::QueueId;
use crate::schedule::parse_due_key;

pub(crate) fn encode<T: Serialize>(what: &'static str, v: &T) -> Result<Vec<u8>, QueueError> {
    serde_json::to_vec(v).map_err(|e| QueueError::Encode {
        what,
        reason: e.to_string(),
    })
}

pub(crate) fn decode<T: DeserializeOwned>(
    tree: &'static str,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, QueueError> {
    serde_json::from_slice(bytes).map_err(|e| QueueError::Corrupt {
        tree,
        key: key_name(key),
        reason: e.to_string(),
    })
}

/// A key as an operator can read it: the queue id (plus suffix) when it parses, else hex.
pub(crate) fn key_name(key: &[u8]) -> String {
    match (key.len(), QueueId::from_key(key)) {
        (8, Some(id)) => id.to_string(),
        (12, Some(id)) => format!(
            "{id}#{}",
            u32::from_be_bytes([key[8], key[9], key[10], key[11]])
        ),
        (16, _) => match parse_due_key(key) {
            Some((ms, id)) => format!("{ms}:{id}"),
            None => hex(key),
        },
        _ => hex(key),
    }
}

fn hex(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}
