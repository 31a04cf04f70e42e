//! Every route of the api, one module per area, each with its own `routes()`, merged here in
//! [`router`] with the layers every request goes through (request ids, tracing, JSON errors,
//! the body limit, per-route metrics). A new area adds a module and one `merge` line.
//!
//! - [`tenants`]: the tenant lifecycle (`/v1/tenants…`), thin handlers over
//!   [`crate::tenant_ops`];
//! - [`sessions`]: sign-in, sessions, the caller's account, the JWKS;
//! - [`usage`]: the proxies' usage ingest and the customers' usage reads;
//! - [`budget`]: the budget feed the proxies poll;
//! - [`status`]: a tenant's status from the cluster and the admin view of tenants not running;
//! - [`ops`]: health, readiness, metrics, the OpenAPI document;
//! - [`dev`]: the endpoints of `openclaw-api dev` only.
//!
//! Route modules depend on the kernel ([`crate::http`]) and on the work they call, never on each
//! other except through this module.

pub mod budget;
pub mod dev;
pub mod ops;
pub mod sessions;
pub mod status;
pub mod tenants;
pub mod usage;

use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;

use crate::http::error::{check_request_id, json_errors};
use crate::http::{ApiError, Shared, MAX_BODY_BYTES};

#[derive(OpenApi)]
#[openapi(
    info(title = "openclaw-cloud api", description = "Tenant lifecycle as GitOps commits. See docs/api.md."),
    paths(tenants::provision, tenants::update_settings, tenants::suspend, tenants::reactivate, tenants::resize, tenants::rotate_proxy_token,
        tenants::destroy, tenants::get_tenant, tenants::history, ops::healthz, ops::readyz, ops::metrics_endpoint,
        tenants::list_tenants, sessions::telegram_login, sessions::telegram_callback, sessions::dev_login, sessions::refresh, sessions::logout,
        sessions::logout_all, sessions::me, sessions::update_me, sessions::jwks, status::tenant_status, status::not_running),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Counts requests and their latency per route and status.
async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    let metrics = crate::metrics::get();
    metrics
        .http_requests
        .with_label_values(&[method.as_str(), route.as_str(), status.as_str()])
        .inc();
    metrics
        .http_request_seconds
        .with_label_values(&[method.as_str(), route.as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Any path no route takes.
async fn fallback() -> ApiError {
    ApiError::NotFound("no such endpoint; see /openapi.json".into())
}

/// The router with every layer.
pub fn router(state: Shared) -> Router {
    let x_request_id = header::HeaderName::from_static("x-request-id");
    Router::new()
        .merge(tenants::routes())
        .merge(sessions::routes())
        .merge(status::routes())
        .merge(usage::routes())
        .merge(budget::routes())
        .merge(ops::routes())
        .merge(crate::bot::routes())
        .merge(dev::routes(state.config.dev_mode))
        .fallback(fallback)
        .route_layer(middleware::from_fn(track))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(PropagateRequestIdLayer::new(x_request_id.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let id = req.extensions().get::<RequestId>().and_then(|id| id.header_value().to_str().ok()).unwrap_or("-");
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::new(x_request_id, MakeRequestUuid))
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn(check_request_id))
        .with_state(state)
}
