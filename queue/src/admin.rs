//! Operator operations (the admin API and `danerelay queue …`): hold, release, delete,
//! retry-now, list with filters, show, the per-domain summary (`qshape`), oldest age.
//! Every change is one sled transaction and is durable when the call returns.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use sled::transaction::Transactional;

use crate::error::QueueError;
use crate::id::QueueId;
use crate::model::{BodyLoc, ListFilter, MessageInfo, MessageRecord};
use crate::queue::Queue;
use crate::schedule::{from_ms, rcpt_key, to_ms};
use crate::store::{Store, Trees};
use crate::tx::{tx_err, Indexed, MessageTx};

/// One line of the per-domain summary (Postfix `qshape`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DomainSummary {
    pub domain: String,
    /// Messages with at least one open recipient in the domain.
    pub messages: u64,
    /// Open recipients in the domain.
    pub recipients: u64,
    /// `received_at` of the oldest of those messages.
    pub oldest: SystemTime,
}

impl Queue {
    /// Puts a message on hold: it is not leased again until released (a delivery already
    /// running finishes normally). `false` if it was already held.
    pub fn hold(&self, id: QueueId) -> Result<bool, QueueError> {
        self.change(id, |rec| {
            if rec.hold {
                return false;
            }
            rec.hold = true;
            true
        })
    }

    /// Releases a held message: due now (or when a still-running lease ends). `false` if it
    /// was not held.
    pub fn release(&self, id: QueueId) -> Result<bool, QueueError> {
        let now_ms = to_ms(SystemTime::now());
        let changed = self.change(id, |rec| {
            if !rec.hold {
                return false;
            }
            rec.hold = false;
            match rec.lease {
                Some(l) if l.until_ms > now_ms => rec.next_ms = l.until_ms,
                _ => {
                    rec.lease = None;
                    rec.next_ms = now_ms;
                }
            }
            true
        })?;
        if changed {
            self.store.notify_due();
        }
        Ok(changed)
    }

    /// Makes a waiting message due now. `false` if it is held or being delivered.
    pub fn retry_now(&self, id: QueueId) -> Result<bool, QueueError> {
        let now_ms = to_ms(SystemTime::now());
        let changed = self.change(id, |rec| {
            if rec.hold || rec.lease.is_some() || rec.next_ms <= now_ms {
                return false;
            }
            rec.next_ms = now_ms;
            true
        })?;
        if changed {
            self.store.notify_due();
        }
        Ok(changed)
    }

    /// `retry_now` for every waiting message; returns how many moved.
    pub fn retry_all(&self) -> Result<usize, QueueError> {
        let mut moved = 0;
        for id in self.store.trees()?.meta.iter().keys() {
            let k = id.map_err(QueueError::db("scan messages"))?;
            let Some(id) = QueueId::from_key(&k) else {
                continue;
            };
            match self.retry_now(id) {
                Ok(true) => moved += 1,
                Ok(false) | Err(QueueError::NotFound { .. }) => {}
                Err(e @ QueueError::Corrupt { .. }) => self.store.report_corrupt(&e),
                Err(e) => return Err(e),
            }
        }
        Ok(moved)
    }

    /// Removes a message without delivering it (no DSN). `false` if it did not exist.
    /// Also purges a message whose record is corrupt.
    pub fn delete(&self, id: QueueId) -> Result<bool, QueueError> {
        let store = &self.store;
        let t = store.trees()?;
        let gate = store.scan_gate();
        let counted = gate.seen(id);
        let body = match remove_message(&t, id) {
            Ok(Some(rec)) => {
                store.count_seen(&gate, id, Some(rec.state()), None);
                Some(rec.body)
            }
            Ok(None) => return Ok(false),
            Err(e @ QueueError::Corrupt { .. }) => {
                store.report_corrupt(&e);
                purge(&t, id)?;
                // Unknown body location: a spool file is removed below; a body-log segment
                // stays until the next open (nothing references it any more).
                None
            }
            Err(e) => return Err(e),
        };
        drop(gate);
        self.commit.wait_durable(t.gen)?;
        store.release_body(id, body.unwrap_or(BodyLoc::Spool), counted);
        Ok(true)
    }

    /// One message with all its recipients, `None` if not queued.
    pub fn show(&self, id: QueueId) -> Result<Option<MessageInfo>, QueueError> {
        match self.store.record(id)? {
            Some(rec) => Ok(Some(info(&self.store, id, rec)?)),
            None => Ok(None),
        }
    }

    /// Messages matching `filter`, oldest first. A full scan: for operators, not hot paths.
    pub fn list(&self, filter: &ListFilter) -> Result<Vec<MessageInfo>, QueueError> {
        let now = SystemTime::now();
        let domain = filter.domain.as_ref().map(|d| d.to_ascii_lowercase());
        let mut out = Vec::new();
        let t = self.store.trees()?;
        let iter = match filter.after {
            Some(after) => t.meta.range((
                std::ops::Bound::Excluded(after.key()),
                std::ops::Bound::Unbounded,
            )),
            None => t.meta.iter(),
        };
        for item in iter {
            if filter.limit.is_some_and(|l| out.len() >= l) {
                break;
            }
            let (k, v) = item.map_err(QueueError::db("scan messages"))?;
            let (Some(id), Ok(rec)) = (QueueId::from_key(&k), self.store.decode_meta(&k, &v))
            else {
                continue;
            };
            if filter.state.is_some_and(|s| s != rec.state()) {
                continue;
            }
            let age = now
                .duration_since(rec.env.received_at)
                .unwrap_or(Duration::ZERO);
            if filter.min_age.is_some_and(|m| age < m) || filter.max_age.is_some_and(|m| age > m) {
                continue;
            }
            let info = info(&self.store, id, rec)?;
            if let Some(d) = &domain {
                let hit = info
                    .recipients
                    .iter()
                    .any(|r| r.state.is_open() && &r.domain() == d);
                if !hit {
                    continue;
                }
            }
            out.push(info);
        }
        Ok(out)
    }

