//! What sendmail does to the message before it submits it, as pure
//! functions over bytes: CRLF line ends, the lone dot that ends input
//! (unless `-i`), recipients from To/Cc/Bcc (`-t`), Bcc removed, and
//! `From:`/`Date:`/`Message-ID:` added where missing (RFC 6409 §8 lets the
//! submission client add them; the relay would too, but an added `From:`
//! carries the `-F` name only sendmail knows).

use std::time::SystemTime;

use mail_builder::headers::{address::Address, Header};

use crate::smtp::server::headers::{new_message_id, rfc5322_date};

/// One header field: its name and its complete text (continuation lines
/// included), CRLF-terminated.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Field {
    name: String,
    raw: Vec<u8>,
}

/// The message as read: header fields and the body after them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    fields: Vec<Field>,
    body: Vec<u8>,
}

/// What the envelope-facing side needs besides the message bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Additions<'a> {
    pub sender: &'a str,
    pub full_name: Option<&'a str>,
    pub hostname: &'a str,
    pub now: SystemTime,
}

/// Turns stdin into CRLF lines. Without `ignore_dots`, a line holding a
/// single `.` ends the message (sendmail's default; `-i`/`-oi` turn it off).
pub fn read_lines(input: &[u8], ignore_dots: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() + input.len() / 32);
    let mut lines = input.split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        if lines.peek().is_none() && line.is_empty() {
            break; // the input ended with a line end
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !ignore_dots && line == b"." {
            break;
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Whether `line` starts a header field (`name:`, RFC 5322 §2.2: printable
/// ASCII without space or colon).
fn field_name(line: &[u8]) -> Option<&str> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = &line[..colon];
    let ok = !name.is_empty() && name.iter().all(|&b| (33..=126).contains(&b));
    ok.then(|| std::str::from_utf8(name).ok()).flatten()
}

impl Message {
    /// Splits CRLF text (from [`read_lines`]) into header fields and body.
    /// The header section ends at the first empty line, or at the first line
    /// that is neither a field nor a continuation (then that line is body).
    pub fn parse(text: &[u8]) -> Message {
        let mut fields: Vec<Field> = Vec::new();
        let mut pos = 0;
        while pos < text.len() {
            let end = text[pos..]
                .windows(2)
                .position(|w| w == b"\r\n")
                .map_or(text.len(), |i| pos + i + 2);
            let line = &text[pos..end];
            let content = line.strip_suffix(b"\r\n").unwrap_or(line);
            if content.is_empty() {
                pos = end;
                break;
            }
            let continuation = matches!(content.first(), Some(b' ' | b'\t'));
            match (continuation, fields.last_mut(), field_name(content)) {
                (true, Some(f), _) => f.raw.extend_from_slice(line),
                (false, _, Some(name)) => fields.push(Field {
                    name: name.to_string(),
                    raw: line.to_vec(),
                }),
                _ => break,
            }
            pos = end;
        }
        Message {
            fields,
            body: text[pos..].to_vec(),
        }
    }

    fn has(&self, name: &str) -> bool {
        self.fields
            .iter()
            .any(|f| f.name.eq_ignore_ascii_case(name))
    }

    /// The addresses in every To, Cc and Bcc field (groups flattened), in
    /// order, as `-t` takes them.
    pub fn header_recipients(&self) -> Vec<String> {
        let mut section = Vec::new();
        for f in &self.fields {
            if ["to", "cc", "bcc"].contains(&f.name.to_ascii_lowercase().as_str()) {
                section.extend_from_slice(&f.raw);
            }
        }
        section.extend_from_slice(b"\r\n");
        let Some(parsed) = mail_parser::MessageParser::default().parse_headers(&section[..]) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for header in parsed.headers() {
            if let Some(list) = header.value().as_address() {
                out.extend(list.iter().filter_map(|a| a.address()).map(str::to_string));
            }
        }
        out
    }

    /// Removes every Bcc field: blind recipients must not see each other,
    /// nor be seen by the others (RFC 5322 §3.6.3).
    pub fn remove_bcc(&mut self) {
        self.fields.retain(|f| !f.name.eq_ignore_ascii_case("bcc"));
    }

    /// Adds `From:` (`NAME <sender>`), `Date:` and `Message-ID:` where missing.
    pub fn add_missing(&mut self, add: &Additions<'_>) {
        if !self.has("from") && !add.sender.is_empty() {
            let mut raw = b"From: ".to_vec();
            Address::new_address(add.full_name, add.sender).write_header(&mut raw, 6);
            self.fields.push(Field {
                name: "From".into(),
                raw,
            });
        }
        if !self.has("date") {
            self.fields.push(Field {
                name: "Date".into(),
                raw: format!("Date: {}\r\n", rfc5322_date(add.now)).into_bytes(),
            });
        }
        if !self.has("message-id") {
            let id = new_message_id(add.hostname, add.now);
            self.fields.push(Field {
                name: "Message-ID".into(),
                raw: format!("Message-ID: {id}\r\n").into_bytes(),
            });
        }
    }

    /// The message as it goes out: fields, an empty line, the body.
    pub fn into_bytes(self) -> Vec<u8> {
        let mut out: Vec<u8> = self.fields.into_iter().flat_map(|f| f.raw).collect();
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn add<'a>(full_name: Option<&'a str>) -> Additions<'a> {
        Additions {
            sender: "app@example.com",
            full_name,
            hostname: "host.example.com",
            now: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000),
        }
    }

    #[test]
    fn lone_dot_ends_input_unless_ignored() {
        let input = b"Subject: x\n\nbefore\n.\nafter\n";
        assert_eq!(read_lines(input, false), b"Subject: x\r\n\r\nbefore\r\n");
        assert_eq!(
            read_lines(input, true),
            b"Subject: x\r\n\r\nbefore\r\n.\r\nafter\r\n"
        );
        assert_eq!(read_lines(b"a\r\nb", true), b"a\r\nb\r\n");
        assert_eq!(read_lines(b"..\n", false), b"..\r\n");
        assert_eq!(read_lines(b"", false), b"");
    }

    #[test]
    fn recipients_from_to_cc_bcc_and_bcc_removed() {
        let text = read_lines(
            b"To: \"Doe, John\" <john@a.example>, b@a.example\nCc: Team: c@a.example, d@a.example;\nBcc: hidden@a.example,\n  hidden2@a.example\nSubject: hi\n\nbody\n",
            true,
        );
        let mut m = Message::parse(&text);
        assert_eq!(
            m.header_recipients(),
            [
                "john@a.example",
                "b@a.example",
                "c@a.example",
                "d@a.example",
                "hidden@a.example",
                "hidden2@a.example"
            ]
        );
        m.remove_bcc();
        let out = String::from_utf8(m.into_bytes()).unwrap();
        assert!(!out.contains("hidden"), "{out}");
        assert!(out.ends_with("Subject: hi\r\n\r\nbody\r\n"), "{out}");
    }

    #[test]
    fn missing_fields_are_added_present_ones_kept() {
        let mut m = Message::parse(&read_lines(b"Subject: x\n\nbody\n", true));
        m.add_missing(&add(Some("Cron Daemon")));
        let out = String::from_utf8(m.into_bytes()).unwrap();
        assert!(
            out.contains("From: \"Cron Daemon\" <app@example.com>\r\n")
                || out.contains("From: Cron Daemon <app@example.com>\r\n"),
            "{out}"
        );
        assert!(
            out.contains("Date: Fri, 15 Jan 2027 08:00:00 +0000\r\n"),
            "{out}"
        );
        assert!(out.contains("@host.example.com>\r\n"), "{out}");
        let text = read_lines(
            b"from: a@b\nDATE: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-Id: <x@y>\n\nb\n",
            true,
        );
        let mut m = Message::parse(&text);
        m.add_missing(&add(None));
        assert_eq!(m.into_bytes(), text);
    }

    #[test]
    fn body_without_headers_and_headers_without_body() {
        let m = Message::parse(b"just text, no header\r\nmore\r\n");
        assert!(m.fields.is_empty());
        assert_eq!(m.into_bytes(), b"\r\njust text, no header\r\nmore\r\n");
        let m = Message::parse(b"Subject: only\r\n");
        assert_eq!(m.into_bytes(), b"Subject: only\r\n\r\n");
    }
}
