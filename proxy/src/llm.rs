//! LLM calls: OpenAI chat completions, Anthropic messages and the model list.
//!
//! This module owns one request's life: authenticate, read and check the body, admit it against the
//! tenant's limits, forward it with the platform key, and stream the answer back through a [`MeteredBody`]
//! that counts tokens as they pass and records exactly one usage event when the response ends, fails, or is
//! abandoned by the client. Nothing is spawned per request: the body is driven by the client's reads, so a
//! slow client slows the upstream read (back-pressure) and a vanished client drops everything at once.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, SecondsFormat, Utc};
use http_body::Frame;
use http_body_util::Full;
use serde_json::Value;

use crate::api_error::{is_in_flavor, wrap_upstream, ApiError, ErrorKind, Flavor};
use crate::app::{presented_token, App, UpstreamTarget};
use crate::limits::{Admission, Headroom, Rejection, WARNING_RATIO};
use crate::metering::{read_body, ApiKind, Reading, StreamMeter};
use crate::table::Tenant;
use crate::upstream::{TimedBody, UpstreamRequest, UpstreamResponse};
use crate::usage::UsageEvent;

/// Request headers relayed to the upstream (Kimi Code checks the User-Agent).
const RELAYED_REQUEST_HEADERS: &[&str] = &[
    "user-agent",
    "accept",
    "anthropic-version",
    "anthropic-beta",
    "openai-beta",
    "x-request-id",
];

/// Response headers relayed to the caller.
const RELAYED_RESPONSE_HEADERS: &[&str] = &[
    "content-type",
    "cache-control",
    "retry-after",
    "x-request-id",
    "request-id",
];

/// Largest upstream error body relayed; larger ones are replaced by a proxy error.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Largest non-streaming body kept aside for metering (the body itself is streamed regardless).
const MAX_METERED_BODY: usize = 16 * 1024 * 1024;

pub const BUDGET_WARNING_HEADER: &str = "x-openclaw-budget-warning";

pub async fn chat_completions(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(app, ApiKind::OpenAi, headers, body).await
}

pub async fn messages(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    handle(app, ApiKind::Anthropic, headers, body).await
}

fn route(api: ApiKind) -> &'static str {
    match api {
        ApiKind::OpenAi => "chat_completions",
        ApiKind::Anthropic => "messages",
    }
}

async fn handle(app: Arc<App>, api: ApiKind, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let flavor = Flavor::from(api);
    match prepare(&app, api, &headers, body).await {
        Ok(prepared) => forward(app, api, &headers, prepared, started).await,
        Err(e) => {
            app.metrics
                .requests
                .with_label_values(&[route(api), e.status().as_str()])
                .inc();
            e.render(flavor)
        }
    }
}

/// A request that passed every check and holds its share of the tenant's limits.
struct Prepared {
    tenant: Arc<Tenant>,
    model: String,
    stream: bool,
    strip_usage_chunk: bool,
    body: Bytes,
    admission: Admission,
}

async fn prepare(
    app: &App,
    api: ApiKind,
    headers: &HeaderMap,
    body: Body,
) -> Result<Prepared, ApiError> {
    let tenant = app.authenticate(presented_token(headers, api == ApiKind::Anthropic))?;
    let raw = app.read_body(headers, body).await?;
    let peek = RequestPeek::parse(&raw)?;
    let model = match peek.model {
        Some(Value::String(m)) if !m.is_empty() => m,
        _ => {
            return Err(ApiError::new(
                ErrorKind::InvalidRequest,
                "`model` is required and must be a non-empty string",
            ))
        }
    };
    let stream = match peek.stream {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(_) => {
            return Err(ApiError::new(
                ErrorKind::InvalidRequest,
                "`stream` must be a boolean",
            ))
        }
    };
    let max_output = [peek.max_tokens, peek.max_completion_tokens]
        .iter()
        .find_map(|v| v.as_ref().and_then(Value::as_u64))
        .unwrap_or(u64::from(app.default_output_estimate));
    // About four bytes per input token is a deliberate overestimate for JSON-wrapped text.
    let estimate = raw.len() as u64 / 4 + max_output;

    let asked_for_usage = peek
        .stream_options
        .as_ref()
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        == Some(true);
    let strip_usage_chunk = api == ApiKind::OpenAi && stream && !asked_for_usage;
    let body = if strip_usage_chunk {
        inject_include_usage(&raw, peek.stream_options.is_some())?
    } else {
        raw
    };

    let upstream_configured = match api {
        ApiKind::OpenAi => app.openai.is_some(),
        ApiKind::Anthropic => app.anthropic.is_some(),
    };
    if !upstream_configured {
        let hint = match (&app.unconfigured_hint, api) {
            (Some(hint), _) => hint.as_str(),
            (None, ApiKind::OpenAi) => "set upstreams.openai in the proxy's configuration",
            (None, ApiKind::Anthropic) => "set upstreams.anthropic in the proxy's configuration",
        };
        return Err(ApiError::new(
            ErrorKind::BadGateway,
            format!(
                "this proxy has no {} upstream configured: {hint}",
                api.as_str()
            ),
        ));
    }

    let admission = app
        .limiters
        .admit(&tenant, estimate)
        .map_err(|r| rejection(app, api, r))?;
    Ok(Prepared {
        tenant,
        model,
        stream,
        strip_usage_chunk,
        body,
        admission,
    })
}

