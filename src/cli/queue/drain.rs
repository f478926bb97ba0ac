//! `danerelay queue drain --to HOST:PORT`: starts the drain in the running
//! relay (admin API `POST /api/drain`) and follows it, printing the counts as
//! they change, until it is done. `--stop` ends the draining state.
//! Credentials: `--user` with the password from `--password-file` or
//! `DANERELAY_DRAIN_PASSWORD`.

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use hyper::Method;

use super::client::{AdminApiError, AdminClient};
use crate::cli::exit::Exit;
use crate::drain::DrainStatus;
use crate::http::drain_api::DrainRequest;

/// The drain's own flags.
#[derive(Debug, Clone, clap::Args)]
pub struct DrainArgs {
    /// The relay to hand the queue to (another replica or the Service), HOST:PORT.
    #[arg(long, value_name = "HOST:PORT", required_unless_present = "stop")]
    pub to: Option<String>,
    /// AUTH as this relay account (`relay = true` there); without it the
    /// other relay must trust this one's network.
    #[arg(long, value_name = "EMAIL")]
    pub user: Option<String>,
    /// File whose first line is the password of --user.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<std::path::PathBuf>,
    /// PEM trust anchors for the other relay's certificate (a path on the relay's machine).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<String>,
    /// Start it and return without following it.
    #[arg(long)]
    pub no_wait: bool,
    /// Leave the draining state: deliver and accept mail again.
    #[arg(long, conflicts_with_all = ["to", "no_wait"])]
    pub stop: bool,
}

fn password(args: &DrainArgs) -> Result<Option<String>, String> {
    if args.user.is_none() {
        return Ok(None);
    }
    if let Some(path) = &args.password_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--password-file {}: {e}", path.display()))?;
        return Ok(Some(text.lines().next().unwrap_or("").to_string()));
    }
    std::env::var("DANERELAY_DRAIN_PASSWORD")
        .map(Some)
        .map_err(|_| "--user needs --password-file or DANERELAY_DRAIN_PASSWORD".to_string())
}

fn line(s: &DrainStatus) -> String {
    format!(
        "{}: handed over {}, kept {}, remaining {}",
        s.state, s.handed_over, s.refused, s.remaining
    )
}

/// Runs the drain command; the exit code says whether everything left.
pub async fn run(
    client: &AdminClient,
    args: DrainArgs,
    out: &mut dyn Write,
) -> Result<Exit, AdminApiError> {
    if args.stop {
        let (s, _): (DrainStatus, _) = client.json(Method::DELETE, "/api/drain").await?;
        let _ = writeln!(
            out,
            "drain {}: delivering and accepting mail again",
            s.state
        );
        return Ok(Exit::OK);
    }
    let password = password(&args).map_err(AdminApiError::Request)?;
    let req = DrainRequest {
        to: args.to.clone().unwrap_or_default(),
        user: args.user.clone(),
        password,
        ca_file: args.ca_file.clone(),
    };
    let body = serde_json::to_vec(&req).map_err(|e| AdminApiError::Request(e.to_string()))?;
    let (mut s, _): (DrainStatus, _) = client
        .json_with(Method::POST, "/api/drain", Some(Bytes::from(body)))
        .await?;
    let _ = writeln!(
        out,
        "draining to {}: {} message(s) queued",
        req.to, s.remaining
    );
    if args.no_wait {
        return Ok(Exit::OK);
    }
    let mut last = String::new();
    while s.state == "running" {
        let now = line(&s);
        if now != last {
            let _ = writeln!(out, "{now}");
            last = now;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        s = client.json(Method::GET, "/api/drain").await?.0;
    }
    let _ = writeln!(out, "{}", line(&s));
    for p in &s.problems {
        let _ = writeln!(out, "kept {p}");
    }
    if let Some(e) = &s.error {
        let _ = writeln!(out, "error: {e}");
    }
    Ok(match (s.state.as_str(), s.remaining) {
        ("done", 0) => Exit::OK,
        // Kept messages or a failed drain: run it again (it resumes).
        _ => Exit::TEMP_FAIL,
    })
}
