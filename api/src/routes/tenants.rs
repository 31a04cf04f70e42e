//! The tenant endpoints (`/v1/tenants`, `/v1/tenants/{name}/…`): each parses its request, then
//! calls the function of [`crate::tenant_ops`] that does the work, through
//! [`crate::idempotency::submit`] for changes. Every handler of a named tenant takes
//! [`AuthorizedTenant`] or [`AuthorizedIncarnation`]: none can reach a tenant otherwise.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::http::extract::optional_body;
use crate::http::{
    authorize_tenant_list, ApiError, AuthorizedIncarnation, AuthorizedTenant, Caller, ClientAddr,
    ErrorBody, JsonBody, Shared,
};
use crate::idempotency::{submit, Endpoint};
use crate::reader::{HistoryEntry, TenantView};
use crate::tenant_ops::{self, Prepared, ProvisionRequest, ReasonBody, ResizeBody, SettingsBody};
use crate::writer::ChangeResponse;

/// The tenant routes.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/v1/tenants", post(provision).get(list_tenants))
        .route("/v1/tenants/{name}", get(get_tenant).delete(destroy))
        .route("/v1/tenants/{name}/settings", patch(update_settings))
        .route("/v1/tenants/{name}/suspend", post(suspend))
        .route("/v1/tenants/{name}/reactivate", post(reactivate))
        .route("/v1/tenants/{name}/resize", post(resize))
        .route(
            "/v1/tenants/{name}/rotate-proxy-token",
            post(rotate_proxy_token),
        )
        .route("/v1/tenants/{name}/history", get(history))
}

/// A tenant of the caller.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantSummary {
    pub name: String,
    /// The owning customer's id (null: unknown owner, admins only).
    pub owner_id: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
    pub updated_at: i64,
    pub last_commit: String,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Most entries returned (1 to 1000, default 100).
    pub limit: Option<usize>,
    /// The uid of the incarnation to read (default: the live one, else the caller's most
    /// recently destroyed one).
    pub incarnation: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DestroyQuery {
    pub reason: Option<String>,
}

