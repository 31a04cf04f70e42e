//! The update worker: takes the updates the webhook stored, one chat at a time under that chat's
//! lease (so two api replicas never interleave one conversation), runs the conversation
//! ([`super::conversation`]) and its actions, and stores the next state, the replies (into the
//! outbox) and the update's completion in one transaction. A crash before that transaction
//! replays the update; its actions are safe to repeat (getMe, reads, and changes submitted with
//! an Idempotency-Key derived from the update id).
//!
//! Changes go through the api's own functions (`tenant_ops::provision`, `tenant_ops::suspend`,
//! `tenant_ops::reactivate`, `tenant_ops::update_settings`, after `http::AuthorizedTenant` and
//! through `idempotency::submit_change`, whose typed answer it reads) as the Telegram user, so a
//! chat is held to exactly the rules of the dashboard: tenant cap, write limit, tier and model
//! checks, control characters, ownership (another customer's tenant is not found).

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::IntoResponse;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::conversation::{
    self, Action, ActionResult, Chat, Facts, Reply, SettingChange, TierOffer,
};
use super::db::OutMsg;
use super::i18n::Msg;
use super::update::{Input, Kind};
use super::Bot;
use crate::config::TelegramVerification;
use crate::http::{self, ApiError, AuthorizedIncarnation, AuthorizedTenant, Caller};
use crate::idempotency::{submit_change, Endpoint};
use crate::store::{Customer, StoreError};
use crate::telegram::TelegramError;
use crate::tenant_ops::{self, OwnerBody, ProvisionRequest, SettingsBody};

/// Chats one replica works on at once (each holds a database connection at times; the pool is
/// shared with the api's requests).
pub const CHATS_AT_ONCE: i64 = 4;

/// How long a replica holds a chat while it works on it.
pub const CHAT_LEASE_MS: i64 = 60_000;

pub fn now_ms() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 / 1_000_000
}

