//! One SMTP session to the relay a drain hands its queue to, and one message
//! over it: the envelope as queued (sender, `<>` included; the still-open
//! recipients with NOTIFY/ORCPT; RET/ENVID; BODY/SMTPUTF8) plus
//! `X-DANERELAY-ARRIVAL`, then the stored bytes unchanged.
//!
//! Security: STARTTLS whenever offered; credentials go only over TLS unless
//! the other relay is on a loopback address. Its certificate is checked
//! against `--ca-file` (or the system roots); only a loopback peer is taken
//! unverified.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use danerelay_queue::{Disposition, Leased, Queue, QueueError};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
use tokio::net::TcpStream;

use crate::dane::{client_config, ring_provider, UnauthenticatedVerifier};
use crate::smtp::client::{
    BlockingBody, Client, ClientError, Envelope, RcptResult, Recipient, Timeouts,
};
use crate::smtp::queue_edge;

/// Connecting (TCP) to the other relay may take this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where and as whom to hand mail over.
#[derive(Clone)]
pub struct Target {
    /// `host:port` as given.
    pub address: String,
    /// AUTH PLAIN as this relay account (`relay = true` on the other side);
    /// `None`: the other relay trusts our network.
    pub credentials: Option<(String, String)>,
    /// Trust anchors (PEM) for the other relay's certificate.
    pub ca_file: Option<PathBuf>,
    /// Our EHLO name.
    pub helo: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("address", &self.address)
            .field("user", &self.credentials.as_ref().map(|c| &c.0))
            .finish_non_exhaustive()
    }
}

/// Why the drain cannot go on (the message in hand stays queued).
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error("cannot connect to {address}: {detail}")]
    Connect { address: String, detail: String },
    #[error("{address}: {source}")]
    Session {
        address: String,
        #[source]
        source: Arc<ClientError>,
    },
    #[error("{0}")]
    Refused(String),
    #[error("TLS set-up: {0}")]
    Tls(String),
    #[error("queue: {0}")]
    Queue(#[from] QueueError),
    #[error("background task failed: {0}")]
    Task(String),
}

/// What became of one message.
#[derive(Debug)]
pub enum Handed {
    /// Every open recipient taken: removed here.
    All,
    /// The other relay refused some or all: kept here (why).
    Kept(String),
}

/// The session, opened on first use and kept for the next message.
pub struct Sender {
    target: Target,
    client: Option<Client<TcpStream>>,
}

impl Sender {
    pub fn new(target: Target) -> Sender {
        Sender {
            target,
            client: None,
        }
    }

    pub async fn close(&mut self) {
        if let Some(c) = self.client.take() {
            let _ = c.quit().await;
        }
    }

