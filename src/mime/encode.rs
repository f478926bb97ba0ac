//! Per-line encoders for one MIME leaf as it streams past: quoted-printable
//! (RFC 2045 §6.7) for text, base64 (§6.8) for everything else, and re-wrapping
//! of a part that is already base64 or quoted-printable but has over-long lines.
//! Each is fed line pieces (without CRLF), told where lines end, and finished
//! when the part ends; the decoded content is exactly the input.

use base64::Engine;

/// RFC 2045 §6.7 (5): encoded lines are at most 76 characters, so 75 plus `=`.
const QP_MAX: usize = 75;
/// RFC 2045 §6.8: 76 characters per line = 57 octets.
const B64_IN: usize = 57;
const B64_LINE: usize = 76;

/// What happens to one leaf part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Copied as it is.
    Keep,
    /// Encoded as quoted-printable; `charset` labels it when it has no Content-Type.
    Qp { charset: &'static str },
    /// Encoded as base64 (a non-text part: its CRLFs are content, RFC 2045 §6.8).
    Base64,
    /// Already base64: only the line breaks move.
    RewrapBase64,
    /// Already quoted-printable: soft breaks are added, stray 8-bit octets escaped.
    RewrapQp,
}

impl Action {
    /// The Content-Transfer-Encoding the part gets, when it changes.
    pub fn new_cte(self) -> Option<&'static str> {
        match self {
            Action::Qp { .. } => Some("quoted-printable"),
            Action::Base64 => Some("base64"),
            _ => None,
        }
    }
}

/// The running encoder of the current leaf.
#[derive(Debug)]
pub enum LeafEncoder {
    Keep,
    Qp(Qp),
    Base64(B64),
    RewrapBase64 { col: usize },
    RewrapQp(QpWrap),
}

impl LeafEncoder {
    pub fn new(action: Action) -> LeafEncoder {
        match action {
            Action::Keep => LeafEncoder::Keep,
            Action::Qp { .. } => LeafEncoder::Qp(Qp::default()),
            Action::Base64 => LeafEncoder::Base64(B64::default()),
            Action::RewrapBase64 => LeafEncoder::RewrapBase64 { col: 0 },
            Action::RewrapQp => LeafEncoder::RewrapQp(QpWrap::default()),
        }
    }

    /// Part of a line (no CRLF in it).
    pub fn piece(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        match self {
            LeafEncoder::Keep => out.extend_from_slice(bytes),
            LeafEncoder::Qp(q) => bytes.iter().for_each(|&b| q.byte(b, out)),
            LeafEncoder::Base64(e) => e.push(bytes, out),
            LeafEncoder::RewrapBase64 { col } => {
                for &b in bytes {
                    if b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=') {
                        out.push(b);
                        *col += 1;
                        if *col == B64_LINE {
                            out.extend_from_slice(b"\r\n");
                            *col = 0;
                        }
                    }
                }
            }
            LeafEncoder::RewrapQp(w) => bytes.iter().for_each(|&b| w.byte(b, out)),
        }
    }

    /// The CRLF ending the current line.
    pub fn line_end(&mut self, out: &mut Vec<u8>) {
        match self {
            LeafEncoder::Keep => out.extend_from_slice(b"\r\n"),
            LeafEncoder::Qp(q) => q.hard_break(out),
            // RFC 2046 §5.1.1: the CRLF before a delimiter belongs to it, so a
            // line end is content only once more content follows.
            LeafEncoder::Base64(e) => e.pending_crlf = true,
            LeafEncoder::RewrapBase64 { .. } => {}
            LeafEncoder::RewrapQp(w) => {
                out.extend_from_slice(b"\r\n");
                *w = QpWrap::default();
            }
        }
    }

    /// The part ends: before a delimiter (`eof == false`) or at the end of
    /// the message, where a pending CRLF is content. Leaves `out` at a line start
    /// unless the part was kept as it is.
    pub fn finish(&mut self, eof: bool, out: &mut Vec<u8>) {
        match self {
            LeafEncoder::Keep => {}
            LeafEncoder::Qp(q) => q.finish(out),
            LeafEncoder::Base64(e) => e.finish(eof, out),
            LeafEncoder::RewrapBase64 { col } => {
                if *col > 0 {
                    out.extend_from_slice(b"\r\n");
                    *col = 0;
                }
            }
            LeafEncoder::RewrapQp(w) => {
                if w.col > 0 {
                    out.extend_from_slice(b"=\r\n");
                    *w = QpWrap::default();
                }
            }
        }
    }
}

