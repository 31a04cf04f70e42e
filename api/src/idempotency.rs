//! `Idempotency-Key`: a retried request with the same key, from the same caller, for the same
//! method, path and body gets the first answer again (header `Idempotent-Replayed: true`) and
//! changes nothing; the same key for another request is a 422, and a key whose first request is
//! still running a 409. The stored answers are written by the writer with the change they answer
//! (see [`crate::writer`]), so a crash cannot store one without the other. [`submit`] is how a
//! route module hands a change to the writer through it.

use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use sha2::{Digest, Sha256};

use crate::http::extract::request_id;
use crate::http::{check_write_limit, ApiError, Caller, Shared};
use crate::tenant_ops::Prepared;
use crate::writer::IdempotencyKey;

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

/// Runs a change through the caller's write budget, idempotency and the writer: checks the
/// budget, answers a replay from the stored response, otherwise makes the change with `make`
/// (given the request id) and answers the writer's response with its status.
pub async fn submit<P: Into<Prepared>>(
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
    let prepared = make(request_id(headers)).await?.into();
    let response = crate::tenant_ops::apply(state, prepared, key).await?;
    let status = StatusCode::from_u16(response.status()).unwrap_or(StatusCode::OK);
    Ok((status, Json(response)).into_response())
}
