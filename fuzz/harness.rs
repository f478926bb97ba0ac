//! Fuzz harnesses shared by the cargo-fuzz targets (`fuzz/fuzz_targets/*.rs`)
//! and the corpus replay in `cargo test` (`tests/it/security/fuzz_corpus.rs`):
//! both include this file with `#[path]`, so CI replays exactly what the
//! fuzzer runs. Each function takes arbitrary bytes and panics only when an
//! invariant is broken (a finding); parse errors are normal outcomes.

#![allow(dead_code)]

use std::time::Duration;

use bytes::BytesMut;
use danerelay::smtp::server::data::{ChunkChecker, DataReader};
use danerelay::smtp::server::limits::HeaderCheck;
use danerelay::smtp::server::session::{
    Action, MessageOutcome, Session, SessionConfig, SessionLimits, TlsInfo,
};
use danerelay::smtp::wire::{Line, LineReader};
use danerelay::smtp::Reply;

/// One harness: arbitrary bytes in, a panic only on a broken invariant.
pub type Harness = fn(&[u8]);

/// Every target, by the corpus directory name.
pub const TARGETS: &[(&str, Harness)] = &[
    ("smtp_session", smtp_session),
    ("data_reader", data_reader),
    ("reply_reader", reply_reader),
    ("dane", dane),
    ("config", config),
];

/// A reply on the wire is lines of `NNN[ -]text\r\n` and nothing else: client
/// input echoed in a reply can never inject a line (or a bare CR/LF).
fn check_reply(r: &Reply) {
    assert!((200..=599).contains(&r.code), "reply code {}", r.code);
    let bytes = r.to_bytes();
    assert!(bytes.ends_with(b"\r\n"));
    for line in bytes[..bytes.len() - 2].split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        assert!(!line.contains(&b'\r'), "bare CR in reply {bytes:?}");
        assert!(
            line.len() >= 4 && line[..3] == *r.code.to_string().as_bytes(),
            "reply line without its code: {bytes:?}"
        );
    }
}

/// The submission session fed arbitrary client bytes, exactly as `conn.rs`
/// drives it: line framing, commands, DATA (to the real end), BDAT chunks,
/// STARTTLS and AUTH results. The first byte picks the session flavour.
pub fn smtp_session(input: &[u8]) {
    let Some((&flags, rest)) = input.split_first() else {
        return;
    };
    let cfg = SessionConfig {
        hostname: "relay.test".into(),
        starttls: flags & 1 != 0,
        auth_available: flags & 2 != 0,
        trusted: flags & 4 != 0,
        sender_policy: danerelay::config::SenderPolicy::OwnAddress,
        max_message_size: 4096,
        max_recipients: 5,
        max_auth_failures: 3,
        limits: SessionLimits {
            max_junk_commands: 20,
            max_recipients_per_session: 8,
            ..SessionLimits::default()
        },
    };
    let tls = (flags & 8 != 0).then(tls_info);
    let mut session = Session::new(cfg, tls);
    check_reply(&session.greeting());
    let mut buf = BytesMut::from(rest);
    let mut lines = LineReader::default();
    let mut messages = 0usize;
    while let Some(line) = lines.next_line(&mut buf) {
        let action = match line {
            Line::TooLong => session.on_line_too_long(),
            Line::Complete(l) => session.on_line(&l),
        };
        let _ = session.take_events();
        match action {
            Action::Reply(r) => check_reply(&r),
            Action::Close(r) => {
                check_reply(&r);
                return;
            }
            Action::StartTls(r) => {
                check_reply(&r);
                buf.clear(); // conn.rs drops pipelined plaintext
                lines = LineReader::default();
                session.tls_established(tls_info());
            }
            Action::Authenticate { login, .. } => {
                let ok = login.len() % 2 == 0;
                let next = session.auth_result(ok.then_some(login));
                match next {
                    Action::Reply(r) => check_reply(&r),
                    Action::Close(r) => {
                        check_reply(&r);
                        return;
                    }
                    other => panic!("unexpected action after AUTH: {other:?}"),
                }
            }
            Action::ReadData(r) => {
                check_reply(&r);
                let mut reader = DataReader::new(session.max_message_size());
                let mut out = Vec::new();
                let Some(end) = reader.feed(&buf, &mut out) else {
                    return; // the client never finished the message
                };
                let _ = buf.split_to(end);
                messages += 1;
                let st = reader.status();
                let outcome = if st.bare_line_ending {
                    MessageOutcome::BareLineEnding
                } else if st.too_large {
                    MessageOutcome::TooLarge
                } else {
                    MessageOutcome::Queued(format!("ID{messages}"))
                };
                check_reply(&session.message_done(outcome));
            }
            Action::ReadChunk { size, last, reject } => {
                if buf.len() < size {
                    return;
                }
                let _ = buf.split_to(size);
                match reject {
                    Some(r) => check_reply(&r),
                    None if last => {
                        messages += 1;
                        let id = format!("ID{messages}");
                        check_reply(&session.message_done(MessageOutcome::Queued(id)));
                    }
                    None => check_reply(&session.chunk_done(size)),
                }
            }
        }
        let _ = session.take_events();
    }
}

fn tls_info() -> TlsInfo {
    TlsInfo {
        version: "TLSv1.3".into(),
        cipher: "TLS_AES_128_GCM_SHA256".into(),
    }
}

