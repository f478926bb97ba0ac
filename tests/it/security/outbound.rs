//! Outbound: the client's body encoder (the only way a body reaches a peer)
//! never emits a bare CR or LF, never a line over 998 octets, and never a
//! line that could end DATA early — so a body that was (or would have been)
//! refused inbound cannot reach a peer even if it got into the queue.

use danerelay::smtp::client::{BodyEncoder, BodyError, MAX_LINE};
use proptest::prelude::*;

fn encode(mut enc: BodyEncoder, body: &[u8], piece: usize) -> Result<Vec<u8>, BodyError> {
    let mut out = Vec::new();
    for p in body.chunks(piece.max(1)) {
        enc.encode(p, &mut out)?;
    }
    enc.finish(&mut out)?;
    Ok(out)
}

#[test]
fn bodies_with_bare_line_endings_or_long_lines_are_refused() {
    for body in [
        &b"Subject: x\r\n\r\nline\n.\nMAIL FROM:<e@x>\r\n"[..],
        b"a\rb\r\n",
        b"a\r\n.\r",
        b"ends with bare CR\r",
        b"\n",
    ] {
        for piece in [1, 3, 1024] {
            assert!(
                encode(BodyEncoder::for_data(), body, piece).is_err(),
                "{body:?}"
            );
            assert!(
                encode(BodyEncoder::for_bdat(), body, piece).is_err(),
                "{body:?}"
            );
        }
    }
    let long = format!("Subject: x\r\n\r\n{}\r\n", "y".repeat(MAX_LINE + 1));
    assert_eq!(
        encode(BodyEncoder::for_data(), long.as_bytes(), 4096),
        Err(BodyError::LineTooLong { line: 3 })
    );
    let fits = format!("{}\r\n", "y".repeat(MAX_LINE));
    assert!(encode(BodyEncoder::for_data(), fits.as_bytes(), 7).is_ok());
}

#[test]
fn an_embedded_end_of_data_is_dot_stuffed() {
    let out = encode(BodyEncoder::for_data(), b"a\r\n.\r\nMAIL FROM:<e@x>\r\n", 2).unwrap();
    assert_eq!(out, b"a\r\n..\r\nMAIL FROM:<e@x>\r\n.\r\n");
}

proptest! {
    /// Whatever the body, what goes on the wire has only CRLF line endings,
    /// lines of at most 998 octets (+ a stuffing dot), and exactly one
    /// terminating `.` line, at the end.
    #[test]
    fn wire_form_is_always_safe(
        body in proptest::collection::vec(prop_oneof![
            Just(b'\r'), Just(b'\n'), Just(b'.'), Just(b'a'), any::<u8>()], 0..3000),
        piece in 1usize..64,
    ) {
        if let Ok(out) = encode(BodyEncoder::for_data(), &body, piece) {
            prop_assert!(out.ends_with(b".\r\n"));
            let lines: Vec<&[u8]> = out[..out.len() - 2].split(|&b| b == b'\n').collect();
            for (i, line) in lines.iter().enumerate() {
                let last = i + 1 == lines.len();
                let content = if last { line } else {
                    prop_assert!(line.ends_with(b"\r"), "bare LF");
                    &line[..line.len() - 1]
                };
                prop_assert!(!content.contains(&b'\r'), "bare CR");
                prop_assert!(content.len() <= MAX_LINE + 1, "line too long");
                prop_assert_eq!(content == b".", last, "early end of data");
            }
        }
    }
}
