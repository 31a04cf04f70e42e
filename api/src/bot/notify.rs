//! Notices to owners: the agent live, suspended or reactivated (and by whom), the monthly
//! budget at 90 % and 100 %, and a connection added or removed. The notifier reads the budget
//! feed the api already keeps (tenant state, connections and usage at the state repo's head,
//! [`crate::budget`]) and queues each notice once in the outbox, by a key in `bot_notices` (or,
//! for connections, a compare-and-set of the providers last told), so that several api replicas
//! send it once.
//!
//! Who suspended a tenant is read from its spec (`spec.suspendedBy`); who reactivated it from
//! the change the api recorded for it ([`crate::store::Store::last_state_change`]), `platform`
//! when the api made none (an SRE's change in the state repo). Never from commit messages. A
//! customer's own suspension or reactivation is not news to them and is not announced.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::conversation::{lang_of, Reply};
use super::db::OutMsg;
use super::i18n::{text, Msg};
use super::worker::{now_ms, send_message};
use super::Bot;
use contracts::provider::Provider;
use sha2::{Digest, Sha256};

use crate::budget::{FeedBody, FeedState};
use crate::lifecycle::{Operation, Role};
use crate::store::StoreError;

/// How often the notifier looks at the feed.
pub const EVERY: Duration = Duration::from_secs(2);
/// A tenant first seen active within this long of its creation is announced as live.
const NEW_TENANT_MS: i64 = 3_600_000;

/// What the notifier remembers between rounds (the database remembers across restarts).
#[derive(Default)]
pub struct Seen {
    states: HashMap<String, String>,
    notices: HashSet<String>,
    /// Per tenant, the providers (`github,slack`) last told.
    providers: HashMap<String, String>,
}

impl Bot {
    /// One look at the feed; queues the notices it calls for.
    pub async fn notify_once(&self, seen: &mut Seen) -> Result<usize, StoreError> {
        let Some(snapshot) = self.state.ledger.feed.current() else {
            return Ok(0);
        };
        let feed: FeedBody = match serde_json::from_slice(&snapshot.body) {
            Ok(feed) => feed,
            Err(_) => return Ok(0),
        };
        let mut queued = 0;
        for entry in &feed.tenants {
            let known = match seen.states.get(&entry.tenant) {
                Some(s) => Some(s.clone()),
                None => self.db.told_state(&entry.tenant).await?,
            };
            // The feed always carries access entries from the api; one without is left alone.
            let Some(access) = &entry.access else {
                continue;
            };
            let access_state = access.state.as_str();
            // `active`, or `suspended:<by>` (by whom, from the spec at the head).
            let unchanged = known
                .as_deref()
                .is_some_and(|k| k == access_state || k.starts_with(&format!("{access_state}:")));
            let state = if unchanged {
                known.clone().unwrap_or_default()
            } else {
                let state = if access_state == "suspended" {
                    let row = self.state.store.tenant(&entry.tenant).await?;
                    let hint = row.map(|r| r.last_commit).unwrap_or_default();
                    format!(
                        "suspended:{}",
                        self.suspended_by(&entry.tenant, &hint).await
                    )
                } else {
                    access_state.to_owned()
                };
                queued += self
                    .state_changed(&entry.tenant, known.as_deref(), &state)
                    .await?;
                self.db
                    .set_told_state(&entry.tenant, &state, now_ms())
                    .await?;
                state
            };
            seen.states.insert(entry.tenant.clone(), state);
            if let Some(head) = snapshot.budgets.get(&entry.tenant) {
                queued += self
                    .connections_changed(seen, &entry.tenant, &head.providers)
                    .await?;
            }
            let level = match entry.state {
                FeedState::Ok => continue,
                FeedState::Warning => 90,
                FeedState::Exhausted => 100,
            };
            let key = format!("budget{level}:{}:{}", entry.tenant, feed.period);
            if seen.notices.contains(&key) {
                continue;
            }
            let msg = Msg::NoticeBudget {
                name: entry.tenant.clone(),
                percent: level,
                used: entry.used,
                budget: entry.budget,
            };
            queued += self.notice(&entry.tenant, &key, msg).await? as usize;
            seen.notices.insert(key);
        }
        queued += self.health_notices().await?;
        Ok(queued)
    }

