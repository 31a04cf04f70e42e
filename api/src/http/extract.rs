//! Extractors and parsers for what a request carries: JSON bodies whose errors name the field at
//! fault ([`JsonBody`], [`optional_body`]), the client's address behind trusted proxies
//! ([`ClientAddr`]), the request id, and the check of free text that reaches git or the database
//! ([`free_text`]). They answer [`ApiError`]s and change nothing.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use super::{ApiError, Shared, MAX_BODY_BYTES};

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

/// An optional JSON body: empty is fine, otherwise it must be JSON (media type and content).
pub fn optional_body<T: DeserializeOwned + Default>(
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

/// The request's id: the `X-Request-Id` it came with (checked by
/// [`super::error::check_request_id`]) or a new one.
pub fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// Refuses (422) free text that would reach git or the database with a control character (C0,
/// DEL, C1, among them NUL and CR), a line or paragraph separator, or a bidirectional override:
/// they can cut or forge commit messages and trailers, and hide text from a reader.
pub fn free_text(field: &str, text: &str) -> Result<(), ApiError> {
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

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Body {
        #[allow(dead_code)]
        allow_from: Option<Vec<i64>>,
        #[allow(dead_code)]
        telegram_bot_token: Option<String>,
    }

    fn field(error: ApiError) -> (StatusCode, Option<String>, String) {
        match error {
            ApiError::Invalid {
                status,
                field,
                message,
            } => (status, field, message),
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    fn headers(content_type: Option<&'static str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(v) = content_type {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(v));
        }
        headers
    }

    #[test]
    fn json_media_types_are_exact() {
        for ok in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
        ] {
            assert!(require_json(&headers(Some(ok)), "body").is_ok(), "{ok}");
        }
        for bad in [
            None,
            Some("text/plain"),
            Some("application/jsonx"),
            Some("application/json-seq"),
        ] {
            let (status, _, message) = field(require_json(&headers(bad), "batch").unwrap_err());
            assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{bad:?}");
            assert!(message.contains("batch"), "{message}");
        }
    }

    #[test]
    fn json_errors_name_the_field_at_fault() {
        let (status, at, _) = field(parse_json::<Body>(br#"{"allowFrom": [1, "x"]}"#).unwrap_err());
        assert_eq!(
            (status, at.as_deref()),
            (StatusCode::BAD_REQUEST, Some("allowFrom[1]"))
        );
        let (_, at, _) = field(parse_json::<Body>(br#"{"nope": 1}"#).unwrap_err());
        assert_eq!(at.as_deref(), Some("nope"));
        let (_, at, _) = field(parse_json::<Body>(b"{").unwrap_err());
        assert_eq!(at.as_deref(), Some("body"));
        // A bot token of the wrong type is not echoed back.
        let (_, at, message) =
            field(parse_json::<Body>(br#"{"telegramBotToken": 123456789}"#).unwrap_err());
        assert_eq!(at.as_deref(), Some("telegramBotToken"));
        assert!(!message.contains("123456789"), "{message}");
    }

    #[test]
    fn an_optional_body_may_be_empty_but_not_another_media_type() {
        let empty = Bytes::new();
        assert!(optional_body::<Body>(&headers(None), &empty).is_ok());
        let spaces = Bytes::from_static(b"  \n");
        assert!(optional_body::<Body>(&headers(Some("application/json")), &spaces).is_ok());
        let json = Bytes::from_static(br#"{"allowFrom": [1]}"#);
        let (status, _, _) =
            field(optional_body::<Body>(&headers(Some("text/plain")), &json).unwrap_err());
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(optional_body::<Body>(&headers(Some("application/json")), &json).is_ok());
    }

    #[test]
    fn free_text_refuses_controls_separators_and_overrides() {
        assert!(free_text("reason", "moving to the pro tier, as agreed").is_ok());
        for bad in [
            "a\nb",
            "a\rb",
            "nul\0",
            "\u{2028}",
            "\u{202E}evil",
            "\u{7f}",
        ] {
            let (status, at, _) = field(free_text("reason", bad).unwrap_err());
            assert_eq!(
                (status, at.as_deref()),
                (StatusCode::UNPROCESSABLE_ENTITY, Some("reason"))
            );
        }
    }

    #[test]
    fn the_request_id_is_the_clients_or_a_new_one() {
        let mut sent = HeaderMap::new();
        sent.insert("x-request-id", HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&sent), "abc-123");
        let made = request_id(&HeaderMap::new());
        assert_eq!(made.len(), 36);
        assert_ne!(made, request_id(&HeaderMap::new()));
    }
}
