//! The database: the tenants index, the outbox of git operations and the idempotency keys.
//!
//! One code path for SQLite (embedded default) and PostgreSQL through `sqlx::Any`, one set of
//! migrations in the portable SQL subset (`api/migrations/`), `$n` placeholders (both drivers take
//! them). Times are Unix milliseconds in BIGINT columns. This module knows nothing about git or
//! HTTP: it stores what the writer hands it, one transaction per batch.

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Row};
use std::str::FromStr;
use std::time::Duration;

use crate::placeholders::{self, Style};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database: {0}")]
    Invalid(String),
}

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

/// Which database the url names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A row of the tenants index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRow {
    pub name: String,
    /// The owning customer; None for a tenant the index knows no owner of.
    pub owner_id: Option<String>,
    /// The incarnation's uid (the spec's `metadata.uid`); None for tenants without one.
    pub uid: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_commit: String,
}

/// What a change does to the tenants index.
#[derive(Debug, Clone)]
pub enum IndexEffect {
    /// The tenant exists after the change (created or updated). `owner_id` is set by a
    /// provision; None keeps the recorded owner. `uid` is the spec's; None keeps the recorded one.
    Upsert {
        owner_id: Option<String>,
        uid: Option<String>,
    },
    /// The tenant is gone after the change.
    Remove,
}

/// A stored response for an Idempotency-Key.
#[derive(Debug, Clone)]
pub struct IdempotencyRecord {
    pub actor: String,
    pub key: String,
    pub request_hash: String,
    pub status: u16,
    pub body: String,
}

/// One change as the writer records it, with what it needs to be undone.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub seq: i64,
    pub tenant: String,
    pub action: String,
    pub request_id: String,
    pub change_json: String,
    pub commit_id: String,
    pub index: IndexEffect,
    pub idempotency: Option<IdempotencyRecord>,
    /// The account a provision creates for its owner (see [`Store::record_batch`]).
    pub new_owner: Option<Customer>,
    /// The tenant's index row before the change.
    pub prior: Option<TenantRow>,
    pub at: i64,
}

/// A pending outbox row.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub seq: i64,
    pub tenant: String,
    pub change_json: String,
    pub commit_id: String,
}

