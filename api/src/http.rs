//! The HTTP surface: routes, JSON bodies, errors, authentication, idempotency, and the ops
//! endpoints (/healthz, /readyz, /metrics, /openapi.json).
//!
//! Handlers parse and check everything a request carries before anything is written, then hand
//! one [`Change`] to the writer and answer with its commit. Errors are JSON
//! (`{"error": {"code", "message", "field"?, "requestId"}}`) and never echo secrets.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use compiler::spec::{
    Agent, Email, Language, Metadata, Owner, ProxyToken, Spec, TelegramId, TenantName, TenantSpec,
    TenantState, TenantUid, Thinking, TokenSha256,
};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;
use utoipa::{OpenApi, ToSchema};

use crate::auth::Auth;
use crate::config::{Config, TelegramVerification};
use crate::lifecycle::{
    check_allow_from, check_model, check_tier, compiled_for, Actor, Change, ChangeError, Compiled,
    Operation, Role,
};
use crate::reader::{HistoryEntry, TenantView};
use crate::sessions;
use crate::store::{Customer, Store};
use crate::telegram::{BotToken, Telegram, TelegramError};
use crate::writer::{ChangeResponse, IdempotencyKey, WriteError, WriterHandle};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Shared state of the handlers.
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub writer: WriterHandle,
    pub telegram: Telegram,
    pub metrics: PrometheusHandle,
    /// (actor, hash bytes) of each admin token.
    admins: Vec<(Actor, [u8; 32])>,
    /// Platform config and templates at the head, for checks at the boundary.
    compiled: Mutex<HeadConfig>,
    /// Idempotency keys of requests in progress.
    in_flight: Mutex<HashSet<(String, String)>>,
    /// The usage ledger and the budget feed.
    pub ledger: Arc<crate::usage::Ledger>,
    /// Signing keys, Telegram login secret, limiters.
    pub auth: Auth,
}

impl AppState {
    pub fn new(
        config: Arc<Config>,
        store: Store,
        writer: WriterHandle,
        metrics: PrometheusHandle,
    ) -> AppState {
        let admins = config
            .admin_tokens
            .iter()
            .map(|t| {
                let mut hash = [0u8; 32];
                hex::decode_to_slice(&t.sha256, &mut hash).expect("checked by Config::check");
                (
                    Actor {
                        name: t.name.clone(),
                        email: t.email.clone(),
                    },
                    hash,
                )
            })
            .collect();
        let telegram = Telegram::new(
            &config.telegram.base_url,
            std::time::Duration::from_secs(config.telegram.timeout_seconds),
        );
        AppState {
            ledger: Arc::new(crate::usage::Ledger::new(&config)),
            store,
            writer,
            telegram,
            metrics,
            admins,
            auth: Auth::without_keys(&config),
            config,
            compiled: Mutex::new(HeadConfig::default()),
            in_flight: Mutex::new(HashSet::new()),
        }
    }

    /// Replaces the sign-in material (keys, Telegram login secret) with `auth`.
    pub fn with_auth(mut self, auth: Auth) -> AppState {
        self.auth = auth;
        self
    }

    fn tracking_ref(&self) -> String {
        format!(
            "refs/remotes/{}/{}",
            crate::state_repo::REMOTE,
            self.config.repo.branch
        )
    }
}

type Shared = Arc<AppState>;

// ---------------------------------------------------------------------------------------------
// Errors

/// An error answer.
#[derive(Debug)]
pub enum ApiError {
    /// The body or a parameter is malformed or refers to something that does not exist.
    Invalid {
        status: StatusCode,
        field: Option<String>,
        message: String,
    },
    Unauthorized,
    /// Authentication was attempted and failed (401, with why).
    Unauthenticated(String),
    /// Authenticated, but not allowed (403): CSRF, quotas, admin-only actions.
    Forbidden(String),
    /// Too many attempts from this address (429).
    TooManyRequests(std::time::Duration),
    /// Too many changes from this customer (429).
    TooManyChanges(std::time::Duration),
    NotFound(String),
    Conflict(String),
    Unavailable(String),
    Internal(String),
}

impl ApiError {
    /// A 422 naming the request field at fault.
    pub fn field_error(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::field(field, message)
    }

    fn field(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::Invalid {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            field: Some(field.to_owned()),
            message: message.into(),
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetail {
    /// Stable machine-readable code.
    pub code: String,
    pub message: String,
    /// The request field at fault, when there is one (`owner.email`, `allowFrom[2]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut retry_after: Option<u64> = None;
        let (status, code, field, message) = match self {
            ApiError::Invalid {
                status,
                field,
                message,
            } => (status, "invalid_request", field, message),
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                None,
                "sign in: send `Authorization: Bearer <access token or admin API token>`, or the session cookie".to_owned(),
            ),
            ApiError::Unauthenticated(m) => (StatusCode::UNAUTHORIZED, "unauthorized", None, m),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", None, m),
            ApiError::TooManyRequests(wait) => {
                retry_after = Some(wait.as_secs() + u64::from(wait.subsec_nanos() > 0));
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    None,
                    "too many attempts from this address; retry after the Retry-After seconds".to_owned(),
                )
            }
            ApiError::TooManyChanges(wait) => {
                retry_after = Some(wait.as_secs() + u64::from(wait.subsec_nanos() > 0));
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    None,
                    "too many changes from this account; retry after the Retry-After seconds".to_owned(),
                )
            }
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", None, m),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, "conflict", None, m),
            ApiError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", None, m),
            ApiError::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    None,
                    "internal error; see the api's logs".to_owned(),
                )
            }
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.to_owned(),
                message,
                field,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<ChangeError> for ApiError {
    fn from(e: ChangeError) -> Self {
        match e {
            ChangeError::NotFound(_) => ApiError::NotFound(e.to_string()),
            ChangeError::AlreadyExists(_) => ApiError::Conflict(e.to_string()),
            ChangeError::Invalid { field, message } => ApiError::field(&field, message),
            ChangeError::Forbidden(m) => ApiError::Forbidden(m),
            ChangeError::Repo(m) => {
                ApiError::Conflict(format!("the state repo cannot take this change: {m}"))
            }
        }
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Change(c) => c.into(),
            WriteError::Unavailable(m) => ApiError::Unavailable(m),
            WriteError::Busy => ApiError::Unavailable(e.to_string()),
            WriteError::Internal(m) => ApiError::Internal(m),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Extractors

/// A JSON body whose errors name the offending field.
pub struct JsonBody<T>(pub T, pub Bytes);

/// Refuses a request whose `Content-Type` is not JSON (415); `what` names the body in the message.
/// The media type must be exactly `application/json` (any case), with parameters or not
/// (`application/json; charset=utf-8`); `application/jsonx` and `application/json-seq` are not.
pub(crate) fn require_json(headers: &HeaderMap, what: &str) -> Result<(), ApiError> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if json {
        return Ok(());
    }
    Err(ApiError::Invalid {
        status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
        field: None,
        message: format!("send the {what} as JSON with `Content-Type: application/json`"),
    })
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        require_json(req.headers(), "body")?;
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|_| ApiError::Invalid {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                field: None,
                message: format!("the body is larger than {MAX_BODY_BYTES} bytes"),
            })?;
        let value = parse_json(&bytes)?;
        Ok(JsonBody(value, bytes))
    }
}

