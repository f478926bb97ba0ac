//! Keeps the leases of messages in flight alive. A message can wait in its
//! destination's mailbox far longer than one attempt takes — a route's
//! `message_rate` of a few per hour, a backoff window, a tarpitting MX —
//! and a lease that ran out would let the scheduler lease the message a
//! second time while the first copy still waits: delivered twice. Every
//! quarter of the lease, each flight's lease is renewed; a flight that was
//! completed meanwhile fails the renewal (`LeaseLost`) and is forgotten.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use danerelay_queue::QueueId;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::InFlight;
use crate::delivery::clock::Clock;

/// The flights out right now, by queue id.
#[derive(Default, Clone)]
pub(super) struct Flights {
    map: Arc<Mutex<HashMap<QueueId, Weak<InFlight>>>>,
}

impl Flights {
    pub(super) fn add(&self, flight: &Arc<InFlight>) {
        self.lock().insert(flight.leased.id, Arc::downgrade(flight));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<QueueId, Weak<InFlight>>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The live flights; finished ones are dropped from the map.
    fn live(&self) -> Vec<Arc<InFlight>> {
        let mut map = self.lock();
        map.retain(|_, w| w.strong_count() > 0);
        map.values().filter_map(Weak::upgrade).collect()
    }

    /// Renews every live flight's lease; how many were renewed.
    pub(super) fn renew_all(&self, queue: &danerelay_queue::Queue, clock: &dyn Clock) -> usize {
        let now = clock.now();
        let mut renewed = 0;
        for flight in self.live() {
            match queue.renew_lease(&flight.leased, now) {
                Ok(_) => renewed += 1,
                Err(danerelay_queue::QueueError::LeaseLost { .. }) => {
                    self.lock().remove(&flight.leased.id);
                }
                Err(e) => {
                    warn!(queue_id = %flight.leased.id, error = %e, "renewing a delivery lease failed")
                }
            }
        }
        renewed
    }

    /// Renews every quarter of `lease` until `stop`.
    pub(super) async fn run(
        self,
        queue: danerelay_queue::Queue,
        clock: Arc<dyn Clock>,
        stop: CancellationToken,
    ) {
        let every = (queue.lease_duration() / 4).max(Duration::from_millis(250));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is immediate; nothing is old yet
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {
                    let (f, q, c) = (self.clone(), queue.clone(), clock.clone());
                    let renewed = tokio::task::spawn_blocking(move || f.renew_all(&q, c.as_ref()))
                        .await
                        .unwrap_or(0);
                    debug!(renewed, "delivery leases renewed");
                }
            }
        }
    }
}