impl Store {
    /// Connects, tunes SQLite for concurrent use, and runs the migrations.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let options = AnyConnectOptions::from_str(url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    if conn.backend_name() == "SQLite" {
                        // WAL lets readers run beside the writer. FULL flushes the WAL at every
                        // commit, so an acknowledged batch survives a power loss as its git commits
                        // do; the writer makes one transaction per batch, and it runs while the
                        // batch's pack is flushed.
                        sqlx::query("PRAGMA journal_mode = WAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA synchronous = FULL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA busy_timeout = 5000")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        Ok(Store { pool, backend })
    }

    /// The connection pool, for modules that own their own tables (the usage ledger).
    /// Starts a transaction that writes. On SQLite it takes the write lock at once (`BEGIN
    /// IMMEDIATE`): a deferred transaction that has read cannot take the lock after another
    /// connection committed, and fails at once with SQLITE_BUSY instead of waiting its turn
    /// (`busy_timeout`), as when the writer marks outbox rows while a request rotates a refresh
    /// token. PostgreSQL's row locks need no such thing.
    pub async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Readiness probe.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// The next free outbox sequence number (the writer assigns them; there is one writer).
    pub async fn next_seq(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COALESCE(MAX(seq), 0) AS m FROM outbox")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>("m")? + 1)
    }

    pub async fn tenant(&self, name: &str) -> Result<Option<TenantRow>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {TENANT_COLUMNS} FROM tenants WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| tenant_row(&r)).transpose()
    }

    pub async fn tenant_count(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM tenants")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>("n")?)
    }

    /// Every tenant in the index, sorted by name.
    pub async fn tenants(&self) -> Result<Vec<TenantRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {TENANT_COLUMNS} FROM tenants ORDER BY name"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(tenant_row).collect()
    }

    pub async fn idempotent_response(
        &self,
        actor: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT request_hash, status, body FROM idempotency_keys WHERE actor = $1 AND idem_key = $2",
        )
        .bind(actor)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(IdempotencyRecord {
                actor: actor.to_owned(),
                key: key.to_owned(),
                request_hash: r.try_get("request_hash")?,
                status: u16::try_from(r.try_get::<i32, _>("status")?).unwrap_or(500),
                body: r.try_get("body")?,
            })
        })
        .transpose()
    }

    /// Records a batch of changes in one transaction and a handful of statements, whatever its
    /// size: new owners' accounts, index rows, outbox rows (pending) and idempotency responses.
    /// Returns, for each change, the tenant's index row as it was before the batch (what
    /// [`Store::undo_batch`] restores).
    ///
    /// A provision for an owner the api did not know carries a new account; it is created here
    /// unless an account with the same Telegram id or email was made meanwhile (a sign-in, or
    /// another provision for the same person), in which case the tenant is recorded under that
    /// one, found as the provision's lookup finds owners: by Telegram id, then by email.
    pub async fn record_batch(
        &self,
        batch: &[Recorded],
        pushed: &[i64],
        pushed_at: i64,
    ) -> Result<Vec<Option<TenantRow>>, StoreError> {
        if batch.is_empty() {
            self.mark_state(pushed, "pushed", pushed_at).await?;
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        // Rows of earlier batches whose commits reached the remote since: marked in this
        // transaction rather than in one (and one flush) of their own.
        set_state(&mut tx, pushed, "pushed", pushed_at).await?;
        let owners = create_owners(&mut tx, batch).await?;
        let mut insert = String::from(
            "INSERT INTO outbox (seq, tenant, action, request_id, change_json, commit_id, state, created_at) VALUES ",
        );
        for i in 0..batch.len() {
            if i > 0 {
                insert.push_str(", ");
            }
            let n = i * 7;
            insert.push_str(&format!(
                "(${}, ${}, ${}, ${}, ${}, ${}, 'pending', ${})",
                n + 1,
                n + 2,
                n + 3,
                n + 4,
                n + 5,
                n + 6,
                n + 7
            ));
        }
        let change_json: Vec<std::borrow::Cow<'_, str>> = batch
            .iter()
            .map(|c| owners.change_json(c))
            .collect::<Result<_, _>>()?;
        let mut query = sqlx::query(&insert);
        for (change, json) in batch.iter().zip(&change_json) {
            query = query
                .bind(change.seq)
                .bind(&change.tenant)
                .bind(&change.action)
                .bind(&change.request_id)
                .bind(json.as_ref())
                .bind(&change.commit_id)
                .bind(change.at);
        }
        query.execute(&mut *tx).await?;

        // The index rows as they were. Read after the first write: SQLite then already holds the
        // write lock (a read first would make the later write fail at once, not wait, when
        // another connection wrote in between).
        let mut names: Vec<&str> = batch.iter().map(|c| c.tenant.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        let mut select = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE name IN (");
        placeholders::list(&mut select, Style::Numbered, 1, names.len());
        select.push(')');
        let mut query = sqlx::query(&select);
        for name in &names {
            query = query.bind(*name);
        }
        let before: std::collections::HashMap<String, TenantRow> = query
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| tenant_row(r).map(|row| (row.name.clone(), row)))
            .collect::<Result<_, _>>()?;

        // The index: a tenant removed at any point of the batch is deleted first (so that one
        // destroyed and provisioned again gets a new creation time), then each tenant that exists
        // after the batch is upserted once, with its last commit and the owner its last provision
        // (since the removal) set; no owner keeps the recorded one.
        let mut last: std::collections::BTreeMap<&str, (&Recorded, Option<&String>)> =
            Default::default();
        let mut removed: Vec<&str> = Vec::new();
        for change in batch {
            let owner = match &change.index {
                IndexEffect::Upsert { owner_id, .. } => owner_id
                    .as_ref()
                    .map(|id| owners.resolve(id))
                    .or_else(|| last.get(change.tenant.as_str()).and_then(|(_, o)| *o)),
                IndexEffect::Remove => {
                    removed.push(change.tenant.as_str());
                    None
                }
            };
            last.insert(change.tenant.as_str(), (change, owner));
        }
        removed.sort_unstable();
        removed.dedup();
        // A removed tenant's incarnation is kept: its owner still reads its history and usage,
        // and its usage no longer counts for the name.
        for name in &removed {
            if let Some(row) = before.get(*name) {
                sqlx::query(
                    "INSERT INTO past_incarnations (ledger_key, tenant, uid, owner_id, created_at, destroyed_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (ledger_key) DO NOTHING",
                )
                .bind(ledger_key(&row.name, row.uid.as_deref()))
                .bind(&row.name)
                .bind(row.uid.clone())
                .bind(row.owner_id.clone())
                .bind(row.created_at)
                .bind(batch.last().map(|c| c.at).unwrap_or_default())
                .execute(&mut *tx)
                .await?;
            }
        }
        if !removed.is_empty() {
            let mut delete = String::from("DELETE FROM tenants WHERE name IN (");
            placeholders::list(&mut delete, Style::Numbered, 1, removed.len());
            delete.push(')');
            let mut query = sqlx::query(&delete);
            for name in &removed {
                query = query.bind(*name);
            }
            query.execute(&mut *tx).await?;
        }
        let upserts: Vec<(&str, Option<&String>, &Recorded)> = last
            .iter()
            .filter(|(_, (change, _))| matches!(change.index, IndexEffect::Upsert { .. }))
            .map(|(name, (change, owner))| (*name, *owner, *change))
            .collect();
        if !upserts.is_empty() {
            let mut upsert = String::from(
                "INSERT INTO tenants (name, owner_id, uid, created_at, updated_at, last_commit) VALUES ",
            );
            for i in 0..upserts.len() {
                if i > 0 {
                    upsert.push_str(", ");
                }
                let n = i * 5;
                upsert.push_str(&format!(
                    "(${}, ${}, ${}, ${}, ${}, ${})",
                    n + 1,
                    n + 2,
                    n + 3,
                    n + 4,
                    n + 4,
                    n + 5
                ));
            }
            upsert.push_str(
                " ON CONFLICT (name) DO UPDATE SET owner_id = COALESCE(excluded.owner_id, tenants.owner_id), \
                 uid = COALESCE(excluded.uid, tenants.uid), \
                 updated_at = excluded.updated_at, last_commit = excluded.last_commit",
            );
            let mut query = sqlx::query(&upsert);
            for (name, owner, change) in &upserts {
                let uid = match &change.index {
                    IndexEffect::Upsert { uid, .. } => uid.clone(),
                    IndexEffect::Remove => None,
                };
                query = query
                    .bind(*name)
                    .bind(owner.cloned())
                    .bind(uid)
                    .bind(change.at)
                    .bind(&change.commit_id);
            }
            query.execute(&mut *tx).await?;
        }

        let keyed: Vec<(&IdempotencyRecord, i64)> = batch
            .iter()
            .filter_map(|c| c.idempotency.as_ref().map(|k| (k, c.at)))
            .collect();
        if !keyed.is_empty() {
            let mut insert = String::from(
                "INSERT INTO idempotency_keys (actor, idem_key, request_hash, status, body, created_at) VALUES ",
            );
            placeholders::rows(&mut insert, Style::Numbered, keyed.len(), 6);
            let mut query = sqlx::query(&insert);
            for (idem, at) in &keyed {
                query = query
                    .bind(&idem.actor)
                    .bind(&idem.key)
                    .bind(&idem.request_hash)
                    .bind(i32::from(idem.status))
                    .bind(&idem.body)
                    .bind(*at);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(batch
            .iter()
            .map(|c| before.get(&c.tenant).cloned())
            .collect())
    }

    /// Undoes a recorded batch (the push failed and the policy is to fail the requests).
    pub async fn undo_batch(&self, batch: &[Recorded]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for change in batch.iter().rev() {
            if let (IndexEffect::Remove, Some(prior)) = (&change.index, &change.prior) {
                sqlx::query("DELETE FROM past_incarnations WHERE ledger_key = $1")
                    .bind(ledger_key(&prior.name, prior.uid.as_deref()))
                    .execute(&mut *tx)
                    .await?;
            }
            match &change.prior {
                Some(prior) => {
                    sqlx::query(
                        "INSERT INTO tenants (name, owner_id, uid, created_at, updated_at, last_commit) \
                         VALUES ($1, $2, $3, $4, $5, $6) \
                         ON CONFLICT (name) DO UPDATE SET owner_id = excluded.owner_id, uid = excluded.uid, \
                         created_at = excluded.created_at, updated_at = excluded.updated_at, \
                         last_commit = excluded.last_commit",
                    )
                    .bind(&prior.name)
                    .bind(prior.owner_id.clone())
                    .bind(prior.uid.clone())
                    .bind(prior.created_at)
                    .bind(prior.updated_at)
                    .bind(&prior.last_commit)
                    .execute(&mut *tx)
                    .await?;
                }
                None => {
                    sqlx::query("DELETE FROM tenants WHERE name = $1")
                        .bind(&change.tenant)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            sqlx::query("DELETE FROM outbox WHERE seq = $1")
                .bind(change.seq)
                .execute(&mut *tx)
                .await?;
            if let Some(idem) = &change.idempotency {
                sqlx::query("DELETE FROM idempotency_keys WHERE actor = $1 AND idem_key = $2")
                    .bind(&idem.actor)
                    .bind(&idem.key)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records new commit ids after the changes were re-applied on a newer head.
    pub async fn rewrite_commits(
        &self,
        commits: &[(i64, String, String)],
    ) -> Result<(), StoreError> {
        if commits.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for (seq, tenant, commit) in commits {
            sqlx::query("UPDATE outbox SET commit_id = $1 WHERE seq = $2")
                .bind(commit)
                .bind(*seq)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE tenants SET last_commit = $1 WHERE name = $2")
                .bind(commit)
                .bind(tenant)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Moves outbox rows to `state` ('pushed', or 'abandoned' for a replayed change that no longer
    /// applies), in one statement. The commit is not waited on to reach the disk (PostgreSQL:
    /// `synchronous_commit = off` for this transaction): if it is lost, the next start finds the
    /// rows pending, sees their commits on the remote and marks them again.
    pub async fn mark_state(&self, seqs: &[i64], state: &str, at: i64) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SET LOCAL synchronous_commit = off")
                .execute(&mut *tx)
                .await?;
        }
        set_state(&mut tx, seqs, state, at).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Pending outbox rows in the order they were acknowledged.
    pub async fn pending(&self) -> Result<Vec<OutboxRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, tenant, change_json, commit_id FROM outbox WHERE state = 'pending' ORDER BY seq",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(OutboxRow {
                    seq: r.try_get("seq")?,
                    tenant: r.try_get("tenant")?,
                    change_json: r.try_get("change_json")?,
                    commit_id: r.try_get("commit_id")?,
                })
            })
            .collect()
    }

    /// The last suspension or reactivation of `tenant` the api made (its outbox row, kept after
    /// the push): who made a state change is read from the recorded change, never from a commit
    /// message. None when the api made none (a change by hand in the state repo).
    pub async fn last_state_change(
        &self,
        tenant: &str,
    ) -> Result<Option<crate::lifecycle::Change>, StoreError> {
        let row = sqlx::query(
            "SELECT change_json FROM outbox WHERE tenant = $1 \
             AND action IN ('suspend', 'reactivate') ORDER BY seq DESC LIMIT 1",
        )
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let json: String = row.try_get("change_json")?;
        serde_json::from_str(&json)
            .map(Some)
            .map_err(|e| StoreError::Invalid(format!("outbox change of {tenant}: {e}")))
    }

    /// Counts outbox rows per state, for metrics and tests.
    pub async fn outbox_counts(&self) -> Result<(i64, i64), StoreError> {
        let row = sqlx::query(
            "SELECT COALESCE(SUM(CASE WHEN state = 'pending' THEN 1 ELSE 0 END), 0) AS p, \
             COALESCE(SUM(CASE WHEN state = 'pushed' THEN 1 ELSE 0 END), 0) AS d FROM outbox",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get::<i64, _>("p")?, row.try_get::<i64, _>("d")?))
    }
}

/// Moves outbox rows `seqs` to `state` inside `tx`.
async fn set_state(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    seqs: &[i64],
    state: &str,
    at: i64,
) -> Result<(), StoreError> {
    for chunk in seqs.chunks(1000) {
        let mut update =
            String::from("UPDATE outbox SET state = $1, pushed_at = $2 WHERE seq IN (");
        placeholders::list(&mut update, Style::Numbered, 3, chunk.len());
        update.push(')');
        let mut query = sqlx::query(&update).bind(state).bind(at);
        for seq in chunk {
            query = query.bind(*seq);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// A customer account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer {
    pub id: String,
    pub email: Option<String>,
    pub telegram_id: Option<i64>,
    pub display_name: String,
    pub created_at: i64,
    pub session_epoch: i64,
}

impl Customer {
    /// A new customer with a fresh opaque id.
    pub fn new(
        email: Option<String>,
        telegram_id: Option<i64>,
        display_name: String,
        now: i64,
    ) -> Customer {
        Customer {
            id: format!("cus_{}", uuid::Uuid::new_v4().simple()),
            email,
            telegram_id,
            display_name,
            created_at: now,
            session_epoch: 0,
        }
    }
}

/// What presenting a refresh token led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// The token was valid; it is now used and the new one (same family) stored.
    Rotated { customer_id: String },
    /// The token had been rotated already: its whole family is now revoked.
    Reused,
    /// Unknown, expired or revoked.
    Invalid,
}

const CUSTOMER_COLUMNS: &str = "id, email, telegram_id, display_name, created_at, session_epoch";

fn customer_row(r: &sqlx::any::AnyRow) -> Result<Customer, StoreError> {
    Ok(Customer {
        id: r.try_get("id")?,
        email: r.try_get("email")?,
        telegram_id: r.try_get("telegram_id")?,
        display_name: r.try_get("display_name")?,
        created_at: r.try_get("created_at")?,
        session_epoch: r.try_get("session_epoch")?,
    })
}

/// Accounts and sessions.
impl Store {
    async fn customer_where(
        &self,
        column: &str,
        value: CustomerKey<'_>,
    ) -> Result<Option<Customer>, StoreError> {
        let sql = format!("SELECT {CUSTOMER_COLUMNS} FROM customers WHERE {column} = $1");
        let query = sqlx::query(&sql);
        let query = match value {
            CustomerKey::Text(v) => query.bind(v.to_owned()),
            CustomerKey::Number(v) => query.bind(v),
        };
        let row = query.fetch_optional(&self.pool).await?;
        row.map(|r| customer_row(&r)).transpose()
    }

    pub async fn customer(&self, id: &str) -> Result<Option<Customer>, StoreError> {
        self.customer_where("id", CustomerKey::Text(id)).await
    }

    pub async fn customer_by_telegram(
        &self,
        telegram_id: i64,
    ) -> Result<Option<Customer>, StoreError> {
        self.customer_where("telegram_id", CustomerKey::Number(telegram_id))
            .await
    }

    pub async fn customer_by_email(&self, email: &str) -> Result<Option<Customer>, StoreError> {
        self.customer_where("email", CustomerKey::Text(email)).await
    }

    pub async fn insert_customer(&self, customer: &Customer) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO customers (id, email, telegram_id, display_name, created_at, session_epoch) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&customer.id)
        .bind(customer.email.clone())
        .bind(customer.telegram_id)
        .bind(&customer.display_name)
        .bind(customer.created_at)
        .bind(customer.session_epoch)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records that login data with this hash was used; false when it was used before. Entries
    /// past their expiry (seconds) are dropped on the way: the data itself is refused by then.
    pub async fn first_use_of_login(
        &self,
        hash_sha256: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        sqlx::query("DELETE FROM login_replays WHERE expires_at < $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO login_replays (hash_sha256, expires_at) VALUES ($1, $2) \
             ON CONFLICT (hash_sha256) DO NOTHING",
        )
        .bind(hash_sha256)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(inserted.rows_affected() == 1)
    }

    /// The customer with this Telegram id, created on first sign-in. Two first sign-ins racing
    /// end with one customer (the loser of the insert reads the winner's row).
    pub async fn customer_for_telegram(
        &self,
        telegram_id: i64,
        display_name: &str,
        now: i64,
    ) -> Result<Customer, StoreError> {
        if let Some(found) = self.customer_by_telegram(telegram_id).await? {
            return Ok(found);
        }
        let customer = Customer::new(None, Some(telegram_id), display_name.to_owned(), now);
        match self.insert_customer(&customer).await {
            Ok(()) => Ok(customer),
            Err(e) => match self.customer_by_telegram(telegram_id).await? {
                Some(found) => Ok(found),
                None => Err(e),
            },
        }
    }

    /// Changes a customer's email and display name (None keeps the value).
    pub async fn update_customer(
        &self,
        id: &str,
        email: Option<&str>,
        display_name: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE customers SET email = COALESCE($1, email), display_name = COALESCE($2, display_name) WHERE id = $3",
        )
        .bind(email.map(str::to_owned))
        .bind(display_name.map(str::to_owned))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records the Telegram id of a customer that had none (an account made from an owner email).
    pub async fn link_telegram(&self, id: &str, telegram_id: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE customers SET telegram_id = $1 WHERE id = $2 AND telegram_id IS NULL")
            .bind(telegram_id)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// How many tenants a customer owns.
    pub async fn tenant_count_of(&self, owner_id: &str) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM tenants WHERE owner_id = $1")
            .bind(owner_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>("n")?)
    }

    /// A destroyed incarnation of tenant `name`: the one with `uid`, or (None) the most recently
    /// destroyed one, of `owner_id` when given.
    pub async fn past_incarnation(
        &self,
        name: &str,
        uid: Option<&str>,
        owner_id: Option<&str>,
    ) -> Result<Option<PastIncarnation>, StoreError> {
        let row = sqlx::query(
            "SELECT ledger_key, tenant, uid, owner_id, created_at, destroyed_at FROM past_incarnations \
             WHERE tenant = $1 AND ($2 IS NULL OR uid = $2) AND ($3 IS NULL OR owner_id = $3) \
             ORDER BY destroyed_at DESC, created_at DESC LIMIT 1",
        )
        .bind(name)
        .bind(uid.map(str::to_owned))
        .bind(owner_id.map(str::to_owned))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(PastIncarnation {
                ledger_key: r.try_get("ledger_key")?,
                name: r.try_get("tenant")?,
                uid: r.try_get("uid")?,
                owner_id: r.try_get("owner_id")?,
                created_at: r.try_get("created_at")?,
                destroyed_at: r.try_get("destroyed_at")?,
            })
        })
        .transpose()
    }

    /// The ledger key of the live incarnation of each of `names` that the index knows (see
    /// [`ledger_key`]); names it does not know are absent.
    pub async fn ledger_keys(
        &self,
        names: &[&str],
    ) -> Result<std::collections::HashMap<String, String>, StoreError> {
        let mut keys = std::collections::HashMap::with_capacity(names.len());
        for chunk in names.chunks(1000) {
            let mut select = String::from("SELECT name, uid FROM tenants WHERE name IN (");
            placeholders::list(&mut select, Style::Numbered, 1, chunk.len());
            select.push(')');
            let mut query = sqlx::query(&select);
            for name in chunk {
                query = query.bind(*name);
            }
            for row in query.fetch_all(&self.pool).await? {
                let name: String = row.try_get("name")?;
                let uid: Option<String> = row.try_get("uid")?;
                keys.insert(name.clone(), ledger_key(&name, uid.as_deref()));
            }
        }
        Ok(keys)
    }

    /// The tenants a customer owns, sorted by name.
    pub async fn tenants_of(&self, owner_id: &str) -> Result<Vec<TenantRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {TENANT_COLUMNS} FROM tenants WHERE owner_id = $1 ORDER BY name"
        ))
        .bind(owner_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(tenant_row).collect()
    }

    /// Starts a refresh token family with its first token.
    pub async fn start_refresh_family(
        &self,
        customer_id: &str,
        token_hash: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let family = format!("fam_{}", uuid::Uuid::new_v4().simple());
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO refresh_families (id, customer_id, created_at, revoked_at) VALUES ($1, $2, $3, NULL)",
        )
        .bind(&family)
        .bind(customer_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, family_id, created_at, expires_at, used_at) VALUES ($1, $2, $3, $4, NULL)",
        )
        .bind(token_hash)
        .bind(&family)
        .bind(now)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Uses a refresh token: a valid one is marked used and `new_hash` joins its family; a used
    /// one revokes the family (someone replayed a stolen token, or the owner did after theft).
    pub async fn rotate_refresh(
        &self,
        token_hash: &str,
        new_hash: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<RefreshOutcome, StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "SELECT t.family_id, t.expires_at, t.used_at, f.customer_id, f.revoked_at \
             FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family_id WHERE t.token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(RefreshOutcome::Invalid);
        };
        let family: String = row.try_get("family_id")?;
        let expires: i64 = row.try_get("expires_at")?;
        let used: Option<i64> = row.try_get("used_at")?;
        let revoked: Option<i64> = row.try_get("revoked_at")?;
        let customer_id: String = row.try_get("customer_id")?;
        if revoked.is_some() {
            return Ok(RefreshOutcome::Invalid);
        }
        let claimed = if used.is_none() {
            sqlx::query(
                "UPDATE refresh_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL",
            )
            .bind(now)
            .bind(token_hash)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1
        } else {
            false
        };
        if !claimed {
            sqlx::query("UPDATE refresh_families SET revoked_at = $1 WHERE id = $2")
                .bind(now)
                .bind(&family)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(RefreshOutcome::Reused);
        }
        if expires <= now {
            tx.commit().await?;
            return Ok(RefreshOutcome::Invalid);
        }
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, family_id, created_at, expires_at, used_at) VALUES ($1, $2, $3, $4, NULL)",
        )
        .bind(new_hash)
        .bind(&family)
        .bind(now)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(RefreshOutcome::Rotated { customer_id })
    }

    /// Revokes the family of a refresh token (logout); false when the token is unknown.
    pub async fn revoke_refresh_family(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE refresh_families SET revoked_at = $1 WHERE revoked_at IS NULL AND id = \
             (SELECT family_id FROM refresh_tokens WHERE token_hash = $2)",
        )
        .bind(now)
        .bind(token_hash)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Ends every session of a customer: revokes all refresh families and moves the session
    /// epoch on, so that access tokens issued before are refused too.
    pub async fn end_all_sessions(&self, customer_id: &str, now: i64) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE refresh_families SET revoked_at = $1 WHERE customer_id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(customer_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE customers SET session_epoch = session_epoch + 1 WHERE id = $1")
            .bind(customer_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

enum CustomerKey<'a> {
    Text(&'a str),
    Number(i64),
}

/// Accounts found in place of the new ones a batch meant to create: (id meant, id found).
#[derive(Default)]
struct Owners {
    replaced: std::collections::HashMap<String, String>,
}

impl Owners {
    fn resolve<'a>(&'a self, id: &'a String) -> &'a String {
        self.replaced.get(id).unwrap_or(id)
    }

    /// The change as the outbox keeps it, naming the owner it is recorded under.
    fn change_json<'a>(
        &self,
        change: &'a Recorded,
    ) -> Result<std::borrow::Cow<'a, str>, StoreError> {
        let Some(found) = change
            .new_owner
            .as_ref()
            .and_then(|o| self.replaced.get(&o.id))
        else {
            return Ok(change.change_json.as_str().into());
        };
        let mut value: serde_json::Value = serde_json::from_str(&change.change_json)
            .map_err(|e| StoreError::Invalid(format!("outbox change: {e}")))?;
        value["operation"]["owner_id"] = serde_json::Value::String(found.clone());
        Ok(value.to_string().into())
    }
}

