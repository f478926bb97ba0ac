//! The delivery side: lease due messages, record per-recipient outcomes (rescheduling or
//! expiring what is left), give leases back, and tell the scheduler when to wake.
//!
//! A lease is a random token stored in the message record plus a `due` entry moved to the
//! lease's end: if the worker never reports back, the message simply becomes due again when
//! the lease runs out, and the old token no longer matches. Every state change happens in one
//! sled transaction over the trees it touches, so two workers never hold the same message (and
//! hence the same recipient), and a crash never leaves a message half-updated.

use std::time::SystemTime;

use sled::transaction::Transactional;

use crate::body::BodyReader;
use crate::error::QueueError;
use crate::id::QueueId;
use crate::model::{BodyLoc, Envelope, LeaseRec, LeasedRecipient, MessageRecord, MessageState};
use crate::schedule::{due_key, from_ms, later, parse_due_key, to_ms};
use crate::store::{abort, decode, encode, key_name, tx_err, Inner, Queue};

/// The reply recorded for recipients that reached `max_age` (RFC 3463 X.4.7, "delivery time
/// expired").
pub const EXPIRED_REPLY: &str = "4.4.7 message expired: delivery time limit reached";

/// A message leased to one delivery worker until `lease_until`.
#[derive(Debug)]
pub struct Leased {
    pub id: QueueId,
    pub envelope: Envelope,
    /// The recipients still to deliver (pending or deferred).
    pub recipients: Vec<LeasedRecipient>,
    pub size: u64,
    /// Attempts of this message that ended deferred so far.
    pub deferrals: u32,
    /// Whether the one delay warning DSN was already sent (see [`Queue::mark_delay_warned`]).
    pub delay_warned: bool,
    /// `received_at + max_age`: a deferral at or after this moment expires the recipients.
    pub expires_at: SystemTime,
    pub lease_until: SystemTime,
    /// The body, read from the start. [`Queue::body`] opens another reader if one is not enough.
    pub body: BodyReader,
    pub(crate) token: u64,
}

struct LeaseTx {
    rec: MessageRecord,
    before: MessageState,
}

impl Queue {
    /// When the next message is due (or a lease runs out), `None` when nothing is scheduled.
    /// O(log n): the first key of the `due` index.
    pub fn next_due(&self) -> Result<Option<SystemTime>, QueueError> {
        loop {
            let Some((k, _)) = self.inner.due.first().map_err(QueueError::db("next due"))? else {
                return Ok(None);
            };
            match parse_due_key(&k) {
                Some((ms, _)) => return Ok(Some(from_ms(ms))),
                None => self.inner.drop_bad_due_key(&k)?,
            }
        }
    }

