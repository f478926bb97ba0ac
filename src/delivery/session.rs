//! Opening one SMTP session to one address of one candidate host, with TLS
//! exactly as the DANE policy decision says (RFC 7672 §2.2; README "What DANE enforcement means here"):
//!
//! * `Authenticate`: STARTTLS must be offered and the DANE verifier must
//!   accept the chain, else the host is skipped (never plaintext, never
//!   unauthenticated TLS);
//! * `TlsRequired` (`encrypt`, or all TLSA unusable): STARTTLS must be
//!   offered and succeed, certificates unchecked;
//! * `Opportunistic`: STARTTLS when offered; a failed handshake is retried in
//!   plaintext on the same host over a *new* connection (the old one is in an
//!   unknown TLS state);
//! * `Plaintext`: no STARTTLS;
//! * `WebPki` (MTA-STS `enforce`, RFC 8461 §4.2): STARTTLS must be offered
//!   and the chain must be PKIX-valid for the MX host name (also the SNI)
//!   under the MTA-STS roots, re-checked after the handshake as DANE's is;
//!   else the host is skipped (never plaintext).
//!
//! Used by the delivery attempt and by `danerelay tls-check` alike, so the
//! two can never disagree about what a host gets.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::dane::{
    rejection_verdict, Assurance, DaneMatch, Decision, TlsClientSetup, TlsConfigCache, Verdict,
};
use crate::smtp::client::{Client, ClientError, Timeouts, TlsInfo};
use crate::sts::{pkix, CertFailure};

use super::outcome::AttemptError;

/// The TLS result of a session, for the log line, metrics and `tls-check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsOutcome {
    /// DANE authenticated the server (RFC 7672 §3) with this record.
    DaneVerified(DaneMatch, TlsInfo),
    /// DANE authenticated a secure MX host named by an insecure MX RRset
    /// (RFC 7672 §2.2.1, `dane_insecure_mx = "dane"`) with this record.
    DaneTrusted(DaneMatch, TlsInfo),
    /// MTA-STS `enforce` (RFC 8461 §4.2): the chain is PKIX-valid for the
    /// MX host name under the MTA-STS roots.
    StsVerified(TlsInfo),
    /// TLS without authentication (opportunistic, `encrypt`, unusable TLSA).
    Unauthenticated(TlsInfo),
    /// No TLS.
    Plaintext,
}

impl TlsOutcome {
    /// The metric label / verdict word.
    pub fn label(&self) -> &'static str {
        match self {
            TlsOutcome::DaneVerified(..) => "dane-verified",
            TlsOutcome::DaneTrusted(..) => "dane-trusted",
            TlsOutcome::StsVerified(_) => "sts-verified",
            TlsOutcome::Unauthenticated(_) => "tls-unauthenticated",
            TlsOutcome::Plaintext => "plaintext",
        }
    }

    /// The DANE match, when DANE authenticated the server.
    pub fn dane_match(&self) -> Option<&DaneMatch> {
        match self {
            TlsOutcome::DaneVerified(m, _) | TlsOutcome::DaneTrusted(m, _) => Some(m),
            TlsOutcome::StsVerified(_) | TlsOutcome::Unauthenticated(_) | TlsOutcome::Plaintext => {
                None
            }
        }
    }

    /// The negotiated parameters, when TLS is up.
    pub fn info(&self) -> Option<&TlsInfo> {
        match self {
            TlsOutcome::DaneVerified(_, i)
            | TlsOutcome::DaneTrusted(_, i)
            | TlsOutcome::StsVerified(i)
            | TlsOutcome::Unauthenticated(i) => Some(i),
            TlsOutcome::Plaintext => None,
        }
    }
}

/// `dane-verified (3 1 1, depth 0) TLSv1.3 TLS_AES_256_GCM_SHA384`, as Postfix logs it,
/// followed by ` resumed` when the handshake resumed an earlier session (the
/// match shown is then the one re-derived from that session's chain).
impl fmt::Display for TlsOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (verdict, i) = match self {
            TlsOutcome::DaneVerified(m, i) | TlsOutcome::DaneTrusted(m, i) => {
                (format!("{} ({m})", self.label()), i)
            }
            TlsOutcome::StsVerified(i) | TlsOutcome::Unauthenticated(i) => {
                (self.label().to_string(), i)
            }
            TlsOutcome::Plaintext => return f.write_str("plaintext"),
        };
        write!(f, "{verdict} {} {}", i.version, i.cipher)?;
        if i.resumed {
            f.write_str(" resumed")?;
        }
        Ok(())
    }
}

/// Where to connect and how to introduce ourselves.
#[derive(Debug, Clone)]
pub struct Peer<'a> {
    /// The host name (MX exchange, next hop or domain), for SNI and logs.
    pub host: &'a str,
    pub address: IpAddr,
    pub port: u16,
}

