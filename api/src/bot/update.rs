//! Telegram updates, parsed at the webhook into what the conversation needs ([`Input`]) and
//! nothing more: a bot token in a message is sealed ([`super::seal`]) in a private chat and
//! dropped in a group, so the stored update never holds one in plaintext.

use serde::{Deserialize, Serialize};

use super::seal::{Sealed, Sealer};
use crate::telegram::BotToken;

/// Longest message text kept; longer text is cut (the conversation refuses it where it matters).
pub const MAX_TEXT: usize = 2000;

/// One update as the conversation sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Input {
    pub update_id: i64,
    pub chat_id: i64,
    /// The Telegram user who sent it (`from.id`), trusted once the webhook secret matched.
    pub user_id: i64,
    /// A private chat with the bot (tokens are only taken there).
    pub private: bool,
    pub first_name: String,
    /// The user's Telegram language (`language_code`), used before they chose one.
    pub language_code: Option<String>,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Kind {
    /// `/name rest` (a `@BotName` suffix removed, the name in lower case).
    Command {
        name: String,
        arg: String,
    },
    Text {
        text: String,
    },
    /// A message holding a bot token, in a private chat: the token, sealed.
    Token {
        token: Sealed,
    },
    /// A message holding a bot token in a group: the token is neither kept nor used.
    TokenInGroup,
    /// A press on an inline keyboard button.
    Callback {
        id: String,
        data: String,
    },
    /// Anything else (stickers, photos, ...): answered with help in a private chat.
    Other,
}

#[derive(Deserialize)]
struct Update {
    update_id: i64,
    message: Option<Message>,
    callback_query: Option<CallbackQuery>,
}

#[derive(Deserialize)]
struct Message {
    from: Option<User>,
    chat: Chat,
    text: Option<String>,
}

#[derive(Deserialize)]
struct CallbackQuery {
    id: String,
    from: User,
    message: Option<CallbackMessage>,
    data: Option<String>,
}

#[derive(Deserialize)]
struct CallbackMessage {
    chat: Chat,
}

#[derive(Deserialize)]
struct User {
    id: i64,
    #[serde(default)]
    is_bot: bool,
    #[serde(default)]
    first_name: String,
    language_code: Option<String>,
}

#[derive(Deserialize)]
struct Chat {
    id: i64,
    #[serde(rename = "type")]
    kind: String,
}

/// Why an update is acknowledged and dropped.
#[derive(Debug, PartialEq, Eq)]
pub enum Dropped {
    /// Not a Telegram update (no `update_id`, wrong types).
    Malformed,
    /// An update kind or sender the bot does not act on (edited messages, channel posts, bots).
    Ignored,
}

/// The update's id alone, for a body [`parse`] refuses (acknowledged, not processed).
pub fn update_id(body: &[u8]) -> Option<i64> {
    #[derive(Deserialize)]
    struct Id {
        update_id: i64,
    }
    serde_json::from_slice::<Id>(body).ok().map(|i| i.update_id)
}

/// Parses an update's body. A bot token in the text is sealed with `sealer` (private chat) or
/// dropped (group).
pub fn parse(body: &[u8], sealer: &Sealer) -> Result<Input, Dropped> {
    let update: Update = serde_json::from_slice(body).map_err(|_| Dropped::Malformed)?;
    if let Some(query) = update.callback_query {
        let chat = query.message.ok_or(Dropped::Ignored)?.chat;
        if query.from.is_bot {
            return Err(Dropped::Ignored);
        }
        return Ok(Input {
            update_id: update.update_id,
            chat_id: chat.id,
            user_id: query.from.id,
            private: chat.kind == "private",
            first_name: clean(&query.from.first_name, 64),
            language_code: query.from.language_code.map(|l| clean(&l, 16)),
            kind: Kind::Callback {
                id: clean(&query.id, 64),
                data: clean(&query.data.unwrap_or_default(), 64),
            },
        });
    }
    let message = update.message.ok_or(Dropped::Ignored)?;
    let from = message.from.ok_or(Dropped::Ignored)?;
    if from.is_bot {
        return Err(Dropped::Ignored);
    }
    let private = message.chat.kind == "private";
    let kind = match message.text {
        None => Kind::Other,
        Some(text) => match find_token(&text) {
            Some(token) if private => Kind::Token {
                token: sealer.seal(&token),
            },
            Some(_) => Kind::TokenInGroup,
            None => classify_text(&text),
        },
    };
    Ok(Input {
        update_id: update.update_id,
        chat_id: message.chat.id,
        user_id: from.id,
        private,
        first_name: clean(&from.first_name, 64),
        language_code: from.language_code.map(|l| clean(&l, 16)),
        kind,
    })
}

