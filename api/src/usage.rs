//! The usage ledger: the token proxies' usage events (docs/usage-events.md) stored once per event id,
//! with aggregates per tenant and model by UTC day and by UTC month, and the customer endpoints that
//! read them.
//!
//! Ingest checks a whole batch before it writes anything, then writes it in one transaction: a
//! multi-row `INSERT … ON CONFLICT (id) DO NOTHING RETURNING id` tells which events are new, and only
//! those are added to the aggregates, once per (tenant, day, model) and once per (tenant, month,
//! model). Duplicates, replays and concurrent batches are therefore counted exactly once on both
//! databases: the unique key decides, and rows are written in key order so that concurrent batches
//! take their locks in the same order. This module owns the ledger's tables; the budget feed built
//! on them is [`crate::budget`], and the endpoints are [`crate::routes::usage`]. It knows no HTTP.

use std::collections::{BTreeMap, HashSet};

use compiler::spec::TenantName;
use serde::Serialize;
use sqlx::{AnyPool, Row};
use subtle::ConstantTimeEq;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};
use utoipa::ToSchema;

use crate::budget::BudgetFeed;
use crate::config::Config;
pub use crate::period::{day_label, Period};
use crate::placeholders::{self, Style};
use secrecy::ExposeSecret;

/// Most events in one batch (the proxy sends `usage.batch_size`, 500 by default).
pub const MAX_EVENTS_PER_BATCH: usize = 10_000;
/// Largest ingest body: a full batch with long model names fits.
pub const MAX_INGEST_BYTES: usize = 8 * 1024 * 1024;
/// Largest token count, latency or status accepted in one event: far above any real request, and
/// small enough that sums over years of events stay exact in a BIGINT.
pub const MAX_COUNT: u64 = 1 << 40;
const MAX_MODEL_CHARS: usize = 200;
/// Most rows per INSERT statement: 14 parameters each stays under SQLite's 32,766 and
/// PostgreSQL's 65,535.
const ROWS_PER_STATEMENT: usize = 1024;

/// Splits `items` into chunks whose lengths are powers of two (largest first, at most
/// [`ROWS_PER_STATEMENT`]). Each chunk length gives one statement text, so a connection prepares
/// at most 11 shapes per table and reuses them from its statement cache; a statement per exact
/// row count would be parsed and planned anew for almost every batch, which PostgreSQL pays
/// dearly for with thousands of parameters.
fn statement_chunks<T>(mut items: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        if items.is_empty() {
            return None;
        }
        let size = 1usize << (items.len().min(ROWS_PER_STATEMENT).ilog2());
        let (chunk, rest) = items.split_at(size);
        items = rest;
        Some(chunk)
    })
}

// ---------------------------------------------------------------------------------------------
// The ledger's shared state

/// What the usage endpoints share: the proxies' credentials and the budget feed.
pub struct Ledger {
    /// SHA-256 of each configured proxy credential.
    proxy_credentials: Vec<[u8; 32]>,
    pub feed: BudgetFeed,
    /// Held around an ingest transaction on SQLite, which takes one writer at a time: batches
    /// queue here instead of in SQLite's busy handler, which sleeps in steps of up to 100 ms.
    sqlite_writer: Option<tokio::sync::Mutex<()>>,
}