impl Peer<'_> {
    /// `mx.example.net[192.0.2.1]:25`, the Postfix `relay=` form.
    pub fn relay(&self) -> String {
        format!("{}[{}]:{}", self.host, self.address, self.port)
    }
}

/// Connection settings shared by every session.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub helo_name: String,
    pub connect_timeout: Duration,
    pub timeouts: Timeouts,
    /// Client TLS configs per security policy, so that repeat peers resume
    /// their TLS session (shared by every clone of these options).
    pub tls_configs: Arc<TlsConfigCache>,
}

/// An established session, ready for MAIL (or for QUIT in `tls-check`).
pub struct Session {
    pub client: Client<TcpStream>,
    pub tls: TlsOutcome,
    /// Whether the peer offered STARTTLS on the first EHLO.
    pub starttls_offered: bool,
    /// The first handshake failed and this is the plaintext retry.
    pub fell_back: bool,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("tls", &self.tls)
            .field("starttls_offered", &self.starttls_offered)
            .field("fell_back", &self.fell_back)
            .finish_non_exhaustive()
    }
}

/// Connects to `peer` and brings the session up to MAIL with the TLS the
/// `decision` demands. `Decision::Defer` must be handled by the caller; it
/// is refused here as a TLSA failure.
///
/// A resumed TLS session whose re-derived DANE verdict fails (the server
/// renewed its certificate and the one the session was verified with has
/// expired since) is not a verdict on the server: its cached config, with
/// every session in it, is evicted and the host is tried once more with a
/// full handshake, instead of deferring until the session cache expires.
pub async fn open(
    peer: &Peer<'_>,
    decision: &Decision,
    options: &SessionOptions,
) -> Result<Session, AttemptError> {
    let stale = match open_once(peer, decision, options).await? {
        Ok(session) => return Ok(session),
        Err(stale) => stale,
    };
    tracing::info!(relay = %peer.relay(), verdict = ?stale.verdict,
        "resumed TLS session no longer verifies; evicting it and retrying with a full handshake");
    options
        .tls_configs
        .evict(decision, peer.host)
        .map_err(|e| AttemptError::Local {
            detail: format!("TLS setup for {}: {e}", peer.host),
        })?;
    open_once(peer, decision, options)
        .await?
        .map_err(|again| again.into_error(peer))
}

/// A resumed session whose re-derived verdict failed; the connection is
/// already closed.
struct StaleResumption {
    verdict: Verdict,
}

impl StaleResumption {
    fn into_error(self, peer: &Peer<'_>) -> AttemptError {
        AttemptError::Dane {
            host: peer.host.to_string(),
            detail: format!("{:?} (resumed session)", self.verdict),
        }
    }
}

/// One connection with the TLS `decision` demands; `Ok(Err(_))` when only a
/// resumed session failed verification.
async fn open_once(
    peer: &Peer<'_>,
    decision: &Decision,
    options: &SessionOptions,
) -> Result<Result<Session, StaleResumption>, AttemptError> {
    if let Decision::Defer(reason) = decision {
        return Err(AttemptError::TlsaLookup {
            host: peer.host.to_string(),
            detail: reason.to_string(),
        });
    }
    let client = greet(peer, options).await?;
    let offered = client.capabilities().starttls();
    let setup = options
        .tls_configs
        .setup(decision, peer.host)
        .map_err(|e| AttemptError::Local {
            detail: format!("TLS setup for {}: {e}", peer.host),
        })?;
    let Some(setup) = setup else {
        return Ok(Ok(Session {
            client,
            tls: TlsOutcome::Plaintext,
            starttls_offered: offered,
            fell_back: false,
        }));
    };
    if !offered {
        if setup.plaintext_fallback {
            return Ok(Ok(Session {
                client,
                tls: TlsOutcome::Plaintext,
                starttls_offered: false,
                fell_back: false,
            }));
        }
        // RFC 7672 §2.2: mandatory TLS and no STARTTLS ⇒ not this host.
        quit_quietly(client).await;
        return Err(AttemptError::TlsRequired {
            host: peer.host.to_string(),
        });
    }
    starttls(client, peer, &setup, options).await
}