/// The few top-level fields the proxy reads. Everything else is skipped without being materialized, so a
/// large prompt costs one validating pass and no allocation.
#[derive(serde::Deserialize)]
struct RequestPeek {
    model: Option<Value>,
    stream: Option<Value>,
    /// `Some` whenever the key is present, `null` included.
    #[serde(default, deserialize_with = "present")]
    stream_options: Option<Value>,
    max_tokens: Option<Value>,
    max_completion_tokens: Option<Value>,
}

fn json_error(e: serde_json::Error) -> ApiError {
    // serde_json's messages give a position and a type, never the content.
    let message = if e.is_data() {
        "request body must be a JSON object".to_owned()
    } else {
        format!(
            "request body is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        )
    };
    ApiError::new(ErrorKind::InvalidRequest, message)
}

impl RequestPeek {
    fn parse(raw: &[u8]) -> Result<Self, ApiError> {
        // A derived struct would also accept a JSON array, field by position.
        if raw.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::new(
                ErrorKind::InvalidRequest,
                "request body must be a JSON object",
            ));
        }
        serde_json::from_slice(raw).map_err(json_error)
    }
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    <Value as serde::Deserialize>::deserialize(d).map(Some)
}

/// The member the proxy adds to a streaming OpenAI request whose client did not ask for usage.
const INCLUDE_USAGE: &[u8] = br#""stream_options":{"include_usage":true}"#;

/// Sets `stream_options.include_usage` so that the upstream reports usage at the end of the stream.
///
/// Without a `stream_options` member (the usual case) the member is spliced in after the opening brace and
/// the rest of the body is relayed byte for byte. Otherwise the body is decoded and re-encoded with the
/// member set.
fn inject_include_usage(raw: &[u8], has_stream_options: bool) -> Result<Bytes, ApiError> {
    if !has_stream_options {
        // RequestPeek::parse checked that the body is a JSON object.
        if let Some(open) = raw.iter().position(|b| !b.is_ascii_whitespace()) {
            let after = &raw[open + 1..];
            let empty = after.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'}');
            let mut out = BytesMut::with_capacity(raw.len() + INCLUDE_USAGE.len() + 1);
            out.extend_from_slice(&raw[..=open]);
            out.extend_from_slice(INCLUDE_USAGE);
            if !empty {
                out.extend_from_slice(b",");
            }
            out.extend_from_slice(after);
            return Ok(out.freeze());
        }
    }
    let mut value: serde_json::Map<String, Value> =
        serde_json::from_slice(raw).map_err(json_error)?;
    let opts = value
        .entry("stream_options")
        .or_insert_with(|| Value::Object(Default::default()));
    if !opts.is_object() {
        *opts = Value::Object(Default::default());
    }
    if let Some(o) = opts.as_object_mut() {
        o.insert("include_usage".into(), Value::Bool(true));
    }
    serde_json::to_vec(&value).map(Bytes::from).map_err(|_| {
        ApiError::new(
            ErrorKind::InvalidRequest,
            "request body could not be re-encoded",
        )
    })
}

