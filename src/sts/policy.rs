//! The two texts of MTA-STS, parsed strictly and without I/O: the
//! `_mta-sts` TXT record (RFC 8461 §3.1) and the policy file (§3.2); and the
//! MX host match (§4.1). Anything that does not follow the grammar is an
//! error: the caller then has no policy (or keeps its cached one), never a
//! half-read one.

use std::fmt;

/// RFC 8461 §3.2: "max_age ... up to 31557600" (about one year).
pub const MAX_AGE_LIMIT: u64 = 31_557_600;

/// Why a TXT record or policy text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("no TXT record starts with v=STSv1")]
    NoRecord,
    #[error("{0} TXT records start with v=STSv1 (RFC 8461 §3.1 wants exactly one)")]
    MultipleRecords(usize),
    #[error("TXT record: {0}")]
    Txt(String),
    #[error("policy line {line}: {reason}")]
    Line { line: usize, reason: String },
    #[error("policy: {0}")]
    Policy(String),
}

/// The `_mta-sts` TXT record's content: the policy id (§3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxtRecord {
    pub id: String,
}

/// Picks and parses the one TXT record that starts with `v=STSv1`
/// (§3.1: others are discarded; more or fewer than one ⇒ no policy). Each
/// item is one record with its strings already joined.
pub fn parse_txt(records: &[Vec<u8>]) -> Result<TxtRecord, PolicyError> {
    let sts: Vec<&[u8]> = records
        .iter()
        .map(Vec::as_slice)
        .filter(|r| starts_with_version(r))
        .collect();
    match sts.as_slice() {
        [] => Err(PolicyError::NoRecord),
        [one] => parse_txt_record(one),
        many => Err(PolicyError::MultipleRecords(many.len())),
    }
}

/// `v=STSv1` followed by the end, white space or `;` (so `v=STSv10` is not one).
fn starts_with_version(record: &[u8]) -> bool {
    record
        .strip_prefix(b"v=STSv1")
        .is_some_and(|rest| matches!(rest.first(), None | Some(b';' | b' ' | b'\t')))
}

/// §3.1: `sts-version 1*(sts-field-delim sts-field) [sts-field-delim]`,
/// the delimiter `*WSP ";" *WSP`; `id` is `1*32(ALPHA / DIGIT)`; extension
/// fields are allowed (and ignored) if well-formed.
fn parse_txt_record(record: &[u8]) -> Result<TxtRecord, PolicyError> {
    let bad = |s: &str| PolicyError::Txt(s.to_string());
    let text = std::str::from_utf8(record).map_err(|_| bad("not ASCII"))?;
    // One trailing delimiter is allowed; any other empty field is not.
    let body = text.trim_end_matches([' ', '\t']);
    let body = body.strip_suffix(';').unwrap_or(body);
    let mut fields = body.split(';').map(|f| f.trim_matches([' ', '\t']));
    if fields.next() != Some("v=STSv1") {
        return Err(bad("must start with v=STSv1"));
    }
    let mut id = None;
    for field in fields {
        let (name, value) = field
            .split_once('=')
            .ok_or_else(|| bad(&format!("field {field:?} has no '='")))?;
        if name == "id" {
            if value.is_empty()
                || value.len() > 32
                || !value.bytes().all(|b| b.is_ascii_alphanumeric())
            {
                return Err(bad(&format!("id {value:?} is not 1-32 letters and digits")));
            }
            // Not a repeated field: the first wins (§3.2's rule, applied alike).
            id.get_or_insert_with(|| value.to_string());
        } else if !is_ext_name(name) || !is_ext_value(value) {
            return Err(bad(&format!("malformed field {field:?}")));
        }
    }
    id.map(|id| TxtRecord { id })
        .ok_or_else(|| bad("no id field"))
}

/// §3.1 `sts-ext-name = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")`.
fn is_ext_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && b[0].is_ascii_alphanumeric()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
}

/// §3.1 `sts-ext-value = 1*(%x21-3A / %x3C / %x3E-7E)`: printable, no `;` or `=`.
fn is_ext_value(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|c| (0x21..=0x7e).contains(&c) && c != b';' && c != b'=')
}

/// `mode` (§5): what a sender does with the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Only matching MX hosts with PKIX-valid TLS; else no delivery.
    Enforce,
    /// Deliver as without a policy; report failures (RFC 8460).
    Testing,
    /// No policy in effect (how a domain withdraws one, §8.3).
    None,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Testing => "testing",
            Mode::None => "none",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `mx` pattern (§3.2, §4.1): a host name, or `*.` plus a domain
