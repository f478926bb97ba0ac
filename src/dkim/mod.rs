//! DKIM signing (RFC 6376, Ed25519 per RFC 8463) on the submission path, and
//! `dkim keygen`.
//!
//! - `key.rs`    — loading a `[[dkim]]` private key: permissions, type, size (RFC 8301).
//! - `from.rs`   — the From: domain of a header section, and which header fields to sign.
//! - `signer.rs` — [`Signer`]: the configured keys (hot-reloaded like the TLS
//!   certificate), key choice, and `sign(message) -> DKIM-Signature lines`.
//! - `stage.rs`  — [`Stage`]: the streaming hook an entry point puts between the
//!   relay's own header additions and the store (holds a message only when it
//!   will be signed).
//! - `keygen.rs` — new keys and the DNS TXT record to publish.
//!
//! Canonicalisation and the signature itself are mail-auth's (with ring);
//! this module decides what is signed, with which key, and when.

pub mod from;
pub mod key;
pub mod keygen;
pub mod signer;
pub mod stage;

pub use key::{KeyError, KeyInfo, LoadedKey};
pub use signer::{watch, Plan, SignError, Signer};
pub use stage::{Finish, Stage};