fn rfc3339_in(d: std::time::Duration) -> String {
    (Utc::now() + chrono::Duration::from_std(d).unwrap_or_default())
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Turns a limiter refusal into a 429 with the caller's style of rate-limit headers.
fn rejection(app: &App, api: ApiKind, r: Rejection) -> ApiError {
    app.metrics
        .rejections
        .with_label_values(&[r.reason()])
        .inc();
    let secs = |d: std::time::Duration| d.as_secs_f64().ceil().max(1.0) as u64;
    match r {
        Rejection::Requests { limit, retry_after } => {
            let e = ApiError::new(
                ErrorKind::RateLimitRequests,
                format!(
                    "rate limit reached: {limit} requests per minute; retry after {} s",
                    secs(retry_after)
                ),
            )
            .header("retry-after", secs(retry_after));
            match api {
                ApiKind::OpenAi => e
                    .header("x-ratelimit-limit-requests", limit)
                    .header("x-ratelimit-remaining-requests", 0)
                    .header(
                        "x-ratelimit-reset-requests",
                        format!("{}s", secs(retry_after)),
                    ),
                ApiKind::Anthropic => e
                    .header("anthropic-ratelimit-requests-limit", limit)
                    .header("anthropic-ratelimit-requests-remaining", 0)
                    .header(
                        "anthropic-ratelimit-requests-reset",
                        rfc3339_in(retry_after),
                    ),
            }
        }
        Rejection::Tokens { limit, retry_after } => {
            let e = ApiError::new(
                ErrorKind::RateLimitTokens,
                format!(
                    "rate limit reached: {limit} tokens per minute; retry after {} s",
                    secs(retry_after)
                ),
            )
            .header("retry-after", secs(retry_after));
            match api {
                ApiKind::OpenAi => e
                    .header("x-ratelimit-limit-tokens", limit)
                    .header("x-ratelimit-remaining-tokens", 0)
                    .header(
                        "x-ratelimit-reset-tokens",
                        format!("{}s", secs(retry_after)),
                    ),
                ApiKind::Anthropic => e
                    .header("anthropic-ratelimit-tokens-limit", limit)
                    .header("anthropic-ratelimit-tokens-remaining", 0)
                    .header("anthropic-ratelimit-tokens-reset", rfc3339_in(retry_after)),
            }
        }
        Rejection::Concurrency { limit } => ApiError::new(
            ErrorKind::RateLimitRequests,
            format!("too many requests in flight: at most {limit} at once"),
        )
        .header("retry-after", 1),
        Rejection::Budget { budget, resets_at } => {
            let wait = (resets_at - Utc::now()).num_seconds().max(1);
            ApiError::new(
                ErrorKind::InsufficientQuota,
                format!(
                    "insufficient_quota: the monthly budget of {budget} tokens is spent; it resets at {}",
                    resets_at.to_rfc3339_opts(SecondsFormat::Secs, true)
                ),
            )
            .header("retry-after", wait)
        }
    }
}

/// The headers of a request to an LLM upstream: the relayed caller headers, the platform credential, and
/// `anthropic-version` where the caller sent none.
fn upstream_headers(api: ApiKind, target: &UpstreamTarget, from: &HeaderMap) -> HeaderMap {
    let mut to = HeaderMap::with_capacity(RELAYED_REQUEST_HEADERS.len() + 3);
    for name in RELAYED_REQUEST_HEADERS {
        if let Some(v) = from.get(*name) {
            to.insert(HeaderName::from_static(name), v.clone());
        }
    }
    // What reqwest sent when the caller named no media type; some upstreams refuse a request without one.
    if !to.contains_key(header::ACCEPT) {
        to.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
    }
    match api {
        ApiKind::OpenAi => to.insert(header::AUTHORIZATION, target.auth.clone()),
        ApiKind::Anthropic => to.insert(HeaderName::from_static("x-api-key"), target.auth.clone()),
    };
    if api == ApiKind::Anthropic && !to.contains_key("anthropic-version") {
        to.insert(
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static("2023-06-01"),
        );
    }
    to
}

/// An upstream request with a body the proxy holds in full.
pub fn upstream_request(
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> UpstreamRequest {
    let mut req = hyper::Request::new(Full::new(body));
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    req
}

fn relay_response_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for name in RELAYED_RESPONSE_HEADERS {
        if let Some(v) = from.get(*name) {
            to.insert(HeaderName::from_static(name), v.clone());
        }
    }
}

fn upstream_of(app: &App, api: ApiKind) -> &UpstreamTarget {
    match api {
        ApiKind::OpenAi => app.openai.as_ref(),
        ApiKind::Anthropic => app.anthropic.as_ref(),
    }
    .expect("checked in prepare")
}

/// Sends a request upstream, bounded by the time allowed until response headers arrive.
pub async fn send_upstream(
    app: &App,
    req: UpstreamRequest,
    route: &'static str,
) -> Result<UpstreamResponse, ApiError> {
    let wait = app.upstream.header_timeout(app.upstream_timeout);
    match tokio::time::timeout(wait, app.upstream.send(req)).await {
        Err(_) => {
            app.metrics
                .upstream_errors
                .with_label_values(&[route, "timeout"])
                .inc();
            Err(ApiError::new(
                ErrorKind::Timeout,
                format!(
                    "the upstream did not answer within {} s",
                    wait.as_secs_f64()
                ),
            ))
        }
        Ok(Err(e)) if e.is_timeout() => {
            app.metrics
                .upstream_errors
                .with_label_values(&[route, "timeout"])
                .inc();
            Err(ApiError::new(
                ErrorKind::Timeout,
                "the upstream did not answer in time",
            ))
        }
        Ok(Err(e)) => {
            app.metrics
                .upstream_errors
                .with_label_values(&[route, "connect"])
                .inc();
            tracing::warn!(route, error = %e, "upstream request failed");
            Err(ApiError::new(
                ErrorKind::BadGateway,
                "the upstream could not be reached or closed the connection",
            ))
        }
        Ok(Ok(resp)) => Ok(resp),
    }
}

/// Reads an upstream body up to `limit` bytes; `None` if it is longer or fails.
pub async fn read_limited(resp: UpstreamResponse, limit: usize) -> Option<Bytes> {
    use http_body_util::BodyExt;
    let mut body = resp.into_body();
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(c) = frame.ok()?.into_data() else {
            continue;
        };
        if buf.len() + c.len() > limit {
            return None;
        }
        buf.extend_from_slice(&c);
    }
    Some(buf.freeze())
}

