//! The JSON body of `POST /api/v1/messages` and the message it makes: a
//! raw RFC 5322 message as given, or a composed one built into MIME by
//! `mail-builder` (headers encoded, bodies and attachments transfer-encoded
//! by the library — never by string concatenation). Pure: no I/O.

use std::collections::BTreeMap;

use base64::Engine;
use mail_builder::headers::address::Address;
use mail_builder::headers::text::Text;
use mail_builder::MessageBuilder;
use serde::Deserialize;

/// The request body. Either `raw` or the composed fields, not both.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub from: Option<String>,
    #[serde(default)]
    pub to: Vec<String>,
    #[serde(default)]
    pub cc: Vec<String>,
    #[serde(default)]
    pub bcc: Vec<String>,
    pub reply_to: Option<String>,
    pub subject: Option<String>,
    pub text: Option<String>,
    pub html: Option<String>,
    #[serde(default)]
    pub attachments: Vec<Attachment>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub raw: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    pub filename: String,
    pub content_type: Option<String>,
    pub content_base64: String,
}

/// Input that parses but cannot be sent; `field` names the JSON member.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// What the request becomes: the envelope and the message bytes (CRLF).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    pub sender: String,
    /// to ∪ cc ∪ bcc, in order, without duplicates.
    pub recipients: Vec<String>,
    pub message: Vec<u8>,
}

/// Header fields the composed form sets itself (or must never carry).
const RESERVED: [&str; 9] = [
    "from",
    "to",
    "cc",
    "bcc",
    "reply-to",
    "subject",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
];

/// `Name <addr>` or `addr` → (name, addr), the address checked.
fn mailbox(field: &str, text: &str) -> Result<(Option<String>, String), Invalid> {
    let t = text.trim();
    let (name, addr) = match (t.rfind('<'), t.ends_with('>')) {
        (Some(open), true) => {
            let name = t[..open].trim().trim_matches('"').trim();
            (
                (!name.is_empty()).then(|| name.to_string()),
                &t[open + 1..t.len() - 1],
            )
        }
        _ => (None, t),
    };
    let ok = match addr.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !addr
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || "<>(),;\"".contains(c))
        }
        None => false,
    };
    if !ok {
        return Err(invalid(field, format!("{text:?} is not an email address")));
    }
    Ok((name, addr.to_string()))
}

fn addresses(field: &str, list: &[String]) -> Result<Vec<(Option<String>, String)>, Invalid> {
    list.iter()
        .enumerate()
        .map(|(i, a)| mailbox(&format!("{field}[{i}]"), a))
        .collect()
}

fn to_address(list: &[(Option<String>, String)]) -> Address<'static> {
    Address::new_list(
        list.iter()
            .map(|(n, a)| Address::new_address(n.clone(), a.clone()))
            .collect(),
    )
}

impl Request {
    /// Checks the request and builds the message. `max_recipients` is
    /// `limits.max_recipients`.
    pub fn build(self, max_recipients: usize) -> Result<Built, Invalid> {
        let from_text = self
            .from
            .clone()
            .ok_or_else(|| invalid("from", "missing"))?;
        let (from_name, sender) = mailbox("from", &from_text)?;
        let to = addresses("to", &self.to)?;
        let cc = addresses("cc", &self.cc)?;
        let bcc = addresses("bcc", &self.bcc)?;
        let mut recipients: Vec<String> = Vec::new();
        for (_, a) in to.iter().chain(&cc).chain(&bcc) {
            if !recipients.iter().any(|r| r.eq_ignore_ascii_case(a)) {
                recipients.push(a.clone());
            }
        }
        if recipients.is_empty() {
            return Err(invalid(
                "to",
                "no recipients (to, cc and bcc are all empty)",
            ));
        }
        if recipients.len() > max_recipients {
            return Err(invalid(
                "to",
                format!("{} recipients; at most {max_recipients}", recipients.len()),
            ));
        }
        let message = match self.raw {
            Some(raw) => {
                let composed = self.subject.is_some()
                    || self.text.is_some()
                    || self.html.is_some()
                    || self.reply_to.is_some()
                    || !self.attachments.is_empty()
                    || !self.headers.is_empty();
                if composed {
                    return Err(invalid(
                        "raw",
                        "give either raw or subject/text/html/attachments/headers/reply_to, not both",
                    ));
                }
                if raw.trim().is_empty() {
                    return Err(invalid("raw", "empty message"));
                }
                crlf(raw.as_bytes())
            }
            None => compose(
                (from_name, sender.clone()),
                &to,
                &cc,
                self.reply_to.as_deref(),
                self.subject,
                self.text,
                self.html,
                self.attachments,
                self.headers,
            )?,
        };
        Ok(Built {
            sender,
            recipients,
            message,
        })
    }
}

