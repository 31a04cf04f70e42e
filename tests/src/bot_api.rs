//! A Telegram Bot API stand-in for the platform bot's tests: it answers `getMe`, `setWebhook`,
//! `sendMessage` and `answerCallbackQuery` in Telegram's exact formats (`{"ok": true, "result":
//! ...}`, errors with `error_code`, `description` and, for 429, `parameters.retry_after`),
//! checks the calls as Telegram does (token, chat_id, text length, callback_data length), records
//! every successful call, and fails the next calls on demand (429, 5xx) to test the outbox.
//!
//! Also builds updates in Telegram's format and posts them to the api's webhook.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

/// A failure to answer the next Bot API call with (other than getMe and setWebhook).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// 429 Too Many Requests with this `retry_after`.
    TooMany(u64),
    /// This 5xx status.
    Server(u16),
}

/// One call Telegram carried out.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub body: Value,
}

#[derive(Default)]
struct Inner {
    calls: Vec<Call>,
    failures: VecDeque<Failure>,
    /// Customer bot tokens getMe accepts.
    accepted: HashSet<String>,
    webhook: Option<(String, String, Value)>,
    refused: usize,
}

/// The running stand-in.
#[derive(Clone)]
pub struct BotApiStandIn {
    pub url: String,
    /// The platform bot's token.
    pub token: String,
    inner: Arc<Mutex<Inner>>,
}

#[derive(Clone)]
struct Shared {
    token: String,
    inner: Arc<Mutex<Inner>>,
    next_message: Arc<AtomicI64>,
}

fn error(status: u16, description: &str) -> (StatusCode, Json<Value>) {
    (
        StatusCode::from_u16(status).unwrap(),
        Json(json!({"ok": false, "error_code": status, "description": description})),
    )
}

async fn method(
    State(shared): State<Shared>,
    Path((bot, method)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> (StatusCode, Json<Value>) {
    let Some(token) = bot.strip_prefix("bot") else {
        return error(404, "Not Found");
    };
    let body: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => return error(400, "Bad Request: can't parse JSON object"),
        }
    };
    let mut inner = shared.inner.lock().unwrap();
    if method == "getMe" {
        if token == shared.token || inner.accepted.contains(token) {
            let id: i64 = token.split(':').next().unwrap_or("0").parse().unwrap_or(0);
            let username = if token == shared.token {
                "openclaw_cloud_bot".to_owned()
            } else {
                format!("agent{id}_bot")
            };
            return (
                StatusCode::OK,
                Json(
                    json!({"ok": true, "result": {"id": id, "is_bot": true, "first_name": "Agent",
                    "username": username, "can_join_groups": true, "can_read_all_group_messages": false,
                    "supports_inline_queries": false}}),
                ),
            );
        }
        return error(401, "Unauthorized");
    }
    if token != shared.token {
        return error(401, "Unauthorized");
    }
    match method.as_str() {
        "setWebhook" => {
            let url = body["url"].as_str().unwrap_or_default().to_owned();
            let secret = body["secret_token"].as_str().unwrap_or_default().to_owned();
            if !url.starts_with("https://") && !url.starts_with("http://") {
                return error(
                    400,
                    "Bad Request: bad webhook: An HTTPS URL must be provided for webhook",
                );
            }
            inner.webhook = Some((url, secret, body["allowed_updates"].clone()));
            (
                StatusCode::OK,
                Json(json!({"ok": true, "result": true, "description": "Webhook was set"})),
            )
        }
        "sendMessage" | "answerCallbackQuery" => {
            if let Some(failure) = inner.failures.pop_front() {
                inner.refused += 1;
                return match failure {
                    Failure::TooMany(seconds) => (
                        StatusCode::TOO_MANY_REQUESTS,
                        Json(json!({"ok": false, "error_code": 429,
                            "description": format!("Too Many Requests: retry after {seconds}"),
                            "parameters": {"retry_after": seconds}})),
                    ),
                    Failure::Server(status) => error(status, "Internal Server Error"),
                };
            }
            if method == "answerCallbackQuery" {
                if body["callback_query_id"].as_str().is_none_or(str::is_empty) {
                    return error(400, "Bad Request: query is too old and response timeout expired or query ID is invalid");
                }
                inner.calls.push(Call { method, body });
                return (StatusCode::OK, Json(json!({"ok": true, "result": true})));
            }
            let Some(chat_id) = body["chat_id"].as_i64() else {
                return error(400, "Bad Request: chat not found");
            };
            let text = body["text"].as_str().unwrap_or_default().to_owned();
            if text.is_empty() {
                return error(400, "Bad Request: message text is empty");
            }
            if text.chars().count() > 4096 {
                return error(400, "Bad Request: message is too long");
            }
            if let Some(rows) = body["reply_markup"]["inline_keyboard"].as_array() {
                for button in rows.iter().filter_map(Value::as_array).flatten() {
                    let data = button["callback_data"].as_str().unwrap_or_default();
                    if data.is_empty()
                        || data.len() > 64
                        || button["text"].as_str().is_none_or(str::is_empty)
                    {
                        return error(400, "Bad Request: BUTTON_DATA_INVALID");
                    }
                }
            }
            let id = shared.next_message.fetch_add(1, Ordering::Relaxed);
            inner.calls.push(Call {
                method,
                body: body.clone(),
            });
            (
                StatusCode::OK,
                Json(json!({"ok": true, "result": {"message_id": id,
                    "from": {"id": 777000, "is_bot": true, "first_name": "openclaw.cloud", "username": "openclaw_cloud_bot"},
                    "chat": {"id": chat_id, "type": if chat_id > 0 { "private" } else { "supergroup" }},
                    "date": 1_700_000_000, "text": text}})),
            )
        }
        _ => error(404, "Not Found: method not found"),
    }
}

