//! `GET /api/tls-rpt/preview?domain=&date=`: the TLS-RPT reports of a UTC
//! day (default yesterday) as a JSON array, for `danerelay tls-rpt preview`
//! while the relay holds the queue database. Behind the admin guard.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::admin::AdminState;
use crate::tlsrpt::Day;

#[derive(Debug, Deserialize)]
pub struct PreviewQuery {
    pub domain: Option<String>,
    /// `YYYY-MM-DD`.
    pub date: Option<String>,
}

fn refuse(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

pub async fn preview(State(state): State<AdminState>, Query(q): Query<PreviewQuery>) -> Response {
    let Some(source) = state.tls_rpt.clone() else {
        return refuse(
            StatusCode::NOT_FOUND,
            "TLS-RPT is off (tls_rpt.enabled = false)".into(),
        );
    };
    let day = match q.date.as_deref() {
        None | Some("") => Day::of(std::time::SystemTime::now()).prev(),
        Some(text) => match Day::parse(text) {
            Some(d) => d,
            None => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    format!("date {text:?} is not YYYY-MM-DD"),
                )
            }
        },
    };
    let queue = state.queue.clone();
    let domain = q.domain.filter(|d| !d.is_empty());
    let reports =
        tokio::task::spawn_blocking(move || source.reports(&queue, day, domain.as_deref())).await;
    match reports {
        Ok(Ok(r)) => Json(r).into_response(),
        Ok(Err(e)) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