/// Provision a tenant: checks the bot token with Telegram, makes a proxy token, writes the
/// encrypted secrets and the spec, compiles and commits.
#[utoipa::path(post, path = "/v1/tenants", request_body = ProvisionRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "makes retries safe")),
    responses((status = 201, body = ChangeResponse), (status = 202, body = ChangeResponse, description = "queued: the remote is unreachable"),
        (status = 400, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn provision(
    State(state): State<Shared>,
    caller: Caller,
    client: ClientAddr,
    headers: HeaderMap,
    JsonBody(body, raw): JsonBody<ProvisionRequest>,
) -> Result<Response, ApiError> {
    if !caller.admin {
        state
            .auth
            .signup_limiter
            .check(client.0)
            .map_err(ApiError::TooManyRequests)?;
    }
    let st = state.clone();
    let who = caller.clone();
    submit(
        &state,
        &headers,
        Endpoint::Provision,
        &raw,
        &caller,
        async move |request_id| tenant_ops::provision(&st, &who, body, request_id).await,
    )
    .await
}

/// Update agent settings (model, thinking level, language, allowFrom).
#[utoipa::path(patch, path = "/v1/tenants/{name}/settings", request_body = SettingsBody,
    params(("name" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = ChangeResponse), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update_settings(
    State(state): State<Shared>,
    tenant: AuthorizedTenant,
    headers: HeaderMap,
    JsonBody(body, raw): JsonBody<SettingsBody>,
) -> Result<Response, ApiError> {
    let st = state.clone();
    let t = tenant.clone();
    submit(
        &state,
        &headers,
        Endpoint::Settings(tenant.name()),
        &raw,
        tenant.caller(),
        async move |request_id| tenant_ops::update_settings(&st, &t, body, request_id).await,
    )
    .await
}

/// Suspend a tenant: the agent scales to zero and the proxy refuses its token.
#[utoipa::path(post, path = "/v1/tenants/{name}/suspend", request_body = Option<ReasonBody>,
    params(("name" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = ChangeResponse), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn suspend(
    State(state): State<Shared>,
    tenant: AuthorizedTenant,
    headers: HeaderMap,
    raw: Bytes,
) -> Result<Response, ApiError> {
    with_reason(
        &state,
        &tenant,
        &headers,
        &raw,
        Endpoint::Suspend(tenant.name()),
        tenant_ops::suspend,
    )
    .await
}

/// Reactivate a suspended tenant.
#[utoipa::path(post, path = "/v1/tenants/{name}/reactivate", request_body = Option<ReasonBody>,
    params(("name" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = ChangeResponse), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn reactivate(
    State(state): State<Shared>,
    tenant: AuthorizedTenant,
    headers: HeaderMap,
    raw: Bytes,
) -> Result<Response, ApiError> {
    with_reason(
        &state,
        &tenant,
        &headers,
        &raw,
        Endpoint::Reactivate(tenant.name()),
        tenant_ops::reactivate,
    )
    .await
}

/// A `tenant_ops` action whose only input is an optional reason (suspend, reactivate).
type ReasonedAction = fn(&AuthorizedTenant, Option<String>, String) -> Result<Prepared, ApiError>;

/// `POST /v1/tenants/{name}/{verb}` with an optional `{"reason": …}` body: the body checked,
/// then `action` submitted through [`submit`] under the endpoint's path.
async fn with_reason(
    state: &Shared,
    tenant: &AuthorizedTenant,
    headers: &HeaderMap,
    raw: &Bytes,
    endpoint: Endpoint<'_>,
    action: ReasonedAction,
) -> Result<Response, ApiError> {
    let body: ReasonBody = optional_body(headers, raw)?;
    submit(
        state,
        headers,
        endpoint,
        raw,
        tenant.caller(),
        async |request_id| action(tenant, body.reason, request_id),
    )
    .await
}

/// Move a tenant to another tier.
#[utoipa::path(post, path = "/v1/tenants/{name}/resize", request_body = ResizeBody,
    params(("name" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = ChangeResponse), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn resize(
    State(state): State<Shared>,
    tenant: AuthorizedTenant,
    headers: HeaderMap,
    JsonBody(body, raw): JsonBody<ResizeBody>,
) -> Result<Response, ApiError> {
    // An unknown tier is refused before the write budget and the Idempotency-Key are consulted.
    tenant_ops::check_tier_offered(&state, &body.tier).await?;
    let st = state.clone();
    let t = tenant.clone();
    submit(
        &state,
        &headers,
        Endpoint::Resize(tenant.name()),
        &raw,
        tenant.caller(),
        async move |request_id| tenant_ops::resize(&st, &t, body, request_id).await,
    )
    .await
}

/// Replace the tenant's proxy token (the old one stops working once Flux applies the commit).
#[utoipa::path(post, path = "/v1/tenants/{name}/rotate-proxy-token", request_body = Option<ReasonBody>,
    params(("name" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = ChangeResponse), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn rotate_proxy_token(
    State(state): State<Shared>,
    tenant: AuthorizedTenant,
    headers: HeaderMap,
    raw: Bytes,
) -> Result<Response, ApiError> {
    let body: ReasonBody = optional_body(&headers, &raw)?;
    let st = state.clone();
    let t = tenant.clone();
    submit(
        &state,
        &headers,
        Endpoint::RotateProxyToken(tenant.name()),
        &raw,
        tenant.caller(),
        async move |request_id| {
            tenant_ops::rotate_proxy_token(&st, &t, body.reason, request_id).await
        },
    )
    .await
}

/// Destroy a tenant: its folder is removed and Flux prunes its resources.
#[utoipa::path(delete, path = "/v1/tenants/{name}", params(("name" = String, Path), DestroyQuery, ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = ChangeResponse), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn destroy(
    State(state): State<Shared>,
    caller: Caller,
    Query(query): Query<DestroyQuery>,
    tenant: AuthorizedTenant,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    submit(
        &state,
        &headers,
        Endpoint::Destroy(tenant.name()),
        b"",
        &caller,
        async |request_id| tenant_ops::destroy(&tenant, query.reason, request_id),
    )
    .await
}

/// A tenant's spec and last commit, read from the state repo's head.
#[utoipa::path(get, path = "/v1/tenants/{name}", params(("name" = String, Path)),
    responses((status = 200, body = TenantView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn get_tenant(
    State(state): State<Shared>,
    tenant: AuthorizedTenant,
) -> Result<Json<TenantView>, ApiError> {
    tenant_ops::view(&state, &tenant).await.map(Json)
}

/// The commits that changed a tenant (author, time, action, reason), newest first.
#[utoipa::path(get, path = "/v1/tenants/{name}/history", params(("name" = String, Path), HistoryQuery),
    responses((status = 200, body = [HistoryEntry]), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn history(
    State(state): State<Shared>,
    _caller: Caller,
    Query(query): Query<HistoryQuery>,
    tenant: AuthorizedIncarnation,
) -> Result<Json<Vec<HistoryEntry>>, ApiError> {
    tenant_ops::history(&state, &tenant, query.limit.unwrap_or(100))
        .await
        .map(Json)
}

/// The caller's tenants (admins: every tenant), from the tenants index.
#[utoipa::path(get, path = "/v1/tenants", responses((status = 200, body = [TenantSummary]), (status = 401, body = crate::http::ErrorBody)), security(("bearer" = [])))]
pub async fn list_tenants(
    State(state): State<Shared>,
    caller: Caller,
) -> Result<Json<Vec<TenantSummary>>, ApiError> {
    let rows = authorize_tenant_list(&state, &caller).await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| TenantSummary {
                name: r.name,
                owner_id: r.owner_id,
                created_at: r.created_at,
                updated_at: r.updated_at,
                last_commit: r.last_commit,
            })
            .collect(),
    ))
}
