//! Shared test support: locating real peers (unbound, knotd, Postfix, Python,
//! swaks) and the rule for when one is missing.

use std::path::PathBuf;

/// Finds `tool` on PATH (or in /usr/sbin, /sbin). When it is missing the test
/// fails under `CI=true` — CI installs every peer, so a missing one is a broken
/// pipeline, never a reason to report success. Outside CI the caller skips,
/// loudly, so a newcomer without the peers can still run the rest.
pub fn require_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from));
    if let Some(found) = dirs.into_iter().map(|d| d.join(tool)).find(|p| p.is_file()) {
        return Some(found);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{tool} is required under CI=true but is not installed (.ci/run installs it)");
    }
    eprintln!("SKIPPED: {tool} is not installed; run .ci/run or install it (this is a failure under CI=true)");
    None
}

pub mod dnsenv;
