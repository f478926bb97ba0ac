//! `danerelay queue drain --to HOST:PORT`: scale-in without stranding mail.
//! Local delivery stops (the scheduler's [`Gate`]), `/readyz` turns 503
//! `draining`, new SMTP connections get `421 4.3.2`; then every queued
//! message — pending, deferred and held — is handed to another relay over
//! SMTP ([`handoff`]) with its envelope, DSN parameters and arrival time, and
//! removed only after that relay's `250` for each of its open recipients.
//!
//! Crash safety comes from the queue: a message is leased while it is handed
//! over and completed (removed) only after the `250`, so a kill -9 at any
//! moment leaves it queued; the next drain sends it again — at most the one
//! message in flight reaches the other relay twice. The "draining" mark is
//! stored (queue state namespace [`NAMESPACE`]), so a restarted replica comes
//! up still draining instead of delivering or accepting mail, until
//! `queue drain --stop`.

pub mod handoff;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use danerelay_queue::{ListFilter, MessageState, Queue, QueueError, QueueId};
use serde::{Deserialize, Serialize};

use crate::delivery::gate::Gate;

pub use handoff::{HandoffError, Target};

/// The queue state namespace of the stored "draining" mark.
pub const NAMESPACE: &str = "drain";

/// A pause between passes while a delivery in flight still holds a message.
const BUSY_PAUSE: Duration = Duration::from_millis(500);
/// At most this many problems are kept for the status.
const MAX_PROBLEMS: usize = 50;

/// Where a drain stands, as the admin API reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainStatus {
    /// `off` (delivering normally), `running`, `done` (nothing left that
    /// could be handed over) or `failed` (see `error`). Local delivery stays
    /// stopped in every state but `off`.
    pub state: String,
    pub to: Option<String>,
    /// Messages handed over and removed here.
    pub handed_over: u64,
    /// Messages kept because the other relay refused a recipient (or the
    /// whole message); they are listed in `problems`.
    pub refused: u64,
    /// Messages still queued here.
    pub remaining: u64,
    pub error: Option<String>,
    pub problems: Vec<String>,
}

/// Why a drain could not start or stop.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error("a drain is already running (to {0})")]
    Running(String),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Called with `true` when draining starts (or resumes at start-up), `false` at `--stop`.
pub type Announce = Arc<dyn Fn(bool) + Send + Sync>;

/// The drain switch of one relay. Cheap to clone.
#[derive(Clone)]
pub struct Drain {
    queue: Queue,
    gate: Gate,
    /// Tells the rest of the relay (`/readyz`, the SMTP listeners) whether
    /// it drains; wired by the composition root.
    announce: Announce,
    status: Arc<Mutex<DrainStatus>>,
    /// Our EHLO name (`hostname`).
    helo: String,
}

