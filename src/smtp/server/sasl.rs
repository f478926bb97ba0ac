//! SASL for RFC 4954 AUTH, sans I/O: decoding client responses for the two
//! mechanisms offered, PLAIN (RFC 4616) and LOGIN (the de-facto
//! draft-murchison-sasl-login), and the base64 challenges.

use base64::Engine as _;

use crate::smtp::Reply;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// PLAIN credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plain {
    /// Authorization identity; empty = act as `login`.
    pub authzid: String,
    pub login: String,
    pub password: String,
}

/// Decodes one response line; `Err` carries the reply (RFC 4954 §4: `*`
/// cancels with 501, undecodable base64 is 501 too).
pub fn decode_response(line: &[u8]) -> Result<Vec<u8>, Reply> {
    let text = std::str::from_utf8(line).unwrap_or("").trim();
    if text == "*" {
        return Err(Reply::auth_cancelled());
    }
    // RFC 4954 §4: "=" is an empty initial response.
    if text == "=" {
        return Ok(Vec::new());
    }
    B64.decode(text)
        .map_err(|_| Reply::syntax("Cannot decode base64 response"))
}

/// A LOGIN step (user name or password) as UTF-8 text.
pub fn decode_text(line: &[u8]) -> Result<String, Reply> {
    String::from_utf8(decode_response(line)?).map_err(|_| Reply::syntax("Malformed LOGIN response"))
}

/// RFC 4616 §2: `[authzid] NUL authcid NUL passwd`, all UTF-8.
pub fn parse_plain(line: &[u8]) -> Result<Plain, Reply> {
    let raw = decode_response(line)?;
    let malformed = || Reply::syntax("Malformed PLAIN response");
    let parts: Vec<&[u8]> = raw.split(|&b| b == 0).collect();
    let [authz, authc, pass] = parts[..] else {
        return Err(malformed());
    };
    let text = |b: &[u8]| {
        std::str::from_utf8(b)
            .map(str::to_string)
            .map_err(|_| malformed())
    };
    Ok(Plain {
        authzid: text(authz)?,
        login: text(authc)?,
        password: text(pass)?,
    })
}

/// A 334 challenge carrying `text` base64-encoded.
pub fn challenge(text: &str) -> Reply {
    Reply::auth_challenge(&B64.encode(text))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn plain_forms() {
        let p = parse_plain(b"AGFAYi5leGFtcGxlAHB3\r\n").unwrap();
        assert_eq!(
            (p.authzid.as_str(), p.login.as_str(), p.password.as_str()),
            ("", "a@b.example", "pw")
        );
        assert_eq!(parse_plain(b"eABhAGI=").unwrap().authzid, "x");
        assert_eq!(parse_plain(b"YWJj").unwrap_err().code, 501, "no NULs");
        assert_eq!(
            parse_plain(b"AGEAYgBj").unwrap_err().code,
            501,
            "too many NULs"
        );
        assert_eq!(parse_plain(b"!!!").unwrap_err().code, 501);
        assert_eq!(parse_plain(b"*\r\n").unwrap_err(), Reply::auth_cancelled());
        assert_eq!(decode_response(b"=\r\n").unwrap(), b"");
        assert_eq!(decode_text(b"/w==").unwrap_err().code, 501, "not UTF-8");
        assert_eq!(challenge("Username:").text, "VXNlcm5hbWU6");
    }
}
