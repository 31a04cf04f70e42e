//! Endpoints that exist only on the one-command local platform (`openclaw-api dev`).
//!
//! `GET /v1/dev/tenants/{name}/proxy-token` answers a tenant's proxy token, decrypted from the
//! tenant's secrets file at the state repo's head with the dev age identity, so that a developer
//! can call the dev token proxy as the tenant's agent would. Admins only; the routes are not
//! mounted outside dev mode, and the handler refuses again if they were.

use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::http::{ApiError, AppState, AuthorizedTenant, Caller};

/// The dev-only routes, or none when `dev_mode` is off.
pub fn routes(dev_mode: bool) -> Router<Arc<AppState>> {
    if !dev_mode {
        return Router::new();
    }
    Router::new().route("/v1/dev/tenants/{name}/proxy-token", get(proxy_token))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ProxyToken {
    tenant: String,
    proxy_token: String,
}

/// An admin caller in dev mode, checked before the tenant is: anyone else gets the same answer
/// whatever tenant they name.
struct DevAdmin;

impl FromRequestParts<Arc<AppState>> for DevAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        if !state.config.dev_mode {
            return Err(ApiError::NotFound(
                "no such endpoint; see /openapi.json".into(),
            ));
        }
        if !caller.admin {
            return Err(ApiError::Forbidden(
                "only an admin may read a tenant's proxy token, and only in dev mode".into(),
            ));
        }
        Ok(DevAdmin)
    }
}

async fn proxy_token(
    State(state): State<Arc<AppState>>,
    _admin: DevAdmin,
    tenant: AuthorizedTenant,
) -> Result<impl IntoResponse, ApiError> {
    let name = tenant.name();
    let secrets = crate::tenant_ops::current_secrets(&state, &tenant).await?;
    let token = secrets.get("proxy-token").cloned().ok_or_else(|| {
        ApiError::Internal("the tenant's secrets file holds no proxy-token".into())
    })?;
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(ProxyToken {
            tenant: name.as_str().to_owned(),
            proxy_token: token,
        }),
    ))
}