/// Creates the new owners' accounts of a batch, or finds the accounts made meanwhile in their
/// place (see [`Store::record_batch`]).
async fn create_owners(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    batch: &[Recorded],
) -> Result<Owners, StoreError> {
    let new: Vec<&Customer> = batch.iter().filter_map(|c| c.new_owner.as_ref()).collect();
    if new.is_empty() {
        return Ok(Owners::default());
    }
    let mut insert = String::from(
        "INSERT INTO customers (id, email, telegram_id, display_name, created_at, session_epoch) VALUES ",
    );
    placeholders::rows(&mut insert, Style::Numbered, new.len(), 6);
    insert.push_str(" ON CONFLICT DO NOTHING");
    let mut query = sqlx::query(&insert);
    for customer in &new {
        query = query
            .bind(&customer.id)
            .bind(customer.email.clone())
            .bind(customer.telegram_id)
            .bind(&customer.display_name)
            .bind(customer.created_at)
            .bind(customer.session_epoch);
    }
    let inserted = query.execute(&mut **tx).await?.rows_affected();
    if inserted == new.len() as u64 {
        return Ok(Owners::default());
    }
    let mut select = String::from(
        "SELECT id, email, telegram_id, display_name, created_at, session_epoch FROM customers WHERE id IN (",
    );
    placeholders::list(&mut select, Style::Numbered, 1, new.len());
    select.push_str(") OR telegram_id IN (");
    placeholders::list(&mut select, Style::Numbered, 1 + new.len(), new.len());
    select.push_str(") OR email IN (");
    placeholders::list(&mut select, Style::Numbered, 1 + 2 * new.len(), new.len());
    select.push(')');
    let mut query = sqlx::query(&select);
    for customer in &new {
        query = query.bind(&customer.id);
    }
    for customer in &new {
        query = query.bind(customer.telegram_id);
    }
    for customer in &new {
        query = query.bind(customer.email.clone());
    }
    let found: Vec<Customer> = query
        .fetch_all(&mut **tx)
        .await?
        .iter()
        .map(customer_row)
        .collect::<Result<_, _>>()?;
    let mut owners = Owners::default();
    for customer in new {
        if found.iter().any(|f| f.id == customer.id) {
            continue;
        }
        let instead = found
            .iter()
            .find(|f| f.telegram_id.is_some() && f.telegram_id == customer.telegram_id)
            .or_else(|| {
                found
                    .iter()
                    .find(|f| f.email.is_some() && f.email == customer.email)
            })
            .ok_or_else(|| {
                StoreError::Invalid(format!(
                    "the account for a new tenant's owner could be neither created nor found (customer {})",
                    customer.id
                ))
            })?;
        owners
            .replaced
            .insert(customer.id.clone(), instead.id.clone());
    }
    Ok(owners)
}

