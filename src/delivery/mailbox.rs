//! One destination's mailbox: the work waiting for it, the workers serving
//! it, and the choice each worker makes between rounds — take a share, keep
//! an idle session open for more (Postfix's connection cache), or leave.
//! Decided under the scheduler's lock; no I/O here.

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

/// Work waiting for a destination, and how many workers serve it (at most
/// `per_destination`, each with one connection at a time).
pub struct Mailbox<T> {
    pub waiting: VecDeque<T>,
    pub workers: usize,
    /// Workers keeping an idle session open, waiting on `ready`.
    pub idle: usize,
    pub ready: Arc<Notify>,
}

impl<T> Default for Mailbox<T> {
    fn default() -> Mailbox<T> {
        Mailbox {
            waiting: VecDeque::new(),
            workers: 0,
            idle: 0,
            ready: Arc::default(),
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
pub struct Asking<'a> {
    /// It holds an open session.
    pub session_open: bool,
    /// Other workers wait for a connection permit.
    pub others_waiting: bool,
    pub shutting_down: bool,
    /// When its current linger ends (set on the first idle round).
    pub linger_until: &'a mut Option<Instant>,
}

impl<T> Mailbox<T> {
    /// A worker's next step; one that exits leaves the worker count.
    pub fn next_step(&mut self, a: Asking<'_>) -> Step<T> {
        // Linger only while nobody else waits for a connection.
        let may_linger = a.session_open
            && !a.others_waiting
            && a.linger_until.is_none_or(|t| Instant::now() < t);
        let step = if a.shutting_down {
            Step::Exit(self.waiting.drain(..).collect())
        } else if !self.waiting.is_empty() {
            let n = self
                .waiting
                .len()
                .div_ceil(self.workers.max(1))
                .min(MAX_PER_SESSION);
            *a.linger_until = None;
            Step::Work(self.waiting.drain(..n).collect())
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
