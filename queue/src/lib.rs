//! # danerelay-queue
//!
//! The durable message queue: every message danerelay accepted lives here until
//! each of its recipients is delivered, bounced or expired. No networking.