async fn forward(
    app: Arc<App>,
    api: ApiKind,
    headers: &HeaderMap,
    p: Prepared,
    started: Instant,
) -> Response {
    let flavor = Flavor::from(api);
    let target = upstream_of(&app, api);
    let url = target
        .endpoint
        .clone()
        .expect("LLM upstreams have an endpoint");
    let mut out_request_headers = upstream_headers(api, target, headers);
    out_request_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let req = upstream_request(Method::POST, url, out_request_headers, p.body);
    let headroom = p.admission.headroom;
    let mut meter = Meter {
        app: app.clone(),
        api,
        tenant: p.tenant.clone(),
        model: p.model,
        started,
        started_at: Utc::now(),
        admission: Some(p.admission),
        status: 0,
        upstream_slot: None,
    };
    match app.upstream_slot().await {
        Ok(slot) => meter.upstream_slot = Some(slot),
        Err(e) => {
            meter.status = e.status().as_u16();
            meter.finish(Reading::default(), true);
            return e.render(flavor);
        }
    }
    let resp = match send_upstream(&app, req, route(api)).await {
        Ok(r) => r,
        Err(e) => {
            meter.status = e.status().as_u16();
            meter.finish(Reading::default(), true);
            return e.render(flavor);
        }
    };
    app.metrics
        .route(route(api))
        .time_to_first_byte
        .observe(started.elapsed().as_secs_f64());
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    meter.status = status.as_u16();
    let mut out_headers = HeaderMap::new();
    relay_response_headers(resp.headers(), &mut out_headers);

    if !status.is_success() {
        let kind = if status.is_server_error() {
            "status_5xx"
        } else {
            "status_4xx"
        };
        app.metrics
            .upstream_errors
            .with_label_values(&[route(api), kind])
            .inc();
        let body = read_limited(resp, MAX_ERROR_BODY).await;
        meter.finish(Reading::default(), false);
        let mut response = match body {
            Some(b) if is_in_flavor(flavor, &b) => {
                let mut r = Response::new(Body::from(b));
                *r.status_mut() = status;
                r.headers_mut().extend(out_headers);
                return r;
            }
            _ => wrap_upstream(flavor, status),
        };
        if let Some(v) = out_headers.get(header::RETRY_AFTER) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, v.clone());
        }
        return response;
    }

    let is_sse = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let mode = if p.stream || is_sse {
        Mode::Sse(StreamMeter::new(api, p.strip_usage_chunk))
    } else {
        Mode::Json(BodyCopy::default())
    };
    let body = MeteredBody {
        upstream: resp.into_body(),
        mode,
        meter: Some(meter),
        done: false,
    };
    let mut response = Response::new(Body::new(body));
    *response.status_mut() = status;
    *response.headers_mut() = out_headers;
    headroom_headers(api, &headroom, response.headers_mut());
    response
}

