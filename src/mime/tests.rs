//! Whole-message round trips, checked with `mail-parser` as an independent
//! decoder: every leaf decodes to the same octets before and after.

use super::*;
use mail_parser::{MessageParser, PartType};

/// Every leaf part's decoded octets, in order.
fn decoded(message: &[u8]) -> Vec<Vec<u8>> {
    let m = MessageParser::default().parse(message).unwrap();
    m.parts
        .iter()
        .filter_map(|p| match &p.body {
            PartType::Text(t) | PartType::Html(t) => Some(t.as_bytes().to_vec()),
            PartType::Binary(b) | PartType::InlineBinary(b) => Some(b.to_vec()),
            _ => None,
        })
        .collect()
}

fn lines_ok(m: &[u8]) -> bool {
    m.split(|&b| b == b'\n').all(|l| l.len() <= MAX_LINE + 1)
}

fn long_html() -> String {
    format!("<p>{}</p>", "Grüße, <b>world</b> ".repeat(130))
}

#[test]
fn non_mime_message_with_a_long_line_becomes_mime_qp() {
    let msg = format!(
        "Subject: hi\r\n\r\nshort\r\n{}\r\n.leading dot\r\nend",
        long_html()
    );
    let out = rewrite(msg.as_bytes(), Want::SHORT_LINES).unwrap().unwrap();
    assert!(lines_ok(&out));
    let text = String::from_utf8(out.clone()).unwrap();
    assert!(text.contains("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"), "{text}");
    assert!(
        decoded(&out)
            == vec![format!("short\r\n{}\r\n.leading dot\r\nend", long_html()).into_bytes()]
    );
}

#[test]
fn only_the_part_with_long_lines_changes() {
    let msg = format!(
        "MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"b1\"\r\n\r\n\
preamble\r\n--b1\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\nplain é\r\n\
--b1\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{}\r\n--b1--\r\nepilogue\r\n",
        long_html()
    );
    let raw = msg.as_bytes();
    let out = rewrite(raw, Want::SHORT_LINES).unwrap().unwrap();
    assert!(lines_ok(&out));
    assert_eq!(decoded(&out), decoded(raw));
    let text = String::from_utf8_lossy(&out);
    assert_eq!(text.matches("quoted-printable").count(), 1, "{text}");
    assert!(text.contains("Content-Transfer-Encoding: 8bit\r\n\r\nplain"));
    assert!(rewrite(raw, Want::SEVEN_BIT).unwrap().unwrap().is_ascii());
    assert_eq!(
        decoded(&rewrite(raw, Want::SEVEN_BIT).unwrap().unwrap()),
        decoded(raw)
    );
}

#[test]
fn nested_multipart_base64_rewrap_and_binary_part() {
    let b64 = "QUJDREVGR0g=".repeat(100);
    let binary = b"\x00\x01\xff\r\nbin";
    let mut msg = format!(
        "Content-Type: multipart/mixed; boundary=outer\r\n\r\n--outer\r\n\
Content-Type: multipart/related; boundary=\"inner\"\r\n\r\n--inner\r\nContent-Type: text/plain\r\n\r\nhello\r\n\
--inner\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}\r\n--inner--\r\n\
--outer\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n"
    )
    .into_bytes();
    msg.extend_from_slice(binary);
    msg.extend_from_slice(format!("{}\r\n--outer--\r\n", "z".repeat(1200)).as_bytes());
    let out = rewrite(&msg, Want::SHORT_LINES).unwrap().unwrap();
    assert!(lines_ok(&out));
    assert_eq!(decoded(&out), decoded(&msg));
    assert!(String::from_utf8_lossy(&out).contains("Content-Transfer-Encoding: base64\r\n\r\nAAH/"));
}

#[test]
fn long_headers_are_folded_and_unfoldable_ones_refused() {
    let to: Vec<String> = (0..120).map(|i| format!("user{i}@example.com")).collect();
    let msg = format!("To: {}\r\nSubject: x\r\n\r\nbody\r\n", to.join(", "));
    let out = rewrite(msg.as_bytes(), Want::SHORT_LINES).unwrap().unwrap();
    assert!(lines_ok(&out));
    let m = MessageParser::default().parse(&out).unwrap();
    assert_eq!(m.to().unwrap().iter().count(), 120);
    assert!(out.ends_with(b"\r\n\r\nbody\r\n"));

    let bad = format!("X-Blob: {}\r\n\r\nbody\r\n", "a".repeat(1500));
    assert_eq!(
        rewrite(bad.as_bytes(), Want::SHORT_LINES),
        Err(Refusal::UnfoldableHeader {
            field: "X-Blob".into()
        })
    );
}

#[test]
fn broken_structure_with_long_lines_is_refused() {
    let no_boundary = format!(
        "Content-Type: multipart/mixed\r\n\r\n{}\r\n",
        "x".repeat(1000)
    );
    assert_eq!(
        rewrite(no_boundary.as_bytes(), Want::SHORT_LINES),
        Err(Refusal::LongLineOutsidePart)
    );
    let uu = format!(
        "Content-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\n{}\r\n",
        "x".repeat(1000)
    );
    assert!(matches!(
        rewrite(uu.as_bytes(), Want::SHORT_LINES),
        Err(Refusal::UnknownEncoding { .. })
    ));
}

#[test]
fn nothing_to_do_is_none() {
    let msg = b"Subject: a\r\n\r\n\xc3\xa9 fine\r\n";
    assert_eq!(rewrite(msg, Want::SHORT_LINES), Ok(None));
    assert!(rewrite(msg, Want::SEVEN_BIT).unwrap().is_some());
    assert_eq!(
        rewrite(b"Subject: a\r\n\r\nascii\r\n", Want::SEVEN_BIT),
        Ok(None)
    );
}

#[test]
fn downgrade_walker_makes_8bit_parts_7bit_in_one_pass() {
    let msg = "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße\r\n\
--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nÄrger\r\n--b--\r\n";
    let mut w = Walker::downgrade();
    let mut out = Vec::new();
    for piece in msg.as_bytes().chunks(5) {
        w.feed(piece, &mut out);
    }
    w.finish(&mut out);
    assert!(out.is_ascii(), "{}", String::from_utf8_lossy(&out));
    assert_eq!(decoded(&out), decoded(msg.as_bytes()));
}

#[test]
fn split_anywhere_gives_the_same_output() {
    let msg = format!(
        "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n{}\r\n--b--\r\n",
        "é".repeat(900)
    );
    let whole = rewrite(msg.as_bytes(), Want::SHORT_LINES).unwrap().unwrap();
    let report = scan(msg.as_bytes());
    let actions = plan(&report, Want::SHORT_LINES).unwrap().unwrap();
    for cut in [1, 2, 3, 100, 1023, 1024, 1025, 1800] {
        let mut w = Walker::apply(actions.clone());
        let mut out = Vec::new();
        for piece in msg.as_bytes().chunks(cut) {
            w.feed(piece, &mut out);
        }
        w.finish(&mut out);
        assert_eq!(out, whole, "cut {cut}");
    }
    let mut sink = Vec::new();
    apply_stream(msg.as_bytes(), actions, &mut sink).unwrap();
    assert_eq!(sink, whole);
}