    /// The cluster status's health notices (`cluster::status::health_transitions`): to the
    /// owner and to the admins, each once per episode. A notice not queued because the database
    /// failed goes back to the cluster's queue for the next round.
    async fn health_notices(&self) -> Result<usize, StoreError> {
        let mut queued = 0;
        let mut notices = self.state.cluster.take_health_notices().into_iter();
        while let Some(n) = notices.next() {
            match self.health_notice(&n).await {
                Ok(n) => queued += n,
                Err(e) => {
                    let mut back = vec![n];
                    back.extend(notices);
                    self.state.cluster.queue_health_notices(back);
                    return Err(e);
                }
            }
        }
        Ok(queued)
    }

    async fn health_notice(
        &self,
        n: &crate::cluster::status::HealthNotice,
    ) -> Result<usize, StoreError> {
        let msg = |admin| match n.unhealthy {
            true => Msg::NoticeUnhealthy {
                name: n.tenant.clone(),
                reason: n.reason.clone(),
                admin,
            },
            false => Msg::NoticeRecovered {
                name: n.tenant.clone(),
                admin,
            },
        };
        let mut queued = self.notice(&n.tenant, &n.key, msg(false)).await? as usize;
        let mut messages = Vec::new();
        for &admin in &self.state.config.auth.admin_telegram_ids {
            let id = format!("n-{}:admin:{admin}", n.key);
            messages.push(self.message_to(admin, id, &msg(true)).await?);
        }
        if !messages.is_empty()
            && self
                .db
                .notice(&format!("{}:admins", n.key), &messages, now_ms())
                .await?
        {
            queued += messages.len();
            self.sender_wake.notify_one();
        }
        Ok(queued)
    }

    async fn state_changed(
        &self,
        tenant: &str,
        before: Option<&str>,
        now: &str,
    ) -> Result<usize, StoreError> {
        let Some(row) = self.state.store.tenant(tenant).await? else {
            return Ok(0);
        };
        let incarnation = row.uid.clone().unwrap_or_default();
        // The customer's own pause and its undoing are not news to them; the platform's and
        // support's are.
        let (key, msg) = match (before, now.split_once(':')) {
            (None, None) if now == "active" && now_ms() - row.created_at < NEW_TENANT_MS => (
                super::live_key(tenant, &incarnation),
                Msg::NoticeLive {
                    name: tenant.to_owned(),
                },
            ),
            (Some(before), None) if now == "active" && before.starts_with("suspended:") => {
                let by = self.reactivated_by(tenant).await?;
                if by == "customer" {
                    return Ok(0);
                }
                (
                    format!("reactivated:{tenant}:{}", row.last_commit),
                    Msg::NoticeReactivated {
                        name: tenant.to_owned(),
                        by: by.to_owned(),
                    },
                )
            }
            (Some(_), Some(("suspended", by))) if by != "customer" => (
                format!("suspended:{tenant}:{}", row.last_commit),
                Msg::NoticeSuspended {
                    name: tenant.to_owned(),
                    by: by.to_owned(),
                },
            ),
            _ => return Ok(0),
        };
        Ok(self.notice(tenant, &key, msg).await? as usize)
    }