fn classify_text(text: &str) -> Kind {
    let trimmed = text.trim();
    if let Some(command) = trimmed.strip_prefix('/') {
        let (head, arg) = command
            .split_once(char::is_whitespace)
            .unwrap_or((command, ""));
        let name = head.split('@').next().unwrap_or_default();
        if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Kind::Command {
                name: name.to_ascii_lowercase(),
                arg: cut(arg.trim(), MAX_TEXT),
            };
        }
    }
    Kind::Text {
        text: cut(trimmed, MAX_TEXT),
    }
}

/// The first word of `text` shaped like a bot token (surrounding punctuation ignored).
pub fn find_token(text: &str) -> Option<BotToken> {
    text.split(|c: char| c.is_whitespace() || matches!(c, '`' | '"' | '\'' | '<' | '>' | ','))
        .map(|w| w.trim_matches(|c: char| !c.is_ascii_alphanumeric()))
        .find_map(|w| BotToken::parse(w).ok())
}

fn cut(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// Display text from Telegram: control characters removed, cut to `max` characters.
fn clean(text: &str, max: usize) -> String {
    text.chars()
        .filter(|c| !compiler::spec::refused_char(*c))
        .take(max)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";

    fn message(chat_type: &str, text: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "update_id": 10,
            "message": {"message_id": 1, "date": 1, "text": text,
                "from": {"id": 42, "is_bot": false, "first_name": "Ada", "language_code": "pt-br"},
                "chat": {"id": if chat_type == "private" { 42 } else { -100 }, "type": chat_type}}
        }))
        .unwrap()
    }

    #[test]
    fn commands_texts_and_callbacks() {
        let sealer = Sealer::new("777000:AALplatform");
        let input = parse(&message("private", "/Start@OpenClawBot hello"), &sealer).unwrap();
        assert_eq!(
            input.kind,
            Kind::Command {
                name: "start".into(),
                arg: "hello".into()
            }
        );
        assert_eq!(
            (input.user_id, input.chat_id, input.private),
            (42, 42, true)
        );
        let body = serde_json::to_vec(&serde_json::json!({
            "update_id": 11,
            "callback_query": {"id": "99", "from": {"id": 42, "is_bot": false, "first_name": "Ada"},
                "message": {"message_id": 5, "date": 1, "chat": {"id": 42, "type": "private"}}, "data": "lang:en"}
        }))
        .unwrap();
        assert_eq!(
            parse(&body, &sealer).unwrap().kind,
            Kind::Callback {
                id: "99".into(),
                data: "lang:en".into()
            }
        );
    }

    #[test]
    fn tokens_are_sealed_in_private_and_dropped_in_groups() {
        let sealer = Sealer::new("777000:AALplatform");
        let input = parse(&message("private", &format!("here: `{TOKEN}`")), &sealer).unwrap();
        let stored = serde_json::to_string(&input).unwrap();
        assert!(!stored.contains("AAHdq"), "{stored}");
        let Kind::Token { token } = input.kind else {
            panic!("a token")
        };
        assert_eq!(sealer.open(&token).unwrap().expose(), TOKEN);
        let input = parse(&message("supergroup", TOKEN), &sealer).unwrap();
        assert_eq!(input.kind, Kind::TokenInGroup);
        assert!(!serde_json::to_string(&input).unwrap().contains("AAHdq"));
    }

    #[test]
    fn malformed_and_ignored() {
        let sealer = Sealer::new("777000:AALplatform");
        assert_eq!(parse(b"{", &sealer), Err(Dropped::Malformed));
        assert_eq!(
            parse(b"{\"update_id\":\"x\"}", &sealer),
            Err(Dropped::Malformed)
        );
        assert_eq!(
            parse(b"{\"update_id\":3,\"edited_message\":{}}", &sealer),
            Err(Dropped::Ignored)
        );
        assert_eq!(update_id(b"{\"update_id\":3,\"message\":7}"), Some(3));
    }
}