impl Ledger {
    /// On SQLite, which takes one writer at a time, the turn of one ingest transaction (held
    /// until dropped); None on PostgreSQL.
    pub async fn ingest_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match &self.sqlite_writer {
            Some(lock) => Some(lock.lock().await),
            None => None,
        }
    }

    /// Whether `presented` (a SHA-256) is one of the proxies' credentials. Compares against
    /// every credential so the time taken does not say which one matched.
    pub fn knows_proxy_credential(&self, presented: &[u8; 32]) -> bool {
        let mut found = false;
        for hash in &self.proxy_credentials {
            found |= bool::from(hash.ct_eq(presented));
        }
        found
    }

    pub fn new(config: &Config) -> Ledger {
        let proxy_credentials = config
            .proxy_credentials
            .iter()
            .map(|c| {
                let mut hash = [0u8; 32];
                hex::decode_to_slice(&c.sha256, &mut hash).expect("checked by Config::check");
                hash
            })
            .collect::<Vec<_>>();
        if proxy_credentials.is_empty() {
            tracing::warn!(
                "no proxy_credentials configured: /internal/usage and /internal/budget refuse every caller"
            );
        }
        Ledger {
            proxy_credentials,
            feed: BudgetFeed::default(),
            sqlite_writer: config
                .database_url
                .expose_secret()
                .starts_with("sqlite:")
                .then(|| tokio::sync::Mutex::new(())),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The wire shape (docs/usage-events.md)

pub use contracts::usage::ApiName as ApiKind;
/// The body of `POST /internal/usage`, its events' id and start time as text, checked by [`check_batch`].
pub use contracts::usage::UsageBatch;
/// One metered request as the proxy ships it (`contracts::usage::UsageEvent` with text id and time).
pub use contracts::usage::UsageEvent as UsageEventBody;

/// Counts of a set of requests: what the aggregates hold.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    /// Tokens that count against the budget (docs/usage-events.md).
    pub billable_tokens: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
    pub requests: i64,
    /// Requests whose response was cut short (counted in `requests` too).
    pub partial_requests: i64,
}

impl Totals {
    /// Adds `other` to these totals.
    pub fn add(&mut self, other: &Totals) {
        self.billable_tokens += other.billable_tokens;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cache_read_tokens += other.cache_read_tokens;
        self.cache_write_tokens += other.cache_write_tokens;
        self.requests += other.requests;
        self.partial_requests += other.partial_requests;
    }

    fn from_row(row: &sqlx::any::AnyRow) -> Result<Totals, sqlx::Error> {
        Ok(Totals {
            billable_tokens: row.try_get("billable_tokens")?,
            input_tokens: row.try_get("input_tokens")?,
            output_tokens: row.try_get("output_tokens")?,
            cache_read_tokens: row.try_get("cache_read_tokens")?,
            cache_write_tokens: row.try_get("cache_write_tokens")?,
            requests: row.try_get("requests")?,
            partial_requests: row.try_get("partial_requests")?,
        })
    }
}

/// A checked event, ready to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Canonical (lowercase, hyphenated) UUID.
    pub id: String,
    pub tenant: String,
    pub model: String,
    pub api: ApiKind,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
    pub latency_ms: i64,
    pub status: i32,
    pub partial: bool,
    /// Unix milliseconds.
    pub started_at: i64,
    pub day: String,
    pub period: String,
}

impl Event {
    /// Tokens that count against limits and budgets: OpenAI input + output (its input includes
    /// cached tokens); Anthropic input + cache reads + cache writes + output.
    pub fn billable_tokens(&self) -> i64 {
        match self.api {
            ApiKind::Openai => self.input_tokens + self.output_tokens,
            ApiKind::Anthropic => {
                self.input_tokens
                    + self.cache_read_tokens
                    + self.cache_write_tokens
                    + self.output_tokens
            }
        }
    }

    fn totals(&self) -> Totals {
        Totals {
            billable_tokens: self.billable_tokens(),
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cache_read_tokens: self.cache_read_tokens,
            cache_write_tokens: self.cache_write_tokens,
            requests: 1,
            partial_requests: i64::from(self.partial),
        }
    }
}

/// A refusal of a batch, naming the field at fault (`events[3].inputTokens`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchError {
    pub field: String,
    pub message: String,
}

fn count(value: u64, field: impl FnOnce() -> String) -> Result<i64, BatchError> {
    if value > MAX_COUNT {
        return Err(BatchError {
            field: field(),
            message: format!("{value} is out of range: at most {MAX_COUNT}"),
        });
    }
    Ok(value as i64)
}