/// The tenant's remaining allowance on a successful response, in the caller's header style.
fn headroom_headers(api: ApiKind, h: &Headroom, headers: &mut HeaderMap) {
    let names: [&'static str; 4] = match api {
        ApiKind::OpenAi => [
            "x-ratelimit-limit-requests",
            "x-ratelimit-remaining-requests",
            "x-ratelimit-limit-tokens",
            "x-ratelimit-remaining-tokens",
        ],
        ApiKind::Anthropic => [
            "anthropic-ratelimit-requests-limit",
            "anthropic-ratelimit-requests-remaining",
            "anthropic-ratelimit-tokens-limit",
            "anthropic-ratelimit-tokens-remaining",
        ],
    };
    let values = [
        h.requests_limit,
        h.requests_remaining,
        h.tokens_limit,
        h.tokens_remaining,
    ];
    for (name, value) in names.into_iter().zip(values) {
        headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
    }
    if h.budget_used_ratio >= WARNING_RATIO {
        headers.insert(
            HeaderName::from_static(BUDGET_WARNING_HEADER),
            HeaderValue::from_static("over 90 percent of the monthly token budget is used"),
        );
    }
}

/// Records the outcome of one admitted request, exactly once.
struct Meter {
    app: Arc<App>,
    api: ApiKind,
    tenant: Arc<Tenant>,
    model: String,
    started: Instant,
    started_at: DateTime<Utc>,
    admission: Option<Admission>,
    status: u16,
    /// Held until the response body is done with the upstream connection.
    upstream_slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Meter {
    fn finish(&mut self, reading: Reading, partial: bool) {
        let Some(admission) = self.admission.take() else {
            return;
        };
        self.upstream_slot = None;
        let c = reading.counts;
        admission.settle(c.billable(self.api));
        let m = &self.app.metrics;
        let route = route(self.api);
        let latency = self.started.elapsed();
        m.count_request(route, self.status);
        let handles = m.route(route);
        handles.duration.observe(latency.as_secs_f64());
        m.count_tokens(
            &self.tenant.name,
            &self.model,
            [c.input, c.output, c.cache_read, c.cache_write],
        );
        if partial {
            handles.partial.inc();
        }
        tracing::info!(
            tenant = %self.tenant.name,
            api = self.api.as_str(),
            model = %self.model,
            status = self.status,
            latency_ms = latency.as_millis() as u64,
            input_tokens = c.input,
            output_tokens = c.output,
            partial,
            "request done"
        );
        self.app.usage.record(UsageEvent {
            id: uuid::Uuid::now_v7(),
            tenant: self.tenant.name.to_string(),
            model: std::mem::take(&mut self.model),
            input_tokens: c.input,
            output_tokens: c.output,
            cache_read_tokens: c.cache_read,
            cache_write_tokens: c.cache_write,
            latency_ms: latency.as_millis() as u64,
            status: self.status,
            partial,
            api: self.api.into(),
            started_at: self.started_at,
        });
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        // The handler was dropped before a response body took over: the client went away while the
        // upstream was still thinking. Record it (nothing was seen) rather than lose the request.
        if self.admission.is_some() {
            if self.status == 0 {
                self.status = CLIENT_CLOSED_REQUEST;
            }
            tracing::info!(tenant = %self.tenant.name, "client went away before the upstream answered");
            self.finish(Reading::default(), true);
        }
    }
}

/// The status recorded when the client closed the connection before any response (nginx's convention).
const CLIENT_CLOSED_REQUEST: u16 = 499;

enum Mode {
    Sse(StreamMeter),
    Json(BodyCopy),
}

impl Mode {
    fn reading(&self, api: ApiKind) -> Reading {
        match self {
            Mode::Sse(m) => m.reading(),
            Mode::Json(copy) => copy.reading(api),
        }
    }
}

/// A non-streaming body kept aside for metering, up to [`MAX_METERED_BODY`]. A body that arrives in one
/// chunk (the usual case) is kept by reference, not copied; later chunks are copied.
#[derive(Default)]
struct BodyCopy {
    first: Option<Bytes>,
    rest: BytesMut,
    overflow: bool,
}

impl BodyCopy {
    fn len(&self) -> usize {
        self.first.as_ref().map_or(0, Bytes::len) + self.rest.len()
    }

