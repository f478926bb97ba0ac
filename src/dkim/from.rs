//! Sans-I/O header work for signing: the one domain of the From: field (the
//! DMARC identifier, RFC 7489 §3.1.1) and the list of header fields to sign,
//! over-signing the ones a forger would add (RFC 6376 §5.4.2, §8.15).

use mail_parser::{HeaderName, MessageParser};

/// Header fields signed when present (RFC 6376 §5.4.1's recommendation,
/// plus RFC 8058 §3.3's List-Unsubscribe-Post).
pub const SIGNED: &[&str] = &[
    "From",
    "Sender",
    "Reply-To",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Content-Disposition",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

/// Listed once more than present (or once when absent), so that an
/// instance added in transit breaks the signature (RFC 6376 §5.4.2).
pub const OVERSIGNED: &[&str] = &["From", "To", "Subject", "Date"];

/// Why a message is not signed although keys are configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromProblem {
    /// No From: field at all.
    Missing,
    /// More than one From: field (RFC 5322 §3.6 allows exactly one).
    SeveralFields(usize),
    /// A From: field without any mailbox (e.g. an empty group).
    NoAddress,
    /// Mailboxes in more than one domain: no single signing domain.
    SeveralDomains,
}

impl std::fmt::Display for FromProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FromProblem::Missing => f.write_str("no From: field"),
            FromProblem::SeveralFields(n) => write!(f, "{n} From: fields"),
            FromProblem::NoAddress => f.write_str("From: holds no address"),
            FromProblem::SeveralDomains => f.write_str("From: holds addresses in several domains"),
        }
    }
}

/// The end of the header section: the offset just past its last CRLF (the
/// blank line follows), or `None` when `message` has no blank line yet.
pub fn header_end(message: &[u8]) -> Option<usize> {
    if message.starts_with(b"\r\n") {
        return Some(0);
    }
    message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 2)
}

/// Lower-case, without a trailing dot.
pub fn normalize_domain(domain: &str) -> String {
    domain.trim_end_matches('.').to_ascii_lowercase()
}

/// The domain of the From: field: exactly one field, with one or more
/// mailboxes that all share one domain.
pub fn from_domain(header_section: &[u8]) -> Result<String, FromProblem> {
    let Some(msg) = MessageParser::new().parse_headers(header_section) else {
        return Err(FromProblem::Missing);
    };
    let fields: Vec<_> = msg.header_values(HeaderName::From).collect();
    let value = match fields.as_slice() {
        [] => return Err(FromProblem::Missing),
        [one] => *one,
        more => return Err(FromProblem::SeveralFields(more.len())),
    };
    let Some(address) = value.as_address() else {
        return Err(FromProblem::NoAddress);
    };
    let mut domain: Option<String> = None;
    for addr in address.iter() {
        let Some(d) = addr
            .address()
            .and_then(|a| a.rsplit_once('@'))
            .map(|(_, d)| normalize_domain(d))
            .filter(|d| !d.is_empty())
        else {
            return Err(FromProblem::NoAddress);
        };
        match &domain {
            None => domain = Some(d),
            Some(seen) if *seen == d => {}
            Some(_) => return Err(FromProblem::SeveralDomains),
        }
    }
    domain.ok_or(FromProblem::NoAddress)
}

/// The names of the header fields in `header_section`, unfolded (continuation
/// lines are not fields).
fn field_names(header_section: &[u8]) -> impl Iterator<Item = &[u8]> {
    header_section
        .split(|&b| b == b'\n')
        .filter(|l| {
            l.first()
                .is_some_and(|c| !matches!(c, b' ' | b'\t' | b'\r'))
        })
        .filter_map(|l| {
            let colon = l.iter().position(|&b| b == b':')?;
            Some(l[..colon].trim_ascii_end())
        })
}

/// The `h=` request for mail-auth: each [`SIGNED`] name present in the
/// section once (mail-auth signs every instance of a listed name), then each
/// [`OVERSIGNED`] name once more (mail-auth lists a name that has no further
/// instance as a null instance: a later addition breaks the signature).
pub fn headers_to_sign(header_section: &[u8]) -> Vec<&'static str> {
    let names: Vec<&[u8]> = field_names(header_section).collect();
    let mut list: Vec<&'static str> = SIGNED
        .iter()
        .filter(|s| names.iter().any(|n| n.eq_ignore_ascii_case(s.as_bytes())))
        .copied()
        .collect();
    list.extend_from_slice(OVERSIGNED);
    list
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_from_domain() {
        let d = |h: &str| from_domain(h.as_bytes());
        assert_eq!(d("From: a@Example.COM\r\n"), Ok("example.com".into()));
        assert_eq!(
            d("Subject: x\r\nFrom: \"Doe, Jane\" (comment) <jane@mail.example.org.>\r\n"),
            Ok("mail.example.org".into())
        );
        assert_eq!(
            d("From:\r\n =?utf-8?q?J=C3=BCrgen?= <j@example.net>\r\n"),
            Ok("example.net".into()),
            "folded, encoded word"
        );
        assert_eq!(
            d("From: a@example.com, b@EXAMPLE.com\r\n"),
            Ok("example.com".into()),
            "several mailboxes of one domain"
        );
        assert_eq!(d("To: a@example.com\r\n"), Err(FromProblem::Missing));
        assert_eq!(
            d("From: a@example.com\r\nFrom: b@example.com\r\n"),
            Err(FromProblem::SeveralFields(2))
        );
        assert_eq!(
            d("From: a@example.com, b@example.org\r\n"),
            Err(FromProblem::SeveralDomains)
        );
        assert_eq!(d("From: undisclosed:;\r\n"), Err(FromProblem::NoAddress));
        assert_eq!(d("From: just text\r\n"), Err(FromProblem::NoAddress));
    }

    #[test]
    fn header_end_finds_the_blank_line() {
        assert_eq!(header_end(b"A: 1\r\nB: 2\r\n\r\nbody"), Some(12));
        assert_eq!(header_end(b"\r\nbody"), Some(0));
        assert_eq!(header_end(b"A: 1\r\n"), None);
    }

    #[test]
    fn signs_present_fields_and_oversigns_the_forgeable_ones() {
        let h = b"Received: x\r\nfrom: a@b\r\nSubject: s\r\n folded To: no\r\nCc: c@d\r\nX-Mailer: m\r\nTo: t@u\r\nTo: v@w\r\n";
        assert_eq!(
            headers_to_sign(h),
            vec!["From", "To", "Cc", "Subject", "From", "To", "Subject", "Date"]
        );
    }
}
