//! (being built)

pub mod routing;
