//! Stand-ins for everything the proxy talks to, speaking the real wire formats, and a harness that starts
//! the proxy on a random port between them.
//!
//! The upstream stand-in picks its behaviour from the request's `model`: `fail-500` answers an HTML 500,
//! `fail-400` an OpenAI-style 400, `overloaded` an Anthropic 529, `slow` waits 3 s before answering, `cut`
//! streams two chunks and then breaks the connection, `endless` streams until the reader goes away,
//! `flood` streams 64 KiB chunks as fast as they are taken, `kimi-moonshot` puts usage inside the last
//! choice (Moonshot), `drip` streams ten chunks 100 ms apart; anything else answers normally.

#![allow(dead_code)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use futures_util::{stream, StreamExt};
use serde_json::{json, Value};

pub const PLATFORM_OPENAI_KEY: &str = "sk-platform-openai-5e3cret";
pub const PLATFORM_ANTHROPIC_KEY: &str = "sk-platform-kimi-5e3cret";
pub const NANGO_SECRET: &str = "nango-secret-5e3cret";
pub const API_CREDENTIAL: &str = "proxy-credential-5e3cret";
/// sha256("test") is acme (active), sha256("test2") is globex (suspended) in the example table.
pub const ACME_TOKEN: &str = "test";
pub const GLOBEX_TOKEN: &str = "test2";
pub const EXAMPLE_TABLE: &str = include_str!("../../../docs/tenant-table.example.json");

pub async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    addr
}

#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
}

/// The LLM upstream stand-in (OpenAI chat completions and Anthropic messages).
#[derive(Clone, Default)]
pub struct Upstream {
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Bytes the `flood` stream has produced so far.
    pub produced: Arc<AtomicU64>,
    /// Set when an `endless` or `flood` stream was dropped (its reader went away).
    pub stream_dropped: Arc<AtomicBool>,
}

impl Upstream {
    pub async fn start() -> (Self, SocketAddr) {
        let s = Self::default();
        let router = Router::new()
            .route("/v1/chat/completions", post(openai))
            .route("/v1/messages", post(anthropic))
            .route("/v1/models", get(models))
            .with_state(s.clone());
        (s.clone(), serve(router).await)
    }

    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("upstream saw a request")
    }
}

struct DropFlag(Arc<AtomicBool>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn sse(events: Vec<String>, delay: Duration) -> Body {
    let s = stream::unfold(events.into_iter(), move |mut it| async move {
        let next = it.next()?;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Some((Ok::<_, std::io::Error>(next), it))
    });
    Body::from_stream(s)
}

fn sse_response(body: Body) -> Response {
    (
        [
            ("content-type", "text/event-stream"),
            ("cache-control", "no-cache"),
        ],
        body,
    )
        .into_response()
}

fn openai_chunk(model: &str, content: &str, finish: Option<&str>, with_usage_null: bool) -> String {
    let mut v = json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1764072000, "model": model,
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}]
    });
    if with_usage_null {
        v["usage"] = Value::Null;
    }
    format!("data: {v}\n\n")
}

fn endless_or_flood(model: &str, up: &Upstream, anthropic: bool) -> Option<Response> {
    let flag = DropFlag(up.stream_dropped.clone());
    match model {
        "endless" => {
            let first = if anthropic {
                "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"endless\",\"usage\":{\"input_tokens\":17,\"output_tokens\":1}}}\n\n".to_owned()
            } else {
                openai_chunk(model, "x", None, true)
            };
            let s = stream::unfold(
                (flag, 0u64, first, anthropic),
                |(flag, n, first, anthropic)| async move {
                    if n > 0 {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    let chunk = if n == 0 {
                        first.clone()
                    } else if anthropic {
                        format!("event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{}},\"usage\":{{\"output_tokens\":{}}}}}\n\n", n + 1)
                    } else {
                        openai_chunk("endless", "x", None, true)
                    };
                    Some((
                        Ok::<_, std::io::Error>(chunk),
                        (flag, n + 1, first, anthropic),
                    ))
                },
            );
            Some(sse_response(Body::from_stream(s)))
        }
        "flood" => {
            let produced = up.produced.clone();
            let line = openai_chunk(model, &"y".repeat(64 * 1024), None, false);
            let s = stream::unfold(
                (flag, produced, line),
                |(flag, produced, line)| async move {
                    produced.fetch_add(line.len() as u64, Ordering::SeqCst);
                    Some((
                        Ok::<_, std::io::Error>(line.clone()),
                        (flag, produced, line),
                    ))
                },
            );
            Some(sse_response(Body::from_stream(s)))
        }
        _ => None,
    }
}

fn cut_body(events: Vec<String>) -> Body {
    let items: Vec<Result<String, std::io::Error>> = events
        .into_iter()
        .take(2)
        .map(Ok)
        .chain(std::iter::once(Err(std::io::Error::other(
            "upstream broke",
        ))))
        .collect();
    // Paced, so that the status line and the first events are on the wire before the break.
    let s = stream::unfold(items.into_iter(), |mut it| async move {
        tokio::time::sleep(Duration::from_millis(30)).await;
        it.next().map(|item| (item, it))
    });
    Body::from_stream(s)
}

async fn common_failures(model: &str) -> Option<Response> {
    match model {
        "fail-500" => Some(
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [("content-type", "text/html")],
                "<html>oops</html>",
            )
                .into_response(),
        ),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            None
        }
        _ => None,
    }
}

