//! # danerelay
//!
//! # Layout
//! - `config`   — typed, validated configuration.
//! - `dns`      — lookups that carry their DNSSEC status; MX routing.
//! - `dane`     — RFC 7672 TLSA usability, policy decision and the rustls verifier.
//! - `smtp`     — the wire (sans-I/O) and the submission server.
//! - `auth`     — users file (Argon2id) and sender policy.
//! - `delivery` — the outbound side.
//! - `http`     — metrics, health, admin API.
#![forbid(unsafe_code)]

pub mod auth;
pub mod config;
pub mod dane;
pub mod delivery;
pub mod dns;
pub mod http;
pub mod smtp;
