//! A report as mail (RFC 8460 §5.3): `multipart/report; report-type=tlsrpt`
//! with a short text part and the gzip'd JSON as `application/tlsrpt+gzip`,
//! the `TLS-Report-Domain:` / `TLS-Report-Submitter:` headers and the
//! §5.3 subject, DKIM-signed (the caller's signer) before it is queued.

use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::raw::Raw;
use mail_builder::mime::MimePart;
use mail_builder::MessageBuilder;

use super::day::Day;

/// What one report message carries.
pub struct ReportMail<'a> {
    pub from: &'a str,
    pub to: &'a str,
    /// The policy domain reported on.
    pub domain: &'a str,
    /// The submitter (our host name).
    pub submitter: &'a str,
    pub report_id: &'a str,
    pub day: Day,
    /// The gzip'd JSON report.
    pub gzip: &'a [u8],
}

/// The message (CRLF line ends, 7-bit), unsigned.
pub fn compose(m: &ReportMail<'_>) -> std::io::Result<Vec<u8>> {
    let text = format!(
        "This is an aggregate TLS report (RFC 8460) from {} for {} on {} (UTC).\r\n",
        m.submitter, m.domain, m.day
    );
    // RFC 8460 §5.1: <submitter>!<policy-domain>!<begin>!<end>[!<id>].json.gz
    let begin = m
        .day
        .start()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let end = m
        .day
        .end()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let filename = format!("{}!{}!{begin}!{end}.json.gz", m.submitter, m.domain);
    let body = MimePart::new(
        ContentType::new("multipart/report").attribute("report-type", "tlsrpt"),
        vec![
            MimePart::new("text/plain", text),
            MimePart::new("application/tlsrpt+gzip", m.gzip.to_vec()).attachment(filename),
        ],
    );
    let id =
        crate::smtp::server::headers::new_message_id(m.submitter, std::time::SystemTime::now());
    MessageBuilder::new()
        .from(m.from)
        .to(m.to)
        .subject(format!(
            "Report Domain: {} Submitter: {} Report-ID: <{}>",
            m.domain, m.submitter, m.report_id
        ))
        .header("TLS-Report-Domain", Raw::new(m.domain.to_string()))
        .header("TLS-Report-Submitter", Raw::new(m.submitter.to_string()))
        .message_id(id.trim_matches(|c| c == '<' || c == '>').to_string())
        .body(body)
        .write_to_vec()
}

#[cfg(test)]
mod tests {
    use mail_parser::MimeHeaders;

    use super::*;

    #[test]
    fn the_message_has_the_rfc_8460_headers_and_parts() {
        let gz = super::super::report::gzip(&serde_json::json!({"report-id": "x"}));
        let day = Day::parse("2026-12-04").unwrap();
        let raw = compose(&ReportMail {
            from: "noreply-smtp-tls-reporting@relay.test",
            to: "tlsrpt@example.net",
            domain: "example.net",
            submitter: "relay.test",
            report_id: "2026-12-04_example.net@relay.test",
            day,
            gzip: &gz,
        })
        .unwrap();
        let msg = mail_parser::MessageParser::default().parse(&raw).unwrap();
        assert_eq!(
            msg.subject(),
            Some("Report Domain: example.net Submitter: relay.test Report-ID: <2026-12-04_example.net@relay.test>")
        );
        assert_eq!(
            msg.header_raw("TLS-Report-Domain").map(str::trim),
            Some("example.net")
        );
        assert_eq!(
            msg.header_raw("TLS-Report-Submitter").map(str::trim),
            Some("relay.test")
        );
        let ct = msg.content_type().unwrap();
        assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("report")));
        assert_eq!(ct.attribute("report-type"), Some("tlsrpt"));
        let att = msg.attachment(0).unwrap();
        assert_eq!(att.contents(), &gz[..]);
        let name = att.attachment_name().unwrap();
        assert!(
            name.starts_with("relay.test!example.net!") && name.ends_with(".json.gz"),
            "{name}"
        );
        assert!(raw.is_ascii(), "7-bit, so DKIM covers it as sent");
    }
}