async fn openai(
    State(up): State<Upstream>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    up.seen.lock().unwrap().push(Seen {
        path: "/v1/chat/completions".into(),
        headers,
        body: body.clone(),
    });
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    if let Some(r) = common_failures(&model).await {
        return r;
    }
    if model == "fail-400" {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": {"message": "Invalid request: messages must not be empty", "type": "invalid_request_error", "param": null, "code": null}})),
        )
            .into_response();
    }
    if let Some(r) = endless_or_flood(&model, &up, false) {
        return r;
    }
    let stream = body["stream"].as_bool().unwrap_or(false);
    if !stream {
        return Json(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1764072000, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18, "prompt_tokens_details": {"cached_tokens": 3}}
        }))
        .into_response();
    }
    let include_usage = body["stream_options"]["include_usage"].as_bool() == Some(true);
    let mut events = vec![
        openai_chunk(&model, "Hel", None, include_usage),
        openai_chunk(&model, "lo", None, include_usage),
    ];
    if model == "kimi-moonshot" {
        // Moonshot: usage inside the last choice, no separate usage chunk.
        let v = json!({
            "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1764072000, "model": model,
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop",
                         "usage": {"prompt_tokens": 40, "completion_tokens": 12, "total_tokens": 52, "cached_tokens": 16}}]
        });
        events.push(format!("data: {v}\n\n"));
    } else {
        events.push(openai_chunk(&model, "", Some("stop"), include_usage));
        if include_usage {
            let v = json!({
                "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1764072000, "model": model,
                "choices": [],
                "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18, "prompt_tokens_details": {"cached_tokens": 3}}
            });
            events.push(format!("data: {v}\n\n"));
        }
    }
    events.push("data: [DONE]\n\n".into());
    match model.as_str() {
        "cut" => sse_response(cut_body(events)),
        "stall" => {
            // The first two events, then silence with the connection open.
            let first: Vec<Result<String, std::io::Error>> =
                events.into_iter().take(2).map(Ok).collect();
            sse_response(Body::from_stream(
                stream::iter(first).chain(stream::pending()),
            ))
        }
        "drip" => {
            let mut many: Vec<String> = (0..9)
                .map(|_| openai_chunk(&model, "d", None, include_usage))
                .collect();
            many.extend(events);
            sse_response(sse(many, Duration::from_millis(100)))
        }
        _ => sse_response(sse(events, Duration::ZERO)),
    }
}

pub fn anthropic_events(model: &str, text: &str) -> Vec<String> {
    let ev = |name: &str, v: Value| format!("event: {name}\ndata: {v}\n\n");
    vec![
        ev(
            "message_start",
            json!({"type": "message_start", "message": {
            "id": "msg_01", "type": "message", "role": "assistant", "content": [], "model": model,
            "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 21, "cache_creation_input_tokens": 4, "cache_read_input_tokens": 6, "output_tokens": 1}}}),
        ),
        ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        ev("ping", json!({"type": "ping"})),
        ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
        ),
        ev(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        ev(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": null, "stop_sequence": null}, "usage": {"output_tokens": 5}}),
        ),
        ev(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 9}}),
        ),
        ev("message_stop", json!({"type": "message_stop"})),
    ]
}

async fn anthropic(
    State(up): State<Upstream>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    up.seen.lock().unwrap().push(Seen {
        path: "/v1/messages".into(),
        headers,
        body: body.clone(),
    });
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    if let Some(r) = common_failures(&model).await {
        return r;
    }
    if model == "overloaded" {
        return (
            StatusCode::from_u16(529).unwrap(),
            Json(json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})),
        )
            .into_response();
    }
    if let Some(r) = endless_or_flood(&model, &up, true) {
        return r;
    }
    if body["stream"].as_bool() != Some(true) {
        return Json(json!({
            "id": "msg_01", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": "pong"}], "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 21, "cache_creation_input_tokens": 4, "cache_read_input_tokens": 6, "output_tokens": 9}
        }))
        .into_response();
    }
    let events = anthropic_events(&model, "pong");
    if model == "cut" {
        return sse_response(cut_body(events));
    }
    sse_response(sse(events, Duration::ZERO))
}