/// Checks every event of a batch; the first problem refuses the whole batch. Returns the events
/// sorted by id with exact repeats inside the batch dropped.
pub fn check_batch(batch: UsageBatch) -> Result<Vec<Event>, BatchError> {
    if batch.events.len() > MAX_EVENTS_PER_BATCH {
        return Err(BatchError {
            field: "events".into(),
            message: format!(
                "{} events in one batch; send at most {MAX_EVENTS_PER_BATCH} (proxy: usage.batch_size)",
                batch.events.len()
            ),
        });
    }
    let mut checked = Vec::with_capacity(batch.events.len());
    for (i, e) in batch.events.into_iter().enumerate() {
        let at = |name: &str| format!("events[{i}].{name}");
        let bad = |name: &str, message: String| BatchError {
            field: at(name),
            message,
        };
        let id =
            uuid::Uuid::parse_str(&e.id).map_err(|err| bad("id", format!("not a UUID: {err}")))?;
        if id.get_version_num() != 7 {
            return Err(bad(
                "id",
                format!(
                    "must be a UUID v7 (the proxy makes one per request), not version {}",
                    id.get_version_num()
                ),
            ));
        }
        let tenant = TenantName::parse(e.tenant.clone()).map_err(|m| bad("tenant", m))?;
        if e.model.is_empty()
            || e.model.chars().count() > MAX_MODEL_CHARS
            || e.model.chars().any(char::is_control)
        {
            return Err(bad(
                "model",
                format!("must be 1 to {MAX_MODEL_CHARS} characters without control characters"),
            ));
        }
        if e.status > 999 {
            return Err(bad(
                "status",
                format!("{} is not an HTTP status (0 to 999)", e.status),
            ));
        }
        let started = OffsetDateTime::parse(&e.started_at, &Rfc3339)
            .map_err(|err| {
                bad(
                    "startedAt",
                    format!("not an RFC 3339 time such as 2026-11-25T12:00:00.123Z: {err}"),
                )
            })?
            .to_offset(UtcOffset::UTC);
        let started_ms = i64::try_from(started.unix_timestamp_nanos() / 1_000_000)
            .map_err(|_| bad("startedAt", "out of range".into()))?;
        checked.push((
            i,
            Event {
                id: id.hyphenated().to_string(),
                tenant: tenant.to_string(),
                model: e.model,
                api: e.api,
                input_tokens: count(e.input_tokens, || at("inputTokens"))?,
                output_tokens: count(e.output_tokens, || at("outputTokens"))?,
                cache_read_tokens: count(e.cache_read_tokens, || at("cacheReadTokens"))?,
                cache_write_tokens: count(e.cache_write_tokens, || at("cacheWriteTokens"))?,
                latency_ms: count(e.latency_ms, || at("latencyMs"))?,
                status: i32::from(e.status),
                partial: e.partial,
                started_at: started_ms,
                day: day_label(started.date()),
                period: Period::of(started).label(),
            },
        ));
    }
    checked.sort_by(|a, b| a.1.id.cmp(&b.1.id));
    let mut events: Vec<Event> = Vec::with_capacity(checked.len());
    for (i, event) in checked {
        if let Some(last) = events.last() {
            if last.id == event.id {
                if *last == event {
                    continue;
                }
                return Err(BatchError {
                    field: format!("events[{i}].id"),
                    message: "this id appears twice in the batch with different values".into(),
                });
            }
        }
        events.push(event);
    }
    Ok(events)
}

// ---------------------------------------------------------------------------------------------
// Storage

/// What an ingest did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngestOutcome {
    /// Events stored now.
    pub accepted: usize,
    /// Events already stored before (a resent batch), or repeated inside the batch.
    pub duplicates: usize,
}

const AGGREGATE_COLUMNS: &str = "requests, partial_requests, input_tokens, output_tokens, \
     cache_read_tokens, cache_write_tokens, billable_tokens";

