//! The platform bot's conversation as a pure state machine: (state, input, facts) → (next
//! state, replies, at most one action). It does no I/O and knows nothing of HTTP or the
//! database: the worker ([`super::worker`]) gathers the facts, runs the action (getMe,
//! provisioning, status, ...) and feeds its result back through [`on_result`].
//!
//! The state is stored per chat as JSON, so a restarted or another api replica continues the
//! conversation. A bot token in the state is always [`Sealed`].

use serde::{Deserialize, Serialize};

use super::i18n::{text, Lang, Msg};
use super::seal::Sealed;
use super::update::{Input, Kind};

/// Longest "what is the agent for" answer.
pub const MAX_PURPOSE: usize = 300;
/// Most Telegram ids in an agent's allow list set from the bot.
pub const MAX_ALLOW_FROM: usize = 20;

/// A chat's stored state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chat {
    /// The language chosen in onboarding; before that, the user's Telegram language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lang: Option<Lang>,
    #[serde(default)]
    pub step: Step,
}

/// Where the conversation stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    #[default]
    Idle,
    Language,
    Purpose,
    Token {
        purpose: String,
    },
    Email {
        purpose: String,
        token: Sealed,
        bot: String,
    },
    Tier {
        purpose: String,
        token: Sealed,
        bot: String,
        email: Option<String>,
    },
    Confirm {
        purpose: String,
        token: Sealed,
        bot: String,
        email: Option<String>,
        tier: String,
    },
    Settings {
        tenant: String,
    },
    AllowFrom {
        tenant: String,
    },
}

/// A plan on offer, as the tier keyboard shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierOffer {
    pub name: String,
    /// `9 EUR`, from templates/platform.yaml.
    pub price: Option<String>,
    pub monthly_tokens: u64,
}

/// What the worker knows about the user when an input arrives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// The tenants the user owns, by name.
    pub tenants: Vec<String>,
    /// Whether the user's account has an email (else onboarding asks for one).
    pub email_known: bool,
    pub tiers: Vec<TierOffer>,
    /// Models a tenant may choose: (ref, display name).
    pub models: Vec<(String, String)>,
}

/// One inline keyboard button.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Button {
    pub text: String,
    /// `callback_data`, at most 64 bytes.
    pub data: String,
}

/// One message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub text: String,
    /// Rows of inline keyboard buttons (none: a plain message).
    pub buttons: Vec<Vec<Button>>,
    /// The notice key this message is sent under at most once (shared with the notifier).
    pub once: Option<String>,
}

/// A change of agent settings asked for in the chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingChange {
    Model(String),
    Language(String),
    AllowFrom(Vec<i64>),
}

/// Work with effects outside the conversation, done by the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Ask Telegram's getMe about the pasted token.
    VerifyToken {
        token: Sealed,
    },
    /// Provision the agent as this Telegram user.
    Provision {
        purpose: String,
        token: Sealed,
        bot: String,
        email: Option<String>,
        tier: String,
    },
    Status {
        tenants: Vec<String>,
    },
    Usage {
        tenants: Vec<String>,
    },
    Pause {
        tenant: String,
    },
    Resume {
        tenant: String,
    },
    Settings {
        tenant: String,
        change: SettingChange,
    },
}

/// What an action came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionResult {
    /// getMe accepted the token; the bot's username.
    TokenVerified {
        bot: String,
    },
    TokenRefused {
        reason: String,
    },
    TokenCheckUnavailable,
    /// The tenant is committed; `pushed` once it is on the remote Flux watches. `live_notice`:
    /// the key of the incarnation's "live" notice, which the conversation's own "live" message
    /// is sent under, so that it and the notifier's notice reach the customer once in all.
    Provisioned {
        pushed: bool,
        live_notice: Option<String>,
    },
    /// The action was refused or failed; the reason is safe to show (no secrets).
    Failed {
        reason: String,
    },
    /// The action is done; say these.
    Say(Vec<Msg>),
}

/// The next state, the replies, and the action to run (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub chat: Chat,
    pub replies: Vec<Reply>,
    pub action: Option<Action>,
}

struct Out {
    chat: Chat,
    lang: Lang,
    replies: Vec<Reply>,
    action: Option<Action>,
}

