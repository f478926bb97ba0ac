//! SMTP: replies as values for both sides ([`reply`]), the wire types of the
//! submission side ([`wire`]: command parsing over `smtp-proto`), the
//! submission server ([`server`]) and the outbound client ([`client`]). The RFC 3461 DSN parameters [`Ret`] and
//! [`Notify`] are the queue's, converted to and from the wire in [`queue_edge`].

pub use danerelay_queue::{Notify, Ret};
pub use reply::{EnhancedCode, Reply};

pub mod client;
pub mod queue_edge;
pub mod reply;
pub mod server;
pub mod tls_names;
pub mod wire;
