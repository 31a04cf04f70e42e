//! The platform bot's tables (migrations `20261206090000_platform_bot.sql` and
//! `20261206100000_platform_bot_connections.sql`): received updates, conversation state with a
//! per-chat lease, the outbox of Bot API calls, the notices already queued and what the notifier
//! last told owners. Portable SQL through [`Store`]; this module knows nothing of Telegram's
//! formats beyond the JSON it is handed.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::Value;
use sqlx::Row;

use super::conversation::Chat;
use super::update::Input;
use crate::placeholders::{self, Style};
use crate::store::{Store, StoreError};

/// A Bot API call waiting in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutMsg {
    /// Derived from its cause (`u<update id>-<n>`, `n-<notice key>`): storing it twice is a no-op.
    pub id: String,
    pub chat_id: i64,
    pub method: String,
    pub payload: Value,
    /// A notice key this call is queued under at most once, shared with the notifier (the
    /// "live" message): the key's row and the call are stored in one transaction, and the call
    /// is dropped when the key was stored before. Not kept in the outbox.
    pub once: Option<String>,
}

/// The bot's view of the database.
#[derive(Clone)]
pub struct BotDb {
    store: Store,
    /// On SQLite, which takes one writer at a time: the bot's writes queue here, in order,
    /// instead of in SQLite's busy handler, which sleeps in steps of up to 100 ms.
    sqlite_writer: Option<Arc<tokio::sync::Mutex<()>>>,
    /// Background writers (worker, sender, notifier) queue here first, so that at most one of
    /// them waits for the write queue ahead of the webhook's acknowledgements.
    background: Option<Arc<tokio::sync::Mutex<()>>>,
}

/// A turn at writing to SQLite (nothing on PostgreSQL).
pub struct Turn<'a> {
    _background: Option<tokio::sync::MutexGuard<'a, ()>>,
    _writer: Option<tokio::sync::MutexGuard<'a, ()>>,
}

impl BotDb {
    pub fn new(store: Store, sqlite: bool) -> BotDb {
        BotDb {
            store,
            sqlite_writer: sqlite.then(|| Arc::new(tokio::sync::Mutex::new(()))),
            background: sqlite.then(|| Arc::new(tokio::sync::Mutex::new(()))),
        }
    }

    /// The same tables through another connection pool, sharing the write queue (the webhook's
    /// own pool, so that a busy worker never makes an acknowledgement wait for a connection).
    pub fn with_pool(&self, store: Store) -> BotDb {
        BotDb {
            store,
            sqlite_writer: self.sqlite_writer.clone(),
            background: None,
        }
    }

