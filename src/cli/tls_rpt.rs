//! `danerelay tls-rpt preview [--domain D] [--date YYYY-MM-DD] [--config
//! FILE]`: prints the TLS-RPT reports (RFC 8460 §4.4 JSON, one document per
//! policy domain) that the counts of a UTC day (default yesterday) make,
//! without sending. Asks the running relay's admin API (it holds the queue
//! database); when no relay answers, reads the queue database itself.

use std::io::Write;
use std::time::SystemTime;

use hyper::Method;

use super::config::Warnings;
use super::exit::Exit;
use super::queue::client::{AdminApiError, AdminClient};
use super::queue::ApiArgs;
use crate::tlsrpt::preview::Source;
use crate::tlsrpt::Day;

/// `danerelay tls-rpt …`
#[derive(Debug, Clone, clap::Subcommand)]
pub enum TlsRptCommand {
    /// Print the reports that would be sent for a UTC day, without sending.
    Preview(PreviewArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct PreviewArgs {
    /// Only this policy domain.
    #[arg(long, value_name = "D")]
    pub domain: Option<String>,
    /// The UTC day (YYYY-MM-DD); default yesterday.
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub date: Option<String>,
    #[command(flatten)]
    pub api: ApiArgs,
}

pub fn run(cmd: TlsRptCommand) -> Exit {
    let TlsRptCommand::Preview(args) = cmd;
    let day = match args.date.as_deref() {
        None => Day::of(SystemTime::now()).prev(),
        Some(text) => match Day::parse(text) {
            Some(d) => d,
            None => {
                eprintln!("tls-rpt preview: --date {text:?} is not YYYY-MM-DD");
                return Exit::USAGE;
            }
        },
    };
    let config = match args.api.config.load_or_exit(Warnings::Plain) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if !config.tls_rpt.enabled {
        eprintln!("tls-rpt preview: tls_rpt.enabled = false: nothing is counted");
        return Exit::OK;
    }
    let client = AdminClient::new(
        args.api.api.unwrap_or(config.http.address),
        args.api.token.clone().or(config.http.admin_token.clone()),
    );
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tls-rpt preview: cannot start the async runtime: {e}");
            return Exit::SOFTWARE;
        }
    };
    let mut path = format!("/api/tls-rpt/preview?date={day}");
    if let Some(d) = &args.domain {
        path.push_str("&domain=");
        path.push_str(&super::queue::client::encode(d));
    }
    let answer = runtime.block_on(client.json::<Vec<serde_json::Value>>(Method::GET, &path));
    let reports = match answer {
        Ok((reports, _)) => reports,
        Err(AdminApiError::Connect { .. }) => {
            match from_database(&config, day, args.domain.as_deref()) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!(
                        "tls-rpt preview: no relay answers at {} and {e}",
                        client.address
                    );
                    return Exit::UNAVAILABLE;
                }
            }
        }
        Err(e) => {
            eprintln!("tls-rpt preview: {e}");
            return Exit::UNAVAILABLE;
        }
    };
    print(&reports, day)
}

/// No relay running: the counts straight from the queue database.
fn from_database(
    config: &crate::config::Config,
    day: Day,
    domain: Option<&str>,
) -> Result<Vec<serde_json::Value>, String> {
    let path = &config.queue.path;
    if !path.exists() {
        return Ok(Vec::new());
    }
    let queue = danerelay_queue::Queue::open(path, crate::queue_options(&config.queue))
        .map_err(|e| format!("cannot open the queue at {}: {e}", path.display()))?;
    Source::new(config, None)
        .reports(&queue, day, domain)
        .map_err(|e| e.to_string())
}

fn print(reports: &[serde_json::Value], day: Day) -> Exit {
    if reports.is_empty() {
        eprintln!("tls-rpt preview: no sessions counted for {day}");
        return Exit::OK;
    }
    let mut out = std::io::stdout().lock();
    for r in reports {
        let text = serde_json::to_string_pretty(r).unwrap_or_default();
        if writeln!(out, "{text}").is_err() {
            return Exit::IO;
        }
    }
    Exit::OK
}
