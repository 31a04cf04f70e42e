//! Customer sign-in and sessions over HTTP: Telegram login (JSON for API clients, the widget's
//! redirect for browsers), the dev login, refresh-token rotation, logout, "log out everywhere",
//! the caller's account and the JWKS. (The caller's tenants are in [`super::tenants`].)
//!
//! API clients get the tokens in the JSON body and send `Authorization: Bearer <access token>`.
//! Browsers get cookies (see [`crate::auth::session_cookies`]) and must repeat the CSRF cookie in
//! `X-CSRF-Token` on every write.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{self, now_s, LoginError};
use crate::http::{ApiError, AppState, Caller, ClientAddr, JsonBody};
use crate::store::{Customer, RefreshOutcome};
use sha2::{Digest, Sha256};

type Shared = std::sync::Arc<AppState>;

/// The sign-in and account routes.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/v1/auth/telegram", post(telegram_login))
        .route("/v1/auth/telegram/callback", get(telegram_callback))
        .route("/v1/auth/dev-login", post(dev_login))
        .route("/v1/auth/refresh", post(refresh))
        .route("/v1/auth/logout", post(logout))
        .route("/v1/auth/logout-all", post(logout_all))
        .route("/v1/me", get(me).patch(update_me))
        .route("/.well-known/jwks.json", get(jwks))
}

/// A new session for API clients.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionResponse {
    /// RS256 JWT; send as `Authorization: Bearer <accessToken>`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds the access token is valid.
    pub expires_in: i64,
    /// Single use: POST it to /v1/auth/refresh for a new pair. Keep it secret.
    pub refresh_token: String,
    pub customer: CustomerView,
}

/// A customer account.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomerView {
    pub id: String,
    pub email: Option<String>,
    pub telegram_id: Option<i64>,
    pub display_name: String,
}

impl From<&Customer> for CustomerView {
    fn from(c: &Customer) -> Self {
        CustomerView {
            id: c.id.clone(),
            email: c.email.clone(),
            telegram_id: c.telegram_id,
            display_name: c.display_name.clone(),
        }
    }
}

/// Who is calling.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeResponse {
    /// Admins see and change every tenant.
    pub admin: bool,
    /// The commit author name of this caller's changes.
    pub name: String,
    /// Absent for admin API tokens.
    pub customer: Option<CustomerView>,
}

/// The fields of a customer account that the customer may change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MeUpdate {
    pub email: Option<String>,
    pub display_name: Option<String>,
}

/// Dev login: become (or create) the customer with this Telegram id.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DevLoginRequest {
    pub telegram_id: i64,
    pub display_name: Option<String>,
}

/// A refresh token sent in the body (API clients); browsers send the cookie instead.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RefreshRequest {
    pub refresh_token: Option<String>,
}

fn unavailable(e: crate::store::StoreError) -> ApiError {
    ApiError::Unavailable(e.to_string())
}

fn keys(state: &AppState) -> Result<&auth::Keys, ApiError> {
    state.auth.keys.as_ref().ok_or_else(|| {
        ApiError::Unavailable(
            "customer sign-in is not configured on this api (auth.private_key_path is unset)"
                .into(),
        )
    })
}

fn login_error(e: LoginError) -> ApiError {
    match e {
        LoginError::Malformed { field, message } => ApiError::Invalid {
            status: StatusCode::BAD_REQUEST,
            field: Some(field),
            message,
        },
        other => ApiError::Unauthenticated(other.to_string()),
    }
}

/// Issues an access token and starts a refresh family.
async fn new_session(state: &AppState, customer: &Customer) -> Result<(String, String), ApiError> {
    let keys = keys(state)?;
    let now = now_s();
    let access = keys.issue(&customer.id, customer.session_epoch, now);
    let (refresh, hash) = auth::new_refresh_token();
    let expires = (now + state.config.auth.refresh_ttl_seconds as i64) * 1000;
    state
        .store
        .start_refresh_family(&customer.id, &hash, now * 1000, expires)
        .await
        .map_err(unavailable)?;
    Ok((access, refresh))
}

