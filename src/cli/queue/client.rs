//! The HTTP/1.1 transport of `danerelay queue …`: one request per call to
//! the admin API of a running relay, bearer token, JSON answers. It lives
//! with the command because nothing else talks to the admin API; the
//! server and its types are in `crate::http::admin`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

/// Why a call to the admin API failed. Not `ClientError`: that name is the
/// outbound SMTP client's.
#[derive(Debug, thiserror::Error)]
pub enum AdminApiError {
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
    #[error("cannot build the request (is the token plain text?): {0}")]
    Request(String),
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

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Bytes, AdminApiError> {
        let stream = tokio::net::TcpStream::connect(self.address)
            .await
            .map_err(|source| AdminApiError::Connect {
                address: self.address,
                source,
            })?;
        let http_err = |e: hyper::Error| AdminApiError::Http {
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
        if body.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| AdminApiError::Request(e.to_string()))?;
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
        Err(AdminApiError::Status { status, message })
    }

    pub async fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
    ) -> Result<(T, Bytes), AdminApiError> {
        self.json_with(method, path, None).await
    }

    /// [`AdminClient::json`] with a JSON request body.
    pub async fn json_with<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(T, Bytes), AdminApiError> {
        let body = self.call(method, path, body).await?;
        let value =
            serde_json::from_slice(&body).map_err(|e| AdminApiError::Decode(e.to_string()))?;
        Ok((value, body))
    }
}

/// Queue ids are `[0-9A-Z]`; anything else is percent-encoded so that a
/// mistyped id cannot change the request path.
pub fn encode(id: &str) -> String {
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
