//! The message body on the wire (sans-I/O): strict CRLF, RFC 5321 §4.5.2
//! dot-stuffing for DATA, and the line-length limit.
//!
//! Decision on over-long lines: a body line longer than 998 octets (RFC 5322
//! §2.1.1, RFC 5321 §4.5.3.1.6) is never sent. The encoder stops with
//! [`BodyError::LineTooLong`]; the client then drops the connection *without*
//! the terminating dot (or the `BDAT … LAST` chunk), so the peer discards the
//! partial message, and the outcome is a permanent `5.6.0` bounce: retrying
//! cannot change the content, and folding it would break signatures.
//! Bare CR or LF (which submission already refuses) are treated the same way:
//! the client never emits them.

/// RFC 5322 §2.1.1: at most 998 characters per line, excluding CRLF.
pub const MAX_LINE: usize = 998;

/// Why a body cannot be sent as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("line {line} is longer than {MAX_LINE} octets (RFC 5322 §2.1.1)")]
    LineTooLong { line: u64 },
    #[error("bare CR on line {line} (only CRLF may end a line)")]
    BareCr { line: u64 },
    #[error("bare LF on line {line} (only CRLF may end a line)")]
    BareLf { line: u64 },
}

/// Turns body bytes into wire bytes, chunk by chunk, so a body of any size
/// streams through a fixed buffer.
#[derive(Debug, Clone)]
pub struct BodyEncoder {
    dot_stuff: bool,
    at_line_start: bool,
    pending_cr: bool,
    line_len: usize,
    line: u64,
}

impl BodyEncoder {
    /// For DATA: lines starting with `.` get another `.` (RFC 5321 §4.5.2).
    pub fn for_data() -> BodyEncoder {
        BodyEncoder::new(true)
    }

    /// For BDAT: octets are counted, not stuffed (RFC 3030 §2).
    pub fn for_bdat() -> BodyEncoder {
        BodyEncoder::new(false)
    }

    fn new(dot_stuff: bool) -> BodyEncoder {
        BodyEncoder {
            dot_stuff,
            at_line_start: true,
            pending_cr: false,
            line_len: 0,
            line: 1,
        }
    }

