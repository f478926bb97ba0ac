//! Queue ids: 12 characters of Crockford base32 (`[0-9A-Z]` without I, L, O, U) encoding the
//! microseconds since 2020-01-01 at which the message was begun. Fixed width, so the string
//! order, the numeric order and the sled key order (big-endian `u64`) are all arrival order;
//! short, safe in logs, file names and URLs. `IdGen` makes them strictly increasing even when
//! many messages start in the same microsecond, and never below an id already stored.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const LEN: usize = 12;
/// 2020-01-01T00:00:00Z in seconds since the Unix epoch.
const EPOCH_2020: u64 = 1_577_836_800;
const MAX: u64 = (1 << (5 * LEN)) - 1;

/// A message's queue id (see the module docs for the format).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueId {
    n: u64,
    s: [u8; LEN],
}

/// Why a string is not a queue id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a queue id: {0:?} (expected 12 characters of [0-9A-Z])")]
pub struct ParseIdError(pub String);

impl QueueId {
    fn from_raw(n: u64) -> QueueId {
        let n = n & MAX;
        let mut s = [0u8; LEN];
        let mut v = n;
        for slot in s.iter_mut().rev() {
            *slot = ALPHABET[(v & 31) as usize];
            v >>= 5;
        }
        QueueId { n, s }
    }

    /// The id as its 12-character string.
    pub fn as_str(&self) -> &str {
        // Always ASCII from ALPHABET, so this never falls back.
        std::str::from_utf8(&self.s).unwrap_or("")
    }

    /// The big-endian key used in every tree.
    pub(crate) fn key(&self) -> [u8; 8] {
        self.n.to_be_bytes()
    }

    /// The id at the start of a tree key (8 big-endian bytes).
    pub fn from_key(key: &[u8]) -> Option<QueueId> {
        let bytes: [u8; 8] = key.get(..8)?.try_into().ok()?;
        Some(QueueId::from_raw(u64::from_be_bytes(bytes)))
    }

    /// When the id was handed out (microsecond precision).
    pub fn time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(EPOCH_2020) + Duration::from_micros(self.n)
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QueueId({})", self.as_str())
    }
}

impl FromStr for QueueId {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<QueueId, ParseIdError> {
        if s.len() != LEN {
            return Err(ParseIdError(s.to_string()));
        }
        let mut n: u64 = 0;
        for c in s.bytes() {
            let c = c.to_ascii_uppercase();
            let digit = ALPHABET
                .iter()
                .position(|&a| a == c)
                .ok_or_else(|| ParseIdError(s.to_string()))?;
            n = (n << 5) | digit as u64;
        }
        Ok(QueueId::from_raw(n))
    }
}

impl serde::Serialize for QueueId {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for QueueId {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<QueueId, D::Error> {
        let s = String::deserialize(de)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Hands out strictly increasing ids.
#[derive(Debug, Default)]
pub(crate) struct IdGen {
    last: AtomicU64,
}

impl IdGen {
    /// Never hands out an id at or below `floor` (the highest id already stored), so a clock
    /// stepped backwards cannot reuse an id.
    pub(crate) fn new(floor: Option<QueueId>) -> IdGen {
        IdGen {
            last: AtomicU64::new(floor.map_or(0, |id| id.n)),
        }
    }

    pub(crate) fn next(&self) -> QueueId {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros()
            .saturating_sub(u128::from(EPOCH_2020) * 1_000_000);
        let now = u64::try_from(now).unwrap_or(MAX).min(MAX);
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let next = now.max(last + 1);
            match self
                .last
                .compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return QueueId::from_raw(next),
                Err(seen) => last = seen,
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_sorts() {
        let gen = IdGen::new(None);
        let ids: Vec<QueueId> = (0..1000).map(|_| gen.next()).collect();
        for w in ids.windows(2) {
            assert!(w[0] < w[1]);
            assert!(w[0].as_str() < w[1].as_str());
            assert!(w[0].key() < w[1].key());
        }
        for id in &ids {
            let parsed: QueueId = id.as_str().parse().unwrap();
            assert_eq!(&parsed, id);
            assert_eq!(QueueId::from_key(&id.key()), Some(*id));
            assert_eq!(id.as_str().len(), 12);
            assert!(id
                .as_str()
                .bytes()
                .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()));
        }
        let age = SystemTime::now().duration_since(ids[0].time()).unwrap();
        assert!(age < Duration::from_secs(60));
    }

    #[test]
    fn floor_is_respected() {
        let far = QueueId::from_raw(MAX - 10);
        let gen = IdGen::new(Some(far));
        assert!(gen.next() > far);
    }

    #[test]
    fn rejects_bad_strings() {
        for bad in [
            "",
            "0123456789A",
            "0123456789ABC",
            "0123456789AI",
            "01234567-9AB",
        ] {
            assert!(bad.parse::<QueueId>().is_err(), "{bad}");
        }
        // Lower case is accepted (ids are case-insensitive in URLs typed by hand).
        let id: QueueId = "0h3k5qx7v2m4".parse().unwrap();
        assert_eq!(id.as_str(), "0H3K5QX7V2M4");
    }
}