/// matching exactly one more leftmost label. Lower case, no trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct MxPattern(String);

impl MxPattern {
    /// §3.2 `sts-policy-mx-value = ["*."] Domain`: only a single leftmost
    /// wildcard label, and the rest a host name of at least two labels.
    pub fn parse(text: &str) -> Result<MxPattern, String> {
        let lower = text.trim_end_matches('.').to_ascii_lowercase();
        let domain = lower.strip_prefix("*.").unwrap_or(&lower);
        if !is_domain(domain) || !domain.contains('.') {
            return Err(format!(
                "mx pattern {text:?} is not a host name or *.domain"
            ));
        }
        Ok(MxPattern(lower))
    }

    /// §4.1: equal ignoring case, or `*.d` and `host` is one label more than `d`.
    pub fn matches(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        match self.0.strip_prefix("*.") {
            None => host == self.0,
            Some(base) => host
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == base),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// LDH labels of 1-63 characters, no leading or trailing hyphen (RFC 5321
/// `Domain`; A-labels for IDNs).
fn is_domain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        })
}

/// A parsed policy (§3.2).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Policy {
    pub mode: Mode,
    pub mx: Vec<MxPattern>,
    /// Seconds the policy may be cached.
    pub max_age: u64,
}

impl Policy {
    /// Whether `host` is an MX host the policy allows (§4.1).
    pub fn mx_matches(&self, host: &str) -> bool {
        self.mx.iter().any(|p| p.matches(host))
    }
}

/// Parses the policy file. Lines end in CRLF or LF (§3.2: senders accept
/// both); `key: value` with `*WSP` after the colon; unknown keys ignored;
/// repeated keys other than `mx` keep the first. `version: STSv1`, a
/// `mode` and a `max_age` ≤ [`MAX_AGE_LIMIT`] are required, and at least
/// one `mx` unless the mode is `none`.
pub fn parse_policy(text: &str) -> Result<Policy, PolicyError> {
    let (mut version, mut mode, mut max_age) = (None, None, None);
    let mut mx = Vec::new();
    for (n, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let err = |reason: String| PolicyError::Line {
            line: n + 1,
            reason,
        };
        if line.is_empty() {
            continue;
        }
        let (key, value) = line
            .split_once(':')
            .ok_or_else(|| err(format!("{line:?} is not \"key: value\"")))?;
        let value = value.trim_matches([' ', '\t']);
        if !is_ext_name(key) {
            return Err(err(format!("bad key {key:?}")));
        }
        if value.is_empty() || value.bytes().any(|c| c.is_ascii_control()) {
            return Err(err(format!("bad value for {key}")));
        }
        match key {
            "version" if version.is_none() => version = Some(value.to_string()),
            "mode" if mode.is_none() => {
                mode = Some(match value {
                    "enforce" => Mode::Enforce,
                    "testing" => Mode::Testing,
                    "none" => Mode::None,
                    other => return Err(err(format!("unknown mode {other:?}"))),
                })
            }
            "max_age" if max_age.is_none() => max_age = Some(parse_max_age(value).map_err(err)?),
            "mx" => mx.push(MxPattern::parse(value).map_err(err)?),
            _ => {}
        }
    }
    let missing = |k: &str| PolicyError::Policy(format!("no {k} field"));
    match version.as_deref() {
        Some("STSv1") => {}
        Some(v) => return Err(PolicyError::Policy(format!("version {v:?} is not STSv1"))),
        None => return Err(missing("version")),
    }
    let mode = mode.ok_or_else(|| missing("mode"))?;
    let max_age = max_age.ok_or_else(|| missing("max_age"))?;
    if mx.is_empty() && mode != Mode::None {
        return Err(missing("mx"));
    }
    Ok(Policy { mode, mx, max_age })
}

/// §3.2 `1*10DIGIT`, at most [`MAX_AGE_LIMIT`].
fn parse_max_age(value: &str) -> Result<u64, String> {
    if value.is_empty() || value.len() > 10 || !value.bytes().all(|c| c.is_ascii_digit()) {
        return Err(format!("max_age {value:?} is not 1-10 digits"));
    }
    let n: u64 = value.parse().map_err(|_| format!("max_age {value:?}"))?;
    if n > MAX_AGE_LIMIT {
        return Err(format!("max_age {n} exceeds {MAX_AGE_LIMIT}"));
    }
    Ok(n)
}

/// The policy's lines as TLS-RPT's `policy-string` wants them (RFC 8460
/// §4.3): each line of the file, without its line ending, empty ones left out.
pub fn policy_strings(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