    async fn write_turn(&self) -> Turn<'_> {
        let background = match &self.background {
            Some(lock) => Some(lock.lock().await),
            None => None,
        };
        let writer = match &self.sqlite_writer {
            Some(lock) => Some(lock.lock().await),
            None => None,
        };
        Turn {
            _background: background,
            _writer: writer,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Records updates in one statement, so one transaction and one round trip (the webhook's
    /// group commit, [`super::intake`]); per update, false when it was recorded before (a second
    /// delivery, also within the batch).
    pub async fn insert_updates(
        &self,
        inputs: &[&Input],
        now: i64,
    ) -> Result<Vec<bool>, StoreError> {
        // The first copy of each update in the batch; later copies are second deliveries.
        let mut distinct = HashSet::new();
        let firsts: Vec<&Input> = inputs
            .iter()
            .copied()
            .filter(|i| distinct.insert(i.update_id))
            .collect();
        if firsts.is_empty() {
            return Ok(Vec::new());
        }
        let style = if self.sqlite_writer.is_some() {
            Style::Anonymous
        } else {
            Style::Numbered
        };
        let mut sql = String::from(
            "INSERT INTO bot_updates (update_id, chat_id, input, received_at) VALUES ",
        );
        placeholders::rows(&mut sql, style, firsts.len(), 4);
        sql.push_str(" ON CONFLICT (update_id) DO NOTHING RETURNING update_id");
        let mut query = sqlx::query(&sql);
        for input in &firsts {
            let json =
                serde_json::to_string(input).map_err(|e| StoreError::Invalid(e.to_string()))?;
            query = query
                .bind(input.update_id)
                .bind(input.chat_id)
                .bind(json)
                .bind(now);
        }
        let _turn = self.write_turn().await;
        let rows = query.fetch_all(self.store.pool()).await?;
        let mut stored = HashSet::new();
        for row in &rows {
            stored.insert(row.try_get::<i64, _>("update_id")?);
        }
        // Each stored update is new for its first copy only.
        Ok(inputs.iter().map(|i| stored.remove(&i.update_id)).collect())
    }

    /// Chats with updates not processed yet, oldest first.
    pub async fn pending_chats(&self, limit: i64) -> Result<Vec<i64>, StoreError> {
        let rows = sqlx::query(
            "SELECT chat_id, MIN(update_id) AS first FROM bot_updates WHERE done_at IS NULL \
             GROUP BY chat_id ORDER BY first LIMIT $1",
        )
        .bind(limit)
        .fetch_all(self.store.pool())
        .await?;
        rows.iter()
            .map(|r| r.try_get::<i64, _>("chat_id").map_err(StoreError::from))
            .collect()
    }

    /// Takes the chat's lease until `until` unless another replica holds it.
    pub async fn lease_chat(
        &self,
        chat_id: i64,
        owner: &str,
        now: i64,
        until: i64,
    ) -> Result<bool, StoreError> {
        let _turn = self.write_turn().await;
        // One statement (one commit): the chat's row made on first sight and the lease taken
        // when it is free, expired, or already this replica's.
        let taken = sqlx::query(
            "INSERT INTO bot_chats (chat_id, state, lease_owner, lease_until, updated_at) \
             VALUES ($1, '{}', $2, $3, $4) ON CONFLICT (chat_id) DO UPDATE \
             SET lease_owner = excluded.lease_owner, lease_until = excluded.lease_until \
             WHERE bot_chats.lease_until < $4 OR bot_chats.lease_owner = excluded.lease_owner",
        )
        .bind(chat_id)
        .bind(owner)
        .bind(until)
        .bind(now)
        .execute(self.store.pool())
        .await?;
        Ok(taken.rows_affected() == 1)
    }

    pub async fn release_chat(&self, chat_id: i64, owner: &str) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        sqlx::query(
            "UPDATE bot_chats SET lease_owner = NULL, lease_until = 0 WHERE chat_id = $1 AND lease_owner = $2",
        )
        .bind(chat_id)
        .bind(owner)
        .execute(self.store.pool())
        .await?;
        Ok(())
    }

    /// The chat's state (a fresh one when it has none or it does not parse).
    pub async fn chat(&self, chat_id: i64) -> Result<Chat, StoreError> {
        let row = sqlx::query("SELECT state FROM bot_chats WHERE chat_id = $1")
            .bind(chat_id)
            .fetch_optional(self.store.pool())
            .await?;
        Ok(match row {
            Some(r) => serde_json::from_str(&r.try_get::<String, _>("state")?).unwrap_or_default(),
            None => Chat::default(),
        })
    }

    /// The chat's unprocessed updates in Telegram's order.
    pub async fn pending_updates(&self, chat_id: i64) -> Result<Vec<Input>, StoreError> {
        let rows = sqlx::query(
            "SELECT input FROM bot_updates WHERE chat_id = $1 AND done_at IS NULL ORDER BY update_id LIMIT 50",
        )
        .bind(chat_id)
        .fetch_all(self.store.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let text: String = r.try_get("input")?;
                serde_json::from_str(&text).map_err(|e| StoreError::Invalid(e.to_string()))
            })
            .collect()
    }

