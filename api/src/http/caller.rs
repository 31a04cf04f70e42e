//! The callers: who sent a request, from the credentials it carries. [`Caller`] is an admin
//! (admin API token, or a customer listed in `auth.admin_telegram_ids`) or a customer (access
//! token as a bearer or in the session cookie, with the CSRF checks a cookie needs);
//! [`ProxyCaller`] is a token proxy holding one of `proxy_credentials`. Also the per-customer
//! budget of writes ([`check_write_limit`]) and the role a caller acts in ([`role`]).
//! Whether a caller may act on a tenant is [`super::authorize`].

use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{ApiError, AppState, ErrorBody, ErrorDetail, Shared};
use crate::lifecycle::{Actor, Role};
use crate::store::Customer;

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
    pub fn scope(&self) -> String {
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
        // Several extractors of one request may ask (a handler's `Caller` and its
        // `AuthorizedTenant`): resolve once.
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        let caller = resolve(parts, state).await?;
        parts.extensions.insert(caller.clone());
        Ok(caller)
    }
}

/// Finds the caller of a request from its credentials (bearer token or session cookie).
async fn resolve(parts: &axum::http::request::Parts, state: &Shared) -> Result<Caller, ApiError> {
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

/// A caller holding one of the token proxy's credentials (never an admin token: the
/// configuration refuses a proxy credential that equals an admin token).
pub struct ProxyCaller;

impl axum::extract::FromRequestParts<Shared> for ProxyCaller {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &Shared,
    ) -> Result<Self, Response> {
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|token| <[u8; 32]>::from(Sha256::digest(token.trim().as_bytes())));
        if presented.is_some_and(|hash| state.ledger.knows_proxy_credential(&hash)) {
            return Ok(ProxyCaller);
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: "unauthorized".into(),
                message: "send the token proxy's credential as `Authorization: Bearer <credential>` (config: proxy_credentials)".into(),
                field: None,
            },
        };
        Err((StatusCode::UNAUTHORIZED, Json(body)).into_response())
    }
}

/// Takes one change from a customer's budget of writes (`auth.customer_writes_per_minute`);
/// admins are not limited.
pub fn check_write_limit(state: &AppState, caller: &Caller) -> Result<(), ApiError> {
    match (&caller.customer, caller.admin) {
        (Some(customer), false) => state
            .auth
            .write_limiter
            .check(customer.id.clone())
            .map_err(ApiError::TooManyChanges),
        _ => Ok(()),
    }
}

/// The role a caller acts in, for the rules that depend on it.
pub fn role(caller: &Caller) -> Role {
    if caller.admin {
        Role::Admin
    } else {
        Role::Customer
    }
}
