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
//! on them is [`crate::budget`].

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use compiler::spec::TenantName;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{AnyPool, Row};
use subtle::ConstantTimeEq;
use time::format_description::well_known::Rfc3339;
use time::{Date, Month, OffsetDateTime, UtcOffset};
use utoipa::{OpenApi, ToSchema};

use crate::budget::{BudgetFeed, FeedState};
use crate::config::Config;
use crate::http::{ApiError, AppState, Caller, ErrorBody, ErrorDetail};

type Shared = Arc<AppState>;

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
                .starts_with("sqlite:")
                .then(|| tokio::sync::Mutex::new(())),
        }
    }
}

/// A caller holding one of the token proxy's credentials (never an admin token: the
/// configuration refuses a proxy credential that equals an admin token).
pub struct ProxyCaller;

impl axum::extract::FromRequestParts<Shared> for ProxyCaller {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &Shared,
    ) -> Result<Self, Response> {
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|token| <[u8; 32]>::from(Sha256::digest(token.trim().as_bytes())));
        let mut found = false;
        if let Some(presented) = presented {
            // Compare against every credential so the time taken does not say which one matched.
            for hash in &state.ledger.proxy_credentials {
                found |= bool::from(hash.ct_eq(&presented));
            }
        }
        if found {
            return Ok(ProxyCaller);
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: "unauthorized".into(),
                message: "send the token proxy's credential as `Authorization: Bearer <credential>` (config: proxy_credentials)".into(),
                field: None,
            },
        };
        Err((StatusCode::UNAUTHORIZED, Json(body)).into_response())
    }
}

/// The incarnation of `tenant` whose usage `caller` may see, by the check of every endpoint that
/// reads a tenant's past ([`crate::http::authorize_incarnation`]): admins see all, customers the
/// incarnations they owned, and anything else is a 404.
async fn authorize(
    state: &Shared,
    caller: &Caller,
    tenant: &TenantName,
    uid: Option<&str>,
) -> Result<crate::http::Incarnation, ApiError> {
    crate::http::authorize_incarnation(state, caller, tenant.as_str(), uid).await
}

// ---------------------------------------------------------------------------------------------
// Periods and days

/// A UTC calendar month, `YYYY-MM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    pub year: i32,
    pub month: Month,
}

impl Period {
    /// The month `at` falls in (UTC).
    pub fn of(at: OffsetDateTime) -> Period {
        let at = at.to_offset(UtcOffset::UTC);
        Period {
            year: at.year(),
            month: at.month(),
        }
    }

    pub fn current() -> Period {
        Period::of(OffsetDateTime::now_utc())
    }

    /// Parses `YYYY-MM` (years 2000 to 9999).
    pub fn parse(text: &str) -> Result<Period, String> {
        let bad = || format!("{text:?} is not a month as YYYY-MM (for example 2026-11)");
        let (y, m) = text.split_once('-').ok_or_else(bad)?;
        if y.len() != 4 || m.len() != 2 || !y.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let year: i32 = y.parse().map_err(|_| bad())?;
        let month: u8 = m.parse().map_err(|_| bad())?;
        let month = Month::try_from(month).map_err(|_| bad())?;
        if year < 2000 {
            return Err(bad());
        }
        Ok(Period { year, month })
    }

    pub fn label(self) -> String {
        format!("{:04}-{:02}", self.year, u8::from(self.month))
    }

    pub fn first_day(self) -> Date {
        Date::from_calendar_date(self.year, self.month, 1).expect("the first of a month exists")
    }

    pub fn last_day(self) -> Date {
        let days = time::util::days_in_month(self.month, self.year);
        Date::from_calendar_date(self.year, self.month, days).expect("the last of a month exists")
    }
}

/// `YYYY-MM-DD`.
pub fn day_label(date: Date) -> String {
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

// ---------------------------------------------------------------------------------------------
// The wire shape (docs/usage-events.md)

/// The body of `POST /internal/usage`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageBatch {
    pub events: Vec<UsageEventBody>,
}

