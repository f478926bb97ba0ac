//! Integration tests: one binary, one module per area.
#![allow(clippy::unwrap_used)]

mod admin;
mod cli;
mod client;
mod dane;
mod delivery;
mod deploy;
mod dns;
mod ops;
mod security;
mod smtp;
mod storage;
mod support;