impl BotApiStandIn {
    pub async fn start(token: &str) -> BotApiStandIn {
        let inner: Arc<Mutex<Inner>> = Arc::default();
        let next_message = Arc::new(AtomicI64::new(1));
        let shared = Shared {
            token: token.to_owned(),
            inner: inner.clone(),
            next_message,
        };
        let app = axum::Router::new()
            .route("/{bot}/{method}", axum::routing::any(method))
            .with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        BotApiStandIn {
            url: format!("http://{addr}"),
            token: token.to_owned(),
            inner,
        }
    }

    /// Makes getMe accept a customer's bot token.
    pub fn accept(&self, token: &str) {
        self.inner.lock().unwrap().accepted.insert(token.to_owned());
    }

    /// Fails the next sendMessage/answerCallbackQuery calls with these answers, in order.
    pub fn fail_next(&self, failures: &[Failure]) {
        self.inner
            .lock()
            .unwrap()
            .failures
            .extend(failures.iter().copied());
    }

    /// How many calls were refused by [`Self::fail_next`].
    pub fn refused(&self) -> usize {
        self.inner.lock().unwrap().refused
    }

    pub fn calls(&self) -> Vec<Call> {
        self.inner.lock().unwrap().calls.clone()
    }

    /// The texts sent to `chat`, in order.
    pub fn texts_to(&self, chat: i64) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == "sendMessage" && c.body["chat_id"] == chat)
            .map(|c| c.body["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// The callback_data of the buttons of the last message to `chat`.
    pub fn last_buttons(&self, chat: i64) -> Vec<String> {
        self.calls()
            .into_iter()
            .rev()
            .find(|c| c.method == "sendMessage" && c.body["chat_id"] == chat)
            .map(|c| {
                c.body["reply_markup"]["inline_keyboard"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_array)
                    .flatten()
                    .filter_map(|b| b["callback_data"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// What setWebhook registered: (url, secret_token, allowed_updates).
    pub fn webhook(&self) -> Option<(String, String, Value)> {
        self.inner.lock().unwrap().webhook.clone()
    }

    /// Waits until `chat` received at least `n` messages; their texts.
    pub async fn wait_texts(&self, chat: i64, n: usize) -> Vec<String> {
        for _ in 0..300 {
            let texts = self.texts_to(chat);
            if texts.len() >= n {
                return texts;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!(
            "chat {chat} received {:?}, expected at least {n} messages",
            self.texts_to(chat)
        );
    }
}

/// A private text message from user `user` (chat id = user id), as Telegram posts it.
pub fn message(update_id: i64, user: i64, text: &str) -> Value {
    json!({
        "update_id": update_id,
        "message": {"message_id": update_id, "date": 1_700_000_000, "text": text,
            "from": {"id": user, "is_bot": false, "first_name": "Ada", "language_code": "en"},
            "chat": {"id": user, "first_name": "Ada", "type": "private"}}
    })
}

/// A text message in group `group` from `user`.
pub fn group_message(update_id: i64, group: i64, user: i64, text: &str) -> Value {
    json!({
        "update_id": update_id,
        "message": {"message_id": update_id, "date": 1_700_000_000, "text": text,
            "from": {"id": user, "is_bot": false, "first_name": "Ada"},
            "chat": {"id": group, "title": "Friends", "type": "supergroup"}}
    })
}

/// A press on an inline button with `data`, in `user`'s private chat.
pub fn callback(update_id: i64, user: i64, data: &str) -> Value {
    json!({
        "update_id": update_id,
        "callback_query": {"id": format!("cq{update_id}"), "chat_instance": "1", "data": data,
            "from": {"id": user, "is_bot": false, "first_name": "Ada", "language_code": "en"},
            "message": {"message_id": 1, "date": 1_700_000_000,
                "chat": {"id": user, "type": "private"}}}
    })
}

/// Posts an update to the api's webhook with `secret`; the status.
pub async fn post_update(
    http: &reqwest::Client,
    base: &str,
    secret: Option<&str>,
    update: &Value,
) -> reqwest::StatusCode {
    let mut request = http.post(format!("{base}/telegram/webhook")).json(update);
    if let Some(secret) = secret {
        request = request.header("X-Telegram-Bot-Api-Secret-Token", secret);
    }
    request.send().await.unwrap().status()
}
