//! The security suite (SECURITY.md): attacks over real sockets against an
//! in-process server on 127.0.0.1:0 (open relay, SMTP smuggling, STARTTLS
//! injection, brute force, abuse limits, malformed input), the outbound
//! guarantee that bare CR/LF and over-long lines never reach a peer, and the
//! replay of every fuzz corpus (`fuzz/corpus/*/*`) through the same harness
//! functions the cargo-fuzz targets run.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

#[path = "../../fuzz/harness.rs"]
mod fuzz_harness;
use super::smtp::harness as smtp_harness;

mod harness;

mod fuzz_corpus;
mod limits;
mod malformed;
mod outbound;
mod relay;
mod smuggling;
