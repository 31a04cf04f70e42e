//! The operations endpoints: liveness (`/healthz`), readiness (`/readyz`: the database answers
//! and the state repo's remote can be reached), Prometheus metrics (`/metrics`) and the OpenAPI
//! document (`/openapi.json`).

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use utoipa::OpenApi;

use crate::http::{ApiError, ErrorBody, Shared};

/// The operations routes.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_endpoint))
}

/// Liveness: the process serves requests.
#[utoipa::path(get, path = "/healthz", responses((status = 200)))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: the database answers and the state repo's remote can be reached.
#[utoipa::path(get, path = "/readyz", responses((status = 200), (status = 503, body = ErrorBody)))]
pub async fn readyz(State(state): State<Shared>) -> Result<&'static str, ApiError> {
    state
        .store
        .ping()
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let config = state.config.repo.clone();
    tokio::task::spawn_blocking(move || crate::state_repo::probe_remote(&config))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(ApiError::Unavailable)?;
    Ok("ready\n")
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", responses((status = 200, content_type = "text/plain")))]
pub async fn metrics_endpoint(State(state): State<Shared>) -> Response {
    let metrics = crate::metrics::get();
    if let Ok((pending, _)) = state.store.outbox_counts().await {
        metrics.outbox_pending.set(pending);
    }
    metrics
        .remote_reachable
        .set(i64::from(state.writer.remote_ok()));
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        metrics.render(),
    )
        .into_response()
}

/// The OpenAPI document of every route.
async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    let mut doc = super::ApiDoc::openapi();
    doc.merge(super::usage::UsageDoc::openapi());
    Json(doc)
}