#[allow(clippy::too_many_arguments)]
fn compose(
    from: (Option<String>, String),
    to: &[(Option<String>, String)],
    cc: &[(Option<String>, String)],
    reply_to: Option<&str>,
    subject: Option<String>,
    text: Option<String>,
    html: Option<String>,
    attachments: Vec<Attachment>,
    headers: BTreeMap<String, String>,
) -> Result<Vec<u8>, Invalid> {
    if text.is_none() && html.is_none() && attachments.is_empty() {
        return Err(invalid(
            "text",
            "a composed message needs text, html or attachments",
        ));
    }
    let mut b = MessageBuilder::new().from(Address::new_address(from.0, from.1));
    if !to.is_empty() {
        b = b.to(to_address(to));
    }
    if !cc.is_empty() {
        b = b.cc(to_address(cc));
    }
    // Bcc is an envelope matter only: never written into the message.
    if let Some(r) = reply_to {
        let (n, a) = mailbox("reply_to", r)?;
        b = b.reply_to(Address::new_address(n, a));
    }
    if let Some(s) = subject {
        if s.contains(['\r', '\n']) {
            return Err(invalid("subject", "must be one line"));
        }
        b = b.subject(s);
    }
    for (name, value) in headers {
        let field = format!("headers.{name}");
        let name_ok =
            !name.is_empty() && name.bytes().all(|c| (33..=126).contains(&c) && c != b':');
        if !name_ok {
            return Err(invalid(field, "not a header field name"));
        }
        if RESERVED.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(invalid(
                field,
                "set by its own member (from, to, cc, subject, …) or by the MIME structure",
            ));
        }
        if value.contains(['\r', '\n']) {
            return Err(invalid(field, "must be one line"));
        }
        b = b.header(name, Text::new(value));
    }
    if let Some(t) = text {
        b = b.text_body(t);
    }
    if let Some(h) = html {
        b = b.html_body(h);
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    for (i, a) in attachments.into_iter().enumerate() {
        let field = format!("attachments[{i}]");
        let bytes = b64.decode(a.content_base64.as_bytes()).map_err(|e| {
            invalid(
                format!("{field}.content_base64"),
                format!("not base64: {e}"),
            )
        })?;
        let ct = a
            .content_type
            .unwrap_or_else(|| "application/octet-stream".to_string());
        if ct.contains(['\r', '\n']) || !ct.contains('/') {
            return Err(invalid(format!("{field}.content_type"), "not a MIME type"));
        }
        if a.filename.contains(['\r', '\n']) || a.filename.is_empty() {
            return Err(invalid(
                format!("{field}.filename"),
                "must be one non-empty line",
            ));
        }
        b = b.attachment(ct, a.filename, bytes);
    }
    b.write_to_vec()
        .map_err(|e| invalid("", format!("cannot build the message: {e}")))
}

