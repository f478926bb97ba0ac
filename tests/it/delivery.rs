//! Delivery end to end: the relay started in-process (`danerelay::start`)
//! with a real validating unbound over signed test zones (`support::dnsenv`)
//! and real receiving MTAs — Python aiosmtpd, with or without STARTTLS —
//! each on its own 127.0.25.x address on port 25 (MX records carry no port)
//! with an rcgen certificate whose TLSA record the zones publish.
//! `tls_check` runs the `danerelay tls-check` binary against the same kind
//! of world.

mod full_path;
mod hosted;
mod matrix;
pub mod mta;
mod shared_mx;
mod tls_check;

use std::time::{Duration, Instant};

use danerelay::config::{self, DnssecMode};
use danerelay_queue::{Queue, QueueId, RecipientState};

use crate::support::dnsenv::DnsEnv;

/// The relay's config for a world: trust-ad through the test unbound, the
/// start-up probe at the (test) root, one retry an hour (a deferral stays
/// deferred for the test's lifetime).
pub fn relay_config(dir: &std::path::Path, env: &DnsEnv) -> config::Config {
    let text = format!(
        "hostname = \"relay.test\"\n[[listener]]\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n\
         [queue]\npath = {:?}\nretry = [\"1h\"]\n[http]\naddress = \"127.0.0.1:0\"\n\
         [delivery]\nconnect_timeout = \"5s\"\n",
        dir.join("queue").display()
    );
    let mut cfg = config::parse(&text).unwrap().config;
    cfg.dns = env.dns_config(DnssecMode::TrustAd);
    cfg
}

/// Where a one-recipient message stands: `None` once it left the queue
/// (delivered or bounced), else the recipient's state and last reply.
/// (A message being removed can show no recipients for a moment: pending.)
pub fn state(queue: &Queue, id: QueueId) -> Option<(RecipientState, String)> {
    let info = queue.show(id).unwrap()?;
    match info.recipients.first() {
        Some(r) => Some((r.state, r.last_reply.clone().unwrap_or_default())),
        None => Some((RecipientState::Pending, String::new())),
    }
}

/// Waits (bounded) until the message is final for this attempt: gone, or
/// deferred/bounced.
pub async fn settled(queue: &Queue, id: QueueId) -> Option<(RecipientState, String)> {
    let start = Instant::now();
    loop {
        match state(queue, id) {
            None => return None,
            Some((RecipientState::Pending, _)) => {}
            Some(other) => return Some(other),
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "message {id} still pending"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
