//! `queue suspend` / `queue resume` in the admin API:
//! `GET /api/suspended`, `POST /api/suspended/{domain}[?for=1h]`,
//! `DELETE /api/suspended/{domain}`. The routes sit behind the admin
//! guard of [`super::admin::router`].

use std::time::SystemTime;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::admin::{error, guard, suspended_views, AdminState, ApiError, SuspendedView};
use crate::delivery::suspend::{SuspendError, Suspensions};

pub(super) fn router(state: AdminState) -> Router {
    Router::new()
        .route("/api/suspended", get(list))
        .route(
            "/api/suspended/{domain}",
            axum::routing::post(suspend).delete(resume),
        )
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// What `queue resume` did.
#[derive(Debug, Serialize, Deserialize)]
pub struct Resumed {
    pub domain: String,
    /// false when the domain was not suspended.
    pub changed: bool,
    /// Waiting messages made due now.
    pub messages: usize,
}

fn suspensions(state: &AdminState) -> Result<Suspensions, ApiError> {
    state.gate.suspensions().cloned().ok_or_else(|| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this relay runs without suspensions",
        )
    })
}

/// Runs a blocking suspension change; a bad domain is the caller's 400.
async fn run<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SuspendError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e @ SuspendError::BadDomain(_))) => {
            Err(error(StatusCode::BAD_REQUEST, e.to_string()))
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "admin API suspension change failed");
            Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
        }
        Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

async fn list(State(state): State<AdminState>) -> Json<Vec<SuspendedView>> {
    Json(suspended_views(&state.gate, SystemTime::now()))
}

#[derive(Debug, Default, Deserialize)]
pub struct SuspendQuery {
    /// humantime, e.g. "30m"; absent: until resumed.
    #[serde(rename = "for")]
    pub duration: Option<String>,
}

async fn suspend(
    State(state): State<AdminState>,
    Path(domain): Path<String>,
    Query(q): Query<SuspendQuery>,
) -> Result<Json<SuspendedView>, ApiError> {
    let duration = match q.duration.as_deref() {
        None | Some("") => None,
        Some(s) => Some(
            humantime::parse_duration(s)
                .map_err(|e| error(StatusCode::BAD_REQUEST, format!("for {s:?}: {e}")))?,
        ),
    };
    let s = suspensions(&state)?;
    let (domain, sus) = run(move || s.suspend(&domain, duration, SystemTime::now())).await?;
    Ok(Json(SuspendedView::new(domain, sus)))
}

async fn resume(
    State(state): State<AdminState>,
    Path(domain): Path<String>,
) -> Result<Json<Resumed>, ApiError> {
    let s = suspensions(&state)?;
    let (domain, changed, messages) = run(move || {
        let (changed, messages) = s.resume(&domain)?;
        Ok((domain, changed, messages))
    })
    .await?;
    Ok(Json(Resumed {
        domain,
        changed,
        messages,
    }))
}
