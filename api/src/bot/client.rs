//! The Bot API client of the platform bot: `setWebhook`, `sendMessage`, `answerCallbackQuery`
//! (any method, with a JSON body), and what Telegram's answers mean for a retry.
//!
//! The platform bot's token is part of every URL, so no error produced here carries the URL, the
//! token or a part of it (`reqwest::Error::without_url`).

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::telegram::BotToken;

/// What a failed call means for the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// 429 Too Many Requests: try again after this many seconds (`parameters.retry_after`).
    #[error("Telegram asks to retry after {0} s")]
    RetryAfter(u64),
    /// Telegram could not be reached, timed out or answered 5xx: try again later.
    #[error("Telegram is unavailable: {0}")]
    Unavailable(String),
    /// Telegram refused the call (4xx other than 429): retrying sends the same refusal.
    #[error("Telegram refused the call: {0}")]
    Refused(String),
}

#[derive(Deserialize)]
struct Answer {
    ok: bool,
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Parameters>,
}

#[derive(Deserialize)]
struct Parameters {
    #[serde(default)]
    retry_after: Option<u64>,
}

/// A client bound to the platform bot's token.
#[derive(Clone)]
pub struct BotApi {
    http: reqwest::Client,
    base_url: String,
    token: BotToken,
}

impl BotApi {
    pub fn new(base_url: &str, token: BotToken, timeout: Duration) -> BotApi {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .expect("a reqwest client with a timeout builds");
        BotApi {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            token,
        }
    }

    /// Calls `method` with a JSON body; the `result` of a successful answer.
    pub async fn call(&self, method: &str, body: &Value) -> Result<Value, CallError> {
        let url = format!("{}/bot{}/{method}", self.base_url, self.token.expose());
        let response = self
            .http
            .post(&url)
            .json(body)
            .send()
            .await
            .map_err(|e| CallError::Unavailable(e.without_url().to_string()))?;
        let status = response.status();
        let answer: Option<Answer> = response.json().await.ok();
        classify(status.as_u16(), answer)
    }

    /// Registers the webhook with its secret and the update kinds the bot reads.
    pub async fn set_webhook(&self, url: &str, secret: &str) -> Result<(), CallError> {
        let body = serde_json::json!({
            "url": url,
            "secret_token": secret,
            "allowed_updates": ["message", "callback_query"],
            "max_connections": 40,
        });
        self.call("setWebhook", &body).await.map(|_| ())
    }
}

fn classify(status: u16, answer: Option<Answer>) -> Result<Value, CallError> {
    match answer {
        Some(a) if a.ok && (200..300).contains(&status) => Ok(a.result.unwrap_or(Value::Null)),
        Some(a) if status == 429 => Err(CallError::RetryAfter(
            a.parameters.and_then(|p| p.retry_after).unwrap_or(1).max(1),
        )),
        None if status == 429 => Err(CallError::RetryAfter(1)),
        _ if status >= 500 || status == 0 => Err(CallError::Unavailable(format!("HTTP {status}"))),
        Some(a) => Err(CallError::Refused(
            a.description
                .map(|d| d.chars().filter(|c| !c.is_control()).take(200).collect())
                .unwrap_or_else(|| format!("HTTP {status}")),
        )),
        None => Err(CallError::Unavailable(format!(
            "HTTP {status} without a Bot API answer"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(text: &str) -> Option<Answer> {
        serde_json::from_str(text).ok()
    }

    #[test]
    fn answers_are_classified() {
        assert_eq!(
            classify(200, answer(r#"{"ok":true,"result":true}"#)),
            Ok(Value::Bool(true))
        );
        assert_eq!(
            classify(
                429,
                answer(
                    r#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 7","parameters":{"retry_after":7}}"#
                )
            ),
            Err(CallError::RetryAfter(7))
        );
        assert!(matches!(
            classify(502, None),
            Err(CallError::Unavailable(_))
        ));
        assert_eq!(
            classify(
                403,
                answer(
                    r#"{"ok":false,"error_code":403,"description":"Forbidden: bot was blocked by the user"}"#
                )
            ),
            Err(CallError::Refused(
                "Forbidden: bot was blocked by the user".into()
            ))
        );
    }

    #[tokio::test]
    async fn unreachable_errors_do_not_carry_the_token() {
        let token = BotToken::parse("123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw").unwrap();
        let api = BotApi::new("http://127.0.0.1:9", token, Duration::from_secs(2));
        let err = api
            .call("sendMessage", &serde_json::json!({}))
            .await
            .unwrap_err()
            .to_string();
        assert!(!err.contains("AAHdq"), "{err}");
    }
}
