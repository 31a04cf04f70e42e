-- Customer accounts and sessions. Portable SQL: runs unchanged on SQLite and PostgreSQL.

-- A customer: someone who signs in (Telegram) and owns tenants. Ids are opaque text
-- ("cus_" + 32 hex digits) made by the api.
CREATE TABLE customers (
    id TEXT PRIMARY KEY,
    email TEXT UNIQUE,
    telegram_id BIGINT UNIQUE,
    display_name TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    -- Raised by "log out everywhere": access tokens carry the epoch they were issued in and
    -- are refused once it moved on.
    session_epoch BIGINT NOT NULL DEFAULT 0
);

-- Tenants created before accounts existed name their owner by email only: each distinct email
-- becomes a customer (without a Telegram id; the owner signs in once an admin records it).
INSERT INTO customers (id, email, telegram_id, display_name, created_at, session_epoch)
SELECT 'cus_m' || CAST(ROW_NUMBER() OVER (ORDER BY owner_email) AS TEXT),
       owner_email, NULL, owner_email, MIN(created_at), 0
FROM tenants GROUP BY owner_email;

-- The owner reference replaces the owner's email. NULL: a tenant the index knows no owner of
-- (created by hand in the state repo); only admins see it.
ALTER TABLE tenants ADD COLUMN owner_id TEXT REFERENCES customers (id);
UPDATE tenants SET owner_id = (SELECT c.id FROM customers c WHERE c.email = tenants.owner_email);
ALTER TABLE tenants DROP COLUMN owner_email;
CREATE INDEX tenants_owner ON tenants (owner_id);

-- A refresh token family: one sign-in and every rotation that followed it.
CREATE TABLE refresh_families (
    id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers (id),
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX refresh_families_customer ON refresh_families (customer_id);

-- Refresh tokens, stored as SHA-256 hex only. `used_at` is set when the token was rotated; a
-- second use of a used token revokes its family.
CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    family_id TEXT NOT NULL REFERENCES refresh_families (id),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
