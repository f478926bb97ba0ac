//! MIME re-encoding, sans I/O and streaming: what makes an accepted message
//! deliverable as it is (lines within RFC 5322 §2.1.1's 998 octets) and what
//! makes it 7-bit for a peer without 8BITMIME (RFC 6152 §3). A part is only
//! ever re-encoded so that its decoded content is byte-for-byte the same:
//! text as quoted-printable (charset kept), other content as base64, and a
//! part already in base64 or quoted-printable only re-wrapped. Header lines are
//! folded at whitespace (RFC 5322 §2.2.3). What cannot be fixed that way is a
//! [`Refusal`], answered `550 5.6.0` at submission.
//!
//! Whole messages go through [`rewrite`]; streamed ones through a [`Walker`]
//! twice: a scan while they arrive, then [`plan`] and an apply pass.

mod encode;
mod fold;
mod walk;

use std::io::{self, Read, Write};

pub use encode::Action;
pub use fold::{fold_block, Unfoldable, MAX_LINE};
pub use walk::{Cte, PartStats, Report, Walker};

/// What the content must become.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Want {
    /// No line over 998 octets (always, at acceptance).
    pub short_lines: bool,
    /// No 8-bit octet in any body part (for DKIM signing of content a
    /// 7-bit relay must not alter later, RFC 6376 §5.3).
    pub seven_bit: bool,
}

impl Want {
    pub const SHORT_LINES: Want = Want {
        short_lines: true,
        seven_bit: false,
    };
    pub const SEVEN_BIT: Want = Want {
        short_lines: true,
        seven_bit: true,
    };
}

/// Why a message cannot be made deliverable without changing its content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "header field {field} has a line longer than 998 octets with no whitespace to fold at"
    )]
    UnfoldableHeader { field: String },
    #[error("a line longer than 998 octets outside any MIME part (broken multipart structure?)")]
    LongLineOutsidePart,
    #[error("a line longer than 998 octets in a part with Content-Transfer-Encoding {cte}")]
    UnknownEncoding { cte: String },
}

/// The action for every leaf part, or `None` when nothing needs changing.
pub fn plan(report: &Report, want: Want) -> Result<Option<Vec<Action>>, Refusal> {
    if want.short_lines {
        if let Some(u) = &report.unfoldable {
            return Err(Refusal::UnfoldableHeader {
                field: u.field.clone(),
            });
        }
        if report.long_outside {
            return Err(Refusal::LongLineOutsidePart);
        }
    }
    let mut actions = Vec::with_capacity(report.parts.len());
    for p in &report.parts {
        let long = want.short_lines && p.long_lines;
        let fix = long || (want.seven_bit && p.eight_bit);
        actions.push(match &p.cte {
            Cte::Identity if fix && p.text => Action::Qp {
                charset: match (p.eight_bit, p.utf8) {
                    (false, _) => "us-ascii",
                    (true, true) => "utf-8",
                    // RFC 1428: 8-bit text in no declared charset.
                    (true, false) => "unknown-8bit",
                },
            },
            Cte::Identity if fix => Action::Base64,
            Cte::QuotedPrintable if fix => Action::RewrapQp,
            Cte::Base64 if long => Action::RewrapBase64,
            Cte::Other(cte) if long => return Err(Refusal::UnknownEncoding { cte: cte.clone() }),
            _ => Action::Keep,
        });
    }
    let changed = actions.iter().any(|a| *a != Action::Keep);
    Ok((changed || (want.short_lines && report.header_long)).then_some(actions))
}

/// Scans a whole message.
pub fn scan(message: &[u8]) -> Report {
    let mut w = Walker::scan();
    let mut none = Vec::new();
    w.feed(message, &mut none);
    w.finish(&mut none);
    w.into_report()
}

/// `message` as `want` requires: `Ok(None)` when it already is.
pub fn rewrite(message: &[u8], want: Want) -> Result<Option<Vec<u8>>, Refusal> {
    let Some(actions) = plan(&scan(message), want)? else {
        return Ok(None);
    };
    let mut w = Walker::apply(actions);
    let mut out = Vec::with_capacity(message.len() + message.len() / 8);
    w.feed(message, &mut out);
    w.finish(&mut out);
    Ok(Some(out))
}

/// For the DKIM path: the message with every body part 7-bit (and every line
/// within 998 octets), so that a signature made over it survives relays
/// without 8BITMIME; `Ok(None)` when it already is. The delivery-time
/// downgrade then finds nothing to change.
pub fn make_seven_bit_safe(message: &[u8]) -> Result<Option<Vec<u8>>, Refusal> {
    rewrite(message, Want::SEVEN_BIT)
}

/// Streams `src` through an apply pass into `dst` in 64 KiB blocks.
pub fn apply_stream(
    mut src: impl Read,
    actions: Vec<Action>,
    mut dst: impl Write,
) -> io::Result<u64> {
    let mut w = Walker::apply(actions);
    let mut input = vec![0u8; 64 * 1024];
    let mut out = Vec::with_capacity(96 * 1024);
    let mut written = 0u64;
    loop {
        let n = src.read(&mut input)?;
        if n == 0 {
            w.finish(&mut out);
        } else {
            w.feed(&input[..n], &mut out);
        }
        dst.write_all(&out)?;
        written += out.len() as u64;
        out.clear();
        if n == 0 {
            return Ok(written);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "tests.rs"]
mod tests;
