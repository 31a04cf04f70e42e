//! Connection calls: `/connections/<provider>/<path>` relayed to Nango's `/proxy/<path>`.
//!
//! This module owns the rule that a tenant reaches only its own connections: the Connection-Id and
//! Provider-Config-Key come from the tenant's table entry, never from the caller, and the platform's Nango
//! secret key is added here and nowhere else. Caller headers are relayed from an allowlist, so a caller
//! cannot smuggle its own Connection-Id.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use http_body_util::BodyExt;

use crate::api_error::{ApiError, ErrorKind, Flavor};
use crate::app::{presented_token, App};
use crate::llm::{send_upstream, upstream_request};
use crate::table::Provider;

const RELAYED_REQUEST_HEADERS: &[HeaderName] = &[
    header::CONTENT_TYPE,
    header::ACCEPT,
    header::USER_AGENT,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
];

const RELAYED_RESPONSE_HEADERS: &[HeaderName] = &[
    header::CONTENT_TYPE,
    header::CONTENT_DISPOSITION,
    header::CACHE_CONTROL,
    header::ETAG,
    header::LAST_MODIFIED,
    header::LINK,
    header::RETRY_AFTER,
];

pub async fn forward(
    State(app): State<Arc<App>>,
    Path((provider, _decoded)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let resp = match relay(&app, &provider, method, &uri, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.render(Flavor::OpenAi),
    };
    app.metrics
        .requests
        .with_label_values(&["connections", resp.status().as_str()])
        .inc();
    resp
}

async fn relay(
    app: &App,
    provider: &str,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let tenant = app.authenticate(presented_token(headers, true))?;
    let not_connected = || {
        ApiError::new(
            ErrorKind::NotFound,
            format!(
                "tenant {} has no {provider} connection; connect {provider} from the dashboard first",
                tenant.name
            ),
        )
    };
    let connection = Provider::parse(provider)
        .and_then(|p| tenant.connection(p))
        .ok_or_else(not_connected)?;
    let Some(nango) = &app.nango else {
        return Err(ApiError::new(
            ErrorKind::Unavailable,
            "connection calls are not configured on this proxy",
        ));
    };
    let admission = app.limiters.admit_call(&tenant).map_err(|r| {
        app.metrics
            .rejections
            .with_label_values(&[r.reason()])
            .inc();
        ApiError::new(
            ErrorKind::RateLimitRequests,
            "rate limit reached for this tenant",
        )
        .header("retry-after", 1)
    })?;
    let body = app.read_body(headers, body).await?;
    let path = relayed_path(uri.path(), provider)?;
    let mut url = format!("{}/proxy/{path}", nango.base);
    if let Some(q) = uri.query() {
        url.push('?');
        url.push_str(q);
    }
    let uri: Uri = url.parse().map_err(|_| {
        ApiError::new(
            ErrorKind::InvalidRequest,
            "the connection path or query is not a valid URL",
        )
    })?;
    let mut out_headers = HeaderMap::with_capacity(RELAYED_REQUEST_HEADERS.len() + 4);
    out_headers.insert(header::AUTHORIZATION, nango.auth.clone());
    out_headers.insert(
        HeaderName::from_static("connection-id"),
        header_value(&connection.connection_id)?,
    );
    out_headers.insert(
        HeaderName::from_static("provider-config-key"),
        header_value(&connection.provider_config_key)?,
    );
    for name in RELAYED_REQUEST_HEADERS {
        if let Some(v) = headers.get(name) {
            out_headers.insert(name.clone(), v.clone());
        }
    }
    // What reqwest sent when the caller named no media type.
    if !out_headers.contains_key(header::ACCEPT) {
        out_headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
    }
    let req = upstream_request(method, uri, out_headers, body);
    let slot = app.upstream_slot().await?;
    let resp = send_upstream(app, req, "connections").await?;
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    if status.is_server_error() {
        app.metrics
            .upstream_errors
            .with_label_values(&["connections", "status_5xx"])
            .inc();
    }
    let mut out = HeaderMap::new();
    for name in RELAYED_RESPONSE_HEADERS {
        if let Some(v) = resp.headers().get(name) {
            out.insert(name.clone(), v.clone());
        }
    }
    // The slot and the tenant's concurrency slot are held until the body is relayed.
    let body = resp.into_body().map_frame(move |frame| {
        let _held = (&slot, &admission);
        frame
    });
    let mut response = Response::new(Body::new(body));
    *response.status_mut() = status;
    *response.headers_mut() = out;
    Ok(response)
}

/// A connection id or provider config key from the table, as a header value.
fn header_value(v: &str) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(v).map_err(|_| {
        ApiError::new(
            ErrorKind::BadGateway,
            "this tenant's connection entry cannot be sent to Nango as a header",
        )
    })
}

/// The part of the raw (still percent-encoded) request path after `/connections/<provider>/`, refused if any
/// segment is a dot segment. URL normalization resolves `..` and `%2e%2e` alike, so without this check
/// `/connections/github/%2e%2e/connection` would reach Nango's own API with the platform's secret key.
fn relayed_path<'a>(raw: &'a str, provider: &str) -> Result<&'a str, ApiError> {
    let rest = raw
        .strip_prefix("/connections/")
        .and_then(|r| r.strip_prefix(provider))
        .and_then(|r| r.strip_prefix('/'))
        .unwrap_or_default();
    // Decode the characters that make up dot segments (and encoded slashes, which a later hop may decode)
    // before looking for them.
    let decoded = rest
        .to_ascii_lowercase()
        .replace("%2e", ".")
        .replace("%2f", "/")
        .replace("%5c", "/")
        .replace('\\', "/");
    let dot_segment = decoded.split('/').any(|seg| seg == "." || seg == "..");
    if dot_segment {
        return Err(ApiError::new(
            ErrorKind::InvalidRequest,
            "connection paths must not contain '.' or '..' segments",
        ));
    }
    Ok(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_refused_and_encoding_is_kept() {
        assert_eq!(
            relayed_path("/connections/github/repos/a/b%2Fc/contents", "github").unwrap(),
            "repos/a/b%2Fc/contents"
        );
        for bad in [
            "/connections/github/../connection",
            "/connections/github/a/%2e%2e/%2E%2E/connection",
            "/connections/github/%2e/x",
            "/connections/github/x/..",
            "/connections/github/..%2F..%2Fconnection",
            "/connections/github/..%5cconnection",
        ] {
            assert!(relayed_path(bad, "github").is_err(), "{bad}");
        }
        assert_eq!(
            relayed_path("/connections/github/a..b/.c", "github").unwrap(),
            "a..b/.c"
        );
    }
}
