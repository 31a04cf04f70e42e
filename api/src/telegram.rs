//! Telegram bot tokens: the format check and the getMe call that proves Telegram accepts a token.
//!
//! A bot token is a secret: it appears in the getMe URL, so no error or log line produced here
//! carries the URL, the token or any part of it.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

/// A Telegram bot token whose format was checked (`<bot id>:<secret>`). `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct BotToken(String);

impl fmt::Debug for BotToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BotToken(<redacted>)")
    }
}

impl BotToken {
    /// Checks the shape Telegram issues: 5 to 12 digits, a colon, 30 to 64 characters of
    /// `[A-Za-z0-9_-]`.
    pub fn parse(token: &str) -> Result<BotToken, &'static str> {
        let (id, secret) = token
            .split_once(':')
            .ok_or("must look like <bot id>:<secret> (the token BotFather gave you)")?;
        if !(5..=12).contains(&id.len()) || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err("the part before ':' must be the bot's numeric id (5 to 12 digits)");
        }
        if !(30..=64).contains(&secret.len())
            || !secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(
                "the part after ':' must be 30 to 64 characters of letters, digits, '_' or '-'",
            );
        }
        Ok(BotToken(token.to_owned()))
    }

    /// The bot's numeric id (public).
    pub fn bot_id(&self) -> &str {
        self.0.split_once(':').map(|(id, _)| id).unwrap_or_default()
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// What getMe says about a bot.
#[derive(Debug, Clone, Deserialize)]
pub struct BotInfo {
    pub id: i64,
    pub is_bot: bool,
    pub username: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TelegramError {
    /// Telegram answered and refused the token.
    #[error("Telegram refused the bot token ({0})")]
    Rejected(String),
    /// Telegram could not be asked.
    #[error("Telegram could not be reached to verify the bot token: {0}")]
    Unavailable(String),
}

/// Client for the Bot API's getMe.
#[derive(Clone)]
pub struct Telegram {
    http: reqwest::Client,
    base_url: String,
}

#[derive(Deserialize)]
struct GetMe {
    ok: bool,
    result: Option<BotInfo>,
    description: Option<String>,
}

impl Telegram {
    pub fn new(base_url: &str, timeout: Duration) -> Telegram {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .expect("a reqwest client with a timeout builds");
        Telegram {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
        }
    }

    /// Calls `{base_url}/bot<token>/getMe`; Ok when Telegram knows the token and it is a bot.
    pub async fn get_me(&self, token: &BotToken) -> Result<BotInfo, TelegramError> {
        let url = format!("{}/bot{}/getMe", self.base_url, token.expose());
        // `without_url` strips the URL (which holds the token) from reqwest's errors.
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| TelegramError::Unavailable(e.without_url().to_string()))?;
        let status = response.status();
        if status.is_server_error() {
            return Err(TelegramError::Unavailable(format!("HTTP {status}")));
        }
        let body: GetMe = response.json().await.map_err(|e| {
            TelegramError::Unavailable(format!("unexpected answer: {}", e.without_url()))
        })?;
        match (body.ok, body.result) {
            (true, Some(info)) if info.is_bot && info.id.to_string() == token.bot_id() => Ok(info),
            (true, Some(_)) => Err(TelegramError::Rejected(
                "the token does not belong to this bot".into(),
            )),
            _ => Err(TelegramError::Rejected(
                body.description.unwrap_or_else(|| format!("HTTP {status}")),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert!(BotToken::parse("123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw").is_ok());
        assert!(BotToken::parse("123456789AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw").is_err());
        assert!(BotToken::parse("12ab:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw").is_err());
        assert!(BotToken::parse("123456789:short").is_err());
        assert!(BotToken::parse("123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDs w").is_err());
    }

    #[test]
    fn debug_hides_the_token() {
        let token = BotToken::parse("123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw").unwrap();
        assert!(!format!("{token:?}").contains("AAHdq"));
        assert_eq!(token.bot_id(), "123456789");
    }

    #[tokio::test]
    async fn unreachable_error_does_not_leak_the_token() {
        let telegram = Telegram::new("http://127.0.0.1:9", Duration::from_secs(2));
        let token = BotToken::parse("123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw").unwrap();
        let err = telegram.get_me(&token).await.unwrap_err().to_string();
        assert!(!err.contains("AAHdq"), "{err}");
        assert!(matches!(
            telegram.get_me(&token).await,
            Err(TelegramError::Unavailable(_))
        ));
    }
}
