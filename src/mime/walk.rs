//! [`Walker`]: one streaming pass over a message's MIME structure (RFC 2045,
//! RFC 2046 §5.1.1 delimiters, §5.2.1 encapsulated messages). Header sections
//! are parsed with `mail-parser`; bodies are never held — lines pass through in
//! pieces, so memory stays bounded whatever the message size. In scan mode it
//! records what each leaf part holds ([`Report`]); in apply mode it writes the
//! message with each leaf re-encoded as planned ([`Action`]) and over-long
//! header lines folded; in downgrade mode it decides per leaf from its header
//! alone (for the delivery-time 8BITMIME downgrade, which gets one pass).

use mail_parser::{MessageParser, MimeHeaders};

use super::encode::{Action, LeafEncoder};
use super::fold::{fold_block, Unfoldable, MAX_LINE};

/// Lines are held whole up to this length, enough to recognise any boundary
/// delimiter (a boundary is at most 70 characters); longer ones stream
/// through in pieces.
const LINE_HOLD: usize = 1024;
/// A header section larger than this is passed through unparsed.
pub const HEADER_BLOCK_MAX: usize = 256 * 1024;

/// A part's Content-Transfer-Encoding, by what re-encoding can do with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cte {
    /// `7bit`, `8bit`, `binary` or none (RFC 2045 §6.1): the octets are the content.
    Identity,
    Base64,
    QuotedPrintable,
    /// Anything else (`x-uuencode`, …): cannot be re-encoded without changing it.
    Other(String),
}

/// What one leaf part holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartStats {
    pub cte: Cte,
    pub text: bool,
    pub long_lines: bool,
    pub eight_bit: bool,
    /// Valid UTF-8 throughout (for the charset of a part that had none).
    pub utf8: bool,
}

/// What a scan found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Leaf parts in order of appearance.
    pub parts: Vec<PartStats>,
    /// Some header line is over 998 octets and can be folded.
    pub header_long: bool,
    /// The first header line over 998 octets that cannot be folded.
    pub unfoldable: Option<Unfoldable>,
    /// A line over 998 octets outside any leaf part: a preamble, an epilogue,
    /// a multipart without a boundary or an unparsable header section.
    pub long_outside: bool,
    /// Any octet above 127 anywhere.
    pub eight_bit: bool,
    /// Any octet above 127 in a header section (needs SMTPUTF8, RFC 6532).
    pub header_eight_bit: bool,
}

enum Mode {
    Scan,
    Apply(Vec<Action>),
    Downgrade,
}

enum State {
    /// Collecting a header section; `digest` = default type message/rfc822
    /// (RFC 2046 §5.1.5); `top` = an RFC 5322 message (top level or encapsulated).
    Header {
        buf: Vec<u8>,
        digest: bool,
        top: bool,
    },
    Leaf(LeafEncoder),
    /// Preamble, epilogue, or content that could not be parsed: copied.
    Opaque,
}

struct Frame {
    /// `--boundary`.
    delim: Vec<u8>,
    digest: bool,
}

/// The streaming walker; see the module docs.
pub struct Walker {
    mode: Mode,
    parser: MessageParser,
    state: State,
    stack: Vec<Frame>,
    line: Vec<u8>,
    mid_line: bool,
    line_len: usize,
    leaves: usize,
    utf8_carry: Vec<u8>,
    report: Report,
}

impl Walker {
    /// Records what the message holds; writes nothing.
    pub fn scan() -> Walker {
        Walker::new(Mode::Scan)
    }

    /// Writes the message with leaf `i` handled as `actions[i]` (from a scan of
    /// the same bytes) and over-long header lines folded.
    pub fn apply(actions: Vec<Action>) -> Walker {
        Walker::new(Mode::Apply(actions))
    }

    /// Writes the message 7-bit: every leaf part not already base64 or
    /// quoted-printable is encoded, decided from its header alone.
    pub fn downgrade() -> Walker {
        Walker::new(Mode::Downgrade)
    }

