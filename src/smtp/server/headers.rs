//! Header work on submitted messages, sans I/O: the `Received:` trace field
//! (RFC 5321 §4.4, with TLS and authenticated sender as Postfix writes them,
//! protocol keywords from RFC 3848 / RFC 6531 §3.7.3) and the `Message-ID:` /
//! `Date:` fields a submission server adds when missing (RFC 6409 §8.2, §8.3).
//! [`MessageAssembler`] buffers only the header section (bounded), never the body.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::RngCore;

use super::session::TlsInfo;

/// Header sections larger than this are passed through without adding
/// `Message-ID:`/`Date:` (bounded memory per connection).
pub const HEADER_SCAN_LIMIT: usize = 128 * 1024;

/// What the `Received:` field records.
#[derive(Debug, Clone)]
pub struct ReceivedInfo<'a> {
    /// The queue id, when known before commit.
    pub id: Option<&'a str>,
    pub helo: Option<&'a str>,
    pub client: IpAddr,
    pub tls: Option<&'a TlsInfo>,
    pub auth_user: Option<&'a str>,
    pub hostname: &'a str,
    pub esmtp: bool,
    pub smtputf8: bool,
    /// The one recipient, when there is exactly one (RFC 5321 §4.4 `for`):
    /// naming one of several would disclose the others' Bcc.
    pub for_rcpt: Option<&'a str>,
    pub when: SystemTime,
}

/// Keeps trace text printable and free of CR/LF/parentheses: the HELO name and
/// login come from the client.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '(' && c != ')' && c != ';' {
                c
            } else {
                '?'
            }
        })
        .take(255)
        .collect()
}

/// An address as a trace field may carry it: no controls, spaces or angle
/// brackets (UTF-8 stays: an SMTPUTF8 message may have it, RFC 6531 §3.7.4).
fn path_text(addr: &str) -> String {
    addr.chars()
        .filter(|c| !c.is_control() && !c.is_whitespace() && *c != '<' && *c != '>')
        .take(320)
        .collect()
}

/// RFC 3848 / RFC 6531 §3.7.3 `with` keyword.
pub fn protocol(esmtp: bool, smtputf8: bool, tls: bool, auth: bool) -> String {
    let base = match (smtputf8, esmtp) {
        (true, _) => "UTF8SMTP",
        (false, true) => "ESMTP",
        (false, false) => "SMTP",
    };
    let mut p = base.to_string();
    if esmtp || smtputf8 {
        if tls {
            p.push('S');
        }
        if auth {
            p.push('A');
        }
    }
    p
}

/// The complete `Received:` field, folded, CRLF-terminated.
pub fn received(info: &ReceivedInfo<'_>) -> String {
    let helo = info.helo.map(sanitize).unwrap_or_else(|| "unknown".into());
    let addr = match info.client {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("IPv6:{a}"),
    };
    let mut s = format!("Received: from {helo} (unknown [{addr}])\r\n");
    if let Some(tls) = info.tls {
        s.push_str(&format!(
            "\t(using {} with cipher {})\r\n",
            sanitize(&tls.version),
            sanitize(&tls.cipher)
        ));
    }
    if let Some(user) = info.auth_user {
        s.push_str(&format!("\t(Authenticated sender: {})\r\n", sanitize(user)));
    }
    let proto = protocol(
        info.esmtp,
        info.smtputf8,
        info.tls.is_some(),
        info.auth_user.is_some(),
    );
    let id = info
        .id
        .map(|id| format!(" id {}", sanitize(id)))
        .unwrap_or_default();
    s.push_str(&format!(
        "\tby {} (danerelay) with {proto}{id}",
        info.hostname
    ));
    match info.for_rcpt {
        Some(rcpt) => s.push_str(&format!("\r\n\tfor <{}>;\r\n", path_text(rcpt))),
        None => s.push_str(";\r\n"),
    }
    s.push_str(&format!("\t{}\r\n", rfc5322_date(info.when)));
    s
}

