//! One destination's mailbox: the work waiting for it, the workers serving
//! it, and the choice each worker makes between rounds — take a share, keep
//! an idle session open for more (Postfix's connection cache), or leave.
//! Decided under the scheduler's lock; no I/O here.
//!
//! A destination is an MX host set shared by many domains (`site`), so the
//! work carries each domain's TLS policy class ([`Classed`]): a share is all
//! of one class — the class of the worker's open session while any such work
//! waits — so sessions carry mail of one policy (SPEC "Delivery").

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// How long an idle session waits for more mail to its destination, like
/// Postfix's `smtp_connection_cache_time_limit` (2 s).
pub const LINGER: Duration = Duration::from_secs(2);

/// Messages sent over one session before it is closed (like Postfix's
/// `smtp_connection_reuse_count_limit`, which has no limit by default; a
/// bound keeps one destination from holding a connection forever).
pub const MAX_PER_SESSION: usize = 100;

/// Work that belongs to a TLS policy class.
pub trait Classed {
    type Class: PartialEq;
    fn class(&self) -> &Self::Class;
}

/// Work waiting for a destination, and how many workers serve it (at most
/// [`Mailbox::limit`], each with one connection at a time).
pub struct Mailbox<T> {
    pub waiting: VecDeque<T>,
    pub workers: usize,
    /// The connection limit: the smallest of the limits of the domains that
    /// brought work since the mailbox was made (`usize::MAX` before any).
    pub limit: usize,
    /// Workers keeping an idle session open, waiting on `ready`.
    pub idle: usize,
    pub ready: Arc<Notify>,
    /// The adaptive connection cap (`shaping`): below `limit` while the
    /// destination is throttled; workers over it leave.
    pub cap: usize,
    /// The largest share one worker takes (a `message_rate`'s burst).
    pub max_take: usize,
}

impl<T> Default for Mailbox<T> {
    fn default() -> Mailbox<T> {
        Mailbox {
            waiting: VecDeque::new(),
            workers: 0,
            limit: usize::MAX,
            idle: 0,
            ready: Arc::default(),
            cap: usize::MAX,
            max_take: MAX_PER_SESSION,
        }
    }
}

/// What a destination worker does next.
pub enum Step<T> {
    Work(Vec<T>),
    /// Keep the session open until more work arrives or the instant passes.
    Linger(Arc<Notify>, Instant),
    /// Close and leave; the items (only at shutdown) are cut off.
    Exit(Vec<T>),
}

/// What a worker brings to [`Mailbox::next_step`].
pub struct Asking<'a, C> {
    /// The class of its open session (`None`: no session).
    pub session: Option<&'a C>,
    /// Other workers wait for a connection permit.
    pub others_waiting: bool,
    pub shutting_down: bool,
    /// When its current linger ends (set on the first idle round).
    pub linger_until: &'a mut Option<Instant>,
}

impl<T: Classed> Mailbox<T> {
    /// Adds work from a domain whose own limit is `limit`; returns how many
    /// workers to start (idle ones are woken first).
    pub fn admit(&mut self, items: impl IntoIterator<Item = T>, limit: usize) -> usize {
        self.limit = self.limit.min(limit.max(1));
        let before = self.waiting.len();
        self.waiting.extend(items);
        let n = self.waiting.len() - before;
        for _ in 0..n.min(self.idle) {
            self.ready.notify_one();
        }
        let spawn = self
            .limit
            .min(self.cap)
            .saturating_sub(self.workers)
            .min(n.saturating_sub(self.idle));
        self.workers += spawn;
        spawn
    }

    /// Up to `n` waiting items of one class, in order: the session's class
    /// when any waits, else the class of the oldest item.
    fn take(&mut self, n: usize, session: Option<&T::Class>) -> Vec<T> {
        let first = session
            .and_then(|c| self.waiting.iter().position(|t| t.class() == c))
            .unwrap_or(0);
        let mut taken: Vec<T> = Vec::new();
        let mut rest = VecDeque::with_capacity(self.waiting.len());
        for (i, t) in std::mem::take(&mut self.waiting).into_iter().enumerate() {
            let same = match taken.first() {
                None => i == first,
                Some(f) => t.class() == f.class(),
            };
            if same && taken.len() < n {
                taken.push(t);
            } else {
                rest.push_back(t);
            }
        }
        self.waiting = rest;
        taken
    }

    /// A worker's next step; one that exits leaves the worker count.
    pub fn next_step(&mut self, a: Asking<'_, T::Class>) -> Step<T> {
        // Linger only while nobody else waits for a connection.
        let may_linger = a.session.is_some()
            && !a.others_waiting
            && a.linger_until.is_none_or(|t| Instant::now() < t);
        let step = if a.shutting_down {
            Step::Exit(self.waiting.drain(..).collect())
        } else if self.workers > self.cap.max(1) {
            // Throttled: this worker's connection is one too many.
            Step::Exit(Vec::new())
        } else if !self.waiting.is_empty() {
            let n = self
                .waiting
                .len()
                .div_ceil(self.workers.max(1))
                .min(self.max_take.clamp(1, MAX_PER_SESSION));
            *a.linger_until = None;
            Step::Work(self.take(n, a.session))
        } else if may_linger {
            self.idle += 1;
            let until = *a
                .linger_until
                .get_or_insert_with(|| Instant::now() + LINGER);
            Step::Linger(self.ready.clone(), until)
        } else {
            Step::Exit(Vec::new())
        };
        if let Step::Exit(_) = step {
            self.workers = self.workers.saturating_sub(1);
        }
        step
    }
}

#[cfg(test)]
#[path = "mailbox_tests.rs"]
mod tests;
