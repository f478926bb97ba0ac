//! RFC 3464 delivery status notifications, built as bytes (pure): a
//! `multipart/report; report-type=delivery-status` with a human part, the
//! `message/delivery-status` part, and the original as `message/rfc822`
//! (RET=FULL, failures only) or `text/rfc822-headers` (RET=HDRS, no RET,
//! delays and successes — RFC 3461 §4.3 has RET govern failed DSNs).
//!
//! RFC 3461 NOTIFY decides which recipients appear; a message from the null
//! sender never gets a DSN (RFC 3461 §6.2, RFC 5321 §4.5.5), and neither
//! does one where no recipient asked for this kind of notice.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::outcome::{Outcome, Reason};
use crate::smtp::queue_edge::strip_rfc822;
use crate::smtp::{EnhancedCode, Notify, Reply, Ret};

/// RFC 3464 §2.3.3 `Action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Failed,
    Delayed,
    Delivered,
    /// Handed to a peer that does not do DSN (RFC 3461 §6.2.2 for NOTIFY=SUCCESS).
    Relayed,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Delivered => "delivered",
            Action::Relayed => "relayed",
        }
    }
}

/// One recipient's block in the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DsnRecipient {
    pub address: String,
    /// RFC 3461 ORCPT (xtext-decoded; `rfc822;` optional).
    pub orcpt: Option<String>,
    /// `None` = the submitter gave none: failure and delay (RFC 3461 §4.1).
    pub notify: Option<Notify>,
    pub action: Action,
    pub status: EnhancedCode,
    /// The host that answered, e.g. `mx.example.net`.
    pub remote_mta: Option<String>,
    /// The remote reply, when the finding came from the peer.
    pub diagnostic: Option<Reply>,
    /// Our own finding (local failures), shown in the human part.
    pub detail: String,
    pub last_attempt: Option<SystemTime>,
    /// For `delayed`: when we give up.
    pub will_retry_until: Option<SystemTime>,
}

impl DsnRecipient {
    /// The report block for a recipient's outcome. Status classes follow the
    /// action: a delayed notice always carries a 4.x.x status.
    pub fn from_outcome(
        address: &str,
        orcpt: Option<&str>,
        notify: Option<Notify>,
        outcome: &Outcome,
    ) -> DsnRecipient {
        let (action, reply, remote) = match outcome {
            Outcome::Delivered(r) => (Action::Delivered, r, true),
            Outcome::Deferred(Reason { reply, remote }) => (Action::Delayed, reply, *remote),
            Outcome::Bounced(Reason { reply, remote }) => (Action::Failed, reply, *remote),
        };
        let mut status = reply.status();
        if action == Action::Delayed {
            status.0 = 4;
        }
        DsnRecipient {
            address: address.to_string(),
            orcpt: orcpt.map(str::to_string),
            notify,
            action,
            status,
            remote_mta: None,
            diagnostic: remote.then(|| reply.clone()),
            detail: reply.one_line(),
            last_attempt: None,
            will_retry_until: None,
        }
    }
}

/// Everything a DSN is made of.
#[derive(Debug, Clone)]
pub struct DsnInput<'a> {
    /// Our hostname (`Reporting-MTA`, `From: MAILER-DAEMON@…`).
    pub reporting_mta: &'a str,
    /// The envelope sender of the original message; `""` = null sender.
    pub original_sender: &'a str,
    pub envid: Option<&'a str>,
    pub ret: Option<Ret>,
    pub arrival: SystemTime,
    pub now: SystemTime,
    /// Makes Message-ID and boundary unique (the original's queue id).
    pub queue_id: &'a str,
    pub recipients: &'a [DsnRecipient],
    /// The original message (headers + body, CRLF lines) — or, with
    /// `streamed`, at least its header section.
    pub original: &'a [u8],
    /// The caller streams the full original in at [`Dsn::splice_at`] itself,
    /// so a 25 MiB message is never whole in memory; `Some(eight_bit)` labels it.
    pub streamed: Option<bool>,
}

