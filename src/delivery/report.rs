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
    Completion, Envelope, Leased, Notify as QNotify, Outcome as QOutcome, Queue, QueueError,
    QueueId, RecipientSpec,
};

use crate::metrics::Metrics;
use crate::smtp::client::{EnhancedCode, Notify, Reply, Ret};

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

/// The queue's notify as the client's (same fields; RFC 3461 §4.1).
pub fn notify(n: QNotify) -> Notify {
    Notify {
        success: n.success,
        failure: n.failure,
        delay: n.delay,
        never: n.never,
    }
}

fn to_queue(outcome: &Outcome) -> QOutcome {
    match outcome {
        Outcome::Delivered(r) => QOutcome::Delivered {
            reply: r.one_line(),
        },
        Outcome::Deferred(r) => QOutcome::Deferred {
            reply: r.reply.one_line(),
        },
        Outcome::Bounced(r) => QOutcome::Bounced {
            reply: r.reply.one_line(),
        },
    }
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
    let rcpt = |index: u32| leased.recipients.iter().find(|r| r.index == index);
    let any_deferred = results
        .iter()
        .any(|r| matches!(r.outcome, Outcome::Deferred(_)));
    // The lease must still be held to mark the warning: before `complete`.
    let warn = any_deferred
        && !env.sender.is_empty()
        && options
            .retry
            .delay_warning_due(env.received_at, now, leased.delay_warned)
        && results.iter().any(|r| {
            matches!(r.outcome, Outcome::Deferred(_))
                && rcpt(r.index)
                    .is_some_and(|l| dsn::wanted(Some(notify(l.notify)), Action::Delayed))
        })
        && queue.mark_delay_warned(leased)?;

    let outcomes: Vec<(u32, QOutcome)> = results
        .iter()
        .map(|r| (r.index, to_queue(&r.outcome)))
        .collect();
    let completion = queue.complete(leased, &outcomes, now)?;

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

    let mut failed: Vec<DsnRecipient> = Vec::new();
    let mut delayed: Vec<DsnRecipient> = Vec::new();
    for r in results {
        let Some(l) = rcpt(r.index) else { continue };
        if completion.expired.iter().any(|e| e.index == r.index) {
            continue;
        }
        let mut d = DsnRecipient::from_outcome(
            &l.address,
            l.orcpt.as_deref(),
            Some(notify(l.notify)),
            &r.outcome,
        );
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
        let mut d = DsnRecipient::from_outcome(
            &e.address,
            e.orcpt.as_deref(),
            Some(notify(e.notify)),
            &out,
        );
        d.last_attempt = Some(now);
        failed.push(d);
    }

    if env.sender.is_empty() || (failed.is_empty() && delayed.is_empty()) {
        return Ok(ReportSummary {
            completion,
            dsns: Vec::new(),
        });
    }
    let mut summary = ReportSummary {
        completion,
        dsns: Vec::new(),
    };
    let mut bytes = Vec::new();
    match summary.completion.body.take() {
        Some(mut body) => body.read_to_end(&mut bytes),
        None => queue.body(leased.id)?.read_to_end(&mut bytes),
    }
    .map_err(ReportError::Body)?;
    for group in [failed, delayed] {
        if group.is_empty() {
            continue;
        }
        let input = DsnInput {
            reporting_mta: &options.reporting_mta,
            original_sender: &env.sender,
            envid: env.envid.as_deref(),
            ret: env.ret.map(|r| match r {
                danerelay_queue::Ret::Full => Ret::Full,
                danerelay_queue::Ret::Headers => Ret::Headers,
            }),
            arrival: env.received_at,
            now,
            queue_id: leased.id.as_str(),
            recipients: &group,
            original: &bytes,
        };
        if let Some(d) = dsn::build(&input) {
            let id = enqueue(queue, &d, env, now)?;
            tracing::info!(queue_id = %leased.id, dsn = %id, to = %d.recipient, "DSN enqueued");
            summary.dsns.push(id);
        }
    }
    Ok(summary)
}

/// Enqueues a DSN from the null sender (RFC 3461 §6.2), so it is never
/// itself answered with a DSN.
fn enqueue(
    queue: &Queue,
    d: &dsn::Dsn,
    original: &Envelope,
    now: SystemTime,
) -> Result<QueueId, ReportError> {
    let mut w = queue.begin()?;
    w.write_all(&d.message).map_err(ReportError::Write)?;
    let env = Envelope {
        body_8bit: original.body_8bit,
        smtputf8: original.smtputf8,
        ..Envelope::new("", now)
    };
    let rcpt = RecipientSpec {
        address: d.recipient.clone(),
        orcpt: None,
        notify: QNotify::default(),
    };
    Ok(w.commit(env, vec![rcpt])?)
}
