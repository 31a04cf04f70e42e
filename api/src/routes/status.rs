//! What the cluster shows: a tenant's pipeline (`GET /v1/tenants/{name}/status`, its owner or
//! an admin) and the tenants that should run and do not (`GET /v1/admin/tenants/not-running`,
//! admins). Thin handlers over [`crate::tenant_ops::status`] and
//! [`crate::tenant_ops::tenants_not_running`]; without a cluster both answer "no cluster
//! connected".

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use crate::cluster::status::TenantStatus;
use crate::http::{ApiError, AuthorizedTenant, Caller, ErrorBody, Shared};
use crate::tenant_ops::{self, NotRunning};

/// The status routes.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/v1/tenants/{name}/status", get(tenant_status))
        .route("/v1/admin/tenants/not-running", get(not_running))
}

/// The tenant's pipeline from the cluster: committed → applied → running, health and reasons.
#[utoipa::path(get, path = "/v1/tenants/{name}/status", params(("name" = String, Path)),
    responses((status = 200, body = TenantStatus), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn tenant_status(
    State(state): State<Shared>,
    tenant: AuthorizedTenant,
) -> Result<Json<TenantStatus>, ApiError> {
    Ok(Json(tenant_ops::status(&state, &tenant).await?))
}

/// Every tenant that should run and does not, with its reasons (admins only).
#[utoipa::path(get, path = "/v1/admin/tenants/not-running",
    responses((status = 200, body = NotRunning), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn not_running(
    State(state): State<Shared>,
    caller: Caller,
) -> Result<Json<NotRunning>, ApiError> {
    Ok(Json(
        tenant_ops::tenants_not_running(&state, &caller).await?,
    ))
}
