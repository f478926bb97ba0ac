//! [`Stage`]: the sans-I/O hook between an entry point's assembled message
//! (the relay's `Received:`, `Message-ID:`, `Date:` already in) and its store.
//! Chunks flow straight through unless the message will be signed: the
//! header section is held until it is complete, [`Signer::plan`] decides,
//! and a message to be signed is then held whole until [`Stage::finish`],
//! because its `DKIM-Signature:` fields go before its first byte and cover
//! its last (the queue cannot prepend to a body it has already stored).

use std::sync::Arc;

use super::from::header_end;
use super::signer::{Plan, Signer};

/// A header section still without its blank line after this many octets is
/// decided on as it is (the server refuses such sections anyway:
/// `limits.max_header_size`).
const HEAD_LIMIT: usize = 256 * 1024;

enum State {
    /// Collecting the header section; `scanned` octets hold no blank line.
    Head { buf: Vec<u8>, scanned: usize },
    /// Not signing: everything goes straight through.
    Pass,
    /// Signing: holding the whole message.
    Hold(Vec<u8>),
}

/// What is left to do when the content is complete.
#[derive(Debug, PartialEq, Eq)]
pub enum Finish {
    /// Write these remaining bytes; nothing to sign.
    Pass(Vec<u8>),
    /// Sign this whole message, then write the signature fields and it.
    Sign(Vec<u8>),
}

/// One message's way through signing.
pub struct Stage {
    signer: Arc<Signer>,
    /// For the log line when a message is not signed.
    queue_id: Option<String>,
    state: State,
}

impl Stage {
    pub fn new(signer: Arc<Signer>, queue_id: Option<String>) -> Stage {
        let state = if signer.is_empty() {
            State::Pass
        } else {
            State::Head {
                buf: Vec::new(),
                scanned: 0,
            }
        };
        Stage {
            signer,
            queue_id,
            state,
        }
    }

    /// Takes the next chunk; returns what may be written downstream now.
    pub fn push(&mut self, chunk: Vec<u8>) -> Option<Vec<u8>> {
        match &mut self.state {
            State::Pass => Some(chunk),
            State::Hold(buf) => {
                buf.extend_from_slice(&chunk);
                None
            }
            State::Head { buf, scanned } => {
                if buf.is_empty() {
                    *buf = chunk;
                } else {
                    buf.extend_from_slice(&chunk);
                }
                let end = if *scanned == 0 {
                    header_end(buf)
                } else {
                    let from = *scanned - 3.min(*scanned);
                    buf[from..]
                        .windows(4)
                        .position(|w| w == b"\r\n\r\n")
                        .map(|p| from + p + 2)
                }
                .or((buf.len() > HEAD_LIMIT).then_some(buf.len()));
                *scanned = buf.len();
                let end = end?;
                let buf = std::mem::take(buf);
                self.decide(buf, end)
            }
        }
    }

    /// Holds `buf` when its header section (`..end`) calls for signing,
    /// else hands it back to be written.
    fn decide(&mut self, buf: Vec<u8>, end: usize) -> Option<Vec<u8>> {
        let id = self.queue_id.as_deref().unwrap_or("-");
        match self.signer.plan(&buf[..end]) {
            Plan::Sign { .. } => {
                self.state = State::Hold(buf);
                return None;
            }
            Plan::Unsigned(problem) => {
                tracing::warn!(queue_id = %id, reason = %problem, "DKIM: not signing: From: names no single domain");
            }
            Plan::NoKey { domain } => {
                tracing::debug!(queue_id = %id, from_domain = %domain, "DKIM: no key for the From: domain");
            }
            Plan::Off => {}
        }
        self.state = State::Pass;
        Some(buf)
    }

    /// The content is complete.
    pub fn finish(mut self) -> Finish {
        match std::mem::replace(&mut self.state, State::Pass) {
            State::Pass => Finish::Pass(Vec::new()),
            State::Hold(buf) => Finish::Sign(buf),
            State::Head { buf, .. } => {
                // No blank line: the whole message is header section.
                let end = buf.len();
                match self.decide(buf, end) {
                    Some(buf) => Finish::Pass(buf),
                    None => match std::mem::replace(&mut self.state, State::Pass) {
                        State::Hold(buf) => Finish::Sign(buf),
                        _ => Finish::Pass(Vec::new()),
                    },
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::dkim::key::KeyConfig;
    use crate::metrics::Metrics;

    fn signer() -> (tempfile::TempDir, Arc<Signer>) {
        let dir = tempfile::tempdir().unwrap();
        let key = crate::dkim::keygen::generate(crate::dkim::keygen::Algorithm::Ed25519).unwrap();
        let path = dir.path().join("k.pem");
        crate::dkim::keygen::write_key_file(&path, &key.pem).unwrap();
        let cfg = KeyConfig {
            domain: "example.com".into(),
            selector: "s".into(),
            private_key: path,
            subdomains: false,
        };
        (dir, Arc::new(Signer::load(&[cfg], Metrics::new()).unwrap()))
    }

    /// Feeds `msg` in pieces of `size`; returns (streamed bytes, finish).
    fn run(signer: &Arc<Signer>, msg: &[u8], size: usize) -> (Vec<u8>, Finish) {
        let mut stage = Stage::new(signer.clone(), Some("Q1".into()));
        let mut out = Vec::new();
        for piece in msg.chunks(size) {
            if let Some(b) = stage.push(piece.to_vec()) {
                out.extend_from_slice(&b);
            }
        }
        (out, stage.finish())
    }

    #[test]
    fn holds_only_what_it_signs_whatever_the_chunking() {
        let (_dir, signer) = signer();
        let signed = b"Received: x\r\nFrom: a@example.com\r\n\r\nbody\r\n\r\nmore\r\n";
        let other = b"Received: x\r\nFrom: a@example.org\r\n\r\nbody\r\n\r\nmore\r\n";
        for size in [1, 2, 3, 5, 7, 64] {
            assert_eq!(
                run(&signer, signed, size),
                (Vec::new(), Finish::Sign(signed.to_vec())),
                "size {size}"
            );
            let (mut out, fin) = run(&signer, other, size);
            let Finish::Pass(rest) = fin else {
                panic!("size {size}")
            };
            out.extend_from_slice(&rest);
            assert_eq!(out, other.to_vec(), "size {size}");
        }
        // All header, no blank line: decided at the end.
        let (out, fin) = run(&signer, b"Received: x\r\nFrom: a@example.com\r\n", 4);
        assert!(out.is_empty());
        assert!(matches!(fin, Finish::Sign(_)));
    }

    #[test]
    fn without_keys_everything_streams() {
        let off = Arc::new(Signer::disabled(Metrics::new()));
        let msg = b"From: a@example.com\r\n\r\nbody\r\n";
        assert_eq!(run(&off, msg, 3), (msg.to_vec(), Finish::Pass(Vec::new())));
    }
}
