//! Leasing, the delivery side's half of the queue: lease due messages, give leases back,
//! extend them, and tell the scheduler when to wake. Outcomes are recorded in `complete`.
//!
//! A lease is a random token stored in the message record plus a `due` entry moved to the
//! lease's end: if the worker never reports back, the message simply becomes due again when
//! the lease runs out, and the old token no longer matches. Every state change happens in one
//! sled transaction over the trees it touches, so two workers never hold the same message (and
//! hence the same recipient), and a crash never leaves a message half-updated.

use std::time::SystemTime;

use sled::transaction::Transactional;

use crate::body::BodyReader;
use crate::codec::{decode, key_name};
use crate::error::QueueError;
use crate::id::QueueId;
use crate::lock::lock;
use crate::model::{Envelope, LeaseRec, LeasedRecipient, MessageRecord, MessageState};
use crate::queue::Queue;
use crate::schedule::{from_ms, later, parse_due_key, to_ms};
use crate::store::Trees;
use crate::tx::{abort, tx_err, Indexed, MessageTx};

/// A message leased to one delivery worker until `lease_until`. Its body is read with
/// [`Queue::body`].
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
    pub(crate) token: u64,
}

/// A `due` entry to try: key, its time, the message, and the token a lease would get.
type Candidate = (sled::IVec, u64, QueueId, u64);

/// A `due` entry whose record could not be decoded, with the error to report.
type CorruptDue = (sled::IVec, QueueError);

/// A message the lease transaction took: its record as leased and its state before.
struct Taken {
    id: QueueId,
    rec: MessageRecord,
    before: MessageState,
    token: u64,
}

impl Queue {
    /// When the next message is due (or a lease runs out), `None` when nothing is scheduled.
    /// O(log n): the first key of the `due` index.
    pub fn next_due(&self) -> Result<Option<SystemTime>, QueueError> {
        let t = self.store.trees()?;
        loop {
            let Some((k, _)) = t.due.first().map_err(QueueError::db("next due"))? else {
                return Ok(None);
            };
            match parse_due_key(&k) {
                Some((ms, _)) => return Ok(Some(from_ms(ms))),
                None => self.store.drop_bad_due_key(&k)?,
            }
        }
    }