impl Out {
    fn say(&mut self, msg: Msg) {
        self.replies.push(Reply {
            text: text(self.lang, &msg),
            buttons: Vec::new(),
            once: None,
        });
    }

    fn ask(&mut self, msg: Msg, buttons: Vec<Vec<Button>>) {
        self.replies.push(Reply {
            text: text(self.lang, &msg),
            buttons,
            once: None,
        });
    }

    fn button(&self, msg: Msg, data: String) -> Button {
        Button {
            text: text(self.lang, &msg),
            data,
        }
    }

    fn to(&mut self, step: Step) {
        self.chat.step = step;
    }

    fn done(self) -> Outcome {
        Outcome {
            chat: self.chat,
            replies: self.replies,
            action: self.action,
        }
    }
}

/// The language to speak in a chat.
pub fn lang_of(chat: &Chat, language_code: Option<&str>) -> Lang {
    chat.lang
        .unwrap_or_else(|| Lang::from_telegram(language_code))
}

fn language_buttons() -> Vec<Vec<Button>> {
    vec![vec![
        Button {
            text: "English".into(),
            data: "lang:en".into(),
        },
        Button {
            text: "Português (Brasil)".into(),
            data: "lang:pt-BR".into(),
        },
    ]]
}

fn one_per_row(buttons: Vec<Button>) -> Vec<Vec<Button>> {
    buttons.into_iter().map(|b| vec![b]).collect()
}

/// Whether `text` is acceptable free text (no control characters, separators, bidi overrides).
fn plain(text: &str) -> bool {
    !text.chars().any(compiler::spec::refused_char)
}

/// Handles one input.
pub fn on_input(chat: &Chat, input: &Input, facts: &Facts) -> Outcome {
    let lang = lang_of(chat, input.language_code.as_deref());
    let mut out = Out {
        chat: chat.clone(),
        lang,
        replies: Vec::new(),
        action: None,
    };
    if let Kind::TokenInGroup = input.kind {
        out.say(Msg::TokenInGroup);
        return out.done();
    }
    if !input.private {
        // In groups the bot only points to a private chat: nothing about an agent is said where
        // others read along.
        if let Kind::Command { name, .. } = &input.kind {
            if matches!(name.as_str(), "start" | "help") {
                out.say(Msg::PrivateOnly);
            }
        }
        return out.done();
    }
    match &input.kind {
        Kind::Command { name, .. } => command(&mut out, name, facts),
        Kind::Callback { data, .. } => callback(&mut out, data, input, facts),
        Kind::Token { token } => match &chat.step {
            Step::Token { .. } | Step::Purpose => {
                out.action = Some(Action::VerifyToken {
                    token: token.clone(),
                })
            }
            _ => {
                // A token outside onboarding is not used; it was sealed and is dropped here.
                out.say(Msg::Help);
            }
        },
        Kind::Text { text } => on_text(&mut out, text, facts),
        Kind::TokenInGroup | Kind::Other => out.say(Msg::Help),
    }
    out.done()
}

fn command(out: &mut Out, name: &str, facts: &Facts) {
    match name {
        "start" => {
            out.to(Step::Language);
            out.ask(Msg::ChooseLanguage, language_buttons());
        }
        "cancel" => {
            out.to(Step::Idle);
            out.say(Msg::Cancelled);
        }
        "status" | "usage" if facts.tenants.is_empty() => out.say(Msg::NoAgents),
        "status" => {
            out.action = Some(Action::Status {
                tenants: facts.tenants.clone(),
            })
        }
        "usage" => {
            out.action = Some(Action::Usage {
                tenants: facts.tenants.clone(),
            })
        }
        "pause" | "resume" | "settings" => match facts.tenants.as_slice() {
            [] => out.say(Msg::NoAgents),
            [one] => picked(out, name, one),
            many => {
                let buttons = many
                    .iter()
                    .map(|t| Button {
                        text: t.clone(),
                        data: format!("{name}:{t}"),
                    })
                    .collect();
                out.ask(Msg::ChooseAgent, one_per_row(buttons));
            }
        },
        _ => out.say(Msg::Help),
    }
}

