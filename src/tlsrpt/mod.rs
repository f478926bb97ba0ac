//! TLS-RPT, the sending side (RFC 8460): count each session's TLS result per
//! policy domain and UTC day ([`recorder`]), and after the day ends send
//! one gzip'd JSON report ([`report`]) to each `rua` the domain publishes.
//!
//! - [`day`]      — UTC days (pure).
//! - [`model`]    — policy and result types, per-day counts (pure).
//! - [`report`]   — the RFC 8460 §4.4 JSON and its gzip (pure).
//! - [`recorder`] — in-memory batching, durable counts in the queue database.
//! - [`rua`]      — the `_smtp._tls` TXT record (pure).
//! - [`mail`]     — a report as a `multipart/report` message (pure).
//! - [`https`]    — a report as an HTTPS POST.
//! - [`preview`]  — a day's reports without sending (`tls-rpt preview`).
//! - [`sender`]   — due reports → durable outbox → mail / POST, with retries.

pub mod day;
pub mod https;
pub mod mail;
pub mod model;
pub mod preview;
pub mod recorder;
pub mod report;
pub mod rua;
pub mod sender;

pub use day::Day;
pub use model::{DomainDay, Failure, Policy, PolicyType, ResultType, SessionResult};
pub use recorder::Recorder;