/// Parses a JSON body, naming the field at fault on error.
pub fn parse_json_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    parse_json(bytes)
}

pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.to_string();
        // serde reports a missing field at its parent; name the field itself.
        // (An unknown field is already the last element of the path.)
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|m| m.split('`').next());
        let field = match missing {
            Some(name) if path == "." => name.to_owned(),
            Some(name) => format!("{path}.{name}"),
            None if inner.is_syntax() || inner.is_eof() => "body".to_owned(),
            None => path,
        };
        // serde quotes the offending value in some messages; for a bot token that would echo it.
        let message = if field == "telegramBotToken" {
            "must be a string".to_owned()
        } else {
            message
        };
        ApiError::Invalid {
            status: StatusCode::BAD_REQUEST,
            field: Some(field),
            message,
        }
    })
}

/// The authenticated caller: an admin (admin API token, or a customer whose Telegram id is in
/// `auth.admin_telegram_ids`) or a customer (access token as a bearer or in the session cookie).
#[derive(Debug, Clone)]
pub struct Caller {
    /// The commit author of the changes this caller makes.
    pub actor: Actor,
    /// Admins see and change every tenant.
    pub admin: bool,
    /// The signed-in customer; None for admin API tokens.
    pub customer: Option<Customer>,
}

impl Caller {
    /// The customer id, when the caller is a customer.
    pub fn customer_id(&self) -> Option<&str> {
        self.customer.as_ref().map(|c| c.id.as_str())
    }

    /// The namespace of this caller's Idempotency-Keys.
    fn scope(&self) -> String {
        match &self.customer {
            Some(c) => format!("customer:{}", c.id),
            None => self.actor.name.clone(),
        }
    }
}

/// The commit author for a customer, made from what the api verified and the customer cannot
/// choose: their account id (made by the api, bound to their Telegram id). Display names and
/// emails are the customer's own words and could name anyone, so they never become an author.
pub fn customer_actor(customer: &Customer) -> Actor {
    Actor {
        name: format!("customer {}", customer.id),
        email: format!("{}@customers.openclaw.invalid", customer.id),
    }
}

fn is_write(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

impl axum::extract::FromRequestParts<Shared> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &Shared,
    ) -> Result<Self, ApiError> {
        if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
                .ok_or(ApiError::Unauthorized)?;
            // Access tokens are JWTs (three dot-separated parts); admin tokens are hex.
            if token.contains('.') {
                return customer_caller(state, token).await;
            }
            return admin_caller(state, token);
        }
        if let Some(token) = crate::auth::cookie(&parts.headers, crate::auth::ACCESS_COOKIE) {
            let write = is_write(&parts.method);
            if write {
                crate::auth::check_csrf(&parts.headers, &state.config.auth)
                    .map_err(|e| ApiError::Forbidden(e.to_string()))?;
            }
            let caller = customer_caller(state, &token).await?;
            if let (true, Some(customer)) = (write, &caller.customer) {
                // The token must be the one issued to this session's customer: a CSRF cookie
                // planted from another session (a sibling subdomain can set cookies) does not do.
                state
                    .auth
                    .check_csrf_binding(&parts.headers, &customer.id, customer.session_epoch)
                    .map_err(|e| ApiError::Forbidden(e.to_string()))?;
            }
            return Ok(caller);
        }
        Err(ApiError::Unauthorized)
    }
}

fn admin_caller(state: &AppState, token: &str) -> Result<Caller, ApiError> {
    let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    // Compare against every token so the time taken does not say which one matched.
    let mut found = None;
    for (actor, hash) in &state.admins {
        if bool::from(hash.ct_eq(&presented)) {
            found = Some(actor.clone());
        }
    }
    found
        .map(|actor| Caller {
            actor,
            admin: true,
            customer: None,
        })
        .ok_or(ApiError::Unauthorized)
}

async fn customer_caller(state: &AppState, token: &str) -> Result<Caller, ApiError> {
    let keys = state.auth.keys.as_ref().ok_or_else(|| {
        ApiError::Unauthenticated(
            "this api does not accept access tokens (no signing key is configured)".into(),
        )
    })?;
    let claims = keys
        .verify(token)
        .map_err(|e| ApiError::Unauthenticated(e.to_string()))?;
    let customer = state
        .store
        .customer(&claims.sub)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?
        .ok_or_else(|| {
            ApiError::Unauthenticated("the access token's customer does not exist".into())
        })?;
    if customer.session_epoch != claims.sep {
        return Err(ApiError::Unauthenticated(
            "this session was ended (logged out everywhere); sign in again".into(),
        ));
    }
    let admin = customer
        .telegram_id
        .is_some_and(|id| state.config.auth.admin_telegram_ids.contains(&id));
    Ok(Caller {
        actor: customer_actor(&customer),
        admin,
        customer: Some(customer),
    })
}