    /// Open recipients and messages per destination domain, most recipients first.
    pub fn domains(&self) -> Result<Vec<DomainSummary>, QueueError> {
        let mut map: BTreeMap<String, DomainSummary> = BTreeMap::new();
        for info in self.list(&ListFilter::default())? {
            let mut seen = Vec::new();
            for r in info.recipients.iter().filter(|r| r.state.is_open()) {
                let d = r.domain();
                let e = map.entry(d.clone()).or_insert_with(|| DomainSummary {
                    domain: d.clone(),
                    messages: 0,
                    recipients: 0,
                    oldest: info.envelope.received_at,
                });
                e.recipients += 1;
                e.oldest = e.oldest.min(info.envelope.received_at);
                if !seen.contains(&d) {
                    e.messages += 1;
                    seen.push(d);
                }
            }
        }
        let mut out: Vec<DomainSummary> = map.into_values().collect();
        out.sort_by(|a, b| {
            b.recipients
                .cmp(&a.recipients)
                .then(a.domain.cmp(&b.domain))
        });
        Ok(out)
    }

    /// Age of the oldest queued message (by queue id, i.e. when it was begun), O(log n).
    pub fn oldest_age(&self, now: SystemTime) -> Result<Option<Duration>, QueueError> {
        let first = self
            .store
            .trees()?
            .meta
            .first()
            .map_err(QueueError::db("oldest"))?;
        Ok(first
            .and_then(|(k, _)| QueueId::from_key(&k))
            .map(|id| now.duration_since(id.time()).unwrap_or(Duration::ZERO)))
    }

    /// Applies `f` to a message record in one transaction (`f` says whether it changed
    /// anything); counts and syncs the change.
    fn change(
        &self,
        id: QueueId,
        f: impl Fn(&mut MessageRecord) -> bool,
    ) -> Result<bool, QueueError> {
        let store = &self.store;
        let trees = store.trees()?;
        let gate = store.scan_gate();
        let res = (&trees.meta, &trees.due, &trees.lease)
            .transaction(|(meta, due, lease)| {
                let t = MessageTx { meta, due, lease };
                let mut rec = t.load(id)?;
                let before = (Indexed::of(&rec), rec.state());
                if !f(&mut rec) {
                    return Ok(None);
                }
                t.put(id, Some(before.0), &rec)?;
                Ok(Some((before.1, rec.state())))
            })
            .map_err(tx_err("change message"))?;
        match res {
            Some((before, after)) => {
                store.count_seen(&gate, id, Some(before), Some(after));
                drop(gate);
                self.commit.wait_durable(trees.gen)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// Removes a message's records atomically; returns the record it had.
fn remove_message(t: &Trees, id: QueueId) -> Result<Option<MessageRecord>, QueueError> {
    let trees = (&t.meta, &t.rcpt, &t.due, &t.lease, &t.body);
    trees
        .transaction(|(meta, rcpt, due, lease, bodies)| {
            let t = MessageTx { meta, due, lease };
            let Some(rec) = t.get(id)? else {
                return Ok(None);
            };
            t.remove(id, Indexed::of(&rec))?;
            for i in 0..rec.rcpts {
                rcpt.remove(&rcpt_key(id, i))?;
            }
            bodies.remove(&id.key())?;
            Ok(Some(rec))
        })
        .map_err(tx_err("remove message"))
}

/// Removes whatever is stored under a message whose record cannot be decoded. Its `due`
/// entry (unknown time) is dropped later by `lease_due` when it finds no record.
fn purge(t: &Trees, id: QueueId) -> Result<(), QueueError> {
    for item in t.rcpt.scan_prefix(id.key()).keys() {
        let k = item.map_err(QueueError::db("purge"))?;
        t.rcpt.remove(k).map_err(QueueError::db("purge"))?;
    }
    for tree in [&t.body, &t.lease, &t.meta] {
        tree.remove(id.key()).map_err(QueueError::db("purge"))?;
    }
    Ok(())
}

/// One message as `show` and `list` report it.
fn info(store: &Store, id: QueueId, rec: MessageRecord) -> Result<MessageInfo, QueueError> {
    let recipients = store
        .recipients(id, rec.rcpts)?
        .into_iter()
        .map(|(i, r)| r.info(i))
        .collect();
    Ok(MessageInfo {
        id,
        state: rec.state(),
        size: rec.size,
        deferrals: rec.deferrals,
        next_attempt: rec.scheduled().then(|| from_ms(rec.next_ms)),
        delay_warned: rec.delay_warned,
        recipients,
        envelope: rec.env,
    })
}
