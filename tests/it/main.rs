//! Integration tests: one binary, one module per area.
#![allow(clippy::unwrap_used)]

mod cli;
mod deploy;
mod support;
