//! Fetching a policy (RFC 8461 §3.3): `mta-sts.<domain>` resolved with the
//! relay's resolver, HTTPS to port 443 with a certificate valid for that
//! name under the MTA-STS roots, `GET /.well-known/mta-sts.txt`, no
//! redirects, 200 only, `text/plain`, at most [`MAX_BODY`] bytes, and the
//! whole of it (DNS, connect, TLS, headers, body) bounded by
//! `mta_sts.fetch_timeout`, so a server that trickles bytes cannot hold a
//! delivery longer.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

use super::policy::{parse_policy, Policy, PolicyError};
use crate::dane::provider::ring_provider;
use crate::dns::DnsLookup;
use crate::metrics::StsFetchResult;

/// RFC 8461 §3.3: "senders ... may wish to limit the size of the policy
/// body ... 64 kilobytes".
pub const MAX_BODY: usize = 64 * 1024;

/// The well-known path (§3.2).
pub const PATH: &str = "/.well-known/mta-sts.txt";

/// Why a fetch produced no policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("resolving {host}: {detail}")]
    Dns { host: String, detail: String },
    #[error("connecting to {host}: {detail}")]
    Connect { host: String, detail: String },
    #[error("TLS with {host}: {detail}")]
    Tls { host: String, detail: String },
    #[error("HTTP: {0}")]
    Http(String),
    #[error("policy larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("no policy within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Invalid(PolicyError),
}

impl FetchError {
    /// The `danerelay_mta_sts_fetch_total` label.
    pub fn metric(&self) -> StsFetchResult {
        match self {
            FetchError::Dns { .. } => StsFetchResult::DnsError,
            FetchError::Connect { .. } => StsFetchResult::ConnectError,
            FetchError::Tls { .. } => StsFetchResult::TlsError,
            FetchError::Http(_) => StsFetchResult::HttpError,
            FetchError::TooLarge => StsFetchResult::TooLarge,
            FetchError::Timeout(_) => StsFetchResult::Timeout,
            FetchError::Invalid(_) => StsFetchResult::Invalid,
        }
    }

    /// The RFC 8460 §4.3.2 result type: a policy host whose certificate
    /// is not valid is `sts-webpki-invalid`, an unparsable policy
    /// `sts-policy-invalid`, everything else `sts-policy-fetch-error`.
    pub fn result_type(&self) -> &'static str {
        match self {
            FetchError::Tls { .. } => "sts-webpki-invalid",
            FetchError::Invalid(_) => "sts-policy-invalid",
            _ => "sts-policy-fetch-error",
        }
    }
}

/// A policy as fetched: the text (kept for the cache and TLS-RPT's
/// `policy-string`) and its parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub text: String,
    pub policy: Policy,
}

/// Fetches policies: the TLS config over the MTA-STS roots, the bound, and
/// the port (443; tests may use another).
#[derive(Clone)]
pub struct Fetcher {
    tls: Arc<ClientConfig>,
    pub timeout: Duration,
    pub port: u16,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("timeout", &self.timeout)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// Aborts a spawned task when dropped: the HTTP connection driver must not
/// outlive a fetch that timed out.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Fetcher {
    /// A fetcher trusting `roots`, bounded by `timeout`, on port 443.
    pub fn new(roots: Arc<RootCertStore>, timeout: Duration) -> Result<Fetcher, rustls::Error> {
        let tls = ClientConfig::builder_with_provider(ring_provider().clone())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Fetcher {
            tls: Arc::new(tls),
            timeout,
            port: 443,
        })
    }

    /// The policy of `domain`, all within [`Fetcher::timeout`].
    pub async fn fetch(&self, dns: &dyn DnsLookup, domain: &str) -> Result<Fetched, FetchError> {
        match tokio::time::timeout(self.timeout, self.fetch_unbounded(dns, domain)).await {
            Ok(r) => r,
            Err(_) => Err(FetchError::Timeout(self.timeout)),
        }
    }

    async fn fetch_unbounded(
        &self,
        dns: &dyn DnsLookup,
        domain: &str,
    ) -> Result<Fetched, FetchError> {
        let host = format!("mta-sts.{}", domain.trim_end_matches('.'));
        let addresses = resolve(dns, &host).await?;
        let tcp = self.connect(&host, &addresses).await?;
        let name = ServerName::try_from(host.clone()).map_err(|e| FetchError::Dns {
            host: host.clone(),
            detail: e.to_string(),
        })?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| FetchError::Tls {
                host: host.clone(),
                detail: e.to_string(),
            })?;
        let body = get(tls, &host).await?;
        let text = String::from_utf8(body).map_err(|_| {
            FetchError::Invalid(PolicyError::Policy("policy is not UTF-8 text".into()))
        })?;
        let policy = parse_policy(&text).map_err(FetchError::Invalid)?;
        Ok(Fetched { text, policy })
    }

    /// The first address that accepts a connection.
    async fn connect(&self, host: &str, addresses: &[IpAddr]) -> Result<TcpStream, FetchError> {
        let mut last = String::from("no address");
        for ip in addresses {
            match TcpStream::connect(SocketAddr::new(*ip, self.port)).await {
                Ok(tcp) => return Ok(tcp),
                Err(e) => last = format!("{ip}: {e}"),
            }
        }
        Err(FetchError::Connect {
            host: host.to_string(),
            detail: last,
        })
    }
}

