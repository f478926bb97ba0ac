//! `https:` report delivery (RFC 8460 §5.2 / §5.4): one POST of
//! `application/tlsrpt+gzip` over HTTP/1.1 and TLS, the server
//! authenticated against the Mozilla roots (webpki-roots) plus any extra
//! roots (tests), its name resolved through the relay's resolver. No
//! redirects; any 2xx is success.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

use crate::dns::DnsLookup;

/// Why a POST did not succeed (all retried until the 24 h limit).
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    #[error("invalid report URI {0}")]
    Uri(String),
    #[error("cannot resolve {host}: {detail}")]
    Resolve { host: String, detail: String },
    #[error("connect to {addr}: {detail}")]
    Connect { addr: SocketAddr, detail: String },
    #[error("TLS with {host}: {detail}")]
    Tls { host: String, detail: String },
    #[error("HTTP: {0}")]
    Http(String),
    #[error("the server answered {0}")]
    Status(u16),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// The TLS client config for report endpoints.
pub fn client_config(extra_roots: &[CertificateDer<'static>]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for c in extra_roots {
        let _ = roots.add(c.clone());
    }
    let provider = crate::dane::provider::ring_provider().clone();
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth());
    // The ring provider supports the default versions; fall back to an
    // empty-root config (every POST then fails TLS) rather than panic.
    Arc::new(config.unwrap_or_else(|_| {
        rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()
    }))
}

/// POSTs `body` to `uri` within `timeout`.
pub async fn post(
    dns: &dyn DnsLookup,
    tls: Arc<rustls::ClientConfig>,
    uri: &str,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<u16, PostError> {
    tokio::time::timeout(timeout, post_inner(dns, tls, uri, body))
        .await
        .map_err(|_| PostError::Timeout(timeout))?
}

async fn post_inner(
    dns: &dyn DnsLookup,
    tls: Arc<rustls::ClientConfig>,
    uri: &str,
    body: Vec<u8>,
) -> Result<u16, PostError> {
    let parsed: hyper::Uri = uri.parse().map_err(|_| PostError::Uri(uri.into()))?;
    let host = parsed
        .host()
        .ok_or_else(|| PostError::Uri(uri.into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = parsed.port_u16().unwrap_or(443);
    let addrs = resolve(dns, &host).await?;
    let mut last = None;
    let mut tcp = None;
    for ip in addrs {
        let addr = SocketAddr::new(ip, port);
        match TcpStream::connect(addr).await {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => {
                last = Some(PostError::Connect {
                    addr,
                    detail: e.to_string(),
                })
            }
        }
    }
    let tcp = match (tcp, last) {
        (Some(t), _) => t,
        (None, Some(e)) => return Err(e),
        (None, None) => {
            return Err(PostError::Resolve {
                host,
                detail: "no addresses".into(),
            })
        }
    };
    let name = ServerName::try_from(host.clone()).map_err(|_| PostError::Uri(uri.into()))?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| PostError::Tls {
            host: host.clone(),
            detail: e.to_string(),
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| PostError::Http(e.to_string()))?;
    let driver = tokio::spawn(conn);
    let path = parsed.path_and_query().map_or("/", |p| p.as_str());
    let authority = parsed.authority().map_or(host.as_str(), |a| a.as_str());
    let request = hyper::Request::post(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/tlsrpt+gzip")
        .header(hyper::header::CONTENT_LENGTH, body.len())
        .header(hyper::header::USER_AGENT, "danerelay")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| PostError::Http(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| PostError::Http(e.to_string()))?;
    let status = response.status().as_u16();
    // Drain (bounded by the caller's timeout) so the server sees a clean end.
    let _ = response.into_body().collect().await;
    driver.abort();
    if (200..300).contains(&status) {
        Ok(status)
    } else {
        Err(PostError::Status(status))
    }
}

async fn resolve(dns: &dyn DnsLookup, host: &str) -> Result<Vec<std::net::IpAddr>, PostError> {
    crate::dns::host_addresses(dns, host)
        .await
        .map_err(|detail| PostError::Resolve {
            host: host.into(),
            detail,
        })
}
