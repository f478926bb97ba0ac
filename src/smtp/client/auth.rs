//! RFC 4954 AUTH PLAIN (RFC 4616), for a client submitting to a relay
//! (`danerelay sendmail`); the delivery engine never authenticates to MX hosts.

use base64::Engine;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Client, ClientError, Phase, Reply};

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// `AUTH PLAIN` with the initial response (RFC 4954 §4), authorization
    /// identity empty. `Ok` only for 235; any other reply is
    /// `ClientError::Rejected` with phase `Auth`. The credentials go out only
    /// as the caller decides (inside TLS, or to a loopback address).
    pub async fn auth_plain(&mut self, user: &str, password: &str) -> Result<Reply, ClientError> {
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("\0{user}\0{password}").as_bytes());
        let line = format!("AUTH PLAIN {token}\r\n");
        let limit = self.timeouts.mail;
        let reply = self.command(Phase::Auth, line.as_bytes(), limit).await?;
        if reply.code == 235 {
            return Ok(reply);
        }
        self.track(Err(ClientError::Rejected {
            phase: Phase::Auth,
            reply,
        }))
    }
}
