//! The HTTP side: `/metrics` (Prometheus), `/healthz` (the process runs),
//! `/readyz` (listeners bound, queue open, not draining), and the admin API
//! under `/api` (see [`admin`]).

pub mod admin;
pub mod submit;

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
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.listeners_bound.load(Ordering::Acquire)
            && self.queue_open.load(Ordering::Acquire)
            && !self.draining.load(Ordering::Acquire)
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
    if state.readiness.is_ready() {
        (StatusCode::OK, "ready\n")
    } else if state.readiness.draining.load(Ordering::Acquire) {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
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
