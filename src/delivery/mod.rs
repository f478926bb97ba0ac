//! (being built)

pub mod dsn;
pub mod outcome;
pub mod retry;