    fn new(mode: Mode) -> Walker {
        Walker {
            mode,
            parser: MessageParser::new().with_mime_headers(),
            state: State::Header {
                buf: Vec::new(),
                digest: false,
                top: true,
            },
            stack: Vec::new(),
            line: Vec::new(),
            mid_line: false,
            line_len: 0,
            leaves: 0,
            utf8_carry: Vec::new(),
            report: Report::default(),
        }
    }

    fn scanning(&self) -> bool {
        matches!(self.mode, Mode::Scan)
    }

    /// Feeds message bytes (CRLF lines, any split); output goes to `out`.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        while let Some(i) = input.iter().position(|&b| b == b'\n') {
            self.hold(&input[..i], out);
            if self.line.last() == Some(&b'\r') {
                self.line.pop();
                self.flush_line(true, out);
            } else {
                self.hold(b"\n", out); // a bare LF is content, not a line end
            }
            input = &input[i + 1..];
        }
        self.hold(input, out);
    }

    /// The end of the message.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.line.is_empty() {
            self.flush_line(false, out);
        }
        self.end_entity(true, out);
    }

    /// What a scan found (complete after [`Walker::finish`]).
    pub fn into_report(self) -> Report {
        self.report
    }

    fn hold(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        self.line.extend_from_slice(bytes);
        if self.line.len() > LINE_HOLD {
            // Keep a trailing CR: the LF completing it may come next.
            let keep = usize::from(self.line.last() == Some(&b'\r'));
            let mut line = std::mem::take(&mut self.line);
            let n = line.len() - keep;
            self.piece(&line[..n], !self.mid_line, false, out);
            self.mid_line = true;
            line.drain(..n);
            self.line = line;
        }
    }

    fn flush_line(&mut self, end: bool, out: &mut Vec<u8>) {
        let mut line = std::mem::take(&mut self.line);
        self.piece(&line, !self.mid_line, end, out);
        self.mid_line = !end;
        line.clear();
        self.line = line;
    }

    fn emit(&self, bytes: &[u8], out: &mut Vec<u8>) {
        if !self.scanning() {
            out.extend_from_slice(bytes);
        }
    }

    /// The innermost open multipart whose delimiter `line` is, and whether it
    /// is the close delimiter (RFC 2046 §5.1.1: `--b`, `--b--`, then LWSP).
    fn delimiter(&self, line: &[u8]) -> Option<(usize, bool)> {
        self.stack.iter().enumerate().rev().find_map(|(k, f)| {
            let rest = line.strip_prefix(f.delim.as_slice())?;
            let (close, rest) = match rest.strip_prefix(b"--") {
                Some(r) => (true, r),
                None => (false, rest),
            };
            rest.iter()
                .all(|&b| b == b' ' || b == b'\t')
                .then_some((k, close))
        })
    }

    fn piece(&mut self, bytes: &[u8], start: bool, end: bool, out: &mut Vec<u8>) {
        let high = bytes.iter().any(|&b| b >= 0x80);
        self.report.eight_bit |= high;
        if start && end && bytes.starts_with(b"--") {
            if let Some((k, close)) = self.delimiter(bytes) {
                self.end_entity(false, out);
                self.stack.truncate(k + 1);
                self.state = if close {
                    self.stack.pop();
                    State::Opaque
                } else {
                    State::Header {
                        buf: Vec::new(),
                        digest: self.stack[k].digest,
                        top: false,
                    }
                };
                self.emit(bytes, out);
                self.emit(b"\r\n", out);
                return;
            }
        }
        if start {
            self.line_len = 0;
        }
        self.line_len += bytes.len();
        let long = self.line_len > MAX_LINE;
        let scanning = self.scanning();
        match &mut self.state {
            State::Header { buf, .. } => {
                self.report.header_eight_bit |= high;
                buf.extend_from_slice(bytes);
                if end {
                    buf.extend_from_slice(b"\r\n");
                }
                if start && end && bytes.is_empty() {
                    self.header_done(out);
                } else if buf.len() > HEADER_BLOCK_MAX {
                    let buf = std::mem::take(buf);
                    self.report.long_outside |=
                        buf.split(|&b| b == b'\n').any(|l| l.len() > MAX_LINE + 1);
                    self.emit(&buf, out);
                    self.state = State::Opaque;
                }
            }
            State::Leaf(enc) => {
                if !scanning {
                    enc.piece(bytes, out);
                    if end {
                        enc.line_end(out);
                    }
                    return;
                }
                if let Some(p) = self.report.parts.last_mut() {
                    p.long_lines |= long;
                    p.eight_bit |= high;
                    if p.utf8 && (high || !self.utf8_carry.is_empty()) {
                        p.utf8 = utf8_continues(&mut self.utf8_carry, bytes, end);
                    }
                }
            }
            State::Opaque => {
                self.report.long_outside |= long;
                self.emit(bytes, out);
                if end {
                    self.emit(b"\r\n", out);
                }
            }
        }
    }

    /// A header section is complete: decide what the entity is.
    fn header_done(&mut self, out: &mut Vec<u8>) {
        let State::Header { buf, digest, top } = std::mem::replace(&mut self.state, State::Opaque)
        else {
            return;
        };
        let info = EntityInfo::parse(&self.parser, &buf, digest);
        let block = match fold_block(&buf) {
            Ok(None) => buf,
            Ok(Some(folded)) => {
                self.report.header_long = true;
                folded
            }
            Err(u) => {
                self.report.unfoldable.get_or_insert(u);
                buf
            }
        };
        match info.kind {
            Kind::Multipart(boundary) => {
                self.emit(&block, out);
                if let Some(b) = boundary {
                    self.stack.push(Frame {
                        delim: [b"--".as_slice(), b.as_bytes()].concat(),
                        digest: info.digest,
                    });
                }
            }
            Kind::Message => {
                self.emit(&block, out);
                self.state = State::Header {
                    buf: Vec::new(),
                    digest: false,
                    top: true,
                };
            }
            Kind::Leaf => {
                let index = self.leaves;
                self.leaves += 1;
                let action = match &self.mode {
                    Mode::Scan => {
                        self.report.parts.push(PartStats {
                            cte: info.cte.clone(),
                            text: info.text,
                            long_lines: false,
                            eight_bit: false,
                            utf8: true,
                        });
                        self.utf8_carry.clear();
                        Action::Keep
                    }
                    Mode::Apply(actions) => actions.get(index).copied().unwrap_or(Action::Keep),
                    Mode::Downgrade => info.downgrade_action(),
                };
                match (action.new_cte(), action) {
                    (Some(cte), Action::Qp { charset }) if !info.has_type => {
                        self.emit(&set_cte(&block, cte, Some(charset), top), out)
                    }
                    (Some(cte), _) => self.emit(&set_cte(&block, cte, None, top), out),
                    (None, _) => self.emit(&block, out),
                }
                self.state = State::Leaf(LeafEncoder::new(action));
            }
        }
    }

    /// The current entity ends (a delimiter follows, or the message ends).
    fn end_entity(&mut self, eof: bool, out: &mut Vec<u8>) {
        if matches!(&self.state, State::Header { buf, .. } if !buf.is_empty()) {
            self.header_done(out);
        }
        let scanning = self.scanning();
        if let State::Leaf(enc) = &mut self.state {
            if !scanning {
                enc.finish(eof, out);
            } else if !self.utf8_carry.is_empty() {
                if let Some(p) = self.report.parts.last_mut() {
                    p.utf8 = false;
                }
            }
        }
        self.state = State::Opaque;
    }
}

