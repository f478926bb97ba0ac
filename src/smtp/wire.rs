//! The SMTP wire of the submission side, sans I/O: command parsing on top of
//! the `smtp-proto` grammar and command-line framing. Replies are values in
//! [`super::reply`]. No sockets here; everything is plain bytes in, values
//! out, so it is table-tested.

use smtp_proto::{Error as ProtoError, Request};

use super::Reply;

/// Longest command line accepted, CRLF included. RFC 5321 §4.5.3.1.4 asks for
/// at least 512; RFC 4954 §4 lets an AUTH line reach 12288 octets, and SMTP
/// extensions make lines longer, so be as generous as Postfix (2048) and then
/// some. Longer lines get `500 5.5.6`.
pub const MAX_COMMAND_LINE: usize = 4096;

/// Why a command line could not be turned into a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("unknown command")]
    Unknown,
    #[error("syntax error: {0}")]
    Syntax(String),
    #[error("unsupported parameter {0}")]
    UnsupportedParameter(String),
    #[error("command line is not valid UTF-8")]
    NotUtf8,
}

impl CommandError {
    /// The reply this error gets on the wire.
    pub fn reply(&self) -> Reply {
        match self {
            CommandError::Unknown => Reply::unknown_command(),
            CommandError::Syntax(s) => Reply::syntax(format!("Syntax error: {s}")),
            CommandError::UnsupportedParameter(p) => Reply::param_not_supported(p),
            CommandError::NotUtf8 => Reply::syntax("Syntax error: command is not valid UTF-8"),
        }
    }
}

/// Parses one complete command line (with its line ending) using the
/// `smtp-proto` grammar. The caller frames lines, so the parser can never run
/// out of sync with the byte stream.
pub fn parse_command(line: &[u8]) -> Result<Request<String>, CommandError> {
    // RFC 6531 §3.3: 8-bit octets in commands are UTF-8; anything else is garbage.
    if std::str::from_utf8(line).is_err() {
        return Err(CommandError::NotUtf8);
    }
    let mut owned;
    let line = if line.ends_with(b"\n") {
        line
    } else {
        owned = line.to_vec();
        owned.extend_from_slice(b"\r\n");
        &owned[..]
    };
    match Request::parse(&mut line.iter()) {
        Ok(req) => Ok(req.into_owned()),
        Err(ProtoError::UnknownCommand) => Err(CommandError::Unknown),
        Err(ProtoError::InvalidSenderAddress) => {
            Err(CommandError::Syntax("invalid sender address".into()))
        }
        Err(ProtoError::InvalidRecipientAddress) => {
            Err(CommandError::Syntax("invalid recipient address".into()))
        }
        Err(ProtoError::SyntaxError { syntax }) => {
            Err(CommandError::Syntax(format!("expected {syntax}")))
        }
        Err(ProtoError::InvalidParameter { param }) => {
            Err(CommandError::Syntax(format!("invalid {param} parameter")))
        }
        Err(ProtoError::UnsupportedParameter { param }) => {
            Err(CommandError::UnsupportedParameter(param))
        }
        Err(e) => Err(CommandError::Syntax(e.to_string())),
    }
}

/// One framed input line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A complete line, line ending included.
    Complete(Vec<u8>),
    /// A line longer than [`MAX_COMMAND_LINE`]; its bytes up to the next LF
    /// are discarded so the session stays in sync. Reported once per line.
    TooLong,
}

/// Frames command lines out of a byte buffer, enforcing the line limit. LF
/// ends a line (a lone LF in a command is tolerated, as every MTA does; the
/// strict CRLF rule matters inside DATA, not here).
#[derive(Debug, Default)]
pub struct LineReader {
    discarding: bool,
}