    /// Leases up to `max` messages due at `now` (oldest due first). Each comes with its open
    /// recipients and a body reader; until `complete`, `abandon` or the lease's end nobody
    /// else gets it.
    pub fn lease_due(&self, now: SystemTime, max: usize) -> Result<Vec<Leased>, QueueError> {
        let inner = &self.inner;
        let now_ms = to_ms(now);
        let until = later(now, inner.opts.lease);
        let until_ms = to_ms(until);
        let upper = (now_ms.saturating_add(1)).to_be_bytes();
        let mut candidates = Vec::new();
        for item in inner.due.range(..&upper[..]).keys() {
            if candidates.len() >= max {
                break;
            }
            let k = item.map_err(QueueError::db("scan due"))?;
            match parse_due_key(&k) {
                Some((ms, id)) => candidates.push((k, ms, id, rand::random::<u64>())),
                None => inner.drop_bad_due_key(&k)?,
            }
        }
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        // One transaction for the whole batch: sled's cost is per transaction, and a
        // scheduler with free slots leases many at once. A record that cannot be decoded is
        // set aside (and reported below) rather than failing its neighbours.
        let res = (&inner.meta, &inner.due, &inner.lease).transaction(|(meta, due, lease)| {
            let mut taken = Vec::new();
            let mut corrupt = Vec::new();
            for (k, ms, id, token) in &candidates {
                if due.get(k.as_ref())?.is_none() {
                    continue; // another scheduler took it
                }
                let Some(v) = meta.get(id.key())? else {
                    due.remove(k.as_ref())?; // stale index entry
                    continue;
                };
                let mut rec: MessageRecord = match decode("meta", &id.key(), &v) {
                    Ok(r) => r,
                    Err(e) => {
                        corrupt.push((k.clone(), e));
                        continue;
                    }
                };
                due.remove(k.as_ref())?;
                if !rec.scheduled() || rec.next_ms != *ms {
                    continue; // stale index entry
                }
                let before = rec.state();
                rec.lease = Some(LeaseRec {
                    token: *token,
                    until_ms,
                });
                rec.next_ms = until_ms;
                due.insert(&due_key(until_ms, *id), &[])?;
                lease.insert(&id.key(), &[])?;
                match encode("message", &rec) {
                    Ok(b) => meta.insert(&id.key(), b)?,
                    Err(e) => return abort(e),
                };
                taken.push((*id, *token, LeaseTx { rec, before }));
            }
            Ok((taken, corrupt))
        });
        let (taken, corrupt) = res.map_err(tx_err("lease"))?;
        // From here on the batch is leased: an error must not return early, or every message
        // after it would sit out its lease unseen. A message that fails is set aside (it is
        // due again when its lease runs out) and the rest are handed out.
        for (k, e) in corrupt {
            inner.report_corrupt(&e);
            if let Err(e) = inner.due.remove(&k) {
                tracing::warn!(key = %key_name(&k), error = %e, "could not drop the schedule entry of a corrupt record");
            }
        }
        let mut out = Vec::with_capacity(taken.len());
        let mut failed = None;
        for (id, token, tx) in taken {
            inner.count(Some(tx.before), Some(MessageState::Active));
            match self.build_leased(id, tx.rec, token, until) {
                Ok(Some(l)) => out.push(l),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(queue_id = %id, error = %e, "leased message set aside until its lease runs out");
                    failed.get_or_insert(e);
                }
            }
        }
        match failed {
            Some(e) if out.is_empty() => Err(e),
            _ => Ok(out),
        }
    }

    fn build_leased(
        &self,
        id: QueueId,
        rec: MessageRecord,
        token: u64,
        until: SystemTime,
    ) -> Result<Option<Leased>, QueueError> {
        let inner = &self.inner;
        let mut recipients = Vec::new();
        for (index, r) in inner.recipients(id, rec.rcpts)? {
            if r.state.is_open() {
                recipients.push(LeasedRecipient {
                    index,
                    address: r.address,
                    orcpt: r.orcpt,
                    notify: r.notify,
                    attempts: r.attempts,
                });
            }
        }
        let body = match inner.open_body(id, &rec) {
            Ok(b) => b,
            Err(e) => {
                // Undeliverable without its body: park it on hold for the operator rather
                // than leasing it again and again.
                inner.report_corrupt(&QueueError::Corrupt {
                    tree: "body",
                    key: id.to_string(),
                    reason: e.to_string(),
                });
                self.hold(id)?;
                return Ok(None);
            }
        };
        Ok(Some(Leased {
            id,
            expires_at: later(rec.env.received_at, inner.opts.max_age),
            envelope: rec.env,
            recipients,
            size: rec.size,
            deferrals: rec.deferrals,
            delay_warned: rec.delay_warned,
            lease_until: until,
            body,
            token,
        }))
    }

    /// Opens a fresh reader on a queued message's body.
    pub fn body(&self, id: QueueId) -> Result<BodyReader, QueueError> {
        let rec = self.inner.record(id)?.ok_or(QueueError::NotFound { id })?;
        self.inner.open_body(id, &rec)
    }

    /// Gives a lease back without an attempt (shutdown, worker cancelled): the message is due
    /// again now, its recipients untouched.
    pub fn abandon(&self, lease: &Leased) -> Result<(), QueueError> {
        let now_ms = to_ms(SystemTime::now());
        let (before, after) = self.inner.update_leased(lease, |rec, due| {
            if rec.scheduled() {
                due.remove(&due_key(rec.next_ms, lease.id))?;
                due.insert(&due_key(now_ms, lease.id), &[])?;
            }
            rec.lease = None;
            rec.next_ms = now_ms;
            Ok(())
        })?;
        self.inner.count(Some(before.state()), Some(after.state()));
        self.inner.commit.wait_durable()?;
        self.inner.notify_due();
        Ok(())
    }

    /// Extends a lease to `now + QueueOptions::lease` (a long delivery, e.g. a 25 MiB DATA
    /// on a slow link, calls this before the lease runs out so nobody else picks it up).
    pub fn extend_lease(&self, lease: &mut Leased, now: SystemTime) -> Result<(), QueueError> {
        let until = later(now, self.inner.opts.lease);
        let until_ms = to_ms(until);
        let token = lease.token;
        let id = lease.id;
        self.inner.update_leased(lease, |rec, due| {
            if rec.scheduled() {
                due.remove(&due_key(rec.next_ms, id))?;
                due.insert(&due_key(until_ms, id), &[])?;
            }
            rec.next_ms = until_ms;
            rec.lease = Some(LeaseRec { token, until_ms });
            Ok(())
        })?;
        lease.lease_until = until;
        Ok(())
    }

    /// Records that the delay warning DSN for this message was sent; `false` if it already was
    /// (so at most one is ever sent).
    pub fn mark_delay_warned(&self, lease: &Leased) -> Result<bool, QueueError> {
        let (before, _) = self.inner.update_leased(lease, |rec, _| {
            rec.delay_warned = true;
            Ok(())
        })?;
        self.inner.commit.wait_durable()?;
        Ok(!before.delay_warned)
    }
}

