//! `POST /api/v1/messages` on `http.submission_address`, over TLS with the
//! `[tls]` certificate (reloaded like the SMTP listeners'): HTTP Basic
//! auth, then [`Submitter`](crate::submit::Submitter) does what SMTP
//! submission does. Every failure is JSON `{"error", "field"}` with the
//! status the README documents; `201 {"queue_id"}` only once durable.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::IncomingStream;
use axum::{Json, Router};
use base64::Engine;
use danerelay_queue::Queue;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use super::Readiness;
use crate::auth::UserStore;
use crate::config::{Config, TlsSource};
use crate::metrics::Metrics;
use crate::smtp::server::session::TlsInfo;
use crate::smtp::server::tls::{tls_info, watch, ServerTls};
use crate::smtp::server::Guards;
use crate::submit::{Client, SubmitError, Submitter};

/// A TLS handshake that takes longer than this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the certificate and DKIM key files are checked for rotation.
const RELOAD_POLL: Duration = Duration::from_secs(10);

/// The connection a request came over.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    pub tls: Option<TlsInfo>,
}

/// Accepted TLS connections, handshaken off the accept loop so that one
/// slow client cannot hold up the others.
struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, Peer)>,
    local: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The acceptor stopped (shutdown): wait for axum's graceful end.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(Peer {
            addr: self.local,
            tls: None,
        })
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// Starts the submission server when `http.submission_address` is set;
/// returns its bound address. It serves until `stop` (after the drain, so
/// clients see 503 rather than a refused connection while the relay drains).
pub async fn start(
    cfg: &Arc<Config>,
    queue: Queue,
    guards: Guards,
    readiness: Arc<Readiness>,
    metrics: Metrics,
    stop: CancellationToken,
) -> anyhow::Result<Option<SocketAddr>> {
    let Some(address) = cfg.http.submission_address else {
        return Ok(None);
    };
    let tls = ServerTls::from_source(&cfg.tls, &cfg.hostname)?;
    if let TlsSource::Files {
        certificate,
        private_key,
    } = &cfg.tls
    {
        // Not under the relay's TaskTracker: they end with `stop`, after the drain.
        tokio::spawn(watch(
            tls.resolver.clone(),
            certificate.clone(),
            private_key.clone(),
            RELOAD_POLL,
            stop.clone(),
        ));
    }
    let dkim = Arc::new(crate::dkim::Signer::load(&cfg.dkim, metrics.clone())?);
    tokio::spawn(crate::dkim::watch(dkim.clone(), RELOAD_POLL, stop.clone()));
    let users = match &cfg.auth.users_file {
        Some(path) => Some(Arc::new(UserStore::open(path)?)),
        None => None,
    };
    // Through the same re-encoding as SMTP (long lines, RFC 5322 §2.2.3).
    let store = crate::smtp::server::reencode::Reencoding::new(Arc::new(queue));
    let submitter = Arc::new(Submitter::new(
        cfg,
        Arc::new(store),
        dkim,
        users,
        guards,
        accepting(readiness),
        metrics,
    ));
    let tcp = TcpListener::bind(address)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind http.submission_address {address}: {e}"))?;
    let local = tcp.local_addr()?;
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(accept_loop(
        tcp,
        tokio_rustls::TlsAcceptor::from(tls.config.clone()),
        tx,
        stop.clone(),
    ));
    let app = router(submitter);
    let listener = TlsListener { rx, local };
    tokio::spawn(async move {
        let served = axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "HTTP submission server stopped");
        }
    });
    tracing::info!(address = %local, "HTTP submission listening (POST /api/v1/messages, TLS)");
    Ok(Some(local))
}

