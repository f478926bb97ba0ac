//! sendmail's one SMTP session with the relay: connect, TLS (implicit or
//! STARTTLS), AUTH PLAIN when credentials are given, then MAIL/RCPT/DATA —
//! all recipients accepted or none sent, so an exit code other than 0 means
//! nothing was queued and the caller may simply try again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::dane::{client_config, ring_provider, UnauthenticatedVerifier};
use crate::smtp::client::{Client, ClientError, Envelope, Phase, Recipient, Timeouts};
use crate::smtp::Reply;

use super::Failure;
use crate::cli::exit::Exit;

/// How the relay wants to be spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// RFC 8314 implicit TLS.
    Implicit,
    /// RFC 3207 STARTTLS.
    StartTls,
    /// Plain text (a `tls = "none"` listener, named in `--config`).
    None,
}

/// Where and how to submit.
#[derive(Debug, Clone)]
pub struct Relay {
    /// `host:port` as given, for messages and name resolution.
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    /// A PEM file of trust anchors instead of the system roots.
    pub ca_file: Option<std::path::PathBuf>,
}

/// AUTH PLAIN credentials.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

/// What goes into the transaction.
#[derive(Debug, Clone)]
pub struct Submission {
    pub helo: String,
    pub sender: String,
    pub recipients: Vec<String>,
    pub message: Vec<u8>,
}

/// The whole connection gets this long: an application piping into
/// sendmail must not hang for RFC 5321's 10 minutes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

fn timeouts() -> Timeouts {
    let t = Duration::from_secs(60);
    Timeouts {
        greeting: t,
        ehlo: t,
        starttls: t,
        mail: t,
        rcpt: t,
        data: t,
        data_block: t,
        final_dot: Duration::from_secs(5 * 60),
        rset: Duration::from_secs(10),
        quit: Duration::from_secs(10),
    }
}

/// Submits the message; `Ok` once the relay answered 2xx to the data.
pub async fn submit(
    relay: &Relay,
    creds: Option<&Credentials>,
    sub: &Submission,
) -> Result<Reply, Failure> {
    let target = format!("{}:{}", relay.host, relay.port);
    let addr = resolve(&target).await?;
    let loopback = addr.ip().is_loopback();
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            return Err(Failure::new(
                Exit::TEMP_FAIL,
                format!("cannot connect to the relay {target}: {e}"),
            ))
        }
        Err(_) => {
            return Err(Failure::new(
                Exit::TEMP_FAIL,
                format!("timed out connecting to the relay {target}"),
            ))
        }
    };
    let tls = tls_config(relay, loopback)?;
    let name = server_name(&relay.host)?;
    let session = Session {
        relay,
        creds,
        sub,
        loopback,
        tls: tls.clone(),
        name: name.clone(),
    };
    if relay.tls == TlsMode::Implicit {
        let connector = tokio_rustls::TlsConnector::from(tls);
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp)).await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return Err(Failure::new(
                    Exit::UNAVAILABLE,
                    format!("TLS with the relay {target} failed: {e}"),
                ))
            }
            Err(_) => {
                return Err(Failure::new(
                    Exit::TEMP_FAIL,
                    format!("timed out in the TLS handshake with {target}"),
                ))
            }
        };
        session
            .run(Client::new(stream, timeouts(), &sub.helo), true)
            .await
    } else {
        session
            .run(Client::new(tcp, timeouts(), &sub.helo), false)
            .await
    }
}

async fn resolve(target: &str) -> Result<SocketAddr, Failure> {
    match tokio::net::lookup_host(target).await {
        Ok(mut addrs) => addrs.next().ok_or_else(|| {
            Failure::new(
                Exit::TEMP_FAIL,
                format!("the relay name {target} has no address"),
            )
        }),
        Err(e) => Err(Failure::new(
            Exit::TEMP_FAIL,
            format!("cannot resolve the relay {target}: {e}"),
        )),
    }
}

fn server_name(host: &str) -> Result<ServerName<'static>, Failure> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_string())
        .map_err(|e| Failure::new(Exit::CONFIG, format!("relay host {host:?}: {e}")))
}

/// The relay's certificate is checked against `DANERELAY_CA_FILE` or the
/// system roots; only a relay on a loopback address (the development
/// default's self-signed certificate) is taken unverified, since nobody
/// can sit between us and it.
fn tls_config(relay: &Relay, loopback: bool) -> Result<Arc<rustls::ClientConfig>, Failure> {
    let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = if loopback {
        Arc::new(UnauthenticatedVerifier::default())
    } else {
        let mut roots = rustls::RootCertStore::empty();
        let certs: Vec<CertificateDer<'static>> = match &relay.ca_file {
            Some(path) => CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| Failure::new(Exit::NO_INPUT, format!("{}: {e}", path.display())))?,
            None => rustls_native_certs::load_native_certs().certs,
        };
        roots.add_parsable_certificates(certs);
        if roots.is_empty() {
            return Err(Failure::new(
                Exit::CONFIG,
                "no trust anchors to verify the relay's certificate with (set DANERELAY_CA_FILE)",
            ));
        }
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), ring_provider().clone())
            .build()
            .map_err(|e| Failure::new(Exit::CONFIG, format!("trust anchors: {e}")))?
    };
    client_config(verifier, Resumption::disabled())
        .map(Arc::new)
        .map_err(|e| Failure::new(Exit::SOFTWARE, format!("TLS setup: {e}")))
}

struct Session<'a> {
    relay: &'a Relay,
    creds: Option<&'a Credentials>,
    sub: &'a Submission,
    loopback: bool,
    tls: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

