//! [`Signer`]: the configured `[[dkim]]` keys, which of them sign a message,
//! and the signing itself — one call every entry point (SMTP now, HTTP and
//! sendmail later) makes on the complete message, after the relay's own
//! header fields are added and before it is stored, so that every delivery
//! attempt sends the same bytes.
//!
//! Key files are re-read when they change (like the TLS certificate). A key
//! whose file changed and does not load is unusable until it does: its
//! domain's mail gets `451 4.3.0` meanwhile (nothing leaves unsigned under a
//! domain configured for signing, SPEC "Submission").

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner};
use tokio_util::sync::CancellationToken;

use super::from::{from_domain, header_end, headers_to_sign, normalize_domain, FromProblem};
use super::key::{self, DkimAlgorithm, KeyConfig, KeyError, KeyRef, LoadedKey};
use crate::metrics::{DkimResult, Label, Metrics};

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("DKIM key {selector}._domainkey.{domain} cannot sign: {reason}")]
    KeyUnavailable {
        domain: String,
        selector: String,
        reason: String,
    },
    #[error("DKIM signing with {selector}._domainkey.{domain} failed: {detail}")]
    Failed {
        domain: String,
        selector: String,
        detail: String,
    },
}

/// What [`Signer::plan`] decided for a header section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// No `[[dkim]]` keys at all.
    Off,
    /// The From: domain has keys: these (indices into the configuration).
    Sign { domain: String, keys: Vec<usize> },
    /// Keys exist, none for this From: domain.
    NoKey { domain: String },
    /// Keys exist, but the From: field names no single domain.
    Unsigned(FromProblem),
}

/// A file's identity as far as change detection goes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp(Option<(SystemTime, u64)>);

fn stamp(path: &std::path::Path) -> Stamp {
    Stamp(
        std::fs::metadata(path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len()))),
    )
}

struct Slot {
    state: RwLock<SlotState>,
}

struct SlotState {
    /// The key, or why its current file does not load.
    key: Result<Arc<LoadedKey>, String>,
    /// The algorithm of the last key that loaded (for the metric when it fails).
    algorithm: DkimAlgorithm,
    seen: Stamp,
}

/// The keys that sign at acceptance. Cheap to share (`Arc`); an empty
/// signer passes every message through untouched.
pub struct Signer {
    configs: Vec<KeyConfig>,
    /// One per config, same order.
    slots: Vec<Slot>,
    metrics: Metrics,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(&self.configs).finish()
    }
}

/// Which keys sign mail from `domain`: those of the most specific configured
/// domain that matches it exactly or, with `subdomains = true`, as a parent.
pub fn matching(keys: &[KeyConfig], domain: &str) -> Vec<usize> {
    let domain = normalize_domain(domain);
    let matches = |k: &KeyConfig| {
        k.domain == domain
            || (k.subdomains
                && domain.len() > k.domain.len()
                && domain.ends_with(&k.domain)
                && domain.as_bytes()[domain.len() - k.domain.len() - 1] == b'.')
    };
    let best = keys
        .iter()
        .filter(|k| matches(k))
        .map(|k| k.domain.len())
        .max();
    keys.iter()
        .enumerate()
        .filter(|(_, k)| Some(k.domain.len()) == best && matches(k))
        .map(|(i, _)| i)
        .collect()
}

impl Signer {
    /// No keys: signs nothing.
    pub fn disabled(metrics: Metrics) -> Signer {
        Signer {
            configs: Vec::new(),
            slots: Vec::new(),
            metrics,
        }
    }

