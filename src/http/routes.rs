//! The routes: `GET /metrics`, `/healthz`, `/readyz`, `/status`.

use axum::Router;
use axum::extract::State as Extract;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;

use super::state::State;
use super::status::StatusDocument;
use crate::metrics::CONTENT_TYPE;

async fn metrics_handler(Extract(state): Extract<State>) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], state.metrics().render()).into_response()
}

async fn healthz(Extract(state): Extract<State>) -> Response {
    let live = state.liveness();
    let verdict = if live.alive { "ok:" } else { "unhealthy:" };
    let body = match live.pass_quiet_for {
        Some(quiet) => format!(
            "{verdict} a pass is under way, started {}s ago; its last EC2 request ended {}s ago (limit {}s)\n",
            live.silent_for.as_secs(),
            quiet.as_secs(),
            live.limit.as_secs()
        ),
        None => {
            let what = if live.started_any { "last cycle started" } else { "started, no cycle yet," };
            format!("{verdict} {what} {}s ago (limit {}s)\n", live.silent_for.as_secs(), live.limit.as_secs())
        }
    };
    let code = if live.alive { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

async fn readyz(Extract(state): Extract<State>) -> Response {
    let (code, body) = if state.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: no complete snapshot yet\n")
    };
    (code, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

async fn status(Extract(state): Extract<State>) -> Json<StatusDocument> {
    Json(state.status())
}

/// The router: `GET /metrics`, `/healthz`, `/readyz`, `/status`.
pub fn router(state: State) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .with_state(state)
}