impl Session<'_> {
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut c: Client<S>,
        mut encrypted: bool,
    ) -> Result<Reply, Failure> {
        c.greeting().await.map_err(from_client)?;
        c.ehlo().await.map_err(from_client)?;
        if self.relay.tls == TlsMode::StartTls {
            if c.capabilities().starttls() {
                c.starttls(self.tls.clone(), self.name.clone())
                    .await
                    .map_err(from_client)?;
                encrypted = true;
            } else if !self.loopback {
                return Err(Failure::new(
                    Exit::UNAVAILABLE,
                    "the relay does not offer STARTTLS; not sending in clear text",
                ));
            }
        }
        if let Some(creds) = self.creds {
            if !encrypted && !self.loopback {
                return Err(Failure::new(
                    Exit::UNAVAILABLE,
                    "not sending the password over an unencrypted connection",
                ));
            }
            c.auth_plain(&creds.user, &creds.password)
                .await
                .map_err(from_client)?;
        }
        let sub = self.sub;
        let recipients: Vec<Recipient> = sub.recipients.iter().map(Recipient::new).collect();
        let mut env = Envelope::new(sub.sender.clone(), recipients);
        env.size = Some(sub.message.len() as u64);
        env.body_8bit = sub.message.iter().any(|&b| b >= 0x80);
        env.smtputf8 = !sub.sender.is_ascii() || !sub.recipients.iter().all(|r| r.is_ascii());
        c.mail_from(&env).await.map_err(from_client)?;
        let replies = c.rcpt_to(&env.recipients).await.map_err(from_client)?;
        if let Some((rcpt, reply)) = sub
            .recipients
            .iter()
            .zip(&replies)
            .find(|(_, r)| !r.is_positive())
        {
            // All or nothing: a message half-sent cannot be safely retried.
            let _ = c.rset().await;
            let _ = c.quit().await;
            return Err(Failure::new(
                exit_for(Phase::Rcpt, reply),
                format!("recipient <{rcpt}> refused: {reply}"),
            ));
        }
        let body = std::io::Cursor::new(sub.message.clone());
        let done = if c.capabilities().chunking() {
            c.bdat(body).await
        } else {
            c.data(body).await
        }
        .map_err(from_client)?;
        if !done.is_positive() {
            return Err(Failure::new(
                exit_for(Phase::FinalDot, &done),
                format!("message refused: {done}"),
            ));
        }
        let _ = c.quit().await;
        Ok(done)
    }
}

/// The sysexits code for a refusal, as sendmail and Postfix use them.
fn exit_for(phase: Phase, reply: &Reply) -> Exit {
    let enhanced = reply.enhanced.map(|e| (e.1, e.2));
    if reply.is_transient() {
        return Exit::TEMP_FAIL;
    }
    match (phase, reply.code, enhanced) {
        (Phase::Auth, ..) | (_, 530 | 535, _) | (_, _, Some((7, _))) => Exit::NO_PERM,
        (_, 552, _) | (_, _, Some((3, 4) | (6, _))) => Exit::DATA,
        (_, _, Some((1, 3))) => Exit::DATA,
        (Phase::Rcpt, ..) => Exit::NO_USER,
        _ => Exit::UNAVAILABLE,
    }
}

/// Every client error as sendmail reports it: the relay's refusals by their
/// code, a connection that broke off before the relay's final answer as
/// "try again" (the relay stores a message only after that answer).
fn from_client(e: ClientError) -> Failure {
    let exit = match &e {
        ClientError::Rejected { phase, reply } => exit_for(*phase, reply),
        ClientError::Timeout { .. }
        | ClientError::Io { .. }
        | ClientError::Closed { .. }
        | ClientError::BadReply { .. }
        | ClientError::Protocol { .. }
        | ClientError::Unusable => Exit::TEMP_FAIL,
        ClientError::TooBig { .. } | ClientError::Body(_) => Exit::DATA,
        ClientError::BodyRead { .. } => Exit::IO,
        ClientError::Tls { .. }
        | ClientError::StartTlsNotOffered
        | ClientError::SmtpUtf8NotOffered => Exit::UNAVAILABLE,
    };
    Failure::new(exit, e.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::smtp::EnhancedCode;

    fn r(code: u16, e: Option<(u8, u16, u16)>) -> Reply {
        Reply::new(code, e.map(|(a, b, c)| EnhancedCode(a, b, c)), "x")
    }

    #[test]
    fn refusals_map_to_sysexits() {
        assert_eq!(
            exit_for(Phase::Mail, &r(451, Some((4, 3, 0)))),
            Exit::TEMP_FAIL
        );
        assert_eq!(
            exit_for(Phase::Auth, &r(535, Some((5, 7, 8)))),
            Exit::NO_PERM
        );
        assert_eq!(
            exit_for(Phase::Mail, &r(530, Some((5, 7, 0)))),
            Exit::NO_PERM
        );
        assert_eq!(
            exit_for(Phase::Mail, &r(553, Some((5, 7, 1)))),
            Exit::NO_PERM
        );
        assert_eq!(
            exit_for(Phase::FinalDot, &r(552, Some((5, 3, 4)))),
            Exit::DATA
        );
        assert_eq!(
            exit_for(Phase::FinalDot, &r(550, Some((5, 6, 0)))),
            Exit::DATA
        );
        assert_eq!(
            exit_for(Phase::Rcpt, &r(550, Some((5, 1, 1)))),
            Exit::NO_USER
        );
        assert_eq!(exit_for(Phase::Rcpt, &r(501, Some((5, 1, 3)))), Exit::DATA);
        assert_eq!(exit_for(Phase::Greeting, &r(554, None)), Exit::UNAVAILABLE);
        assert_eq!(exit_for(Phase::Greeting, &r(421, None)), Exit::TEMP_FAIL);
    }
}
