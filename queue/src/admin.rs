//! Operator operations (the admin API and `danerelay queue …`): hold, release, delete,
//! retry-now, list with filters, show, the per-domain summary (`qshape`), oldest age.
//! Every change is one sled transaction and is durable when the call returns.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use sled::transaction::Transactional;

use crate::error::QueueError;
use crate::id::QueueId;
use crate::model::{BodyLoc, ListFilter, MessageInfo, MessageRecord, RecipientRecord};
use crate::schedule::{due_key, from_ms, rcpt_key, to_ms};
use crate::store::{abort, decode, encode, tx_err, Inner, Queue};

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
        self.change(id, |rec, due, _| {
            if rec.hold {
                return Ok(false);
            }
            due.remove(&due_key(rec.next_ms, id))?;
            rec.hold = true;
            Ok(true)
        })
    }

    /// Releases a held message: due now (or when a still-running lease ends). `false` if it
    /// was not held.
    pub fn release(&self, id: QueueId) -> Result<bool, QueueError> {
        let now_ms = to_ms(SystemTime::now());
        let changed = self.change(id, |rec, due, leases| {
            if !rec.hold {
                return Ok(false);
            }
            rec.hold = false;
            match rec.lease {
                Some(l) if l.until_ms > now_ms => rec.next_ms = l.until_ms,
                _ => {
                    rec.lease = None;
                    leases.remove(&id.key())?;
                    rec.next_ms = now_ms;
                }
            }
            due.insert(&due_key(rec.next_ms, id), &[])?;
            Ok(true)
        })?;
        if changed {
            self.inner.notify_due();
        }
        Ok(changed)
    }

    /// Makes a waiting message due now. `false` if it is held or being delivered.
    pub fn retry_now(&self, id: QueueId) -> Result<bool, QueueError> {
        let now_ms = to_ms(SystemTime::now());
        let changed = self.change(id, |rec, due, _| {
            if rec.hold || rec.lease.is_some() || rec.next_ms <= now_ms {
                return Ok(false);
            }
            due.remove(&due_key(rec.next_ms, id))?;
            rec.next_ms = now_ms;
            due.insert(&due_key(now_ms, id), &[])?;
            Ok(true)
        })?;
        if changed {
            self.inner.notify_due();
        }
        Ok(changed)
    }

    /// `retry_now` for every waiting message; returns how many moved.
    pub fn retry_all(&self) -> Result<usize, QueueError> {
        let mut moved = 0;
        for id in self.inner.meta.iter().keys() {
            let k = id.map_err(QueueError::db("scan messages"))?;
            let Some(id) = QueueId::from_key(&k) else {
                continue;
            };
            match self.retry_now(id) {
                Ok(true) => moved += 1,
                Ok(false) | Err(QueueError::NotFound { .. }) => {}
                Err(e @ QueueError::Corrupt { .. }) => self.inner.report_corrupt(&e),
                Err(e) => return Err(e),
            }
        }
        Ok(moved)
    }

    /// Removes a message without delivering it (no DSN). `false` if it did not exist.
    /// Also purges a message whose record is corrupt.
    pub fn delete(&self, id: QueueId) -> Result<bool, QueueError> {
        let inner = &self.inner;
        let body = match remove_message(inner, id) {
            Ok(Some(rec)) => {
                inner.count(Some(rec.state()), None);
                Some(rec.body)
            }
            Ok(None) => return Ok(false),
            Err(e @ QueueError::Corrupt { .. }) => {
                inner.report_corrupt(&e);
                purge(inner, id)?;
                // Unknown body location: a spool file is removed below; a body-log segment
                // stays until the next open (nothing references it any more).
                None
            }
            Err(e) => return Err(e),
        };
        inner.commit.wait_durable()?;
        inner.release_body(id, body.unwrap_or(BodyLoc::Spool));
        Ok(true)
    }

    /// One message with all its recipients, `None` if not queued.
    pub fn show(&self, id: QueueId) -> Result<Option<MessageInfo>, QueueError> {
        match self.inner.record(id)? {
            Some(rec) => Ok(Some(self.inner.info(id, rec)?)),
            None => Ok(None),
        }
    }

    /// Messages matching `filter`, oldest first. A full scan: for operators, not hot paths.
    pub fn list(&self, filter: &ListFilter) -> Result<Vec<MessageInfo>, QueueError> {
        let now = SystemTime::now();
        let domain = filter.domain.as_ref().map(|d| d.to_ascii_lowercase());
        let mut out = Vec::new();
        let iter = match filter.after {
            Some(after) => self.inner.meta.range((
                std::ops::Bound::Excluded(after.key()),
                std::ops::Bound::Unbounded,
            )),
            None => self.inner.meta.iter(),
        };
        for item in iter {
            if filter.limit.is_some_and(|l| out.len() >= l) {
                break;
            }
            let (k, v) = item.map_err(QueueError::db("scan messages"))?;
            let (Some(id), Ok(rec)) = (QueueId::from_key(&k), self.inner.decode_meta(&k, &v))
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
            let info = self.inner.info(id, rec)?;
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
        let first = self.inner.meta.first().map_err(QueueError::db("oldest"))?;
        Ok(first
            .and_then(|(k, _)| QueueId::from_key(&k))
            .map(|id| now.duration_since(id.time()).unwrap_or(Duration::ZERO)))
    }

    /// Applies `f` to a message record in one transaction; counts and syncs the change.
    fn change(
        &self,
        id: QueueId,
        f: impl Fn(
            &mut MessageRecord,
            &sled::transaction::TransactionalTree,
            &sled::transaction::TransactionalTree,
        ) -> Result<bool, sled::transaction::UnabortableTransactionError>,
    ) -> Result<bool, QueueError> {
        let inner = &self.inner;
        let res = (&inner.meta, &inner.due, &inner.lease)
            .transaction(|(meta, due, leases)| {
                let Some(v) = meta.get(id.key())? else {
                    return abort(QueueError::NotFound { id });
                };
                let mut rec: MessageRecord = match decode("meta", &id.key(), &v) {
                    Ok(r) => r,
                    Err(e) => return abort(e),
                };
                let before = rec.state();
                if !f(&mut rec, due, leases)? {
                    return Ok(None);
                }
                match encode("message", &rec) {
                    Ok(b) => meta.insert(&id.key(), b)?,
                    Err(e) => return abort(e),
                };
                Ok(Some((before, rec.state())))
            })
            .map_err(tx_err("change message"))?;
        match res {
            Some((before, after)) => {
                inner.count(Some(before), Some(after));
                inner.commit.wait_durable()?;
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// Removes a message's records atomically; returns the record it had.
pub(crate) fn remove_message(
    inner: &Inner,
    id: QueueId,
) -> Result<Option<MessageRecord>, QueueError> {
    (
        &inner.meta,
        &inner.rcpt,
        &inner.due,
        &inner.lease,
        &inner.body,
    )
        .transaction(|(meta, rcpt, due, leases, bodies)| {
            let Some(v) = meta.remove(&id.key())? else {
                return Ok(None);
            };
            let rec: MessageRecord = match decode("meta", &id.key(), &v) {
                Ok(r) => r,
                Err(e) => return abort(e),
            };
            for i in 0..rec.rcpts {
                rcpt.remove(&rcpt_key(id, i))?;
            }
            if rec.scheduled() {
                due.remove(&due_key(rec.next_ms, id))?;
            }
            leases.remove(&id.key())?;
            bodies.remove(&id.key())?;
            Ok(Some(rec))
        })
        .map_err(tx_err("remove message"))
}

/// Removes whatever is stored under a message whose record cannot be decoded. Its `due`
/// entry (unknown time) is dropped later by `lease_due` when it finds no record.
fn purge(inner: &Inner, id: QueueId) -> Result<(), QueueError> {
    for item in inner.rcpt.scan_prefix(id.key()).keys() {
        let k = item.map_err(QueueError::db("purge"))?;
        inner.rcpt.remove(k).map_err(QueueError::db("purge"))?;
    }
    inner
        .body
        .remove(id.key())
        .map_err(QueueError::db("purge"))?;
    inner
        .lease
        .remove(id.key())
        .map_err(QueueError::db("purge"))?;
    inner
        .meta
        .remove(id.key())
        .map_err(QueueError::db("purge"))?;
    Ok(())
}

impl Inner {
    pub(crate) fn decode_meta(&self, k: &[u8], v: &[u8]) -> Result<MessageRecord, QueueError> {
        decode("meta", k, v).inspect_err(|e| self.report_corrupt(e))
    }

    pub(crate) fn record(&self, id: QueueId) -> Result<Option<MessageRecord>, QueueError> {
        match self
            .meta
            .get(id.key())
            .map_err(QueueError::db("read message"))?
        {
            Some(v) => self.decode_meta(&id.key(), &v).map(Some),
            None => Ok(None),
        }
    }

    /// The readable recipient records of a message, with their indexes.
    pub(crate) fn recipients(
        &self,
        id: QueueId,
        count: u32,
    ) -> Result<Vec<(u32, RecipientRecord)>, QueueError> {
        let mut out = Vec::with_capacity(count as usize);
        for i in 0..count {
            let k = rcpt_key(id, i);
            let Some(v) = self.rcpt.get(k).map_err(QueueError::db("read recipient"))? else {
                continue;
            };
            match decode::<RecipientRecord>("rcpt", &k, &v) {
                Ok(r) => out.push((i, r)),
                Err(e) => self.report_corrupt(&e),
            }
        }
        Ok(out)
    }

    pub(crate) fn info(&self, id: QueueId, rec: MessageRecord) -> Result<MessageInfo, QueueError> {
        let recipients = self
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
}
