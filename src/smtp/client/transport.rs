//! The bytes under a session: the plain or TLS stream (swapped in place by
//! STARTTLS), writing command lines and reading whole replies, each bounded
//! by a timeout.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::HandshakeKind;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::{Client, ClientError, Phase, Reply, State};

/// The stream under a session: as connected, or wrapped in TLS.
pub enum Transport<S> {
    Plain(S),
    Tls(Box<TlsStream<S>>),
    /// Only while STARTTLS swaps the stream; a failed handshake leaves it here.
    Gone,
}

fn gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "stream lost in a failed TLS upgrade",
    )
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Transport<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Transport::Gone => Poll::Ready(Err(gone())),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Transport<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Transport::Gone => Poll::Ready(Err(gone())),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Transport::Gone => Poll::Ready(Err(gone())),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Transport::Gone => Poll::Ready(Ok(())),
        }
    }
}

/// What TLS negotiated, for the delivery log line and `tls-check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// e.g. `TLSv1.3`.
    pub version: String,
    /// IANA name, e.g. `TLS_AES_256_GCM_SHA384`.
    pub cipher: String,
    /// The chain the peer presented, leaf first. After a resumed handshake
    /// the chain of the session's original (fully verified) handshake.
    pub peer_certificates: Vec<CertificateDer<'static>>,
    /// The handshake resumed an earlier session (rustls
    /// `HandshakeKind::Resumed`): no certificate was sent or verified.
    pub resumed: bool,
}

impl TlsInfo {
    fn from_connection(conn: &rustls::ClientConnection) -> TlsInfo {
        let (version, cipher) = crate::smtp::tls_names::negotiated(conn);
        TlsInfo {
            version,
            cipher,
            peer_certificates: conn
                .peer_certificates()
                .map(<[_]>::to_vec)
                .unwrap_or_default(),
            resumed: conn.handshake_kind() == Some(HandshakeKind::Resumed),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// Writes `bytes` (one or more full command lines, or body data) and flushes.
    pub(super) async fn write_raw(
        &mut self,
        phase: Phase,
        bytes: &[u8],
    ) -> Result<(), ClientError> {
        let io = |source| ClientError::Io { phase, source };
        self.stream.write_all(bytes).await.map_err(io)?;
        self.stream.flush().await.map_err(io)?;
        self.sent += bytes.len() as u64;
        Ok(())
    }

    /// Reads one complete (possibly multi-line) reply; also returns its raw bytes.
    pub(super) async fn read_reply_raw(
        &mut self,
        phase: Phase,
    ) -> Result<(Reply, Vec<u8>), ClientError> {
        loop {
            if !self.rbuf.is_empty() {
                let (used, done) = self.reader.feed(&self.rbuf);
                let _ = self.rbuf.split_to(used);
                if let Some(done) = done {
                    return done.map_err(|source| ClientError::BadReply { phase, source });
                }
            }
            let n = self
                .stream
                .read_buf(&mut self.rbuf)
                .await
                .map_err(|source| ClientError::Io { phase, source })?;
            if n == 0 {
                return Err(ClientError::Closed { phase });
            }
        }
    }

    /// Sends `line` (when given) and reads one reply, all within `limit`.
    /// A 421 reply is returned as `Rejected`: the server is going away.
    pub(super) async fn exchange(
        &mut self,
        phase: Phase,
        line: Option<&[u8]>,
        limit: Duration,
    ) -> Result<(Reply, Vec<u8>), ClientError> {
        if self.state == State::Broken {
            return Err(ClientError::Unusable);
        }
        let work = async {
            if let Some(line) = line {
                self.write_raw(phase, line).await?;
            }
            self.read_reply_raw(phase).await
        };
        let result = match tokio::time::timeout(limit, work).await {
            Ok(Ok((reply, raw))) => {
                tracing::debug!(%phase, reply = %reply, "smtp reply");
                if reply.is_closing() {
                    Err(ClientError::Rejected { phase, reply })
                } else {
                    Ok((reply, raw))
                }
            }
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout {
                phase,
                after: limit,
            }),
        };
        self.track(result)
    }

    /// Like [`Client::exchange`] without the raw bytes.
    pub(super) async fn command(
        &mut self,
        phase: Phase,
        line: &[u8],
        limit: Duration,
    ) -> Result<Reply, ClientError> {
        self.exchange(phase, Some(line), limit)
            .await
            .map(|(r, _)| r)
    }

    /// Replaces the plain stream by a TLS stream (RFC 3207 §4.2). Any byte
    /// the server sent after its 220 would be plaintext injected into the
    /// TLS session (CVE-2011-0411 class): that is refused.
    pub(super) async fn upgrade(
        &mut self,
        config: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<TlsInfo, ClientError> {
        if !self.rbuf.is_empty() {
            let result = Err(ClientError::Protocol {
                phase: Phase::StartTls,
                detail: "the server sent data after its STARTTLS reply".into(),
            });
            return self.track(result);
        }
        let plain = match std::mem::replace(&mut self.stream, Transport::Gone) {
            Transport::Plain(s) => s,
            other => {
                self.stream = other;
                let result = Err(ClientError::Protocol {
                    phase: Phase::StartTls,
                    detail: "TLS is already active".into(),
                });
                return self.track(result);
            }
        };
        let connect = TlsConnector::from(config).connect(name, plain);
        let limit = self.timeouts.starttls;
        let result = match tokio::time::timeout(limit, connect).await {
            Ok(Ok(tls)) => {
                let info = TlsInfo::from_connection(tls.get_ref().1);
                self.stream = Transport::Tls(Box::new(tls));
                Ok(info)
            }
            Ok(Err(source)) => Err(ClientError::Tls { source }),
            Err(_) => Err(ClientError::Timeout {
                phase: Phase::TlsHandshake,
                after: limit,
            }),
        };
        self.track(result)
    }

    /// Closes our side of the stream (after QUIT, or to abandon a transaction).
    pub(super) async fn shutdown(&mut self) {
        // Best effort: the peer may already be gone.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.stream.shutdown()).await;
        self.state = State::Broken;
    }
}
