//! `queue drain` in the admin API: `GET /api/drain` (status),
//! `POST /api/drain` with `{"to": "host:port", "user", "password",
//! "ca_file"}` (starts it; 409 while one runs), `DELETE /api/drain`
//! (`--stop`: deliver and accept again). Behind the admin guard.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::admin::{error, guard, AdminState, ApiError};
use crate::drain::{Drain, DrainError, DrainStatus, Target};

pub(super) fn router(state: AdminState) -> Router {
    Router::new()
        .route("/api/drain", get(status).post(start).delete(stop))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// What `POST /api/drain` takes.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct DrainRequest {
    pub to: String,
    pub user: Option<String>,
    pub password: Option<String>,
    /// A PEM file on the relay's machine with the other relay's trust anchors.
    pub ca_file: Option<String>,
}

fn drain(state: &AdminState) -> Result<Drain, ApiError> {
    state.drain.clone().ok_or_else(|| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this relay runs without drain",
        )
    })
}

fn api_error(e: DrainError) -> ApiError {
    match e {
        DrainError::Running(_) => error(StatusCode::CONFLICT, e.to_string()),
        DrainError::Queue(_) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn status(State(state): State<AdminState>) -> Result<Json<DrainStatus>, ApiError> {
    let d = drain(&state)?;
    run(move || Ok(d.status())).await.map(Json)
}

async fn start(
    State(state): State<AdminState>,
    Json(req): Json<DrainRequest>,
) -> Result<(StatusCode, Json<DrainStatus>), ApiError> {
    let d = drain(&state)?;
    let to = req.to.trim().to_string();
    if to
        .rsplit_once(':')
        .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
    {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("to {to:?}: expected HOST:PORT"),
        ));
    }
    let credentials = match (req.user, req.password) {
        (Some(u), Some(p)) => Some((u, p)),
        (None, None) => None,
        _ => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "user and password go together",
            ))
        }
    };
    let target = Target {
        address: to,
        credentials,
        ca_file: req.ca_file.map(Into::into),
        helo: String::new(), // the relay's hostname, set by the drain
    };
    let status = run(move || {
        d.start(target)?;
        Ok(d.status())
    })
    .await?;
    Ok((StatusCode::ACCEPTED, Json(status)))
}

async fn stop(State(state): State<AdminState>) -> Result<Json<DrainStatus>, ApiError> {
    let d = drain(&state)?;
    run(move || {
        d.stop()?;
        Ok(d.status())
    })
    .await
    .map(Json)
}

async fn run<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DrainError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(api_error),
        Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}