    /// Hands one leased message over. Whatever happens, the lease ends here:
    /// completed after `250`s, else given back (and a held message held again).
    pub async fn hand_over(
        &mut self,
        queue: &Queue,
        leased: Leased,
        held: bool,
    ) -> Result<Handed, HandoffError> {
        let result = self.send(queue, &leased).await;
        let q = queue.clone();
        let id = leased.id;
        let accepted: Vec<(u32, Disposition)> = match &result {
            Ok(results) => leased
                .recipients
                .iter()
                .zip(results)
                .filter(|(_, r)| r.is_delivered())
                .map(|(rcpt, r)| {
                    let reply = match r {
                        RcptResult::Reply(reply) => reply.one_line(),
                        RcptResult::Error(_) => String::new(),
                    };
                    let reply = format!("handed over to {}: {reply}", self.target.address);
                    (rcpt.index, Disposition::Delivered { reply })
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        let all = !leased.recipients.is_empty() && accepted.len() == leased.recipients.len();
        let refused = match &result {
            Ok(results) => results
                .iter()
                .zip(&leased.recipients)
                .find(|(r, _)| !r.is_delivered())
                .map(|(r, rcpt)| match r {
                    RcptResult::Reply(reply) => format!("<{}> {}", rcpt.address, reply.one_line()),
                    RcptResult::Error(e) => format!("<{}> {e}", rcpt.address),
                }),
            Err(_) => None,
        };
        tokio::task::spawn_blocking(move || -> Result<(), QueueError> {
            if accepted.is_empty() {
                q.abandon(&leased)?;
            } else {
                q.complete(&leased, &accepted, SystemTime::now())?;
            }
            if held && !all {
                q.hold(id)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| HandoffError::Task(e.to_string()))??;
        match (result, all) {
            (Err(e), _) => Err(e),
            (Ok(_), true) => {
                tracing::info!(queue_id = %id, to = %self.target.address, "handed over");
                Ok(Handed::All)
            }
            (Ok(_), false) => {
                let why = refused.unwrap_or_else(|| "no open recipients".into());
                tracing::warn!(queue_id = %id, to = %self.target.address, refused = %why, "kept: the other relay refused it");
                Ok(Handed::Kept(why))
            }
        }
    }

    /// One transaction; a broken session is an error (the drain stops).
    async fn send(
        &mut self,
        queue: &Queue,
        leased: &Leased,
    ) -> Result<Vec<RcptResult>, HandoffError> {
        let env = envelope(leased);
        let q = queue.clone();
        let id = leased.id;
        let body = tokio::task::spawn_blocking(move || q.body(id))
            .await
            .map_err(|e| HandoffError::Task(e.to_string()))??;
        let client = match self.client.as_mut() {
            Some(c) if c.is_usable() => c,
            _ => self.client.insert(self.connect().await?),
        };
        let result = client.transaction(&env, BlockingBody::new(body)).await;
        if let Some(RcptResult::Error(e)) = result
            .recipients
            .iter()
            .find(|r| matches!(r, RcptResult::Error(_)))
        {
            if !client.is_usable() {
                self.client = None;
                return Err(HandoffError::Session {
                    address: self.target.address.clone(),
                    source: e.clone(),
                });
            }
        }
        Ok(result.recipients)
    }

    async fn connect(&self) -> Result<Client<TcpStream>, HandoffError> {
        let t = &self.target;
        let fail = |detail: String| HandoffError::Connect {
            address: t.address.clone(),
            detail,
        };
        let addr: SocketAddr = tokio::net::lookup_host(&t.address)
            .await
            .map_err(|e| fail(e.to_string()))?
            .next()
            .ok_or_else(|| fail("no address".into()))?;
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| fail("timed out".into()))?
            .map_err(|e| fail(e.to_string()))?;
        let session = |source: ClientError| HandoffError::Session {
            address: t.address.clone(),
            source: Arc::new(source),
        };
        let mut c = Client::new(tcp, Timeouts::default(), &t.helo);
        c.greeting().await.map_err(session)?;
        c.ehlo().await.map_err(session)?;
        let loopback = addr.ip().is_loopback();
        if c.capabilities().starttls() {
            let config = tls_config(t.ca_file.as_deref(), loopback)?;
            let host = t
                .address
                .rsplit_once(':')
                .map_or(&t.address[..], |(h, _)| h);
            let name = ServerName::try_from(host.trim_matches(['[', ']']).to_string())
                .map_err(|e| HandoffError::Tls(e.to_string()))?;
            c.starttls(config, name).await.map_err(session)?;
        } else if t.credentials.is_some() && !loopback {
            return Err(HandoffError::Refused(format!(
                "{} does not offer STARTTLS; not sending the password in clear text",
                t.address
            )));
        }
        if let Some((user, password)) = &t.credentials {
            c.auth_plain(user, password).await.map_err(session)?;
        }
        Ok(c)
    }
}

/// The queued envelope as the other relay must see it.
fn envelope(leased: &Leased) -> Envelope {
    let env = &leased.envelope;
    let recipients = leased
        .recipients
        .iter()
        .map(|r| Recipient {
            address: r.address.clone(),
            orcpt: r.orcpt.clone(),
            notify: queue_edge::notify_from_queue(r.notify),
        })
        .collect();
    let arrival = env
        .received_at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .ok();
    Envelope {
        size: Some(leased.size),
        body_8bit: env.body_8bit,
        smtputf8: env.smtputf8,
        // The bytes go as stored: a relay never rewrites what it hands on.
        relay_signed: true,
        ret: env.ret,
        envid: env.envid.clone(),
        arrival,
        ..Envelope::new(env.sender.clone(), recipients)
    }
}

/// `ca_file`, else the system roots; a loopback peer unverified.
fn tls_config(
    ca_file: Option<&std::path::Path>,
    loopback: bool,
) -> Result<Arc<rustls::ClientConfig>, HandoffError> {
    let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> =
        if loopback && ca_file.is_none() {
            Arc::new(UnauthenticatedVerifier::default())
        } else {
            let certs: Vec<CertificateDer<'static>> = match ca_file {
                Some(path) => CertificateDer::pem_file_iter(path)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| HandoffError::Tls(format!("{}: {e}", path.display())))?,
                None => rustls_native_certs::load_native_certs().certs,
            };
            let mut roots = rustls::RootCertStore::empty();
            roots.add_parsable_certificates(certs);
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), ring_provider().clone())
                .build()
                .map_err(|e| HandoffError::Tls(e.to_string()))?
        };
    client_config(verifier, Resumption::disabled())
        .map(Arc::new)
        .map_err(|e| HandoffError::Tls(e.to_string()))
}
