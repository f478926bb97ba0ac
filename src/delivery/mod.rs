//! The outbound side: routing (MX → candidate hosts), one attempt, the one
//! outcome type and its mapping, retry math, and DSNs.
//!
//! Assembly: [`scheduler::Scheduler`] leases due messages and runs
//! [`attempt::Engine::deliver`] per destination; an attempt opens
//! [`session`]s with TLS per the DANE decision; [`report`] records outcomes
//! and enqueues DSNs; [`logline`] is the per-recipient log line;
//! [`tls_check`] is `danerelay tls-check` on the same code.

pub mod attempt;
pub mod clock;
pub mod decision;
pub mod dsn;
pub mod logline;
pub mod mailbox;
pub mod metered;
pub mod outcome;
pub mod report;
pub mod retry;
pub mod reuse;
pub mod routing;
pub mod scheduler;
pub mod session;
pub mod site;
pub mod tls_check;
pub mod tls_report;

use std::sync::Arc;

use crate::config::Config;
use crate::dns::DnsLookup;
use crate::metrics::Metrics;

/// The scheduler as configured: `[delivery]` → [`attempt::EngineOptions`],
/// `delivery.concurrency`/`per_destination` → caps, `shutdown_grace`,
/// `[queue] retry/max_age/delay_warning` → the delay-warning policy,
/// `hostname` → the DSN `Reporting-MTA`, `[mta_sts]` → MTA-STS with its
/// cache in `queue`. Lookups are counted in `danerelay_dns_lookups_total`.
pub fn scheduler(
    config: &Config,
    queue: danerelay_queue::Queue,
    dns: Arc<dyn DnsLookup>,
    metrics: Metrics,
    tls_rpt: Option<Arc<crate::tlsrpt::Recorder>>,
) -> Result<scheduler::Scheduler, crate::sts::StsError> {
    let dns: Arc<dyn DnsLookup> = Arc::new(metered::MeteredDns::new(dns, metrics.clone()));
    let mut options = attempt::EngineOptions::from_config(&config.delivery);
    options.sts = crate::sts::Sts::from_config(
        &config.mta_sts,
        dns.clone(),
        Some(queue.clone()),
        metrics.clone(),
    )?;
    let engine = attempt::Engine {
        dns,
        options,
        metrics,
        tls_rpt,
    };
    let options = scheduler::SchedulerOptions {
        concurrency: config.delivery.concurrency,
        per_destination: config.delivery.per_destination,
        grace: config.shutdown_grace,
        report: report::ReportOptions {
            reporting_mta: config.hostname.clone(),
            retry: retry::RetryPolicy::new(
                config.queue.retry.clone(),
                config.queue.max_age,
                config.queue.delay_warning,
            ),
        },
    };
    Ok(scheduler::Scheduler::new(queue, engine, options))
}
