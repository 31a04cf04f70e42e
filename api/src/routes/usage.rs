//! The usage endpoints: the token proxies' ingest (`POST /internal/usage`, docs/usage-events.md)
//! and the customers' usage reads (`/v1/tenants/{name}/usage`, `…/usage/periods`), scoped to one
//! incarnation of the tenant by [`AuthorizedIncarnation`]. The ledger itself (checks, storage,
//! aggregates) is [`crate::usage`].

use std::collections::BTreeMap;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{OpenApi, ToSchema};

use crate::budget::FeedState;
use crate::http::extract::{parse_json, require_json};
use crate::http::{
    ApiError, AuthorizedIncarnation, Caller, ErrorBody, Incarnation, ProxyCaller, Shared,
};
use crate::usage::{
    by_day, check_batch, day_label, ingest, key_by_incarnation, month_usage, periods, BatchError,
    IngestOutcome, Period, Totals, UsageBatch, MAX_INGEST_BYTES,
};

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
    require_json(&headers, "batch")?;
    let body = body.map_err(|_| ApiError::Invalid {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        field: None,
        message: format!("the batch is larger than {MAX_INGEST_BYTES} bytes; send smaller batches"),
    })?;
    let refused = |e: BatchError| {
        crate::metrics::get()
            .usage_batches
            .with_label_values(&["refused"])
            .inc();
        ApiError::Invalid {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            field: Some(e.field),
            message: e.message,
        }
    };
    let batch: UsageBatch = parse_json(&body).inspect_err(|_| {
        crate::metrics::get()
            .usage_batches
            .with_label_values(&["refused"])
            .inc();
    })?;
    let sent = batch.events.len();
    let mut events = check_batch(batch).map_err(refused)?;
    drop(body);
    key_by_incarnation(&state.store, &mut events)
        .await
        .map_err(|e| ApiError::Unavailable(format!("cannot store usage events: {e}")))?;
    let now = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    let writer = state.ledger.ingest_turn().await;
    let mut outcome = ingest(&state.store, &events, now)
        .await
        .map_err(|e| ApiError::Unavailable(format!("cannot store usage events: {e}")))?;
    drop(writer);
    outcome.duplicates += sent - events.len();
    state.ledger.feed.wake();
    let metrics = crate::metrics::get();
    metrics.usage_batches.with_label_values(&["stored"]).inc();
    metrics
        .usage_events
        .with_label_values(&["stored"])
        .inc_by(outcome.accepted as u64);
    metrics
        .usage_events
        .with_label_values(&["duplicate"])
        .inc_by(outcome.duplicates as u64);
    metrics
        .usage_ingest_seconds
        .observe(started.elapsed().as_secs_f64());
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

/// Whether the incarnation exists (the tenants index lists it) or ever had usage (a destroyed
/// tenant keeps its history).
async fn known_tenant(state: &Shared, tenant: &Incarnation) -> Result<bool, ApiError> {
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
async fn tenant_usage(
    State(state): State<Shared>,
    _caller: Caller,
    Query(query): Query<UsageQuery>,
    tenant: AuthorizedIncarnation,
) -> Result<Json<UsageReport>, ApiError> {
    let incarnation = tenant.incarnation();
    let name = &incarnation.name;
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
    if !known_tenant(&state, incarnation).await? {
        return Err(ApiError::NotFound(format!(
            "tenant {:?} does not exist and has no usage",
            name.as_str()
        )));
    }
    let pool = state.store.pool();
    let days = by_day(pool, key, period).await.map_err(unavailable)?;
    let month = month_usage(
        pool,
        &state.ledger.feed,
        key,
        name.as_str(),
        incarnation.live,
        period,
    )
    .await
    .map_err(unavailable)?;
    let total = month.total;
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
    let budget = if period == current {
        month.budget
    } else {
        None
    };
    let feed_state =
        budget.map(|budget| FeedState::of(total.billable_tokens.max(0) as u64, budget));
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
        by_model: month
            .models
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
    _caller: Caller,
    Query(_query): Query<PeriodsQuery>,
    tenant: AuthorizedIncarnation,
) -> Result<Json<PeriodList>, ApiError> {
    let incarnation = tenant.incarnation();
    let name = &incarnation.name;
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
#[openapi(paths(ingest_usage, tenant_usage, tenant_periods, super::budget::budget_feed))]
pub struct UsageDoc;

/// The ledger's routes.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route(
            "/internal/usage",
            post(ingest_usage).layer(DefaultBodyLimit::max(MAX_INGEST_BYTES)),
        )
        .route("/v1/tenants/{name}/usage", get(tenant_usage))
        .route("/v1/tenants/{name}/usage/periods", get(tenant_periods))
}