impl Bot {
    /// Works on chats with waiting updates; true when it did any work.
    pub async fn work_once(self: &Arc<Bot>) -> Result<bool, StoreError> {
        let chats = self.db.pending_chats(CHATS_AT_ONCE).await?;
        let mut set = tokio::task::JoinSet::new();
        for chat_id in chats {
            let bot = self.clone();
            set.spawn(async move { bot.work_on_chat(chat_id).await });
        }
        let mut worked = false;
        while let Some(done) = set.join_next().await {
            match done {
                Ok(Ok(did)) => worked |= did,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "platform bot: cannot process a chat's updates; retrying")
                }
                Err(e) => tracing::error!(error = %e, "platform bot: a chat's task failed"),
            }
        }
        Ok(worked)
    }

    async fn work_on_chat(self: &Arc<Bot>, chat_id: i64) -> Result<bool, StoreError> {
        let now = now_ms();
        if !self
            .db
            .lease_chat(chat_id, &self.replica, now, now + CHAT_LEASE_MS)
            .await?
        {
            return Ok(false);
        }
        let result = self.process_chat(chat_id).await;
        let released = self.db.release_chat(chat_id, &self.replica).await;
        let worked = result?;
        released?;
        Ok(worked)
    }

    async fn process_chat(self: &Arc<Bot>, chat_id: i64) -> Result<bool, StoreError> {
        let mut chat = self.db.chat(chat_id).await?;
        let mut worked = false;
        for input in self.db.pending_updates(chat_id).await? {
            let (next, messages) = self.handle(&chat, &input).await?;
            if !self
                .db
                .finish_update(&self.replica, &input, &next, &messages, now_ms())
                .await?
            {
                // Another replica took the chat (this one was too slow): it redoes the update.
                tracing::warn!(chat_id, "platform bot: lost a chat's lease mid-work");
                return Ok(worked);
            }
            self.sender_wake.notify_one();
            chat = next;
            worked = true;
        }
        Ok(worked)
    }

    /// One update: the conversation's next state and the Bot API calls to make.
    pub async fn handle(
        &self,
        chat: &Chat,
        input: &Input,
    ) -> Result<(Chat, Vec<OutMsg>), StoreError> {
        let facts = self.facts(input.user_id).await?;
        let mut outcome = conversation::on_input(chat, input, &facts);
        let mut replies = std::mem::take(&mut outcome.replies);
        let mut rounds = 0;
        while let Some(action) = outcome.action.take() {
            rounds += 1;
            if rounds > 3 {
                break;
            }
            let result = self.run(&action, input).await?;
            let facts = self.facts(input.user_id).await?;
            outcome = conversation::on_result(
                &outcome.chat,
                input.language_code.as_deref(),
                &action,
                result,
                &facts,
            );
            replies.append(&mut outcome.replies);
        }
        let mut messages = Vec::new();
        if let Kind::Callback { id, .. } = &input.kind {
            messages.push(OutMsg {
                id: format!("u{:020}-a", input.update_id),
                chat_id: input.chat_id,
                method: "answerCallbackQuery".into(),
                payload: json!({"callback_query_id": id}),
                once: None,
            });
        }
        for (i, reply) in replies.iter().enumerate() {
            messages.push(OutMsg {
                id: format!("u{:020}-{i:03}", input.update_id),
                chat_id: input.chat_id,
                method: "sendMessage".into(),
                payload: send_message(input.chat_id, reply),
                once: reply.once.clone(),
            });
        }
        Ok((outcome.chat, messages))
    }

    /// What the conversation needs to know about a Telegram user.
    async fn facts(&self, telegram_id: i64) -> Result<Facts, StoreError> {
        let store = &self.state.store;
        let mut facts = Facts::default();
        if let Some(customer) = store.customer_by_telegram(telegram_id).await? {
            facts.email_known = customer.email.is_some();
            facts.tenants = store
                .tenants_of(&customer.id)
                .await?
                .into_iter()
                .map(|t| t.name)
                .collect();
        }
        if let Ok(compiled) = tenant_ops::compiled(&self.state).await {
            let platform = &compiled.platform;
            facts.tiers = platform
                .tiers
                .iter()
                .map(|(name, tier)| TierOffer {
                    name: name.to_string(),
                    price: tier
                        .monthly_price
                        .as_ref()
                        .map(|p| format!("{} {}", p.amount, p.currency)),
                    monthly_tokens: tier.monthly_token_budget,
                })
                .collect();
            facts.models = platform
                .models
                .offered
                .iter()
                .map(|m| (m.model_ref.to_string(), m.name.clone()))
                .collect();
        }
        Ok(facts)
    }

    /// The caller a Telegram user acts as: their account (made on first use), with the admin
    /// right the configuration gives their Telegram id, exactly as a signed-in customer.
    async fn caller(&self, input: &Input) -> Result<Caller, StoreError> {
        let customer: Customer = self
            .state
            .store
            .customer_for_telegram(input.user_id, &input.first_name, now_ms())
            .await?;
        let admin = self
            .state
            .config
            .auth
            .admin_telegram_ids
            .contains(&input.user_id);
        Ok(Caller {
            actor: http::customer_actor(&customer),
            admin,
            customer: Some(customer),
        })
    }

    async fn run(&self, action: &Action, input: &Input) -> Result<ActionResult, StoreError> {
        Ok(match action {
            Action::VerifyToken { token } => self.verify(token).await,
            Action::Provision { .. } => self.provision(action, input).await?,
            Action::Status { tenants } => self.status(tenants, input).await?,
            Action::Usage { tenants } => self.usage(tenants, input).await?,
            Action::Pause { tenant } | Action::Resume { tenant } => {
                let caller = self.caller(input).await?;
                let headers = change_headers(input, "")?;
                let pause = matches!(action, Action::Pause { .. });
                let answer = match AuthorizedTenant::authorize(&self.state, caller, tenant).await {
                    Ok(t) => {
                        let who = t.caller().clone();
                        let endpoint = if pause {
                            Endpoint::Suspend(t.name())
                        } else {
                            Endpoint::Reactivate(t.name())
                        };
                        submit_change(&self.state, &headers, endpoint, &[], &who, async |rid| {
                            if pause {
                                tenant_ops::suspend(&t, None, rid)
                            } else {
                                tenant_ops::reactivate(&t, None, rid)
                            }
                        })
                        .await
                    }
                    Err(e) => Err(e),
                };
                match answer {
                    Ok(answer) if answer.change.unchanged => {
                        ActionResult::Say(vec![Msg::Unchanged {
                            name: tenant.clone(),
                        }])
                    }
                    Ok(_) if pause => ActionResult::Say(vec![Msg::Paused {
                        name: tenant.clone(),
                    }]),
                    Ok(_) => ActionResult::Say(vec![Msg::Resumed {
                        name: tenant.clone(),
                    }]),
                    Err(e) => ActionResult::Failed {
                        reason: error_message(e).await,
                    },
                }
            }
            Action::Settings { tenant, change } => {
                let caller = self.caller(input).await?;
                let mut body = SettingsBody::default();
                match change {
                    SettingChange::Model(m) => body.model = Some(m.clone()),
                    SettingChange::Language(l) => body.language = Some(l.clone()),
                    SettingChange::AllowFrom(ids) => body.allow_from = Some(ids.clone()),
                }
                let raw = Bytes::from(
                    json!({"model": body.model, "language": body.language, "allowFrom": body.allow_from})
                        .to_string(),
                );
                let headers = change_headers(input, "")?;
                let answer = match AuthorizedTenant::authorize(&self.state, caller, tenant).await {
                    Ok(t) => {
                        let st = self.state.clone();
                        let who = t.caller().clone();
                        let endpoint = Endpoint::Settings(t.name());
                        submit_change(&self.state, &headers, endpoint, &raw, &who, async |rid| {
                            tenant_ops::update_settings(&st, &t, body, rid).await
                        })
                        .await
                    }
                    Err(e) => Err(e),
                };
                match answer {
                    Ok(_) => ActionResult::Say(vec![Msg::Saved {
                        name: tenant.clone(),
                    }]),
                    Err(e) => ActionResult::Failed {
                        reason: error_message(e).await,
                    },
                }
            }
        })
    }

    async fn verify(&self, sealed: &super::seal::Sealed) -> ActionResult {
        let Some(token) = self.sealer.open(sealed) else {
            return ActionResult::TokenRefused {
                reason: "it could not be read back; paste it again".into(),
            };
        };
        if token.expose() == self.token.expose() {
            return ActionResult::TokenRefused {
                reason: "that is this platform bot's own token, not your agent's".into(),
            };
        }
        if self.state.config.telegram.verification == TelegramVerification::Skip {
            // Dev mode without Telegram: the format was checked; the username is unknown.
            return ActionResult::TokenVerified {
                bot: format!("bot{}", token.bot_id()),
            };
        }
        match self.state.telegram.get_me(&token).await {
            Ok(info) => ActionResult::TokenVerified {
                bot: info
                    .username
                    .unwrap_or_else(|| format!("bot{}", token.bot_id())),
            },
            Err(TelegramError::Rejected(reason)) => ActionResult::TokenRefused { reason },
            Err(TelegramError::Unavailable(_)) => ActionResult::TokenCheckUnavailable,
        }
    }

    async fn provision(&self, action: &Action, input: &Input) -> Result<ActionResult, StoreError> {
        let Action::Provision {
            purpose,
            token,
            bot,
            email,
            tier,
        } = action
        else {
            return Ok(ActionResult::Failed {
                reason: "internal: not a provision".into(),
            });
        };
        let caller = self.caller(input).await?;
        let key = idempotency_key(input);
        let scope = format!("customer:{}", caller.customer_id().unwrap_or_default());
        // A replayed update (after a crash) finds the first answer and says it again.
        if let Some(stored) = self.state.store.idempotent_response(&scope, &key).await? {
            let body: Value = serde_json::from_str(&stored.body).unwrap_or(Value::Null);
            return Ok(if (200..300).contains(&stored.status) {
                let live_notice = match body["tenant"].as_str() {
                    Some(name) => self.live_notice(name).await?,
                    None => None,
                };
                ActionResult::Provisioned {
                    pushed: body["pushed"] == true,
                    live_notice,
                }
            } else {
                ActionResult::Failed {
                    reason: body["error"]["message"]
                        .as_str()
                        .unwrap_or("the sign-up failed")
                        .to_owned(),
                }
            });
        }
        let Some(token) = self.sealer.open(token) else {
            return Ok(ActionResult::Failed {
                reason: "the token could not be read back; send /start and paste it again".into(),
            });
        };
        let name = self.free_name(bot, input).await?;
        let lang = conversation::lang_of(
            &self.db.chat(input.chat_id).await?,
            input.language_code.as_deref(),
        );
        let reason = if purpose.is_empty() {
            "signed up through the platform bot".to_owned()
        } else {
            format!("signed up through the platform bot: {purpose}")
        };
        let body = ProvisionRequest {
            name: name.clone(),
            owner: email.clone().map(|e| OwnerBody {
                email: Some(e),
                telegram_user_id: None,
            }),
            tier: tier.clone(),
            telegram_bot_token: token.expose().to_owned(),
            agent: Some(SettingsBody {
                language: Some(lang.tag().to_owned()),
                ..SettingsBody::default()
            }),
            reason: Some(reason.clone()),
        };
        // The Idempotency-Key's request hash covers the request without the token itself.
        let raw = Bytes::from(
            json!({"name": name, "email": email, "tier": tier, "reason": reason,
                "telegramBotTokenSha256": hex::encode(Sha256::digest(token.expose().as_bytes()))})
            .to_string(),
        );
        let headers = change_headers(input, &key)?;
        let st = self.state.clone();
        let who = caller.clone();
        let answer = submit_change(
            &self.state,
            &headers,
            Endpoint::Provision,
            &raw,
            &caller,
            async move |rid| tenant_ops::provision(&st, &who, body, rid).await,
        )
        .await;
        Ok(match answer {
            // The conversation's "live" message goes under the notice's key: whichever of it
            // and the notifier's notice is stored first is sent, the other never.
            Ok(answer) => ActionResult::Provisioned {
                pushed: answer.change.pushed,
                live_notice: self.live_notice(&name).await?,
            },
            Err(e) => ActionResult::Failed {
                reason: error_message(e).await,
            },
        })
    }

    /// The key of the "live" notice of tenant `name`'s current incarnation.
    async fn live_notice(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .state
            .store
            .tenant(name)
            .await?
            .map(|row| super::live_key(name, row.uid.as_deref().unwrap_or_default())))
    }

    /// A tenant name for the agent's bot: its username as a DNS label, with a suffix derived from
    /// the update when the name is taken.
    async fn free_name(&self, bot: &str, input: &Input) -> Result<String, StoreError> {
        let mut base: String = bot
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        base = base.trim_matches('-').chars().take(34).collect::<String>();
        base = base.trim_end_matches('-').to_owned();
        if compiler::spec::TenantName::parse(base.clone()).is_err() || base.is_empty() {
            base = format!("agent-{}", input.user_id.rem_euclid(1_000_000));
        }
        if self.state.store.tenant(&base).await?.is_none() {
            return Ok(base);
        }
        let digest = hex::encode(Sha256::digest(format!("{}:{}", input.update_id, bot)));
        Ok(format!("{base}-{}", &digest[..5]))
    }

    async fn status(&self, tenants: &[String], input: &Input) -> Result<ActionResult, StoreError> {
        let caller = self.caller(input).await?;
        let pending = self.state.store.pending().await?;
        let mut msgs = Vec::new();
        for name in tenants {
            let view = match AuthorizedTenant::authorize(&self.state, caller.clone(), name).await {
                Ok(t) => tenant_ops::view(&self.state, &t).await,
                Err(e) => Err(e),
            };
            let view = match view {
                Ok(view) => view,
                Err(e) => {
                    msgs.push(Msg::Failed {
                        reason: error_message(e).await,
                    });
                    continue;
                }
            };
            let spec = &view.spec["spec"];
            let state = match (spec["state"].as_str(), spec["suspendedBy"].as_str()) {
                (Some("suspended"), Some(by)) => format!("suspended (by {by})"),
                (Some(s), _) => s.to_owned(),
                _ => "unknown".into(),
            };
            let pipeline = if pending.iter().any(|p| &p.tenant == name) {
                "committed, waiting to be pushed".to_owned()
            } else {
                format!(
                    "committed and pushed ({})",
                    &view.head[..view.head.len().min(12)]
                )
            };
            let last = view
                .last_commit
                .map(|c| {
                    if c.reason.is_empty() {
                        format!("{} at {}", c.action, c.time)
                    } else {
                        format!("{} at {} ({})", c.action, c.time, c.reason)
                    }
                })
                .unwrap_or_else(|| "-".into());
            msgs.push(Msg::Status {
                name: name.clone(),
                state,
                pipeline,
                last,
            });
        }
        Ok(ActionResult::Say(msgs))
    }

    async fn usage(&self, tenants: &[String], input: &Input) -> Result<ActionResult, StoreError> {
        let caller = self.caller(input).await?;
        let mut msgs = Vec::new();
        for name in tenants {
            match self.month_usage(&caller, name).await {
                Ok((used, budget, period)) => msgs.push(Msg::Usage {
                    name: name.clone(),
                    used,
                    budget,
                    period,
                }),
                Err(e) => msgs.push(Msg::Failed {
                    reason: error_message(e).await,
                }),
            }
        }
        Ok(ActionResult::Say(msgs))
    }
}

