//! One connection's I/O: owns the stream (plain, or TLS after STARTTLS or on
//! an implicit listener) and its buffers, frames command lines, performs what
//! the [`Session`] asks for (replies, TLS upgrade, password checks, reading
//! DATA/BDAT into the store) and applies timeouts (RFC 5321 §4.5.3.2) and
//! shutdown. Generic over the byte stream, so tests can use in-memory pipes.
//! Reading a message (DATA, BDAT, `Received:`, header limits) lives in
//! `conn/message.rs`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::session::{Action, Session, SessionEvent, TlsInfo};
use super::store::MessageStore;
use super::tls::{tls_info, ServerTls};
use crate::auth::{FailureThrottle, UserStore};
use crate::metrics::{LimitHit, Metrics};
use crate::smtp::{wire::Line, wire::LineReader, Reply};
use tokio::time::Instant;

mod message;

use message::BdatState;

/// Any byte stream a session can run on.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
pub type BoxIo = Box<dyn Io>;

/// What every connection shares.
pub struct Shared {
    pub tls: Option<ServerTls>,
    pub users: Option<Arc<UserStore>>,
    pub throttle: Arc<FailureThrottle>,
    pub store: Arc<dyn MessageStore>,
    /// DKIM keys; signs every message whose From: domain has one.
    pub dkim: Arc<crate::dkim::Signer>,
    pub shutdown: CancellationToken,
    pub command_timeout: Duration,
    /// Whole-session deadline (`limits.session_timeout`).
    pub session_timeout: Duration,
    /// One message's content deadline (`limits.data_timeout`).
    pub data_timeout: Duration,
    pub max_header_size: u64,
    pub max_header_fields: usize,
    pub metrics: Metrics,
}

/// Why a connection ended early (for the debug log; the client already got a reply).
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out")]
    Timeout,
    #[error("client closed the connection")]
    Eof,
    #[error("server shutting down")]
    Shutdown,
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
}

pub struct Conn {
    stream: BoxIo,
    buf: BytesMut,
    out: Vec<u8>,
    lines: LineReader,
    peer: IpAddr,
    shared: Arc<Shared>,
    /// When the session must end, however active (slowloris defence).
    session_deadline: Instant,
    /// When the message being transferred must be complete.
    data_deadline: Option<Instant>,
    tls_used: bool,
}

enum ReadOutcome {
    Data,
    Eof,
    /// Which timer fired.
    Timeout(LimitHit),
    Shutdown,
}

impl Conn {
    pub fn new(stream: BoxIo, peer: IpAddr, shared: Arc<Shared>) -> Self {
        Self {
            stream,
            buf: BytesMut::with_capacity(8192),
            out: Vec::new(),
            lines: LineReader::default(),
            peer,
            session_deadline: Instant::now() + shared.session_timeout,
            shared,
            data_deadline: None,
            tls_used: false,
        }
    }

    /// True once a TLS handshake (implicit or STARTTLS) completed.
    pub fn tls_used(&self) -> bool {
        self.tls_used
    }

    /// The read timeout now: the command timeout, cut short by the session
    /// and message deadlines (a trickling client cannot extend them).
    fn read_budget(&self) -> (Duration, LimitHit) {
        let now = Instant::now();
        let mut budget = (self.shared.command_timeout, LimitHit::CommandTimeout);
        let session = self.session_deadline.saturating_duration_since(now);
        if session < budget.0 {
            budget = (session, LimitHit::SessionTimeout);
        }
        if let Some(d) = self.data_deadline {
            let data = d.saturating_duration_since(now);
            if data < budget.0 {
                budget = (data, LimitHit::DataTimeout);
            }
        }
        budget
    }

    /// Counts what the session reported.
    fn account(&self, session: &mut Session) {
        let m = &self.shared.metrics;
        for e in session.take_events() {
            match e {
                SessionEvent::Rejected(r) => m.rejected(r),
                SessionEvent::Limit(l) => m.limit_hit(l),
                SessionEvent::AuthFailed => m.auth_failures_total.inc(),
            }
        }
    }