fn session_json(
    state: &AppState,
    customer: &Customer,
    access: String,
    refresh: String,
) -> Response {
    Json(SessionResponse {
        access_token: access,
        token_type: "Bearer".into(),
        expires_in: state.config.auth.access_ttl_seconds as i64,
        refresh_token: refresh,
        customer: customer.into(),
    })
    .into_response()
}

fn with_cookies(mut response: Response, cookies: Vec<HeaderValue>) -> Response {
    for cookie in cookies {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn browser_session(
    state: &AppState,
    customer: &Customer,
    access: &str,
    refresh: &str,
    response: Response,
) -> Response {
    let csrf = state.auth.csrf_token(&customer.id, customer.session_epoch);
    with_cookies(
        response,
        auth::session_cookies(access, refresh, &csrf, &state.config.auth),
    )
}

/// Verifies login data and finds or creates its customer.
async fn telegram_customer(
    state: &AppState,
    fields: &BTreeMap<String, String>,
) -> Result<Customer, ApiError> {
    keys(state)?;
    let secret = state.auth.telegram_secret.as_ref().ok_or_else(|| {
        ApiError::Unavailable(
            "Telegram sign-in is not configured on this api (auth.telegram_bot_token_path is unset)"
                .into(),
        )
    })?;
    let user = auth::verify_telegram_login(
        fields,
        secret,
        now_s(),
        state.config.auth.telegram_login_max_age_seconds as i64,
    )
    .map_err(login_error)?;
    // Single use: the same signed data presented again is a replay. The record is keyed on the
    // signature's bytes, not its text: the check accepts hex in either case, so the text of one
    // signature has many spellings.
    let max_age = state.config.auth.telegram_login_max_age_seconds as i64;
    let signature = fields
        .get("hash")
        .and_then(|h| hex::decode(h).ok())
        .unwrap_or_default();
    let digest = hex::encode(Sha256::digest(&signature));
    let first = state
        .store
        .first_use_of_login(
            &digest,
            user.auth_date + max_age + auth::TELEGRAM_SKEW_SECONDS,
            now_s(),
        )
        .await
        .map_err(unavailable)?;
    if !first {
        return Err(ApiError::Unauthenticated(
            "this login data was already used; sign in again through the Telegram widget".into(),
        ));
    }
    state
        .store
        .customer_for_telegram(user.id, &user.display_name, now_s() * 1000)
        .await
        .map_err(unavailable)
}

/// Sign in with Telegram Login Widget data (the widget's `user` object, as JSON). First sign-in
/// creates the customer. Answers with an access token and a refresh token.
#[utoipa::path(post, path = "/v1/auth/telegram", request_body(content = Object, description = "the widget's fields: id, first_name, last_name, username, photo_url, auth_date, hash"),
    responses((status = 200, body = SessionResponse), (status = 400, body = crate::http::ErrorBody), (status = 401, body = crate::http::ErrorBody, description = "forged, tampered or expired login data"),
        (status = 429, body = crate::http::ErrorBody), (status = 503, body = crate::http::ErrorBody)))]
pub async fn telegram_login(
    State(state): State<Shared>,
    client: ClientAddr,
    JsonBody(body, _): JsonBody<BTreeMap<String, serde_json::Value>>,
) -> Result<Response, ApiError> {
    state
        .auth
        .login_limiter
        .check(client.0)
        .map_err(ApiError::TooManyRequests)?;
    let mut fields = BTreeMap::new();
    for (key, value) in body {
        let text = match value {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            _ => {
                return Err(ApiError::Invalid {
                    status: StatusCode::BAD_REQUEST,
                    field: Some(key),
                    message: "must be a string or a number".into(),
                })
            }
        };
        fields.insert(key, text);
    }
    let customer = telegram_customer(&state, &fields).await?;
    let (access, refresh) = new_session(&state, &customer).await?;
    Ok(session_json(&state, &customer, access, refresh))
}

