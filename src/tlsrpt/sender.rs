//! Sending the reports (RFC 8460 §4.1, §5). After a UTC day ends plus a
//! per-domain random delay ([`due_at`], up to `max_delay`), each domain's
//! counts become one report: the TXT `_smtp._tls.<domain>` is looked up and,
//! when it names `rua`s, the gzip'd report is put in a durable outbox
//! (`tlsrpt` / `o/<day>/<domain>`) and the counts removed, in that order.
//! The outbox is then worked off: `mailto:` ⇒ a DKIM-signed message queued
//! with the `tls_report` flag; `https:` ⇒ a POST, retried with backoff for up
//! to 24 hours. Each rua's state is written (and flushed) as soon as it is
//! done, so a restart sends nothing twice — except a `mailto:` report whose
//! enqueue was durable and whose outbox update was not (a crash between
//! the two), which goes out once more.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use danerelay_queue::{Envelope, Notify, Queue, QueueError, RecipientSpec};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::day::Day;
use super::recorder::{self, Recorder, NS};
use super::report::{self, ReportMeta};
use super::rua::{parse_txt, Rua};
use crate::config::tls_rpt::TlsRptConfig;
use crate::delivery::clock::Clock;
use crate::dkim::Signer;
use crate::dns::{AnswerKind, DnsLookup, RecordType};
use crate::metrics::{Metrics, TlsRptResult, TlsRptTransport};

/// How long reports of a day are tried: RFC 8460 §5.4 suggests retrying for
/// a reasonable time; a day's report a day late is still useful.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);

/// POST timeout per attempt.
const POST_TIMEOUT: Duration = Duration::from_secs(60);

/// Everything the sender needs.
pub struct Sender {
    pub queue: Queue,
    pub dns: Arc<dyn DnsLookup>,
    pub config: TlsRptConfig,
    /// Our host name (`TLS-Report-Submitter`).
    pub submitter: String,
    pub signer: Arc<Signer>,
    pub recorder: Arc<Recorder>,
    pub metrics: Metrics,
    pub tls: Arc<rustls::ClientConfig>,
    pub clock: Arc<dyn Clock>,
}

/// One rua of an outbox record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Target {
    pub rua: Rua,
    pub done: bool,
    pub attempts: u32,
    /// Seconds since the epoch.
    pub next_try: u64,
}

/// A report waiting to reach its ruas.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outgoing {
    pub day: Day,
    pub domain: String,
    pub report_id: String,
    /// The gzip'd JSON, base64.
    pub gzip: String,
    /// When it was prepared (seconds since the epoch).
    pub created: u64,
    pub targets: Vec<Target>,
}

/// When `domain`'s report for `day` is due: the day's end plus a delay in
/// `[0, max_delay)` that is random across domains but the same on every
/// computation (a restart does not reshuffle it).
pub fn due_at(day: Day, domain: &str, max_delay: Duration) -> SystemTime {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    let max = max_delay.as_secs();
    if max == 0 {
        return day.end();
    }
    let h = BuildHasherDefault::<DefaultHasher>::default().hash_one((day, domain));
    day.end() + Duration::from_secs(h % max)
}

/// Backoff for the n-th failed POST: 5 min doubling, at most 4 h.
pub fn backoff(attempts: u32) -> Duration {
    let base = 300u64.saturating_mul(1 << attempts.min(6));
    Duration::from_secs(base.min(4 * 3600))
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn outbox_key(day: Day, domain: &str) -> String {
    format!("o/{day}/{domain}")
}

/// What stops a sender round (logged; the round is tried again later).
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("cannot build the report message: {0}")]
    Compose(#[source] std::io::Error),
    #[error("cannot write the report message to the queue: {0}")]
    Write(#[source] std::io::Error),
    #[error("storage task failed: {0}")]
    Join(String),
}

/// Runs blocking queue work off the runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SendError> + Send + 'static,
) -> Result<T, SendError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(SendError::Join(e.to_string())))
}

impl Sender {
    fn meta(&self, day: Day) -> ReportMeta {
        ReportMeta {
            organization: self.config.organization.clone(),
            contact: self.config.contact.clone(),
            submitter: self.submitter.clone(),
            day,
        }
    }

