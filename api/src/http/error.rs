//! The error answer of every endpoint: [`ApiError`] and its JSON body
//! (`{"error": {"code", "message", "field"?}}`), the conversions from the writer's and the
//! lifecycle's errors, and the two middlewares that keep every answer in that shape
//! ([`json_errors`]) and refuse a request id that could not be logged as it is
//! ([`check_request_id`]). Messages never echo a secret.

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::lifecycle::ChangeError;
use crate::writer::WriteError;

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

    /// A 400 naming the request field (or parameter, or header) at fault.
    pub fn bad_request(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::Invalid {
            status: StatusCode::BAD_REQUEST,
            field: Some(field.to_owned()),
            message: message.into(),
        }
    }

    pub(crate) fn field(field: &str, message: impl Into<String>) -> ApiError {
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn answer(error: ApiError) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
        let response = error.into_response();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, headers, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn every_error_is_a_json_body_with_its_status_and_code() {
        let cases = [
            (
                ApiError::field("owner.email", "missing"),
                422,
                "invalid_request",
            ),
            (
                ApiError::bad_request("limit", "must be 1 to 1000"),
                400,
                "invalid_request",
            ),
            (ApiError::Unauthorized, 401, "unauthorized"),
            (
                ApiError::Unauthenticated("expired".into()),
                401,
                "unauthorized",
            ),
            (ApiError::Forbidden("csrf".into()), 403, "forbidden"),
            (
                ApiError::NotFound("tenant \"x\" does not exist".into()),
                404,
                "not_found",
            ),
            (ApiError::Conflict("exists".into()), 409, "conflict"),
            (
                ApiError::TooManyRequests(std::time::Duration::from_millis(1500)),
                429,
                "rate_limited",
            ),
            (
                ApiError::TooManyChanges(std::time::Duration::from_secs(3)),
                429,
                "rate_limited",
            ),
            (ApiError::Unavailable("database".into()), 503, "unavailable"),
            (ApiError::Internal("secret detail".into()), 500, "internal"),
        ];
        for (error, status, code) in cases {
            let (got, headers, body) = answer(error).await;
            assert_eq!(got.as_u16(), status, "{body}");
            assert_eq!(body["error"]["code"], code);
            assert!(body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()));
            assert_eq!(
                headers[header::CONTENT_TYPE],
                "application/json",
                "{status}"
            );
            match status {
                401 => assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer"),
                503 => assert_eq!(headers[header::RETRY_AFTER], "5"),
                _ => {}
            }
        }
    }

    #[tokio::test]
    async fn details_stay_where_they_belong() {
        // An internal error's text goes to the log only.
        let (_, _, body) = answer(ApiError::Internal("password=hunter2".into())).await;
        assert!(!body.to_string().contains("hunter2"), "{body}");
        // A field error names its field; the others carry none.
        let (_, _, body) = answer(ApiError::field("allowFrom[2]", "not an id")).await;
        assert_eq!(body["error"]["field"], "allowFrom[2]");
        let (_, _, body) = answer(ApiError::NotFound("gone".into())).await;
        assert!(body["error"].get("field").is_none(), "{body}");
        // Retry-After rounds up to whole seconds, at least one.
        let (_, headers, _) = answer(ApiError::TooManyRequests(std::time::Duration::from_millis(
            1500,
        )))
        .await;
        assert_eq!(headers[header::RETRY_AFTER], "2");
        let (_, headers, _) = answer(ApiError::TooManyChanges(std::time::Duration::ZERO)).await;
        assert_eq!(headers[header::RETRY_AFTER], "1");
    }

    #[tokio::test]
    async fn the_writers_and_the_lifecycles_errors_map_to_their_answers() {
        let cases = [
            (ApiError::from(ChangeError::NotFound("x".into())), 404),
            (ApiError::from(ChangeError::AlreadyExists("x".into())), 409),
            (
                ApiError::from(ChangeError::Invalid {
                    field: "tier".into(),
                    message: "unknown".into(),
                }),
                422,
            ),
            (
                ApiError::from(ChangeError::Forbidden("platform".into())),
                403,
            ),
            (ApiError::from(ChangeError::Repo("broken".into())), 409),
            (ApiError::from(WriteError::Busy), 503),
            (
                ApiError::from(WriteError::Unavailable("remote".into())),
                503,
            ),
            (ApiError::from(WriteError::Internal("x".into())), 500),
        ];
        for (error, status) in cases {
            assert_eq!(answer(error).await.0.as_u16(), status);
        }
    }
}