fn aggregate_update(table: &str) -> String {
    AGGREGATE_COLUMNS
        .split(", ")
        .map(|c| format!("{c} = {table}.{c} + excluded.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Adds `rows` (key columns, then the totals) to an aggregate table.
async fn upsert_aggregates(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    table: &str,
    keys: [&str; 3],
    rows: &BTreeMap<(String, String, String), Totals>,
) -> Result<(), sqlx::Error> {
    let style = Style::for_backend(tx.backend_name());
    let rows: Vec<_> = rows.iter().collect();
    for chunk in statement_chunks(&rows) {
        let mut sql = format!(
            "INSERT INTO {table} ({}, {}, {}, {AGGREGATE_COLUMNS}) VALUES ",
            keys[0], keys[1], keys[2]
        );
        placeholders::rows(&mut sql, style, chunk.len(), 10);
        sql.push_str(&format!(
            " ON CONFLICT ({}, {}, {}) DO UPDATE SET {}",
            keys[0],
            keys[1],
            keys[2],
            aggregate_update(table)
        ));
        let mut query = sqlx::query(&sql);
        for ((a, b, c), t) in chunk {
            query = query
                .bind(a.as_str())
                .bind(b.as_str())
                .bind(c.as_str())
                .bind(t.requests)
                .bind(t.partial_requests)
                .bind(t.input_tokens)
                .bind(t.output_tokens)
                .bind(t.cache_read_tokens)
                .bind(t.cache_write_tokens)
                .bind(t.billable_tokens);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Stores checked events (sorted by id, as [`check_batch`] returns them) and adds the new ones to
/// the aggregates, all in one transaction.
pub async fn ingest(
    store: &crate::store::Store,
    events: &[Event],
    received_at: i64,
) -> Result<IngestOutcome, sqlx::Error> {
    if events.is_empty() {
        return Ok(IngestOutcome {
            accepted: 0,
            duplicates: 0,
        });
    }
    let mut tx = store.begin_write().await?;
    let style = Style::for_backend(tx.backend_name());
    let mut inserted: HashSet<String> = HashSet::with_capacity(events.len());
    for chunk in statement_chunks(events) {
        let mut sql = String::from(
            "INSERT INTO usage_events (id, tenant, model, api, input_tokens, output_tokens, \
             cache_read_tokens, cache_write_tokens, billable_tokens, latency_ms, status, partial, \
             started_at, received_at) VALUES ",
        );
        placeholders::rows(&mut sql, style, chunk.len(), 14);
        sql.push_str(" ON CONFLICT (id) DO NOTHING RETURNING id");
        let mut query = sqlx::query(&sql);
        for e in chunk {
            query = query
                .bind(e.id.as_str())
                .bind(e.tenant.as_str())
                .bind(e.model.as_str())
                .bind(e.api.as_str())
                .bind(e.input_tokens)
                .bind(e.output_tokens)
                .bind(e.cache_read_tokens)
                .bind(e.cache_write_tokens)
                .bind(e.billable_tokens())
                .bind(e.latency_ms)
                .bind(e.status)
                .bind(i32::from(e.partial))
                .bind(e.started_at)
                .bind(received_at);
        }
        for row in query.fetch_all(&mut *tx).await? {
            inserted.insert(row.try_get::<String, _>("id")?);
        }
    }
    let mut daily: BTreeMap<(String, String, String), Totals> = BTreeMap::new();
    let mut monthly: BTreeMap<(String, String, String), Totals> = BTreeMap::new();
    for e in events.iter().filter(|e| inserted.contains(&e.id)) {
        let totals = e.totals();
        daily
            .entry((e.tenant.clone(), e.day.clone(), e.model.clone()))
            .or_default()
            .add(&totals);
        monthly
            .entry((e.period.clone(), e.tenant.clone(), e.model.clone()))
            .or_default()
            .add(&totals);
    }
    upsert_aggregates(&mut tx, "usage_daily", ["tenant", "day", "model"], &daily).await?;
    upsert_aggregates(
        &mut tx,
        "usage_monthly",
        ["period", "tenant", "model"],
        &monthly,
    )
    .await?;
    tx.commit().await?;
    Ok(IngestOutcome {
        accepted: inserted.len(),
        duplicates: events.len() - inserted.len(),
    })
}

const SUMMED: &str = "CAST(SUM(requests) AS BIGINT) AS requests, \
     CAST(SUM(partial_requests) AS BIGINT) AS partial_requests, \
     CAST(SUM(input_tokens) AS BIGINT) AS input_tokens, \
     CAST(SUM(output_tokens) AS BIGINT) AS output_tokens, \
     CAST(SUM(cache_read_tokens) AS BIGINT) AS cache_read_tokens, \
     CAST(SUM(cache_write_tokens) AS BIGINT) AS cache_write_tokens, \
     CAST(SUM(billable_tokens) AS BIGINT) AS billable_tokens";

/// A tenant's usage per UTC day of `period` (days without usage are absent).
pub async fn by_day(
    pool: &AnyPool,
    tenant: &str,
    period: Period,
) -> Result<Vec<(String, Totals)>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT day, {SUMMED} FROM usage_daily WHERE tenant = $1 AND day >= $2 AND day <= $3 \
         GROUP BY day ORDER BY day"
    ))
    .bind(tenant)
    .bind(day_label(period.first_day()))
    .bind(day_label(period.last_day()))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("day")?, Totals::from_row(r)?)))
        .collect()
}