/// The columns [`tenant_row`] reads.
const TENANT_COLUMNS: &str = "name, owner_id, uid, created_at, updated_at, last_commit";

/// The key under which the usage ledger keeps an incarnation's usage: `name@uid`, or the name
/// alone for a tenant without a uid (made by hand, or before uids existed). Names cannot hold
/// `@`, so keys of different incarnations never collide.
pub fn ledger_key(name: &str, uid: Option<&str>) -> String {
    match uid {
        Some(uid) => format!("{name}@{uid}"),
        None => name.to_owned(),
    }
}

/// The tenant name a ledger key belongs to.
pub fn ledger_key_name(key: &str) -> &str {
    key.split_once('@').map_or(key, |(name, _)| name)
}

/// A destroyed incarnation of a tenant, kept so that its owner can read its history and usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PastIncarnation {
    pub ledger_key: String,
    pub name: String,
    pub uid: Option<String>,
    pub owner_id: Option<String>,
    pub created_at: i64,
    pub destroyed_at: i64,
}

fn tenant_row(r: &sqlx::any::AnyRow) -> Result<TenantRow, StoreError> {
    Ok(TenantRow {
        name: r.try_get("name")?,
        owner_id: r.try_get("owner_id")?,
        uid: r.try_get("uid")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        last_commit: r.try_get("last_commit")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(seq: i64, tenant: &str, effect: IndexEffect, prior: Option<TenantRow>) -> Recorded {
        Recorded {
            seq,
            tenant: tenant.into(),
            action: "provision".into(),
            request_id: format!("req-{seq}"),
            change_json: "{}".into(),
            commit_id: format!("{seq:040}"),
            index: effect,
            idempotency: Some(IdempotencyRecord {
                actor: "ops".into(),
                key: format!("key-{seq}"),
                request_hash: "h".into(),
                status: 201,
                body: "{}".into(),
            }),
            new_owner: None,
            prior,
            at: 1000 + seq,
        }
    }

    #[tokio::test]
    async fn record_mark_and_undo_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let store = Store::connect(&url, 2).await.unwrap();
        assert_eq!(store.next_seq().await.unwrap(), 1);
        let upsert = || IndexEffect::Upsert {
            owner_id: None,
            uid: None,
        };
        store
            .record_batch(&[change(1, "acme", upsert(), None)], &[], 0)
            .await
            .unwrap();
        let row = store.tenant("acme").await.unwrap().unwrap();
        assert_eq!(row.last_commit, format!("{:040}", 1));
        assert_eq!(store.pending().await.unwrap().len(), 1);
        let replay = store
            .idempotent_response("ops", "key-1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(replay.status, 201);

        let second = change(2, "acme", IndexEffect::Remove, Some(row.clone()));
        store
            .record_batch(std::slice::from_ref(&second), &[], 0)
            .await
            .unwrap();
        assert!(store.tenant("acme").await.unwrap().is_none());
        store.undo_batch(&[second]).await.unwrap();
        assert_eq!(store.tenant("acme").await.unwrap(), Some(row));
        assert!(store
            .idempotent_response("ops", "key-2")
            .await
            .unwrap()
            .is_none());

        store.mark_state(&[1], "pushed", 5000).await.unwrap();
        assert_eq!(store.outbox_counts().await.unwrap(), (0, 1));
        assert_eq!(store.next_seq().await.unwrap(), 2);

        // A batch carries the marks of earlier pushed rows in its own transaction.
        store
            .record_batch(&[change(3, "globex", upsert(), None)], &[], 0)
            .await
            .unwrap();
        assert_eq!(store.outbox_counts().await.unwrap(), (1, 1));
        store
            .record_batch(&[change(4, "initech", upsert(), None)], &[3], 6000)
            .await
            .unwrap();
        assert_eq!(store.outbox_counts().await.unwrap(), (1, 2));
        let pending: Vec<i64> = store
            .pending()
            .await
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(pending, [4]);
        // With no batch, the marks still land.
        store.record_batch(&[], &[4], 7000).await.unwrap();
        assert_eq!(store.outbox_counts().await.unwrap(), (0, 3));
    }

    #[tokio::test]
    async fn new_owners_are_created_with_the_batch_or_found_in_their_place() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let store = Store::connect(&url, 2).await.unwrap();
        let provision = |seq: i64, tenant: &str, owner: &Customer| {
            Recorded {
            change_json: serde_json::json!({
                "tenant": tenant,
                "operation": {"action": "provision", "spec_yaml": "", "secrets_yaml": "", "owner_id": owner.id},
            })
            .to_string(),
            new_owner: Some(owner.clone()),
            ..change(
                seq,
                tenant,
                IndexEffect::Upsert {
                    owner_id: Some(owner.id.clone()),
                    uid: None,
                },
                None,
            )
        }
        };
        let ada = Customer::new(Some("ada@example.com".into()), Some(7), "Ada".into(), 1);
        // Two provisions for the same new person in one batch, each with an account of its own
        // making: the first is created, the second tenant goes to it.
        let twin = Customer::new(Some("ada@example.com".into()), Some(7), "Ada".into(), 1);
        // Someone signed in meanwhile with the Telegram id a provision names.
        let signed_in = Customer::new(None, Some(8), "Bob".into(), 1);
        store.insert_customer(&signed_in).await.unwrap();
        let bob = Customer::new(Some("bob@example.com".into()), Some(8), "Bob".into(), 1);
        store
            .record_batch(
                &[
                    provision(1, "acme", &ada),
                    provision(2, "globex", &twin),
                    provision(3, "initech", &bob),
                ],
                &[],
                0,
            )
            .await
            .unwrap();
        let owner = |name: &'static str| {
            let store = store.clone();
            async move { store.tenant(name).await.unwrap().unwrap().owner_id }
        };
        assert_eq!(owner("acme").await, Some(ada.id.clone()));
        assert_eq!(owner("globex").await, Some(ada.id.clone()));
        assert_eq!(owner("initech").await, Some(signed_in.id.clone()));
        assert_eq!(
            store.customer_by_telegram(7).await.unwrap().unwrap().email,
            Some("ada@example.com".into())
        );
        assert!(store.customer(&twin.id).await.unwrap().is_none());
        assert!(store.customer(&bob.id).await.unwrap().is_none());
        // The outbox names the owner each tenant was recorded under.
        let pending = store.pending().await.unwrap();
        let owners: Vec<String> = pending
            .iter()
            .map(|row| {
                let change: serde_json::Value = serde_json::from_str(&row.change_json).unwrap();
                change["operation"]["owner_id"].as_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(owners, [ada.id.clone(), ada.id, signed_in.id]);
    }
}
