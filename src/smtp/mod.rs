//! (being built)

pub mod client;
