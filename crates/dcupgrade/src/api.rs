//! The agent's HTTP API on 127.0.0.1:6666: `/v1/status`, `/v1/history` (finished upgrades),
//! `/metrics`, operator pause/resume, and — while a new node is being given its keys — the
//! holder side of the handover.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tower::ServiceExt;

use crate::agent::{Shared, StatusView};
use dc_orchestrator::state::HistoryEntry;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/history", get(history))
        .route("/v1/pause", post(|s| pause(s, true)))
        .route("/v1/resume", post(|s| pause(s, false)))
        .route("/v1/handover/{*step}", post(handover))
        .layer(DefaultBodyLimit::max(dc_handover::http::MAX_BODY))
        .layer(axum::middleware::from_fn(dc_handover::http::deadline))
        .with_state(shared.clone())
        .merge(dc_metrics::router(shared.metrics.registry()))
}

async fn status(State(s): State<Arc<Shared>>) -> Json<StatusView> {
    Json(s.status.read().unwrap_or_else(|p| p.into_inner()).clone())
}

/// The finished upgrades the journal records, oldest first (`State::history`).
async fn history(State(s): State<Arc<Shared>>) -> Json<Vec<HistoryEntry>> {
    let st = s.status.read().unwrap_or_else(|p| p.into_inner());
    Json(
        st.state
            .as_ref()
            .map(|j| j.history.clone())
            .unwrap_or_default(),
    )
}

async fn pause(State(s): State<Arc<Shared>>, paused: bool) -> StatusCode {
    *s.pause_requested.lock().unwrap_or_else(|p| p.into_inner()) = Some(paused);
    StatusCode::ACCEPTED
}

async fn handover(State(s): State<Arc<Shared>>, req: Request) -> Response {
    // Refused up front whether or not a handover is armed (the armed router also enforces it
    // on the bytes actually read).
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > dc_handover::http::MAX_BODY) {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    }
    let router = s.handover.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let step = match req.uri().path() {
        dc_handover::http::PATH_HELLO => "handover:challenge-made",
        dc_handover::http::PATH_RESPONSE => "handover:keys-made",
        _ => "",
    };
    match router {
        Some(r) => match r.oneshot(req).await {
            Ok(resp) => {
                // Crash injection (test builds): the message is made, not yet delivered.
                crate::crash::point(step);
                resp
            }
            Err(never) => match never {},
        },
        None => (
            StatusCode::CONFLICT,
            Json(dc_handover::messages::ErrorBody {
                error: "no_handover".into(),
                message: "no key handover is in progress on this agent".into(),
            }),
        )
            .into_response(),
    }
}