/// New mail is refused (503) while draining, while the queue cannot store,
/// and while its volume is under `queue.min_free_space`.
pub fn accepting(readiness: Arc<Readiness>) -> crate::submit::Accepting {
    use std::sync::atomic::Ordering;
    Arc::new(move || {
        if readiness.draining.load(Ordering::Acquire) {
            Err("draining: not accepting new mail")
        } else if !readiness.queue_open.load(Ordering::Acquire)
            || readiness.storage_failed.load(Ordering::Acquire)
        {
            Err("the queue cannot store new mail")
        } else if readiness.low_disk.load(Ordering::Acquire) {
            // SMTP answers 452 4.3.1 here (queue.min_free_space).
            Err("low disk: the queue volume is under queue.min_free_space")
        } else {
            Ok(())
        }
    })
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    tx: mpsc::Sender<(TlsStream<TcpStream>, Peer)>,
    stop: CancellationToken,
) {
    loop {
        let (stream, addr) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = tcp.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!(error = %e, "HTTP submission accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (acceptor, tx) = (acceptor.clone(), tx.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let info = tls_info(tls.get_ref().1);
                    let _ = tx
                        .send((
                            tls,
                            Peer {
                                addr,
                                tls: Some(info),
                            },
                        ))
                        .await;
                }
                Ok(Err(e)) => {
                    tracing::debug!(peer = %addr, error = %e, "HTTP submission TLS handshake failed")
                }
                Err(_) => tracing::debug!(peer = %addr, "HTTP submission TLS handshake timed out"),
            }
        });
    }
}

/// The submission routes (public for in-process tests without TLS).
pub fn router(submitter: Arc<Submitter>) -> Router {
    Router::new()
        .route("/api/v1/messages", post(post_message))
        .with_state(submitter)
}

async fn post_message(
    State(submitter): State<Arc<Submitter>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let client = Client {
        ip: peer.addr.ip(),
        tls: peer.tls,
    };
    let Some((login, password)) = basic_credentials(&headers) else {
        return failure(SubmitError::Unauthenticated);
    };
    let user = match submitter.authenticate(&client, &login, &password).await {
        Ok(user) => user,
        Err(e) => return failure(e),
    };
    // Read only once authenticated: a stranger must not make the relay
    // buffer a message-sized body.
    let body = match axum::body::to_bytes(body, submitter.max_body()).await {
        Ok(b) => b,
        Err(e) => {
            let too_big = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            return if too_big {
                error_json(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request body too large",
                    None,
                )
            } else {
                error_json(
                    StatusCode::BAD_REQUEST,
                    &format!("reading the request body: {e}"),
                    None,
                )
            };
        }
    };
    match submitter.submit(&client, &user, &body).await {
        Ok(queue_id) => (
            StatusCode::CREATED,
            Json(serde_json::json!({ "queue_id": queue_id })),
        )
            .into_response(),
        Err(e) => failure(e),
    }
}

/// `Authorization: Basic base64(login:password)` (RFC 7617).
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (login, password) = text.split_once(':')?;
    Some((login.to_string(), password.to_string()))
}

fn error_json(status: StatusCode, error: &str, field: Option<&str>) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": error, "field": field })),
    )
        .into_response()
}

