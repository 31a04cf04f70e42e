-- Portable SQL: this one migration runs unchanged on SQLite and PostgreSQL.

-- The index of live tenants. Desired state lives in git; this table answers
-- "which tenants exist, who owns them, which commit last touched them" without a
-- walk over the repository.
CREATE TABLE tenants (
    name TEXT PRIMARY KEY,
    owner_email TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    last_commit TEXT NOT NULL
);

-- Git operations acknowledged to a caller or about to be. A row is written in the
-- same transaction as the request's effects; `state` moves from 'pending' to
-- 'pushed' once the commit is on the remote. A restart replays pending rows.
CREATE TABLE outbox (
    seq BIGINT PRIMARY KEY,
    tenant TEXT NOT NULL,
    action TEXT NOT NULL,
    request_id TEXT NOT NULL,
    change_json TEXT NOT NULL,
    commit_id TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    pushed_at BIGINT
);
CREATE INDEX outbox_state_seq ON outbox (state, seq);

-- Responses to requests that carried an Idempotency-Key, replayed on retries.
CREATE TABLE idempotency_keys (
    actor TEXT NOT NULL,
    idem_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status INTEGER NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (actor, idem_key)
);