    fn push(&mut self, chunk: &Bytes) {
        if self.overflow {
            return;
        }
        if self.len() + chunk.len() > MAX_METERED_BODY {
            *self = BodyCopy {
                overflow: true,
                ..BodyCopy::default()
            };
        } else if self.first.is_none() && self.rest.is_empty() {
            self.first = Some(chunk.clone());
        } else {
            if let Some(first) = self.first.take() {
                self.rest.extend_from_slice(&first);
            }
            self.rest.extend_from_slice(chunk);
        }
    }

    fn reading(&self, api: ApiKind) -> Reading {
        match (&self.first, self.overflow) {
            (_, true) => Reading::default(),
            (Some(first), false) => read_body(api, first),
            (None, false) => read_body(api, &self.rest),
        }
    }
}

/// The response body: upstream bytes on their way to the client, metered as they pass.
struct MeteredBody {
    upstream: TimedBody,
    mode: Mode,
    meter: Option<Meter>,
    done: bool,
}

impl MeteredBody {
    fn finish(&mut self, partial_cause: Option<&'static str>) {
        if let Some(mut meter) = self.meter.take() {
            let reading = self.mode.reading(meter.api);
            let partial = match (&self.mode, partial_cause) {
                (_, Some(_)) => true,
                (Mode::Sse(_), None) => !reading.complete,
                (Mode::Json(_), None) => false,
            };
            if let Some(cause) = partial_cause {
                tracing::info!(tenant = %meter.tenant.name, cause, "response cut short; recording what was seen");
            }
            meter.finish(reading, partial);
        }
    }
}

impl http_body::Body for MeteredBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.upstream).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    // Trailers (HTTP/2) are not relayed.
                    let Ok(chunk) = frame.into_data() else {
                        continue;
                    };
                    let out = match &mut this.mode {
                        Mode::Sse(m) => m.feed(chunk),
                        Mode::Json(copy) => {
                            copy.push(&chunk);
                            chunk
                        }
                    };
                    if !out.is_empty() {
                        // The last byte of a body of known length: metered now, so that the server
                        // can end the response with this frame instead of polling for the end.
                        if matches!(this.mode, Mode::Json(_)) && this.upstream.is_end_stream() {
                            this.done = true;
                            this.finish(None);
                        }
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    let route = this.meter.as_ref().map(|m| route(m.api)).unwrap_or("llm");
                    if let Some(m) = &this.meter {
                        let kind = if e.is_timeout() { "timeout" } else { "body" };
                        m.app
                            .metrics
                            .upstream_errors
                            .with_label_values(&[route, kind])
                            .inc();
                    }
                    this.finish(Some("upstream"));
                    return Poll::Ready(Some(Err(std::io::Error::other("upstream stream failed"))));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    let tail = match &mut this.mode {
                        Mode::Sse(m) => m.finish(),
                        Mode::Json(_) => Bytes::new(),
                    };
                    this.finish(None);
                    if !tail.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(tail))));
                    }
                    return Poll::Ready(None);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    /// A non-streaming body is relayed byte for byte, so the upstream's length (Content-Length) holds for
    /// the client too; an event stream may lose its usage chunk on the way. An empty body gets no length:
    /// the server would then never poll it, and its end would not be metered as complete.
    fn size_hint(&self) -> http_body::SizeHint {
        match (&self.mode, self.upstream.size_hint().exact()) {
            (Mode::Json(_), Some(n)) if n > 0 && !self.done => http_body::SizeHint::with_exact(n),
            _ => http_body::SizeHint::default(),
        }
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        // Still unfinished: the client went away before the end.
        if self.meter.is_some() {
            self.finish(Some("client"));
        }
    }
}