async fn models(headers: HeaderMap) -> Response {
    let ok = headers
        .get("authorization")
        .is_some_and(|v| v == &format!("Bearer {PLATFORM_OPENAI_KEY}"))
        || headers
            .get("x-api-key")
            .is_some_and(|v| v == PLATFORM_ANTHROPIC_KEY);
    if !ok {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    Json(json!({"object": "list", "data": [{"id": "kimi-k2", "object": "model", "created": 0, "owned_by": "moonshot"}]}))
        .into_response()
}

/// A server that accepts connections and resets them at once.
pub async fn resetting_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let _ = sock.set_zero_linger();
            drop(sock);
        }
    });
    addr
}

/// The api stand-in: `POST /internal/usage` and `GET /internal/budget`.
#[derive(Clone, Default)]
pub struct ApiStandIn {
    pub events: Arc<Mutex<Vec<Value>>>,
    pub batches: Arc<AtomicU64>,
    pub down: Arc<AtomicBool>,
    pub budget: Arc<Mutex<Value>>,
    pub bad_auth: Arc<AtomicU64>,
}

impl ApiStandIn {
    pub async fn start() -> (Self, SocketAddr) {
        let s = Self::default();
        let period = chrono::Utc::now().format("%Y-%m").to_string();
        *s.budget.lock().unwrap() = json!({"period": period, "tenants": []});
        let router = Router::new()
            .route("/internal/usage", post(usage))
            .route("/internal/budget", get(budget))
            .with_state(s.clone());
        (s.clone(), serve(router).await)
    }

    pub fn set_budget(&self, tenant: &str, used: u64, budget: u64, state: &str) {
        let period = chrono::Utc::now().format("%Y-%m").to_string();
        *self.budget.lock().unwrap() = json!({"period": period, "tenants": [
            {"tenant": tenant, "used": used, "budget": budget, "state": state}
        ]});
    }

    /// Events with distinct ids (the api deduplicates by id).
    pub fn unique_events(&self) -> Vec<Value> {
        let mut seen = HashSet::new();
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| seen.insert(e["id"].as_str().unwrap().to_owned()))
            .cloned()
            .collect()
    }

    pub async fn wait_events(&self, n: usize, within: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let ev = self.unique_events();
            if ev.len() >= n || tokio::time::Instant::now() > deadline {
                return ev;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn authorized(h: &HeaderMap) -> bool {
    h.get("authorization")
        .is_some_and(|v| v == &format!("Bearer {API_CREDENTIAL}"))
}

async fn usage(
    State(s): State<ApiStandIn>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !authorized(&headers) {
        s.bad_auth.fetch_add(1, Ordering::SeqCst);
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if s.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    s.batches.fetch_add(1, Ordering::SeqCst);
    let events = body["events"].as_array().cloned().unwrap_or_default();
    s.events.lock().unwrap().extend(events);
    StatusCode::NO_CONTENT.into_response()
}

async fn budget(State(s): State<ApiStandIn>, headers: HeaderMap) -> Response {
    if !authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    Json(s.budget.lock().unwrap().clone()).into_response()
}

/// The Nango stand-in: `/proxy/<path>` echoes what it was sent.
#[derive(Clone, Default)]
pub struct Nango {
    pub seen: Arc<Mutex<Vec<(String, HeaderMap, String)>>>,
}

impl Nango {
    pub async fn start() -> (Self, SocketAddr) {
        let s = Self::default();
        let router = Router::new()
            .route("/proxy/{*path}", any(nango_proxy))
            .with_state(s.clone());
        (s.clone(), serve(router).await)
    }
}

async fn nango_proxy(
    State(s): State<Nango>,
    Path(path): Path<String>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    let authorized = headers
        .get("authorization")
        .is_some_and(|v| v == &format!("Bearer {NANGO_SECRET}"));
    s.seen
        .lock()
        .unwrap()
        .push((uri.to_string(), headers.clone(), body.clone()));
    if !authorized {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "bad secret key"})),
        )
            .into_response();
    }
    Json(json!({
        "path": path,
        "query": uri.query(),
        "connectionId": headers.get("connection-id").and_then(|v| v.to_str().ok()),
        "providerConfigKey": headers.get("provider-config-key").and_then(|v| v.to_str().ok()),
        "body": body,
    }))
    .into_response()
}

/// A tenant table file with one tenant per (name, token, state, rpm).
pub fn table_json(tenants: &[(&str, &str, &str, u32, u32, u64, u32)]) -> String {
    use sha2::Digest;
    let tenants: Vec<Value> = tenants
        .iter()
        .map(|(name, token, state, rpm, tpm, budget, conc)| {
            json!({
                "name": name,
                "tokenSha256": hex::encode(sha2::Sha256::digest(token.as_bytes())),
                "state": state,
                "tier": "starter",
                "limits": {"requestsPerMinute": rpm, "tokensPerMinute": tpm, "monthlyTokenBudget": budget, "concurrentRequests": conc},
                "connections": [{"provider": "github", "connectionId": format!("conn-{name}"), "providerConfigKey": "github-app"}]
            })
        })
        .collect();
    serde_json::to_string_pretty(&json!({"version": 1, "tenants": tenants})).unwrap()
}

