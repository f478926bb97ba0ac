//! The HTTP side: `/metrics` (Prometheus), `/healthz` (the process runs),
//! `/readyz` (listeners bound, queue open and able to store, free space above
//! `queue.min_free_space`, not draining), and the admin API
//! under `/api` (see [`admin`]).

pub mod admin;
pub mod submit;
pub mod tls_rpt;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// What `/readyz` reports. Each part is flipped by the component that owns it.
#[derive(Debug, Default)]
pub struct Readiness {
    pub listeners_bound: AtomicBool,
    pub queue_open: AtomicBool,
    pub draining: AtomicBool,
    /// The queue cannot store (write or sync error, until repaired).
    pub storage_failed: AtomicBool,
    /// Free space on the queue volume is under `queue.min_free_space`.
    pub low_disk: AtomicBool,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.not_ready_reason().is_none()
    }

    /// Why `/readyz` answers 503, `None` when ready.
    pub fn not_ready_reason(&self) -> Option<&'static str> {
        if self.draining.load(Ordering::Acquire) {
            Some("draining")
        } else if !self.listeners_bound.load(Ordering::Acquire)
            || !self.queue_open.load(Ordering::Acquire)
        {
            Some("starting")
        } else if self.storage_failed.load(Ordering::Acquire) {
            Some("storage-error")
        } else if self.low_disk.load(Ordering::Acquire) {
            Some("low-disk")
        } else {
            None
        }
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Metrics,
    readiness: Arc<Readiness>,
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot bind http.address {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// Binds `address` and serves until `shutdown` is cancelled. Returns the bound
/// address (useful with port 0 in tests) and the serving future.
pub async fn bind(
    address: SocketAddr,
    metrics: Metrics,
    readiness: Arc<Readiness>,
    admin: Option<admin::AdminState>,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, impl std::future::Future<Output = ()>), HttpError> {
    let listener = TcpListener::bind(address)
        .await
        .map_err(|source| HttpError::Bind { address, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| HttpError::Bind { address, source })?;
    let mut app = router(AppState { metrics, readiness });
    if let Some(admin) = admin {
        app = app.merge(admin::router(admin));
    }
    let serve = async move {
        let result = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "http server stopped");
        }
    };
    Ok((local, serve))
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.readiness.not_ready_reason() {
        None => (StatusCode::OK, "ready\n".to_string()),
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
