-- The usage ledger (docs/usage-events.md): every usage event the token proxies ship, once per event
-- id, and aggregates per tenant and model by day and by month. The aggregates are updated in the
-- same transaction as the events they count, so they are exact whatever the retries and races.
-- Portable SQL: runs unchanged on SQLite and PostgreSQL.

-- One row per metered request; `id` (the proxy's UUID v7) makes resent batches harmless.
-- Times are Unix milliseconds; `billable_tokens` follows docs/usage-events.md.
CREATE TABLE usage_events (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    model TEXT NOT NULL,
    api TEXT NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cache_read_tokens BIGINT NOT NULL,
    cache_write_tokens BIGINT NOT NULL,
    billable_tokens BIGINT NOT NULL,
    latency_ms BIGINT NOT NULL,
    status INTEGER NOT NULL,
    partial INTEGER NOT NULL,
    started_at BIGINT NOT NULL,
    received_at BIGINT NOT NULL
);

-- Per tenant, UTC day (YYYY-MM-DD) and model: the by-day view of the customer endpoints.
CREATE TABLE usage_daily (
    tenant TEXT NOT NULL,
    day TEXT NOT NULL,
    model TEXT NOT NULL,
    requests BIGINT NOT NULL,
    partial_requests BIGINT NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cache_read_tokens BIGINT NOT NULL,
    cache_write_tokens BIGINT NOT NULL,
    billable_tokens BIGINT NOT NULL,
    PRIMARY KEY (tenant, day, model)
);

-- Per UTC calendar month (YYYY-MM), tenant and model: the by-model view and the budget feed.
-- The key starts with the period so that the feed reads one month as one range.
CREATE TABLE usage_monthly (
    period TEXT NOT NULL,
    tenant TEXT NOT NULL,
    model TEXT NOT NULL,
    requests BIGINT NOT NULL,
    partial_requests BIGINT NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cache_read_tokens BIGINT NOT NULL,
    cache_write_tokens BIGINT NOT NULL,
    billable_tokens BIGINT NOT NULL,
    PRIMARY KEY (period, tenant, model)
);
CREATE INDEX usage_monthly_tenant ON usage_monthly (tenant, period);
