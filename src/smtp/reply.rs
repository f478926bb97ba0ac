//! SMTP replies as values (STYLE habit 3), for both sides: the server's
//! replies with one named constructor each, and the client's reading of the
//! remote server's replies. [`EnhancedCode`] is the one RFC 3463 status code
//! type (also the DSN `Status:`).

use std::borrow::Cow;
use std::fmt;

/// An RFC 3463 enhanced status code `class.subject.detail`. Subject and detail
/// are 1–3 digits each (RFC 3463 §2), so they do not fit a `u8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnhancedCode(pub u8, pub u16, pub u16);

impl EnhancedCode {
    /// The generic code for a basic reply class (RFC 3463 §3.1: `X.0.0`).
    pub fn generic_for(code: u16) -> EnhancedCode {
        // Only 2, 4 and 5 are valid enhanced classes; anything else reads as permanent.
        match code / 100 {
            2 => EnhancedCode(2, 0, 0),
            4 => EnhancedCode(4, 0, 0),
            _ => EnhancedCode(5, 0, 0),
        }
    }
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// One SMTP reply: basic code, the enhanced code when there is one, and the
/// text. `text` may hold several lines separated by `\n`; they are sent as a
/// multi-line reply (RFC 5321 §4.2.1), and a received multi-line reply is
/// joined that way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub enhanced: Option<EnhancedCode>,
    pub text: Cow<'static, str>,
}

impl Reply {
    pub fn new(
        code: u16,
        enhanced: Option<EnhancedCode>,
        text: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            code,
            enhanced,
            text: text.into(),
        }
    }

    /// A reply synthesised locally (for outcomes that have no remote reply).
    pub fn local(code: u16, enhanced: EnhancedCode, text: impl Into<String>) -> Self {
        Self::new(code, Some(enhanced), text.into())
    }

    fn esc(code: u16, e: (u8, u16, u16), text: impl Into<Cow<'static, str>>) -> Self {
        Self::new(code, Some(EnhancedCode(e.0, e.1, e.2)), text)
    }

    /// True for 4xx and 5xx.
    pub fn is_error(&self) -> bool {
        self.code >= 400
    }

    /// 2xx (RFC 5321 §4.2.1).
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 3xx: the server waits for more (354 after DATA).
    pub fn is_intermediate(&self) -> bool {
        (300..400).contains(&self.code)
    }

    /// 4xx: try again later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx: do not repeat this exact request.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// 421: the server is closing the transmission channel (RFC 5321 §3.8).
    pub fn is_closing(&self) -> bool {
        self.code == 421
    }

    /// The enhanced code the server sent, or the generic one for the class.
    pub fn status(&self) -> EnhancedCode {
        self.enhanced
            .unwrap_or_else(|| EnhancedCode::generic_for(self.code))
    }

    /// The reply on one line (multi-line text joined with spaces), as logged
    /// and as used in a DSN `Diagnostic-Code: smtp; …`.
    pub fn one_line(&self) -> String {
        let text = self
            .text
            .split('\n')
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(" ");
        match self.enhanced {
            Some(e) => format!("{} {} {}", self.code, e, text.trim()),
            None => format!("{} {}", self.code, text.trim()),
        }
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
}

/// The named constructors of every reply the server sends.
impl Reply {
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
    /// Content that cannot be re-encoded into valid lines (RFC 5322 §2.1.1).
    pub fn unencodable(why: String) -> Self {
        Self::esc(550, (5, 6, 0), why)
    }
    pub fn storage_failure() -> Self {
        Self::esc(451, (4, 3, 0), "Temporary storage failure, try again later")
    }
    /// `queue.min_free_space` reached (RFC 3463 4.3.1, as Postfix answers).
    pub fn insufficient_storage() -> Self {
        Self::esc(
            452,
            (4, 3, 1),
            "Insufficient system storage, try again later",
        )
    }
    pub fn tls_not_available() -> Self {
        Self::esc(454, (4, 7, 0), "TLS not available")
    }
}

/// The reply on one line, as logged and as used in a DSN.
impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.one_line())
    }
}

#[cfg(test)]
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
    fn one_line_status_and_classes() {
        let r = Reply::new(550, Some(EnhancedCode(5, 1, 1)), "No such user\nhere");
        assert_eq!(r.one_line(), "550 5.1.1 No such user here");
        assert_eq!(r.to_string(), r.one_line());
        assert!(r.is_permanent() && r.is_error() && !r.is_transient());
        let r = Reply::new(451, None, "later");
        assert_eq!(r.status(), EnhancedCode(4, 0, 0));
        assert_eq!(
            Reply::local(250, EnhancedCode(2, 1, 0), "Ok").status(),
            EnhancedCode(2, 1, 0)
        );
        assert_eq!(EnhancedCode(5, 7, 11).to_string(), "5.7.11");
    }
}