/// The Telegram Login Widget's redirect (`data-auth-url`): verifies the query, sets the session
/// cookies and redirects to `auth.login_redirect`.
#[utoipa::path(get, path = "/v1/auth/telegram/callback", params(("id" = i64, Query), ("auth_date" = i64, Query), ("hash" = String, Query)),
    responses((status = 303, description = "signed in: session cookies set"), (status = 400, body = crate::http::ErrorBody), (status = 401, body = crate::http::ErrorBody), (status = 429, body = crate::http::ErrorBody)))]
pub async fn telegram_callback(
    State(state): State<Shared>,
    client: ClientAddr,
    Query(fields): Query<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    state
        .auth
        .login_limiter
        .check(client.0)
        .map_err(ApiError::TooManyRequests)?;
    let customer = telegram_customer(&state, &fields).await?;
    let (access, refresh) = new_session(&state, &customer).await?;
    let redirect = (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, state.config.auth.login_redirect.clone())],
    )
        .into_response();
    Ok(browser_session(
        &state, &customer, &access, &refresh, redirect,
    ))
}

/// Dev mode only: sign in as the customer with this Telegram id (created on first use), without
/// Telegram. 404 unless `auth.dev_login` is on (which needs dev mode on a loopback address).
#[utoipa::path(post, path = "/v1/auth/dev-login", request_body = DevLoginRequest,
    responses((status = 200, body = SessionResponse), (status = 404, body = crate::http::ErrorBody), (status = 429, body = crate::http::ErrorBody)))]
pub async fn dev_login(
    State(state): State<Shared>,
    client: ClientAddr,
    JsonBody(body, _): JsonBody<DevLoginRequest>,
) -> Result<Response, ApiError> {
    if !(state.config.dev_mode && state.config.auth.dev_login) {
        return Err(ApiError::NotFound(
            "no such endpoint; see /openapi.json".into(),
        ));
    }
    state
        .auth
        .login_limiter
        .check(client.0)
        .map_err(ApiError::TooManyRequests)?;
    compiler::spec::TelegramId::parse(body.telegram_id)
        .map_err(|m| ApiError::field_error("telegramId", m))?;
    let name = auth::clean_name(
        &body
            .display_name
            .unwrap_or_else(|| format!("Dev user {}", body.telegram_id)),
    );
    let customer = state
        .store
        .customer_for_telegram(body.telegram_id, &name, now_s() * 1000)
        .await
        .map_err(unavailable)?;
    let (access, refresh) = new_session(&state, &customer).await?;
    Ok(session_json(&state, &customer, access, refresh))
}

/// Where the refresh token came from.
enum Presented {
    Body(String),
    Cookie(String),
}

fn presented_refresh(
    state: &AppState,
    headers: &HeaderMap,
    raw: &[u8],
) -> Result<Option<Presented>, ApiError> {
    if !raw.iter().all(u8::is_ascii_whitespace) {
        let body: RefreshRequest = crate::http::parse_json_body(raw)?;
        if let Some(token) = body.refresh_token {
            return Ok(Some(Presented::Body(token)));
        }
    }
    match auth::cookie(headers, auth::REFRESH_COOKIE) {
        Some(token) => {
            auth::check_csrf(headers, &state.config.auth)
                .map_err(|e| ApiError::Forbidden(e.to_string()))?;
            Ok(Some(Presented::Cookie(token)))
        }
        None => Ok(None),
    }
}