/// Lines end in CRLF: applications send `\n` as often as not, and a bare
/// LF or CR is what SMTP refuses (smuggling), so they are normalised here.
pub fn crlf(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() + input.len() / 32);
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'\r' if input.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 1;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            c => out.push(c),
        }
        i += 1;
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn req(json: &str) -> Request {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn raw_form_keeps_the_message_and_normalises_line_ends() {
        let b = req(r#"{"from":"a@x.example","to":["b@y.example"],"raw":"Subject: hi\n\nbody"}"#)
            .build(100)
            .unwrap();
        assert_eq!(b.sender, "a@x.example");
        assert_eq!(b.recipients, ["b@y.example"]);
        assert_eq!(b.message, b"Subject: hi\r\n\r\nbody\r\n");
    }

    #[test]
    fn composed_form_is_mime_and_bcc_stays_out() {
        let b = req(r#"{"from":"Shop <a@x.example>","to":["b@y.example"],"cc":["c@y.example"],
            "bcc":["hidden@y.example","b@y.example"],"subject":"Grüße","text":"hello","html":"<p>hello</p>",
            "headers":{"X-Order":"42"},
            "attachments":[{"filename":"a.txt","content_type":"text/plain","content_base64":"aGk="}]}"#)
        .build(100)
        .unwrap();
        assert_eq!(
            b.recipients,
            ["b@y.example", "c@y.example", "hidden@y.example"]
        );
        let m = String::from_utf8(b.message).unwrap();
        assert!(!m.contains("hidden"), "{m}");
        assert!(!m.to_ascii_lowercase().contains("\nbcc:"), "{m}");
        assert!(m.contains("X-Order: 42\r\n"), "{m}");
        assert!(m.contains("multipart/mixed"), "{m}");
        assert!(m.contains("a.txt"), "{m}");
        assert!(m.contains("Subject: =?utf-8?"), "{m}");
        let parsed = mail_parser::MessageParser::default()
            .parse(m.as_bytes())
            .unwrap();
        assert_eq!(parsed.subject(), Some("Grüße"));
        assert_eq!(parsed.attachment(0).unwrap().contents(), b"hi");
    }

    #[test]
    fn bad_input_names_its_field() {
        let field = |json: &str| req(json).build(2).unwrap_err().field;
        assert_eq!(field(r#"{"to":["b@y.example"],"text":"x"}"#), "from");
        assert_eq!(field(r#"{"from":"a@x.example","text":"x"}"#), "to");
        assert_eq!(
            field(r#"{"from":"nobody","to":["b@y.example"],"text":"x"}"#),
            "from"
        );
        assert_eq!(
            field(r#"{"from":"a@x.example","to":["b@y.example","bad address@y"],"text":"x"}"#),
            "to[1]"
        );
        assert_eq!(
            field(
                r#"{"from":"a@x.example","to":["a@y.example","b@y.example","c@y.example"],"text":"x"}"#
            ),
            "to"
        );
        assert_eq!(
            field(r#"{"from":"a@x.example","to":["b@y.example"],"raw":"x","subject":"y"}"#),
            "raw"
        );
        assert_eq!(
            field(r#"{"from":"a@x.example","to":["b@y.example"],"subject":"y"}"#),
            "text"
        );
        assert_eq!(
            field(
                r#"{"from":"a@x.example","to":["b@y.example"],"text":"x","headers":{"Bcc":"z@y.example"}}"#
            ),
            "headers.Bcc"
        );
        assert_eq!(
            field(
                r#"{"from":"a@x.example","to":["b@y.example"],"text":"x","headers":{"X-A":"1\r\nBcc: z@y"}}"#
            ),
            "headers.X-A"
        );
        assert_eq!(
            field(
                r#"{"from":"a@x.example","to":["b@y.example"],"attachments":[{"filename":"f","content_base64":"!!"}]}"#
            ),
            "attachments[0].content_base64"
        );
    }

    #[test]
    fn crlf_normalises_every_line_end() {
        assert_eq!(crlf(b"a\nb\r\nc\rd"), b"a\r\nb\r\nc\r\nd\r\n");
    }
}