/// DATA and BDAT content readers: the first byte is a cut point; the reader
/// must give the same result whether the bytes arrive whole or in two parts,
/// never end except after `CRLF.CRLF`, and never store past the limit.
pub fn data_reader(input: &[u8]) {
    let Some((&cut, body)) = input.split_first() else {
        return;
    };
    let limit = 512;
    let whole = {
        let mut r = DataReader::new(limit);
        let mut out = Vec::new();
        let end = r.feed(body, &mut out);
        (out, end, r.status())
    };
    let cut = usize::from(cut).min(body.len());
    let mut r = DataReader::new(limit);
    let mut out = Vec::new();
    let end = match r.feed(&body[..cut], &mut out) {
        Some(n) => Some(n),
        None => r.feed(&body[cut..], &mut out).map(|n| n + cut),
    };
    assert_eq!(whole.0, out);
    assert_eq!(whole.1, end);
    assert_eq!(whole.2, r.status());
    assert!(out.len() as u64 <= limit, "stored past the limit");
    if let Some(n) = end {
        let consumed = &body[..n];
        assert!(consumed.ends_with(b".\r\n"));
        assert!(n == 3 || consumed.ends_with(b"\r\n.\r\n"), "ended early");
    }
    if !whole.2.bare_line_ending && !whole.2.too_large {
        // Clean content has only CRLF line endings.
        for (i, &b) in out.iter().enumerate() {
            if b == b'\n' {
                assert!(i > 0 && out[i - 1] == b'\r');
            }
            if b == b'\r' {
                assert_eq!(out.get(i + 1), Some(&b'\n'));
            }
        }
    }
    // BDAT: the same bytes as chunks, cut at the same place.
    let mut c = ChunkChecker::new(limit);
    let a = c.feed(&body[..cut]).len();
    let b = c.feed(&body[cut..]).len();
    let st = c.finish();
    assert!(a + b <= body.len());
    let mut one = ChunkChecker::new(limit);
    one.feed(body);
    assert_eq!(one.finish().bare_line_ending, st.bare_line_ending);
    // The header check is split-invariant too.
    let mut h1 = HeaderCheck::new(256, 8);
    h1.feed(body);
    let mut h2 = HeaderCheck::new(256, 8);
    h2.feed(&body[..cut]);
    h2.feed(&body[cut..]);
    assert_eq!(h1.violation(), h2.violation());
    assert_eq!(h1.fields(), h2.fields());
}

/// The outbound client's reply parser on arbitrary server bytes: always
/// makes progress or asks for more, and every reply it returns is sane.
pub fn reply_reader(input: &[u8]) {
    use danerelay::smtp::client::{Capabilities, ReplyReader};
    let mut reader = ReplyReader::default();
    let mut rest = input;
    let mut rounds = 0;
    while !rest.is_empty() {
        rounds += 1;
        assert!(rounds <= input.len() + 1, "reply reader does not progress");
        let (used, read) = reader.feed(rest);
        assert!(used <= rest.len());
        rest = &rest[used..];
        match read {
            None => break,
            Some(Ok((reply, raw))) => {
                assert!((200..=599).contains(&reply.code));
                let _ = reply.one_line();
                let _ = reply.status();
                let _ = Capabilities::parse(&raw);
            }
            Some(Err(_)) => {}
        }
        if used == 0 {
            break;
        }
    }
    let _ = Capabilities::parse(input);
}

/// TLSA presentation parsing and the DANE verdict with arbitrary records and
/// certificates. Layout: text lines (TLSA records) up to the first NUL, then
/// one raw record (usage, selector, matching, length, data) and certificates
/// as (u16 length, DER) pairs.
pub fn dane(input: &[u8]) {
    use danerelay::dane::{verify_chain, TlsaRecord, Verdict};
    use rustls_pki_types::{CertificateDer, UnixTime};
    let (text, bin) = match input.iter().position(|&b| b == 0) {
        Some(p) => (&input[..p], &input[p + 1..]),
        None => (input, &[][..]),
    };
    let mut records: Vec<TlsaRecord> = String::from_utf8_lossy(text)
        .lines()
        .filter_map(|l| TlsaRecord::parse(l).ok())
        .collect();
    for r in &records {
        let _ = r.usability();
    }
    let mut bin = bin;
    if bin.len() >= 4 {
        let len = usize::from(bin[3]).min(bin.len() - 4);
        records.push(TlsaRecord {
            usage: bin[0],
            selector: bin[1],
            matching: bin[2],
            data: bin[4..4 + len].to_vec(),
        });
        bin = &bin[4 + len..];
    }
    let mut chain = Vec::new();
    while bin.len() >= 2 && chain.len() < 4 {
        let len = usize::from(u16::from_be_bytes([bin[0], bin[1]])).min(bin.len() - 2);
        chain.push(CertificateDer::from(bin[2..2 + len].to_vec()));
        bin = &bin[2 + len..];
    }
    let now = UnixTime::since_unix_epoch(Duration::from_secs(1_800_000_000));
    let names = ["mx.example.com".to_string()];
    let verdict = verify_chain("example.com", &names, &chain, &records, now);
    if chain.is_empty() {
        assert!(!matches!(verdict, Verdict::Verified(_)), "verified nothing");
    }
    if records.iter().all(|r| r.usability().is_err()) {
        assert_eq!(verdict, Verdict::NoUsableTlsa);
    }
}

/// Configuration parsing: any text gives a config or key-pathed errors.
pub fn config(input: &[u8]) {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    match danerelay::config::parse(text) {
        Ok(loaded) => {
            let l = &loaded.config.limits;
            assert!(l.max_recipients >= 1 && l.max_connections >= 1);
            assert!(l.max_header_size <= l.max_message_size.max(1024));
        }
        Err(errors) => assert!(!errors.is_empty(), "Err without errors"),
    }
}