/// THE authorization check of a tenant, used by every endpoint that reads or changes one: admins
/// may act on any tenant; a customer only on the tenants they own. Another customer's tenant
/// answers exactly like a missing one (404, same message), so tenant names do not leak.
/// Returns the parsed name.
pub async fn authorize_tenant(
    state: &AppState,
    caller: &Caller,
    name: &str,
) -> Result<TenantName, ApiError> {
    let name = tenant_name(name)?;
    if caller.admin {
        return Ok(name);
    }
    let owner = state
        .store
        .tenant(name.as_str())
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?
        .and_then(|row| row.owner_id);
    match (owner, caller.customer_id()) {
        (Some(owner), Some(me)) if owner == me => Ok(name),
        _ => Err(not_found(&name)),
    }
}

/// One incarnation of a tenant (see `metadata.uid` in docs/tenant-spec.md) that a caller may
/// read: the live one, or one that was destroyed.
#[derive(Debug, Clone)]
pub struct Incarnation {
    pub name: TenantName,
    /// None for a tenant without a uid (made by hand, or before uids existed).
    pub uid: Option<String>,
    /// The key of its usage in the ledger ([`crate::store::ledger_key`]).
    pub ledger_key: String,
    /// Whether it is the tenant that exists now under this name.
    pub live: bool,
}

/// The authorization check of the endpoints that read a tenant's past (history, usage), by the
/// rule of [`authorize_tenant`] applied to incarnations: admins read every incarnation; a
/// customer reads the incarnations they owned, live or destroyed, and nothing of anyone else's
/// under the same name. `uid` picks one (`?incarnation=`); without it, the live incarnation when
/// the caller may read it, else the caller's most recently destroyed one. Anything else answers
/// like a missing tenant (404).
pub async fn authorize_incarnation(
    state: &AppState,
    caller: &Caller,
    name: &str,
    uid: Option<&str>,
) -> Result<Incarnation, ApiError> {
    let name = tenant_name(name)?;
    if let Some(uid) = uid {
        TenantUid::parse(uid).map_err(|m| ApiError::Invalid {
            status: StatusCode::BAD_REQUEST,
            field: Some("incarnation".into()),
            message: m,
        })?;
    }
    let unavailable = |e: crate::store::StoreError| ApiError::Unavailable(e.to_string());
    let live = state
        .store
        .tenant(name.as_str())
        .await
        .map_err(unavailable)?;
    let me = caller.customer_id();
    if let Some(row) = &live {
        let mine = caller.admin || (row.owner_id.is_some() && row.owner_id.as_deref() == me);
        if mine && (uid.is_none() || row.uid.as_deref() == uid) {
            return Ok(Incarnation {
                ledger_key: crate::store::ledger_key(name.as_str(), row.uid.as_deref()),
                uid: row.uid.clone(),
                name,
                live: true,
            });
        }
    }
    let owner = match (caller.admin, me) {
        (true, _) => None,
        (false, Some(me)) => Some(me),
        (false, None) => return Err(not_found(&name)),
    };
    if let Some(past) = state
        .store
        .past_incarnation(name.as_str(), uid, owner)
        .await
        .map_err(unavailable)?
    {
        return Ok(Incarnation {
            name,
            uid: past.uid,
            ledger_key: past.ledger_key,
            live: false,
        });
    }
    if caller.admin && uid.is_none() {
        // A tenant the index does not know (made by hand in the state repo): by its name.
        return Ok(Incarnation {
            ledger_key: name.to_string(),
            name,
            uid: None,
            live: live.is_some(),
        });
    }
    Err(not_found(&name))
}

/// The tenants `caller` may see, by the same rule as [`authorize_tenant`]: every tenant for
/// admins, their own for customers.
pub async fn authorize_tenant_list(
    state: &AppState,
    caller: &Caller,
) -> Result<Vec<crate::store::TenantRow>, ApiError> {
    let rows = if caller.admin {
        state.store.tenants().await
    } else {
        match caller.customer_id() {
            Some(id) => state.store.tenants_of(id).await,
            None => Ok(Vec::new()),
        }
    };
    rows.map_err(|e| ApiError::Unavailable(e.to_string()))
}

fn not_found(name: &TenantName) -> ApiError {
    ApiError::NotFound(format!("tenant {:?} does not exist", name.as_str()))
}

/// Longest `X-Request-Id` accepted.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Refuses (400) a request whose `X-Request-Id` could not go into a commit trailer and a log line
/// as it is: 1 to 128 characters of letters, digits and `-._:`. Runs before anything logs it.
pub async fn check_request_id(req: Request, next: Next) -> Response {
    if let Some(value) = req.headers().get("x-request-id") {
        let bytes = value.as_bytes();
        let ok = !bytes.is_empty()
            && bytes.len() <= MAX_REQUEST_ID_LEN
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(b));
        if !ok {
            return ApiError::Invalid {
                status: StatusCode::BAD_REQUEST,
                field: Some("X-Request-Id".into()),
                message: format!(
                    "must be 1 to {MAX_REQUEST_ID_LEN} characters of letters, digits and -._: (or left out: the api makes one)"
                ),
            }
            .into_response();
        }
    }
    next.run(req).await
}

/// Gives every error the api answers a JSON body, including the ones the framework makes
/// (a malformed path or query, a body over the limit, a method the route does not take).
pub async fn json_errors(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let mut message: String = String::from_utf8_lossy(&text)
        .chars()
        .filter(|c| !compiler::spec::refused_char(*c))
        .take(300)
        .collect();
    if message.trim().is_empty() {
        message = status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_owned();
    }
    let code = match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        s if s.is_server_error() => "internal",
        _ => "invalid_request",
    };
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.to_owned(),
            message,
            field: None,
        },
    };
    let mut answer = (status, Json(body)).into_response();
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            answer.headers_mut().insert(name.clone(), value.clone());
        }
    }
    answer
}

fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

fn tenant_name(name: &str) -> Result<TenantName, ApiError> {
    TenantName::parse(name).map_err(|m| ApiError::field("name", m))
}

// ---------------------------------------------------------------------------------------------
// Idempotency

/// Holds an Idempotency-Key while its request runs.
struct KeyGuard {
    state: Shared,
    key: (String, String),
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        self.state
            .in_flight
            .lock()
            .expect("in-flight set")
            .remove(&self.key);
    }
}

enum Idempotency {
    None,
    Replay(Response),
    Fresh(IdempotencyKey, KeyGuard),
}

