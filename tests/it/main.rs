//! Integration tests: one binary, one module per area.
#![allow(clippy::unwrap_used)]

mod admin;
mod cli;
mod client;
mod dane;
mod delivery;
mod deploy;
mod dkim;
mod dns;
mod http_submit;
mod ops;
mod security;
mod sendmail;
mod smtp;
mod support;