pub struct Options {
    pub table: Option<String>,
    pub upstream: Option<SocketAddr>,
    /// The LLM upstreams' base URL when it is not the stand-in's `http://` address (e.g. an https one).
    pub upstream_base: Option<String>,
    pub extra: String,
    pub with_api: bool,
    pub budget_poll_ms: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            table: Some(EXAMPLE_TABLE.to_owned()),
            upstream: None,
            upstream_base: None,
            extra: String::new(),
            with_api: true,
            budget_poll_ms: 0,
        }
    }
}

/// The proxy between the stand-ins.
pub struct Harness {
    pub proxy: proxy::Running,
    pub base: String,
    pub upstream: Upstream,
    pub api: ApiStandIn,
    pub nango: Nango,
    pub table_dir: tempfile::TempDir,
    pub client: reqwest::Client,
}

impl Harness {
    pub async fn start() -> Self {
        Self::with(Options::default()).await
    }

    pub async fn with(opts: Options) -> Self {
        let (upstream, up_addr) = Upstream::start().await;
        let up_addr = opts.upstream.unwrap_or(up_addr);
        let up_base = opts
            .upstream_base
            .clone()
            .unwrap_or_else(|| format!("http://{up_addr}"));
        let (api, api_addr) = ApiStandIn::start().await;
        let (nango, nango_addr) = Nango::start().await;
        let table_dir = tempfile::tempdir().unwrap();
        if let Some(t) = &opts.table {
            std::fs::write(table_dir.path().join("tenants-00.json"), t).unwrap();
        }
        let api_section = if opts.with_api {
            format!(
                "[api]\nbase_url = \"http://{api_addr}/\"\ncredential = \"{API_CREDENTIAL}\"\nbudget_poll_interval_ms = {}\n",
                opts.budget_poll_ms
            )
        } else {
            String::new()
        };
        let text = format!(
            r#"
listen = "127.0.0.1:0"
table_dir = "{dir}"
table_reload_interval_ms = 50

[upstreams.openai]
base_url = "{up_base}"
api_key = "{PLATFORM_OPENAI_KEY}"

[upstreams.anthropic]
base_url = "{up_base}/"
api_key = "{PLATFORM_ANTHROPIC_KEY}"

[nango]
base_url = "http://{nango_addr}"
secret_key = "{NANGO_SECRET}"

{api_section}

[usage]
flush_interval_ms = 50
initial_backoff_ms = 50
max_backoff_ms = 200
batch_size = 100

{extra}
"#,
            dir = table_dir.path().display(),
            extra = opts.extra,
        );
        let config = proxy::Config::from_toml(&text).expect("test config");
        let proxy = proxy::start(config).await.expect("proxy starts");
        let base = format!("http://{}", proxy.addr);
        Self {
            proxy,
            base,
            upstream,
            api,
            nango,
            table_dir,
            client: reqwest::Client::new(),
        }
    }

    /// The proxy's Prometheus metrics text.
    pub async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn table_path(&self) -> PathBuf {
        self.table_dir.path().join("tenants-00.json")
    }

    pub async fn openai(&self, token: &str, body: Value) -> reqwest::Response {
        self.client
            .post(self.url("/v1/chat/completions"))
            .bearer_auth(token)
            .header("user-agent", "openclaw-test/1.0")
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn anthropic(&self, token: &str, body: Value) -> reqwest::Response {
        self.client
            .post(self.url("/v1/messages"))
            .header("x-api-key", token)
            .header("anthropic-version", "2023-06-01")
            .header("user-agent", "claude-cli/1.0")
            .json(&body)
            .send()
            .await
            .unwrap()
    }
}

/// Reads a streamed response body until it ends or breaks: the bytes received, and whether it broke
/// (an error) rather than ending cleanly.
pub async fn read_until_break(r: reqwest::Response) -> (Vec<u8>, bool) {
    let mut s = r.bytes_stream();
    let mut got = Vec::new();
    while let Some(c) = s.next().await {
        match c {
            Ok(c) => got.extend_from_slice(&c),
            Err(_) => return (got, true),
        }
    }
    (got, false)
}

pub fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "say hello"}]})
}

pub fn message(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "max_tokens": 256, "messages": [{"role": "user", "content": "say pong"}]})
}

#[path = "../../../tests/src/outside_tool.rs"]
pub mod outside_tool;

/// Waits until `cond` holds, failing the test with `what` after five seconds.
pub async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