/// The one table from submission errors to HTTP statuses.
fn failure(e: SubmitError) -> Response {
    let text = e.to_string();
    match e {
        SubmitError::Unauthenticated => {
            let mut r = error_json(StatusCode::UNAUTHORIZED, &text, None);
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"danerelay\", charset=\"UTF-8\""),
            );
            r
        }
        SubmitError::BadRequest { field, .. } => {
            let field = (!field.is_empty()).then_some(field);
            error_json(StatusCode::BAD_REQUEST, &text, field.as_deref())
        }
        SubmitError::Invalid(i) => error_json(
            StatusCode::UNPROCESSABLE_ENTITY,
            &i.message,
            Some(&i.field).filter(|f| !f.is_empty()).map(String::as_str),
        ),
        SubmitError::SenderRefused { .. } => error_json(StatusCode::FORBIDDEN, &text, Some("from")),
        SubmitError::TooLarge { .. } => error_json(StatusCode::PAYLOAD_TOO_LARGE, &text, None),
        SubmitError::RateLimited(_) => error_json(StatusCode::TOO_MANY_REQUESTS, &text, None),
        SubmitError::Unavailable(_) | SubmitError::Storage(_) => {
            error_json(StatusCode::SERVICE_UNAVAILABLE, &text, None)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_parsed() {
        let mut h = HeaderMap::new();
        assert_eq!(basic_credentials(&h), None);
        // "a@x.example:pa:ss"
        h.insert(
            header::AUTHORIZATION,
            "Basic YUB4LmV4YW1wbGU6cGE6c3M=".parse().unwrap(),
        );
        assert_eq!(
            basic_credentials(&h),
            Some(("a@x.example".into(), "pa:ss".into()))
        );
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(basic_credentials(&h), None);
    }

    /// A router over a users file with one account, messages up to 1000 octets.
    fn app(dir: &std::path::Path) -> Router {
        let users = dir.join("users.toml");
        crate::auth::user_add(&users, "app@example.com", "pw", None).unwrap();
        let mut cfg = crate::config::development();
        cfg.limits.max_message_size = 1000;
        let metrics = Metrics::new();
        let readiness = Arc::new(Readiness::default());
        readiness
            .queue_open
            .store(true, std::sync::atomic::Ordering::Release);
        let queue = Queue::open(&dir.join("q"), crate::queue_options(&cfg.queue)).unwrap();
        router(Arc::new(Submitter::new(
            &cfg,
            Arc::new(queue),
            Arc::new(crate::dkim::Signer::load(&[], metrics.clone()).unwrap()),
            Some(Arc::new(UserStore::open(&users).unwrap())),
            Guards::new(&cfg.limits),
            accepting(readiness),
            metrics,
        )))
    }

    async fn post(app: Router, auth: &str, body: Vec<u8>) -> (StatusCode, serde_json::Value) {
        use tower::ServiceExt;
        let mut req = axum::http::Request::post("/api/v1/messages")
            .header(header::AUTHORIZATION, auth)
            .body(Body::from(body))
            .unwrap();
        req.extensions_mut().insert(ConnectInfo(Peer {
            addr: "127.0.0.1:1".parse().unwrap(),
            tls: None,
        }));
        let res = app.oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[test]
    fn draining_and_a_queue_that_cannot_store_refuse_new_mail() {
        use std::sync::atomic::Ordering;
        let readiness = Arc::new(Readiness::default());
        let check = accepting(readiness.clone());
        assert!(check().is_err(), "queue not open yet");
        readiness.queue_open.store(true, Ordering::Release);
        assert_eq!(check(), Ok(()));
        readiness.storage_failed.store(true, Ordering::Release);
        assert_eq!(check(), Err("the queue cannot store new mail"));
        readiness.storage_failed.store(false, Ordering::Release);
        readiness.low_disk.store(true, Ordering::Release);
        assert!(check().is_err_and(|e| e.starts_with("low disk")));
        readiness.low_disk.store(false, Ordering::Release);
        assert_eq!(check(), Ok(()));
        readiness.draining.store(true, Ordering::Release);
        assert_eq!(check(), Err("draining: not accepting new mail"));
    }

    #[tokio::test]
    async fn oversized_bodies_are_413_and_only_read_after_authentication() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path());
        // "app@example.com:pw" and "app@example.com:no"
        let good = "Basic YXBwQGV4YW1wbGUuY29tOnB3";
        let bad = "Basic YXBwQGV4YW1wbGUuY29tOm5v";
        let huge = vec![b' '; 200 * 1024];
        let (status, body) = post(app.clone(), bad, huge.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        let (status, body) = post(app.clone(), good, huge).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
        assert!(body["error"].is_string());
        let ok = br#"{"from":"app@example.com","to":["a@dest.example"],"text":"hi"}"#.to_vec();
        let (status, body) = post(app, good, ok).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert!(body["queue_id"].is_string());
    }
}
