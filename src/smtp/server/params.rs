//! MAIL and RCPT parameters, sans I/O: which ones this server accepts
//! (only those of advertised extensions) and how RFC 3461 DSN parameters map
//! onto the transaction.

use smtp_proto::MailFrom;

use super::session::{NotifyFlags, RetParam};

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

/// RFC 3461 §4.3 `RET`, if given.
pub fn ret(mail_flags: u64) -> Option<RetParam> {
    if mail_flags & smtp_proto::MAIL_RET_FULL != 0 {
        Some(RetParam::Full)
    } else if mail_flags & smtp_proto::MAIL_RET_HDRS != 0 {
        Some(RetParam::Headers)
    } else {
        None
    }
}

/// RFC 3461 §4.1 `NOTIFY`, if given (`None` = the RFC default applies later).
pub fn notify(rcpt_flags: u64) -> Option<NotifyFlags> {
    use smtp_proto::{
        RCPT_NOTIFY_DELAY, RCPT_NOTIFY_FAILURE, RCPT_NOTIFY_NEVER, RCPT_NOTIFY_SUCCESS,
    };
    let any = RCPT_NOTIFY_DELAY | RCPT_NOTIFY_FAILURE | RCPT_NOTIFY_NEVER | RCPT_NOTIFY_SUCCESS;
    (rcpt_flags & any != 0).then_some(NotifyFlags {
        success: rcpt_flags & RCPT_NOTIFY_SUCCESS != 0,
        failure: rcpt_flags & RCPT_NOTIFY_FAILURE != 0,
        delay: rcpt_flags & RCPT_NOTIFY_DELAY != 0,
        never: rcpt_flags & RCPT_NOTIFY_NEVER != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsn_mapping() {
        assert_eq!(ret(smtp_proto::MAIL_RET_HDRS), Some(RetParam::Headers));
        assert_eq!(ret(smtp_proto::MAIL_BODY_8BITMIME), None);
        assert_eq!(notify(0), None);
        assert_eq!(
            notify(smtp_proto::RCPT_NOTIFY_DELAY),
            Some(NotifyFlags {
                delay: true,
                ..Default::default()
            })
        );
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