/// A tenant was chosen for `what`.
fn picked(out: &mut Out, what: &str, tenant: &str) {
    let tenant = tenant.to_owned();
    match what {
        "pause" => out.action = Some(Action::Pause { tenant }),
        "resume" => out.action = Some(Action::Resume { tenant }),
        _ => {
            let buttons = vec![
                out.button(Msg::SettingModel, "menu:model".into()),
                out.button(Msg::SettingLanguage, "menu:language".into()),
                out.button(Msg::SettingAllow, "menu:allow".into()),
            ];
            out.ask(
                Msg::SettingsMenu {
                    name: tenant.clone(),
                },
                one_per_row(buttons),
            );
            out.to(Step::Settings { tenant });
        }
    }
}

fn callback(out: &mut Out, data: &str, input: &Input, facts: &Facts) {
    let (key, value) = data.split_once(':').unwrap_or((data, ""));
    let step = out.chat.step.clone();
    match (key, step) {
        ("pause" | "resume" | "settings", _) if facts.tenants.iter().any(|t| t == value) => {
            picked(out, key, value)
        }
        ("lang", Step::Language) => match Lang::parse(value) {
            Some(lang) => {
                out.chat.lang = Some(lang);
                out.lang = lang;
                out.to(Step::Purpose);
                out.say(Msg::AskPurpose);
            }
            None => out.say(Msg::UseButtons),
        },
        (
            "tier",
            Step::Tier {
                purpose,
                token,
                bot,
                email,
            },
        ) => match facts.tiers.iter().find(|t| t.name == value) {
            Some(tier) => {
                let buttons = vec![vec![
                    out.button(Msg::Yes, "confirm:yes".into()),
                    out.button(Msg::Cancel, "confirm:no".into()),
                ]];
                out.ask(
                    Msg::Confirm {
                        bot: bot.clone(),
                        tier: tier.name.clone(),
                        price: tier.price.clone(),
                    },
                    buttons,
                );
                out.to(Step::Confirm {
                    purpose,
                    token,
                    bot,
                    email,
                    tier: tier.name.clone(),
                });
            }
            None => out.say(Msg::UseButtons),
        },
        (
            "confirm",
            Step::Confirm {
                purpose,
                token,
                bot,
                email,
                tier,
            },
        ) => {
            if value == "yes" {
                out.to(Step::Idle);
                out.action = Some(Action::Provision {
                    purpose,
                    token,
                    bot,
                    email,
                    tier,
                });
            } else {
                out.to(Step::Idle);
                out.say(Msg::Cancelled);
            }
        }
        ("menu", Step::Settings { tenant }) => match value {
            "model" => {
                let buttons = facts
                    .models
                    .iter()
                    .map(|(model, name)| Button {
                        text: name.clone(),
                        data: format!("model:{model}"),
                    })
                    .filter(|b| b.data.len() <= 64)
                    .collect();
                out.ask(Msg::ChooseModel, one_per_row(buttons));
            }
            "language" => {
                let buttons = language_buttons()
                    .into_iter()
                    .flatten()
                    .map(|b| Button {
                        data: b.data.replacen("lang:", "alang:", 1),
                        ..b
                    })
                    .collect();
                out.ask(Msg::ChooseAgentLanguage, vec![buttons]);
            }
            "allow" => {
                out.say(Msg::AskAllowFrom { own: input.user_id });
                out.to(Step::AllowFrom { tenant });
            }
            _ => out.say(Msg::UseButtons),
        },
        ("model", Step::Settings { tenant }) if facts.models.iter().any(|(m, _)| m == value) => {
            out.to(Step::Idle);
            out.action = Some(Action::Settings {
                tenant,
                change: SettingChange::Model(value.to_owned()),
            });
        }
        ("alang", Step::Settings { tenant }) if Lang::parse(value).is_some() => {
            out.to(Step::Idle);
            out.action = Some(Action::Settings {
                tenant,
                change: SettingChange::Language(value.to_owned()),
            });
        }
        _ => out.say(Msg::UseButtons),
    }
}