/// A then AAAA addresses of the policy host (DNSSEC status irrelevant: the
/// certificate authenticates it, §3.3).
async fn resolve(dns: &dyn DnsLookup, host: &str) -> Result<Vec<IpAddr>, FetchError> {
    crate::dns::host_addresses(dns, host)
        .await
        .map_err(|detail| FetchError::Dns {
            host: host.to_string(),
            detail,
        })
}

/// One HTTP/1.1 GET over `io`; the body when the answer is a 200 with
/// `text/plain`, at most [`MAX_BODY`] bytes.
async fn get<T>(io: T, host: &str) -> Result<Vec<u8>, FetchError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let http = |e: &dyn std::fmt::Display| FetchError::Http(e.to_string());
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| http(&e))?;
    let _driver = AbortOnDrop(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let request = hyper::Request::get(PATH)
        .header(hyper::header::HOST, host)
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| http(&e))?;
    let response = sender.send_request(request).await.map_err(|e| http(&e))?;
    check_head(response.status(), response.headers())?;
    let mut body = response.into_body();
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| http(&e))?;
        if let Some(data) = frame.data_ref() {
            if out.len() + data.len() > MAX_BODY {
                return Err(FetchError::TooLarge);
            }
            out.extend_from_slice(data);
        }
    }
    Ok(out)
}

/// §3.3: only 200 (redirects are not followed); §3.2: media type
/// `text/plain` (parameters such as `charset` allowed); a declared length
/// over [`MAX_BODY`] is refused before reading.
pub fn check_head(status: hyper::StatusCode, headers: &hyper::HeaderMap) -> Result<(), FetchError> {
    if status != hyper::StatusCode::OK {
        let what = if status.is_redirection() {
            " (redirects are not followed, RFC 8461 §3.3)"
        } else {
            ""
        };
        return Err(FetchError::Http(format!("status {status}{what}")));
    }
    let media = headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    if media.as_deref() != Some("text/plain") {
        return Err(FetchError::Http(format!(
            "Content-Type {} is not text/plain",
            media.as_deref().unwrap_or("(none)")
        )));
    }
    let declared = headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(FetchError::TooLarge);
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
    use hyper::{HeaderMap, StatusCode};

    fn headers(pairs: &[(hyper::header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn only_a_200_text_plain_answer_is_read() {
        let plain = headers(&[(CONTENT_TYPE, "text/plain")]);
        assert_eq!(check_head(StatusCode::OK, &plain), Ok(()));
        let charset = headers(&[(CONTENT_TYPE, "Text/Plain; charset=utf-8")]);
        assert_eq!(check_head(StatusCode::OK, &charset), Ok(()));
        for status in [
            StatusCode::MOVED_PERMANENTLY,
            StatusCode::FOUND,
            StatusCode::NOT_FOUND,
        ] {
            let e = check_head(status, &plain).unwrap_err();
            assert_eq!(e.metric(), StsFetchResult::HttpError, "{status}");
        }
        assert!(check_head(StatusCode::FOUND, &plain)
            .unwrap_err()
            .to_string()
            .contains("redirect"));
        for ct in ["text/html", "text/plainx", "application/octet-stream"] {
            let h = headers(&[(CONTENT_TYPE, ct)]);
            assert!(check_head(StatusCode::OK, &h).is_err(), "{ct}");
        }
        assert!(check_head(StatusCode::OK, &HeaderMap::new()).is_err());
        let big = headers(&[(CONTENT_TYPE, "text/plain"), (CONTENT_LENGTH, "65537")]);
        assert_eq!(check_head(StatusCode::OK, &big), Err(FetchError::TooLarge));
        let max = headers(&[(CONTENT_TYPE, "text/plain"), (CONTENT_LENGTH, "65536")]);
        assert_eq!(check_head(StatusCode::OK, &max), Ok(()));
    }

    #[test]
    fn result_types_for_tls_rpt() {
        let tls = FetchError::Tls {
            host: "h".into(),
            detail: "d".into(),
        };
        assert_eq!(tls.result_type(), "sts-webpki-invalid");
        assert_eq!(tls.metric(), StsFetchResult::TlsError);
        let bad = FetchError::Invalid(PolicyError::NoRecord);
        assert_eq!(bad.result_type(), "sts-policy-invalid");
        assert_eq!(FetchError::TooLarge.result_type(), "sts-policy-fetch-error");
        assert_eq!(
            FetchError::Timeout(Duration::from_secs(1)).metric(),
            StsFetchResult::Timeout
        );
    }
}
