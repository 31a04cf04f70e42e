-- The platform bot (docs/bot.md): Telegram updates received once, conversations that survive a
-- restart or another replica, and an outbox of Bot API calls. Portable SQL: runs unchanged on
-- SQLite and PostgreSQL. Times are Unix milliseconds. No column ever holds a bot token in
-- plaintext: a token a customer pastes is sealed before it is stored.

-- Updates acknowledged on the webhook, by Telegram's update_id (a second delivery is a no-op).
-- `input` is the parsed update (JSON, see api/src/bot/update.rs); `done_at` is set in the
-- transaction that stores the conversation's next state and the replies.
CREATE TABLE bot_updates (
    update_id BIGINT PRIMARY KEY,
    chat_id BIGINT NOT NULL,
    input TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    done_at BIGINT
);
CREATE INDEX bot_updates_pending ON bot_updates (done_at, chat_id, update_id);

-- One conversation per chat. A replica works on a chat only while it holds the chat's lease.
CREATE TABLE bot_chats (
    chat_id BIGINT PRIMARY KEY,
    state TEXT NOT NULL,
    lease_owner TEXT,
    lease_until BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Bot API calls to make (sendMessage, answerCallbackQuery), oldest first per chat. The id is
-- derived from what caused the call (the update, the notice), so storing it twice is a no-op.
CREATE TABLE bot_outbox (
    id TEXT PRIMARY KEY,
    chat_id BIGINT NOT NULL,
    method TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    not_before BIGINT NOT NULL,
    attempts INTEGER NOT NULL,
    lease_owner TEXT,
    lease_until BIGINT NOT NULL,
    sent_at BIGINT,
    failed TEXT
);
CREATE INDEX bot_outbox_due ON bot_outbox (sent_at, failed, not_before);
CREATE INDEX bot_outbox_chat ON bot_outbox (chat_id, created_at);

-- Notices already queued to owners (budget thresholds per period, state changes), by key.
CREATE TABLE bot_notices (
    key TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL
);

-- The state of each tenant the notifier last told its owner about (`active`, `suspended:<by>`).
CREATE TABLE bot_tenant_states (
    tenant TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
