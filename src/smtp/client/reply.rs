//! Replies from the remote server: the sans-I/O [`ReplyReader`] that
//! assembles (multi-line) [`Reply`] values from bytes with `smtp-proto`, and
//! the EHLO [`Capabilities`] the client acts on.
//!
//! Nothing here touches a socket: bytes in, values out (STYLE habit 1).

use smtp_proto::response::parser::{ResponseReceiver, MAX_RESPONSE_LENGTH};
use smtp_proto::{
    EhloResponse, EXT_8BIT_MIME, EXT_CHUNKING, EXT_DSN, EXT_ENHANCED_STATUS_CODES, EXT_PIPELINING,
    EXT_SIZE, EXT_SMTP_UTF8, EXT_START_TLS,
};

use crate::smtp::{EnhancedCode, Reply};

/// Why bytes from the server could not be read as a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("reply longer than {limit} bytes")]
    TooLong { limit: usize },
    #[error("malformed reply: {detail}")]
    Syntax { detail: String },
    #[error("reply code {code} is outside 200..=599")]
    BadCode { code: u16 },
}

/// One complete reply, or why the bytes were not one, with the raw bytes.
pub type ReplyRead = Result<(Reply, Vec<u8>), ReplyError>;

/// Assembles replies from a byte stream (sans-I/O). Feed it whatever arrived;
/// it consumes bytes up to the end of one complete reply and keeps partial
/// state between calls, so pipelined replies come out one at a time.
#[derive(Default)]
pub struct ReplyReader {
    receiver: ResponseReceiver,
    raw: Vec<u8>,
}

impl ReplyReader {
    /// Feeds `bytes`; returns how many were consumed and, when a reply is
    /// complete, the reply with its raw bytes (EHLO needs them).
    pub fn feed(&mut self, bytes: &[u8]) -> (usize, Option<ReplyRead>) {
        let mut iter = bytes.iter();
        let result = self.receiver.parse(&mut iter);
        let consumed = bytes.len() - iter.len();
        self.raw.extend_from_slice(&bytes[..consumed]);
        let done = match result {
            Err(smtp_proto::Error::NeedsMoreData { .. }) => return (consumed, None),
            Ok(r) if !(200..=599).contains(&r.code) => Err(ReplyError::BadCode { code: r.code }),
            Ok(r) => {
                // RFC 3463 §3: the class must agree with the reply code; a
                // "1.2.3" in the text of a 250 is not a status code.
                let enhanced = match r.esc {
                    [a, b, c] if u16::from(a) == r.code / 100 && matches!(a, 2 | 4 | 5) => {
                        Some(EnhancedCode(a, b.into(), c.into()))
                    }
                    _ => None,
                };
                Ok(Reply::new(r.code, enhanced, r.message))
            }
            Err(smtp_proto::Error::ResponseTooLong) => Err(ReplyError::TooLong {
                limit: MAX_RESPONSE_LENGTH,
            }),
            Err(e) => Err(ReplyError::Syntax {
                detail: format!("{e:?}"),
            }),
        };
        self.receiver.reset();
        let raw = std::mem::take(&mut self.raw);
        (consumed, Some(done.map(|r| (r, raw))))
    }
}

/// What the peer advertised in its EHLO reply (RFC 5321 §4.1.1.1). HELO
/// peers advertise nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// The domain the server named in the first EHLO line.
    pub hostname: String,
    /// `smtp_proto::EXT_*` bits.
    pub extensions: u32,
    /// RFC 1870 SIZE limit; `None` when not offered or offered without a limit.
    pub size_limit: Option<u64>,
}

impl Capabilities {
    /// Parses the raw bytes of a 250 EHLO reply with `smtp-proto`.
    pub fn parse(raw: &[u8]) -> Result<Capabilities, ReplyError> {
        let ehlo = EhloResponse::parse(&mut raw.iter()).map_err(|e| ReplyError::Syntax {
            detail: format!("EHLO reply: {e:?}"),
        })?;
        Ok(Capabilities {
            hostname: ehlo.hostname,
            extensions: ehlo.capabilities,
            size_limit: (ehlo.capabilities & EXT_SIZE != 0 && ehlo.size > 0)
                .then_some(ehlo.size as u64),
        })
    }

    fn has(&self, bit: u32) -> bool {
        self.extensions & bit != 0
    }