/// One metered request as the proxy ships it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UsageEventBody {
    /// UUID v7, the idempotency key.
    pub id: String,
    pub tenant: String,
    pub model: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub latency_ms: u64,
    pub status: u16,
    pub partial: bool,
    pub api: ApiKind,
    /// RFC 3339; the event counts in the UTC day and month of this instant.
    pub started_at: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ApiKind {
    Openai,
    Anthropic,
}

impl ApiKind {
    fn as_str(self) -> &'static str {
        match self {
            ApiKind::Openai => "openai",
            ApiKind::Anthropic => "anthropic",
        }
    }
}

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
    fn add(&mut self, other: &Totals) {
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

/// Appends `rows` groups of `columns` parameters. SQLite gets anonymous `?` parameters: it looks
/// named ones (`$n`) up in a list while parsing, which is quadratic in their number and costs tens
/// of milliseconds for a batch of 500 events.
fn placeholders(sql: &mut String, rows: usize, columns: usize, sqlite: bool) {
    let mut n = 0;
    for row in 0..rows {
        if row > 0 {
            sql.push(',');
        }
        sql.push('(');
        for column in 0..columns {
            if column > 0 {
                sql.push(',');
            }
            n += 1;
            if sqlite {
                sql.push('?');
            } else {
                sql.push('$');
                sql.push_str(&n.to_string());
            }
        }
        sql.push(')');
    }
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
    let sqlite = tx.backend_name() == "SQLite";
    let rows: Vec<_> = rows.iter().collect();
    for chunk in statement_chunks(&rows) {
        let mut sql = format!(
            "INSERT INTO {table} ({}, {}, {}, {AGGREGATE_COLUMNS}) VALUES ",
            keys[0], keys[1], keys[2]
        );
        placeholders(&mut sql, chunk.len(), 10, sqlite);
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
    let sqlite = tx.backend_name() == "SQLite";
    let mut inserted: HashSet<String> = HashSet::with_capacity(events.len());
    for chunk in statement_chunks(events) {
        let mut sql = String::from(
            "INSERT INTO usage_events (id, tenant, model, api, input_tokens, output_tokens, \
             cache_read_tokens, cache_write_tokens, billable_tokens, latency_ms, status, partial, \
             started_at, received_at) VALUES ",
        );
        placeholders(&mut sql, chunk.len(), 14, sqlite);
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

// ---------------------------------------------------------------------------------------------
// HTTP

/// Store a batch of usage events from a token proxy (docs/usage-events.md). Idempotent by event
/// id: a resent batch is acknowledged and counted once. A batch with any invalid event is refused
/// whole and nothing is written.
#[utoipa::path(post, path = "/internal/usage", request_body = UsageBatch,
    responses((status = 200, body = IngestOutcome), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn ingest_usage(
    State(state): State<Shared>,
    _proxy: ProxyCaller,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<IngestOutcome>, ApiError> {
    let started = Instant::now();
    crate::http::require_json(&headers, "batch")?;
    let body = body.map_err(|_| ApiError::Invalid {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        field: None,
        message: format!("the batch is larger than {MAX_INGEST_BYTES} bytes; send smaller batches"),
    })?;
    let refused = |e: BatchError| {
        metrics::counter!("api_usage_batches_total", "result" => "refused").increment(1);
        ApiError::Invalid {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            field: Some(e.field),
            message: e.message,
        }
    };
    let batch: UsageBatch = crate::http::parse_json(&body).inspect_err(|_| {
        metrics::counter!("api_usage_batches_total", "result" => "refused").increment(1);
    })?;
    let sent = batch.events.len();
    let mut events = check_batch(batch).map_err(refused)?;
    drop(body);
    key_by_incarnation(&state.store, &mut events)
        .await
        .map_err(|e| ApiError::Unavailable(format!("cannot store usage events: {e}")))?;
    let now = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    let writer = match &state.ledger.sqlite_writer {
        Some(lock) => Some(lock.lock().await),
        None => None,
    };
    let mut outcome = ingest(&state.store, &events, now)
        .await
        .map_err(|e| ApiError::Unavailable(format!("cannot store usage events: {e}")))?;
    drop(writer);
    outcome.duplicates += sent - events.len();
    state.ledger.feed.wake();
    metrics::counter!("api_usage_batches_total", "result" => "stored").increment(1);
    metrics::counter!("api_usage_events_total", "result" => "stored")
        .increment(outcome.accepted as u64);
    metrics::counter!("api_usage_events_total", "result" => "duplicate")
        .increment(outcome.duplicates as u64);
    metrics::histogram!("api_usage_ingest_seconds").record(started.elapsed().as_secs_f64());
    Ok(Json(outcome))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// The UTC month, `YYYY-MM`; default the current one.
    pub period: Option<String>,
    /// The uid of the incarnation to read (default: the live one, else the caller's most
    /// recently destroyed one).
    pub incarnation: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PeriodsQuery {
    /// As in [`UsageQuery`].
    pub incarnation: Option<String>,
}

/// One UTC day of a period.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DayUsage {
    /// `YYYY-MM-DD`.
    pub day: String,
    #[serde(flatten)]
    pub totals: Totals,
}

/// One model in a period.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelUsage {
    /// The model as the client named it.
    pub model: String,
    #[serde(flatten)]
    pub totals: Totals,
}

/// A tenant's usage in one period.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageReport {
    pub tenant: String,
    /// `YYYY-MM`, a UTC calendar month.
    pub period: String,
    /// Whether this is the month in progress.
    pub current: bool,
    /// First day of the period (`YYYY-MM-DD`).
    pub from: String,
    /// Last day of the period.
    pub to: String,
    /// The monthly token budget of the tenant's tier (current period only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<u64>,
    /// Budget state as the token proxies get it (current period only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "ok")]
    pub state: Option<FeedState>,
    pub total: Totals,
    /// Every day of the period up to today, days without usage included (zeros).
    pub by_day: Vec<DayUsage>,
    /// Every model used in the period, by name.
    pub by_model: Vec<ModelUsage>,
}

/// One period in a tenant's usage history.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PeriodUsage {
    pub period: String,
    #[serde(flatten)]
    pub totals: Totals,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PeriodList {
    pub tenant: String,
    /// Periods with usage, newest first.
    pub periods: Vec<PeriodUsage>,
}

fn unavailable(e: sqlx::Error) -> ApiError {
    ApiError::Unavailable(format!("cannot read usage: {e}"))
}

fn tenant_param(name: &str) -> Result<TenantName, ApiError> {
    TenantName::parse(name).map_err(|m| ApiError::Invalid {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        field: Some("name".into()),
        message: m,
    })
}

/// Whether the incarnation exists (the tenants index lists it) or ever had usage (a destroyed
/// tenant keeps its history).
async fn known_tenant(state: &Shared, tenant: &crate::http::Incarnation) -> Result<bool, ApiError> {
    if tenant.live {
        return Ok(true);
    }
    Ok(!periods(state.store.pool(), &tenant.ledger_key)
        .await
        .map_err(unavailable)?
        .is_empty())
}

/// A tenant's usage in one UTC month: totals, every day, every model.
#[utoipa::path(get, path = "/v1/tenants/{name}/usage", params(("name" = String, Path), UsageQuery),
    responses((status = 200, body = UsageReport), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn tenant_usage(
    State(state): State<Shared>,
    caller: Caller,
    Path(name): Path<String>,
    Query(query): Query<UsageQuery>,
) -> Result<Json<UsageReport>, ApiError> {
    let name = tenant_param(&name)?;
    let incarnation = authorize(&state, &caller, &name, query.incarnation.as_deref()).await?;
    let key = incarnation.ledger_key.as_str();
    let today = OffsetDateTime::now_utc().date();
    let current = Period::of(OffsetDateTime::now_utc());
    let period = match &query.period {
        None => current,
        Some(text) => Period::parse(text).map_err(|m| ApiError::Invalid {
            status: StatusCode::BAD_REQUEST,
            field: Some("period".into()),
            message: m,
        })?,
    };
    if period > current {
        return Err(ApiError::Invalid {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            field: Some("period".into()),
            message: format!(
                "{} has not begun; the current period is {}",
                period.label(),
                current.label()
            ),
        });
    }
    if !known_tenant(&state, &incarnation).await? {
        return Err(ApiError::NotFound(format!(
            "tenant {:?} does not exist and has no usage",
            name.as_str()
        )));
    }
    let pool = state.store.pool();
    let days = by_day(pool, key, period).await.map_err(unavailable)?;
    let models = by_model(pool, key, period).await.map_err(unavailable)?;
    let mut total = Totals::default();
    for (_, t) in &models {
        total.add(t);
    }
    let mut recorded: BTreeMap<String, Totals> = days.into_iter().collect();
    let last = if period == current {
        today
    } else {
        period.last_day()
    };
    let mut by_day = Vec::new();
    let mut day = period.first_day();
    loop {
        let label = day_label(day);
        let totals = recorded.remove(&label).unwrap_or_default();
        by_day.push(DayUsage { day: label, totals });
        if day >= last {
            break;
        }
        day = day.next_day().expect("days within a month");
    }
    let (budget, feed_state) = if period == current && incarnation.live {
        match state.ledger.feed.budget_of(name.as_str()) {
            Some(budget) => (
                Some(budget),
                Some(FeedState::of(total.billable_tokens.max(0) as u64, budget)),
            ),
            None => (None, None),
        }
    } else {
        (None, None)
    };
    Ok(Json(UsageReport {
        tenant: name.to_string(),
        period: period.label(),
        current: period == current,
        from: day_label(period.first_day()),
        to: day_label(period.last_day()),
        budget,
        state: feed_state,
        total,
        by_day,
        by_model: models
            .into_iter()
            .map(|(model, totals)| ModelUsage { model, totals })
            .collect(),
    }))
}

/// The periods in which a tenant used tokens, with their totals, newest first.
#[utoipa::path(get, path = "/v1/tenants/{name}/usage/periods", params(("name" = String, Path), PeriodsQuery),
    responses((status = 200, body = PeriodList), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
async fn tenant_periods(
    State(state): State<Shared>,
    caller: Caller,
    Path(name): Path<String>,
    Query(query): Query<PeriodsQuery>,
) -> Result<Json<PeriodList>, ApiError> {
    let name = tenant_param(&name)?;
    let incarnation = authorize(&state, &caller, &name, query.incarnation.as_deref()).await?;
    let list = periods(state.store.pool(), &incarnation.ledger_key)
        .await
        .map_err(unavailable)?;
    if list.is_empty()
        && !(incarnation.live && state.ledger.feed.budget_of(name.as_str()).is_some())
    {
        return Err(ApiError::NotFound(format!(
            "tenant {:?} does not exist and has no usage",
            name.as_str()
        )));
    }
    Ok(Json(PeriodList {
        tenant: name.to_string(),
        periods: list
            .into_iter()
            .map(|(period, totals)| PeriodUsage { period, totals })
            .collect(),
    }))
}

#[derive(OpenApi)]
#[openapi(paths(ingest_usage, tenant_usage, tenant_periods, crate::budget::budget_feed))]
pub struct UsageDoc;

/// The ledger's routes, merged into the api's router.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route(
            "/internal/usage",
            post(ingest_usage).layer(DefaultBodyLimit::max(MAX_INGEST_BYTES)),
        )
        .route("/internal/budget", get(crate::budget::budget_feed))
        .route("/v1/tenants/{name}/usage", get(tenant_usage))
        .route("/v1/tenants/{name}/usage/periods", get(tenant_periods))
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
