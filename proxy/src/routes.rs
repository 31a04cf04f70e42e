//! The router: every route of the proxy and the small handlers (health, readiness, metrics,
//! fallback). LLM calls are [`crate::llm`]'s, connection calls [`crate::connections`]'s; both read
//! the shared [`App`].

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;

use crate::api_error::{ApiError, ErrorKind, Flavor};
use crate::app::App;

/// Every route, with `app` as their state.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(crate::llm::chat_completions))
        .route("/v1/messages", post(crate::llm::messages))
        .route("/v1/models", get(crate::llm::models))
        .route(
            "/connections/{provider}/{*path}",
            any(crate::connections::forward),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(fallback)
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
        .with_state(app)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    match app.table.current() {
        Some(t) => format!("ready: {} tenants\n", t.len()).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no tenant table loaded\n").into_response(),
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
        .into_response()
}

async fn fallback(uri: axum::http::Uri) -> Response {
    ApiError::new(
        ErrorKind::NotFound,
        format!(
            "no route {}: the proxy serves /v1/chat/completions, /v1/messages, /v1/models and /connections/<provider>/<path>",
            uri.path()
        ),
    )
    .render(Flavor::OpenAi)
}
