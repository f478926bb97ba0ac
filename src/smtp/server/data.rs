//! Message content readers, sans I/O: [`DataReader`] for DATA (RFC 5321
//! §4.5.2 dot-unstuffing, end only at `<CRLF>.<CRLF>`) and [`ChunkChecker`]
//! for BDAT (RFC 3030, no stuffing). Both flag any CR or LF that is not part
//! of a CRLF pair — the SMTP smuggling defence (RFC 5321 §2.3.8: bare CR/LF
//! must not be treated as line endings, and we refuse them outright with
//! `550 5.6.0` once the real end of data has been read) — and stop emitting
//! bytes once the size limit is passed, while still reading to the real end so
//! the session stays in sync.

/// How a finished message looked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ContentStatus {
    /// Octets of content (after unstuffing) seen, counted past the limit too.
    pub octets: u64,
    pub too_large: bool,
    pub bare_line_ending: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataState {
    /// After a CRLF (or at the very start).
    LineStart,
    /// A `.` at line start, not yet emitted.
    Dot,
    /// `.` CR at line start.
    DotCr,
    Mid,
    /// A CR not yet emitted, waiting to see whether LF follows.
    Cr,
}

/// DATA content: feed raw socket bytes, receive unstuffed message bytes.
#[derive(Debug)]
pub struct DataReader {
    state: DataState,
    limit: u64,
    status: ContentStatus,
}

impl DataReader {
    pub fn new(limit: u64) -> Self {
        Self {
            state: DataState::LineStart,
            limit,
            status: ContentStatus::default(),
        }
    }

    pub fn status(&self) -> ContentStatus {
        self.status
    }

    /// Stores content up to the limit exactly, so what is kept never depends
    /// on how the bytes were split into reads (found by the `data_reader`
    /// fuzz target: a run crossing the limit used to be dropped whole).
    fn emit(&mut self, out: &mut Vec<u8>, bytes: &[u8]) {
        let before = self.status.octets;
        self.status.octets = before.saturating_add(bytes.len() as u64);
        if self.status.octets > self.limit {
            self.status.too_large = true;
        }
        out.extend_from_slice(&bytes[..room(self.limit, before, bytes.len())]);
    }

    /// Consumes bytes of `input`, appending content to `out`. Returns
    /// `Some(consumed)` when the terminating `.CRLF` was reached (bytes after
    /// it are the next commands and are not consumed), `None` when all of
    /// `input` was consumed and more is needed.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Option<usize> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                DataState::LineStart if b == b'.' => self.state = DataState::Dot,
                DataState::LineStart => {
                    self.state = DataState::Mid;
                    continue; // reprocess as the first byte of a line
                }
                DataState::Dot if b == b'\r' => self.state = DataState::DotCr,
                DataState::Dot => {
                    // §4.5.2: a leading period is removed; `b` starts the line.
                    self.state = DataState::Mid;
                    continue;
                }
                DataState::DotCr if b == b'\n' => {
                    self.state = DataState::LineStart;
                    return Some(i + 1);
                }
                DataState::DotCr => {
                    // ".\r" + not LF: a stuffed line holding a bare CR.
                    self.status.bare_line_ending = true;
                    self.emit(out, b"\r");
                    self.state = DataState::Mid;
                    continue;
                }
                DataState::Mid => {
                    let rest = &input[i..];
                    let run = rest
                        .iter()
                        .position(|&c| c == b'\r' || c == b'\n')
                        .unwrap_or(rest.len());
                    if run > 0 {
                        self.emit(out, &rest[..run]);
                        i += run;
                        continue;
                    }
                    if b == b'\r' {
                        self.state = DataState::Cr;
                    } else {
                        // A bare LF never starts a line: "\n.\r\n" does not end DATA.
                        self.status.bare_line_ending = true;
                        self.emit(out, b"\n");
                    }
                }
                DataState::Cr if b == b'\n' => {
                    self.emit(out, b"\r\n");
                    self.state = DataState::LineStart;
                }
                DataState::Cr => {
                    self.status.bare_line_ending = true;
                    self.emit(out, b"\r");
                    if b != b'\r' {
                        self.state = DataState::Mid;
                        continue;
                    }
                }
            }
            i += 1;
        }
        None
    }
}