    /// Runs until `shutdown`: prepares due reports and works off the
    /// outbox, once a minute (sooner when something is due).
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            self.round().await;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(60)) => {}
            }
        }
    }

    /// One pass: prepare every due day's reports, then send what is due.
    pub async fn round(&self) {
        if let Err(e) = self.prepare_due().await {
            tracing::warn!(error = %e, "TLS-RPT: cannot prepare reports");
        }
        if let Err(e) = self.send_due().await {
            tracing::warn!(error = %e, "TLS-RPT: cannot send reports");
        }
    }

    /// Turns every count record whose report is due into an outbox record
    /// (or drops it when the domain publishes no TLS-RPT policy).
    pub async fn prepare_due(&self) -> Result<usize, SendError> {
        let now = self.clock.now();
        let (r, q) = (self.recorder.clone(), self.queue.clone());
        blocking(move || Ok(r.persist(&q)?)).await?;
        let q = self.queue.clone();
        let stored = blocking(move || Ok(recorder::stored(&q)?)).await?;
        let mut prepared = 0;
        for (day, domain, counts) in stored {
            if now < due_at(day, &domain, self.config.max_delay) {
                continue;
            }
            if self.prepare_one(day, &domain, &counts, now).await? {
                prepared += 1;
            }
        }
        Ok(prepared)
    }

    /// `Ok(true)` when an outbox record was written.
    async fn prepare_one(
        &self,
        day: Day,
        domain: &str,
        counts: &super::DomainDay,
        now: SystemTime,
    ) -> Result<bool, SendError> {
        let key = recorder::counts_key(day, domain);
        let ruas = match self.lookup_ruas(domain).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                tracing::debug!(%domain, %day, "TLS-RPT: no _smtp._tls policy; counts dropped");
                let q = self.queue.clone();
                blocking(move || Ok(q.state_remove(NS, &key).map(|_| ())?)).await?;
                return Ok(false);
            }
            Err(e) if now < day.end() + GIVE_UP_AFTER => {
                tracing::info!(%domain, %day, error = %e, "TLS-RPT: policy lookup failed; will retry");
                return Ok(false);
            }
            Err(e) => {
                tracing::warn!(%domain, %day, error = %e, "TLS-RPT: policy lookup failing for 24 h; report dropped");
                let q = self.queue.clone();
                blocking(move || Ok(q.state_remove(NS, &key).map(|_| ())?)).await?;
                return Ok(false);
            }
        };
        let meta = self.meta(day);
        let json = report::build(&meta, domain, counts);
        use base64::Engine as _;
        let out = Outgoing {
            day,
            domain: domain.to_string(),
            report_id: meta.report_id(domain),
            gzip: base64::engine::general_purpose::STANDARD.encode(report::gzip(&json)),
            created: secs(now),
            targets: ruas
                .into_iter()
                .map(|rua| Target {
                    rua,
                    done: false,
                    attempts: 0,
                    next_try: 0,
                })
                .collect(),
        };
        let value = serde_json::to_vec(&out).unwrap_or_default();
        let okey = outbox_key(day, domain);
        let q = self.queue.clone();
        blocking(move || {
            q.state_put(NS, &okey, &value)?;
            q.state_remove(NS, &key)?;
            Ok(q.flush()?)
        })
        .await?;
        tracing::info!(%domain, %day, report_id = %out.report_id, "TLS-RPT report prepared");
        Ok(true)
    }

    /// The `rua`s of `domain` (RFC 8460 §3); `Ok(None)`: no usable policy.
    async fn lookup_ruas(&self, domain: &str) -> Result<Option<Vec<Rua>>, crate::dns::DnsError> {
        let name = format!("_smtp._tls.{domain}");
        let answer = self.dns.lookup(&name, RecordType::Txt).await?;
        if !matches!(answer.kind, AnswerKind::Records(_)) {
            return Ok(None);
        }
        let texts: Vec<String> = answer
            .txt()
            .map(|t| String::from_utf8_lossy(&t).into_owned())
            .collect();
        Ok(parse_txt(&texts))
    }

    /// Sends every outbox target that is due.
    pub async fn send_due(&self) -> Result<usize, SendError> {
        let q = self.queue.clone();
        let records = blocking(move || Ok(q.state_scan(NS)?)).await?;
        let mut sent = 0;
        for (key, value) in records {
            if !key.starts_with("o/") {
                continue;
            }
            let Ok(mut out) = serde_json::from_slice::<Outgoing>(&value) else {
                tracing::warn!(%key, "TLS-RPT outbox record unreadable; dropped");
                let q = self.queue.clone();
                blocking(move || Ok(q.state_remove(NS, &key).map(|_| ())?)).await?;
                continue;
            };
            sent += self.send_record(&key, &mut out).await?;
        }
        Ok(sent)
    }

    async fn send_record(&self, key: &str, out: &mut Outgoing) -> Result<usize, SendError> {
        use base64::Engine as _;
        let gzip = base64::engine::general_purpose::STANDARD
            .decode(&out.gzip)
            .unwrap_or_default();
        let mut sent = 0;
        for i in 0..out.targets.len() {
            let now = self.clock.now();
            let t = &out.targets[i];
            if t.done || t.next_try > secs(now) {
                continue;
            }
            let rua = t.rua.clone();
            let (transport, result) = match &rua {
                Rua::Mailto(to) => (TlsRptTransport::Mailto, self.mail(out, to, &gzip).await?),
                Rua::Https(uri) => (
                    TlsRptTransport::Https,
                    self.https(out, uri, &gzip, now).await,
                ),
            };
            let t = &mut out.targets[i];
            t.attempts += 1;
            match result {
                Some(r) => {
                    t.done = true;
                    self.metrics.tls_rpt_report(transport, r);
                    if r == TlsRptResult::Sent {
                        sent += 1;
                    }
                }
                None => t.next_try = secs(now + backoff(t.attempts - 1)),
            }
            self.save(key, out).await?;
        }
        Ok(sent)
    }

    async fn save(&self, key: &str, out: &Outgoing) -> Result<(), SendError> {
        let (q, key) = (self.queue.clone(), key.to_string());
        if out.targets.iter().all(|t| t.done) {
            return blocking(move || {
                q.state_remove(NS, &key)?;
                Ok(q.flush()?)
            })
            .await;
        }
        let value = serde_json::to_vec(out).unwrap_or_default();
        blocking(move || {
            q.state_put(NS, &key, &value)?;
            Ok(q.flush()?)
        })
        .await
    }

    /// Queues the report for `to`; `Skipped` without a DKIM key for
    /// `tls_rpt.from` (RFC 8460 §5.3: reports by mail are signed).
    async fn mail(
        &self,
        out: &Outgoing,
        to: &str,
        gzip: &[u8],
    ) -> Result<Option<TlsRptResult>, SendError> {
        if !self.config.from_signed {
            tracing::warn!(domain = %out.domain, %to,
                "TLS-RPT mailto: report skipped: no [[dkim]] key covers tls_rpt.from");
            return Ok(Some(TlsRptResult::Skipped));
        }
        let mail = super::mail::ReportMail {
            from: &self.config.from,
            to,
            domain: &out.domain,
            submitter: &self.submitter,
            report_id: &out.report_id,
            day: out.day,
            gzip,
        };
        let message = super::mail::compose(&mail).map_err(SendError::Compose)?;
        let signature = match self.signer.sign(&message) {
            Ok(s) if !s.is_empty() => s,
            Ok(_) => {
                tracing::warn!(domain = %out.domain, "TLS-RPT mailto: report skipped: no DKIM key signs it");
                return Ok(Some(TlsRptResult::Skipped));
            }
            Err(e) => {
                tracing::warn!(domain = %out.domain, error = %e, "TLS-RPT report not signed; will retry");
                return Ok(None);
            }
        };
        let (q, from, to) = (self.queue.clone(), self.config.from.clone(), to.to_string());
        let id = blocking(move || {
            use std::io::Write;
            let mut w = q.begin()?;
            w.write_all(&signature).map_err(SendError::Write)?;
            w.write_all(&message).map_err(SendError::Write)?;
            let env = Envelope {
                relay_signed: true,
                tls_report: true,
                ..Envelope::new(from, SystemTime::now())
            };
            let rcpt = RecipientSpec {
                address: to,
                orcpt: None,
                notify: Notify::default(),
            };
            Ok(w.commit(env, vec![rcpt])?)
        })
        .await?;
        tracing::info!(domain = %out.domain, queue_id = %id, report_id = %out.report_id,
            "TLS-RPT report queued for mailto:");
        Ok(Some(TlsRptResult::Sent))
    }

    /// POSTs the report; `None` to try again later.
    async fn https(
        &self,
        out: &Outgoing,
        uri: &str,
        gzip: &[u8],
        now: SystemTime,
    ) -> Option<TlsRptResult> {
        let r = super::https::post(
            self.dns.as_ref(),
            self.tls.clone(),
            uri,
            gzip.to_vec(),
            POST_TIMEOUT,
        )
        .await;
        match r {
            Ok(status) => {
                tracing::info!(domain = %out.domain, %uri, status, report_id = %out.report_id,
                    "TLS-RPT report posted");
                Some(TlsRptResult::Sent)
            }
            Err(e) if secs(now) >= out.created + GIVE_UP_AFTER.as_secs() => {
                tracing::warn!(domain = %out.domain, %uri, error = %e, "TLS-RPT report: given up after 24 h");
                Some(TlsRptResult::Failed)
            }
            Err(e) => {
                tracing::info!(domain = %out.domain, %uri, error = %e, "TLS-RPT report POST failed; will retry");
                None
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "sender_tests.rs"]
mod tests;
