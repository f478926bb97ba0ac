//! DANE for outbound SMTP (RFC 7672, RFC 7671): TLSA usability and digest
//! agility (`tlsa`), the per-host TLS decision (`policy`), the verdict on a
//! certificate chain (`verify`), the rustls verifiers and client configs
//! (`verifier`), the per-policy config cache that lets repeat peers resume
//! TLS sessions (`resume`). `tlsa`, `policy` and `verify` are pure;
//! `danerelay dane verify` is their front end in `crate::cli::dane`.

pub mod policy;
pub mod provider;
pub mod resume;
pub mod tlsa;
pub mod verifier;
pub mod verify;

pub use policy::{
    decide, Assurance, DanePolicy, DaneTarget, Decision, DeferReason, HostDns, MandatoryTls,
    TlsaInput, WebPkiTarget,
};
pub use resume::{PolicyKey, TlsConfigCache};
pub use tlsa::{usable_records, TlsaRecord, Unusable};
pub use verifier::{
    client_config, client_setup, rejection_verdict, ring_provider, DaneVerifier, TlsClientSetup,
    UnauthenticatedVerifier,
};
pub use verify::{verify_chain, DaneMatch, Failure, Verdict};

/// Errors of the DANE module.
#[derive(Debug, thiserror::Error)]
pub enum DaneError {
    /// A TLSA record in presentation form could not be parsed.
    #[error("invalid TLSA record {input:?}: {reason}")]
    TlsaSyntax { input: String, reason: String },
    /// The chain verified against no usable record: there were none.
    #[error("no usable TLSA records")]
    NoUsableTlsa,
    /// DANE authentication failed.
    #[error("DANE verification failed: {0}")]
    Verification(#[from] Failure),
    /// A name that cannot be used as SNI.
    #[error("invalid server name {name:?}")]
    InvalidName { name: String },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[source] rustls::Error),
    /// The certificate file could not be read.
    #[error("reading certificate chain {path}: {reason}")]
    ChainFile { path: String, reason: String },
}