    /// RFC 2920.
    pub fn pipelining(&self) -> bool {
        self.has(EXT_PIPELINING)
    }
    /// RFC 3207.
    pub fn starttls(&self) -> bool {
        self.has(EXT_START_TLS)
    }
    /// RFC 1870.
    pub fn size(&self) -> bool {
        self.has(EXT_SIZE)
    }
    /// RFC 6152.
    pub fn eight_bit_mime(&self) -> bool {
        self.has(EXT_8BIT_MIME)
    }
    /// RFC 6531.
    pub fn smtputf8(&self) -> bool {
        self.has(EXT_SMTP_UTF8)
    }
    /// RFC 3461.
    pub fn dsn(&self) -> bool {
        self.has(EXT_DSN)
    }
    /// RFC 3030.
    pub fn chunking(&self) -> bool {
        self.has(EXT_CHUNKING)
    }
    /// RFC 2034.
    pub fn enhanced_status_codes(&self) -> bool {
        self.has(EXT_ENHANCED_STATUS_CODES)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn read_all(input: &[u8], chunk: usize) -> Vec<Result<Reply, ReplyError>> {
        let mut reader = ReplyReader::default();
        let mut pending: Vec<u8> = Vec::new();
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            pending.extend_from_slice(piece);
            loop {
                let (used, done) = reader.feed(&pending);
                pending.drain(..used);
                match done {
                    Some(r) => out.push(r.map(|(r, _)| r)),
                    None => break,
                }
                if pending.is_empty() {
                    break;
                }
            }
        }
        out
    }

    #[test]
    fn multi_line_and_pipelined_replies_in_any_chunking() {
        let wire = b"250 2.1.0 Ok\r\n550-5.1.1 No such user\r\n550 5.1.1 here\r\n451 try later\r\n";
        for chunk in [1, 2, 3, 7, 64] {
            let got = read_all(wire, chunk);
            assert_eq!(got.len(), 3, "chunk {chunk}");
            assert_eq!(
                got[0],
                Ok(Reply::local(250, EnhancedCode(2, 1, 0), "Ok")),
                "chunk {chunk}"
            );
            let second = got[1].clone().unwrap();
            assert_eq!(second.code, 550);
            assert_eq!(second.enhanced, Some(EnhancedCode(5, 1, 1)));
            assert_eq!(second.text, "No such user\nhere");
            assert_eq!(second.one_line(), "550 5.1.1 No such user here");
            let third = got[2].clone().unwrap();
            assert_eq!((third.code, third.enhanced), (451, None));
            assert_eq!(third.status(), EnhancedCode(4, 0, 0));
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let got = read_all(b"hello there\r\n", 64);
        assert!(matches!(got[0], Err(ReplyError::Syntax { .. })), "{got:?}");
        let got = read_all(b"250 1.2.3 is my version\r\n550 4.1.1 mixed up\r\n", 64);
        assert_eq!(got[0].as_ref().unwrap().enhanced, None);
        assert_eq!(got[1].as_ref().unwrap().status(), EnhancedCode(5, 0, 0));
        let got = read_all(b"999 what\r\n", 64);
        assert_eq!(got[0], Err(ReplyError::BadCode { code: 999 }));
        let long = format!("250 {}\r\n", "x".repeat(MAX_RESPONSE_LENGTH + 10));
        let got = read_all(long.as_bytes(), 512);
        assert!(matches!(got[0], Err(ReplyError::TooLong { .. })), "{got:?}");
    }

    #[test]
    fn ehlo_capabilities() {
        let raw =
            b"250-mx.example.net hello\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n\
250-DSN\r\n250-SMTPUTF8\r\n250-CHUNKING\r\n250-ENHANCEDSTATUSCODES\r\n250 STARTTLS\r\n";
        let caps = Capabilities::parse(raw).unwrap();
        assert_eq!(caps.hostname, "mx.example.net");
        assert!(caps.pipelining() && caps.starttls() && caps.eight_bit_mime());
        assert!(caps.dsn() && caps.smtputf8() && caps.chunking() && caps.size());
        assert!(caps.enhanced_status_codes());
        assert_eq!(caps.size_limit, Some(1000));

        let bare = Capabilities::parse(b"250 mx.example.net\r\n").unwrap();
        assert_eq!(bare.extensions, 0);
        assert_eq!(bare.size_limit, None);
        assert!(!bare.pipelining() && !bare.starttls());

        let no_limit = Capabilities::parse(b"250-mx\r\n250 SIZE\r\n").unwrap();
        assert!(no_limit.size());
        assert_eq!(no_limit.size_limit, None);
    }
}