    /// TLS from the first byte (RFC 8314); returns what was negotiated.
    pub async fn accept_tls(&mut self) -> Result<TlsInfo, ConnError> {
        let tls = self
            .shared
            .tls
            .as_ref()
            .ok_or_else(|| ConnError::Handshake(std::io::Error::other("no TLS configured")))?;
        let acceptor = tls.acceptor();
        let plain = std::mem::replace(&mut self.stream, Box::new(tokio::io::empty()));
        let handshake = tokio::time::timeout(self.shared.command_timeout, acceptor.accept(plain));
        let stream = match handshake.await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(ConnError::Handshake(e)),
            Err(_) => return Err(ConnError::Timeout),
        };
        let info = tls_info(stream.get_ref().1);
        self.stream = Box::new(stream);
        self.tls_used = true;
        Ok(info)
    }

    pub fn queue_reply(&mut self, reply: &Reply) {
        self.out.extend_from_slice(&reply.to_bytes());
    }

    async fn flush(&mut self) -> Result<(), ConnError> {
        if !self.out.is_empty() {
            let out = std::mem::take(&mut self.out);
            tokio::time::timeout(self.shared.command_timeout, self.stream.write_all(&out))
                .await
                .map_err(|_| ConnError::Timeout)??;
            self.stream.flush().await?;
        }
        Ok(())
    }

    /// Sends `reply` and closes the connection.
    pub async fn close_with(&mut self, reply: &Reply) -> Result<(), ConnError> {
        self.queue_reply(reply);
        self.flush().await?;
        let _ = self.stream.shutdown().await;
        Ok(())
    }

    /// Reads more input. `idle` = waiting for a command, where shutdown interrupts.
    async fn read_more(&mut self, idle: bool) -> Result<ReadOutcome, ConnError> {
        self.flush().await?;
        let shutdown = self.shared.shutdown.clone();
        // Reclaims consumed space or grows; avoids 64-byte reads on a drained buffer.
        self.buf.reserve(16 * 1024);
        let (budget, timer) = self.read_budget();
        if budget.is_zero() {
            return Ok(ReadOutcome::Timeout(timer));
        }
        let read = tokio::time::timeout(budget, self.stream.read_buf(&mut self.buf));
        tokio::select! {
            r = read => match r {
                Ok(Ok(0)) => Ok(ReadOutcome::Eof),
                Ok(Ok(_)) => Ok(ReadOutcome::Data),
                Ok(Err(e)) => Err(e.into()),
                Err(_) => Ok(ReadOutcome::Timeout(timer)),
            },
            _ = shutdown.cancelled(), if idle => Ok(ReadOutcome::Shutdown),
        }
    }

    /// Reads more input or ends the connection with the right 421.
    async fn need_more(&mut self, session: &Session, idle: bool) -> Result<(), ConnError> {
        match self.read_more(idle).await? {
            ReadOutcome::Data => Ok(()),
            ReadOutcome::Eof => Err(ConnError::Eof),
            ReadOutcome::Timeout(timer) => {
                self.shared.metrics.limit_hit(timer);
                tracing::info!(peer = %self.peer, limit = ?timer, "session timed out");
                self.close_with(&Reply::timeout(session.hostname())).await?;
                Err(ConnError::Timeout)
            }
            ReadOutcome::Shutdown => {
                self.close_with(&Reply::shutting_down(session.hostname()))
                    .await?;
                Err(ConnError::Shutdown)
            }
        }
    }

    /// Runs the session to its end.
    pub async fn run(&mut self, mut session: Session) -> Result<(), ConnError> {
        self.queue_reply(&session.greeting());
        let mut pipe: Option<BdatState> = None;
        loop {
            let line = match self.lines.next_line(&mut self.buf) {
                Some(line) => line,
                None => {
                    self.need_more(&session, true).await?;
                    continue;
                }
            };
            if self.shared.shutdown.is_cancelled() {
                return self
                    .close_with(&Reply::shutting_down(session.hostname()))
                    .await
                    .and(Err(ConnError::Shutdown));
            }
            let action = match line {
                Line::TooLong => session.on_line_too_long(),
                Line::Complete(line) => session.on_line(&line),
            };
            self.account(&mut session);
            if !session.bdat_in_progress() {
                pipe = None; // RSET, EHLO … abort a half-sent BDAT message
                self.data_deadline = None;
            }
            match action {
                Action::Reply(r) => self.queue_reply(&r),
                Action::Close(r) => return self.close_with(&r).await,
                Action::StartTls(r) => {
                    self.queue_reply(&r);
                    self.flush().await?;
                    if !self.buf.is_empty() {
                        // RFC 3207 §6 / CVE-2011-0411: plaintext pipelined after STARTTLS is dropped.
                        tracing::warn!(peer = %self.peer, octets = self.buf.len(), "discarding plaintext pipelined after STARTTLS");
                        self.buf.clear();
                    }
                    self.lines = LineReader::default();
                    let info = self.accept_tls().await?;
                    tracing::debug!(version = %info.version, cipher = %info.cipher, "STARTTLS done");
                    session.tls_established(info);
                }
                Action::Authenticate { login, password } => {
                    let next = self.authenticate(&mut session, login, password).await;
                    self.account(&mut session);
                    match next {
                        Action::Close(r) => return self.close_with(&r).await,
                        Action::Reply(r) => self.queue_reply(&r),
                        other => tracing::error!(?other, "unexpected action after AUTH"),
                    }
                }
                Action::ReadData(r) => {
                    self.queue_reply(&r);
                    self.data_deadline = Some(Instant::now() + self.shared.data_timeout);
                    let reply = self.read_data(&mut session).await;
                    self.data_deadline = None;
                    self.account(&mut session);
                    self.queue_reply(&reply?);
                }
                Action::ReadChunk { size, last, reject } => {
                    let reply = self
                        .read_chunk(&mut session, &mut pipe, size, last, reject)
                        .await;
                    if pipe.is_none() {
                        self.data_deadline = None;
                    }
                    self.account(&mut session);
                    self.queue_reply(&reply?);
                }
            }
        }
    }

    async fn authenticate(
        &mut self,
        session: &mut Session,
        login: String,
        password: String,
    ) -> Action {
        let Some(users) = self.shared.users.clone() else {
            return session.auth_unavailable();
        };
        match users.verify(login.clone(), password).await {
            Ok(Some(user)) => {
                let relay = users.is_relay(&user);
                tracing::info!(peer = %self.peer, user = %user, relay, "authenticated");
                let action = session.auth_result(Some(user));
                session.set_relay_account(relay);
                action
            }
            Ok(None) => {
                let delay = self.shared.throttle.record_failure(self.peer);
                tracing::info!(peer = %self.peer, login = ?login, delay_ms = delay.as_millis() as u64, "authentication failed");
                self.flush().await.ok();
                tokio::time::sleep(delay).await;
                session.auth_result(None)
            }
            Err(e) => {
                tracing::error!(error = %e, "password verification failed to run");
                session.auth_unavailable()
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "conn_tests.rs"]
mod tests;
