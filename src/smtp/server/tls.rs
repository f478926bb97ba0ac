//! The server side of TLS: a rustls configuration (ring, TLS 1.2 and 1.3
//! only — RFC 8314 §4.1, RFC 8996) whose certificate comes from a
//! [`CertResolver`] that can be swapped at run time. With `[tls]` files the
//! certificate is re-read when the files change (cert-manager rotation);
//! established sessions keep their keys, new handshakes get the new chain. The
//! development default is a self-signed certificate made at start with rcgen.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

use super::session::TlsInfo;
use crate::config::TlsSource;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading certificate chain {path}: {detail}")]
    Certificate { path: PathBuf, detail: String },
    #[error("reading private key {path}: {detail}")]
    PrivateKey { path: PathBuf, detail: String },
    #[error("certificate {path} holds no certificate")]
    EmptyChain { path: PathBuf },
    #[error("certificate and key do not fit: {0}")]
    KeyMismatch(rustls::Error),
    #[error("generating the self-signed certificate: {0}")]
    SelfSigned(#[from] rcgen::Error),
    #[error("building the TLS configuration: {0}")]
    Config(rustls::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The current certificate; swapped atomically on reload.
#[derive(Debug)]
pub struct CertResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertResolver {
    pub fn new(key: CertifiedKey) -> Self {
        Self {
            current: RwLock::new(Arc::new(key)),
        }
    }

    pub fn set(&self, key: CertifiedKey) {
        *crate::sync::write(&self.current) = Arc::new(key);
    }

    pub fn get(&self) -> Arc<CertifiedKey> {
        crate::sync::read(&self.current).clone()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

/// Reads a PEM chain (leaf first) and a PEM private key.
pub fn load_pem(certificate: &Path, private_key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certificate)
        .map_err(|e| TlsError::Certificate {
            path: certificate.into(),
            detail: e.to_string(),
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Certificate {
            path: certificate.into(),
            detail: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::EmptyChain {
            path: certificate.into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(private_key).map_err(|e| TlsError::PrivateKey {
        path: private_key.into(),
        detail: e.to_string(),
    })?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(TlsError::KeyMismatch)
}

/// A self-signed certificate for `hostname` (plus localhost and loopback).
pub fn self_signed(hostname: &str) -> Result<CertifiedKey, TlsError> {
    let names = vec![
        hostname.to_string(),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
    ];
    let ck = rcgen::generate_simple_self_signed(names)?;
    let key = PrivateKeyDer::try_from(ck.signing_key.serialize_der()).map_err(|e| {
        TlsError::PrivateKey {
            path: "<generated>".into(),
            detail: e.to_string(),
        }
    })?;
    CertifiedKey::from_der(vec![ck.cert.der().clone()], key, &provider())
        .map_err(TlsError::KeyMismatch)
}

/// The server's TLS: the rustls config shared by every listener plus the
/// resolver that reloads swap into.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub config: Arc<ServerConfig>,
    pub resolver: Arc<CertResolver>,
}

impl ServerTls {
    /// Builds from `[tls]`; logs loudly when the certificate is self-signed.
    pub fn from_source(source: &TlsSource, hostname: &str) -> Result<Self, TlsError> {
        let key = match source {
            TlsSource::Files {
                certificate,
                private_key,
            } => load_pem(certificate, private_key)?,
            TlsSource::SelfSigned => {
                tracing::warn!(
                    hostname,
                    "TLS: using a self-signed certificate generated at start (development default; configure [tls] for production)"
                );
                self_signed(hostname)?
            }
        };
        Self::with_key(key)
    }

    pub fn with_key(key: CertifiedKey) -> Result<Self, TlsError> {
        let resolver = Arc::new(CertResolver::new(key));
        let config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        Ok(Self {
            config: Arc::new(config),
            resolver,
        })
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.clone())
    }
}

/// What a TLS connection negotiated, for the session and `Received:`.
pub fn tls_info(conn: &rustls::ServerConnection) -> TlsInfo {
    let (version, cipher) = crate::smtp::tls_names::negotiated(conn);
    TlsInfo { version, cipher }
}

fn mtimes(paths: &[&Path]) -> Vec<Option<SystemTime>> {
    paths
        .iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

/// Checks the files once; reloads into `resolver` when their modification
/// times differ from `seen`. A chain that fails to load keeps the old one (a
/// rotation caught between writing the key and the certificate heals on the
/// next poll). Returns whether a new certificate was installed.
pub fn reload_if_changed(
    resolver: &CertResolver,
    certificate: &Path,
    private_key: &Path,
    seen: &mut Vec<Option<SystemTime>>,
) -> bool {
    let now = mtimes(&[certificate, private_key]);
    if now == *seen {
        return false;
    }
    match load_pem(certificate, private_key) {
        Ok(key) => {
            resolver.set(key);
            *seen = now;
            tracing::info!(certificate = %certificate.display(), "TLS certificate reloaded");
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "TLS certificate files changed but do not load; keeping the current certificate");
            false
        }
    }
}

/// Polls the certificate files every `every` until `shutdown`.
pub async fn watch(
    resolver: Arc<CertResolver>,
    certificate: PathBuf,
    private_key: PathBuf,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut seen = mtimes(&[&certificate, &private_key]);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        reload_if_changed(&resolver, &certificate, &private_key, &mut seen);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf, Vec<u8>) {
        let ck = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        let (c, k) = (dir.join("tls.crt"), dir.join("tls.key"));
        std::fs::write(&c, ck.cert.pem()).unwrap();
        std::fs::write(&k, ck.signing_key.serialize_pem()).unwrap();
        (c, k, ck.cert.der().to_vec())
    }

    #[test]
    fn loads_and_reloads_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k, der1) = write_pair(dir.path(), "one.example");
        let tls = ServerTls::from_source(
            &TlsSource::Files {
                certificate: c.clone(),
                private_key: k.clone(),
            },
            "h",
        )
        .unwrap();
        assert_eq!(tls.resolver.get().cert[0].as_ref(), der1.as_slice());
        let mut seen = mtimes(&[&c, &k]);
        assert!(!reload_if_changed(&tls.resolver, &c, &k, &mut seen));
        let held = tls.resolver.get(); // an in-flight session's key
        std::thread::sleep(Duration::from_millis(20));
        let (_, _, der2) = write_pair(dir.path(), "two.example");
        assert!(reload_if_changed(&tls.resolver, &c, &k, &mut seen));
        assert_eq!(tls.resolver.get().cert[0].as_ref(), der2.as_slice());
        assert_eq!(held.cert[0].as_ref(), der1.as_slice());
        // A broken rewrite keeps the last good certificate.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&c, "garbage").unwrap();
        assert!(!reload_if_changed(&tls.resolver, &c, &k, &mut seen));
        assert_eq!(tls.resolver.get().cert[0].as_ref(), der2.as_slice());
    }

    #[test]
    fn self_signed_and_bad_files() {
        assert!(ServerTls::from_source(&TlsSource::SelfSigned, "relay.test").is_ok());
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        assert!(load_pem(&missing, &missing).is_err());
        std::fs::write(&missing, "").unwrap();
        assert!(matches!(
            load_pem(&missing, &missing),
            Err(TlsError::EmptyChain { .. })
        ));
    }
}