    /// Leases up to `max` messages due at `now` (oldest due first). Each comes with its open
    /// recipients; until `complete`, `abandon` or the lease's end nobody else gets it. A
    /// message whose body is gone is put on hold and reported instead. While storage is
    /// failed nothing is leased ([`QueueError::Unavailable`]): an attempt whose outcome
    /// could not be stored would only be repeated.
    pub fn lease_due(&self, now: SystemTime, max: usize) -> Result<Vec<Leased>, QueueError> {
        let store = &self.store;
        if store.failed() {
            return Err(QueueError::Unavailable {
                reason: store.failure().unwrap_or_default(),
            });
        }
        let t = store.trees()?;
        let until = later(now, store.opts.lease);
        let upper = (to_ms(now).saturating_add(1)).to_be_bytes();
        let mut candidates = Vec::new();
        for item in t.due.range(..&upper[..]).keys() {
            if candidates.len() >= max {
                break;
            }
            let k = item.map_err(QueueError::db("scan due"))?;
            match parse_due_key(&k) {
                Some((ms, id)) => candidates.push((k, ms, id, rand::random::<u64>())),
                None => store.drop_bad_due_key(&k)?,
            }
        }
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let gate = store.scan_gate();
        let (taken, corrupt) = self.take(&t, &candidates, to_ms(until))?;
        for t in &taken {
            store.count_seen(&gate, t.id, Some(t.before), Some(MessageState::Active));
        }
        // Not held further: `build_leased` may put a message on hold, which takes it again.
        drop(gate);
        // From here on the batch is leased: an error must not return early, or every message
        // after it would sit out its lease unseen. A message that fails is set aside (it is
        // due again when its lease runs out) and the rest are handed out.
        for (k, e) in corrupt {
            store.report_corrupt(&e);
            if let Err(e) = t.due.remove(&k) {
                tracing::warn!(key = %key_name(&k), error = %e, "could not drop the schedule entry of a corrupt record");
            }
        }
        let mut out = Vec::with_capacity(taken.len());
        let mut failed = None;
        for t in taken {
            let id = t.id;
            let live = LeaseRec {
                token: t.token,
                until_ms: to_ms(until),
            };
            lock(&store.health.live).insert(id, live);
            match self.build_leased(t, until) {
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

    /// Leases one message to hand it to another relay (`queue drain`), whatever its schedule:
    /// due or not, deferred or held (a held message loses its hold here; the caller puts it
    /// back with [`Queue::hold`] if the handover fails). `None` when it is gone or a live
    /// lease holds it (a delivery in flight): try again once that lease ends.
    pub fn lease_for_handoff(
        &self,
        id: QueueId,
        now: SystemTime,
    ) -> Result<Option<(Leased, bool)>, QueueError> {
        let store = &self.store;
        if store.failed() {
            return Err(QueueError::Unavailable {
                reason: store.failure().unwrap_or_default(),
            });
        }
        let t = store.trees()?;
        let until = later(now, store.opts.lease);
        let (until_ms, now_ms, token) = (to_ms(until), to_ms(now), rand::random::<u64>());
        let taken = (&t.meta, &t.due, &t.lease)
            .transaction(|(meta, due, lease)| {
                let tx = MessageTx { meta, due, lease };
                let Some(mut rec) = tx.get(id)? else {
                    return Ok(None);
                };
                if rec.lease.is_some_and(|l| l.until_ms > now_ms) {
                    return Ok(None);
                }
                let (before, held) = (rec.state(), rec.hold);
                let indexed = Indexed::of(&rec);
                rec.hold = false;
                rec.lease = Some(LeaseRec { token, until_ms });
                rec.next_ms = until_ms;
                tx.put(id, Some(indexed), &rec)?;
                Ok(Some((
                    Taken {
                        id,
                        rec,
                        before,
                        token,
                    },
                    held,
                )))
            })
            .map_err(tx_err("lease for handoff"))?;
        let Some((taken, held)) = taken else {
            return Ok(None);
        };
        store.count(Some(taken.before), Some(MessageState::Active));
        lock(&store.health.live).insert(id, LeaseRec { token, until_ms });
        self.commit.wait_durable(t.gen)?;
        Ok(self.build_leased(taken, until)?.map(|l| (l, held)))
    }

    /// The lease transaction: one for the whole batch, since sled's cost is per transaction
    /// and a scheduler with free slots leases many at once. A record that cannot be decoded
    /// is set aside (returned with its `due` key) rather than failing its neighbours.
    fn take(
        &self,
        trees: &Trees,
        candidates: &[Candidate],
        until_ms: u64,
    ) -> Result<(Vec<Taken>, Vec<CorruptDue>), QueueError> {
        (&trees.meta, &trees.due, &trees.lease)
            .transaction(|(meta, due, lease)| {
                let t = MessageTx { meta, due, lease };
                let mut taken = Vec::new();
                let mut corrupt = Vec::new();
                for (k, ms, id, token) in candidates {
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
                    if !rec.scheduled() || rec.next_ms != *ms {
                        due.remove(k.as_ref())?; // stale index entry
                        continue;
                    }
                    let before = rec.state();
                    let indexed = Indexed::of(&rec);
                    rec.lease = Some(LeaseRec {
                        token: *token,
                        until_ms,
                    });
                    rec.next_ms = until_ms;
                    t.put(*id, Some(indexed), &rec)?;
                    taken.push(Taken {
                        id: *id,
                        rec,
                        before,
                        token: *token,
                    });
                }
                Ok((taken, corrupt))
            })
            .map_err(tx_err("lease"))
    }

    fn build_leased(&self, t: Taken, until: SystemTime) -> Result<Option<Leased>, QueueError> {
        let Taken { id, rec, token, .. } = t;
        let store = &self.store;
        let mut recipients = Vec::new();
        for (index, r) in store.recipients(id, rec.rcpts)? {
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
        if let Err(e) = store.check_body(id, &rec) {
            // Undeliverable without its body: park it on hold for the operator rather
            // than leasing it again and again.
            store.report_corrupt(&QueueError::Corrupt {
                tree: "body",
                key: id.to_string(),
                reason: e.to_string(),
            });
            lock(&store.health.live).remove(&id);
            self.hold(id)?;
            return Ok(None);
        }
        Ok(Some(Leased {
            id,
            expires_at: later(rec.env.received_at, store.opts.max_age),
            envelope: rec.env,
            recipients,
            size: rec.size,
            deferrals: rec.deferrals,
            delay_warned: rec.delay_warned,
            lease_until: until,
            token,
        }))
    }

    /// Opens a fresh reader on a queued message's body.
    pub fn body(&self, id: QueueId) -> Result<BodyReader, QueueError> {
        let rec = self.store.record(id)?.ok_or(QueueError::NotFound { id })?;
        self.store.open_body(id, &rec)
    }

    /// Gives a lease back without an attempt (shutdown, worker cancelled): the message is due
    /// again now, its recipients untouched.
    pub fn abandon(&self, lease: &Leased) -> Result<(), QueueError> {
        let now_ms = to_ms(SystemTime::now());
        let gate = self.store.scan_gate();
        let (gen, before, after) = self.update_leased(lease, |rec| {
            rec.lease = None;
            rec.next_ms = now_ms;
        })?;
        let id = lease.id;
        self.store
            .count_seen(&gate, id, Some(before.state()), Some(after.state()));
        drop(gate);
        // Not live any more either way: if this is lost, `heal` returns the lease to due.
        lock(&self.store.health.live).remove(&lease.id);
        self.commit.wait_durable(gen)?;
        self.store.notify_due();
        Ok(())
    }

    /// Extends a lease to `now + QueueOptions::lease` (a long delivery, e.g. a 25 MiB DATA
    /// on a slow link, calls this before the lease runs out so nobody else picks it up).
    pub fn extend_lease(&self, lease: &mut Leased, now: SystemTime) -> Result<(), QueueError> {
        lease.lease_until = self.renew_lease(lease, now)?;
        Ok(())
    }

    /// [`Queue::extend_lease`] for a lease held behind a shared reference (a message
    /// waiting in a destination's mailbox): the record's lease runs to `now +
    /// QueueOptions::lease`, which is returned. Fails with `LeaseLost` once the message was
    /// completed or given back, so a late renewal never revives a finished lease.
    pub fn renew_lease(&self, lease: &Leased, now: SystemTime) -> Result<SystemTime, QueueError> {
        let until = later(now, self.store.opts.lease);
        let until_ms = to_ms(until);
        let token = lease.token;
        self.update_leased(lease, |rec| {
            rec.next_ms = until_ms;
            rec.lease = Some(LeaseRec { token, until_ms });
        })?;
        if let Some(l) = lock(&self.store.health.live).get_mut(&lease.id) {
            l.until_ms = until_ms;
        }
        Ok(until)
    }

    /// How long a lease lasts (`QueueOptions::lease`).
    pub fn lease_duration(&self) -> std::time::Duration {
        self.store.opts.lease
    }

    /// Records that the delay warning DSN for this message was sent; `false` if it already was
    /// (so at most one is ever sent).
    pub fn mark_delay_warned(&self, lease: &Leased) -> Result<bool, QueueError> {
        let (gen, before, _) = self.update_leased(lease, |rec| rec.delay_warned = true)?;
        self.commit.wait_durable(gen)?;
        Ok(!before.delay_warned)
    }

    /// Changes a leased message's record under its lease token; returns the database opening
    /// it went to and the record before and after.
    fn update_leased(
        &self,
        lease: &Leased,
        f: impl Fn(&mut MessageRecord),
    ) -> Result<(u64, MessageRecord, MessageRecord), QueueError> {
        let id = lease.id;
        let trees = self.store.trees()?;
        let (before, after) = (&trees.meta, &trees.due, &trees.lease)
            .transaction(|(meta, due, leases)| {
                let t = MessageTx {
                    meta,
                    due,
                    lease: leases,
                };
                let mut rec = t.load(id)?;
                if rec.lease.map(|l| l.token) != Some(lease.token) {
                    return abort(QueueError::LeaseLost { id });
                }
                let before = rec.clone();
                f(&mut rec);
                t.put(id, Some(Indexed::of(&before)), &rec)?;
                Ok((before, rec))
            })
            .map_err(tx_err("update lease"))?;
        Ok((trees.gen, before, after))
    }
}