/// A DSN ready to be queued: envelope sender `<>` (RFC 3461 §6.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dsn {
    pub sender: String,
    pub recipient: String,
    pub message: Vec<u8>,
    /// With `DsnInput::streamed` and RET=FULL on a failure: where the full
    /// original goes (followed by a CRLF when it does not end with one).
    pub splice_at: Option<usize>,
}

/// Whether `notify` asks for a notice of `action` (RFC 3461 §4.1).
pub fn wanted(notify: Option<Notify>, action: Action) -> bool {
    let n = notify.unwrap_or(Notify::DEFAULT);
    if n.never {
        return false;
    }
    match action {
        Action::Failed => n.failure,
        Action::Delayed => n.delay,
        Action::Delivered | Action::Relayed => n.success,
    }
}

/// Builds the DSN, or `None` when none is due (null sender, or no
/// recipient's NOTIFY asks for its action).
pub fn build(input: &DsnInput<'_>) -> Option<Dsn> {
    if input.original_sender.is_empty() {
        return None;
    }
    let rcpts: Vec<&DsnRecipient> = input
        .recipients
        .iter()
        .filter(|r| wanted(r.notify, r.action))
        .collect();
    if rcpts.is_empty() {
        return None;
    }
    let failed = rcpts.iter().any(|r| r.action == Action::Failed);
    let delayed = rcpts.iter().any(|r| r.action == Action::Delayed);
    let subject = if failed {
        "Undelivered Mail Returned to Sender"
    } else if delayed {
        "Delayed Mail (still being retried)"
    } else {
        "Successful Mail Delivery Report"
    };
    let secs = input
        .now
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let boundary = format!("{}.{}/{}", secs, input.queue_id, input.reporting_mta);
    let mut m = String::new();
    let _ = write!(
        m,
        "From: Mail Delivery System <MAILER-DAEMON@{host}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n\
Date: {date}\r\nMessage-ID: <{secs}.{id}.dsn@{host}>\r\nAuto-Submitted: auto-replied\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\
\r\nThis is a MIME-encapsulated message.\r\n\r\n",
        host = input.reporting_mta,
        to = input.original_sender,
        date = rfc5322_date(input.now),
        id = input.queue_id,
    );
    let _ = write!(m, "--{boundary}\r\nContent-Description: Notification\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n");
    m.push_str(&human_part(input, &rcpts, failed, delayed));
    let _ = write!(m, "\r\n--{boundary}\r\nContent-Description: Delivery report\r\nContent-Type: message/delivery-status\r\n\r\n");
    m.push_str(&status_part(input, &rcpts));
    let mut bytes = m.into_bytes();
    let splice_at = append_original(&mut bytes, input, failed, &boundary);
    Some(Dsn {
        sender: String::new(),
        recipient: input.original_sender.to_string(),
        message: bytes,
        splice_at,
    })
}

fn human_part(
    input: &DsnInput<'_>,
    rcpts: &[&DsnRecipient],
    failed: bool,
    delayed: bool,
) -> String {
    let mut t = format!(
        "This is the mail system at host {}.\r\n\r\n",
        input.reporting_mta
    );
    if failed {
        t.push_str("I'm sorry to have to inform you that your message could not\r\nbe delivered to one or more recipients.\r\n");
    } else if delayed {
        t.push_str("Your message could not be delivered yet. The mail system will\r\nkeep trying; you do not need to resend it.\r\n");
    } else {
        t.push_str(
            "Your message was successfully delivered to the destination(s) listed below.\r\n",
        );
    }
    t.push_str("\r\n");
    for r in rcpts {
        let via = r
            .remote_mta
            .as_deref()
            .map(|h| format!(" (host {h})"))
            .unwrap_or_default();
        let line = format!(
            "<{}>{}: {}: {}",
            r.address,
            via,
            r.action.as_str(),
            r.detail
        );
        t.push_str(&fold(&line, ""));
    }
    t
}