/// Trade a refresh token for a new access token and a new refresh token (the old one is used
/// up). Presenting a used refresh token again revokes every token of its sign-in. API clients
/// send `{"refreshToken": ...}`; browsers send the cookie with `X-CSRF-Token`.
#[utoipa::path(post, path = "/v1/auth/refresh", request_body = Option<RefreshRequest>,
    responses((status = 200, body = SessionResponse), (status = 204, description = "browser: new session cookies set"),
        (status = 401, body = crate::http::ErrorBody, description = "unknown, expired, revoked or reused token"), (status = 403, body = crate::http::ErrorBody, description = "cookie without the CSRF header"), (status = 429, body = crate::http::ErrorBody)))]
pub async fn refresh(
    State(state): State<Shared>,
    client: ClientAddr,
    headers: HeaderMap,
    raw: axum::body::Bytes,
) -> Result<Response, ApiError> {
    state
        .auth
        .login_limiter
        .check(client.0)
        .map_err(ApiError::TooManyRequests)?;
    let keys = keys(&state)?;
    let presented = presented_refresh(&state, &headers, &raw)?
        .ok_or_else(|| ApiError::Unauthenticated("send a refresh token".into()))?;
    let token = match &presented {
        Presented::Body(t) | Presented::Cookie(t) => t.clone(),
    };
    let now = now_s();
    let (next, next_hash) = auth::new_refresh_token();
    let expires = (now + state.config.auth.refresh_ttl_seconds as i64) * 1000;
    let outcome = state
        .store
        .rotate_refresh(&auth::refresh_hash(&token), &next_hash, now * 1000, expires)
        .await
        .map_err(unavailable)?;
    let customer_id = match outcome {
        RefreshOutcome::Rotated { customer_id } => customer_id,
        RefreshOutcome::Reused => {
            tracing::warn!("a used refresh token was presented again; its family is revoked");
            return Err(ApiError::Unauthenticated(
                "this refresh token was already used; every session of that sign-in is now revoked, sign in again".into(),
            ));
        }
        RefreshOutcome::Invalid => {
            return Err(ApiError::Unauthenticated(
                "the refresh token is unknown, expired or revoked; sign in again".into(),
            ))
        }
    };
    let customer = state
        .store
        .customer(&customer_id)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| ApiError::Unauthenticated("the customer does not exist".into()))?;
    let access = keys.issue(&customer.id, customer.session_epoch, now);
    Ok(match presented {
        Presented::Body(_) => session_json(&state, &customer, access, next),
        Presented::Cookie(_) => browser_session(
            &state,
            &customer,
            &access,
            &next,
            StatusCode::NO_CONTENT.into_response(),
        ),
    })
}

/// End this session: revokes the refresh token's family and clears the cookies. The access
/// token stays valid until it expires (at most 15 minutes); use /v1/auth/logout-all to end
/// those too.
#[utoipa::path(post, path = "/v1/auth/logout", request_body = Option<RefreshRequest>,
    responses((status = 204, description = "logged out"), (status = 400, body = crate::http::ErrorBody), (status = 403, body = crate::http::ErrorBody)))]
pub async fn logout(
    State(state): State<Shared>,
    headers: HeaderMap,
    raw: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let presented =
        presented_refresh(&state, &headers, &raw)?.ok_or_else(|| ApiError::Invalid {
            status: StatusCode::BAD_REQUEST,
            field: Some("refreshToken".into()),
            message: "send the refresh token of the session to end (or the session cookie)".into(),
        })?;
    let token = match presented {
        Presented::Body(t) | Presented::Cookie(t) => t,
    };
    state
        .store
        .revoke_refresh_family(&auth::refresh_hash(&token), now_s() * 1000)
        .await
        .map_err(unavailable)?;
    Ok(with_cookies(
        StatusCode::NO_CONTENT.into_response(),
        auth::clear_cookies(),
    ))
}

/// Log out everywhere: revokes every refresh token of the signed-in customer and every access
/// token issued so far.
#[utoipa::path(post, path = "/v1/auth/logout-all",
    responses((status = 204, description = "every session ended"), (status = 401, body = crate::http::ErrorBody), (status = 403, body = crate::http::ErrorBody)),
    security(("bearer" = [])))]