    /// In one transaction: the chat's next state, the replies, and the update marked done.
    /// False (and nothing written) when this replica no longer holds the chat's lease. A reply
    /// with a notice key ([`OutMsg::once`]) is stored only when the key is new.
    pub async fn finish_update(
        &self,
        owner: &str,
        input: &Input,
        chat: &Chat,
        messages: &[OutMsg],
        now: i64,
    ) -> Result<bool, StoreError> {
        let _turn = self.write_turn().await;
        let state = serde_json::to_string(chat).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let mut tx = self.store.begin_write().await?;
        let kept = sqlx::query(
            "UPDATE bot_chats SET state = $1, updated_at = $2 WHERE chat_id = $3 AND lease_owner = $4",
        )
        .bind(state)
        .bind(now)
        .bind(input.chat_id)
        .bind(owner)
        .execute(&mut *tx)
        .await?;
        if kept.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        for message in messages {
            insert_message(&mut tx, message, now).await?;
        }
        sqlx::query("UPDATE bot_updates SET done_at = $1 WHERE update_id = $2")
            .bind(now)
            .bind(input.update_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Queues a notice's messages once per `key`; false when the key was queued before.
    pub async fn notice(
        &self,
        key: &str,
        messages: &[OutMsg],
        now: i64,
    ) -> Result<bool, StoreError> {
        let _turn = self.write_turn().await;
        let mut tx = self.store.begin_write().await?;
        if !claim_notice(&mut tx, key, now).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        for message in messages {
            insert_message(&mut tx, message, now).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Takes the oldest due call whose chat has no older call waiting, leased until `until`.
    pub async fn claim_message(
        &self,
        owner: &str,
        now: i64,
        until: i64,
    ) -> Result<Option<(OutMsg, i64)>, StoreError> {
        let _turn = self.write_turn().await;
        let row = sqlx::query(
            "UPDATE bot_outbox SET lease_owner = $1, lease_until = $2, attempts = attempts + 1 \
             WHERE id = (SELECT o.id FROM bot_outbox o \
                 WHERE o.sent_at IS NULL AND o.failed IS NULL AND o.not_before <= $3 AND o.lease_until < $3 \
                 AND NOT EXISTS (SELECT 1 FROM bot_outbox p WHERE p.chat_id = o.chat_id \
                     AND p.sent_at IS NULL AND p.failed IS NULL \
                     AND (p.created_at < o.created_at OR (p.created_at = o.created_at AND p.id < o.id))) \
                 ORDER BY o.created_at, o.id LIMIT 1) \
             AND lease_until < $3 \
             RETURNING id, chat_id, method, payload, attempts",
        )
        .bind(owner)
        .bind(until)
        .bind(now)
        .fetch_optional(self.store.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let payload: String = row.try_get("payload")?;
        let attempts: i64 = row
            .try_get::<i32, _>("attempts")
            .map(i64::from)
            .or_else(|_| row.try_get::<i64, _>("attempts"))?;
        Ok(Some((
            OutMsg {
                id: row.try_get("id")?,
                chat_id: row.try_get("chat_id")?,
                method: row.try_get("method")?,
                payload: serde_json::from_str(&payload)
                    .map_err(|e| StoreError::Invalid(e.to_string()))?,
                once: None,
            },
            attempts,
        )))
    }

    pub async fn mark_sent(&self, id: &str, now: i64) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        sqlx::query("UPDATE bot_outbox SET sent_at = $1, lease_owner = NULL WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(self.store.pool())
            .await?;
        Ok(())
    }

    /// Puts a call back, due at `not_before`.
    pub async fn retry_at(&self, id: &str, not_before: i64) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        sqlx::query(
            "UPDATE bot_outbox SET not_before = $1, lease_owner = NULL, lease_until = 0 WHERE id = $2",
        )
        .bind(not_before)
        .bind(id)
        .execute(self.store.pool())
        .await?;
        Ok(())
    }

    /// Gives a call up (Telegram refused it: the user blocked the bot, the chat is gone).
    pub async fn mark_failed(&self, id: &str, reason: &str) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        sqlx::query("UPDATE bot_outbox SET failed = $1, lease_owner = NULL WHERE id = $2")
            .bind(reason)
            .bind(id)
            .execute(self.store.pool())
            .await?;
        Ok(())
    }

    /// The earliest time a waiting call becomes due, if any waits.
    pub async fn next_due(&self) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query(
            "SELECT MIN(not_before) AS due FROM bot_outbox WHERE sent_at IS NULL AND failed IS NULL",
        )
        .fetch_one(self.store.pool())
        .await?;
        Ok(row.try_get::<Option<i64>, _>("due")?)
    }

    /// The tenant state the notifier last told its owner about.
    pub async fn told_state(&self, tenant: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT state FROM bot_tenant_states WHERE tenant = $1")
            .bind(tenant)
            .fetch_optional(self.store.pool())
            .await?;
        row.map(|r| r.try_get::<String, _>("state").map_err(StoreError::from))
            .transpose()
    }

    pub async fn set_told_state(
        &self,
        tenant: &str,
        state: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        sqlx::query(
            "INSERT INTO bot_tenant_states (tenant, state, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
        )
        .bind(tenant)
        .bind(state)
        .bind(now)
        .execute(self.store.pool())
        .await?;
        Ok(())
    }

    /// The providers of `tenant`'s connections the notifier last told its owner about.
    pub async fn told_connections(&self, tenant: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT providers FROM bot_tenant_connections WHERE tenant = $1")
            .bind(tenant)
            .fetch_optional(self.store.pool())
            .await?;
        row.map(|r| {
            r.try_get::<String, _>("providers")
                .map_err(StoreError::from)
        })
        .transpose()
    }

    /// Moves `tenant`'s told providers from `before` to `after` and queues `messages`, in one
    /// transaction; false (nothing queued) when the row no longer holds `before`: another
    /// replica or round told this change already. `before` None records a first sight, which
    /// queues nothing.
    pub async fn connections_changed(
        &self,
        tenant: &str,
        before: Option<&str>,
        after: &str,
        messages: &[OutMsg],
        now: i64,
    ) -> Result<bool, StoreError> {
        let _turn = self.write_turn().await;
        let mut tx = self.store.begin_write().await?;
        let moved = match before {
            None => sqlx::query(
                "INSERT INTO bot_tenant_connections (tenant, providers, updated_at) \
                 VALUES ($1, $2, $3) ON CONFLICT (tenant) DO NOTHING",
            )
            .bind(tenant)
            .bind(after)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected(),
            Some(before) => sqlx::query(
                "UPDATE bot_tenant_connections SET providers = $1, updated_at = $2 \
                 WHERE tenant = $3 AND providers = $4",
            )
            .bind(after)
            .bind(now)
            .bind(tenant)
            .bind(before)
            .execute(&mut *tx)
            .await?
            .rows_affected(),
        };
        if moved != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        if before.is_some() {
            for message in messages {
                insert_message(&mut tx, message, now).await?;
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Drops processed updates and sent calls older than `before` (Telegram redelivers an update
    /// for at most a day).
    pub async fn prune(&self, before: i64) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        sqlx::query("DELETE FROM bot_updates WHERE done_at IS NOT NULL AND done_at < $1")
            .bind(before)
            .execute(self.store.pool())
            .await?;
        sqlx::query("DELETE FROM bot_outbox WHERE (sent_at IS NOT NULL OR failed IS NOT NULL) AND created_at < $1")
            .bind(before)
            .execute(self.store.pool())
            .await?;
        Ok(())
    }
}

/// Claims notice `key` inside `tx`; false when it was claimed before (by this or another
/// replica: the key is the table's primary key, so of two racing transactions one inserts it).
async fn claim_notice(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    key: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let first = sqlx::query(
        "INSERT INTO bot_notices (key, created_at) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
    )
    .bind(key)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(first.rows_affected() == 1)
}

async fn insert_message(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    message: &OutMsg,
    now: i64,
) -> Result<(), StoreError> {
    if let Some(key) = &message.once {
        if !claim_notice(tx, key, now).await? {
            return Ok(());
        }
    }
    sqlx::query(
        "INSERT INTO bot_outbox (id, chat_id, method, payload, created_at, not_before, attempts, lease_owner, lease_until, sent_at, failed) \
         VALUES ($1, $2, $3, $4, $5, $5, 0, NULL, 0, NULL, NULL) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&message.id)
    .bind(message.chat_id)
    .bind(&message.method)
    .bind(message.payload.to_string())
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