    /// Loads every key; any that does not load stops the start (`serve`
    /// must not run unsigned under a configured domain).
    pub fn load(configs: &[KeyConfig], metrics: Metrics) -> Result<Signer, KeyError> {
        let mut slots = Vec::with_capacity(configs.len());
        for config in configs {
            let seen = stamp(&config.private_key);
            let key = key::load(&config.private_key)?;
            tracing::info!(
                domain = %config.domain,
                selector = %config.selector,
                algorithm = key.info.algorithm.label(),
                bits = key.info.bits,
                subdomains = config.subdomains,
                "DKIM key loaded"
            );
            if let Some(w) = key.info.warning() {
                tracing::warn!(path = %config.private_key.display(), "DKIM: {w}");
            }
            slots.push(Slot {
                state: RwLock::new(SlotState {
                    algorithm: key.info.algorithm,
                    key: Ok(Arc::new(key)),
                    seen,
                }),
            });
        }
        Ok(Signer {
            configs: configs.to_vec(),
            slots,
            metrics,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Decides from the header section alone (no key is touched).
    pub fn plan(&self, header_section: &[u8]) -> Plan {
        if self.slots.is_empty() {
            return Plan::Off;
        }
        match from_domain(header_section) {
            Err(problem) => Plan::Unsigned(problem),
            Ok(domain) => {
                let keys = matching(&self.configs, &domain);
                if keys.is_empty() {
                    Plan::NoKey { domain }
                } else {
                    Plan::Sign { domain, keys }
                }
            }
        }
    }

    /// The `DKIM-Signature:` fields (CRLF-terminated, to be put before the
    /// message) for a complete message; empty when no key applies.
    /// Relaxed/relaxed (RFC 6376 §3.4), `t=`, no `l=`.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let section = &message[..header_end(message).unwrap_or(message.len())];
        let Plan::Sign { keys, .. } = self.plan(section) else {
            return Ok(Vec::new());
        };
        let headers = headers_to_sign(section);
        let mut out = Vec::new();
        for i in keys {
            let (key, algorithm) = self.slots[i].current();
            let cfg = &self.configs[i];
            let key = match key {
                Ok(k) => k,
                Err(reason) => {
                    self.metrics.dkim_signature(algorithm, DkimResult::Failed);
                    return Err(SignError::KeyUnavailable {
                        domain: cfg.domain.clone(),
                        selector: cfg.selector.clone(),
                        reason,
                    });
                }
            };
            let signed = DkimSigner::from_key(KeyRef(&key))
                .domain(cfg.domain.clone())
                .selector(cfg.selector.clone())
                .headers(headers.iter().copied())
                .header_canonicalization(Canonicalization::Relaxed)
                .body_canonicalization(Canonicalization::Relaxed)
                .sign(message);
            match signed {
                Ok(sig) => {
                    self.metrics.dkim_signature(algorithm, DkimResult::Signed);
                    out.extend_from_slice(sig.to_header().as_bytes());
                }
                Err(e) => {
                    self.metrics.dkim_signature(algorithm, DkimResult::Failed);
                    return Err(SignError::Failed {
                        domain: cfg.domain.clone(),
                        selector: cfg.selector.clone(),
                        detail: e.to_string(),
                    });
                }
            }
        }
        Ok(out)
    }

    /// Re-reads every key file whose modification time or size changed.
    /// Returns how many keys were reloaded successfully.
    pub fn reload_if_changed(&self) -> usize {
        let mut reloaded = 0;
        for (slot, config) in self.slots.iter().zip(&self.configs) {
            let path = &config.private_key;
            let now = stamp(path);
            if now == slot.read().seen {
                continue;
            }
            let loaded = key::load(path);
            let mut state = slot.write();
            state.seen = now;
            match loaded {
                Ok(key) => {
                    tracing::info!(path = %path.display(), selector = %config.selector,
                        domain = %config.domain, algorithm = key.info.algorithm.label(), "DKIM key reloaded");
                    state.algorithm = key.info.algorithm;
                    state.key = Ok(Arc::new(key));
                    reloaded += 1;
                }
                Err(e) => {
                    tracing::error!(error = %e, domain = %config.domain,
                        "DKIM key file changed and does not load: mail from this domain gets 451 until it does");
                    state.key = Err(e.to_string());
                }
            }
        }
        reloaded
    }

    /// The key files, for logs and tests.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.configs.iter().map(|c| c.private_key.clone()).collect()
    }
}

impl Slot {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, SlotState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, SlotState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn current(&self) -> (Result<Arc<LoadedKey>, String>, DkimAlgorithm) {
        let s = self.read();
        (s.key.clone(), s.algorithm)
    }
}

/// Polls the key files every `every` until `shutdown`.
pub async fn watch(signer: Arc<Signer>, every: Duration, shutdown: CancellationToken) {
    if signer.is_empty() {
        return;
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let s = signer.clone();
        let _ = tokio::task::spawn_blocking(move || s.reload_if_changed()).await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "signer_tests.rs"]
mod tests;
