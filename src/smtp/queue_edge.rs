//! The one edge between the wire and the queue's model (RFC 3461 DSN
//! parameters and replies): RET and NOTIFY as `smtp-proto` parses them and
//! as the client writes them, ORCPT as the queue stores it, and the reply
//! line the queue keeps. [`Ret`] and [`Notify`] themselves are the queue's
//! (`danerelay_queue` must not import this crate), re-exported by
//! [`crate::smtp`].

use danerelay_queue::{Notify, Ret};

use super::Reply;

/// RFC 3461 §4.3 `RET` from `smtp-proto`'s MAIL flags, if given.
pub fn ret_from_mail(mail_flags: u64) -> Option<Ret> {
    if mail_flags & smtp_proto::MAIL_RET_FULL != 0 {
        Some(Ret::Full)
    } else if mail_flags & smtp_proto::MAIL_RET_HDRS != 0 {
        Some(Ret::Headers)
    } else {
        None
    }
}

/// RFC 3461 §4.1 `NOTIFY` from `smtp-proto`'s RCPT flags, if given (`None` =
/// the default applies later, see [`Notify`]).
pub fn notify_from_rcpt(rcpt_flags: u64) -> Option<Notify> {
    use smtp_proto::{
        RCPT_NOTIFY_DELAY, RCPT_NOTIFY_FAILURE, RCPT_NOTIFY_NEVER, RCPT_NOTIFY_SUCCESS,
    };
    let any = RCPT_NOTIFY_DELAY | RCPT_NOTIFY_FAILURE | RCPT_NOTIFY_NEVER | RCPT_NOTIFY_SUCCESS;
    (rcpt_flags & any != 0).then_some(Notify {
        success: rcpt_flags & RCPT_NOTIFY_SUCCESS != 0,
        failure: rcpt_flags & RCPT_NOTIFY_FAILURE != 0,
        delay: rcpt_flags & RCPT_NOTIFY_DELAY != 0,
        never: rcpt_flags & RCPT_NOTIFY_NEVER != 0,
    })
}

/// The `RET=` value (RFC 3461 §4.3).
pub fn ret_param(ret: Ret) -> &'static str {
    match ret {
        Ret::Full => "FULL",
        Ret::Headers => "HDRS",
    }
}

/// The `NOTIFY=` value, e.g. `SUCCESS,FAILURE`; `NEVER` wins over the rest
/// (RFC 3461 §4.1), and an empty set is sent as `NEVER`.
pub fn notify_param(notify: Notify) -> String {
    if notify.never {
        return "NEVER".to_string();
    }
    let parts: Vec<&str> = [
        (notify.success, "SUCCESS"),
        (notify.failure, "FAILURE"),
        (notify.delay, "DELAY"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    if parts.is_empty() {
        "NEVER".to_string()
    } else {
        parts.join(",")
    }
}

/// NOTIFY as the queue stores it: not given ⇒ the default (RFC 3461 §4.1).
pub fn notify_to_queue(notify: Option<Notify>) -> Notify {
    notify.unwrap_or_default()
}

/// NOTIFY as the client passes it on: the queue stores the default when none
/// was given, so the default is not repeated on the next hop.
pub fn notify_from_queue(notify: Notify) -> Option<Notify> {
    (notify != Notify::default()).then_some(notify)
}

/// ORCPT as the queue keeps it: with its address type, as received (RFC
/// 3461 §4.2); `smtp-proto` hands the server the xtext-decoded address.
pub fn orcpt_to_queue(address: &str) -> String {
    format!("rfc822;{address}")
}

/// The address part of an ORCPT value given with or without its `rfc822;` type.
pub fn strip_rfc822(orcpt: &str) -> &str {
    match orcpt.split_once(';') {
        Some((kind, addr)) if kind.eq_ignore_ascii_case("rfc822") => addr,
        _ => orcpt,
    }
}

/// A reply as the queue records it (`last_reply`, shown by `show` and in a
/// 4.4.7 DSN): on one line.
pub fn reply_to_queue(reply: &Reply) -> String {
    reply.one_line()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ret_and_notify_from_flags() {
        assert_eq!(ret_from_mail(smtp_proto::MAIL_RET_HDRS), Some(Ret::Headers));
        assert_eq!(ret_from_mail(smtp_proto::MAIL_RET_FULL), Some(Ret::Full));
        assert_eq!(ret_from_mail(smtp_proto::MAIL_BODY_8BITMIME), None);
        assert_eq!(notify_from_rcpt(0), None);
        assert_eq!(
            notify_from_rcpt(smtp_proto::RCPT_NOTIFY_DELAY),
            Some(Notify {
                success: false,
                failure: false,
                delay: true,
                never: false,
            })
        );
    }

    #[test]
    fn params_and_queue_forms() {
        assert_eq!(ret_param(Ret::Headers), "HDRS");
        assert_eq!(notify_param(Notify::DEFAULT), "FAILURE,DELAY");
        let none = Notify {
            failure: false,
            delay: false,
            ..Notify::DEFAULT
        };
        assert_eq!(notify_param(none), "NEVER");
        assert_eq!(notify_to_queue(None), Notify::DEFAULT);
        assert_eq!(notify_from_queue(Notify::DEFAULT), None);
        assert_eq!(notify_from_queue(none), Some(none));
        assert_eq!(orcpt_to_queue("a@x"), "rfc822;a@x");
        assert_eq!(strip_rfc822("RFC822;a@x"), "a@x");
        assert_eq!(strip_rfc822("a@x"), "a@x");
    }
}
