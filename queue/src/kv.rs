//! Small records the rest of the relay keeps beside the queue — MTA-STS policies, TLS-RPT
//! counters, destination suspensions — in the `state` tree, so they live on the queue's volume
//! and survive restarts with it. Keys are `namespace ‖ 0 ‖ key`; values are the caller's bytes.
//!
//! Writes return once sled has them, not once they are synced: [`Queue::flush`] (or the next
//! group-commit round, which syncs all of sled) makes them durable. Callers that must not lose
//! a write (a policy cache refresh, a suspension) call `flush` after it; counters that are
//! written often flush on their own schedule.

use crate::error::QueueError;
use crate::queue::Queue;

fn full_key(ns: &str, key: &str) -> Result<Vec<u8>, QueueError> {
    if ns.as_bytes().contains(&0) {
        return Err(QueueError::InvalidOptions {
            reason: "a state namespace contains NUL",
        });
    }
    let mut k = Vec::with_capacity(ns.len() + 1 + key.len());
    k.extend_from_slice(ns.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    Ok(k)
}

impl Queue {
    /// The record stored under `ns`/`key`, if any.
    pub fn state_get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, QueueError> {
        let t = self.store.trees()?;
        let v = t
            .state
            .get(full_key(ns, key)?)
            .map_err(QueueError::db("read state"))?;
        Ok(v.map(|v| v.to_vec()))
    }

    /// Stores `value` under `ns`/`key` (durable after [`Queue::flush`]).
    pub fn state_put(&self, ns: &str, key: &str, value: &[u8]) -> Result<(), QueueError> {
        let t = self.store.trees()?;
        t.state
            .insert(full_key(ns, key)?, value)
            .map_err(QueueError::db("write state"))?;
        Ok(())
    }

    /// Removes `ns`/`key`; true when it existed.
    pub fn state_remove(&self, ns: &str, key: &str) -> Result<bool, QueueError> {
        let t = self.store.trees()?;
        let old = t
            .state
            .remove(full_key(ns, key)?)
            .map_err(QueueError::db("remove state"))?;
        Ok(old.is_some())
    }

    /// Replaces the record atomically with `f(old)` (`None` removes it): for counters that
    /// several tasks update at once. Returns the new value.
    pub fn state_update(
        &self,
        ns: &str,
        key: &str,
        f: impl FnMut(Option<&[u8]>) -> Option<Vec<u8>>,
    ) -> Result<Option<Vec<u8>>, QueueError> {
        let t = self.store.trees()?;
        let v = t
            .state
            .update_and_fetch(full_key(ns, key)?, f)
            .map_err(QueueError::db("update state"))?;
        Ok(v.map(|v| v.to_vec()))
    }

    /// Every record of `ns`, in key order, as `(key, value)`.
    pub fn state_scan(&self, ns: &str) -> Result<Vec<(String, Vec<u8>)>, QueueError> {
        let t = self.store.trees()?;
        let prefix = full_key(ns, "")?;
        let mut out = Vec::new();
        for item in t.state.scan_prefix(&prefix) {
            let (k, v) = item.map_err(QueueError::db("scan state"))?;
            let key = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            out.push((key, v.to_vec()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::model::QueueOptions;
    use crate::Queue;

    fn opts() -> QueueOptions {
        QueueOptions {
            retry: vec![Duration::from_secs(60)],
            max_age: Duration::from_secs(3600),
            lease: Duration::from_secs(60),
        }
    }

    #[test]
    fn records_survive_a_reopen_and_namespaces_do_not_mix() {
        let dir = tempfile::tempdir().unwrap();
        {
            let q = Queue::open(dir.path(), opts()).unwrap();
            q.state_put("sts", "example.com", b"policy").unwrap();
            q.state_put("stsx", "example.com", b"other").unwrap();
            q.state_put("rpt", "a", b"1").unwrap();
            let n = q
                .state_update("rpt", "a", |old| {
                    let n: u32 = std::str::from_utf8(old.unwrap()).unwrap().parse().unwrap();
                    Some((n + 1).to_string().into_bytes())
                })
                .unwrap();
            assert_eq!(n.as_deref(), Some(&b"2"[..]));
            q.flush().unwrap();
        }
        let q = Queue::open(dir.path(), opts()).unwrap();
        assert_eq!(
            q.state_get("sts", "example.com").unwrap().as_deref(),
            Some(&b"policy"[..])
        );
        assert_eq!(
            q.state_scan("sts").unwrap(),
            vec![("example.com".to_string(), b"policy".to_vec())]
        );
        assert_eq!(q.state_get("rpt", "a").unwrap().as_deref(), Some(&b"2"[..]));
        assert!(q.state_remove("rpt", "a").unwrap());
        assert!(!q.state_remove("rpt", "a").unwrap());
        assert!(q.state_get("rpt", "a").unwrap().is_none());
        assert!(q.state_put("a\0b", "k", b"").is_err());
    }
}