impl Drain {
    /// Blocking: reads the stored mark; a relay that was draining stays so.
    pub fn load(
        queue: Queue,
        gate: Gate,
        announce: Announce,
        helo: String,
    ) -> Result<Drain, QueueError> {
        let stored = queue.state_get(NAMESPACE, "to")?;
        let drain = Drain {
            queue,
            gate,
            announce,
            helo,
            status: Arc::new(Mutex::new(DrainStatus {
                state: "off".into(),
                ..DrainStatus::default()
            })),
        };
        if let Some(to) = stored {
            let to = String::from_utf8_lossy(&to).into_owned();
            tracing::warn!(to, "this replica was draining: local delivery stays stopped until `queue drain` finishes or `queue drain --stop`");
            drain.switch(true);
            let mut st = drain.lock();
            st.state = "done".into();
            st.to = Some(to);
            st.error = Some("interrupted (restart): run `queue drain` again".into());
        }
        Ok(drain)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DrainStatus> {
        crate::sync::lock(&self.status)
    }

    fn switch(&self, on: bool) {
        self.gate.set_stopped(on);
        (self.announce)(on);
    }

    /// The status, with the queue's current count.
    pub fn status(&self) -> DrainStatus {
        let mut st = self.lock().clone();
        st.remaining = self.queue.counts().total();
        st
    }

    /// Starts handing the queue to `target` in the background. Blocking (it
    /// stores the mark). A finished or failed drain may be started again.
    pub fn start(&self, mut target: Target) -> Result<(), DrainError> {
        if target.helo.is_empty() {
            target.helo = self.helo.clone();
        }
        {
            let mut st = self.lock();
            if st.state == "running" {
                return Err(DrainError::Running(st.to.clone().unwrap_or_default()));
            }
            *st = DrainStatus {
                state: "running".into(),
                to: Some(target.address.clone()),
                ..DrainStatus::default()
            };
        }
        let stored = self
            .queue
            .state_put(NAMESPACE, "to", target.address.as_bytes())
            .and_then(|()| self.queue.flush());
        if let Err(e) = stored {
            self.lock().state = "off".into();
            return Err(e.into());
        }
        self.switch(true);
        tracing::info!(to = %target.address, "drain started: local delivery stopped, new mail refused");
        tokio::spawn(self.clone().run(target));
        Ok(())
    }

    /// `queue drain --stop`: local delivery and submissions resume. Refused
    /// while a drain runs. Blocking.
    pub fn stop(&self) -> Result<(), DrainError> {
        let mut st = self.lock();
        if st.state == "running" {
            return Err(DrainError::Running(st.to.clone().unwrap_or_default()));
        }
        self.queue.state_remove(NAMESPACE, "to")?;
        self.queue.flush()?;
        *st = DrainStatus {
            state: "off".into(),
            ..DrainStatus::default()
        };
        self.switch(false);
        tracing::info!("drain stopped: delivering and accepting mail again");
        Ok(())
    }

    /// Passes over the queue until nothing is left that could be handed
    /// over: a message a delivery in flight still holds is tried again after
    /// a pause; one the other relay refused stays here and is reported.
    async fn run(self, target: Target) {
        let mut sender = handoff::Sender::new(target);
        let mut kept: HashSet<QueueId> = HashSet::new();
        let outcome = loop {
            match self.pass(&mut sender, &mut kept).await {
                Ok(0) => break Ok(()),
                Ok(_busy) => tokio::time::sleep(BUSY_PAUSE).await,
                Err(e) => break Err(e),
            }
        };
        sender.close().await;
        let mut st = self.lock();
        match outcome {
            Ok(()) => {
                st.state = "done".into();
                tracing::info!(
                    handed_over = st.handed_over,
                    refused = st.refused,
                    "drain done"
                );
            }
            Err(e) => {
                tracing::error!(error = %e, handed_over = st.handed_over, "drain failed; run it again to resume");
                st.state = "failed".into();
                st.error = Some(e.to_string());
            }
        }
    }

    /// One pass over every queued message; returns how many were busy.
    async fn pass(
        &self,
        sender: &mut handoff::Sender,
        kept: &mut HashSet<QueueId>,
    ) -> Result<usize, HandoffError> {
        let q = self.queue.clone();
        let ids: Vec<QueueId> = blocking(move || q.list(&ListFilter::default()))
            .await?
            .into_iter()
            .map(|m| m.id)
            .filter(|id| !kept.contains(id))
            .collect();
        let mut busy = 0;
        for id in ids {
            let q = self.queue.clone();
            let taken = blocking(move || {
                Ok(match q.lease_for_handoff(id, SystemTime::now())? {
                    Some(l) => Ok(l),
                    None => Err(q.show(id)?.map(|m| m.state)),
                })
            })
            .await?;
            let handed = match taken {
                Ok((leased, held)) => sender.hand_over(&self.queue, leased, held).await?,
                // A delivery in flight holds it: the next pass.
                Err(Some(MessageState::Active)) => {
                    busy += 1;
                    continue;
                }
                Err(None) => continue, // gone meanwhile
                // Not leasable although nobody holds it: its body is unreadable
                // (the queue put it on hold and logged it).
                Err(Some(_)) => handoff::Handed::Kept("body unreadable; on hold".into()),
            };
            match handed {
                handoff::Handed::All => self.lock().handed_over += 1,
                handoff::Handed::Kept(problem) => self.keep(id, problem, kept),
            }
        }
        Ok(busy)
    }

    fn keep(&self, id: QueueId, problem: String, kept: &mut HashSet<QueueId>) {
        kept.insert(id);
        let mut st = self.lock();
        st.refused += 1;
        if st.problems.len() < MAX_PROBLEMS {
            st.problems.push(format!("{id}: {problem}"));
        }
    }
}

/// Runs a blocking queue call off the runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, QueueError> + Send + 'static,
) -> Result<T, HandoffError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| HandoffError::Task(e.to_string()))?
        .map_err(HandoffError::Queue)
}