/// A tenant's usage per model in `period`.
pub async fn by_model(
    pool: &AnyPool,
    tenant: &str,
    period: Period,
) -> Result<Vec<(String, Totals)>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT model, {AGGREGATE_COLUMNS} FROM usage_monthly WHERE period = $1 AND tenant = $2 \
         ORDER BY model"
    ))
    .bind(period.label())
    .bind(tenant)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("model")?, Totals::from_row(r)?)))
        .collect()
}

/// A tenant's usage in one month: per model, the total, and the budget it counts against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonthUsage {
    /// Every model used in the month, by name.
    pub models: Vec<(String, Totals)>,
    pub total: Totals,
    /// The monthly budget of the tenant's tier as the budget feed has it: only for the month in
    /// progress of the live incarnation (a destroyed tenant's history has none).
    pub budget: Option<u64>,
}

/// Sums `period`'s usage of the incarnation whose ledger key is `ledger_key` (tenant `name`,
/// `live` when it is the tenant's current incarnation) and reads its budget from `feed`. The
/// usage endpoint and the platform bot's `/usage` both read it here.
pub async fn month_usage(
    pool: &AnyPool,
    feed: &BudgetFeed,
    ledger_key: &str,
    name: &str,
    live: bool,
    period: Period,
) -> Result<MonthUsage, sqlx::Error> {
    let models = by_model(pool, ledger_key, period).await?;
    let mut total = Totals::default();
    for (_, t) in &models {
        total.add(t);
    }
    let budget = if live && period == Period::of(OffsetDateTime::now_utc()) {
        feed.budget_of(name)
    } else {
        None
    };
    Ok(MonthUsage {
        models,
        total,
        budget,
    })
}

/// A tenant's usage per period, newest first.
pub async fn periods(pool: &AnyPool, tenant: &str) -> Result<Vec<(String, Totals)>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT period, {SUMMED} FROM usage_monthly WHERE tenant = $1 GROUP BY period ORDER BY period DESC"
    ))
    .bind(tenant)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("period")?, Totals::from_row(r)?)))
        .collect()
}

/// Billable tokens per tenant name in `period`, counting only live incarnations: usage of a
/// destroyed one never counts for a later tenant of the same name (tenants without usage are
/// absent).
pub async fn billable_by_tenant(
    pool: &AnyPool,
    period: Period,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT tenant, CAST(SUM(billable_tokens) AS BIGINT) AS billable_tokens FROM usage_monthly \
         WHERE period = $1 AND tenant NOT IN (SELECT ledger_key FROM past_incarnations) GROUP BY tenant",
    )
    .bind(period.label())
    .fetch_all(pool)
    .await?;
    let mut by_name: BTreeMap<String, i64> = BTreeMap::new();
    for row in &rows {
        let key: String = row.try_get("tenant")?;
        let used: i64 = row.try_get("billable_tokens")?;
        *by_name
            .entry(crate::store::ledger_key_name(&key).to_owned())
            .or_default() += used;
    }
    Ok(by_name.into_iter().collect())
}

