//! The SMTP wire, sans I/O: replies as values ([`Reply`] with one named
//! constructor per reply the server sends) and command parsing on top of the
//! `smtp-proto` grammar. No sockets here; everything is plain bytes in, values
//! out, so it is table-tested.

use std::borrow::Cow;
use std::fmt;

use smtp_proto::{Error as ProtoError, Request};

/// Longest command line accepted, CRLF included. RFC 5321 §4.5.3.1.4 asks for
/// at least 512; RFC 4954 §4 lets an AUTH line reach 12288 octets, and SMTP
/// extensions make lines longer, so be as generous as Postfix (2048) and then
/// some. Longer lines get `500 5.5.6`.
pub const MAX_COMMAND_LINE: usize = 4096;

/// RFC 3463 enhanced status code `class.subject.detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enhanced(pub u8, pub u16, pub u16);

impl fmt::Display for Enhanced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// One SMTP reply. `text` may hold several lines separated by `\n`; they are
/// sent as a multi-line reply (RFC 5321 §4.2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub enhanced: Option<Enhanced>,
    pub text: Cow<'static, str>,
}

impl Reply {
    pub fn new(code: u16, enhanced: Option<Enhanced>, text: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            enhanced,
            text: text.into(),
        }
    }

    fn esc(code: u16, e: (u8, u16, u16), text: impl Into<Cow<'static, str>>) -> Self {
        Self::new(code, Some(Enhanced(e.0, e.1, e.2)), text)
    }

    /// True for 4xx and 5xx.
    pub fn is_error(&self) -> bool {
        self.code >= 400
    }

    /// Wire form, CRLF-terminated, `code-` on every line but the last.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.text.len() + 16);
        let lines: Vec<&str> = self.text.split('\n').collect();
        for (i, line) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            let line = line.trim_end_matches('\r');
            match self.enhanced {
                Some(e) => {
                    out.extend_from_slice(format!("{}{sep}{e} {line}\r\n", self.code).as_bytes())
                }
                None => out.extend_from_slice(format!("{}{sep}{line}\r\n", self.code).as_bytes()),
            }
        }
        out
    }

    // --- greetings and connection-level -------------------------------------------------

    pub fn greeting(host: &str) -> Self {
        Self::new(220, None, format!("{host} ESMTP danerelay"))
    }
    pub fn closing(host: &str) -> Self {
        Self::esc(221, (2, 0, 0), format!("{host} closing connection"))
    }
    /// `max_connections` reached (sent instead of the greeting).
    pub fn too_many_connections(host: &str) -> Self {
        Self::esc(
            421,
            (4, 7, 0),
            format!("{host} Too many connections, try again later"),
        )
    }
    /// The server is shutting down.
    pub fn shutting_down(host: &str) -> Self {
        Self::esc(
            421,
            (4, 3, 2),
            format!("{host} Service shutting down, try again later"),
        )
    }
    /// RFC 5321 §4.5.3.2 timeout.
    pub fn timeout(host: &str) -> Self {
        Self::esc(
            421,
            (4, 4, 2),
            format!("{host} Timeout exceeded, closing connection"),
        )
    }
    /// `limits.max_junk_commands`: too many commands without progress.
    pub fn too_many_junk_commands(host: &str) -> Self {
        Self::esc(
            421,
            (4, 7, 0),
            format!("{host} Too many commands without progress, closing connection"),
        )
    }
    /// `limits.max_connections_per_ip` (sent instead of the greeting).
    pub fn too_many_connections_from_ip(host: &str) -> Self {
        Self::esc(
            421,
            (4, 7, 0),
            format!("{host} Too many connections from your address, try again later"),
        )
    }
    /// `limits.connection_rate_per_ip` (sent instead of the greeting).
    pub fn connection_rate_exceeded(host: &str) -> Self {
        Self::esc(
            421,
            (4, 7, 0),
            format!("{host} Connection rate limit exceeded, try again later"),
        )
    }
    pub fn too_many_auth_failures(host: &str) -> Self {
        Self::esc(
            421,
            (4, 7, 0),
            format!("{host} Too many authentication failures"),
        )
    }

    // --- generic -------------------------------------------------------------------------

    pub fn ok() -> Self {
        Self::esc(250, (2, 0, 0), "Ok")
    }
    pub fn ok_sender() -> Self {
        Self::esc(250, (2, 1, 0), "Sender ok")
    }
    pub fn ok_recipient() -> Self {
        Self::esc(250, (2, 1, 5), "Recipient ok")
    }
    pub fn start_data() -> Self {
        Self::new(354, None, "End data with <CR><LF>.<CR><LF>")
    }
    pub fn queued(id: &str) -> Self {
        Self::esc(250, (2, 0, 0), format!("Ok: queued as {id}"))
    }
    pub fn chunk_received(octets: usize) -> Self {
        Self::esc(250, (2, 0, 0), format!("{octets} octets received"))
    }
    pub fn ready_for_tls() -> Self {
        Self::esc(220, (2, 0, 0), "Ready to start TLS")
    }
    pub fn vrfy() -> Self {
        Self::esc(
            252,
            (2, 5, 0),
            "Cannot VRFY user, but will accept message and attempt delivery",
        )
    }
    pub fn help() -> Self {
        Self::esc(214, (2, 0, 0), "See RFC 5321; commands: EHLO HELO STARTTLS AUTH MAIL RCPT DATA BDAT RSET NOOP VRFY HELP QUIT")
    }
    pub fn auth_ok() -> Self {
        Self::esc(235, (2, 7, 0), "Authentication successful")
    }
    /// SASL challenge (base64 already applied by the caller).
    pub fn auth_challenge(b64: &str) -> Self {
        Self::new(334, None, b64.to_string())
    }

    // --- errors --------------------------------------------------------------------------

    pub fn line_too_long() -> Self {
        Self::esc(500, (5, 5, 6), "Line too long")
    }
    pub fn unknown_command() -> Self {
        Self::esc(500, (5, 5, 2), "Command unrecognized")
    }
    pub fn syntax(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::esc(501, (5, 5, 4), detail)
    }
    pub fn not_implemented() -> Self {
        Self::esc(502, (5, 5, 1), "Command not implemented")
    }
    pub fn bad_sequence(detail: &'static str) -> Self {
        Self::esc(503, (5, 5, 1), detail)
    }
    pub fn param_not_supported(param: &str) -> Self {
        Self::esc(555, (5, 5, 4), format!("Unsupported parameter {param}"))
    }
    pub fn auth_required() -> Self {
        Self::esc(530, (5, 7, 0), "Authentication required")
    }
    pub fn encryption_required() -> Self {
        Self::esc(
            538,
            (5, 7, 11),
            "Encryption required for requested authentication mechanism",
        )
    }
    pub fn auth_mechanism_unsupported() -> Self {
        Self::esc(504, (5, 5, 4), "Unrecognized authentication type")
    }
    pub fn auth_failed() -> Self {
        Self::esc(535, (5, 7, 8), "Authentication credentials invalid")
    }
    pub fn auth_cancelled() -> Self {
        Self::esc(501, (5, 0, 0), "Authentication cancelled")
    }
    pub fn auth_temp_failure() -> Self {
        Self::esc(454, (4, 7, 0), "Temporary authentication failure")
    }
    pub fn sender_not_owned(sender: &str) -> Self {
        Self::esc(
            553,
            (5, 7, 1),
            format!("Sender address <{sender}> not owned by user"),
        )
    }
    pub fn non_ascii_needs_smtputf8() -> Self {
        Self::esc(553, (5, 6, 7), "Non-ASCII address requires SMTPUTF8")
    }
    pub fn too_many_recipients() -> Self {
        Self::esc(452, (4, 5, 3), "Too many recipients")
    }
    /// `limits.messages_per_user_per_hour`.
    pub fn user_rate_limited() -> Self {
        Self::esc(
            450,
            (4, 7, 1),
            "Message rate limit exceeded for this user, try again later",
        )
    }
    /// `limits.max_recipients_per_session`.
    pub fn too_many_session_recipients() -> Self {
        Self::esc(452, (4, 5, 3), "Too many recipients in this session")
    }
    /// `limits.max_header_size`.
    pub fn header_too_large() -> Self {
        Self::esc(552, (5, 3, 4), "Message header section too large")
    }
    /// `limits.max_header_fields`.
    pub fn too_many_header_fields() -> Self {
        Self::esc(552, (5, 3, 4), "Too many header fields in message")
    }
    pub fn message_too_large() -> Self {
        Self::esc(
            552,
            (5, 3, 4),
            "Message size exceeds fixed maximum message size",
        )
    }
    pub fn bare_line_ending() -> Self {
        Self::esc(
            550,
            (5, 6, 0),
            "Bare <CR> or <LF> in message, only <CR><LF> line endings are accepted",
        )
    }
    pub fn storage_failure() -> Self {
        Self::esc(451, (4, 3, 0), "Temporary storage failure, try again later")
    }
    pub fn tls_not_available() -> Self {
        Self::esc(454, (4, 7, 0), "TLS not available")
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
    }
}

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
    fn single_and_multi_line_replies() {
        assert_eq!(Reply::ok().to_bytes(), b"250 2.0.0 Ok\r\n");
        assert_eq!(
            Reply::new(250, None, "a\nb\nc").to_bytes(),
            b"250-a\r\n250-b\r\n250 c\r\n"
        );
        assert_eq!(
            Reply::start_data().to_bytes(),
            b"354 End data with <CR><LF>.<CR><LF>\r\n"
        );
        assert_eq!(
            &Reply::encryption_required().to_bytes()[..10],
            b"538 5.7.11"
        );
    }

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
