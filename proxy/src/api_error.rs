//! Errors the proxy itself answers with, rendered in the caller's API format.
//!
//! This module owns the mapping from a failure (bad token, limit, upstream fault...) to a status, headers
//! and a body shaped like the API the caller speaks: OpenAI's `{"error": {...}}` for chat completions and
//! connection calls, Anthropic's `{"type": "error", "error": {...}}` for messages. Messages never contain
//! tokens, keys or request contents.

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::metering::ApiKind;

/// The wire format of a caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    OpenAi,
    Anthropic,
}

impl From<ApiKind> for Flavor {
    fn from(k: ApiKind) -> Self {
        match k {
            ApiKind::OpenAi => Flavor::OpenAi,
            ApiKind::Anthropic => Flavor::Anthropic,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidRequest,
    Authentication,
    Permission,
    NotFound,
    TooLarge,
    RateLimitRequests,
    RateLimitTokens,
    InsufficientQuota,
    BadGateway,
    Timeout,
    Unavailable,
}

impl ErrorKind {
    fn status(self) -> StatusCode {
        match self {
            ErrorKind::InvalidRequest => StatusCode::BAD_REQUEST,
            ErrorKind::Authentication => StatusCode::UNAUTHORIZED,
            ErrorKind::Permission => StatusCode::FORBIDDEN,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::RateLimitRequests
            | ErrorKind::RateLimitTokens
            | ErrorKind::InsufficientQuota => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::BadGateway => StatusCode::BAD_GATEWAY,
            ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// OpenAI's (type, code).
    fn openai(self) -> (&'static str, &'static str) {
        match self {
            ErrorKind::InvalidRequest => ("invalid_request_error", "invalid_request"),
            ErrorKind::Authentication => ("invalid_request_error", "invalid_api_key"),
            ErrorKind::Permission => ("permission_error", "tenant_suspended"),
            ErrorKind::NotFound => ("invalid_request_error", "not_found"),
            ErrorKind::TooLarge => ("invalid_request_error", "request_too_large"),
            ErrorKind::RateLimitRequests => ("requests", "rate_limit_exceeded"),
            ErrorKind::RateLimitTokens => ("tokens", "rate_limit_exceeded"),
            ErrorKind::InsufficientQuota => ("insufficient_quota", "insufficient_quota"),
            ErrorKind::BadGateway => ("api_error", "bad_gateway"),
            ErrorKind::Timeout => ("api_error", "upstream_timeout"),
            ErrorKind::Unavailable => ("api_error", "unavailable"),
        }
    }

    /// Anthropic's error type.
    fn anthropic(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request_error",
            ErrorKind::Authentication => "authentication_error",
            ErrorKind::Permission => "permission_error",
            ErrorKind::NotFound => "not_found_error",
            ErrorKind::TooLarge => "request_too_large",
            ErrorKind::RateLimitRequests
            | ErrorKind::RateLimitTokens
            | ErrorKind::InsufficientQuota => "rate_limit_error",
            ErrorKind::BadGateway | ErrorKind::Unavailable => "api_error",
            ErrorKind::Timeout => "timeout_error",
        }
    }
}

/// A failure answered by the proxy.
#[derive(Debug)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    pub fn header(mut self, name: &'static str, value: impl ToString) -> Self {
        if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
            self.headers.push((HeaderName::from_static(name), v));
        }
        self
    }

    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }

    pub fn render(self, flavor: Flavor) -> Response {
        let body = match flavor {
            Flavor::OpenAi => {
                let (ty, code) = self.kind.openai();
                json!({"error": {"message": self.message, "type": ty, "param": null, "code": code}})
            }
            Flavor::Anthropic => json!({
                "type": "error",
                "error": {"type": self.kind.anthropic(), "message": self.message}
            }),
        };
        let mut resp = (self.kind.status(), axum::Json(body)).into_response();
        for (name, value) in self.headers {
            resp.headers_mut().insert(name, value);
        }
        resp
    }
}

/// Whether an upstream error body already has the caller's shape (then it is passed through untouched).
pub fn is_in_flavor(flavor: Flavor, body: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    match flavor {
        Flavor::OpenAi => v.get("error").is_some_and(|e| e.get("message").is_some()),
        Flavor::Anthropic => {
            v.get("type").and_then(|t| t.as_str()) == Some("error")
                && v.get("error").is_some_and(|e| e.get("type").is_some())
        }
    }
}

/// Wraps an upstream error whose body is not in the caller's format, keeping its status.
pub fn wrap_upstream(flavor: Flavor, status: StatusCode) -> Response {
    let message = format!("the upstream answered {status} with a body the proxy could not relay");
    let mut resp = ApiError::new(
        if status.is_server_error() {
            ErrorKind::BadGateway
        } else {
            ErrorKind::InvalidRequest
        },
        message,
    )
    .render(flavor);
    *resp.status_mut() = status;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let r = ApiError::new(ErrorKind::InsufficientQuota, "spent").render(Flavor::OpenAi);
        assert_eq!(r.status(), 429);
        assert!(is_in_flavor(
            Flavor::OpenAi,
            br#"{"error":{"message":"m","type":"t","code":null}}"#
        ));
        assert!(is_in_flavor(
            Flavor::Anthropic,
            br#"{"type":"error","error":{"type":"overloaded_error","message":"m"}}"#
        ));
        assert!(!is_in_flavor(Flavor::Anthropic, b"<html>502</html>"));
        assert!(!is_in_flavor(
            Flavor::Anthropic,
            br#"{"error":{"message":"m","type":"t"}}"#
        ));
    }
}