/// Streaming UTF-8 check: `carry` holds an incomplete sequence between pieces.
fn utf8_continues(carry: &mut Vec<u8>, bytes: &[u8], end: bool) -> bool {
    carry.extend_from_slice(bytes);
    let ok = match std::str::from_utf8(carry) {
        Ok(_) => {
            carry.clear();
            true
        }
        Err(e) if e.error_len().is_none() => {
            carry.drain(..e.valid_up_to());
            true
        }
        Err(_) => false,
    };
    // A sequence cut by a line end is invalid.
    ok && (!end || carry.is_empty())
}

enum Kind {
    Multipart(Option<String>),
    Message,
    Leaf,
}

struct EntityInfo {
    kind: Kind,
    cte: Cte,
    text: bool,
    has_type: bool,
    digest: bool,
}

impl EntityInfo {
    fn parse(parser: &MessageParser, block: &[u8], digest_default: bool) -> EntityInfo {
        let parsed = parser.parse_headers(block);
        let ct = parsed.as_ref().and_then(|m| m.content_type());
        let (ctype, subtype) = match ct {
            Some(ct) => (
                ct.ctype().to_ascii_lowercase(),
                ct.subtype().unwrap_or_default().to_ascii_lowercase(),
            ),
            None if digest_default => ("message".into(), "rfc822".into()),
            None => ("text".into(), "plain".into()),
        };
        let cte = match parsed
            .as_ref()
            .and_then(|m| m.content_transfer_encoding())
            .map(|c| c.trim().to_ascii_lowercase())
            .as_deref()
        {
            None | Some("" | "7bit" | "8bit" | "binary") => Cte::Identity,
            Some("base64") => Cte::Base64,
            Some("quoted-printable") => Cte::QuotedPrintable,
            Some(other) => Cte::Other(other.to_string()),
        };
        let kind = match ctype.as_str() {
            "multipart" => Kind::Multipart(
                ct.and_then(|c| c.attribute("boundary"))
                    .filter(|b| !b.is_empty())
                    .map(str::to_string),
            ),
            // RFC 2046 §5.2.1, RFC 6532 §3.7: an encapsulated message in an
            // identity encoding is walked into; an encoded one is a leaf.
            "message"
                if matches!(subtype.as_str(), "rfc822" | "global") && cte == Cte::Identity =>
            {
                Kind::Message
            }
            _ => Kind::Leaf,
        };
        EntityInfo {
            kind,
            text: ctype == "text" || ctype == "message",
            cte,
            has_type: ct.is_some(),
            digest: ctype == "multipart" && subtype == "digest",
        }
    }

