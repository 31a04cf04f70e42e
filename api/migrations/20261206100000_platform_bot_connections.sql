-- The platform bot's connection notices (docs/bot.md): the providers of each tenant's
-- connections (comma-separated, sorted) the notifier last told its owner about. A change is
-- announced by the replica whose compare-and-set of this row succeeds, in the transaction that
-- queues the notices, so it is announced once whichever replica sees it first.
CREATE TABLE bot_tenant_connections (
    tenant TEXT PRIMARY KEY,
    providers TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