impl Inner {
    pub(crate) fn drop_bad_due_key(&self, k: &[u8]) -> Result<(), QueueError> {
        self.report_corrupt(&QueueError::Corrupt {
            tree: "due",
            key: key_name(k),
            reason: "malformed schedule key".into(),
        });
        self.due.remove(k).map_err(QueueError::db("drop due"))?;
        Ok(())
    }

    /// Changes a leased message's record under its lease token; returns it before and after.
    pub(crate) fn update_leased(
        &self,
        lease: &Leased,
        f: impl Fn(
            &mut MessageRecord,
            &sled::transaction::TransactionalTree,
        ) -> Result<(), sled::transaction::UnabortableTransactionError>,
    ) -> Result<(MessageRecord, MessageRecord), QueueError> {
        let id = lease.id;
        (&self.meta, &self.due, &self.lease)
            .transaction(|(meta, due, leases)| {
                let Some(v) = meta.get(id.key())? else {
                    return abort(QueueError::NotFound { id });
                };
                let mut rec: MessageRecord = match decode("meta", &id.key(), &v) {
                    Ok(r) => r,
                    Err(e) => return abort(e),
                };
                if rec.lease.map(|l| l.token) != Some(lease.token) {
                    return abort(QueueError::LeaseLost { id });
                }
                let before = rec.clone();
                f(&mut rec, due)?;
                if rec.lease.is_none() {
                    leases.remove(&id.key())?;
                }
                match encode("message", &rec) {
                    Ok(b) => meta.insert(&id.key(), b)?,
                    Err(e) => return abort(e),
                };
                Ok((before, rec))
            })
            .map_err(tx_err("update lease"))
    }

    /// Frees a removed message's body storage (after the removal is durable).
    pub(crate) fn release_body(&self, id: QueueId, loc: BodyLoc) {
        match loc {
            BodyLoc::Inline => {}
            BodyLoc::Log { seg, .. } => self.bodylog.release(seg),
            BodyLoc::Spool => {
                let path = self.spool_path(id);
                if let Err(e) = std::fs::remove_file(&path) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        tracing::warn!(path = %path.display(), error = %e, "could not remove spool file");
                    }
                }
            }
        }
    }

    pub(crate) fn open_body(
        &self,
        id: QueueId,
        rec: &MessageRecord,
    ) -> Result<BodyReader, QueueError> {
        match rec.body {
            BodyLoc::Inline => {
                let data = self
                    .body
                    .get(id.key())
                    .map_err(QueueError::db("read body"))?
                    .ok_or_else(|| QueueError::Corrupt {
                        tree: "body",
                        key: id.to_string(),
                        reason: "inline body missing".into(),
                    })?;
                Ok(BodyReader::inline(data, rec.size, rec.crc32))
            }
            BodyLoc::Spool => BodyReader::spool(&self.spool_path(id), 0, rec.size, rec.crc32),
            BodyLoc::Log { seg, off } => {
                BodyReader::spool(&self.bodylog.path(seg), off, rec.size, rec.crc32)
            }
        }
    }
}