    /// For the delivery-time downgrade: every leaf that may hold 8-bit octets.
    fn downgrade_action(&self) -> Action {
        match self.cte {
            Cte::Identity if self.text => Action::Qp { charset: "utf-8" },
            Cte::Identity => Action::Base64,
            Cte::QuotedPrintable => Action::RewrapQp,
            Cte::Base64 | Cte::Other(_) => Action::Keep,
        }
    }
}

/// The header section with its Content-Transfer-Encoding replaced; a part
/// without Content-Type gets `text/plain; charset=…` (and, at the top of a
/// message, `MIME-Version: 1.0`, RFC 2045 §4) so readers decode it.
fn set_cte(block: &[u8], cte: &str, add_type: Option<&str>, top: bool) -> Vec<u8> {
    let (fields, tail): (&[u8], &[u8]) = if block == b"\r\n" {
        (b"", b"\r\n")
    } else if let Some(f) = block.strip_suffix(b"\r\n\r\n") {
        (&block[..f.len() + 2], b"\r\n")
    } else {
        (block, b"")
    };
    let mut out = Vec::with_capacity(block.len() + 128);
    let mut skipping = false;
    let mut has_version = false;
    for line in fields.split_inclusive(|&b| b == b'\n') {
        if line.first().is_some_and(|&b| b != b' ' && b != b'\t') {
            let name = line.split(|&b| b == b':').next().unwrap_or_default();
            let name = String::from_utf8_lossy(name);
            let name = name.trim();
            skipping = name.eq_ignore_ascii_case("Content-Transfer-Encoding");
            has_version |= name.eq_ignore_ascii_case("MIME-Version");
        }
        if !skipping {
            out.extend_from_slice(line);
        }
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    if let Some(charset) = add_type {
        if top && !has_version {
            out.extend_from_slice(b"MIME-Version: 1.0\r\n");
        }
        out.extend_from_slice(
            format!("Content-Type: text/plain; charset={charset}\r\n").as_bytes(),
        );
    }
    out.extend_from_slice(format!("Content-Transfer-Encoding: {cte}\r\n").as_bytes());
    out.extend_from_slice(tail);
    out
}