/// Files each event under the ledger key of its tenant's live incarnation (`name@uid`, see
/// [`crate::store::ledger_key`]); events of tenants the index does not know keep their name.
pub async fn key_by_incarnation(
    store: &crate::store::Store,
    events: &mut [Event],
) -> Result<(), crate::store::StoreError> {
    let mut names: Vec<&str> = events.iter().map(|e| e.tenant.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let keys = store.ledger_keys(&names).await?;
    for event in events.iter_mut() {
        if let Some(key) = keys.get(&event.tenant) {
            event.tenant = key.clone();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(id: &str) -> UsageEventBody {
        UsageEventBody {
            id: id.into(),
            tenant: "acme".into(),
            model: "k2p5".into(),
            input_tokens: 21,
            output_tokens: 9,
            cache_read_tokens: 6,
            cache_write_tokens: 4,
            latency_ms: 840,
            status: 200,
            partial: false,
            api: ApiKind::Anthropic,
            started_at: "2026-11-30T23:59:59.999Z".into(),
        }
    }

    const ID: &str = "0193a1b2-7c4e-7d21-9a3f-5e1c2b3a4d5f";

    #[test]
    fn billable_tokens_follow_the_documented_rule() {
        let events = check_batch(UsageBatch {
            events: vec![body(ID)],
        })
        .unwrap();
        assert_eq!(events[0].billable_tokens(), 21 + 6 + 4 + 9);
        let mut openai = body(ID);
        openai.api = ApiKind::Openai;
        let events = check_batch(UsageBatch {
            events: vec![openai],
        })
        .unwrap();
        assert_eq!(events[0].billable_tokens(), 21 + 9);
    }

    #[test]
    fn days_and_periods_are_utc() {
        let mut late = body(ID);
        late.started_at = "2026-12-01T00:30:00+01:00".into();
        let events = check_batch(UsageBatch { events: vec![late] }).unwrap();
        assert_eq!(events[0].day, "2026-11-30");
        assert_eq!(events[0].period, "2026-11");
        let events = check_batch(UsageBatch {
            events: vec![body(ID)],
        })
        .unwrap();
        assert_eq!(
            (events[0].day.as_str(), events[0].period.as_str()),
            ("2026-11-30", "2026-11")
        );
    }

    #[test]
    fn a_bad_event_names_its_field() {
        type Spoil = Box<dyn Fn(&mut UsageEventBody)>;
        let cases: Vec<(Spoil, &str)> = vec![
            (Box::new(|e| e.id = "nope".into()), "events[1].id"),
            (
                Box::new(|e| e.id = "6f1c2b3a-4d5f-4e21-9a3f-5e1c2b3a4d5f".into()),
                "events[1].id",
            ),
            (
                Box::new(|e| e.tenant = "Not A Name".into()),
                "events[1].tenant",
            ),
            (Box::new(|e| e.model = String::new()), "events[1].model"),
            (
                Box::new(|e| e.input_tokens = MAX_COUNT + 1),
                "events[1].inputTokens",
            ),
            (Box::new(|e| e.status = 1000), "events[1].status"),
            (
                Box::new(|e| e.started_at = "yesterday".into()),
                "events[1].startedAt",
            ),
        ];
        for (spoil, field) in cases {
            let mut second = body("0193a1b2-7c4e-7d21-9a3f-5e1c2b3a4d60");
            spoil(&mut second);
            let err = check_batch(UsageBatch {
                events: vec![body(ID), second],
            })
            .unwrap_err();
            assert_eq!(err.field, field, "{err:?}");
        }
    }

    #[test]
    fn repeats_inside_a_batch_count_once_and_conflicts_are_refused() {
        let events = check_batch(UsageBatch {
            events: vec![body(ID), body(ID)],
        })
        .unwrap();
        assert_eq!(events.len(), 1);
        let mut other = body(ID);
        other.output_tokens = 10;
        let err = check_batch(UsageBatch {
            events: vec![body(ID), other],
        })
        .unwrap_err();
        assert!(err.field.ends_with(".id"), "{err:?}");
    }

    #[test]
    fn statements_come_in_power_of_two_sizes() {
        let items: Vec<u32> = (0..2500).collect();
        let sizes: Vec<usize> = statement_chunks(&items).map(<[u32]>::len).collect();
        assert_eq!(sizes, vec![1024, 1024, 256, 128, 64, 4]);
        assert_eq!(statement_chunks(&items[..0]).count(), 0);
    }

    #[test]
    fn periods_parse_strictly() {
        assert_eq!(Period::parse("2026-02").unwrap().last_day().day(), 28);
        assert_eq!(Period::parse("2028-02").unwrap().last_day().day(), 29);
        for bad in [
            "2026-13", "2026-1", "26-01", "2026/01", "1999-12", "2026-+1",
        ] {
            assert!(Period::parse(bad).is_err(), "{bad}");
        }
        assert!(Period::parse("2026-11").unwrap() < Period::parse("2026-12").unwrap());
        assert!(Period::parse("2026-12").unwrap() < Period::parse("2027-01").unwrap());
    }
}
