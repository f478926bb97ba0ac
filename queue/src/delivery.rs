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
use crate::model::{
    BodyLoc, Envelope, ExpiredRecipient, LeaseRec, LeasedRecipient, MessageRecord, MessageState,
    Outcome, RecipientRecord, RecipientState,
};
use crate::schedule::{
    due_key, from_ms, next_attempt, parse_due_key, rcpt_key, retry_delay, to_ms,
};
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

/// What [`Queue::complete`] did.
#[derive(Debug)]
pub struct Completion {
    /// Every recipient is done; the message left the queue.
    pub finished: bool,
    /// Recipients that were still open at `max_age` and are now bounced: send a 4.4.7 DSN.
    pub expired: Vec<ExpiredRecipient>,
    /// When the remaining recipients are next due (`None` when finished or held).
    pub next_attempt: Option<SystemTime>,
    /// The body of a finished message, still readable after its removal (for a DSN with
    /// RET=FULL or the original headers).
    pub body: Option<BodyReader>,
}

struct Done {
    before: MessageState,
    rec: MessageRecord,
    finished: bool,
    next: Option<SystemTime>,
    expired: Vec<ExpiredRecipient>,
    body: Option<sled::IVec>,
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
        let until = now + inner.opts.lease;
        let until_ms = to_ms(until);
        let upper = (now_ms.saturating_add(1)).to_be_bytes();
        let mut out = Vec::new();
        for item in inner.due.range(..&upper[..]).keys() {
            if out.len() >= max {
                break;
            }
            let k = item.map_err(QueueError::db("scan due"))?;
            let Some((ms, id)) = parse_due_key(&k) else {
                inner.drop_bad_due_key(&k)?;
                continue;
            };
            let token: u64 = rand::random();
            let res = (&inner.meta, &inner.due, &inner.lease).transaction(|(meta, due, lease)| {
                if due.get(k.as_ref())?.is_none() {
                    return Ok(None); // another scheduler took it
                }
                let Some(v) = meta.get(id.key())? else {
                    due.remove(k.as_ref())?; // stale index entry
                    return Ok(None);
                };
                let mut rec: MessageRecord = match decode("meta", &id.key(), &v) {
                    Ok(r) => r,
                    Err(e) => return abort(e),
                };
                due.remove(k.as_ref())?;
                if !rec.scheduled() || rec.next_ms != ms {
                    return Ok(None); // stale index entry
                }
                let before = rec.state();
                rec.lease = Some(LeaseRec { token, until_ms });
                rec.next_ms = until_ms;
                due.insert(&due_key(until_ms, id), &[])?;
                lease.insert(&id.key(), &[])?;
                match encode("message", &rec) {
                    Ok(b) => meta.insert(&id.key(), b)?,
                    Err(e) => return abort(e),
                };
                Ok(Some(LeaseTx { rec, before }))
            });
            let tx = match res.map_err(tx_err("lease")) {
                Ok(Some(tx)) => tx,
                Ok(None) => continue,
                Err(e @ QueueError::Corrupt { .. }) => {
                    inner.report_corrupt(&e);
                    inner.due.remove(&k).map_err(QueueError::db("drop due"))?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            inner.count(Some(tx.before), Some(MessageState::Active));
            if let Some(l) = self.build_leased(id, tx.rec, token, until)? {
                out.push(l);
            }
        }
        Ok(out)
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
            expires_at: rec.env.received_at + inner.opts.max_age,
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

    /// Records the outcome of an attempt for the given recipients (by `LeasedRecipient::index`)
    /// and releases the lease, in one atomic, durable step. Report every leased recipient:
    /// those left open are retried per `QueueOptions::retry`, or, when `now` is at or past
    /// `expires_at`, bounced as expired and returned in `Completion::expired`. When nothing is
    /// left open the message leaves the queue.
    pub fn complete(
        &self,
        lease: &Leased,
        outcomes: &[(u32, Outcome)],
        now: SystemTime,
    ) -> Result<Completion, QueueError> {
        let inner = &self.inner;
        let id = lease.id;
        let jitter: f64 = rand::random_range(0.9..1.1);
        let res = (
            &inner.meta,
            &inner.rcpt,
            &inner.due,
            &inner.lease,
            &inner.body,
        )
            .transaction(|(meta, rcpt, due, leases, bodies)| {
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
                let before = rec.state();
                let mut rcpts = Vec::with_capacity(rec.rcpts as usize);
                for i in 0..rec.rcpts {
                    let k = rcpt_key(id, i);
                    let r = match rcpt.get(k)? {
                        Some(v) => decode::<RecipientRecord>("rcpt", &k, &v).ok(),
                        None => None,
                    };
                    rcpts.push(r);
                }
                for (index, outcome) in outcomes {
                    let Some(slot) = rcpts.get_mut(*index as usize) else {
                        return abort(QueueError::NoSuchRecipient { id, index: *index });
                    };
                    if let Some(r) = slot.as_mut().filter(|r| r.state.is_open()) {
                        apply(r, outcome, now);
                    }
                }
                let expires_at = rec.env.received_at + inner.opts.max_age;
                let open = rcpts.iter().flatten().any(|r| r.state.is_open());
                let mut expired = Vec::new();
                if open && now >= expires_at {
                    for (i, r) in (0u32..).zip(rcpts.iter_mut()) {
                        if let Some(r) = r.as_mut().filter(|r| r.state.is_open()) {
                            expired.push(ExpiredRecipient {
                                index: i,
                                address: r.address.clone(),
                                orcpt: r.orcpt.clone(),
                                notify: r.notify,
                                last_reply: r.last_reply.clone(),
                            });
                            r.state = RecipientState::Bounced;
                            r.last_reply = Some(EXPIRED_REPLY.to_string());
                        }
                    }
                }
                let finished = !open || !expired.is_empty();
                if rec.scheduled() {
                    due.remove(&due_key(rec.next_ms, id))?;
                }
                leases.remove(&id.key())?;
                if finished {
                    meta.remove(&id.key())?;
                    for i in 0..rec.rcpts {
                        rcpt.remove(&rcpt_key(id, i))?;
                    }
                    let body = bodies.remove(&id.key())?;
                    return Ok(Done {
                        before,
                        rec,
                        finished: true,
                        next: None,
                        expired,
                        body,
                    });
                }
                for (i, r) in (0u32..).zip(&rcpts) {
                    if let Some(r) = r {
                        match encode("recipient", r) {
                            Ok(b) => rcpt.insert(&rcpt_key(id, i), b)?,
                            Err(e) => return abort(e),
                        };
                    }
                }
                rec.deferrals += 1;
                let delay = retry_delay(&inner.opts.retry, rec.deferrals, jitter);
                let next = next_attempt(now, delay, expires_at);
                rec.lease = None;
                rec.next_ms = to_ms(next);
                if rec.scheduled() {
                    due.insert(&due_key(rec.next_ms, id), &[])?;
                }
                match encode("message", &rec) {
                    Ok(b) => meta.insert(&id.key(), b)?,
                    Err(e) => return abort(e),
                };
                let next = rec.scheduled().then_some(next);
                Ok(Done {
                    before,
                    rec,
                    finished: false,
                    next,
                    expired,
                    body: None,
                })
            });
        let done = match res.map_err(tx_err("complete")) {
            Ok(d) => d,
            Err(e) => {
                inner.report_corrupt(&e);
                return Err(e);
            }
        };
        let Done {
            before,
            rec,
            finished,
            next,
            expired,
            body,
        } = done;
        if finished {
            inner.count(Some(before), None);
        } else {
            inner.count(Some(before), Some(rec.state()));
        }
        // Opened before the body's storage is released, so a DSN can still read it.
        let body = match (finished, rec.body, body) {
            (false, _, _) => None,
            (true, BodyLoc::Inline, Some(b)) => Some(BodyReader::inline(b, rec.size, rec.crc32)),
            (true, BodyLoc::Inline, None) => None,
            (true, _, _) => inner.open_body(id, &rec).ok(),
        };
        inner.commit.wait_durable()?;
        if finished {
            // Only now that the removal is durable may the body's storage go.
            inner.release_body(id, rec.body);
        }
        Ok(Completion {
            finished,
            expired,
            next_attempt: next,
            body,
        })
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
        let until = now + self.inner.opts.lease;
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

/// One recipient's outcome onto its record.
fn apply(r: &mut RecipientRecord, outcome: &Outcome, now: SystemTime) {
    let (state, reply) = match outcome {
        Outcome::Delivered { reply } => (RecipientState::Delivered, reply),
        Outcome::Deferred { reply } => (RecipientState::Deferred, reply),
        Outcome::Bounced { reply } => (RecipientState::Bounced, reply),
    };
    r.state = state;
    r.attempts += 1;
    r.last_reply = Some(reply.clone());
    r.last_attempt = Some(now);
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
    fn update_leased(
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
