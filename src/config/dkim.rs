//! `[[dkim]]`: the raw tables and their validation. Each key file is loaded
//! and trial-signed here, so `check-config` reports an unusable key with its
//! key path (`dkim[0].private_key: …`); a file that does not exist yet is a
//! warning, as for the other secrets (Kubernetes mounts them later).

use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;
use crate::dkim::key::{self, KeyConfig};

/// One `[[dkim]]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDkim {
    pub domain: String,
    pub selector: String,
    pub private_key: String,
    pub subdomains: bool,
}

fn problem(path: String, message: impl Into<String>) -> ConfigError {
    ConfigError {
        path,
        message: message.into(),
    }
}

/// Validates every `[[dkim]]` table; problems go to `errors` and `warnings`.
pub(super) fn validate(
    raw: Vec<RawDkim>,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) -> Vec<KeyConfig> {
    let mut out: Vec<KeyConfig> = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let at = |key: &str| format!("dkim[{i}].{key}");
        let domain = r.domain.trim_end_matches('.').to_ascii_lowercase();
        if domain.is_empty() {
            errors.push(problem(at("domain"), "missing (e.g. \"example.com\")"));
        } else if !super::is_hostname(&domain) {
            errors.push(problem(
                at("domain"),
                format!("{:?} is not a domain name", r.domain),
            ));
        }
        if r.selector.is_empty() {
            errors.push(problem(at("selector"), "missing (e.g. \"s2026\")"));
        } else if !super::is_hostname(&r.selector) {
            errors.push(problem(
                at("selector"),
                format!(
                    "{:?} is not a selector (letters, digits, hyphens; dots between labels)",
                    r.selector
                ),
            ));
        }
        if let Some(j) = out
            .iter()
            .position(|o| o.domain == domain && o.selector.eq_ignore_ascii_case(&r.selector))
        {
            errors.push(problem(
                at("selector"),
                format!("{domain} selector {} is already dkim[{j}]", r.selector),
            ));
        }
        if r.private_key.is_empty() {
            errors.push(problem(
                at("private_key"),
                "missing (a PEM file: `danerelay dkim keygen` writes one)",
            ));
        } else {
            match key::load(std::path::Path::new(&r.private_key)) {
                Ok(k) => {
                    if let Some(w) = k.info.warning() {
                        warnings.push(problem(
                            at("private_key"),
                            format!("{}: {w}", r.private_key),
                        ));
                    }
                }
                Err(e) if e.is_missing() => warnings.push(problem(
                    at("private_key"),
                    format!("{e} (yet); serve needs it"),
                )),
                Err(e) => errors.push(problem(at("private_key"), e.to_string())),
            }
        }
        out.push(KeyConfig {
            domain,
            selector: r.selector,
            private_key: PathBuf::from(r.private_key),
            subdomains: r.subdomains,
        });
    }
    out
}
