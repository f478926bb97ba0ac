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

#[cfg(test)]
mod tests {
    use super::*;

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
