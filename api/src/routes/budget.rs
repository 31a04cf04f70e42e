//! The budget feed's endpoint (`GET /internal/budget`, docs/budget-feed.md) for the token
//! proxies: the prebuilt answer of [`crate::budget`], with `ETag` and `If-None-Match`.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::budget::FeedBody;
use crate::http::{ApiError, ErrorBody, ProxyCaller, Shared};

/// The budget feed's route.
pub fn routes() -> Router<Shared> {
    Router::new().route("/internal/budget", get(budget_feed))
}

fn matches(if_none_match: &HeaderValue, etag: &str) -> bool {
    if_none_match.to_str().is_ok_and(|list| {
        list.split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || tag.trim_start_matches("W/").as_bytes() == etag.as_bytes())
    })
}

/// Per tenant: billable tokens used this UTC month, the monthly budget and its state
/// (docs/budget-feed.md). Answered from memory; supports `If-None-Match`.
#[utoipa::path(get, path = "/internal/budget",
    responses((status = 200, body = FeedBody), (status = 304, description = "unchanged since the ETag sent in If-None-Match"),
        (status = 401, body = ErrorBody), (status = 503, body = ErrorBody, description = "the first feed is still being built")),
    security(("bearer" = [])))]
pub async fn budget_feed(
    State(state): State<Shared>,
    _proxy: ProxyCaller,
    headers: HeaderMap,
) -> Response {
    let Some(snapshot) = state.ledger.feed.current() else {
        return ApiError::Unavailable("the budget feed is being built; retry shortly".into())
            .into_response();
    };
    let Ok(etag) = HeaderValue::from_str(&snapshot.etag) else {
        return ApiError::Internal("the budget feed's ETag is not a header value".into())
            .into_response();
    };
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| matches(v, &snapshot.etag))
    {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::ETAG, etag),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        snapshot.body.clone(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_takes_lists_weak_tags_and_the_wildcard() {
        let etag = "\"0123abcd\"";
        let tag = |v: &'static str| HeaderValue::from_static(v);
        assert!(matches(&tag("\"0123abcd\""), etag));
        assert!(matches(&tag("W/\"0123abcd\""), etag));
        assert!(matches(&tag("\"other\", \"0123abcd\""), etag));
        assert!(matches(&tag("*"), etag));
        assert!(!matches(&tag("\"x\""), etag));
        assert!(!matches(&tag("0123abcd"), etag));
    }
}
