//! The envelope of one outbound message and the command lines the client
//! sends for it (sans-I/O): `MAIL FROM` with only the parameters the peer
//! advertised, `RCPT TO` with RFC 3461 `NOTIFY`/`ORCPT` when it offers DSN.

use super::reply::Capabilities;
use crate::smtp::queue_edge::{notify_param, ret_param, strip_rfc822};
use crate::smtp::{Notify, Ret};

/// One recipient of an outbound transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub address: String,
    /// RFC 3461 `ORCPT` address, xtext-decoded, type `rfc822` implied (as
    /// `smtp-proto` hands it to the submission server). A leading `rfc822;` is tolerated.
    pub orcpt: Option<String>,
    /// `None` = the submitter gave no NOTIFY, so none is passed on.
    pub notify: Option<Notify>,
}

impl Recipient {
    /// A plain recipient without DSN parameters.
    pub fn new(address: impl Into<String>) -> Recipient {
        Recipient {
            address: address.into(),
            orcpt: None,
            notify: None,
        }
    }
}

/// The envelope of one message for one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// `""` for the null reverse-path `<>`.
    pub sender: String,
    pub recipients: Vec<Recipient>,
    /// Message size in octets (RFC 1870 `SIZE=`), when known.
    pub size: Option<u64>,
    /// The body has 8-bit octets (submitted with `BODY=8BITMIME`).
    pub body_8bit: bool,
    /// Submitted with `SMTPUTF8` (RFC 6531).
    pub smtputf8: bool,
    /// DKIM-signed by the relay at acceptance: the content must go out as it
    /// is, so no 8BITMIME downgrade (it was made 7-bit before signing).
    pub relay_signed: bool,
    pub ret: Option<Ret>,
    /// RFC 3461 `ENVID`, xtext-decoded.
    pub envid: Option<String>,
    /// `X-DANERELAY-ARRIVAL`: handing a message to another danerelay
    /// (`queue drain`), its arrival here in Unix seconds. Only ever sent to a
    /// relay that takes it (a danerelay, as a relay account).
    pub arrival: Option<u64>,
}

impl Envelope {
    /// An envelope with no optional parameters.
    pub fn new(sender: impl Into<String>, recipients: Vec<Recipient>) -> Envelope {
        Envelope {
            sender: sender.into(),
            recipients,
            size: None,
            body_8bit: false,
            smtputf8: false,
            relay_signed: false,
            ret: None,
            envid: None,
            arrival: None,
        }
    }
}