fn status_part(input: &DsnInput<'_>, rcpts: &[&DsnRecipient]) -> String {
    let mut s = format!("Reporting-MTA: dns; {}\r\n", input.reporting_mta);
    if let Some(envid) = input.envid {
        s.push_str(&fold(&format!("Original-Envelope-Id: {envid}"), " "));
    }
    let _ = write!(s, "Arrival-Date: {}\r\n", rfc5322_date(input.arrival));
    for r in rcpts {
        let _ = write!(s, "\r\nFinal-Recipient: rfc822; {}\r\n", r.address);
        if let Some(orcpt) = &r.orcpt {
            let _ = write!(s, "Original-Recipient: rfc822; {}\r\n", strip_rfc822(orcpt));
        }
        let _ = write!(
            s,
            "Action: {}\r\nStatus: {}\r\n",
            r.action.as_str(),
            r.status
        );
        if let Some(mta) = &r.remote_mta {
            let _ = write!(s, "Remote-MTA: dns; {mta}\r\n");
        }
        if let Some(reply) = &r.diagnostic {
            s.push_str(&fold(
                &format!("Diagnostic-Code: smtp; {}", reply.one_line()),
                " ",
            ));
        }
        if let Some(t) = r.last_attempt {
            let _ = write!(s, "Last-Attempt-Date: {}\r\n", rfc5322_date(t));
        }
        if let Some(t) = r.will_retry_until {
            let _ = write!(s, "Will-Retry-Until: {}\r\n", rfc5322_date(t));
        }
    }
    s
}

/// RET=FULL on a failure: the whole message; otherwise its header section.
/// Returns where a streamed original goes.
fn append_original(
    out: &mut Vec<u8>,
    input: &DsnInput<'_>,
    failed: bool,
    boundary: &str,
) -> Option<usize> {
    let full = failed && input.ret == Some(Ret::Full);
    if let (true, Some(eight_bit)) = (full, input.streamed) {
        let cte = if eight_bit { "8bit" } else { "7bit" };
        let head = format!(
            "\r\n--{boundary}\r\nContent-Description: Undelivered Message\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: {cte}\r\n\r\n"
        );
        out.extend_from_slice(head.as_bytes());
        let at = out.len();
        out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        return Some(at);
    }
    let content = if full {
        input.original
    } else {
        header_section(input.original)
    };
    let (desc, ctype) = if full {
        ("Undelivered Message", "message/rfc822")
    } else {
        ("Message Headers", "text/rfc822-headers")
    };
    let cte = if content.is_ascii() { "7bit" } else { "8bit" };
    let head = format!(
        "\r\n--{boundary}\r\nContent-Description: {desc}\r\nContent-Type: {ctype}\r\nContent-Transfer-Encoding: {cte}\r\n\r\n"
    );
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(content);
    if !content.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    None
}

/// The original up to (excluding) the blank line that ends its header section.
fn header_section(message: &[u8]) -> &[u8] {
    match message.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(p) => &message[..p + 2],
        None => message,
    }
}

/// One logical line, folded (RFC 5322 §2.2.3) at spaces so that no physical
/// line exceeds 78 octets where possible and never 998 (a reply text can be
/// 4 KiB). `cont` starts continuation lines (`" "` for header fields).
fn fold(line: &str, cont: &str) -> String {
    let clean: String = line
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect();
    let mut out = String::new();
    let mut current = String::new();
    for word in clean.split(' ') {
        if !current.is_empty() && current.len() + 1 + word.len() > 78 {
            out.push_str(&current);
            out.push_str("\r\n");
            current = cont.to_string();
        } else if !current.is_empty() && current != cont {
            current.push(' ');
        }
        let mut word = word;
        while current.len() + word.len() > 900 {
            let mut cut = 900usize
                .saturating_sub(current.len())
                .max(1)
                .min(word.len());
            while !word.is_char_boundary(cut) {
                cut -= 1;
            }
            current.push_str(&word[..cut]);
            out.push_str(&current);
            out.push_str("\r\n");
            current = cont.to_string();
            word = &word[cut..];
        }
        current.push_str(word);
    }
    out.push_str(&current);
    out.push_str("\r\n");
    out
}

/// RFC 5322 §3.3 date-time in UTC, e.g. `Fri, 27 Nov 2026 21:02:30 +0000`.
pub fn rfc5322_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {} {} {} {:02}:{:02}:{:02} +0000",
        WEEKDAYS[days.rem_euclid(7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
