//! Integration tests: one binary, one module per area.
#![allow(clippy::unwrap_used)]

mod admin;
mod cli;
mod client;
mod content;
mod content_memory;
mod dane;
mod delivery;
mod deploy;
mod dkim;
mod dns;
mod http_submit;
mod layering;
mod ops;
mod security;
mod sendmail;
mod smtp;
mod storage;
mod sts;
mod support;
mod tlsrpt;