fn on_text(out: &mut Out, text: &str, facts: &Facts) {
    match out.chat.step.clone() {
        Step::Purpose => {
            let purpose = text.trim();
            if purpose.is_empty() || purpose.chars().count() > MAX_PURPOSE || !plain(purpose) {
                out.say(Msg::PurposeInvalid);
            } else {
                out.to(Step::Token {
                    purpose: purpose.to_owned(),
                });
                out.say(Msg::AskToken);
            }
        }
        Step::Token { .. } => out.say(Msg::AskToken),
        Step::Email {
            purpose,
            token,
            bot,
        } => {
            let email = text.trim();
            let checked = if plain(email) {
                compiler::spec::Email::parse(email.to_owned()).map(|_| ())
            } else {
                Err("control characters".to_owned())
            };
            match checked {
                Ok(()) => {
                    out.to(Step::Tier {
                        purpose,
                        token,
                        bot,
                        email: Some(email.to_owned()),
                    });
                    tier_keyboard(out, facts);
                }
                Err(reason) => out.say(Msg::EmailInvalid { reason }),
            }
        }
        Step::AllowFrom { tenant } => match parse_ids(text) {
            Some(ids) => {
                out.to(Step::Idle);
                out.action = Some(Action::Settings {
                    tenant,
                    change: SettingChange::AllowFrom(ids),
                });
            }
            None => out.say(Msg::AllowInvalid),
        },
        Step::Language | Step::Tier { .. } | Step::Confirm { .. } | Step::Settings { .. } => {
            out.say(Msg::UseButtons)
        }
        Step::Idle => out.say(Msg::Help),
    }
}

fn parse_ids(text: &str) -> Option<Vec<i64>> {
    let ids = text
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| !w.is_empty())
        .map(|w| w.parse::<i64>().ok().filter(|id| *id > 0))
        .collect::<Option<Vec<_>>>()?;
    (1..=MAX_ALLOW_FROM).contains(&ids.len()).then_some(ids)
}

fn tier_keyboard(out: &mut Out, facts: &Facts) {
    let buttons = facts
        .tiers
        .iter()
        .map(|t| {
            out.button(
                Msg::TierButton {
                    tier: t.name.clone(),
                    price: t.price.clone(),
                    tokens: t.monthly_tokens,
                },
                format!("tier:{}", t.name),
            )
        })
        .collect();
    out.ask(Msg::ChooseTier, one_per_row(buttons));
}

