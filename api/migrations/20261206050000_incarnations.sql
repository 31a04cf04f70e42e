-- Tenant incarnations (docs/security.md): a name destroyed and provisioned again is a new tenant
-- with a new uid (the spec's metadata.uid), and nothing of the previous one may show through it.
-- Portable SQL: runs unchanged on SQLite and PostgreSQL.

-- The live incarnation's uid; NULL for tenants without one (made by hand, or before uids).
ALTER TABLE tenants ADD COLUMN uid TEXT;

-- Destroyed incarnations, kept so that their owners can still read their history and usage.
-- `ledger_key` is the key of their usage in usage_events/usage_daily/usage_monthly (`name@uid`,
-- or the name for a tenant without a uid); usage under a key listed here counts for no live
-- tenant.
CREATE TABLE past_incarnations (
    ledger_key TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    uid TEXT,
    owner_id TEXT,
    created_at BIGINT NOT NULL,
    destroyed_at BIGINT NOT NULL
);
CREATE INDEX past_incarnations_tenant ON past_incarnations (tenant, destroyed_at);