/// RFC 3461 §4 xtext: `+XX` for `+`, `=`, controls, space and non-ASCII octets.
pub fn xtext(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

/// Removes anything that would let a value break out of its command line.
fn no_crlf(value: &str) -> String {
    value.chars().filter(|c| *c != '\r' && *c != '\n').collect()
}

/// `MAIL FROM:<…>` with SIZE, BODY=8BITMIME, SMTPUTF8, RET and ENVID — each
/// only when the peer advertised the extension (RFC 5321 §4.1.1.11: a
/// parameter the server did not announce must not be sent).
///
/// An 8-bit body to a peer without 8BITMIME goes without `BODY=`, converted
/// to 7-bit MIME on the way (RFC 6152 §3, see `downgrade`) unless the relay
/// signed it. An SMTPUTF8 message is different: it is refused before MAIL
/// (RFC 6531 §3.4).
pub fn mail_from_line(env: &Envelope, caps: &Capabilities) -> String {
    let mut line = format!("MAIL FROM:<{}>", no_crlf(&env.sender));
    if caps.size() {
        if let Some(size) = env.size {
            line.push_str(&format!(" SIZE={size}"));
        }
    }
    if env.body_8bit && caps.eight_bit_mime() {
        line.push_str(" BODY=8BITMIME");
    }
    if env.smtputf8 && caps.smtputf8() {
        line.push_str(" SMTPUTF8");
    }
    if caps.dsn() {
        if let Some(ret) = env.ret {
            line.push_str(&format!(" RET={}", ret_param(ret)));
        }
        if let Some(envid) = &env.envid {
            line.push_str(&format!(" ENVID={}", xtext(envid)));
        }
    }
    if let Some(secs) = env.arrival {
        line.push_str(&format!(" X-DANERELAY-ARRIVAL={secs}"));
    }
    line.push_str("\r\n");
    line
}

/// `RCPT TO:<…>` with NOTIFY and ORCPT when the peer offers DSN (RFC 3461 §4).
pub fn rcpt_to_line(rcpt: &Recipient, caps: &Capabilities) -> String {
    let mut line = format!("RCPT TO:<{}>", no_crlf(&rcpt.address));
    if caps.dsn() {
        if let Some(notify) = rcpt.notify {
            line.push_str(&format!(" NOTIFY={}", notify_param(notify)));
        }
        if let Some(orcpt) = &rcpt.orcpt {
            let addr = strip_rfc822(orcpt);
            line.push_str(&format!(" ORCPT=rfc822;{}", xtext(addr)));
        }
    }
    line.push_str("\r\n");
    line
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use smtp_proto::{Request, MAIL_BODY_8BITMIME, MAIL_RET_HDRS, MAIL_SMTPUTF8};
    use smtp_proto::{RCPT_NOTIFY_DELAY, RCPT_NOTIFY_FAILURE, RCPT_NOTIFY_NEVER};

    fn caps(ext: &str) -> Capabilities {
        let mut raw = String::from("250-mx\r\n");
        for e in ext.split_whitespace() {
            raw.push_str(&format!("250-{e}\r\n"));
        }
        raw.push_str("250 HELP\r\n");
        Capabilities::parse(raw.as_bytes()).unwrap()
    }

    fn full_envelope() -> Envelope {
        Envelope {
            size: Some(1234),
            body_8bit: true,
            smtputf8: true,
            ret: Some(Ret::Headers),
            envid: Some("id+1 x".into()),
            ..Envelope::new("a@example.org", vec![])
        }
    }

    #[test]
    fn mail_parameters_only_where_advertised() {
        let env = full_envelope();
        assert_eq!(
            mail_from_line(&env, &caps("")),
            "MAIL FROM:<a@example.org>\r\n"
        );
        let all = mail_from_line(&env, &caps("SIZE 9999 8BITMIME SMTPUTF8 DSN"));
        assert_eq!(
            all,
            "MAIL FROM:<a@example.org> SIZE=1234 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=id+2B1+20x\r\n"
        );
        // The server-side grammar reads it back to the same values.
        let Request::Mail { from } = Request::parse(&mut all.as_bytes().iter()).unwrap() else {
            panic!("not MAIL")
        };
        assert_eq!(from.address, "a@example.org");
        assert_eq!(from.size, 1234);
        assert_ne!(from.flags & MAIL_BODY_8BITMIME, 0);
        assert_ne!(from.flags & MAIL_SMTPUTF8, 0);
        assert_ne!(from.flags & MAIL_RET_HDRS, 0);
        assert_eq!(from.env_id.as_deref(), Some("id+1 x"));
        assert_eq!(
            mail_from_line(&Envelope::new("", vec![]), &caps("DSN")),
            "MAIL FROM:<>\r\n"
        );
    }

    #[test]
    fn rcpt_parameters_only_with_dsn() {
        let rcpt = Recipient {
            address: "b@example.net".into(),
            orcpt: Some("rfc822;B+x@Example.NET".into()),
            notify: Some(Notify::DEFAULT),
        };
        assert_eq!(
            rcpt_to_line(&rcpt, &caps("")),
            "RCPT TO:<b@example.net>\r\n"
        );
        let line = rcpt_to_line(&rcpt, &caps("DSN"));
        assert_eq!(
            line,
            "RCPT TO:<b@example.net> NOTIFY=FAILURE,DELAY ORCPT=rfc822;B+2Bx@Example.NET\r\n"
        );
        let Request::Rcpt { to } = Request::parse(&mut line.as_bytes().iter()).unwrap() else {
            panic!("not RCPT")
        };
        assert_eq!(to.orcpt.as_deref(), Some("B+x@Example.NET"));
        assert_eq!(
            to.flags & (RCPT_NOTIFY_FAILURE | RCPT_NOTIFY_DELAY),
            RCPT_NOTIFY_FAILURE | RCPT_NOTIFY_DELAY
        );
        let never = Recipient {
            notify: Some(Notify {
                success: false,
                failure: true,
                delay: false,
                never: true,
            }),
            ..Recipient::new("c@example.net")
        };
        let line = rcpt_to_line(&never, &caps("DSN"));
        let Request::Rcpt { to } = Request::parse(&mut line.as_bytes().iter()).unwrap() else {
            panic!("not RCPT")
        };
        assert_eq!(to.flags, RCPT_NOTIFY_NEVER);
    }

    #[test]
    fn injected_line_breaks_cannot_split_a_command() {
        let line = mail_from_line(&Envelope::new("a@x\r\nRCPT TO:<evil>", vec![]), &caps(""));
        assert_eq!(line.matches("\r\n").count(), 1);
        assert_eq!(xtext("é+="), "+C3+A9+2B+3D");
    }
}
