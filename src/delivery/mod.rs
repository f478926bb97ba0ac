//! The outbound side: routing (MX → candidate hosts), one attempt, the one
//! outcome type and its mapping, retry math, and DSNs.

pub mod dsn;
pub mod outcome;
pub mod retry;
pub mod routing;