    /// Who reactivated `tenant` last: the role of the api's last suspend or reactivate change
    /// of it when that was a reactivation, else (a change by hand in the state repo) `platform`.
    async fn reactivated_by(&self, tenant: &str) -> Result<&'static str, StoreError> {
        let change = self.state.store.last_state_change(tenant).await?;
        Ok(match change.map(|c| c.operation) {
            Some(Operation::Reactivate { by: Role::Customer }) => "customer",
            _ => "platform",
        })
    }

    /// Tells the owner of each provider added to or removed from `tenant`'s connections since
    /// the last look; the first look only records them.
    async fn connections_changed(
        &self,
        seen: &mut Seen,
        tenant: &str,
        providers: &[Provider],
    ) -> Result<usize, StoreError> {
        let mut now: Vec<&str> = providers.iter().map(|p| p.as_str()).collect();
        now.sort_unstable();
        now.dedup();
        let after = now.join(",");
        if seen.providers.get(tenant) == Some(&after) {
            return Ok(0);
        }
        let before = self.db.told_connections(tenant).await?;
        if before.as_deref() == Some(after.as_str()) {
            seen.providers.insert(tenant.to_owned(), after);
            return Ok(0);
        }
        let mut messages = Vec::new();
        if let Some(before) = &before {
            let was: Vec<&str> = before.split(',').filter(|p| !p.is_empty()).collect();
            // The outbox ids name the change (from -> to), so a replay of this transaction
            // after a lost answer stores nothing twice.
            let change = hex::encode(&Sha256::digest(format!("{tenant}\n{before}\n{after}"))[..8]);
            for provider in now.iter().filter(|p| !was.contains(p)) {
                let msg = Msg::NoticeConnectionAdded {
                    name: tenant.to_owned(),
                    provider: (*provider).to_owned(),
                };
                let id = format!("connection:{tenant}:+{provider}:{change}");
                messages.extend(self.owner_message(tenant, &id, &msg).await?);
            }
            for provider in was.iter().filter(|p| !now.contains(p)) {
                let msg = Msg::NoticeConnectionRemoved {
                    name: tenant.to_owned(),
                    provider: (*provider).to_owned(),
                };
                let id = format!("connection:{tenant}:-{provider}:{change}");
                messages.extend(self.owner_message(tenant, &id, &msg).await?);
            }
        }
        let told = self
            .db
            .connections_changed(tenant, before.as_deref(), &after, &messages, now_ms())
            .await?;
        seen.providers.insert(tenant.to_owned(), after);
        if told && !messages.is_empty() {
            self.sender_wake.notify_one();
            return Ok(messages.len());
        }
        Ok(0)
    }

    /// `spec.suspendedBy` at the head (`platform` when the spec does not say).
    async fn suspended_by(&self, tenant: &str, hint: &str) -> String {
        let path = self.state.config.repo.local_path.clone();
        let reference = format!(
            "refs/remotes/{}/{}",
            crate::state_repo::REMOTE,
            self.state.config.repo.branch
        );
        let (tenant, hint) = (tenant.to_owned(), hint.to_owned());
        let view = tokio::task::spawn_blocking(move || {
            crate::reader::tenant(&path, &reference, &tenant, Some(&hint))
        })
        .await;
        match view {
            Ok(Ok(Some(view))) => view.spec["spec"]["suspendedBy"]
                .as_str()
                .unwrap_or("platform")
                .to_owned(),
            _ => "platform".to_owned(),
        }
    }

    /// Queues `msg` to the tenant's owner once per `key`; false when there is no owner with a
    /// Telegram id or the notice was queued before.
    async fn notice(&self, tenant: &str, key: &str, msg: Msg) -> Result<bool, StoreError> {
        let Some(message) = self.owner_message(tenant, key, &msg).await? else {
            return Ok(false);
        };
        let queued = self.db.notice(key, &[message], now_ms()).await?;
        if queued {
            self.sender_wake.notify_one();
        }
        Ok(queued)
    }

    /// `msg` to the tenant's owner in their chat's language, as the call `n-<key>`; None when
    /// the tenant has no owner with a Telegram id.
    async fn owner_message(
        &self,
        tenant: &str,
        key: &str,
        msg: &Msg,
    ) -> Result<Option<OutMsg>, StoreError> {
        let store = &self.state.store;
        let Some(owner) = store.tenant(tenant).await?.and_then(|r| r.owner_id) else {
            return Ok(None);
        };
        let Some(telegram_id) = store.customer(&owner).await?.and_then(|c| c.telegram_id) else {
            return Ok(None);
        };
        self.message_to(telegram_id, format!("n-{key}"), msg)
            .await
            .map(Some)
    }

    /// `msg` to a user in their chat's language, as the call `id` (a private chat's id is the
    /// user's id). Queued once by the caller's notice key, not by the message's own.
    async fn message_to(&self, user: i64, id: String, msg: &Msg) -> Result<OutMsg, StoreError> {
        let chat = self.db.chat(user).await?;
        let reply = Reply {
            text: text(lang_of(&chat, None), msg),
            buttons: Vec::new(),
            once: None,
        };
        Ok(OutMsg {
            id,
            chat_id: user,
            method: "sendMessage".into(),
            payload: send_message(user, &reply),
            once: None,
        })
    }
}

/// Notifies until the api stops (it holds the bot only weakly).
pub fn spawn_notifier(bot: &Arc<Bot>) {
    let weak: Weak<Bot> = Arc::downgrade(bot);
    tokio::spawn(async move {
        let mut seen = Seen::default();
        loop {
            let Some(bot) = weak.upgrade() else { return };
            if let Err(e) = bot.notify_once(&mut seen).await {
                tracing::warn!(error = %e, "platform bot: cannot queue notices; retrying");
            }
            drop(bot);
            tokio::time::sleep(EVERY).await;
        }
    });
}