/// Handles what `action` came to.
pub fn on_result(
    chat: &Chat,
    language_code: Option<&str>,
    action: &Action,
    result: ActionResult,
    facts: &Facts,
) -> Outcome {
    let lang = lang_of(chat, language_code);
    let mut out = Out {
        chat: chat.clone(),
        lang,
        replies: Vec::new(),
        action: None,
    };
    match (action, result) {
        (Action::VerifyToken { token }, ActionResult::TokenVerified { bot }) => {
            let purpose = match &chat.step {
                Step::Token { purpose } => purpose.clone(),
                _ => String::new(),
            };
            let token = token.clone();
            if facts.email_known {
                out.to(Step::Tier {
                    purpose,
                    token,
                    bot,
                    email: None,
                });
                tier_keyboard(&mut out, facts);
            } else {
                out.to(Step::Email {
                    purpose,
                    token,
                    bot,
                });
                out.say(Msg::AskEmail);
            }
        }
        (_, ActionResult::TokenVerified { .. }) => out.say(Msg::UseButtons),
        (_, ActionResult::TokenRefused { reason }) => {
            if let Step::Purpose = chat.step {
                out.to(Step::Token {
                    purpose: String::new(),
                });
            }
            out.say(Msg::TokenRefused { reason })
        }
        (_, ActionResult::TokenCheckUnavailable) => out.say(Msg::TokenCheckUnavailable),
        (
            Action::Provision { bot, .. },
            ActionResult::Provisioned {
                pushed,
                live_notice,
            },
        ) => {
            out.say(Msg::SettingUp { bot: bot.clone() });
            if pushed {
                out.say(Msg::Live { bot: bot.clone() });
                if let Some(last) = out.replies.last_mut() {
                    last.once = live_notice;
                }
            } else {
                out.say(Msg::Queued { bot: bot.clone() });
            }
        }
        (_, ActionResult::Provisioned { .. }) => {}
        (_, ActionResult::Failed { reason }) => out.say(Msg::Failed { reason }),
        (_, ActionResult::Say(msgs)) => {
            for msg in msgs {
                out.say(msg);
            }
        }
    }
    out.done()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bot::seal::Sealer;
    use crate::telegram::BotToken;

    fn input(kind: Kind) -> Input {
        Input {
            update_id: 1,
            chat_id: 42,
            user_id: 42,
            private: true,
            first_name: "Ada".into(),
            language_code: Some("en".into()),
            kind,
        }
    }

    fn text(t: &str) -> Kind {
        Kind::Text { text: t.into() }
    }

    fn press(data: &str) -> Kind {
        Kind::Callback {
            id: "1".into(),
            data: data.into(),
        }
    }

    fn facts() -> Facts {
        Facts {
            tenants: vec!["acme".into()],
            email_known: false,
            tiers: vec![TierOffer {
                name: "starter".into(),
                price: Some("9 EUR".into()),
                monthly_tokens: 5_000_000,
            }],
            models: vec![("kimi/k3".into(), "Kimi K3".into())],
        }
    }

    #[test]
    fn onboarding_steps() {
        let f = facts();
        let start = on_input(
            &Chat::default(),
            &input(Kind::Command {
                name: "start".into(),
                arg: String::new(),
            }),
            &f,
        );
        assert_eq!(start.chat.step, Step::Language);
        assert_eq!(start.replies[0].buttons[0].len(), 2);
        let lang = on_input(&start.chat, &input(press("lang:pt-BR")), &f);
        assert_eq!(lang.chat.lang, Some(Lang::PtBr));
        assert_eq!(lang.chat.step, Step::Purpose);
        let bad = on_input(&lang.chat, &input(text("a\u{202e}b")), &f);
        assert_eq!(
            bad.chat.step,
            Step::Purpose,
            "control characters are refused"
        );
        let purpose = on_input(&lang.chat, &input(text("my calendar")), &f);
        assert_eq!(
            purpose.chat.step,
            Step::Token {
                purpose: "my calendar".into()
            }
        );
        let sealer = Sealer::new("777000:AALplatform");
        let token =
            sealer.seal(&BotToken::parse("123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw").unwrap());
        let pasted = on_input(
            &purpose.chat,
            &input(Kind::Token {
                token: token.clone(),
            }),
            &f,
        );
        let action = pasted.action.clone().expect("getMe is asked");
        assert_eq!(action, Action::VerifyToken { token });
        let verified = on_result(
            &pasted.chat,
            None,
            &action,
            ActionResult::TokenVerified {
                bot: "ada_bot".into(),
            },
            &f,
        );
        assert!(matches!(verified.chat.step, Step::Email { .. }));
        let email = on_input(&verified.chat, &input(text("ada@example.com")), &f);
        assert!(matches!(email.chat.step, Step::Tier { .. }));
        assert_eq!(email.replies[0].buttons[0][0].data, "tier:starter");
        assert!(email.replies[0].buttons[0][0].text.contains("9 EUR/mês"));
        let tier = on_input(&email.chat, &input(press("tier:starter")), &f);
        assert!(matches!(tier.chat.step, Step::Confirm { .. }));
        let go = on_input(&tier.chat, &input(press("confirm:yes")), &f);
        assert_eq!(
            go.chat.step,
            Step::Idle,
            "the sealed token leaves the state"
        );
        assert!(matches!(go.action, Some(Action::Provision { .. })));
    }

    #[test]
    fn groups_stray_buttons_and_other_tenants() {
        let f = facts();
        let mut group = input(Kind::Command {
            name: "status".into(),
            arg: String::new(),
        });
        group.private = false;
        let said = on_input(&Chat::default(), &group, &f);
        assert!(
            said.replies.is_empty() && said.action.is_none(),
            "nothing about agents in groups"
        );
        let stray = on_input(&Chat::default(), &input(press("confirm:yes")), &f);
        assert!(stray.action.is_none());
        let forged = on_input(&Chat::default(), &input(press("pause:someone-else")), &f);
        assert!(
            forged.action.is_none(),
            "only the user's own tenants are offered"
        );
        let own = on_input(&Chat::default(), &input(press("pause:acme")), &f);
        assert_eq!(
            own.action,
            Some(Action::Pause {
                tenant: "acme".into()
            })
        );
        assert_eq!(parse_ids("1 2,3"), Some(vec![1, 2, 3]));
        assert_eq!(parse_ids("1 -2"), None);
        assert_eq!(parse_ids(""), None);
    }
}
