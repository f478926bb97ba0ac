//! One method per RFC 5321 phase, each with its own §4.5.3.2 timeout.
//!
//! Session-level phases (greeting, EHLO/HELO, STARTTLS, MAIL, RSET) return
//! `Err(ClientError::Rejected)` when refused. Per-recipient and per-message
//! answers (RCPT, DATA, BDAT) come back as [`Reply`] values whatever their
//! code, because they are the final word for those recipients. A 421 is an
//! error everywhere: the server is closing the channel (RFC 5321 §3.8).

use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use super::command::{mail_from_line, rcpt_to_line, Envelope, Recipient};
use super::{BodyEncoder, Capabilities, Client, ClientError, Phase, Reply, State, TlsInfo};

/// How much body is encoded before it is written (and the BDAT chunk size).
const CHUNK: usize = 64 * 1024;

fn rejected(phase: Phase, reply: Reply) -> ClientError {
    ClientError::Rejected { phase, reply }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// Waits for the 220 greeting (RFC 5321 §4.3.1; 5 minutes).
    pub async fn greeting(&mut self) -> Result<Reply, ClientError> {
        let limit = self.timeouts.greeting;
        let (reply, _) = self.exchange(Phase::Greeting, None, limit).await?;
        if reply.code == 220 {
            return Ok(reply);
        }
        self.track(Err(rejected(Phase::Greeting, reply)))
    }

    /// EHLO; on a 5xx (a pre-ESMTP server) falls back to HELO with no
    /// extensions (RFC 5321 §3.2). Returns the accepting reply; the
    /// capabilities are in [`Client::capabilities`].
    pub async fn ehlo(&mut self) -> Result<Reply, ClientError> {
        let limit = self.timeouts.ehlo;
        let line = format!("EHLO {}\r\n", self.helo_name);
        let (reply, raw) = self
            .exchange(Phase::Ehlo, Some(line.as_bytes()), limit)
            .await?;
        if reply.code == 250 {
            let caps = Capabilities::parse(&raw).map_err(|source| ClientError::BadReply {
                phase: Phase::Ehlo,
                source,
            });
            self.caps = self.track(caps)?;
            return Ok(reply);
        }
        if !reply.is_permanent() {
            return self.track(Err(rejected(Phase::Ehlo, reply)));
        }
        self.caps = Capabilities::default();
        let line = format!("HELO {}\r\n", self.helo_name);
        let reply = self.command(Phase::Helo, line.as_bytes(), limit).await?;
        if reply.code == 250 {
            return Ok(reply);
        }
        self.track(Err(rejected(Phase::Helo, reply)))
    }

    /// STARTTLS (RFC 3207), the handshake with the caller's config (the DANE
    /// policy decides it: a verifier, a permissive one, …), then EHLO again,
    /// since everything learnt before TLS must be forgotten (RFC 3207 §4.2).
    pub async fn starttls(
        &mut self,
        config: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<TlsInfo, ClientError> {
        if !self.caps.starttls() {
            return Err(ClientError::StartTlsNotOffered);
        }
        let limit = self.timeouts.starttls;
        let reply = self
            .command(Phase::StartTls, b"STARTTLS\r\n", limit)
            .await?;
        if reply.code != 220 {
            return self.track(Err(rejected(Phase::StartTls, reply)));
        }
        let info = self.upgrade(config, name).await?;
        self.caps = Capabilities::default();
        self.tls = Some(info.clone());
        self.ehlo().await?;
        Ok(info)
    }

    /// Checks the message against what the peer offers before anything is sent.
    fn precheck(&self, env: &Envelope) -> Result<(), ClientError> {
        if env.smtputf8 && !self.caps.smtputf8() {
            return Err(ClientError::SmtpUtf8NotOffered);
        }
        if let (Some(size), Some(limit)) = (env.size, self.caps.size_limit) {
            if size > limit {
                return Err(ClientError::TooBig { size, limit });
            }
        }
        Ok(())
    }

    /// MAIL FROM with the parameters the peer supports (5 minutes). Sends
    /// RSET first when an earlier transaction was left unfinished.
    pub async fn mail_from(&mut self, env: &Envelope) -> Result<Reply, ClientError> {
        self.precheck(env)?;
        if self.state == State::NeedsReset {
            self.rset().await?;
        }
        let line = mail_from_line(env, &self.caps);
        let limit = self.timeouts.mail;
        let reply = self.command(Phase::Mail, line.as_bytes(), limit).await?;
        if !reply.is_positive() {
            return Err(rejected(Phase::Mail, reply));
        }
        self.state = State::NeedsReset;
        Ok(reply)
    }

    /// RCPT TO for each recipient, all in one write when the peer offers
    /// PIPELINING (RFC 2920), else one at a time. One reply per recipient,
    /// in order, each read within the RCPT timeout (5 minutes).
    pub async fn rcpt_to(&mut self, rcpts: &[Recipient]) -> Result<Vec<Reply>, ClientError> {
        let mut replies = Vec::with_capacity(rcpts.len());
        self.rcpts_into(rcpts, &mut replies).await?;
        Ok(replies)
    }

    /// [`Client::rcpt_to`] that keeps the replies read before an error.
    pub(super) async fn rcpts_into(
        &mut self,
        rcpts: &[Recipient],
        replies: &mut Vec<Reply>,
    ) -> Result<(), ClientError> {
        let lines: Vec<String> = rcpts.iter().map(|r| rcpt_to_line(r, &self.caps)).collect();
        let limit = self.timeouts.rcpt;
        if self.caps.pipelining() {
            let batch = lines.concat();
            let work = async { self.write_raw(Phase::Rcpt, batch.as_bytes()).await };
            let written =
                tokio::time::timeout(limit, work)
                    .await
                    .unwrap_or(Err(ClientError::Timeout {
                        phase: Phase::Rcpt,
                        after: limit,
                    }));
            self.track(written)?;
            for _ in &lines {
                replies.push(self.exchange(Phase::Rcpt, None, limit).await?.0);
            }
        } else {
            for line in &lines {
                replies.push(self.command(Phase::Rcpt, line.as_bytes(), limit).await?);
            }
        }
        Ok(())
    }

    /// MAIL and all RCPTs in one write (RFC 2920 §3.1: MAIL and RCPT may be
    /// pipelined; DATA is sent only once a recipient was accepted, so a
    /// transaction without recipients never has to be ended with a lone dot).
    /// RCPT replies are pushed to `replies` as they arrive.
    pub(super) async fn envelope_pipelined(
        &mut self,
        env: &Envelope,
        replies: &mut Vec<Reply>,
    ) -> Result<Reply, ClientError> {
        self.precheck(env)?;
        if self.state == State::NeedsReset {
            self.rset().await?;
        }
        let mut batch = mail_from_line(env, &self.caps);
        for r in &env.recipients {
            batch.push_str(&rcpt_to_line(r, &self.caps));
        }
        let limit = self.timeouts.mail;
        let (mail, _) = self
            .exchange(Phase::Mail, Some(batch.as_bytes()), limit)
            .await?;
        self.state = State::NeedsReset;
        let limit = self.timeouts.rcpt;
        for _ in &env.recipients {
            replies.push(self.exchange(Phase::Rcpt, None, limit).await?.0);
        }
        Ok(mail)
    }

    /// DATA, the dot-stuffed body streamed in blocks (3 minutes each), the
    /// final dot (10 minutes). Returns the DATA reply when it is not 354,
    /// else the final reply.
    pub async fn data<R: AsyncRead + Unpin>(&mut self, body: R) -> Result<Reply, ClientError> {
        let limit = self.timeouts.data;
        let reply = self.command(Phase::Data, b"DATA\r\n", limit).await?;
        if reply.code != 354 {
            if reply.is_positive() {
                let detail = format!("DATA answered with {reply}");
                return self.track(Err(ClientError::Protocol {
                    phase: Phase::Data,
                    detail,
                }));
            }
            return Ok(reply);
        }
        self.send_body(body).await?;
        let limit = self.timeouts.final_dot;
        let (reply, _) = self.exchange(Phase::FinalDot, None, limit).await?;
        self.state = State::Ready;
        Ok(reply)
    }

    async fn send_body<R: AsyncRead + Unpin>(&mut self, mut body: R) -> Result<(), ClientError> {
        let mut enc = BodyEncoder::for_data();
        let mut input = vec![0u8; CHUNK];
        let mut out = Vec::with_capacity(CHUNK + CHUNK / 8);
        loop {
            let n = match body.read(&mut input).await {
                Ok(n) => n,
                Err(source) => return self.abandon(ClientError::BodyRead { source }).await,
            };
            let step = if n == 0 {
                enc.finish(&mut out)
            } else {
                enc.encode(&input[..n], &mut out)
            };
            if let Err(e) = step {
                return self.abandon(e.into()).await;
            }
            if n == 0 || out.len() >= CHUNK {
                self.timed_write(Phase::DataBlock, &out).await?;
                out.clear();
            }
            if n == 0 {
                return Ok(());
            }
        }
    }

    /// Writes one block of message data within the data-block timeout.
    async fn timed_write(&mut self, phase: Phase, bytes: &[u8]) -> Result<(), ClientError> {
        let limit = self.timeouts.data_block;
        let work = async { self.write_raw(phase, bytes).await };
        let result = tokio::time::timeout(limit, work)
            .await
            .unwrap_or(Err(ClientError::Timeout {
                phase,
                after: limit,
            }));
        self.track(result)
    }

    /// Gives up mid-body: the connection is closed without the terminator,
    /// so the peer must discard what it got (RFC 5321 §4.1.1.4).
    async fn abandon<T>(&mut self, err: ClientError) -> Result<T, ClientError> {
        self.shutdown().await;
        Err(err)
    }

    /// RFC 3030 BDAT: the body in counted chunks, no dot-stuffing, the last
    /// one marked LAST. Returns the first non-2xx chunk reply, else the final one.
    pub async fn bdat<R: AsyncRead + Unpin>(&mut self, mut body: R) -> Result<Reply, ClientError> {
        let mut enc = BodyEncoder::for_bdat();
        let mut input = vec![0u8; CHUNK];
        let mut out = Vec::with_capacity(CHUNK + CHUNK / 8);
        loop {
            let n = match body.read(&mut input).await {
                Ok(n) => n,
                Err(source) => return self.abandon(ClientError::BodyRead { source }).await,
            };
            let last = n == 0;
            let step = if last {
                enc.finish(&mut out)
            } else {
                enc.encode(&input[..n], &mut out)
            };
            if let Err(e) = step {
                return self.abandon(e.into()).await;
            }
            if !last && out.len() < CHUNK {
                continue;
            }
            let header = format!("BDAT {}{}\r\n", out.len(), if last { " LAST" } else { "" });
            let mut chunk = Vec::with_capacity(header.len() + out.len());
            chunk.extend_from_slice(header.as_bytes());
            chunk.extend_from_slice(&out);
            out.clear();
            self.timed_write(Phase::Bdat, &chunk).await?;
            let limit = if last {
                self.timeouts.final_dot
            } else {
                self.timeouts.data_block
            };
            let phase = if last { Phase::FinalDot } else { Phase::Bdat };
            let (reply, _) = self.exchange(phase, None, limit).await?;
            if last || !reply.is_positive() {
                if last && reply.is_positive() {
                    self.state = State::Ready;
                }
                return Ok(reply);
            }
        }
    }

    /// RSET (RFC 5321 §4.1.1.5): back to a clean session for the next
    /// message. A peer that refuses RSET is not reused.
    pub async fn rset(&mut self) -> Result<Reply, ClientError> {
        let limit = self.timeouts.rset;
        let reply = self.command(Phase::Rset, b"RSET\r\n", limit).await?;
        if reply.code != 250 {
            self.state = State::Broken;
            return Err(rejected(Phase::Rset, reply));
        }
        self.state = State::Ready;
        Ok(reply)
    }

    /// QUIT and close. The reply is returned for the log; errors here change
    /// no delivery outcome.
    pub async fn quit(mut self) -> Result<Reply, ClientError> {
        let limit = self.timeouts.quit;
        let result = self.command(Phase::Quit, b"QUIT\r\n", limit).await;
        self.shutdown().await;
        result
    }
}
