//! Integration tests: one binary, one module per area.

mod dane;
mod support;
