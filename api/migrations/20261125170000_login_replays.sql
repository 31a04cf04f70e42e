-- Telegram login data is single use: the SHA-256 of each accepted payload's `hash` is kept until
-- the payload would have expired anyway (auth_date + the configured maximum age), so that the same
-- data presented again (a replayed request, a leaked redirect URL) is refused. Portable SQL.
CREATE TABLE login_replays (
    hash_sha256 TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX login_replays_expiry ON login_replays (expires_at);
