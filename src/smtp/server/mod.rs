//! The submission server (SPEC "Submission (inbound)"): listeners, TLS, the
//! sans-I/O session and the content readers. `listener.rs` accepts,
//! `conn.rs` drives one connection's I/O, `session.rs` decides every reply.

pub mod data;
pub mod headers;
pub mod session;
pub mod tls;
