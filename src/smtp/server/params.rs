//! MAIL and RCPT parameters, sans I/O: which ones this server accepts (only
//! those of advertised extensions). The RFC 3461 DSN parameters are read in
//! [`crate::smtp::queue_edge`].

use smtp_proto::MailFrom;

/// Parameters of extensions this server does not advertise (RFC 5321 §4.1.1.11:
/// 555 for unrecognised MAIL parameters).
pub fn unsupported_mail_param(from: &MailFrom<String>) -> Option<&'static str> {
    use smtp_proto::{
        MAIL_BODY_BINARYMIME, MAIL_BY_NOTIFY, MAIL_BY_RETURN, MAIL_CONPERM, MAIL_REQUIRETLS,
    };
    if from.flags & MAIL_BODY_BINARYMIME != 0 {
        Some("BODY=BINARYMIME")
    } else if from.flags & MAIL_REQUIRETLS != 0 {
        Some("REQUIRETLS")
    } else if from.flags & MAIL_CONPERM != 0 {
        Some("CONPERM")
    } else if from.flags & (MAIL_BY_NOTIFY | MAIL_BY_RETURN) != 0 || from.by != 0 {
        Some("BY")
    } else if from.hold_for != 0 || from.hold_until != 0 {
        Some("HOLDFOR/HOLDUNTIL")
    } else if from.mtrk.is_some() {
        Some("MTRK")
    } else if from.trans_id.is_some() {
        Some("TRANSID")
    } else if from.solicit.is_some() {
        Some("SOLICIT")
    } else if from.mt_priority != 0 {
        Some("MT-PRIORITY")
    } else {
        None
    }
}

/// The MAIL parameter a relay hands a message on with: its original arrival
/// time at the first relay, in seconds since the Unix epoch (`queue drain`).
/// An `xtext`-free esmtp-keyword (RFC 5321 §4.1.2), so the `X-` prefix
/// keeps it out of any registered extension's way.
pub const ARRIVAL_PARAM: &str = "X-DANERELAY-ARRIVAL";

/// What a MAIL line said about [`ARRIVAL_PARAM`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    At(u64),
    /// Present but not decimal seconds (or given twice).
    Malformed,
}

/// Takes [`ARRIVAL_PARAM`] out of a `MAIL FROM:` line (which `smtp-proto`
/// would refuse as unknown), returning the line without it. Any other line
/// comes back untouched.
pub fn split_arrival(line: &[u8]) -> (std::borrow::Cow<'_, [u8]>, Option<Arrival>) {
    use std::borrow::Cow;
    let is_mail = line.len() >= 10 && line[..10].eq_ignore_ascii_case(b"MAIL FROM:");
    let prefix = format!(" {ARRIVAL_PARAM}=");
    let Some(text) = is_mail.then(|| std::str::from_utf8(line).ok()).flatten() else {
        return (Cow::Borrowed(line), None);
    };
    let upper = text.to_ascii_uppercase();
    let Some(start) = upper.find(&prefix) else {
        return (Cow::Borrowed(line), None);
    };
    let value_at = start + prefix.len();
    let end = text[value_at..]
        .find([' ', '\r', '\n'])
        .map_or(text.len(), |e| value_at + e);
    let value = &text[value_at..end];
    let mut arrival = match value.parse::<u64>() {
        Ok(secs) if !value.starts_with('+') => Arrival::At(secs),
        _ => Arrival::Malformed,
    };
    let rest = format!("{}{}", &text[..start], &text[end..]);
    if rest.to_ascii_uppercase().contains(&prefix) {
        arrival = Arrival::Malformed;
    }
    (Cow::Owned(rest.into_bytes()), Some(arrival))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_arrival_parameter_is_taken_out_of_mail_lines_only() {
        let (line, a) = split_arrival(
            b"MAIL FROM:<a@b.example> SIZE=10 x-danerelay-arrival=1700000000 RET=HDRS\r\n",
        );
        assert_eq!(&*line, b"MAIL FROM:<a@b.example> SIZE=10 RET=HDRS\r\n");
        assert_eq!(a, Some(Arrival::At(1_700_000_000)));
        let (line, a) = split_arrival(b"MAIL FROM:<> X-DANERELAY-ARRIVAL=17\r\n");
        assert_eq!(
            (&*line, a),
            (&b"MAIL FROM:<>\r\n"[..], Some(Arrival::At(17)))
        );
        for bad in ["", "-1", "+5", "1e9", "abc", "99999999999999999999999"] {
            let l = format!("MAIL FROM:<> X-DANERELAY-ARRIVAL={bad}\r\n");
            assert_eq!(
                split_arrival(l.as_bytes()).1,
                Some(Arrival::Malformed),
                "{bad:?}"
            );
        }
        let twice = b"MAIL FROM:<> X-DANERELAY-ARRIVAL=1 X-DANERELAY-ARRIVAL=2\r\n";
        assert_eq!(split_arrival(twice).1, Some(Arrival::Malformed));
        let rcpt = b"RCPT TO:<a@b> X-DANERELAY-ARRIVAL=1\r\n";
        assert_eq!(
            split_arrival(rcpt),
            (std::borrow::Cow::Borrowed(&rcpt[..]), None)
        );
        let plain = b"MAIL FROM:<a@b>\r\n";
        assert_eq!(split_arrival(plain).1, None);
    }

    #[test]
    fn only_advertised_extensions() {
        let mut m = MailFrom::<String>::default();
        assert_eq!(unsupported_mail_param(&m), None);
        m.flags =
            smtp_proto::MAIL_BODY_8BITMIME | smtp_proto::MAIL_SMTPUTF8 | smtp_proto::MAIL_RET_FULL;
        assert_eq!(unsupported_mail_param(&m), None);
        m.flags |= smtp_proto::MAIL_REQUIRETLS;
        assert_eq!(unsupported_mail_param(&m), Some("REQUIRETLS"));
        m.flags = 0;
        m.hold_for = 10;
        assert_eq!(unsupported_mail_param(&m), Some("HOLDFOR/HOLDUNTIL"));
    }
}