impl Bot {
    /// This month's billable tokens of the live tenant `name`, its budget and the period's label,
    /// read as the usage endpoint reads them, after the same authorization.
    async fn month_usage(
        &self,
        caller: &Caller,
        name: &str,
    ) -> Result<(u64, Option<u64>, String), ApiError> {
        let tenant =
            AuthorizedIncarnation::authorize(&self.state, caller.clone(), name, None).await?;
        let incarnation = tenant.incarnation();
        let period = crate::period::Period::of(time::OffsetDateTime::now_utc());
        let month = crate::usage::month_usage(
            self.state.store.pool(),
            &self.state.ledger.feed,
            &incarnation.ledger_key,
            name,
            incarnation.live,
            period,
        )
        .await
        .map_err(|e| ApiError::Unavailable(format!("cannot read usage: {e}")))?;
        let (used, budget) = (month.total.billable_tokens, month.budget);
        Ok((used.max(0) as u64, budget, period.label()))
    }
}

fn idempotency_key(input: &Input) -> String {
    format!("bot-update-{}", input.update_id)
}

/// Headers of a change made from an update: its Idempotency-Key (so a replay after a crash
/// repeats nothing) and a request id naming the update.
fn change_headers(input: &Input, key: &str) -> Result<HeaderMap, StoreError> {
    let key = if key.is_empty() {
        idempotency_key(input)
    } else {
        key.to_owned()
    };
    let mut headers = HeaderMap::new();
    let value = HeaderValue::from_str(&key).map_err(|e| StoreError::Invalid(e.to_string()))?;
    headers.insert("idempotency-key", value.clone());
    headers.insert("x-request-id", value);
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(headers)
}

/// The message of an error answer (JSON errors never hold secrets).
async fn error_message(e: ApiError) -> String {
    let response = e.into_response();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    body["error"]["message"]
        .as_str()
        .unwrap_or("the request failed")
        .to_owned()
}

/// A `sendMessage` body with an inline keyboard when the reply has buttons.
pub fn send_message(chat_id: i64, reply: &Reply) -> Value {
    let mut body = json!({"chat_id": chat_id, "text": reply.text});
    if !reply.buttons.is_empty() {
        let rows: Vec<Vec<Value>> = reply
            .buttons
            .iter()
            .map(|row| {
                row.iter()
                    .map(|b| json!({"text": b.text, "callback_data": b.data}))
                    .collect()
            })
            .collect();
        body["reply_markup"] = json!({"inline_keyboard": rows});
    }
    body
}
