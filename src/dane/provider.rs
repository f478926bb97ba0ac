//! The one rustls crypto provider (ring) every DANE client config and
//! signature check uses; a leaf, so the chain rules (`verify`) and the
//! rustls verifiers (`verifier`) both reach it without importing each other.

use std::sync::{Arc, OnceLock};

use rustls::crypto::{ring, CryptoProvider};

/// The ring provider, built once for the process: every client config
/// shares it (building one allocates its suite and group lists).
pub fn ring_provider() -> &'static Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(ring::default_provider()))
}
