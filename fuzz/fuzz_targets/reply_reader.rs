//! cargo-fuzz target `reply_reader`: see `fuzz/harness.rs` for what it checks.
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::reply_reader(data));
