//! SMTP: the wire types shared by both directions ([`wire`]: replies as
//! values, command parsing over `smtp-proto`) and the submission server
//! ([`server`]). The outbound client lives in `client`.

pub mod server;
pub mod wire;