/// RFC 5322 §3.3 date-time in UTC, e.g. `Fri, 27 Nov 2026 20:50:00 +0000`.
pub fn rfc5322_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {d} {} {y} {:02}:{:02}:{:02} +0000",
        WD[(days.rem_euclid(7)) as usize],
        MON[(m - 1) as usize],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A fresh `<random.time@hostname>` message id.
pub fn new_message_id(hostname: &str, when: SystemTime) -> String {
    let secs = when
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("<{:016x}.{secs}@{hostname}>", rand::rng().next_u64())
}

/// Whether a header section (CRLF lines) has a field named `name`.
fn has_field(headers: &[u8], name: &str) -> bool {
    headers
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| l.first().is_some_and(|c| !c.is_ascii_whitespace()))
        .any(|l| {
            let Some(colon) = l.iter().position(|&b| b == b':') else {
                return false;
            };
            let field = std::str::from_utf8(&l[..colon]).unwrap_or("");
            field
                .trim_end_matches([' ', '\t'])
                .eq_ignore_ascii_case(name)
        })
}

/// Prepends `Received:`, adds missing `Message-ID:`/`Date:` at the end of the
/// header section, and passes the body through as it streams.
#[derive(Debug)]
pub struct MessageAssembler {
    /// `None` once the header section has been emitted.
    pending: Option<Vec<u8>>,
    received: String,
    hostname: String,
    when: SystemTime,
}

impl MessageAssembler {
    pub fn new(received: String, hostname: &str, when: SystemTime) -> Self {
        Self {
            pending: Some(Vec::new()),
            received,
            hostname: hostname.to_string(),
            when,
        }
    }

    fn additions(&self, headers: &[u8]) -> String {
        let mut s = String::new();
        if !has_field(headers, "Message-ID") {
            s.push_str(&format!(
                "Message-ID: {}\r\n",
                new_message_id(&self.hostname, self.when)
            ));
        }
        if !has_field(headers, "Date") {
            s.push_str(&format!("Date: {}\r\n", rfc5322_date(self.when)));
        }
        s
    }