/// GET /v1/models: relayed from the upstream matching the caller's credential style.
pub async fn models(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let api = if headers.contains_key("x-api-key") && app.anthropic.is_some() {
        ApiKind::Anthropic
    } else if app.openai.is_some() {
        ApiKind::OpenAi
    } else {
        ApiKind::Anthropic
    };
    let flavor = Flavor::from(api);
    if let Err(e) = app.authenticate(presented_token(&headers, true)) {
        return e.render(flavor);
    }
    let _slot = match app.upstream_slot().await {
        Ok(s) => s,
        Err(e) => return e.render(flavor),
    };
    let target = upstream_of(&app, api);
    let url = target
        .models
        .clone()
        .expect("LLM upstreams have a model list");
    let req = upstream_request(
        Method::GET,
        url,
        upstream_headers(api, target, &headers),
        Bytes::new(),
    );
    let resp = match send_upstream(&app, req, "models").await {
        Ok(r) => r,
        Err(e) => return e.render(flavor),
    };
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    app.metrics
        .requests
        .with_label_values(&["models", status.as_str()])
        .inc();
    let mut out_headers = HeaderMap::new();
    relay_response_headers(resp.headers(), &mut out_headers);
    match read_limited(resp, MAX_METERED_BODY).await {
        Some(b) if status.is_success() || is_in_flavor(flavor, &b) => {
            let mut r = Response::new(Body::from(b));
            *r.status_mut() = status;
            *r.headers_mut() = out_headers;
            r
        }
        Some(_) => wrap_upstream(flavor, status),
        None => ApiError::new(
            ErrorKind::BadGateway,
            "the upstream's model list could not be read",
        )
        .render(flavor),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(b: &[u8]) -> Value {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn include_usage_is_spliced_in_without_touching_the_rest() {
        let raw = br#"{"model":"kimi-k2","stream":true,"messages":[{"role":"user","content":"h\u00e9 {\"x\"}"}]}"#;
        let peek = RequestPeek::parse(raw).unwrap();
        assert!(peek.stream_options.is_none());
        let out = inject_include_usage(raw, false).unwrap();
        // The client's bytes follow the added member unchanged.
        assert!(out.ends_with(&raw[1..]));
        let mut expected = value(raw);
        expected["stream_options"] = serde_json::json!({"include_usage": true});
        assert_eq!(value(&out), expected);

        for raw in [&b"{}"[..], b"  { \n }  "] {
            let out = inject_include_usage(raw, false).unwrap();
            assert_eq!(
                value(&out),
                serde_json::json!({"stream_options": {"include_usage": true}})
            );
        }
    }

    #[test]
    fn an_existing_stream_options_member_is_rewritten_not_duplicated() {
        for (raw, expected) in [
            (
                &br#"{"model":"m","stream_options":null}"#[..],
                serde_json::json!({"model": "m", "stream_options": {"include_usage": true}}),
            ),
            (
                br#"{"model":"m","stream_options":{"include_usage":false,"x":1}}"#,
                serde_json::json!({"model": "m", "stream_options": {"include_usage": true, "x": 1}}),
            ),
        ] {
            let peek = RequestPeek::parse(raw).unwrap();
            assert!(peek.stream_options.is_some(), "{raw:?}");
            let out = inject_include_usage(raw, true).unwrap();
            assert_eq!(value(&out), expected);
            assert_eq!(
                String::from_utf8_lossy(&out)
                    .matches("stream_options")
                    .count(),
                1
            );
        }
    }

    #[test]
    fn a_single_chunk_body_is_metered_by_reference_and_more_chunks_by_copy() {
        let body = br#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#;
        let mut one = BodyCopy::default();
        one.push(&Bytes::from_static(body));
        assert!(one.rest.is_empty());
        assert_eq!(
            one.reading(ApiKind::OpenAi)
                .counts
                .billable(ApiKind::OpenAi),
            7
        );

        let mut split = BodyCopy::default();
        for part in body.chunks(10) {
            split.push(&Bytes::copy_from_slice(part));
        }
        assert!(split.first.is_none());
        assert_eq!(split.reading(ApiKind::OpenAi), one.reading(ApiKind::OpenAi));
    }

    #[test]
    fn a_body_over_the_metering_limit_is_not_metered_or_kept() {
        let mut copy = BodyCopy::default();
        copy.push(&Bytes::from_static(b"{\"usage\":"));
        copy.push(&Bytes::from(vec![b' '; MAX_METERED_BODY]));
        assert!(copy.overflow);
        assert_eq!(copy.len(), 0);
        copy.push(&Bytes::from_static(b"{}}"));
        assert_eq!(copy.reading(ApiKind::OpenAi), Reading::default());
    }
}
