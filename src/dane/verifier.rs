//! rustls glue: the DANE `ServerCertVerifier` (calls [`verify_chain`]), the
//! accept-any-certificate verifier for opportunistic and `encrypt` TLS, and
//! the `ClientConfig` each [`Decision`] needs. Both verifiers still check the
//! handshake signature: a server replaying someone's certificate without the
//! key fails (RFC 7672 §3.1 relies on the TLS proof of possession). They
//! check it against the leaf's SubjectPublicKeyInfo, so an X.509 v1 leaf
//! (which webpki cannot parse) still works under DANE-EE.
//!
//! The verifiers are stateless, so one config (and its session store, see
//! [`super::resume`]) can serve concurrent connections. The DANE verdict a
//! delivery logs is therefore not taken from the verifier but re-derived from
//! the connection's peer chain after the handshake
//! ([`TlsClientSetup::verdict`]); that works for a resumed session too,
//! because rustls keeps the chain verified in full in the session it resumes.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::{verify_tls13_signature_with_raw_key, WebPkiSupportedAlgorithms};
use rustls::PeerMisbehaved;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, OtherError, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use super::policy::{DaneTarget, Decision};
pub use super::provider::ring_provider;
use super::verify::{verify_chain, Verdict};
use super::DaneError;

/// The signature algorithms both verifiers check the handshake with.
fn algorithms() -> WebPkiSupportedAlgorithms {
    ring_provider().signature_verification_algorithms
}

/// The verdict behind a handshake the DANE verifier refused (the error
/// rustls reports carries it), `None` for any other handshake error. Lets
/// the delivery log say *why* (`NoMatch`, `NameMismatch`, …).
pub fn rejection_verdict(error: &rustls::Error) -> Option<Verdict> {
    let rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) = error
    else {
        return None;
    };
    match inner.downcast_ref::<DaneError>()? {
        DaneError::NoUsableTlsa => Some(Verdict::NoUsableTlsa),
        DaneError::Verification(f) => Some(Verdict::Failed(f.clone())),
        _ => None,
    }
}

/// Authenticates the server with DANE (RFC 7672 §3). Stateless: the verdict
/// is returned to rustls (and logged at debug), never stored.
#[derive(Debug)]
pub struct DaneVerifier {
    target: Arc<DaneTarget>,
    algs: WebPkiSupportedAlgorithms,
}

impl DaneVerifier {
    /// A verifier for `target`.
    pub fn new(target: Arc<DaneTarget>) -> Self {
        Self {
            target,
            algs: algorithms(),
        }
    }
}

