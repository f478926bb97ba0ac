//! Model test: random operation sequences run against the real queue and against a simple
//! in-memory model; after every step their observable state (counts, per-message state,
//! recipients, what is due) must agree.
//!
//! Time: the queue takes `now` from the caller for leasing and completing, but admin changes
//! (release, retry-now, abandon, recovery at open) use the real clock. The model's virtual
//! clock starts a day after the real one, so "due at real now" (`Next::Now`) is always before
//! any virtual time; the model then accepts any choice among equally due messages.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use danerelay_queue::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Enqueue { rcpts: usize, big: bool },
    Lease { max: usize },
    Complete { lease: usize, outcomes: Vec<u8> },
    Abandon { lease: usize },
    Hold { msg: usize },
    Release { msg: usize },
    Delete { msg: usize },
    RetryNow { msg: usize },
    Advance { secs: u64 },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1usize..4, prop::bool::weighted(0.15)).prop_map(|(rcpts, big)| Op::Enqueue { rcpts, big }),
        4 => (1usize..4).prop_map(|max| Op::Lease { max }),
        4 => (0usize..8, prop::collection::vec(0u8..4, 3)).prop_map(|(lease, outcomes)| Op::Complete { lease, outcomes }),
        1 => (0usize..8).prop_map(|lease| Op::Abandon { lease }),
        1 => (0usize..8).prop_map(|msg| Op::Hold { msg }),
        1 => (0usize..8).prop_map(|msg| Op::Release { msg }),
        1 => (0usize..8).prop_map(|msg| Op::Delete { msg }),
        1 => (0usize..8).prop_map(|msg| Op::RetryNow { msg }),
        2 => prop_oneof![Just(30u64), Just(61), Just(130), Just(301), Just(700)].prop_map(|secs| Op::Advance { secs }),
        1 => Just(Op::Reopen),
    ]
}

/// When a model message is next due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Next {
    /// At the real clock's "now" (before any virtual time).
    Now,
    At(u64),
}

#[derive(Debug, Clone)]
struct MMsg {
    rcpts: Vec<RecipientState>,
    attempts: Vec<u32>,
    hold: bool,
    /// (generation, until ms)
    lease: Option<(u64, u64)>,
    next: Next,
    deferrals: u32,
    size: u64,
}

impl MMsg {
    fn state(&self) -> MessageState {
        if self.hold {
            MessageState::Held
        } else if self.lease.is_some() {
            MessageState::Active
        } else if self.deferrals > 0 {
            MessageState::Deferred
        } else {
            MessageState::Pending
        }
    }

    fn due(&self, now: u64) -> bool {
        !self.hold
            && match self.next {
                Next::Now => true,
                Next::At(t) => t <= now,
            }
    }
}

