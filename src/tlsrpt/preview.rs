//! `danerelay tls-rpt preview` and `GET /api/tls-rpt/preview`: the reports
//! a day's counts would make, exactly as [`super::report::build`] makes them
//! for sending (durable counts plus, in a running relay, those not yet
//! persisted). Nothing is sent and nothing changes.

use std::sync::Arc;

use danerelay_queue::{Queue, QueueError};
use serde_json::Value;

use super::day::Day;
use super::recorder::{counts_for, Recorder};
use super::report::{build, ReportMeta};
use crate::config::Config;

/// Who the reports are from; with the recorder of a running relay.
#[derive(Clone)]
pub struct Source {
    pub organization: String,
    pub contact: String,
    pub submitter: String,
    pub recorder: Option<Arc<Recorder>>,
}

impl Source {
    pub fn new(config: &Config, recorder: Option<Arc<Recorder>>) -> Source {
        Source {
            organization: config.tls_rpt.organization.clone(),
            contact: config.tls_rpt.contact.clone(),
            submitter: config.hostname.clone(),
            recorder,
        }
    }

    /// The reports for `day`, one per domain (only `domain`'s if given),
    /// sorted by domain. Blocking (reads the queue database).
    pub fn reports(
        &self,
        queue: &Queue,
        day: Day,
        domain: Option<&str>,
    ) -> Result<Vec<Value>, QueueError> {
        let meta = ReportMeta {
            organization: self.organization.clone(),
            contact: self.contact.clone(),
            submitter: self.submitter.clone(),
            day,
        };
        let wanted = domain.map(|d| d.trim_end_matches('.').to_ascii_lowercase());
        Ok(counts_for(queue, self.recorder.as_deref(), day)?
            .into_iter()
            .filter(|(d, _)| wanted.as_deref().is_none_or(|w| w == d))
            .map(|(d, counts)| build(&meta, &d, &counts))
            .collect())
    }
}