impl ServerCertVerifier for DaneVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut chain = Vec::with_capacity(intermediates.len() + 1);
        chain.push(end_entity.clone());
        chain.extend(intermediates.iter().cloned());
        let verdict = verify_chain(
            &self.target.base_domain,
            &self.target.reference_names,
            &chain,
            &self.target.records,
            now,
        );
        tracing::debug!(base_domain = %self.target.base_domain, ?verdict, "DANE verdict");
        match verdict {
            Verdict::Verified(_) => Ok(ServerCertVerified::assertion()),
            Verdict::NoUsableTlsa => Err(dane_error(DaneError::NoUsableTlsa)),
            Verdict::Failed(f) => Err(dane_error(DaneError::Verification(f))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_signature_by_spki(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls13_signature_by_spki(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// The leaf's SubjectPublicKeyInfo, read with x509-parser: unlike
/// rustls-webpki it accepts X.509 v1 certificates and unique IDs, which
/// self-signed DANE-EE servers often present. The handshake proves
/// possession of this key; DANE-EE (RFC 7672 §3.1.1) and unauthenticated
/// TLS need nothing else from the certificate, and DANE-TA chains are
/// validated by webpki in `verify_server_cert` before this runs.
fn leaf_spki(cert: &CertificateDer<'_>) -> Result<SubjectPublicKeyInfoDer<'static>, rustls::Error> {
    match X509Certificate::from_der(cert) {
        Ok((_, parsed)) => Ok(SubjectPublicKeyInfoDer::from(
            parsed.tbs_certificate.subject_pki.raw.to_vec(),
        )),
        Err(_) => Err(CertificateError::BadEncoding.into()),
    }
}

/// The TLS 1.3 CertificateVerify check against the leaf's key
/// ([`leaf_spki`]), as rustls's `verify_tls13_signature` but without
/// parsing the certificate with webpki.
fn tls13_signature_by_spki(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
    algs: &WebPkiSupportedAlgorithms,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    verify_tls13_signature_with_raw_key(message, &leaf_spki(cert)?, dss, algs)
}

/// The TLS 1.2 ServerKeyExchange signature check against the leaf's key
/// ([`leaf_spki`]): as rustls's `verify_tls12_signature`, every algorithm
/// mapped to the scheme is tried until one fits the key type.
fn tls12_signature_by_spki(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
    algs: &WebPkiSupportedAlgorithms,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    let candidates = algs
        .mapping
        .iter()
        .find(|(scheme, _)| *scheme == dss.scheme)
        .map(|(_, candidates)| *candidates)
        .ok_or(PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme)?;
    let spki = leaf_spki(cert)?;
    let key = webpki::RawPublicKeyEntity::try_from(&spki)
        .map_err(|_| rustls::Error::from(CertificateError::BadEncoding))?;
    let mut unfit = None;
    for alg in candidates {
        match key.verify_signature(*alg, message, dss.signature()) {
            Ok(()) => return Ok(HandshakeSignatureValid::assertion()),
            Err(e @ webpki::Error::UnsupportedSignatureAlgorithmForPublicKeyContext(_)) => {
                unfit = Some(e);
            }
            Err(webpki::Error::InvalidSignatureForPublicKey) => {
                return Err(CertificateError::BadSignature.into())
            }
            Err(e) => return Err(other_certificate_error(e)),
        }
    }
    Err(unfit.map_or(
        CertificateError::BadSignature.into(),
        other_certificate_error,
    ))
}

fn other_certificate_error(e: webpki::Error) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

fn dane_error(e: DaneError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

/// Accepts any certificate (opportunistic and `encrypt`: RFC 7435 —
/// unauthenticated encryption) but still verifies the handshake signature.
#[derive(Debug)]
pub struct UnauthenticatedVerifier {
    algs: WebPkiSupportedAlgorithms,
}

impl Default for UnauthenticatedVerifier {
    fn default() -> Self {
        Self { algs: algorithms() }
    }
}

impl ServerCertVerifier for UnauthenticatedVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_signature_by_spki(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls13_signature_by_spki(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Everything needed to run STARTTLS for one decision.
#[derive(Debug, Clone)]
pub struct TlsClientSetup {
    pub config: Arc<ClientConfig>,
    /// SNI: the TLSA base domain under DANE (RFC 7672 §8.1), else the host.
    pub server_name: ServerName<'static>,
    /// `Some` under DANE: the policy the server must satisfy; the verdict
    /// to log is [`TlsClientSetup::verdict`] after the handshake.
    pub dane: Option<Arc<DaneTarget>>,
    /// Whether a handshake failure may fall back to plaintext (opportunistic
    /// only; never under DANE or mandatory TLS, RFC 7672 §2.2).
    pub plaintext_fallback: bool,
    /// `Some` under MTA-STS `enforce`: the chain was verified by WebPKI
    /// against these roots for the SNI (re-checked after a resumption by
    /// the caller).
    pub webpki: Option<Arc<rustls::RootCertStore>>,
}

impl TlsClientSetup {
    /// After a *successful* handshake: the DANE verdict on the chain the
    /// connection presents (`ClientConnection::peer_certificates`), derived
    /// with the same [`verify_chain`] the verifier ran. For a full handshake
    /// that repeats the verifier's answer; for a resumed one it is the answer
    /// for the chain verified when the session was first established, which
    /// rustls keeps in the session. `None` when this setup is not DANE.
    /// Anything but `Verified` means the connection must not be used.
    pub fn verdict(&self, peer_certificates: &[CertificateDer<'_>]) -> Option<Verdict> {
        let target = self.dane.as_deref()?;
        Some(verify_chain(
            &target.base_domain,
            &target.reference_names,
            peer_certificates,
            &target.records,
            UnixTime::now(),
        ))
    }
}

/// What a decision needs besides its config: SNI, DANE target and fallback
/// rule. `None` for plaintext and defer.
pub(super) struct Plan {
    pub(super) server_name: ServerName<'static>,
    pub(super) dane: Option<Arc<DaneTarget>>,
    pub(super) plaintext_fallback: bool,
    pub(super) webpki: Option<Arc<rustls::RootCertStore>>,
}

impl Plan {
    pub(super) fn new(decision: &Decision, host: &str) -> Result<Option<Plan>, DaneError> {
        if let Decision::WebPki(target) = decision {
            return Ok(Some(Plan {
                server_name: server_name(&target.name)?,
                dane: None,
                plaintext_fallback: false,
                webpki: Some(target.roots.clone()),
            }));
        }
        let (sni, dane, plaintext_fallback) = match decision {
            Decision::Plaintext | Decision::Defer(_) | Decision::WebPki(_) => return Ok(None),
            Decision::Authenticate(target) => (
                target.base_domain.as_str(),
                Some(Arc::new(target.clone())),
                false,
            ),
            Decision::TlsRequired(_) => (host, None, false),
            Decision::Opportunistic => (host, None, true),
        };
        Ok(Some(Plan {
            server_name: server_name(sni)?,
            dane,
            plaintext_fallback,
            webpki: None,
        }))
    }

    /// The certificate verifier for this plan: DANE, WebPKI (MTA-STS), or
    /// unauthenticated.
    pub(super) fn verifier(&self) -> Result<Arc<dyn ServerCertVerifier>, DaneError> {
        if let Some(roots) = &self.webpki {
            let v = rustls::client::WebPkiServerVerifier::builder_with_provider(
                roots.clone(),
                ring_provider().clone(),
            )
            .build()
            .map_err(|e| DaneError::Tls(rustls::Error::General(e.to_string())))?;
            return Ok(v);
        }
        Ok(match &self.dane {
            Some(target) => Arc::new(DaneVerifier::new(target.clone())),
            None => Arc::new(UnauthenticatedVerifier::default()),
        })
    }

    pub(super) fn into_setup(self, config: Arc<ClientConfig>) -> TlsClientSetup {
        TlsClientSetup {
            config,
            server_name: self.server_name,
            dane: self.dane,
            plaintext_fallback: self.plaintext_fallback,
            webpki: self.webpki,
        }
    }
}

/// An address literal ("[192.0.2.1]") becomes an IP server name: rustls
/// then sends no SNI, which is right for a host without a name.
fn server_name(sni: &str) -> Result<ServerName<'static>, DaneError> {
    let bare = sni
        .trim_end_matches('.')
        .trim_start_matches('[')
        .trim_end_matches(']');
    ServerName::try_from(bare.to_owned()).map_err(|_| DaneError::InvalidName {
        name: sni.to_owned(),
    })
}

/// The client TLS setup for `decision` (TLS 1.2 and 1.3, ring provider)
/// with a config of its own and no session resumption: every connection
/// made with it is verified in full. Delivery uses the resuming
/// [`super::TlsConfigCache::setup`] instead. `Ok(None)` for
/// [`Decision::Plaintext`] and [`Decision::Defer`]. `host` is the MX host
/// name, the SNI when not authenticating.
pub fn client_setup(decision: &Decision, host: &str) -> Result<Option<TlsClientSetup>, DaneError> {
    let Some(plan) = Plan::new(decision, host)? else {
        return Ok(None);
    };
    let config = client_config(plan.verifier()?, Resumption::disabled())?;
    Ok(Some(plan.into_setup(Arc::new(config))))
}

/// A TLS 1.2 + 1.3 client config with `verifier`, no client certificate,
/// the shared ring provider and the given session resumption.
pub fn client_config(
    verifier: Arc<dyn ServerCertVerifier>,
    resumption: Resumption,
) -> Result<ClientConfig, DaneError> {
    let mut config = ClientConfig::builder_with_provider(ring_provider().clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(DaneError::Tls)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.resumption = resumption;
    Ok(config)
}