    /// Feeds message content; appends what can be written to `out`.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let Some(buf) = self.pending.as_mut() else {
            out.extend_from_slice(data);
            return;
        };
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(data);
        let split = if buf.starts_with(b"\r\n") {
            Some(0)
        } else {
            buf[from..]
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|p| from + p + 2)
        };
        if let Some(split) = split {
            let buf = self.pending.take().unwrap_or_default();
            let adds = self.additions(&buf[..split]);
            out.extend_from_slice(self.received.as_bytes());
            out.extend_from_slice(&buf[..split]);
            out.extend_from_slice(adds.as_bytes());
            out.extend_from_slice(&buf[split..]);
        } else if buf.len() > HEADER_SCAN_LIMIT {
            let buf = self.pending.take().unwrap_or_default();
            tracing::debug!(
                "header section over {HEADER_SCAN_LIMIT} octets; not adding Message-ID/Date"
            );
            out.extend_from_slice(self.received.as_bytes());
            out.extend_from_slice(&buf);
        }
    }

    /// End of content: a message that was all header (no blank line) is
    /// emitted now, with the additions put before it.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if let Some(buf) = self.pending.take() {
            let adds = self.additions(&buf);
            out.extend_from_slice(self.received.as_bytes());
            out.extend_from_slice(adds.as_bytes());
            out.extend_from_slice(&buf);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(at(0)), "Thu, 1 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(at(951_782_400)),
            "Tue, 29 Feb 2000 00:00:00 +0000"
        );
        assert_eq!(
            rfc5322_date(at(1_795_812_610)),
            "Fri, 27 Nov 2026 20:50:10 +0000"
        );
    }

    #[test]
    fn received_like_postfix() {
        let tls = TlsInfo {
            version: "TLSv1.3".into(),
            cipher: "TLS_AES_256_GCM_SHA384".into(),
        };
        let r = received(&ReceivedInfo {
            id: Some("01ABC"),
            helo: Some("client(evil)\r\nX-Injected: 1"),
            client: "192.0.2.7".parse().unwrap(),
            tls: Some(&tls),
            auth_user: Some("alice@example.com"),
            hostname: "relay.example.com",
            esmtp: true,
            smtputf8: false,
            for_rcpt: Some("bob@example.net>\r\nX: y"),
            when: at(0),
        });
        assert_eq!(
            r,
            "Received: from client?evil???X-Injected:?1 (unknown [192.0.2.7])\r\n\
             \t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)\r\n\
             \t(Authenticated sender: alice@example.com)\r\n\
             \tby relay.example.com (danerelay) with ESMTPSA id 01ABC\r\n\
             \tfor <bob@example.netX:y>;\r\n\
             \tThu, 1 Jan 1970 00:00:00 +0000\r\n"
        );
        assert_eq!(protocol(false, false, false, false), "SMTP");
        assert_eq!(protocol(true, true, true, false), "UTF8SMTPS");
    }

    fn assemble(parts: &[&[u8]]) -> String {
        let mut a = MessageAssembler::new("Received: x\r\n".into(), "h.example", at(0));
        let mut out = Vec::new();
        for p in parts {
            a.push(p, &mut out);
        }
        a.finish(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn adds_missing_fields_at_end_of_header_section() {
        let out = assemble(&[b"Subject: a\r", b"\n\r", b"\nbody\r\n"]);
        assert!(
            out.starts_with("Received: x\r\nSubject: a\r\nMessage-ID: <"),
            "{out}"
        );
        assert!(
            out.ends_with("@h.example>\r\nDate: Thu, 1 Jan 1970 00:00:00 +0000\r\n\r\nbody\r\n"),
            "{out}"
        );
        let kept =
            assemble(&[b"message-id : <x@y>\r\nDATE: Mon, 1 Jan 2001 00:00:00 +0000\r\n\r\nb\r\n"]);
        assert_eq!(kept, "Received: x\r\nmessage-id : <x@y>\r\nDATE: Mon, 1 Jan 2001 00:00:00 +0000\r\n\r\nb\r\n");
        // A folded continuation mentioning "Date:" is not a Date field.
        let folded = assemble(&[b"Subject: a\r\n Date: no\r\n\r\n"]);
        assert!(folded.contains("\r\nDate: Thu"), "{folded}");
    }

    #[test]
    fn no_header_section_or_no_body() {
        let out = assemble(&[b"\r\nbody only\r\n"]);
        assert!(
            out.starts_with("Received: x\r\nMessage-ID: <")
                && out.ends_with("+0000\r\n\r\nbody only\r\n"),
            "{out}"
        );
        let out = assemble(&[b"Subject: only\r\n"]);
        assert!(out.ends_with("+0000\r\nSubject: only\r\n"), "{out}");
    }

    proptest::proptest! {
        /// Any content, cut anywhere: no panic, nothing lost, and the content
        /// comes out in order (additions only go in at the header boundary).
        #[test]
        fn assembler_keeps_every_byte(
            body in proptest::collection::vec(proptest::prop_oneof![
                proptest::strategy::Just(b'\r'), proptest::strategy::Just(b'\n'),
                proptest::strategy::Just(b':'), proptest::num::u8::ANY], 0..400),
            cut in 0usize..400,
        ) {
            let cut = cut.min(body.len());
            let mut a = MessageAssembler::new("R: x\r\n".into(), "h", at(0));
            let mut out = Vec::new();
            a.push(&body[..cut], &mut out);
            a.push(&body[cut..], &mut out);
            a.finish(&mut out);
            proptest::prop_assert!(out.starts_with(b"R: x\r\n"));
            // `body` is a subsequence of the output.
            let mut it = out.iter();
            proptest::prop_assert!(body.iter().all(|b| it.any(|o| o == b)));
        }
    }
}
