//! `Idempotency-Key`: a retried request with the same key, from the same caller, for the same
//! method, path and body gets the first answer again (header `Idempotent-Replayed: true`) and
//! changes nothing; the same key for another request is a 422, and a key whose first request is
//! still running a 409. The stored answers are written by the writer with the change they answer
//! (see [`crate::writer`]), so a crash cannot store one without the other. [`submit_change`] is
//! how a change reaches the writer through it, answering the typed [`Answer`] (the platform bot
//! uses it as it is); [`submit`] turns that answer into the HTTP response of a route module. The
//! request a key is bound to is named by an [`Endpoint`], which builds its method and path.

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use compiler::spec::TenantName;
use sha2::{Digest, Sha256};

use crate::http::extract::request_id;
use crate::http::{check_write_limit, ApiError, Caller, Shared};
use crate::tenant_ops::Prepared;
use crate::writer::{ChangeResponse, IdempotencyKey};

/// The change endpoint a request is made to, by tenant name: the method and path an
/// Idempotency-Key is bound to, built here for the route modules and the platform bot alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint<'a> {
    Provision,
    Settings(&'a TenantName),
    Suspend(&'a TenantName),
    Reactivate(&'a TenantName),
    Resize(&'a TenantName),
    RotateProxyToken(&'a TenantName),
    Destroy(&'a TenantName),
}

impl Endpoint<'_> {
    pub fn method(self) -> Method {
        match self {
            Endpoint::Provision
            | Endpoint::Suspend(_)
            | Endpoint::Reactivate(_)
            | Endpoint::Resize(_)
            | Endpoint::RotateProxyToken(_) => Method::POST,
            Endpoint::Settings(_) => Method::PATCH,
            Endpoint::Destroy(_) => Method::DELETE,
        }
    }

    /// The request path (`/v1/tenants/{name}/suspend`).
    pub fn path(self) -> String {
        let (name, verb) = match self {
            Endpoint::Provision => return "/v1/tenants".into(),
            Endpoint::Destroy(name) => return format!("/v1/tenants/{}", name.as_str()),
            Endpoint::Settings(name) => (name, "settings"),
            Endpoint::Suspend(name) => (name, "suspend"),
            Endpoint::Reactivate(name) => (name, "reactivate"),
            Endpoint::Resize(name) => (name, "resize"),
            Endpoint::RotateProxyToken(name) => (name, "rotate-proxy-token"),
        };
        format!("/v1/tenants/{}/{verb}", name.as_str())
    }
}

/// The answer to a change: the writer's response, or the first answer again for a replayed
/// Idempotency-Key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub change: ChangeResponse,
    /// Whether this is a stored answer given again (nothing was changed this time).
    pub replayed: bool,
}

impl IntoResponse for Answer {
    /// The change's status (201, 202 or 200) with its JSON; `Idempotent-Replayed: true` on a
    /// replay.
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.change.status()).unwrap_or(StatusCode::OK);
        let mut response = (status, Json(self.change)).into_response();
        if self.replayed {
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
        }
        response
    }
}

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
    Replay(ChangeResponse),
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
        // The writer stores the change's response as it answered it (with its status).
        let change: ChangeResponse = serde_json::from_str(&stored.body).map_err(|e| {
            ApiError::Internal(format!("the stored answer to this Idempotency-Key: {e}"))
        })?;
        return Ok(Idempotency::Replay(change));
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

/// Runs a change through the caller's write budget, idempotency and the writer: checks the
/// budget, answers a replay from the stored response, otherwise makes the change with `make`
/// (given the request id) and answers the writer's response.
pub async fn submit_change<P: Into<Prepared>>(
    state: &Shared,
    headers: &HeaderMap,
    endpoint: Endpoint<'_>,
    body: &[u8],
    caller: &Caller,
    make: impl AsyncFnOnce(String) -> Result<P, ApiError>,
) -> Result<Answer, ApiError> {
    check_write_limit(state, caller)?;
    let scope = caller.scope();
    let method = endpoint.method();
    let path = endpoint.path();
    let (key, _guard) = match idempotency(state, headers, &scope, &method, &path, body).await? {
        Idempotency::Replay(change) => {
            return Ok(Answer {
                change,
                replayed: true,
            })
        }
        Idempotency::None => (None, None),
        Idempotency::Fresh(key, guard) => (Some(key), Some(guard)),
    };
    let prepared = make(request_id(headers)).await?.into();
    let change = crate::tenant_ops::apply(state, prepared, key).await?;
    Ok(Answer {
        change,
        replayed: false,
    })
}

/// [`submit_change`] answered as HTTP: the change's status with its JSON.
pub async fn submit<P: Into<Prepared>>(
    state: &Shared,
    headers: &HeaderMap,
    endpoint: Endpoint<'_>,
    body: &[u8],
    caller: &Caller,
    make: impl AsyncFnOnce(String) -> Result<P, ApiError>,
) -> Result<Response, ApiError> {
    submit_change(state, headers, endpoint, body, caller, make)
        .await
        .map(IntoResponse::into_response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_the_routes_paths() {
        let acme = TenantName::parse("acme".to_owned()).unwrap();
        let cases = [
            (Endpoint::Provision, Method::POST, "/v1/tenants"),
            (
                Endpoint::Settings(&acme),
                Method::PATCH,
                "/v1/tenants/acme/settings",
            ),
            (
                Endpoint::Suspend(&acme),
                Method::POST,
                "/v1/tenants/acme/suspend",
            ),
            (
                Endpoint::Reactivate(&acme),
                Method::POST,
                "/v1/tenants/acme/reactivate",
            ),
            (
                Endpoint::Resize(&acme),
                Method::POST,
                "/v1/tenants/acme/resize",
            ),
            (
                Endpoint::RotateProxyToken(&acme),
                Method::POST,
                "/v1/tenants/acme/rotate-proxy-token",
            ),
            (Endpoint::Destroy(&acme), Method::DELETE, "/v1/tenants/acme"),
        ];
        for (endpoint, method, path) in cases {
            assert_eq!(endpoint.method(), method, "{endpoint:?}");
            assert_eq!(endpoint.path(), path, "{endpoint:?}");
        }
    }
}
