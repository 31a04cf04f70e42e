//! openclaw-cloud's api: every tenant lifecycle action becomes one git commit of the tenant's spec
//! and its compiled output, pushed to the GitOps state repo that Flux watches.
//!
//! Code map:
//! - [`config`]: layered configuration (defaults, TOML file, environment).
//! - [`store`]: the database (tenants index, customers, sessions, outbox, idempotency keys);
//!   SQLite or PostgreSQL.
//! - [`state_repo`]: git plumbing: in-memory trees, commits, fetch and push. Knows no tenants.
//! - [`lifecycle`]: what each action does to a tenant's files; links the compiler.
//! - [`writer`]: the single writer thread: batching, outbox, push retries, crash replay.
//! - [`reader`]: tenant state and history read from the state repo's head.
//! - [`telegram`]: bot token format and getMe. [`bot`]: the platform bot (webhook, conversation,
//!   outbox of Bot API calls, notices to owners).
//! - [`usage`]: the usage ledger (proxy ingest, aggregates, customer usage); [`budget`]: the
//!   budget feed the proxies poll.
//! - [`http`]: routes, errors, callers and the tenant authorization check
//!   ([`http::authorize_tenant`]), idempotency, ops endpoints, OpenAPI.
//! - [`auth`]: sign-in primitives: Telegram login check, RS256 access tokens and JWKS, refresh
//!   tokens, cookies, CSRF, client addresses, rate limits. [`sessions`]: their HTTP endpoints.
//! - [`app`]: wiring and graceful shutdown. [`dev`]: the one-command local platform;
//!   [`dev_proxy`]: its token proxy (in process, fed from the state repo's table);
//!   [`dev_routes`]: its dev-only endpoints.
//!
//! Invariants: only the writer thread moves the state repo's branch; no plaintext secret reaches
//! git, the database, a log line or an error message.

pub mod app;
pub mod auth;
pub mod bot;
pub mod budget;
pub mod config;
pub mod dev;
pub mod dev_proxy;
pub mod dev_routes;
pub mod http;
pub mod lifecycle;
pub mod reader;
pub mod sessions;
pub mod state_repo;
pub mod store;
pub mod telegram;
pub mod usage;
pub mod writer;
