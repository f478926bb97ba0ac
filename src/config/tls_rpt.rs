//! `[tls_rpt]`: RFC 8460 aggregate reports (sending side). The raw table,
//! its validation (every error with its key path) and the typed section.
//! Empty strings take their documented defaults from `hostname` here, so
//! the rest of the relay never sees an unresolved value.

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use crate::dkim::key::KeyConfig;

/// `[tls_rpt]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTlsRpt {
    pub enabled: bool,
    pub organization: String,
    pub contact: String,
    pub from: String,
}

impl Default for RawTlsRpt {
    fn default() -> Self {
        RawTlsRpt {
            enabled: true,
            organization: String::new(),
            contact: String::new(),
            from: String::new(),
        }
    }
}

/// The validated `[tls_rpt]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsRptConfig {
    pub enabled: bool,
    /// RFC 8460 §4.4 `organization-name`.
    pub organization: String,
    /// RFC 8460 §4.4 `contact-info`.
    pub contact: String,
    /// Envelope and `From:` address of reports sent by mail.
    pub from: String,
    /// Whether a `[[dkim]]` key covers `from`'s domain: without one,
    /// `mailto:` reports are skipped (RFC 8460 §5.3 wants them signed).
    pub from_signed: bool,
    /// Longest random delay after the UTC day ends before its reports go
    /// out (RFC 8460 §4.1 asks senders to spread them). Not a file key:
    /// one hour in production, changed by tests only.
    pub max_delay: Duration,
    /// How often recorded counts are written to the queue database: the
    /// most a crash (not a clean shutdown) can lose. Not a file key.
    pub persist_every: Duration,
    /// Roots trusted for `https:` report endpoints besides the Mozilla
    /// ones. Not a file key: tests point it at their CA.
    pub extra_roots: Vec<rustls_pki_types::CertificateDer<'static>>,
}

impl TlsRptConfig {
    /// The defaults for `hostname` with no `[tls_rpt]` table.
    pub fn defaults(hostname: &str) -> TlsRptConfig {
        TlsRptConfig {
            enabled: true,
            organization: hostname.to_string(),
            contact: format!("postmaster@{hostname}"),
            from: format!("noreply-smtp-tls-reporting@{hostname}"),
            from_signed: false,
            max_delay: Duration::from_secs(3600),
            persist_every: Duration::from_secs(5),
            extra_roots: Vec::new(),
        }
    }
}

fn problem(path: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        path: path.to_string(),
        message: message.into(),
    }
}

/// `local@domain` with a host-name domain (reports go out from it).
fn address_domain(address: &str) -> Option<&str> {
    let (local, domain) = address.rsplit_once('@')?;
    (!local.is_empty()
        && !local.contains(|c: char| c.is_whitespace() || c == '<' || c == '>')
        && super::is_hostname(domain))
    .then_some(domain)
}

/// Validates `[tls_rpt]`; `dkim` are the already validated signing keys.
pub(super) fn validate(
    raw: RawTlsRpt,
    hostname: &str,
    dkim: &[KeyConfig],
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) -> TlsRptConfig {
    let mut c = TlsRptConfig::defaults(hostname);
    c.enabled = raw.enabled;
    if !raw.organization.trim().is_empty() {
        c.organization = raw.organization.trim().to_string();
    }
    if !raw.contact.trim().is_empty() {
        c.contact = raw.contact.trim().to_string();
    }
    if c.organization.chars().any(char::is_control) {
        errors.push(problem(
            "tls_rpt.organization",
            "contains control characters",
        ));
    }
    if c.contact.chars().any(char::is_control) {
        errors.push(problem("tls_rpt.contact", "contains control characters"));
    }
    if !raw.from.trim().is_empty() {
        c.from = raw.from.trim().to_string();
    }
    match address_domain(&c.from) {
        // A defaulted address under an invalid hostname: `hostname` already says so.
        None if raw.from.trim().is_empty() => {}
        None => errors.push(problem(
            "tls_rpt.from",
            format!("{:?} is not an email address (local@domain)", c.from),
        )),
        Some(domain) => {
            c.from_signed = !crate::dkim::signer::matching(dkim, domain).is_empty();
            if c.enabled && !c.from_signed {
                warnings.push(problem(
                    "tls_rpt.from",
                    format!(
                        "no [[dkim]] key covers {domain}: TLS-RPT reports to mailto: \
                         addresses will not be sent (RFC 8460 §5.3 wants them signed); \
                         https: reports still are"
                    ),
                ));
            }
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        raw: RawTlsRpt,
        dkim: &[KeyConfig],
    ) -> (TlsRptConfig, Vec<ConfigError>, Vec<ConfigError>) {
        let (mut errors, mut warnings) = (Vec::new(), Vec::new());
        let c = validate(raw, "relay.test", dkim, &mut errors, &mut warnings);
        (c, errors, warnings)
    }

    #[test]
    fn empty_values_take_their_defaults_from_the_hostname() {
        let (c, errors, warnings) = run(RawTlsRpt::default(), &[]);
        assert!(errors.is_empty());
        assert_eq!(c.organization, "relay.test");
        assert_eq!(c.contact, "postmaster@relay.test");
        assert_eq!(c.from, "noreply-smtp-tls-reporting@relay.test");
        assert!(!c.from_signed);
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].path, "tls_rpt.from");
    }

    #[test]
    fn a_dkim_key_for_the_from_domain_silences_the_warning() {
        let key = KeyConfig {
            domain: "example.com".into(),
            selector: "s".into(),
            private_key: "/nonexistent".into(),
            subdomains: true,
        };
        let raw = RawTlsRpt {
            from: "tlsrpt@reports.example.com".into(),
            ..RawTlsRpt::default()
        };
        let (c, errors, warnings) = run(raw, &[key]);
        assert!(errors.is_empty() && warnings.is_empty(), "{warnings:?}");
        assert!(c.from_signed);
    }

    #[test]
    fn a_bad_from_is_an_error_with_its_key_path() {
        let raw = RawTlsRpt {
            from: "not an address".into(),
            ..RawTlsRpt::default()
        };
        let (_, errors, _) = run(raw, &[]);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].path, "tls_rpt.from");
    }

    #[test]
    fn disabled_reports_do_not_warn() {
        let raw = RawTlsRpt {
            enabled: false,
            ..RawTlsRpt::default()
        };
        let (c, errors, warnings) = run(raw, &[]);
        assert!(!c.enabled && errors.is_empty() && warnings.is_empty());
    }
}
