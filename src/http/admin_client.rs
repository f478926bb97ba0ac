//! `danerelay queue …`: a small HTTP client for the admin API of a running
//! relay, printing tables for people or JSON (`--json`) for scripts.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

use super::admin::{Changed, MessageView, RetryAll, Summary};

/// One `danerelay queue` action.
#[derive(Debug, Clone)]
pub enum QueueAction {
    List { json: bool },
    Show { id: String, json: bool },
    Summary { json: bool },
    Hold(Vec<String>),
    Release(Vec<String>),
    Delete(Vec<String>),
    Retry(Vec<String>),
    RetryAll,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the admin API at {address}: {source} (is danerelay running?)")]
    Connect {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("admin API at {address}: {message}")]
    Http {
        address: SocketAddr,
        message: String,
    },
    #[error("admin API answered {status}: {message}")]
    Status { status: StatusCode, message: String },
    #[error("unexpected answer from the admin API: {0}")]
    Decode(String),
}

/// Where the admin API is and how to authenticate.
#[derive(Debug, Clone)]
pub struct AdminClient {
    pub address: SocketAddr,
    pub token: Option<String>,
}

impl AdminClient {
    /// From `http.address`: a wildcard bind address is reached over loopback.
    pub fn new(mut address: SocketAddr, token: Option<String>) -> AdminClient {
        if address.ip().is_unspecified() {
            address.set_ip(match address.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            });
        }
        AdminClient { address, token }
    }

    async fn call(&self, method: Method, path: &str) -> Result<Bytes, ClientError> {
        let stream = tokio::net::TcpStream::connect(self.address)
            .await
            .map_err(|source| ClientError::Connect {
                address: self.address,
                source,
            })?;
        let http_err = |e: hyper::Error| ClientError::Http {
            address: self.address,
            message: e.to_string(),
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http_err)?;
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, self.address.to_string());
        if let Some(token) = &self.token {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = req
            .body(Full::new(Bytes::new()))
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        let resp = sender.send_request(req).await.map_err(http_err)?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(http_err)?
            .to_bytes();
        if status.is_success() {
            return Ok(body);
        }
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        Err(ClientError::Status { status, message })
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
    ) -> Result<(T, Bytes), ClientError> {
        let body = self.call(method, path).await?;
        let value =
            serde_json::from_slice(&body).map_err(|e| ClientError::Decode(e.to_string()))?;
        Ok((value, body))
    }

    /// Runs one action, printing to `out`. Returns the process exit code:
    /// 0 all done, 1 when some id was not found.
    pub async fn run(&self, action: QueueAction, out: &mut dyn Write) -> Result<u8, ClientError> {
        let w = |out: &mut dyn Write, s: String| {
            let _ = writeln!(out, "{s}");
        };
        match action {
            QueueAction::List { json } => {
                let (list, raw): (Vec<MessageView>, _) =
                    self.json(Method::GET, "/api/queue").await?;
                if json {
                    w(out, String::from_utf8_lossy(&raw).into_owned());
                } else {
                    print_table(&list, out);
                }
                Ok(0)
            }
            QueueAction::Show { id, json } => {
                let (m, raw): (MessageView, _) = self
                    .json(Method::GET, &format!("/api/queue/{}", encode(&id)))
                    .await?;
                if json {
                    w(out, String::from_utf8_lossy(&raw).into_owned());
                } else {
                    print_message(&m, out);
                }
                Ok(0)
            }
            QueueAction::Summary { json } => {
                let (s, raw): (Summary, _) = self.json(Method::GET, "/api/queue/summary").await?;
                if json {
                    w(out, String::from_utf8_lossy(&raw).into_owned());
                } else {
                    print_summary(&s, out);
                }
                Ok(0)
            }
            QueueAction::RetryAll => {
                let (r, _): (RetryAll, _) = self.json(Method::POST, "/api/queue/retry").await?;
                w(
                    out,
                    format!("{} message(s) scheduled for immediate retry", r.count),
                );
                Ok(0)
            }
            QueueAction::Hold(ids) => self.each(ids, Method::POST, "hold", "held", out).await,
            QueueAction::Release(ids) => {
                self.each(ids, Method::POST, "release", "released", out)
                    .await
            }
            QueueAction::Retry(ids) => {
                self.each(ids, Method::POST, "retry", "scheduled for retry", out)
                    .await
            }
            QueueAction::Delete(ids) => self.each(ids, Method::DELETE, "", "deleted", out).await,
        }
    }

    async fn each(
        &self,
        ids: Vec<String>,
        method: Method,
        verb: &str,
        done: &str,
        out: &mut dyn Write,
    ) -> Result<u8, ClientError> {
        let mut code = 0;
        for id in ids {
            let path = if verb.is_empty() {
                format!("/api/queue/{}", encode(&id))
            } else {
                format!("/api/queue/{}/{verb}", encode(&id))
            };
            match self.json::<Changed>(method.clone(), &path).await {
                Ok((c, _)) if c.changed => {
                    let _ = writeln!(out, "{id}: {done}");
                }
                Ok(_) => {
                    let _ = writeln!(out, "{id}: unchanged (already {done})");
                }
                Err(ClientError::Status { status, message })
                    if status == StatusCode::NOT_FOUND || status == StatusCode::BAD_REQUEST =>
                {
                    let _ = writeln!(out, "{id}: {message}");
                    code = 1;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(code)
    }
}

/// Queue ids are `[0-9A-Z]`; anything else is percent-encoded so that a
/// mistyped id cannot change the request path.
fn encode(id: &str) -> String {
    id.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn print_table(list: &[MessageView], out: &mut dyn Write) {
    let _ = writeln!(
        out,
        "{:<12}  {:<8}  {:>5}  {:>9}  {:<30}  RECIPIENTS",
        "ID", "STATE", "AGE", "SIZE", "SENDER"
    );
    for m in list {
        let open = m
            .recipients
            .iter()
            .filter(|r| r.state == "pending" || r.state == "deferred")
            .count();
        let sender = if m.sender.is_empty() { "<>" } else { &m.sender };
        let _ = writeln!(
            out,
            "{:<12}  {:<8}  {:>5}  {:>9}  {:<30}  {open}/{}",
            m.id,
            m.state,
            age(m.age_seconds),
            m.size,
            sender,
            m.recipients.len()
        );
    }
    let _ = writeln!(out, "-- {} message(s)", list.len());
}

fn print_message(m: &MessageView, out: &mut dyn Write) {
    let sender = if m.sender.is_empty() { "<>" } else { &m.sender };
    let _ = writeln!(out, "id:           {}", m.id);
    let _ = writeln!(out, "state:        {}", m.state);
    let _ = writeln!(out, "sender:       {sender}");
    let _ = writeln!(out, "size:         {}", m.size);
    let _ = writeln!(
        out,
        "received:     {} ({} ago)",
        m.received_at,
        age(m.age_seconds)
    );
    if let Some(user) = &m.auth_user {
        let _ = writeln!(out, "auth user:    {user}");
    }
    let _ = writeln!(out, "deferrals:    {}", m.deferrals);
    let _ = writeln!(
        out,
        "next attempt: {}",
        m.next_attempt.as_deref().unwrap_or("-")
    );
    for r in &m.recipients {
        let _ = writeln!(
            out,
            "recipient:    {} {} attempts={} {}",
            r.address,
            r.state,
            r.attempts,
            r.last_reply.as_deref().unwrap_or("")
        );
    }
}

fn print_summary(s: &Summary, out: &mut dyn Write) {
    let _ = writeln!(
        out,
        "pending={} deferred={} held={} active={} oldest={}",
        s.pending,
        s.deferred,
        s.held,
        s.active,
        s.oldest_age_seconds.map(age).unwrap_or_else(|| "-".into())
    );
    let _ = writeln!(
        out,
        "{:<40}  {:>8}  {:>10}  {:>6}",
        "DOMAIN", "MESSAGES", "RECIPIENTS", "OLDEST"
    );
    for d in &s.domains {
        let _ = writeln!(
            out,
            "{:<40}  {:>8}  {:>10}  {:>6}",
            d.domain,
            d.messages,
            d.recipients,
            age(d.oldest_age_seconds)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_cannot_escape_the_path() {
        assert_eq!(encode("0AB12CD34EF5"), "0AB12CD34EF5");
        assert_eq!(encode("../x"), "%2E%2E%2Fx");
    }

    #[test]
    fn wildcard_address_is_reached_over_loopback() {
        let c = AdminClient::new("0.0.0.0:9587".parse().unwrap(), None);
        assert_eq!(c.address.to_string(), "127.0.0.1:9587");
        let c = AdminClient::new("[::]:9587".parse().unwrap(), None);
        assert_eq!(c.address.to_string(), "[::1]:9587");
    }
}