struct World {
    dir: tempfile::TempDir,
    q: Option<Queue>,
    model: BTreeMap<QueueId, MMsg>,
    /// Leases we hold: (lease, generation).
    leases: Vec<(Leased, u64)>,
    generation: u64,
    now: u64,
    retry: Vec<Duration>,
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn model_opts() -> QueueOptions {
    let mut o = opts();
    o.max_age = Duration::from_secs(30 * 86_400);
    o
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path(), model_opts()).unwrap();
        World {
            dir,
            q: Some(q),
            model: BTreeMap::new(),
            leases: Vec::new(),
            generation: 0,
            now: ms(SystemTime::now()) + 86_400_000,
            retry: model_opts().retry,
        }
    }

    fn q(&self) -> &Queue {
        self.q.as_ref().unwrap()
    }

    fn pick(&self, i: usize) -> Option<QueueId> {
        let n = self.model.len();
        (n > 0).then(|| *self.model.keys().nth(i % n).unwrap())
    }

    fn step(&mut self, op: &Op) {
        match op {
            Op::Enqueue { rcpts, big } => {
                let len = if *big { 70_000 } else { 500 };
                let addrs: Vec<String> =
                    (0..*rcpts).map(|i| format!("r{i}@d{i}.example")).collect();
                let mut w = self.q().begin().unwrap();
                w.write_all(&body(len, *rcpts as u8)).unwrap();
                let id = w
                    .commit(
                        env("s@example.org"),
                        addrs.iter().map(|a| rcpt(a)).collect(),
                    )
                    .unwrap();
                self.model.insert(
                    id,
                    MMsg {
                        rcpts: vec![RecipientState::Pending; *rcpts],
                        attempts: vec![0; *rcpts],
                        hold: false,
                        lease: None,
                        next: Next::Now,
                        deferrals: 0,
                        size: len as u64,
                    },
                );
            }
            Op::Lease { max } => {
                let due: Vec<QueueId> = self
                    .model
                    .iter()
                    .filter(|(_, m)| m.due(self.now))
                    .map(|(id, _)| *id)
                    .collect();
                let got = self.q().lease_due(at(self.now), *max).unwrap();
                assert_eq!(got.len(), due.len().min(*max), "due {due:?}");
                for l in got {
                    assert!(due.contains(&l.id), "{} leased but not due", l.id);
                    let m = self.model.get_mut(&l.id).unwrap();
                    self.generation += 1;
                    let until = self.now + 300_000;
                    m.lease = Some((self.generation, until));
                    m.next = Next::At(until);
                    let open: Vec<u32> = (0u32..)
                        .zip(&m.rcpts)
                        .filter(|(_, s)| s.is_open())
                        .map(|(i, _)| i)
                        .collect();
                    assert_eq!(
                        l.recipients.iter().map(|r| r.index).collect::<Vec<_>>(),
                        open
                    );
                    assert_eq!(l.size, m.size);
                    assert_eq!(l.deferrals, m.deferrals);
                    self.leases.push((l, self.generation));
                }
            }
            Op::Complete { lease, outcomes } => {
                if self.leases.is_empty() {
                    return;
                }
                let (l, gen) = self.leases.remove(lease % self.leases.len());
                let mut outs = Vec::new();
                for (r, o) in l.recipients.iter().zip(outcomes) {
                    let reply = format!("reply {o}");
                    match o {
                        0 => outs.push((r.index, Disposition::Delivered { reply })),
                        1 => outs.push((r.index, Disposition::Deferred { reply })),
                        2 => outs.push((r.index, Disposition::Bounced { reply })),
                        _ => {} // not reported
                    }
                }
                let res = self.q().complete(&l, &outs, at(self.now));
                let Some(m) = self.model.get_mut(&l.id) else {
                    assert!(matches!(res, Err(QueueError::NotFound { .. })), "{res:?}");
                    return;
                };
                if m.lease.map(|(g, _)| g) != Some(gen) {
                    assert!(matches!(res, Err(QueueError::LeaseLost { .. })), "{res:?}");
                    return;
                }
                let c = res.unwrap();
                for (i, o) in &outs {
                    let i = *i as usize;
                    m.attempts[i] += 1;
                    m.rcpts[i] = match o {
                        Disposition::Delivered { .. } => RecipientState::Delivered,
                        Disposition::Deferred { .. } => RecipientState::Deferred,
                        Disposition::Bounced { .. } => RecipientState::Bounced,
                    };
                }
                m.lease = None;
                if !m.rcpts.iter().any(|s| s.is_open()) {
                    assert!(c.finished);
                    assert!(c.body.is_some());
                    self.model.remove(&l.id);
                    return;
                }
                assert!(!c.finished);
                assert!(c.expired.is_empty());
                m.deferrals += 1;
                if m.hold {
                    assert_eq!(c.next_attempt, None);
                    return;
                }
                let next = ms(c.next_attempt.unwrap());
                let gap = next - self.now;
                let k = m.deferrals as usize;
                if k < self.retry.len() {
                    assert_eq!(gap, self.retry[k - 1].as_millis() as u64);
                } else {
                    let last = self.retry.last().unwrap().as_millis() as u64;
                    assert!(gap >= last * 9 / 10 && gap <= last * 11 / 10, "{gap}");
                }
                m.next = Next::At(next);
            }
            Op::Abandon { lease } => {
                if self.leases.is_empty() {
                    return;
                }
                let (l, gen) = self.leases.remove(lease % self.leases.len());
                let res = self.q().abandon(&l);
                match self.model.get_mut(&l.id) {
                    None => assert!(matches!(res, Err(QueueError::NotFound { .. }))),
                    Some(m) if m.lease.map(|(g, _)| g) != Some(gen) => {
                        assert!(matches!(res, Err(QueueError::LeaseLost { .. })), "{res:?}")
                    }
                    Some(m) => {
                        res.unwrap();
                        m.lease = None;
                        m.next = Next::Now;
                    }
                }
            }
            Op::Hold { msg } => {
                let Some(id) = self.pick(*msg) else { return };
                let m = self.model.get_mut(&id).unwrap();
                assert_eq!(self.q.as_ref().unwrap().hold(id).unwrap(), !m.hold);
                m.hold = true;
            }
            Op::Release { msg } => {
                let Some(id) = self.pick(*msg) else { return };
                let m = self.model.get_mut(&id).unwrap();
                assert_eq!(self.q.as_ref().unwrap().release(id).unwrap(), m.hold);
                if m.hold {
                    m.hold = false;
                    // A lease still running (virtual times are always after real now) is kept.
                    m.next = match m.lease {
                        Some((_, until)) => Next::At(until),
                        None => Next::Now,
                    };
                }
            }
            Op::Delete { msg } => {
                let Some(id) = self.pick(*msg) else { return };
                assert!(self.q().delete(id).unwrap());
                self.model.remove(&id);
            }
            Op::RetryNow { msg } => {
                let Some(id) = self.pick(*msg) else { return };
                let m = self.model.get_mut(&id).unwrap();
                let expect = !m.hold && m.lease.is_none() && m.next != Next::Now;
                assert_eq!(self.q.as_ref().unwrap().retry_now(id).unwrap(), expect);
                if expect {
                    m.next = Next::Now;
                }
            }
            Op::Advance { secs } => self.now += secs * 1000,
            Op::Reopen => {
                self.q = None; // the old process is gone, leases and all
                self.q = Some(Queue::open(self.dir.path(), model_opts()).unwrap());
                for m in self.model.values_mut() {
                    if m.lease.take().is_some() {
                        m.next = Next::Now;
                    }
                }
            }
        }
    }

    fn check(&self) {
        let q = self.q();
        let mut want = Counts::default();
        for m in self.model.values() {
            match m.state() {
                MessageState::Pending => want.pending += 1,
                MessageState::Deferred => want.deferred += 1,
                MessageState::Held => want.held += 1,
                MessageState::Active => want.active += 1,
            }
        }
        assert_eq!(q.counts(), want);
        let listed = q.list(&ListFilter::default()).unwrap();
        assert_eq!(
            listed.iter().map(|i| i.id).collect::<Vec<_>>(),
            self.model.keys().copied().collect::<Vec<_>>()
        );
        for info in &listed {
            let m = &self.model[&info.id];
            assert_eq!(info.state, m.state(), "{}", info.id);
            assert_eq!(info.deferrals, m.deferrals);
            assert_eq!(info.size, m.size);
            let states: Vec<_> = info.recipients.iter().map(|r| r.state).collect();
            assert_eq!(states, m.rcpts, "{}", info.id);
            let attempts: Vec<_> = info.recipients.iter().map(|r| r.attempts).collect();
            assert_eq!(attempts, m.attempts);
            match (m.hold, m.next, info.next_attempt) {
                (true, _, got) => assert_eq!(got, None),
                (false, Next::At(t), Some(got)) => assert_eq!(ms(got), t),
                (false, Next::Now, Some(got)) => assert!(ms(got) <= ms(SystemTime::now())),
                (false, _, None) => panic!("{} not scheduled", info.id),
            }
        }
        let next = self
            .model
            .values()
            .filter(|m| !m.hold)
            .map(|m| m.next)
            .min();
        match (next, q.next_due().unwrap()) {
            (None, None) => {}
            (Some(Next::At(t)), Some(got)) => assert_eq!(ms(got), t),
            (Some(Next::Now), Some(got)) => assert!(ms(got) <= ms(SystemTime::now())),
            (want, got) => panic!("next due: model {want:?}, queue {got:?}"),
        }
        assert!(q.corrupt_records().is_empty());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    fn queue_matches_model(ops in prop::collection::vec(op(), 1..50)) {
        let mut w = World::new();
        for op in &ops {
            w.step(op);
            w.check();
        }
    }
}
