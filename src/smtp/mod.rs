//! SMTP: the wire types of the submission side ([`wire`]: replies as values,
//! command parsing over `smtp-proto`), the submission server ([`server`]) and
//! the outbound client ([`client`]).

pub mod client;
pub mod server;
pub mod tls_names;
pub mod wire;
