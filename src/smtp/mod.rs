//! SMTP: the wire types of the submission side ([`wire`]: replies as values,
//! command parsing over `smtp-proto`), the submission server ([`server`]) and
//! the outbound client ([`client`]). The RFC 3461 DSN parameters [`Ret`] and
//! [`Notify`] are the queue's, converted to and from the wire in [`queue_edge`].

pub use danerelay_queue::{Notify, Ret};

pub mod client;
pub mod queue_edge;
pub mod server;
pub mod tls_names;
pub mod wire;