async fn idempotency(
    state: &Shared,
    headers: &HeaderMap,
    scope: &str,
    method: &Method,
    path: &str,
    body: &[u8],
) -> Result<Idempotency, ApiError> {
    let Some(key) = headers.get("idempotency-key") else {
        return Ok(Idempotency::None);
    };
    let key = key
        .to_str()
        .ok()
        .filter(|k| {
            !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| (0x21..=0x7e).contains(&b))
        })
        .ok_or_else(|| ApiError::Invalid {
            status: StatusCode::BAD_REQUEST,
            field: Some("Idempotency-Key".into()),
            message: "must be 1 to 255 visible ASCII characters".into(),
        })?
        .to_owned();
    let mut hasher = Sha256::new();
    hasher.update(method.as_str().as_bytes());
    hasher.update([0]);
    hasher.update(path.as_bytes());
    hasher.update([0]);
    hasher.update(body);
    let request_hash = hex::encode(hasher.finalize());
    let slot = (scope.to_owned(), key.clone());
    if !state
        .in_flight
        .lock()
        .expect("in-flight set")
        .insert(slot.clone())
    {
        return Err(ApiError::Conflict(
            "a request with this Idempotency-Key is still in progress".into(),
        ));
    }
    let guard = KeyGuard {
        state: state.clone(),
        key: slot,
    };
    let stored = state
        .store
        .idempotent_response(scope, &key)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    if let Some(stored) = stored {
        if stored.request_hash != request_hash {
            return Err(ApiError::Invalid {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                field: Some("Idempotency-Key".into()),
                message: "this Idempotency-Key was used for a different request".into(),
            });
        }
        let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
        let mut response = (status, stored.body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
        return Ok(Idempotency::Replay(response));
    }
    Ok(Idempotency::Fresh(
        IdempotencyKey {
            actor: scope.to_owned(),
            key,
            request_hash,
        },
        guard,
    ))
}

/// Runs a change through idempotency and the writer.
async fn submit<P: Into<Prepared>>(
    state: &Shared,
    headers: &HeaderMap,
    method: Method,
    path: &str,
    body: &[u8],
    caller: &Caller,
    make: impl AsyncFnOnce(String) -> Result<P, ApiError>,
) -> Result<Response, ApiError> {
    check_write_limit(state, caller)?;
    let scope = caller.scope();
    let (key, _guard) = match idempotency(state, headers, &scope, &method, path, body).await? {
        Idempotency::Replay(response) => return Ok(response),
        Idempotency::None => (None, None),
        Idempotency::Fresh(key, guard) => (Some(key), Some(guard)),
    };
    let Prepared { change, new_owner } = make(request_id(headers)).await?.into();
    let response = state.writer.submit(change, new_owner, key).await?;
    let status = StatusCode::from_u16(response.status()).unwrap_or(StatusCode::OK);
    Ok((status, Json(response)).into_response())
}

/// Takes one change from a customer's budget of writes (`auth.customer_writes_per_minute`);
/// admins are not limited.
pub(crate) fn check_write_limit(state: &AppState, caller: &Caller) -> Result<(), ApiError> {
    match (&caller.customer, caller.admin) {
        (Some(customer), false) => state
            .auth
            .write_limiter
            .check(customer.id.clone())
            .map_err(ApiError::TooManyChanges),
        _ => Ok(()),
    }
}

/// A change ready for the writer, with the customer it creates: a provision for an owner the api
/// does not know yet records the new account in the batch's transaction, flushed with it.
pub struct Prepared {
    pub change: Change,
    pub new_owner: Option<Customer>,
}

impl From<Change> for Prepared {
    fn from(change: Change) -> Prepared {
        Prepared {
            change,
            new_owner: None,
        }
    }
}

/// What [`compiled`] keeps between requests: the clone, opened once, and the platform config
/// and templates of the last templates/ tree it saw.
#[derive(Default)]
struct HeadConfig {
    repo: Option<git2::Repository>,
    compiled: Option<Arc<Compiled>>,
}

