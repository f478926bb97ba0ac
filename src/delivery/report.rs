//! After an attempt: record every recipient's outcome in the queue
//! (`Queue::complete`), then owe the sender what RFC 3464/3461 say —
//! a failure DSN for bounced and expired (`4.4.7`) recipients, and the one
//! delay warning at `queue.delay_warning` (`Queue::mark_delay_warned` keeps
//! it to one) — enqueued like any message, from `<>`. Never for a null
//! sender, and only for recipients whose NOTIFY asks (both in `dsn::build`).
//!
//! Blocking (sled, body reads): call it from `spawn_blocking`.

use std::io::{Read, Write};
use std::time::{Duration, SystemTime};

use danerelay_queue::{
    Completion, Envelope, Leased, Notify, Queue, QueueError, QueueId, RecipientSpec,
};

use crate::metrics::Metrics;
use crate::smtp::{EnhancedCode, Reply};

use super::dsn::{self, Action, DsnInput, DsnRecipient};
use super::outcome::{Outcome, Reason};
use super::retry::RetryPolicy;

/// Errors while reporting an attempt.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("queue: {0}")]
    Queue(#[from] QueueError),
    #[error("reading the original message for a DSN: {0}")]
    Body(#[source] std::io::Error),
    #[error("writing a DSN into the queue: {0}")]
    Write(#[source] std::io::Error),
}

/// One recipient's result for the report.
#[derive(Debug, Clone)]
pub struct Reported {
    /// `LeasedRecipient::index`.
    pub index: u32,
    pub outcome: Outcome,
    /// The host name that answered, for `Remote-MTA`.
    pub remote_mta: Option<String>,
}

/// What [`report`] did, for logs and tests.
#[derive(Debug)]
pub struct ReportSummary {
    pub completion: Completion,
    /// Queue ids of the DSNs enqueued (failure first, then delay).
    pub dsns: Vec<QueueId>,
}

/// Who we are and how retries go.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    pub reporting_mta: String,
    pub retry: RetryPolicy,
}

/// Records `results` for `leased` and sends the DSNs they call for.
pub fn report(
    queue: &Queue,
    leased: &Leased,
    results: &[Reported],
    options: &ReportOptions,
    metrics: &Metrics,
    now: SystemTime,
) -> Result<ReportSummary, ReportError> {
    let env = &leased.envelope;
    // The lease must still be held to mark the warning: before `complete`.
    let warn = delay_warning(queue, leased, results, options, now)?;

    let outcomes: Vec<(u32, danerelay_queue::Disposition)> = results
        .iter()
        .map(|r| (r.index, r.outcome.to_queue()))
        .collect();
    let completion = queue.complete(leased, &outcomes, now)?;
    observe_queue_time(metrics, env, results, &completion, now);

    let (failed, delayed) = dsn_recipients(leased, results, &completion, warn, now);
    let mut summary = ReportSummary {
        completion,
        dsns: Vec::new(),
    };
    if env.sender.is_empty() || (failed.is_empty() && delayed.is_empty()) {
        return Ok(summary);
    }
    // Only the header section is read here; a RET=FULL failure DSN streams
    // the rest of the body straight into the queue (`enqueue`).
    let mut body = match summary.completion.body.take() {
        Some(body) => body,
        None => queue.body(leased.id)?,
    };
    let head = read_head(&mut body).map_err(ReportError::Body)?;
    let mut original = Original {
        head,
        rest: Some(body),
    };
    for group in [failed, delayed] {
        if let Some(id) = send_dsn(queue, leased, options, &group, &mut original, now)? {
            summary.dsns.push(id);
        }
    }
    Ok(summary)
}

/// Read this far at most looking for the end of the header section.
const HEAD_MAX: usize = 1024 * 1024;

/// The original as a DSN takes it: its start (the whole header section, up to
/// [`HEAD_MAX`]) and the unread rest, streamed at most once.
struct Original {
    head: Vec<u8>,
    rest: Option<danerelay_queue::BodyReader>,
}

/// Reads until the header section's blank line has been seen.
fn read_head(body: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut block = [0u8; 16 * 1024];
    while head.len() < HEAD_MAX {
        let from = head.len().saturating_sub(3);
        let n = body.read(&mut block)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&block[..n]);
        if head.starts_with(b"\r\n") || head[from..].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    Ok(head)
}

/// Whether this attempt owes the sender the one delay warning (RFC 3464
/// `delayed`), marked in the queue so it is sent once.
fn delay_warning(
    queue: &Queue,
    leased: &Leased,
    results: &[Reported],
    options: &ReportOptions,
    now: SystemTime,
) -> Result<bool, ReportError> {
    let env = &leased.envelope;
    let rcpt = |index: u32| leased.recipients.iter().find(|r| r.index == index);
    let any_deferred = results
        .iter()
        .any(|r| matches!(r.outcome, Outcome::Deferred(_)));
    Ok(any_deferred
        && !env.sender.is_empty()
        && options
            .retry
            .delay_warning_due(env.received_at, now, leased.delay_warned)
        && results.iter().any(|r| {
            matches!(r.outcome, Outcome::Deferred(_))
                && rcpt(r.index).is_some_and(|l| dsn::wanted(Some(l.notify), Action::Delayed))
        })
        && queue.mark_delay_warned(leased)?)
}

/// Queue time of every recipient that left the queue (delivered, bounced
/// or expired).
fn observe_queue_time(
    metrics: &Metrics,
    env: &Envelope,
    results: &[Reported],
    completion: &Completion,
    now: SystemTime,
) {
    let age = now
        .duration_since(env.received_at)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64();
    for r in results {
        if !matches!(r.outcome, Outcome::Deferred(_)) {
            metrics.queue_time_seconds.observe(age);
        }
    }
    for _ in &completion.expired {
        metrics.queue_time_seconds.observe(age);
    }
}

/// The recipients of the failure DSN and of the delay warning (empty unless
/// `warn`); expired recipients fail with 4.4.7 (RFC 3463 §3.5).
fn dsn_recipients(
    leased: &Leased,
    results: &[Reported],
    completion: &Completion,
    warn: bool,
    now: SystemTime,
) -> (Vec<DsnRecipient>, Vec<DsnRecipient>) {
    let rcpt = |index: u32| leased.recipients.iter().find(|r| r.index == index);
    let mut failed: Vec<DsnRecipient> = Vec::new();
    let mut delayed: Vec<DsnRecipient> = Vec::new();
    for r in results {
        let Some(l) = rcpt(r.index) else { continue };
        if completion.expired.iter().any(|e| e.index == r.index) {
            continue;
        }
        let mut d =
            DsnRecipient::from_outcome(&l.address, l.orcpt.as_deref(), Some(l.notify), &r.outcome);
        d.remote_mta = r.remote_mta.clone();
        d.last_attempt = Some(now);
        match d.action {
            Action::Failed => failed.push(d),
            Action::Delayed if warn => {
                d.will_retry_until = Some(leased.expires_at);
                delayed.push(d);
            }
            _ => {}
        }
    }
    for e in &completion.expired {
        let text = match &e.last_reply {
            Some(last) => format!("delivery time expired; last error: {last}"),
            None => "delivery time expired".to_string(),
        };
        let out = Outcome::Bounced(Reason {
            reply: Reply::local(451, EnhancedCode(4, 4, 7), text),
            remote: false,
        });
        let mut d =
            DsnRecipient::from_outcome(&e.address, e.orcpt.as_deref(), Some(e.notify), &out);
        d.last_attempt = Some(now);
        failed.push(d);
    }
    (failed, delayed)
}

/// Builds and enqueues one DSN for `group`, if any recipient there wants it.
fn send_dsn(
    queue: &Queue,
    leased: &Leased,
    options: &ReportOptions,
    group: &[DsnRecipient],
    original: &mut Original,
    now: SystemTime,
) -> Result<Option<QueueId>, ReportError> {
    if group.is_empty() {
        return Ok(None);
    }
    let env = &leased.envelope;
    let input = DsnInput {
        reporting_mta: &options.reporting_mta,
        original_sender: &env.sender,
        envid: env.envid.as_deref(),
        ret: env.ret,
        arrival: env.received_at,
        now,
        queue_id: leased.id.as_str(),
        recipients: group,
        original: &original.head,
        streamed: Some(env.body_8bit),
    };
    let Some(d) = dsn::build(&input) else {
        return Ok(None);
    };
    let id = enqueue(queue, &d, env, original, now)?;
    tracing::info!(queue_id = %leased.id, dsn = %id, to = %d.recipient, "DSN enqueued");
    Ok(Some(id))
}

/// Enqueues a DSN from the null sender (RFC 3461 §6.2), so it is never
/// itself answered with a DSN.
fn enqueue(
    queue: &Queue,
    d: &dsn::Dsn,
    original_env: &Envelope,
    original: &mut Original,
    now: SystemTime,
) -> Result<QueueId, ReportError> {
    let mut w = queue.begin()?;
    match d.splice_at {
        None => w.write_all(&d.message).map_err(ReportError::Write)?,
        Some(at) => {
            w.write_all(&d.message[..at]).map_err(ReportError::Write)?;
            let mut last = original.head[original.head.len().saturating_sub(2)..].to_vec();
            w.write_all(&original.head).map_err(ReportError::Write)?;
            if let Some(mut rest) = original.rest.take() {
                let mut block = vec![0u8; 64 * 1024];
                loop {
                    let n = rest.read(&mut block).map_err(ReportError::Body)?;
                    if n == 0 {
                        break;
                    }
                    w.write_all(&block[..n]).map_err(ReportError::Write)?;
                    last.extend_from_slice(&block[n.saturating_sub(2)..n]);
                    last.drain(..last.len().saturating_sub(2));
                }
            }
            if !last.ends_with(b"\r\n") {
                w.write_all(b"\r\n").map_err(ReportError::Write)?;
            }
            w.write_all(&d.message[at..]).map_err(ReportError::Write)?;
        }
    }
    let env = Envelope {
        body_8bit: original_env.body_8bit,
        smtputf8: original_env.smtputf8,
        ..Envelope::new("", now)
    };
    let rcpt = RecipientSpec {
        address: d.recipient.clone(),
        orcpt: None,
        notify: Notify::default(),
    };
    Ok(w.commit(env, vec![rcpt])?)
}
