//! The admin API behind `danerelay queue …`: list, show, hold, release,
//! delete, retry, and the per-domain summary (Postfix's `qshape`).
//!
//! Access: with `http.admin_token` set, every caller needs
//! `Authorization: Bearer <token>`; without one, only loopback callers are
//! served. Queue calls are blocking (sled + fsync) and run on the blocking pool.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use danerelay_queue::{ListFilter, MessageInfo, MessageState, Queue, QueueError, QueueId};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// What the admin routes need.
#[derive(Clone)]
pub struct AdminState {
    pub queue: Queue,
    pub token: Option<String>,
    /// `/api/tls-rpt/preview` (`None`: TLS-RPT is off).
    pub tls_rpt: Option<crate::tlsrpt::preview::Source>,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/api/queue", get(list))
        .route("/api/queue/summary", get(summary))
        .route("/api/queue/retry", post(retry_all))
        .route("/api/queue/{id}", get(show).delete(delete))
        .route("/api/queue/{id}/hold", post(hold))
        .route("/api/queue/{id}/release", post(release))
        .route("/api/queue/{id}/retry", post(retry))
        .route("/api/tls-rpt/preview", get(super::tls_rpt::preview))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Bearer token when configured, else loopback only.
async fn guard(
    State(state): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let allowed = match &state.token {
        Some(token) => req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes())),
        None => peer.ip().is_loopback(),
    };
    if allowed {
        next.run(req).await
    } else {
        tracing::warn!(peer = %peer, "admin API request refused");
        let reason = if state.token.is_some() {
            "missing or wrong bearer token"
        } else {
            "the admin API answers loopback clients only (set http.admin_token)"
        };
        error(StatusCode::FORBIDDEN, reason).into_response()
    }
}

/// Compares without an early exit, so response timing does not reveal how
/// much of a guessed token was right (only whether its length was).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// An API failure: its status and a message for the operator.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

fn error(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError {
        status,
        message: message.into(),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body {
            error: String,
        }
        (
            self.status,
            Json(Body {
                error: self.message,
            }),
        )
            .into_response()
    }
}

/// Runs a blocking queue call; maps its errors onto HTTP.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, QueueError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(QueueError::NotFound { id })) => {
            Err(error(StatusCode::NOT_FOUND, format!("no message {id}")))
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "admin API queue operation failed");
            Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
        }
        Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

fn parse_id(id: &str) -> Result<QueueId, ApiError> {
    id.parse()
        .map_err(|e: danerelay_queue::ParseIdError| error(StatusCode::BAD_REQUEST, e.to_string()))
}

