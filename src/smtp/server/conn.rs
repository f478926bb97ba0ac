//! One connection's I/O: owns the stream (plain, or TLS after STARTTLS or on
//! an implicit listener) and its buffers, frames command lines, performs what
//! the [`Session`] asks for (replies, TLS upgrade, password checks, reading
//! DATA/BDAT into the store) and applies timeouts (RFC 5321 §4.5.3.2) and
//! shutdown. Generic over the byte stream, so tests can use in-memory pipes.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::data::{ChunkChecker, ContentStatus, DataReader};
use super::headers::{received, MessageAssembler, ReceivedInfo};
use super::limits::{HeaderCheck, HeaderViolation};
use super::session::{Action, MessageOutcome, Session, SessionEvent, TlsInfo};
use super::signing::SigningPipe;
use super::store::{MessageStore, Submitted, CHUNK};
use super::tls::{tls_info, ServerTls};
use crate::auth::{FailureThrottle, UserStore};
use crate::metrics::{LimitHit, Metrics};
use crate::smtp::wire::{Line, LineReader, Reply};
use tokio::time::Instant;

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
                tracing::info!(peer = %self.peer, user = %user, "authenticated");
                session.auth_result(Some(user))
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

    fn received_header(&self, session: &Session, id: Option<&str>, now: SystemTime) -> String {
        received(&ReceivedInfo {
            id,
            helo: session.helo(),
            client: self.peer,
            tls: session.tls(),
            auth_user: session.auth_user(),
            hostname: session.hostname(),
            esmtp: session.esmtp(),
            smtputf8: session.transaction().is_some_and(|t| t.smtputf8),
            when: now,
        })
    }

    /// DATA: reads to the real `<CRLF>.<CRLF>`, streaming into the store.
    async fn read_data(&mut self, session: &mut Session) -> Result<Reply, ConnError> {
        let now = SystemTime::now();
        let (mut pipe, id) =
            SigningPipe::start(self.shared.store.clone(), self.shared.dkim.clone());
        let received = self.received_header(session, id.as_deref(), now);
        let mut assembler = MessageAssembler::new(received, session.hostname(), now);
        let mut reader = DataReader::new(session.max_message_size());
        let mut header = self.header_check();
        let mut content = Vec::with_capacity(CHUNK);
        let mut assembled = Vec::with_capacity(CHUNK);
        loop {
            let end = reader.feed(&self.buf, &mut content);
            let consumed = end.unwrap_or(self.buf.len());
            let _ = self.buf.split_to(consumed);
            header.feed(&content);
            if header.violation().is_some() {
                content.clear(); // keep reading to the end, store nothing more
            }
            assembler.push(&content, &mut assembled);
            content.clear();
            if end.is_some() {
                assembler.finish(&mut assembled);
            }
            if assembled.len() >= CHUNK || end.is_some() {
                pipe.write(std::mem::take(&mut assembled)).await;
            }
            if end.is_some() {
                break;
            }
            self.need_more(session, false).await?;
        }
        Ok(self
            .finish_message(session, pipe, reader.status(), header.violation(), now)
            .await)
    }

    fn header_check(&self) -> HeaderCheck {
        HeaderCheck::new(self.shared.max_header_size, self.shared.max_header_fields)
    }

    /// Maps the content status (and the commit) to the final reply.
    async fn finish_message(
        &mut self,
        session: &mut Session,
        pipe: SigningPipe,
        status: ContentStatus,
        header: Option<HeaderViolation>,
        now: SystemTime,
    ) -> Reply {
        let outcome = if status.bare_line_ending {
            MessageOutcome::BareLineEnding
        } else if status.too_large {
            MessageOutcome::TooLarge
        } else if header == Some(HeaderViolation::TooLarge) {
            MessageOutcome::HeaderTooLarge
        } else if header == Some(HeaderViolation::TooManyFields) {
            MessageOutcome::TooManyHeaderFields
        } else if let Some(tx) = session.transaction().cloned() {
            let submitted = Submitted {
                tx,
                auth_user: session.auth_user().map(str::to_string),
                client: self.peer,
                received_at: now,
            };
            let rcpts = submitted.tx.recipients.len();
            let from = submitted.tx.sender.clone();
            match pipe.commit(submitted).await {
                Ok(id) => {
                    tracing::info!(queue_id = %id, from = %from, rcpts, size = status.octets, "message accepted");
                    self.shared.metrics.messages_received_total.inc();
                    self.shared
                        .metrics
                        .received_bytes_total
                        .inc_by(status.octets);
                    MessageOutcome::Queued(id)
                }
                Err(e) => {
                    tracing::error!(error = %e, "storing message failed");
                    MessageOutcome::StorageFailed
                }
            }
        } else {
            MessageOutcome::StorageFailed
        };
        if !matches!(outcome, MessageOutcome::Queued(_)) {
            tracing::info!(peer = %self.peer, ?outcome, "message rejected");
        }
        session.message_done(outcome)
    }

    /// BDAT: reads exactly `size` octets (RFC 3030 §2), even when rejecting.
    async fn read_chunk(
        &mut self,
        session: &mut Session,
        state: &mut Option<BdatState>,
        size: usize,
        last: bool,
        reject: Option<Reply>,
    ) -> Result<Reply, ConnError> {
        let mut left = size;
        if reject.is_none() && state.is_none() {
            let now = SystemTime::now();
            let (pipe, id) =
                SigningPipe::start(self.shared.store.clone(), self.shared.dkim.clone());
            let received = self.received_header(session, id.as_deref(), now);
            self.data_deadline = Some(Instant::now() + self.shared.data_timeout);
            *state = Some(BdatState {
                assembler: MessageAssembler::new(received, session.hostname(), now),
                checker: ChunkChecker::new(session.max_message_size()),
                header: self.header_check(),
                pipe,
                now,
            });
        }
        let mut assembled = Vec::new();
        while left > 0 {
            if self.buf.is_empty() {
                self.need_more(session, false).await?;
            }
            let take = left.min(self.buf.len());
            let bytes = self.buf.split_to(take);
            left -= take;
            if let (None, Some(st)) = (&reject, state.as_mut()) {
                let mut keep = st.checker.feed(&bytes);
                st.header.feed(keep);
                if st.header.violation().is_some() {
                    keep = &[];
                }
                st.assembler.push(keep, &mut assembled);
                if assembled.len() >= CHUNK {
                    st.pipe.write(std::mem::take(&mut assembled)).await;
                }
            }
        }
        if let Some(reply) = reject {
            return Ok(reply);
        }
        let Some(mut st) = state.take() else {
            return Ok(Reply::storage_failure());
        };
        if !last {
            st.pipe.write(assembled).await;
            *state = Some(st);
            return Ok(session.chunk_done(size));
        }
        st.assembler.finish(&mut assembled);
        st.pipe.write(assembled).await;
        let status = st.checker.finish();
        let header = st.header.violation();
        Ok(self
            .finish_message(session, st.pipe, status, header, st.now)
            .await)
    }
}

/// A BDAT message between chunks.
struct BdatState {
    assembler: MessageAssembler,
    checker: ChunkChecker,
    header: HeaderCheck,
    pipe: SigningPipe,
    now: SystemTime,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "conn_tests.rs"]
mod tests;