/// STARTTLS (RFC 3207) under `setup`: the verdict for the chain received,
/// or what a failed or refused handshake leaves of this host; `Ok(Err(_))`
/// when only a resumed session failed verification.
async fn starttls(
    mut client: Client<TcpStream>,
    peer: &Peer<'_>,
    setup: &TlsClientSetup,
    options: &SessionOptions,
) -> Result<Result<Session, StaleResumption>, AttemptError> {
    match client
        .starttls(setup.config.clone(), setup.server_name.clone())
        .await
    {
        Ok(info) => {
            // Re-derived from the chain, for a resumed session too: a
            // connection is reported verified only if that chain verifies
            // under this very policy now. (Only the post-TLS EHLO, which
            // went out in clear text before STARTTLS anyway, precedes it.)
            let tls = match setup.verdict(&info.peer_certificates) {
                None if setup.webpki.is_some() => match webpki_verdict(setup, &info) {
                    Ok(()) => TlsOutcome::StsVerified(info),
                    Err(failure) => {
                        quit_quietly(client).await;
                        return Err(AttemptError::StsCertificate {
                            host: peer.host.to_string(),
                            failure,
                        });
                    }
                },
                None => TlsOutcome::Unauthenticated(info),
                Some(Verdict::Verified(m)) => match setup.dane.as_deref().map(|t| t.assurance) {
                    Some(Assurance::Trusted) => TlsOutcome::DaneTrusted(m, info),
                    _ => TlsOutcome::DaneVerified(m, info),
                },
                Some(verdict) if info.resumed => {
                    quit_quietly(client).await;
                    return Ok(Err(StaleResumption { verdict }));
                }
                Some(v) => {
                    return Err(AttemptError::Dane {
                        host: peer.host.to_string(),
                        detail: format!("{v:?}"),
                    });
                }
            };
            Ok(Ok(Session {
                client,
                tls,
                starttls_offered: true,
                fell_back: false,
            }))
        }
        Err(e @ ClientError::Tls { .. }) => {
            if setup.webpki.is_some() {
                let failure = match e.tls_error() {
                    Some(t) => CertFailure::from_rustls(t),
                    None => CertFailure::Other(e.to_string()),
                };
                return Err(AttemptError::StsCertificate {
                    host: peer.host.to_string(),
                    failure,
                });
            }
            if setup.dane.is_some() {
                let detail = match e.tls_error().and_then(rejection_verdict) {
                    Some(v) => format!("{v:?}"),
                    None => e.to_string(),
                };
                return Err(AttemptError::Dane {
                    host: peer.host.to_string(),
                    detail,
                });
            }
            if !setup.plaintext_fallback {
                return Err(e.into());
            }
            tracing::info!(relay = %peer.relay(), error = %e,
                "opportunistic TLS handshake failed; retrying in plaintext on a new connection");
            let client = greet(peer, options).await?;
            Ok(Ok(Session {
                client,
                tls: TlsOutcome::Plaintext,
                starttls_offered: true,
                fell_back: true,
            }))
        }
        // A refused STARTTLS (4xx/5xx): opportunistic goes on in the clear
        // only if the session survived; everything else is this host's end.
        Err(ClientError::Rejected { phase, reply })
            if setup.plaintext_fallback && !reply.is_closing() && client.is_usable() =>
        {
            tracing::info!(relay = %peer.relay(), %phase, reply = %reply.one_line(),
                "STARTTLS refused; opportunistic delivery continues in plaintext");
            Ok(Ok(Session {
                client,
                tls: TlsOutcome::Plaintext,
                starttls_offered: true,
                fell_back: false,
            }))
        }
        Err(e) => Err(e.into()),
    }
}

/// The MTA-STS verdict on the chain a connection presents, re-derived as
/// DANE's is (a resumed session ran no verifier): PKIX-valid for the SNI,
/// which is the MX host name (RFC 8461 §4.2).
fn webpki_verdict(setup: &TlsClientSetup, info: &TlsInfo) -> Result<(), CertFailure> {
    let Some(roots) = &setup.webpki else {
        return Ok(());
    };
    let verifier = pkix::verifier(roots.clone()).map_err(|e| CertFailure::Other(e.to_string()))?;
    pkix::check_chain(
        &verifier,
        &setup.server_name.to_str(),
        &info.peer_certificates,
        rustls_pki_types::UnixTime::now(),
    )
}

/// TCP connect within `connect_timeout`, greeting, EHLO.
async fn greet(
    peer: &Peer<'_>,
    options: &SessionOptions,
) -> Result<Client<TcpStream>, AttemptError> {
    let addr = SocketAddr::new(peer.address, peer.port);
    let tcp = match tokio::time::timeout(options.connect_timeout, TcpStream::connect(addr)).await {
        Err(_) => {
            return Err(AttemptError::ConnectTimeout {
                host: peer.relay(),
                after: options.connect_timeout,
            })
        }
        Ok(Err(e)) => {
            return Err(AttemptError::Connect {
                host: peer.relay(),
                detail: e.to_string(),
            })
        }
        Ok(Ok(tcp)) => tcp,
    };
    let mut client = Client::new(tcp, options.timeouts, options.helo_name.clone());
    client.greeting().await?;
    client.ehlo().await?;
    Ok(client)
}

/// QUIT, ignoring the answer: the outcome is already decided.
pub async fn quit_quietly(client: Client<TcpStream>) {
    if client.is_usable() {
        let _ = client.quit().await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "session_tests.rs"]
mod tests;