    /// Appends the wire form of `input` to `out`.
    pub fn encode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), BodyError> {
        out.reserve(input.len() + input.len() / 64);
        for &b in input {
            if self.pending_cr {
                if b != b'\n' {
                    return Err(BodyError::BareCr { line: self.line });
                }
                out.extend_from_slice(b"\r\n");
                self.pending_cr = false;
                self.at_line_start = true;
                self.line_len = 0;
                self.line += 1;
                continue;
            }
            match b {
                b'\r' => self.pending_cr = true,
                b'\n' => return Err(BodyError::BareLf { line: self.line }),
                _ => {
                    if self.at_line_start && self.dot_stuff && b == b'.' {
                        out.push(b'.');
                    }
                    self.at_line_start = false;
                    self.line_len += 1;
                    if self.line_len > MAX_LINE {
                        return Err(BodyError::LineTooLong { line: self.line });
                    }
                    out.push(b);
                }
            }
        }
        Ok(())
    }

    /// Ends the body: a missing final CRLF is added (the terminator must
    /// follow a CRLF, RFC 5321 §4.1.1.4), then `.` CRLF for DATA.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), BodyError> {
        if self.pending_cr {
            return Err(BodyError::BareCr { line: self.line });
        }
        if !self.at_line_start {
            out.extend_from_slice(b"\r\n");
            self.at_line_start = true;
        }
        if self.dot_stuff {
            out.extend_from_slice(b".\r\n");
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn data(input: &[u8], chunk: usize) -> Result<Vec<u8>, BodyError> {
        let mut enc = BodyEncoder::for_data();
        let mut out = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            enc.encode(piece, &mut out)?;
        }
        enc.finish(&mut out)?;
        Ok(out)
    }

    #[test]
    fn dot_stuffing_across_chunk_boundaries() {
        let input = b".hidden\r\nok\r\n..two\r\n.\r\nend.\r\n";
        let want = b"..hidden\r\nok\r\n...two\r\n..\r\nend.\r\n.\r\n".to_vec();
        for chunk in [1, 2, 3, 5, 100] {
            assert_eq!(data(input, chunk).unwrap(), want, "chunk {chunk}");
        }
    }

    #[test]
    fn missing_final_crlf_is_added_and_empty_body_is_just_the_dot() {
        assert_eq!(data(b"a\r\nb", 4).unwrap(), b"a\r\nb\r\n.\r\n");
        assert_eq!(data(b"", 4).unwrap(), b".\r\n");
        let mut enc = BodyEncoder::for_bdat();
        let mut out = Vec::new();
        enc.encode(b".x\r\nlast", &mut out).unwrap();
        enc.finish(&mut out).unwrap();
        assert_eq!(out, b".x\r\nlast\r\n");
    }

    #[test]
    fn bare_line_endings_are_refused() {
        assert_eq!(data(b"a\nb\r\n", 3), Err(BodyError::BareLf { line: 1 }));
        assert_eq!(
            data(b"ok\r\na\rb\r\n", 1),
            Err(BodyError::BareCr { line: 2 })
        );
        assert_eq!(data(b"a\r", 1), Err(BodyError::BareCr { line: 1 }));
    }

    #[test]
    fn line_limit_is_998_not_counting_the_stuffed_dot() {
        let ok = format!(".{}\r\n", "x".repeat(MAX_LINE - 1));
        let out = data(ok.as_bytes(), 100).unwrap();
        assert_eq!(out.len(), ok.len() + 1 + 3);
        let long = format!("fine\r\n{}\r\n", "x".repeat(MAX_LINE + 1));
        assert_eq!(
            data(long.as_bytes(), 7),
            Err(BodyError::LineTooLong { line: 2 })
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn line() -> impl Strategy<Value = Vec<u8>> {
        // Any octets but CR/LF, often starting with dots, up to the limit.
        (
            0usize..3,
            proptest::collection::vec(
                any::<u8>().prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n'),
                0..40,
            ),
        )
            .prop_map(|(dots, rest)| [vec![b'.'; dots], rest].concat())
    }

    proptest! {
        /// Whatever the body and however it is chunked, the wire form ends
        /// exactly once with CRLF.CRLF, unstuffs to the body, and has only CRLF.
        #[test]
        fn data_transparency(lines in proptest::collection::vec(line(), 0..30), cut in 1usize..50) {
            let mut body = Vec::new();
            for l in &lines {
                body.extend_from_slice(l);
                body.extend_from_slice(b"\r\n");
            }
            let mut enc = BodyEncoder::for_data();
            let mut wire = Vec::new();
            for piece in body.chunks(cut) {
                enc.encode(piece, &mut wire).unwrap();
            }
            enc.finish(&mut wire).unwrap();
            prop_assert!(wire.ends_with(b".\r\n"));
            let framed = [b"\r\n".as_slice(), &wire].concat();
            let first_end = framed.windows(5).position(|w| w == b"\r\n.\r\n").unwrap();
            prop_assert_eq!(first_end + 5, framed.len(), "terminator appears early");
            for (i, b) in wire.iter().enumerate() {
                if *b == b'\n' { prop_assert!(i > 0 && wire[i - 1] == b'\r'); }
                if *b == b'\r' { prop_assert!(wire.get(i + 1) == Some(&b'\n')); }
            }
            let mut unstuffed = Vec::new();
            for l in wire[..wire.len() - 3].split_inclusive(|b| *b == b'\n') {
                unstuffed.extend_from_slice(l.strip_prefix(b".").unwrap_or(l));
            }
            prop_assert_eq!(unstuffed, body);
        }
    }
}