/// How many of `len` new octets still fit under `limit` after `before`.
fn room(limit: u64, before: u64, len: usize) -> usize {
    usize::try_from(limit.saturating_sub(before)).map_or(len, |r| r.min(len))
}

/// BDAT content: counts, limits and checks line endings across chunk
/// boundaries. Chunks carry the message verbatim (RFC 3030 §2: no stuffing).
#[derive(Debug)]
pub struct ChunkChecker {
    pending_cr: bool,
    limit: u64,
    status: ContentStatus,
}

impl ChunkChecker {
    pub fn new(limit: u64) -> Self {
        Self {
            pending_cr: false,
            limit,
            status: ContentStatus::default(),
        }
    }

    /// Checks `bytes` and returns the part to store: never more than the
    /// limit in total, whatever the chunking.
    pub fn feed<'a>(&mut self, bytes: &'a [u8]) -> &'a [u8] {
        for &b in bytes {
            match (self.pending_cr, b) {
                (true, b'\n') => self.pending_cr = false,
                (true, b'\r') => self.status.bare_line_ending = true,
                (true, _) => {
                    self.status.bare_line_ending = true;
                    self.pending_cr = false;
                }
                (false, b'\r') => self.pending_cr = true,
                (false, b'\n') => self.status.bare_line_ending = true,
                (false, _) => {}
            }
        }
        let before = self.status.octets;
        self.status.octets = before.saturating_add(bytes.len() as u64);
        if self.status.octets > self.limit {
            self.status.too_large = true;
        }
        &bytes[..room(self.limit, before, bytes.len())]
    }

    /// The status at BDAT LAST (a dangling CR at the very end is bare).
    pub fn finish(&mut self) -> ContentStatus {
        if self.pending_cr {
            self.status.bare_line_ending = true;
        }
        self.status
    }

    pub fn status(&self) -> ContentStatus {
        self.status
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Feeds `parts` one by one; returns (content, consumed-of-last-part, status).
    fn run(parts: &[&[u8]], limit: u64) -> (Vec<u8>, Option<usize>, ContentStatus) {
        let mut r = DataReader::new(limit);
        let mut out = Vec::new();
        let mut end = None;
        for p in parts {
            end = r.feed(p, &mut out);
            if end.is_some() {
                break;
            }
        }
        (out, end, r.status())
    }

    #[test]
    fn unstuffs_and_ends_only_at_crlf_dot_crlf() {
        let (out, end, st) = run(
            &[b"Subject: x\r\n\r\n..leading\r\n.x\r\nend\r\n.\r\nQUIT\r\n"],
            1000,
        );
        assert_eq!(out, b"Subject: x\r\n\r\n.leading\r\nx\r\nend\r\n");
        assert_eq!(
            end,
            Some(b"Subject: x\r\n\r\n..leading\r\n.x\r\nend\r\n.\r\n".len())
        );
        assert_eq!(
            st,
            ContentStatus {
                octets: out.len() as u64,
                too_large: false,
                bare_line_ending: false
            }
        );
    }

    #[test]
    fn empty_message_and_split_terminator() {
        assert_eq!(
            run(&[b".\r\n"], 10),
            (vec![], Some(3), ContentStatus::default())
        );
        // The terminator split across every possible boundary.
        let msg: &[u8] = b"a\r\n.\r\n";
        for cut in 1..msg.len() {
            let (out, end, _) = run(&[&msg[..cut], &msg[cut..]], 100);
            assert_eq!(out, b"a\r\n", "cut at {cut}");
            assert_eq!(end, Some(msg.len() - cut));
        }
    }

    #[test]
    fn bare_lf_and_cr_smuggling_attempts_do_not_end_data() {
        for smuggle in [
            &b"\n.\n"[..],
            b"\n.\r\n",
            b"\r.\r\n",
            b"\r\n.\n",
            b"\r\n.\r\r\n",
            b"\r.\r",
        ] {
            let mut input = b"body".to_vec();
            input.extend_from_slice(smuggle);
            input.extend_from_slice(
                b"MAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\nDATA\r\nforged\r\n.\r\n",
            );
            let (out, end, st) = run(&[&input], 1000);
            assert_eq!(end, Some(input.len()), "{smuggle:?} ended early");
            assert!(st.bare_line_ending, "{smuggle:?} not flagged");
            assert!(out.ends_with(b"forged\r\n"));
        }
    }

    #[test]
    fn eight_bit_and_utf8_pass_through_untouched() {
        let mut body = "Subject: grüße\r\n\r\n\u{1F600} \u{00e9}"
            .as_bytes()
            .to_vec();
        body.extend_from_slice(b"\xff\x80-not-utf8-ok\r\n");
        let mut input = body.clone();
        input.extend_from_slice(b".\r\n");
        let (out, _, st) = run(&[&input], 1000);
        assert_eq!(out, body);
        assert!(!st.bare_line_ending);
    }

    #[test]
    fn over_limit_stops_storing_but_reads_to_the_end() {
        let (out, end, st) = run(&[b"0123456789\r\n", b"0123456789\r\n.\r\nNOOP\r\n"], 15);
        assert!(st.too_large);
        assert_eq!(st.octets, 24);
        assert!(out.len() <= 15);
        assert_eq!(end, Some(b"0123456789\r\n.\r\n".len()));
    }

    #[test]
    fn chunk_checker_spans_chunks() {
        let mut c = ChunkChecker::new(100);
        assert_eq!(c.feed(b"a\r"), b"a\r");
        c.feed(b"\nb\r\n");
        assert!(!c.finish().bare_line_ending);
        let mut c = ChunkChecker::new(100);
        c.feed(b"a\r");
        c.feed(b"b");
        assert!(c.finish().bare_line_ending);
        let mut c = ChunkChecker::new(100);
        c.feed(b"a\r");
        assert!(c.finish().bare_line_ending, "dangling CR at the end");
        let mut c = ChunkChecker::new(100);
        c.feed(b"a\nb");
        assert!(c.finish().bare_line_ending);
        let mut c = ChunkChecker::new(4);
        assert_eq!(c.feed(b"abcd"), b"abcd");
        assert_eq!(c.feed(b"e"), b"");
        assert!(c.finish().too_large);
        let mut c = ChunkChecker::new(4);
        assert_eq!(c.feed(b"abc"), b"abc");
        assert_eq!(c.feed(b"def"), b"d");
        assert!(c.finish().too_large);
    }

    /// Regression (fuzz `data_reader`): a run crossing the limit kept a
    /// different prefix whole than split.
    #[test]
    fn over_limit_prefix_does_not_depend_on_the_split() {
        let body = [b"ab\r\n".as_slice(), &[b'x'; 20], b"\r\n.\r\n"].concat();
        let whole = run(&[&body], 10);
        for cut in 0..body.len() {
            let split = run(&[&body[..cut], &body[cut..]], 10);
            assert_eq!(split.0, whole.0, "cut {cut}");
            assert_eq!(split.2, whole.2);
        }
        assert_eq!(whole.0, b"ab\r\nxxxxxx");
        assert!(whole.2.too_large);
    }

    proptest::proptest! {
        /// Any bytes, cut anywhere: never a panic, same result as one piece,
        /// and never past the first `CRLF.CRLF`-style end.
        #[test]
        fn data_reader_is_split_invariant(
            body in proptest::collection::vec(proptest::prop_oneof![
                proptest::strategy::Just(b'\r'), proptest::strategy::Just(b'\n'),
                proptest::strategy::Just(b'.'), proptest::num::u8::ANY], 0..300),
            cut in 0usize..300,
        ) {
            let whole = run(&[&body], 200);
            let cut = cut.min(body.len());
            let mut r = DataReader::new(200);
            let mut out = Vec::new();
            let first = r.feed(&body[..cut], &mut out);
            let end = match first {
                Some(n) => Some(n),
                None => r.feed(&body[cut..], &mut out).map(|n| n + cut),
            };
            proptest::prop_assert_eq!(&whole.0, &out);
            proptest::prop_assert_eq!(whole.1, end);
            proptest::prop_assert_eq!(whole.2, r.status());
            if let Some(n) = end {
                proptest::prop_assert!(body[..n].ends_with(b".\r\n"));
            }
        }
    }
}
