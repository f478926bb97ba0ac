//! rustls glue: the DANE `ServerCertVerifier` (calls [`verify_chain`]), the
//! accept-any-certificate verifier for opportunistic and `encrypt` TLS, and
//! the `ClientConfig` each [`Decision`] needs. Both verifiers still check the
//! handshake signature: a server replaying someone's certificate without the
//! key fails (RFC 7672 §3.1 relies on the TLS proof of possession).

use std::sync::{Arc, Mutex, PoisonError};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::{
    ring, verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms,
};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, OtherError, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::policy::{DaneTarget, Decision};
use super::verify::{verify_chain, DaneMatch, Verdict};
use super::DaneError;

/// Shared slot the verifier fills during the handshake; read it afterwards
/// to log `dane-verified (2 0 1, depth 1)` or why verification failed.
#[derive(Debug, Clone, Default)]
pub struct DaneOutcome(Arc<Mutex<Option<Verdict>>>);

impl DaneOutcome {
    /// The verdict of the last certificate check, if one ran.
    pub fn verdict(&self) -> Option<Verdict> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The matched record, when the server was authenticated.
    pub fn matched(&self) -> Option<DaneMatch> {
        match self.verdict() {
            Some(Verdict::Verified(m)) => Some(m),
            _ => None,
        }
    }

    fn set(&self, verdict: Verdict) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(verdict);
    }
}

/// Authenticates the server with DANE (RFC 7672 §3).
#[derive(Debug)]
pub struct DaneVerifier {
    target: DaneTarget,
    algs: WebPkiSupportedAlgorithms,
    outcome: DaneOutcome,
}

impl DaneVerifier {
    /// A verifier for `target` and the handle its verdict lands in.
    pub fn new(target: DaneTarget) -> (Arc<Self>, DaneOutcome) {
        let outcome = DaneOutcome::default();
        let verifier = Self {
            target,
            algs: ring::default_provider().signature_verification_algorithms,
            outcome: outcome.clone(),
        };
        (Arc::new(verifier), outcome)
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
        self.outcome.set(verdict.clone());
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
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
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
        Self {
            algs: ring::default_provider().signature_verification_algorithms,
        }
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
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
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
    /// `Some` under DANE: read it after the handshake for the matched record.
    pub dane: Option<DaneOutcome>,
    /// Whether a handshake failure may fall back to plaintext (opportunistic
    /// only; never under DANE or mandatory TLS, RFC 7672 §2.2).
    pub plaintext_fallback: bool,
}

/// The client TLS setup for `decision` (TLS 1.2 and 1.3, ring provider).
/// `Ok(None)` for [`Decision::Plaintext`] and [`Decision::Defer`]. `host` is
/// the MX host name, the SNI when not authenticating.
pub fn client_setup(decision: &Decision, host: &str) -> Result<Option<TlsClientSetup>, DaneError> {
    let (verifier, sni, dane, fallback): (Arc<dyn ServerCertVerifier>, &str, _, _) = match decision
    {
        Decision::Plaintext | Decision::Defer(_) => return Ok(None),
        Decision::Authenticate(target) => {
            let (v, outcome) = DaneVerifier::new(target.clone());
            (v, target.base_domain.as_str(), Some(outcome), false)
        }
        Decision::TlsRequired(_) => (
            Arc::new(UnauthenticatedVerifier::default()),
            host,
            None,
            false,
        ),
        Decision::Opportunistic => (
            Arc::new(UnauthenticatedVerifier::default()),
            host,
            None,
            true,
        ),
    };
    // An address literal ("[192.0.2.1]") becomes an IP server name: rustls
    // then sends no SNI, which is right for a host without a name.
    let bare = sni
        .trim_end_matches('.')
        .trim_start_matches('[')
        .trim_end_matches(']');
    let server_name =
        ServerName::try_from(bare.to_owned()).map_err(|_| DaneError::InvalidName {
            name: sni.to_owned(),
        })?;
    Ok(Some(TlsClientSetup {
        config: Arc::new(client_config(verifier)?),
        server_name,
        dane,
        plaintext_fallback: fallback,
    }))
}

/// A TLS 1.2 + 1.3 client config with `verifier`, no client certificate and
/// no session resumption (each connection proves itself from scratch, so the
/// verdict handle is always filled by the handshake).
pub fn client_config(verifier: Arc<dyn ServerCertVerifier>) -> Result<ClientConfig, DaneError> {
    let mut config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(DaneError::Tls)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.resumption = Resumption::disabled();
    Ok(config)
}