pub async fn logout_all(State(state): State<Shared>, caller: Caller) -> Result<Response, ApiError> {
    let customer = caller.customer.ok_or_else(|| {
        ApiError::Forbidden("admin API tokens have no sessions; rotate the token instead".into())
    })?;
    state
        .store
        .end_all_sessions(&customer.id, now_s() * 1000)
        .await
        .map_err(unavailable)?;
    Ok(with_cookies(
        StatusCode::NO_CONTENT.into_response(),
        auth::clear_cookies(),
    ))
}

/// The caller: admin or customer, and the customer's account.
#[utoipa::path(get, path = "/v1/me", responses((status = 200, body = MeResponse), (status = 401, body = crate::http::ErrorBody)), security(("bearer" = [])))]
pub async fn me(caller: Caller) -> Json<MeResponse> {
    Json(MeResponse {
        admin: caller.admin,
        name: caller.actor.name.clone(),
        customer: caller.customer.as_ref().map(CustomerView::from),
    })
}

/// Change the signed-in customer's email or display name.
#[utoipa::path(patch, path = "/v1/me", request_body = MeUpdate,
    responses((status = 200, body = MeResponse), (status = 409, body = crate::http::ErrorBody), (status = 422, body = crate::http::ErrorBody)), security(("bearer" = [])))]
pub async fn update_me(
    State(state): State<Shared>,
    caller: Caller,
    JsonBody(body, _): JsonBody<MeUpdate>,
) -> Result<Json<MeResponse>, ApiError> {
    let customer = caller
        .customer
        .clone()
        .ok_or_else(|| ApiError::Forbidden("admin API tokens have no account to change".into()))?;
    if let Some(email) = &body.email {
        crate::http::free_text("email", email)?;
    }
    let email = body
        .email
        .map(|e| {
            compiler::spec::Email::parse(e)
                .map(|e| e.to_string())
                .map_err(|m| ApiError::field_error("email", m))
        })
        .transpose()?;
    if let Some(name) = &body.display_name {
        crate::http::free_text("displayName", name)?;
        if name.chars().count() > 100 || name.contains(['<', '>']) {
            return Err(ApiError::field_error(
                "displayName",
                "at most 100 characters, without < or >",
            ));
        }
    }
    crate::http::check_write_limit(&state, &caller)?;
    let name = body.display_name.map(|n| auth::clean_name(&n));
    if name.as_deref() == Some("") {
        return Err(ApiError::field_error(
            "displayName",
            "must have at least one visible character",
        ));
    }
    if email.is_none() && name.is_none() {
        return Err(ApiError::field_error(
            "body",
            "set at least one of email, displayName",
        ));
    }
    if let Some(email) = &email {
        crate::tenant_ops::record_email(&state, &customer.id, email).await?;
    }
    if let Some(name) = &name {
        state
            .store
            .update_customer(&customer.id, None, Some(name))
            .await
            .map_err(unavailable)?;
    }
    let updated = state
        .store
        .customer(&customer.id)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| ApiError::Unauthenticated("the customer does not exist".into()))?;
    Ok(Json(MeResponse {
        admin: caller.admin,
        name: crate::http::customer_actor(&updated).name,
        customer: Some((&updated).into()),
    }))
}

/// The public keys that verify access tokens (current and previous), as a JWKS.
#[utoipa::path(get, path = "/.well-known/jwks.json", responses((status = 200, description = "JSON Web Key Set")))]
pub async fn jwks(State(state): State<Shared>) -> Response {
    let body = match &state.auth.keys {
        Some(keys) => keys.jwks().clone(),
        None => serde_json::json!({ "keys": [] }),
    };
    ([(header::CACHE_CONTROL, "public, max-age=300")], Json(body)).into_response()
}