fn escape(b: u8, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.extend_from_slice(&[b'=', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
}

/// Quoted-printable of text: CRLF becomes a hard line break.
#[derive(Debug, Default)]
pub struct Qp {
    col: usize,
    /// A space or tab held back: it must be escaped if a hard break follows (§6.7 (3)).
    ws: Option<u8>,
}

impl Qp {
    fn room(&mut self, len: usize, out: &mut Vec<u8>) {
        if self.col + len > QP_MAX {
            out.extend_from_slice(b"=\r\n");
            self.col = 0;
        }
    }

    fn byte(&mut self, b: u8, out: &mut Vec<u8>) {
        if let Some(w) = self.ws.take() {
            self.room(1, out);
            out.push(w);
            self.col += 1;
        }
        if b == b' ' || b == b'\t' {
            self.ws = Some(b);
            return;
        }
        let literal = (33..=126).contains(&b) && b != b'=';
        let at_start = self.col == 0 || self.col + 1 > QP_MAX;
        // A '-' starting a line could complete a boundary delimiter, a '.'
        // alone could end DATA at a careless relay: escape both there.
        if literal && !(at_start && (b == b'-' || b == b'.')) {
            self.room(1, out);
            out.push(b);
            self.col += 1;
        } else {
            self.room(3, out);
            escape(b, out);
            self.col += 3;
        }
    }

    fn hard_break(&mut self, out: &mut Vec<u8>) {
        if let Some(w) = self.ws.take() {
            self.room(3, out);
            escape(w, out);
        }
        out.extend_from_slice(b"\r\n");
        self.col = 0;
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if let Some(w) = self.ws.take() {
            self.room(3, out);
            escape(w, out);
            self.col += 3;
        }
        if self.col > 0 {
            // Content without a final CRLF: a soft break adds nothing to it.
            out.extend_from_slice(b"=\r\n");
            self.col = 0;
        }
    }
}

/// Base64 of arbitrary content, 76 characters per line.
#[derive(Debug, Default)]
pub struct B64 {
    buf: Vec<u8>,
    pending_crlf: bool,
}

impl B64 {
    fn push(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        if std::mem::take(&mut self.pending_crlf) {
            self.buf.extend_from_slice(b"\r\n");
        }
        self.buf.extend_from_slice(bytes);
        let whole = self.buf.len() / B64_IN * B64_IN;
        for line in self.buf[..whole].chunks(B64_IN) {
            b64_line(line, out);
        }
        self.buf.drain(..whole);
    }

    fn finish(&mut self, eof: bool, out: &mut Vec<u8>) {
        if eof && std::mem::take(&mut self.pending_crlf) {
            self.buf.extend_from_slice(b"\r\n");
        }
        self.pending_crlf = false;
        self.push(&[], out);
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            b64_line(&rest, out);
        }
    }
}

fn b64_line(octets: &[u8], out: &mut Vec<u8>) {
    let text = base64::engine::general_purpose::STANDARD.encode(octets);
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Quoted-printable input re-wrapped: an `=XX` escape is never split.
#[derive(Debug, Default)]
pub struct QpWrap {
    col: usize,
    /// Octets of an `=XX` escape still to copy.
    esc: u8,
}

impl QpWrap {
    fn byte(&mut self, b: u8, out: &mut Vec<u8>) {
        if self.esc > 0 {
            self.esc -= 1;
            out.push(b);
            return;
        }
        let len = if b == b'=' || b >= 0x80 { 3 } else { 1 };
        if self.col + len > QP_MAX {
            out.extend_from_slice(b"=\r\n");
            self.col = 0;
        }
        self.col += len;
        if b >= 0x80 {
            escape(b, out);
        } else {
            out.push(b);
            if b == b'=' {
                self.esc = 2;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn run(action: Action, lines: &[&[u8]], eof: bool) -> Vec<u8> {
        let mut e = LeafEncoder::new(action);
        let mut out = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            for piece in l.chunks(7) {
                e.piece(piece, &mut out);
            }
            if i + 1 < lines.len() {
                e.line_end(&mut out);
            }
        }
        e.finish(eof, &mut out);
        out
    }

    /// RFC 2045 §6.7 decoding, for the round trips.
    fn qp_decode(enc: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let text = std::str::from_utf8(enc).unwrap();
        let lines: Vec<&str> = text.split("\r\n").collect();
        for (i, line) in lines.iter().enumerate() {
            let (line, soft) = match line.strip_suffix('=') {
                Some(l) => (l, true),
                None => (*line, false),
            };
            let b = line.as_bytes();
            let mut j = 0;
            while j < b.len() {
                if b[j] == b'=' {
                    out.push(u8::from_str_radix(&line[j + 1..j + 3], 16).unwrap());
                    j += 3;
                } else {
                    out.push(b[j]);
                    j += 1;
                }
            }
            if !soft && i + 1 < lines.len() {
                out.extend_from_slice(b"\r\n");
            }
        }
        out
    }

    #[test]
    fn qp_round_trips_long_8bit_lines_and_trailing_space() {
        let long = "é-x ".repeat(700);
        let lines: Vec<&[u8]> = vec![long.as_bytes(), b"-- tail ", b"", b".", b"end"];
        let out = run(Action::Qp { charset: "utf-8" }, &lines, true);
        assert!(out.is_ascii());
        assert!(out.split(|&b| b == b'\n').all(|l| l.len() <= 77));
        assert_eq!(qp_decode(&out), lines.join(&b"\r\n"[..]));
        assert!(!out.split(|&b| b == b'\n').any(|l| l.starts_with(b"-")));
    }

    #[test]
    fn base64_keeps_crlf_except_before_the_delimiter() {
        let out = run(Action::Base64, &[b"\x00\xffab", b"cd"], false);
        let text: String = String::from_utf8(out).unwrap().replace("\r\n", "");
        let dec = base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap();
        assert_eq!(dec, b"\x00\xffab\r\ncd");
        let at_eof = run(Action::Base64, &[b"ab", b""], true);
        let text = String::from_utf8(at_eof).unwrap().replace("\r\n", "");
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .unwrap(),
            b"ab\r\n"
        );
    }

    #[test]
    fn rewraps_keep_the_encoded_content() {
        let b64 = "QUJD".repeat(500);
        let out = run(Action::RewrapBase64, &[b64.as_bytes()], false);
        assert!(out.split(|&b| b == b'\n').all(|l| l.len() <= 77));
        assert_eq!(String::from_utf8(out).unwrap().replace("\r\n", ""), b64);
        let qp = "a=C3=A9 ".repeat(300);
        let out = run(Action::RewrapQp, &[qp.as_bytes(), b"x"], true);
        assert!(out.split(|&b| b == b'\n').all(|l| l.len() <= 77));
        assert_eq!(qp_decode(&out), qp_decode(format!("{qp}\r\nx").as_bytes()));
    }
}