impl LineReader {
    /// Takes the next line out of `buf` (consuming it), or `None` when more
    /// bytes are needed.
    pub fn next_line(&mut self, buf: &mut bytes::BytesMut) -> Option<Line> {
        loop {
            match buf.iter().position(|&b| b == b'\n') {
                Some(pos) => {
                    let line = buf.split_to(pos + 1);
                    if self.discarding {
                        self.discarding = false;
                        continue;
                    }
                    if line.len() > MAX_COMMAND_LINE {
                        return Some(Line::TooLong);
                    }
                    return Some(Line::Complete(line.to_vec()));
                }
                None if buf.len() > MAX_COMMAND_LINE || (self.discarding && !buf.is_empty()) => {
                    buf.clear();
                    if self.discarding {
                        return None;
                    }
                    self.discarding = true;
                    return Some(Line::TooLong);
                }
                None => return None,
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands_and_parameters() {
        let r = parse_command(
            b"MAIL FROM:<a@b.example> SIZE=100 BODY=8BITMIME RET=HDRS ENVID=x+2By\r\n",
        )
        .unwrap();
        match r {
            Request::Mail { from } => {
                assert_eq!(from.address, "a@b.example");
                assert_eq!(from.size, 100);
                assert_ne!(from.flags & smtp_proto::MAIL_BODY_8BITMIME, 0);
                assert_ne!(from.flags & smtp_proto::MAIL_RET_HDRS, 0);
                assert_eq!(from.env_id.as_deref(), Some("x+y"));
            }
            other => panic!("{other:?}"),
        }
        let r = parse_command(
            b"RCPT TO:<c@d.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;c@d.example\r\n",
        )
        .unwrap();
        match r {
            Request::Rcpt { to } => {
                assert_eq!(to.orcpt.as_deref(), Some("c@d.example"));
                assert_ne!(to.flags & smtp_proto::RCPT_NOTIFY_SUCCESS, 0);
                assert_eq!(to.flags & smtp_proto::RCPT_NOTIFY_DELAY, 0);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_command(b"BDAT 12 LAST\r\n").unwrap(),
            Request::Bdat {
                chunk_size: 12,
                is_last: true
            }
        );
        assert_eq!(parse_command(b"QUIT").unwrap(), Request::Quit);
    }

    #[test]
    fn line_reader_frames_and_limits() {
        let mut r = LineReader::default();
        let mut buf = bytes::BytesMut::from(&b"NOOP\r\nQUIT\r\nRS"[..]);
        assert_eq!(
            r.next_line(&mut buf),
            Some(Line::Complete(b"NOOP\r\n".to_vec()))
        );
        assert_eq!(
            r.next_line(&mut buf),
            Some(Line::Complete(b"QUIT\r\n".to_vec()))
        );
        assert_eq!(r.next_line(&mut buf), None);
        assert_eq!(&buf[..], b"RS");
        // An over-long line: reported once, discarded to its end, then back in sync.
        let mut buf = bytes::BytesMut::from(vec![b'x'; MAX_COMMAND_LINE + 10].as_slice());
        assert_eq!(r.next_line(&mut buf), Some(Line::TooLong));
        buf.extend_from_slice(&[b'y'; 100]);
        assert_eq!(r.next_line(&mut buf), None);
        buf.extend_from_slice(b"zz\r\nNOOP\r\n");
        assert_eq!(
            r.next_line(&mut buf),
            Some(Line::Complete(b"NOOP\r\n".to_vec()))
        );
        // Long line whose LF already arrived.
        let mut long = vec![b'a'; MAX_COMMAND_LINE + 1];
        long.extend_from_slice(b"\r\nRSET\r\n");
        let mut buf = bytes::BytesMut::from(long.as_slice());
        assert_eq!(r.next_line(&mut buf), Some(Line::TooLong));
        assert_eq!(
            r.next_line(&mut buf),
            Some(Line::Complete(b"RSET\r\n".to_vec()))
        );
    }

    #[test]
    fn errors_map_to_replies() {
        assert_eq!(parse_command(b"FOO\r\n").unwrap_err().reply().code, 500);
        assert_eq!(
            parse_command(b"MAIL FROM:<a@b> XFOO=1\r\n")
                .unwrap_err()
                .reply()
                .code,
            555
        );
        assert_eq!(
            parse_command(b"MAIL TO:<a@b>\r\n")
                .unwrap_err()
                .reply()
                .code,
            501
        );
        assert_eq!(
            parse_command(b"NOOP \xff\xfe\r\n").unwrap_err(),
            CommandError::NotUtf8
        );
        assert_eq!(
            parse_command(b"RCPT TO:<a@b> NOTIFY=BOGUS\r\n")
                .unwrap_err()
                .reply()
                .code,
            501
        );
    }

    proptest::proptest! {
        /// The third-party grammar must never panic on client bytes.
        #[test]
        fn parse_command_never_panics(line in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = parse_command(&line);
        }

        #[test]
        fn parse_command_never_panics_on_near_misses(
            line in proptest::string::string_regex("(MAIL FROM|RCPT TO|BDAT|AUTH|EHLO)[:<> =@,;+0-9A-Za-z\"\\\\.\u{80}-\u{ff}-]{0,80}").unwrap()
        ) {
            let _ = parse_command(line.as_bytes());
        }
    }
}