/// The platform config and templates at the head (cached per templates/ tree).
pub async fn compiled(state: &Shared) -> Result<Arc<Compiled>, ApiError> {
    let state2 = state.clone();
    tokio::task::spawn_blocking(move || {
        let internal = |e: git2::Error| ApiError::Internal(e.message().to_owned());
        let mut head = state2.compiled.lock().expect("compiled cache");
        let head = &mut *head;
        let repo = match &mut head.repo {
            Some(repo) => repo,
            None => head.repo.insert(
                git2::Repository::open_bare(&state2.config.repo.local_path).map_err(internal)?,
            ),
        };
        let tip = repo
            .refname_to_id(&state2.tracking_ref())
            .map_err(internal)?;
        let tree = repo
            .find_commit(tip)
            .and_then(|c| c.tree())
            .map_err(internal)?;
        compiled_for(repo, &tree, &mut head.compiled).map_err(ApiError::from)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
}

fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

/// Encrypts a tenant's secrets for the platform's age recipients (CPU work, off the runtime).
async fn encrypt_secrets(
    compiled: &Compiled,
    name: &TenantName,
    values: BTreeMap<String, String>,
) -> Result<String, ApiError> {
    let recipients = compiled.platform.sops.age_recipients.clone();
    let namespace = name.namespace();
    tokio::task::spawn_blocking(move || {
        compiler::sops::tenant_secret_file(
            compiler::sops::TENANT_SECRET_NAME,
            &namespace,
            &values,
            &recipients,
        )
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|e| ApiError::Internal(format!("cannot encrypt the tenant's secrets: {e}")))
}

// ---------------------------------------------------------------------------------------------
// Request and response bodies

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProvisionRequest {
    /// DNS-1123 label, at most 40 characters.
    pub name: String,
    /// Required from admins; a customer provisions for themselves (their Telegram id, and this
    /// email or the one of their account).
    #[serde(default)]
    pub owner: Option<OwnerBody>,
    /// A tier of templates/platform.yaml.
    pub tier: String,
    /// The token BotFather issued; checked with Telegram's getMe, stored only encrypted.
    pub telegram_bot_token: String,
    #[serde(default)]
    pub agent: Option<SettingsBody>,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OwnerBody {
    pub email: Option<String>,
    pub telegram_user_id: Option<i64>,
}

/// Agent settings; absent fields keep their value (or the platform default on provisioning).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SettingsBody {
    pub model: Option<String>,
    #[schema(value_type = Option<String>, example = "medium")]
    pub thinking: Option<Thinking>,
    pub language: Option<String>,
    pub allow_from: Option<Vec<i64>>,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReasonBody {
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResizeBody {
    pub tier: String,
    #[serde(default)]
    pub reason: Option<String>,
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

fn reason(reason: Option<String>) -> Result<String, ApiError> {
    let reason = reason.unwrap_or_default();
    if reason.len() > 1000 {
        return Err(ApiError::field("reason", "at most 1000 characters"));
    }
    free_text("reason", &reason)?;
    Ok(reason)
}

/// Refuses (422) free text that would reach git or the database with a control character (C0,
/// DEL, C1, among them NUL and CR), a line or paragraph separator, or a bidirectional override:
/// they can cut or forge commit messages and trailers, and hide text from a reader.
pub(crate) fn free_text(field: &str, text: &str) -> Result<(), ApiError> {
    match text.chars().find(|c| compiler::spec::refused_char(*c)) {
        Some(c) => Err(ApiError::field(
            field,
            format!(
                "must not contain control characters, line separators or bidirectional overrides (found U+{:04X})",
                u32::from(c)
            ),
        )),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// Provision a tenant: checks the bot token with Telegram, makes a proxy token, writes the
/// encrypted secrets and the spec, compiles and commits.
#[utoipa::path(post, path = "/v1/tenants", request_body = ProvisionRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "makes retries safe")),
    responses((status = 201, body = ChangeResponse), (status = 202, body = ChangeResponse, description = "queued: the remote is unreachable"),
        (status = 400, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn provision(
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
    provision_tenant(state, caller, headers, JsonBody(body, raw)).await
}

/// Provisions a tenant for `caller` with every rule of `POST /v1/tenants` but the per-address
/// sign-up limit (the caller's write limit, tenant cap, tier, model, control characters, getMe,
/// idempotency): the handler and the platform bot both call it.
pub async fn provision_tenant(
    state: Arc<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(body, raw): JsonBody<ProvisionRequest>,
) -> Result<Response, ApiError> {
    let st = state.clone();
    let owner_caller = caller.clone();
    submit(
        &state,
        &headers,
        Method::POST,
        "/v1/tenants",
        &raw,
        &caller,
        async move |request_id| {
            let state = st;
            let caller = owner_caller;
            let name = tenant_name(&body.name)?;
            let (email, owner_telegram) = requested_owner(&caller, body.owner.as_ref())?;
            free_text("owner.email", &email)?;
            let email =
                Email::parse(email).map_err(|m| ApiError::field("owner.email", m))?;
            let owner_id = TelegramId::parse(owner_telegram)
                .map_err(|m| ApiError::field("owner.telegramUserId", m))?;
            let token = BotToken::parse(&body.telegram_bot_token)
                .map_err(|m| ApiError::field("telegramBotToken", m))?;
            let compiled = compiled(&state).await?;
            let platform = &compiled.platform;
            let tier = check_tier(platform, &body.tier)?;
            let settings = body.agent.unwrap_or_default();
            let model = match &settings.model {
                Some(m) => check_model(platform, m).map_err(|e| prefix(e, "agent."))?,
                None => platform.models.default.clone(),
            };
            let language =
                Language::parse(settings.language.clone().unwrap_or_else(|| "en".into()))
                    .map_err(|m| ApiError::field("agent.language", m))?;
            let allow_from = match &settings.allow_from {
                Some(ids) => check_allow_from(ids).map_err(|e| prefix(e, "agent."))?,
                None => vec![owner_id],
            };
            if state
                .store
                .tenant(name.as_str())
                .await
                .map_err(|e| ApiError::Unavailable(e.to_string()))?
                .is_some()
            {
                return Err(ApiError::Conflict(format!(
                    "tenant {:?} already exists",
                    name.as_str()
                )));
            }
            if let (false, Some(customer)) = (caller.admin, &caller.customer) {
                let owned = state
                    .store
                    .tenants_of(&customer.id)
                    .await
                    .map_err(|e| ApiError::Unavailable(e.to_string()))?
                    .len();
                let cap = state.config.auth.max_tenants_per_customer as usize;
                if owned >= cap {
                    return Err(ApiError::Forbidden(format!(
                        "you own {owned} agents, the most one account may have ({cap}); destroy one or ask support"
                    )));
                }
            }
            if state.config.telegram.verification == TelegramVerification::Getme {
                match state.telegram.get_me(&token).await {
                    Ok(_) => {}
                    Err(e @ TelegramError::Rejected(_)) => {
                        return Err(ApiError::field("telegramBotToken", e.to_string()))
                    }
                    Err(e @ TelegramError::Unavailable(_)) => {
                        return Err(ApiError::Unavailable(e.to_string()))
                    }
                }
            }
            let proxy_token = random_token();
            let uid = TenantUid::parse(uuid::Uuid::new_v4().to_string())
                .map_err(ApiError::Internal)?;
            let spec = TenantSpec {
                api_version: compiler::spec::API_VERSION.to_owned(),
                kind: compiler::spec::KIND.to_owned(),
                metadata: Metadata {
                    name: name.clone(),
                    uid: Some(uid),
                },
                spec: Spec {
                    owner: Owner {
                        email,
                        telegram_user_id: owner_id,
                    },
                    tier,
                    state: TenantState::Active,
                    suspended_by: None,
                    agent: Agent {
                        model,
                        thinking: settings.thinking.unwrap_or(Thinking::Medium),
                        language,
                        allow_from,
                    },
                    connections: Vec::new(),
                    proxy_token: ProxyToken {
                        sha256: TokenSha256::of_token(&proxy_token),
                    },
                    overrides: Default::default(),
                },
            };
            let values = BTreeMap::from([
                ("telegram-bot-token".to_owned(), token.expose().to_owned()),
                ("proxy-token".to_owned(), proxy_token),
                ("gateway-token".to_owned(), random_token()),
            ]);
            let secrets_yaml = encrypt_secrets(&compiled, &name, values).await?;
            let (owner, new_owner) = owner_account(&state, &caller, &spec.spec.owner).await?;
            let owner_cap = (!caller.admin && caller.customer.is_some())
                .then_some(state.config.auth.max_tenants_per_customer);
            Ok(Prepared {
                change: Change {
                    tenant: name.to_string(),
                    operation: Operation::Provision {
                        spec_yaml: spec.to_yaml(),
                        secrets_yaml,
                        owner_id: Some(owner),
                        owner_cap,
                    },
                    actor: caller.actor.clone(),
                    reason: reason(body.reason.or(settings.reason))?,
                    request_id,
                },
                new_owner,
            })
        },
    )
    .await
}

/// The owner's email and Telegram id a provision asks for. Customers provision for themselves:
/// their Telegram id, and the email they send or the one of their account. Admins name the owner
/// (or, signed in through Telegram, may leave it out to own the tenant themselves).
fn requested_owner(caller: &Caller, owner: Option<&OwnerBody>) -> Result<(String, i64), ApiError> {
    let sent_email = owner.and_then(|o| o.email.clone());
    let sent_id = owner.and_then(|o| o.telegram_user_id);
    match (&caller.customer, caller.admin) {
        (Some(customer), admin) if !admin || owner.is_none() => {
            let own_id = customer.telegram_id.ok_or_else(|| {
                ApiError::field(
                    "owner.telegramUserId",
                    "your account has no Telegram id; sign in with Telegram first",
                )
            })?;
            if sent_id.is_some_and(|id| id != own_id) {
                return Err(ApiError::field(
                    "owner.telegramUserId",
                    "must be your own Telegram id: customers provision agents for themselves",
                ));
            }
            let email = sent_email
                .or_else(|| customer.email.clone())
                .ok_or_else(|| {
                    ApiError::field(
                        "owner.email",
                        "required: send owner.email, or set it once with PATCH /v1/me",
                    )
                })?;
            Ok((email, own_id))
        }
        _ => {
            let email = sent_email.ok_or_else(|| ApiError::field("owner.email", "missing"))?;
            let id = sent_id.ok_or_else(|| ApiError::field("owner.telegramUserId", "missing"))?;
            Ok((email, id))
        }
    }
}

/// The customer who will own a new tenant: the calling customer (whose email is recorded if
/// their account had none), or for admins the customer with the owner's Telegram id, the only
/// identity the api verifies. An email never links a tenant to an account that has a Telegram id:
/// anyone may write any address on their account. The one exception is an account made from an
/// owner email before accounts existed (no Telegram id, so nobody signs in to it): it receives the
/// Telegram id. When there is none, a new account is returned too: the writer creates it in the
/// transaction that records the tenant (or, when someone made the same account meanwhile,
/// records the tenant under that one).
async fn owner_account(
    state: &AppState,
    caller: &Caller,
    owner: &Owner,
) -> Result<(String, Option<Customer>), ApiError> {
    let unavailable = |e: crate::store::StoreError| ApiError::Unavailable(e.to_string());
    let email = owner.email.to_string();
    let telegram = owner.telegram_user_id.get();
    if let Some(customer) = &caller.customer {
        if customer.telegram_id == Some(telegram) {
            if customer.email.is_none() {
                record_email(state, &customer.id, &email).await?;
            }
            return Ok((customer.id.clone(), None));
        }
    }
    if let Some(found) = state
        .store
        .customer_by_telegram(telegram)
        .await
        .map_err(unavailable)?
    {
        return Ok((found.id, None));
    }
    if let Some(found) = state
        .store
        .customer_by_email(&email)
        .await
        .map_err(unavailable)?
    {
        if found.telegram_id.is_none() {
            // An account made from an owner email (before accounts existed): the owner's Telegram
            // sign-in finds it from now on.
            state
                .store
                .link_telegram(&found.id, telegram)
                .await
                .map_err(unavailable)?;
            return Ok((found.id, None));
        }
        // Someone else wrote this email on their account: the new owner's account goes without.
        let customer = Customer::new(None, Some(telegram), email, crate::auth::now_s() * 1000);
        return Ok((customer.id.clone(), Some(customer)));
    }
    let customer = Customer::new(
        Some(email.clone()),
        Some(telegram),
        email,
        crate::auth::now_s() * 1000,
    );
    Ok((customer.id.clone(), Some(customer)))
}

/// Records a customer's email; another account holding it is a conflict.
pub(crate) async fn record_email(
    state: &AppState,
    customer_id: &str,
    email: &str,
) -> Result<(), ApiError> {
    if let Some(other) = state
        .store
        .customer_by_email(email)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?
    {
        if other.id != customer_id {
            return Err(ApiError::Conflict(
                "this email belongs to another account".into(),
            ));
        }
        return Ok(());
    }
    state
        .store
        .update_customer(customer_id, Some(email), None)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))
}

/// The client's address (see [`crate::auth::client_address`]): the peer, or what a trusted proxy
/// says in X-Forwarded-For.
pub struct ClientAddr(pub std::net::IpAddr);

impl axum::extract::FromRequestParts<Shared> for ClientAddr {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &Shared,
    ) -> Result<Self, ApiError> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        Ok(ClientAddr(crate::auth::client_address(
            peer,
            &parts.headers,
            &state.auth.trusted_proxies,
        )))
    }
}

fn prefix(e: ChangeError, prefix: &str) -> ApiError {
    match e {
        ChangeError::Invalid { field, message } => {
            ApiError::field(&format!("{prefix}{field}"), message)
        }
        other => other.into(),
    }
}

/// Update agent settings (model, thinking level, language, allowFrom).
#[utoipa::path(patch, path = "/v1/tenants/{name}/settings", request_body = SettingsBody,
    params(("name" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = ChangeResponse), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update_settings(
    State(state): State<Shared>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    JsonBody(body, raw): JsonBody<SettingsBody>,
) -> Result<Response, ApiError> {
    let name = authorize_tenant(&state, &caller, &name).await?;
    let actor = caller.actor.clone();
    let st = state.clone();
    let path = format!("/v1/tenants/{name}/settings");
    submit(
        &state,
        &headers,
        Method::PATCH,
        &path,
        &raw,
        &caller,
        async move |request_id| {
            let compiled = compiled(&st).await?;
            if let Some(model) = &body.model {
                check_model(&compiled.platform, model)?;
            }
            if let Some(language) = &body.language {
                Language::parse(language.clone()).map_err(|m| ApiError::field("language", m))?;
            }
            if let Some(ids) = &body.allow_from {
                check_allow_from(ids)?;
            }
            if body.model.is_none()
                && body.thinking.is_none()
                && body.language.is_none()
                && body.allow_from.is_none()
            {
                return Err(ApiError::field(
                    "body",
                    "set at least one of model, thinking, language, allowFrom",
                ));
            }
            Ok(Change {
                tenant: name.to_string(),
                operation: Operation::UpdateSettings {
                    model: body.model,
                    thinking: body.thinking,
                    language: body.language,
                    allow_from: body.allow_from,
                },
                actor,
                reason: reason(body.reason)?,
                request_id,
            })
        },
    )
    .await
}

async fn simple(
    state: Shared,
    caller: Caller,
    name: String,
    headers: HeaderMap,
    raw: Bytes,
    reason_text: Option<String>,
    operation: Operation,
) -> Result<Response, ApiError> {
    let name = authorize_tenant(&state, &caller, &name).await?;
    let actor = caller.actor.clone();
    let path = format!("/v1/tenants/{name}/{}", operation.action());
    submit(
        &state,
        &headers,
        Method::POST,
        &path,
        &raw,
        &caller,
        async move |request_id| {
            Ok(Change {
                tenant: name.to_string(),
                operation,
                actor,
                reason: reason(reason_text)?,
                request_id,
            })
        },
    )
    .await
}

/// An optional JSON body: empty is fine, otherwise it must be JSON (media type and content).
fn optional_body<T: DeserializeOwned + Default>(
    headers: &HeaderMap,
    raw: &Bytes,
) -> Result<T, ApiError> {
    if raw.is_empty() {
        return Ok(T::default());
    }
    require_json(headers, "body")?;
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse_json(raw)
}

/// The role a caller acts in, for the rules that depend on it.
fn role(caller: &Caller) -> Role {
    if caller.admin {
        Role::Admin
    } else {
        Role::Customer
    }
}

/// Suspend a tenant: the agent scales to zero and the proxy refuses its token.
#[utoipa::path(post, path = "/v1/tenants/{name}/suspend", request_body = Option<ReasonBody>,
    params(("name" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = ChangeResponse), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn suspend(
    State(state): State<Shared>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    raw: Bytes,
) -> Result<Response, ApiError> {
    let body: ReasonBody = optional_body(&headers, &raw)?;
    let by = role(&caller);
    simple(
        state,
        caller,
        name,
        headers,
        raw,
        body.reason,
        Operation::Suspend { by },
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
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    raw: Bytes,
) -> Result<Response, ApiError> {
    let body: ReasonBody = optional_body(&headers, &raw)?;
    let by = role(&caller);
    simple(
        state,
        caller,
        name,
        headers,
        raw,
        body.reason,
        Operation::Reactivate { by },
    )
    .await
}

/// Move a tenant to another tier.
#[utoipa::path(post, path = "/v1/tenants/{name}/resize", request_body = ResizeBody,
    params(("name" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = ChangeResponse), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn resize(
    State(state): State<Shared>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    JsonBody(body, raw): JsonBody<ResizeBody>,
) -> Result<Response, ApiError> {
    let compiled = compiled(&state).await?;
    check_tier(&compiled.platform, &body.tier)?;
    let by = role(&caller);
    simple(
        state,
        caller,
        name,
        headers,
        raw,
        body.reason,
        Operation::Resize {
            tier: body.tier,
            by,
        },
    )
    .await
}

/// Replace the tenant's proxy token (the old one stops working once Flux applies the commit).
#[utoipa::path(post, path = "/v1/tenants/{name}/rotate-proxy-token", request_body = Option<ReasonBody>,
    params(("name" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = ChangeResponse), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn rotate_proxy_token(
    State(state): State<Shared>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    raw: Bytes,
) -> Result<Response, ApiError> {
    let body: ReasonBody = optional_body(&headers, &raw)?;
    let name = authorize_tenant(&state, &caller, &name).await?;
    let actor = caller.actor.clone();
    let st = state.clone();
    let path = format!("/v1/tenants/{name}/rotate-proxy-token");
    submit(
        &state,
        &headers,
        Method::POST,
        &path,
        &raw,
        &caller,
        async move |request_id| {
            // The other secrets stay as they are: read them from the head.
            let secrets = current_secrets(&st, name.as_str()).await?;
            let compiled = compiled(&st).await?;
            let proxy_token = random_token();
            let mut values = secrets;
            let sha256 = TokenSha256::of_token(&proxy_token).to_string();
            values.insert("proxy-token".to_owned(), proxy_token);
            let secrets_yaml = encrypt_secrets(&compiled, &name, values).await?;
            Ok(Change {
                tenant: name.to_string(),
                operation: Operation::RotateProxyToken {
                    sha256,
                    secrets_yaml,
                },
                actor,
                reason: reason(body.reason)?,
                request_id,
            })
        },
    )
    .await
}

/// The tenant's current secrets, decrypted with the api's age identity (needed to keep the bot
/// token when only the proxy token changes).
pub(crate) async fn current_secrets(
    state: &Shared,
    name: &str,
) -> Result<BTreeMap<String, String>, ApiError> {
    let Some(identity) = state.config.repo.age_identity_path.clone() else {
        return Err(ApiError::Conflict(
            "rotating a proxy token needs repo.age_identity_path (an age identity among the platform's recipients)".into(),
        ));
    };
    let state = state.clone();
    let name = name.to_owned();
    tokio::task::spawn_blocking(move || {
        let repo = git2::Repository::open_bare(&state.config.repo.local_path)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let tip = repo
            .refname_to_id(&state.tracking_ref())
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let tree = repo
            .find_commit(tip)
            .and_then(|c| c.tree())
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let text =
            crate::state_repo::read_file(&repo, &tree, &crate::lifecycle::secrets_path(&name))
                .ok_or_else(|| ApiError::NotFound(format!("tenant {name:?} does not exist")))?;
        let identity = std::fs::read_to_string(&identity)
            .map_err(|e| ApiError::Internal(format!("cannot read the age identity: {e}")))?;
        let secret = compiler::sops::decrypt(&String::from_utf8_lossy(&text), &identity)
            .map_err(|e| ApiError::Internal(format!("cannot decrypt the tenant's secrets: {e}")))?;
        Ok(secret.string_data().clone())
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
}

/// Destroy a tenant: its folder is removed and Flux prunes its resources.
#[utoipa::path(delete, path = "/v1/tenants/{name}", params(("name" = String, Path), DestroyQuery, ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = ChangeResponse), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn destroy(
    State(state): State<Shared>,
    caller: Caller,
    Path(name): Path<String>,
    Query(query): Query<DestroyQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let name = authorize_tenant(&state, &caller, &name).await?;
    let actor = caller.actor.clone();
    let path = format!("/v1/tenants/{name}");
    submit(
        &state,
        &headers,
        Method::DELETE,
        &path,
        b"",
        &caller,
        async move |request_id| {
            Ok(Change {
                tenant: name.to_string(),
                operation: Operation::Destroy,
                actor,
                reason: reason(query.reason)?,
                request_id,
            })
        },
    )
    .await
}

/// A tenant's spec and last commit, read from the state repo's head.
#[utoipa::path(get, path = "/v1/tenants/{name}", params(("name" = String, Path)),
    responses((status = 200, body = TenantView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn get_tenant(
    State(state): State<Shared>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<TenantView>, ApiError> {
    let name = authorize_tenant(&state, &caller, &name).await?;
    let hint = state
        .store
        .tenant(name.as_str())
        .await
        .ok()
        .flatten()
        .map(|r| r.last_commit);
    let st = state.clone();
    let n = name.to_string();
    let view = tokio::task::spawn_blocking(move || {
        crate::reader::tenant(
            &st.config.repo.local_path,
            &st.tracking_ref(),
            &n,
            hint.as_deref(),
        )
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    view.map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("tenant {:?} does not exist", name.as_str())))
}

/// The commits that changed a tenant (author, time, action, reason), newest first.
#[utoipa::path(get, path = "/v1/tenants/{name}/history", params(("name" = String, Path), HistoryQuery),
    responses((status = 200, body = [HistoryEntry]), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn history(
    State(state): State<Shared>,
    caller: Caller,
    Path(name): Path<String>,
    Query(query): Query<HistoryQuery>,
) -> Result<Json<Vec<HistoryEntry>>, ApiError> {
    let incarnation =
        authorize_incarnation(&state, &caller, &name, query.incarnation.as_deref()).await?;
    let name = incarnation.name.clone();
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::Invalid {
            status: StatusCode::BAD_REQUEST,
            field: Some("limit".into()),
            message: "must be 1 to 1000".into(),
        });
    }
    let st = state.clone();
    let n = name.to_string();
    let entries = tokio::task::spawn_blocking(move || {
        crate::reader::history(
            &st.config.repo.local_path,
            &st.tracking_ref(),
            &n,
            incarnation.uid.as_deref(),
            limit,
        )
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    if entries.is_empty() {
        return Err(ApiError::NotFound(format!(
            "tenant {:?} has no history",
            name.as_str()
        )));
    }
    Ok(Json(entries))
}

/// Liveness: the process serves requests.
#[utoipa::path(get, path = "/healthz", responses((status = 200)))]
async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: the database answers and the state repo's remote can be reached.
#[utoipa::path(get, path = "/readyz", responses((status = 200), (status = 503, body = ErrorBody)))]
async fn readyz(State(state): State<Shared>) -> Result<&'static str, ApiError> {
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
async fn metrics_endpoint(State(state): State<Shared>) -> Response {
    if let Ok((pending, _)) = state.store.outbox_counts().await {
        metrics::gauge!("api_outbox_pending").set(pending as f64);
    }
    metrics::gauge!("api_remote_reachable").set(if state.writer.remote_ok() { 1.0 } else { 0.0 });
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

#[derive(OpenApi)]
#[openapi(
    info(title = "openclaw-cloud api", description = "Tenant lifecycle as GitOps commits. See docs/api.md."),
    paths(provision, update_settings, suspend, reactivate, resize, rotate_proxy_token, destroy, get_tenant, history, healthz, readyz, metrics_endpoint,
        sessions::list_tenants, sessions::telegram_login, sessions::telegram_callback, sessions::dev_login, sessions::refresh, sessions::logout,
        sessions::logout_all, sessions::me, sessions::update_me, sessions::jwks),
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

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    let mut doc = ApiDoc::openapi();
    doc.merge(crate::usage::UsageDoc::openapi());
    Json(doc)
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
    metrics::counter!("api_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!("api_http_request_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

async fn fallback() -> ApiError {
    ApiError::NotFound("no such endpoint; see /openapi.json".into())
}

/// The router with every layer.
pub fn router(state: Shared) -> Router {
    let x_request_id = header::HeaderName::from_static("x-request-id");
    Router::new()
        .route("/v1/tenants", post(provision).get(sessions::list_tenants))
        .route("/v1/auth/telegram", post(sessions::telegram_login))
        .route("/v1/auth/telegram/callback", get(sessions::telegram_callback))
        .route("/v1/auth/dev-login", post(sessions::dev_login))
        .route("/v1/auth/refresh", post(sessions::refresh))
        .route("/v1/auth/logout", post(sessions::logout))
        .route("/v1/auth/logout-all", post(sessions::logout_all))
        .route("/v1/me", get(sessions::me).patch(sessions::update_me))
        .route("/.well-known/jwks.json", get(sessions::jwks))
        .route("/v1/tenants/{name}", get(get_tenant).delete(destroy))
        .route("/v1/tenants/{name}/settings", patch(update_settings))
        .route("/v1/tenants/{name}/suspend", post(suspend))
        .route("/v1/tenants/{name}/reactivate", post(reactivate))
        .route("/v1/tenants/{name}/resize", post(resize))
        .route("/v1/tenants/{name}/rotate-proxy-token", post(rotate_proxy_token))
        .route("/v1/tenants/{name}/history", get(history))
        .route("/openapi.json", get(openapi))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_endpoint))
        .merge(crate::usage::routes())
        .merge(crate::bot::routes())
        .merge(crate::dev_routes::routes(state.config.dev_mode))
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