/// One message as the API shows it (times as RFC 3339, ages in seconds).
#[derive(Debug, Serialize, Deserialize)]
pub struct MessageView {
    pub id: String,
    pub sender: String,
    pub size: u64,
    pub state: String,
    pub received_at: String,
    pub age_seconds: u64,
    pub next_attempt: Option<String>,
    pub deferrals: u32,
    pub auth_user: Option<String>,
    pub recipients: Vec<RecipientView>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RecipientView {
    pub address: String,
    pub state: String,
    pub attempts: u32,
    pub last_reply: Option<String>,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

impl MessageView {
    fn new(info: MessageInfo, now: SystemTime) -> MessageView {
        let received = info.envelope.received_at;
        MessageView {
            id: info.id.to_string(),
            sender: info.envelope.sender,
            size: info.size,
            state: info.state.as_str().to_string(),
            received_at: rfc3339(received),
            age_seconds: now.duration_since(received).unwrap_or_default().as_secs(),
            next_attempt: info.next_attempt.map(rfc3339),
            deferrals: info.deferrals,
            auth_user: info.envelope.auth_user,
            recipients: info
                .recipients
                .into_iter()
                .map(|r| RecipientView {
                    address: r.address,
                    state: serde_json::to_value(r.state)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                    attempts: r.attempts,
                    last_reply: r.last_reply,
                })
                .collect(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    /// pending | deferred | held | active
    pub state: Option<String>,
    pub domain: Option<String>,
    /// humantime, e.g. "1h": only messages at least this old.
    pub older_than: Option<String>,
    pub limit: Option<usize>,
}

async fn list(
    State(state): State<AdminState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<MessageView>>, ApiError> {
    let state_filter = match q.state.as_deref() {
        None | Some("") => None,
        Some(s) => Some(
            MessageState::ALL
                .into_iter()
                .find(|m| m.as_str() == s)
                .ok_or_else(|| {
                    error(
                        StatusCode::BAD_REQUEST,
                        format!("unknown state {s:?} (pending, deferred, held, active)"),
                    )
                })?,
        ),
    };
    let min_age = match q.older_than.as_deref() {
        None | Some("") => None,
        Some(s) => Some(
            humantime::parse_duration(s)
                .map_err(|e| error(StatusCode::BAD_REQUEST, format!("older_than {s:?}: {e}")))?,
        ),
    };
    let filter = ListFilter {
        state: state_filter,
        domain: q.domain.filter(|d| !d.is_empty()),
        min_age,
        max_age: None,
        limit: q.limit,
        after: None,
    };
    let queue = state.queue.clone();
    let infos = blocking(move || queue.list(&filter)).await?;
    let now = SystemTime::now();
    Ok(Json(
        infos
            .into_iter()
            .map(|i| MessageView::new(i, now))
            .collect(),
    ))
}

async fn show(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<MessageView>, ApiError> {
    let id = parse_id(&id)?;
    let queue = state.queue.clone();
    match blocking(move || queue.show(id)).await? {
        Some(info) => Ok(Json(MessageView::new(info, SystemTime::now()))),
        None => Err(error(StatusCode::NOT_FOUND, format!("no message {id}"))),
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Changed {
    pub id: String,
    /// false when the message already was in the asked-for state.
    pub changed: bool,
}

macro_rules! change_route {
    ($name:ident, $method:ident) => {
        async fn $name(
            State(state): State<AdminState>,
            Path(id): Path<String>,
        ) -> Result<Json<Changed>, ApiError> {
            let id = parse_id(&id)?;
            let queue = state.queue.clone();
            let changed = blocking(move || queue.$method(id)).await?;
            tracing::info!(queue_id = %id, changed, concat!("admin: ", stringify!($method)));
            Ok(Json(Changed {
                id: id.to_string(),
                changed,
            }))
        }
    };
}

change_route!(hold, hold);
change_route!(release, release);
change_route!(retry, retry_now);

/// Deleting a message that is not there is an error for the caller (a
/// mistyped id must not look like success), unlike holding a held one.
async fn delete(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<Changed>, ApiError> {
    let id = parse_id(&id)?;
    let queue = state.queue.clone();
    if !blocking(move || queue.delete(id)).await? {
        return Err(error(StatusCode::NOT_FOUND, format!("no message {id}")));
    }
    tracing::info!(queue_id = %id, "admin: deleted");
    Ok(Json(Changed {
        id: id.to_string(),
        changed: true,
    }))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RetryAll {
    pub count: usize,
}

async fn retry_all(State(state): State<AdminState>) -> Result<Json<RetryAll>, ApiError> {
    let queue = state.queue.clone();
    let count = blocking(move || queue.retry_all()).await?;
    tracing::info!(count, "admin: retry all");
    Ok(Json(RetryAll { count }))
}

/// The `qshape` view: counts by state plus open recipients per domain.
#[derive(Debug, Serialize, Deserialize)]
pub struct Summary {
    pub pending: u64,
    pub deferred: u64,
    pub held: u64,
    pub active: u64,
    pub oldest_age_seconds: Option<u64>,
    pub domains: Vec<DomainView>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DomainView {
    pub domain: String,
    pub messages: u64,
    pub recipients: u64,
    pub oldest_age_seconds: u64,
}

async fn summary(State(state): State<AdminState>) -> Result<Json<Summary>, ApiError> {
    let queue = state.queue.clone();
    let now = SystemTime::now();
    let (counts, oldest, domains) =
        blocking(move || Ok((queue.counts(), queue.oldest_age(now)?, queue.domains()?))).await?;
    let age = |t: SystemTime| now.duration_since(t).unwrap_or(Duration::ZERO).as_secs();
    Ok(Json(Summary {
        pending: counts.pending,
        deferred: counts.deferred,
        held: counts.held,
        active: counts.active,
        oldest_age_seconds: oldest.map(|d| d.as_secs()),
        domains: domains
            .into_iter()
            .map(|d| DomainView {
                domain: d.domain,
                messages: d.messages,
                recipients: d.recipients,
                oldest_age_seconds: age(d.oldest),
            })
            .collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    fn state(dir: &std::path::Path, token: Option<&str>) -> AdminState {
        let queue = Queue::open(
            dir,
            danerelay_queue::QueueOptions {
                retry: vec![Duration::from_secs(60)],
                max_age: Duration::from_secs(3600),
                lease: Duration::from_secs(60),
            },
        )
        .unwrap();
        AdminState {
            queue,
            token: token.map(str::to_string),
            tls_rpt: None,
        }
    }

    async fn status(app: Router, peer: &str, auth: Option<&str>) -> StatusCode {
        let mut req = Request::builder().uri("/api/queue");
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        let mut req = req.body(Body::empty()).unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        app.oneshot(req).await.unwrap().status()
    }

    #[tokio::test]
    async fn without_a_token_only_loopback_callers_are_served() {
        let dir = tempfile::tempdir().unwrap();
        let app = router(state(dir.path(), None));
        assert_eq!(
            status(app.clone(), "127.0.0.1:5000", None).await,
            StatusCode::OK
        );
        assert_eq!(
            status(app.clone(), "[::1]:5000", None).await,
            StatusCode::OK
        );
        assert_eq!(
            status(app.clone(), "192.0.2.10:5000", None).await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            status(app, "10.1.2.3:5000", Some("Bearer anything")).await,
            StatusCode::FORBIDDEN
        );
    }

    #[tokio::test]
    async fn with_a_token_every_caller_needs_it() {
        let dir = tempfile::tempdir().unwrap();
        let app = router(state(dir.path(), Some("t0ken")));
        assert_eq!(
            status(app.clone(), "127.0.0.1:5000", None).await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            status(app.clone(), "192.0.2.10:5000", Some("Bearer t0ken")).await,
            StatusCode::OK
        );
        assert_eq!(
            status(app.clone(), "192.0.2.10:5000", Some("Bearer t0ke")).await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            status(app.clone(), "192.0.2.10:5000", Some("Bearer t0keN")).await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            status(app, "127.0.0.1:5000", Some("Basic t0ken")).await,
            StatusCode::FORBIDDEN
        );
    }

    #[test]
    fn token_compare_needs_every_byte_and_the_length() {
        assert!(constant_time_eq(b"t0ken", b"t0ken"));
        assert!(!constant_time_eq(b"t0ken", b"t0keN"));
        assert!(!constant_time_eq(b"t0ken", b"t0ke"));
        assert!(!constant_time_eq(b"t0ken", b"t0ken!"));
        assert!(!constant_time_eq(b"", b"t0ken"));
    }
}
